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

from llmrec.evaluate.metrics import BEYOND, RANKING
from llmrec.stamps import utc_now

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


def plot_slices(result: dict, path: str) -> None:
    """recall@K and nDCG@K of every model, by slice (grouped bars)."""
    plt = _plt()
    k, models = max(result["ks"]), result["models"]
    rows = result["by_slice"]
    names = sorted({r["slice"] for r in rows}, key=lambda n: (n != "overall", n))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    for ax, metric in zip(axes, ("recall", "ndcg")):
        vals = {(r["slice"], r["model"]): r["value"] for r in rows if r["metric"] == metric and r["k"] == k}
        width = 0.8 / len(models)
        for i, model in enumerate(models):
            ax.bar([j + i * width for j in range(len(names))], [vals.get((n, model), 0.0) for n in names],
                   width, label=model)
        users = {r["slice"]: r["users"] for r in rows}
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))])
        ax.set_xticklabels([f"{n}\n({users.get(n, 0):,} users)" for n in names], fontsize=8)
        ax.set_title(f"{metric}@{k} by slice")
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_candidate_recall(result: dict, path: str) -> None:
    """Candidate recall@N of each source and of the fused list, serving (test) and validation."""
    plt = _plt()
    rows = result["candidate_recall"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for ax, (name, title) in zip(axes, (("overall", "serving cut, test labels"),
                                        ("validation", "validation cut, validation labels"))):
        for model in result["candidate_sources"]:
            pts = sorted((r["k"], r["value"]) for r in rows if r["slice"] == name and r["model"] == model)
            if pts:
                ax.plot(*zip(*pts), "-o" if model.endswith("fused") else "-.", label=model.split(".", 1)[1])
        ax.set_title(f"candidate recall@N ({title})", fontsize=10)
        ax.set_xlabel("N")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_importance(ranker: dict, path: str, top: int = 20) -> None:
    """The learned ranker's feature importance (total gain), largest first."""
    plt = _plt()
    gains = list(ranker["feature_importance_gain"].items())[:top]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(gains) + 1))
    ax.barh([g[0] for g in gains][::-1], [g[1] for g in gains][::-1], color="tab:green")
    ax.set_xlabel("gain")
    ax.set_title("Learned ranker: feature importance")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _slice_table(result: dict) -> str:
    k, rows = max(result["ks"]), result["by_slice"]
    vals = {(r["slice"], r["model"], r["metric"]): (r["value"], r["users"]) for r in rows if r["k"] == k}
    names = sorted({r["slice"] for r in rows}, key=lambda n: (n != "overall", n))
    body = []
    for name in names:
        users = next((u for (sl, _, _), (_, u) in vals.items() if sl == name), 0)
        for metric in ("ndcg", "recall"):
            cells = "".join(f'<td data-slice="{name}" data-model="{m}" data-metric="{metric}" data-k="{k}">'
                            f"{_fmt((vals.get((name, m, metric)) or (None,))[0])}</td>" for m in result["models"])
            body.append(f"<tr><th>{name}</th><td>{users:,}</td><td>{metric}@{k}</td>{cells}</tr>")
    head = "".join(f"<th>{m}</th>" for m in result["models"])
    return f"<table><tr><th>slice</th><th>users</th><th>metric</th>{head}</tr>{''.join(body)}</table>"


def _recall_table(result: dict) -> str:
    rows = result["candidate_recall"]
    ks = sorted({r["k"] for r in rows})
    vals = {(r["slice"], r["model"], r["k"]): r["value"] for r in rows}
    body = []
    for name in ("overall", "validation"):
        for model in result["candidate_sources"]:
            cells = "".join(f'<td data-slice="{name}" data-model="{model}" data-metric="recall" data-k="{k}">'
                            f"{_fmt(vals.get((name, model, k)))}</td>" for k in ks)
            body.append(f"<tr><th>{'test (serving cut)' if name == 'overall' else 'validation cut'}</th>"
                        f"<th>{model.split('.', 1)[1]}</th>{cells}</tr>")
    head = "".join(f"<th>recall@{k}</th>" for k in ks)
    return f"<table><tr><th>labels</th><th>source</th>{head}</tr>{''.join(body)}</table>"


def _ranker_section(ranker: dict | None) -> str:
    if not ranker:
        return "<p>recommend.ranker is not <code>learned</code>: no ranker stage choice to show.</p>"
    choice = ranker["choice"]
    rows = "".join(f"<tr><th>{html.escape(m)}</th><td>{_fmt(v)}</td></tr>"
                   for m, v in sorted(choice["val_ndcg"].items(), key=lambda kv: -kv[1]))
    weights = ", ".join(f"{s} {w:g}" for s, w in choice["fusion_weights"].items())
    return (f"<p>Served: <b>{html.escape(choice['use_label'])}</b>; new-item slots "
            f"{choice['new_item_slots']}; fusion weights chosen on validation: {html.escape(weights)}; "
            f"{len(ranker['features'])} features, xgboost {ranker['xgboost']}, best iteration "
            f"{ranker['best_iteration']}. Each way of ordering the candidates, by nDCG@{choice['k']} on "
            f"{ranker['users'].get('holdout', {}).get('users', 0):,} held-out validation users:</p>"
            f"<table><tr><th>ordering</th><th>validation nDCG@{choice['k']}</th></tr>{rows}</table>")


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
    if result.get("by_slice"):
        figures.append(("slices.png", plot_slices, result, "Recall and nDCG by slice"))
    if result.get("candidate_recall"):
        figures.append(("candidate_recall.png", plot_candidate_recall, result,
                        "Candidate recall of the first stage: the ceiling of any reranker"))
    if result.get("ranker"):
        figures.append(("feature_importance.png", plot_importance, result["ranker"],
                        "Feature importance of the learned ranker"))
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
<h2>By slice</h2>{_slice_table(result)}
<h2>Candidate recall</h2>{_recall_table(result)}
<h2>Second stage</h2>{_ranker_section(result.get('ranker'))}
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
