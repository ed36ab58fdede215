"""reports/<run>/: report.html (one self-contained file: tables and inline plots),
the plots as PNG files, and metrics.json (what the report shows, as data).

Every metric cell carries data-model / data-metric / data-k attributes, so a reader (or
a test) can check the page against gold.eval_metrics.
"""
from __future__ import annotations

import base64
import html
import json
import os

from llmrec.stamps import utc_now
from llmrec.evaluate.metrics import BEYOND, RANKING

PLOT_STYLE = {"hybrid": "-o", "fused": "--s", "history": ":"}  # others: "-."
DIGITS = 4


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _values(result: dict) -> dict[tuple, float | None]:
    return {(r["model"], r["metric"], r["k"]): r["value"] for r in result["metrics"]}


def plot_metrics_vs_k(result: dict, path: str) -> None:
    plt = _plt()
    vals, ks = _values(result), result["ks"]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, metric in zip(axes.flat, RANKING):
        for model in result["models"]:
            ax.plot(ks, [vals.get((model, metric, k)) or 0.0 for k in ks], PLOT_STYLE.get(model, "-."),
                    label=model)
        ax.set_title(f"{metric}@K")
        ax.set_xlabel("K")
        ax.set_xticks(ks)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"Ranking metrics over K ({result['users']:,} users)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_beyond_accuracy(result: dict, path: str) -> None:
    plt = _plt()
    vals, k = _values(result), max(result["ks"])
    fig, axes = plt.subplots(1, len(BEYOND), figsize=(3.2 * len(BEYOND), 3.6))
    models = result["models"]
    for ax, metric in zip(axes, BEYOND):
        ys = [vals.get((m, metric, k)) for m in models]
        ax.bar(range(len(models)), [y if y is not None else 0.0 for y in ys], color="tab:blue")
        ax.set_xticks(range(len(models)), models, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{metric}@{k}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_popularity(result: dict, path: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.2))
    by_model: dict[str, dict[int, float]] = {}
    for r in result["popularity"]:
        by_model.setdefault(r["model"], {})[r["bin"]] = r["share"]
    bins = sorted({b for shares in by_model.values() for b in shares})
    for model, shares in by_model.items():
        ax.plot(bins, [shares.get(b, 0.0) for b in bins], PLOT_STYLE.get(model, "-."), label=model)
    ax.set_xlabel(f"item popularity bin (0 = the most popular {100 // max(len(bins), 1)}% of the catalog)")
    ax.set_ylabel("share of recommendations")
    ax.set_yscale("log")
    ax.set_title(f"Where the top {max(result['ks'])} land in the popularity curve")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training(training: dict, path: str) -> None:
    plt = _plt()
    epochs = training.get("epochs") or []
    init = training.get("initial") or {}
    xs = [0] + [e["epoch"] for e in epochs]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.plot(xs[1:], [e["train_loss"] for e in epochs], "-o", label="train loss")
    left.plot(xs, [init.get("loss")] + [e["val_loss"] for e in epochs], "-s", label="validation loss")
    left.set_xlabel("epoch")
    left.legend()
    left.grid(alpha=0.3)
    right.plot(xs, [init.get("auc")] + [e["val_auc"] for e in epochs], "-o", label="validation AUC")
    if (training.get("test") or {}).get("auc") is not None:
        right.axhline(training["test"]["auc"], color="tab:red", ls="--", label="test AUC (best epoch)")
    right.set_xlabel("epoch (0 = before training)")
    right.legend()
    right.grid(alpha=0.3)
    fig.suptitle(f"Cross-encoder fine-tuning ({training.get('backend')}, {training.get('world_size')} "
                 f"processes, {training.get('device')})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.{DIGITS}f}"


def _metric_table(result: dict, names: tuple[str, ...]) -> str:
    vals = _values(result)
    head = "".join(f"<th>{m}</th>" for m in names)
    body = []
    for k in result["ks"]:
        for model in result["models"]:
            cells = "".join(
                f'<td data-model="{model}" data-metric="{m}" data-k="{k}">{_fmt(vals.get((model, m, k)))}</td>'
                for m in names)
            body.append(f"<tr><td>{k}</td><th>{model}</th>{cells}</tr>")
    return f"<table><tr><th>K</th><th>model</th>{head}</tr>{''.join(body)}</table>"


def _explanations(rows: list[dict]) -> str:
    if not rows:
        return "<p>No recommendations to show (run the recommend and explain jobs).</p>"
    out, user = [], None
    for r in rows:
        if r["user_id"] != user:
            if user is not None:
                out.append("</table>")
            user = r["user_id"]
            out.append(f"<h3>{html.escape(user)}</h3><table><tr><th>rank</th><th>item</th><th>score</th>"
                       "<th>source</th><th>reason</th><th>history items (similarity)</th><th>words</th></tr>")
        hist = ", ".join(f"{html.escape(h.get('title') or h['item_id'])} ({h['similarity']:.2f})"
                         for h in (r.get("top_history") or []))
        words = ", ".join(f"{html.escape(t['token'])} <small>{t['side']} {t['attribution']:+.3f}</small>"
                          for t in (r.get("tokens") or []))
        out.append(f"<tr><td>{r['rank']}</td><td>{html.escape(r.get('title') or '')}<br><small>"
                   f"{html.escape(r['item_id'])}</small></td><td>{r['score']:.3f}</td><td>{r['source']}</td>"
                   f"<td>{html.escape(r.get('reason') or '(not explained yet)')}</td><td>{hist}</td>"
                   f"<td>{words}</td></tr>")
    out.append("</table>")
    return "".join(out)


def _img(folder: str, name: str, caption: str) -> str:
    with open(os.path.join(folder, name), "rb") as fh:
        data = base64.b64encode(fh.read()).decode()
    return f'<figure><img src="data:image/png;base64,{data}" alt="{name}"><figcaption>{caption} ' \
           f'(<a href="{name}">{name}</a>)</figcaption></figure>'


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:right}th{background:#f3f3f3}td:nth-child(n+5){text-align:left}img{max-width:100%}
figure{margin:1.5em 0}dt{font-weight:bold;float:left;width:9em}dd{margin-left:10em}"""


def write(folder: str, result: dict) -> str:
    """Writes the report folder; returns the path of report.html."""
    os.makedirs(folder, exist_ok=True)
    figures = [("metrics_vs_k.png", plot_metrics_vs_k, result, "Ranking metrics against K"),
               ("beyond_accuracy.png", plot_beyond_accuracy, result,
                f"Coverage, concentration, novelty, diversity and serendipity at K={max(result['ks'])}"),
               ("popularity.png", plot_popularity, result,
                "Share of recommendations by item popularity (history = what users did)")]
    if result.get("training"):
        figures.append(("training_curves.png", plot_training, result["training"],
                        "Training curves of the cross-encoder (from metrics.json)"))
    for name, draw, data, _ in figures:
        draw(data, os.path.join(folder, name))
    auc = result["auc"]
    protocol = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>"
                       for k, v in result["protocol"].items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>llmrec evaluation {result['run']}</title>
<style>{STYLE}</style></head><body>
<h1>llmrec evaluation: {html.escape(result['run'])}</h1>
<p>Generated {utc_now():%Y-%m-%d %H:%M} UTC; {result['users']:,} users evaluated.</p>
<h2>Protocol</h2><dl>{protocol}</dl>
<h2>Ranking metrics</h2>{_metric_table(result, RANKING)}
<h2>Beyond accuracy</h2>{_metric_table(result, BEYOND)}
<h2>Cross-encoder</h2><table><tr><th>AUC on the test pairs, scored in Spark</th>
<td data-model="cross_encoder" data-metric="auc" data-k="">{_fmt(auc['cross_encoder_spark'])}</td></tr>
<tr><th>test AUC reported by the train job</th><td>{_fmt(auc['train_job_test'])}</td></tr></table>
<h2>Plots</h2>{''.join(_img(folder, name, caption) for name, _, _, caption in figures)}
<h2>Sample explanations</h2>{_explanations(result['explanations'])}
</body></html>"""
    path = os.path.join(folder, "report.html")
    with open(path, "w") as fh:
        fh.write(page)
    with open(os.path.join(folder, "metrics.json"), "w") as fh:
        json.dump({k: v for k, v in result.items() if k != "training"}, fh, indent=2, default=str)
    return path
