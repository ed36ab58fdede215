"""Classification metrics of the cross-encoder and its training curves."""
from __future__ import annotations

import numpy as np


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula; tied scores share their mean rank.

    nan when only one class is present.
    """
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # Average rank (1-based) of each run of equal scores.
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    mean_rank = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(mean_rank, counts)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def log_loss(labels: np.ndarray, logits: np.ndarray) -> float:
    """Mean binary cross-entropy of logits (computed stably, without sigmoid round-trips)."""
    y = np.asarray(labels, dtype=np.float64)
    z = np.asarray(logits, dtype=np.float64)
    if len(y) == 0:
        return float("nan")
    return float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))


def plot_curves(history: list[dict], path: str) -> None:
    """Train/val loss and val AUC per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    left.plot(epochs, [h["val_loss"] for h in history], "o-", label="val")
    left.set(xlabel="epoch", ylabel="log loss", title="Loss")
    left.legend()
    right.plot(epochs, [h["val_auc"] for h in history], "o-", color="tab:green")
    right.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    right.set(xlabel="epoch", ylabel="AUC", title="Validation AUC")
    for ax in (left, right):
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
