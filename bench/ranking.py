"""The ranking benchmark: each piece of the second stage added in turn, on the demo shop and
on MovieLens-100k, every step compared with the plain baselines on the same split.

    .venv/bin/python bench/ranking.py                                  # both datasets, every step
    .venv/bin/python bench/ranking.py --datasets demo --steps baseline,learned_ranker

Steps are cumulative (each keeps the settings of the ones before it):
  baseline        the cross-encoder as before: popularity negatives, pointwise loss, blended
                  with the fused score (recommend.ranker: blend)
  ce_negatives    its negatives drawn from the user's own candidates (2 of 3)
  listwise        a softmax over each positive and its negatives (train.loss: listwise)
  learned_ranker  LambdaMART over the candidates' features, the cross-encoder score among
                  them (recommend.ranker: learned, nothing tuned: ranker.tune false)
  tuned_fusion    fusion weights, rerank depth, blend and new-item slots chosen on validation
  review_text     review digests in the item text, the user's own reviews in the user text

Each dataset has a storage root of its own under bench/work/ (kept between runs: the data
stages run once). A step runs the pipeline through submit.sh with its settings; resume
reruns only the stages they change (search and explain, which no metric reads, are left
out). Its evaluate run is named after the step; the figures come from that run's
metrics.json. Nothing is chosen on test: every choice inside a step is made on validation.
Writes bench/results/ranking.json and prints the ablation table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = "generate,ingest,clean,interactions,embed,candidates,examples,tokenize,train,ranker,recommend,evaluate"
DATASETS = {"demo": "conf/local.yaml", "movielens": "conf/movielens.yaml"}
STEPS = (
    ("baseline", ("examples.negatives=popularity", "train.loss=pointwise", "recommend.ranker=blend",
                  "examples.item_reviews=false", "examples.user_reviews=false", "ranker.tune=false")),
    ("ce_negatives", ("examples.negatives={candidates: 2, popularity: 1}",)),
    ("listwise", ("train.loss=listwise",)),
    ("learned_ranker", ("recommend.ranker=learned",)),
    ("tuned_fusion", ("ranker.tune=true",)),
    ("review_text", ("examples.item_reviews=true", "examples.user_reviews=true")),
)
BASELINES = ("als", "item_item", "content", "fused")


def run_step(dataset: str, step: str, settings: list[str]) -> dict:
    """Runs the pipeline for one step; returns its evaluation's metrics.json."""
    work = ROOT / "bench" / "work" / dataset
    work.mkdir(parents=True, exist_ok=True)
    sets = [f"storage.root={work / 'data'}", f"evaluate.reports_dir={work / 'reports'}",
            f"evaluate.run={step}", *settings]
    ranker = [x.split("=", 1)[1] for x in settings if x.startswith("recommend.ranker=")][-1:] or ["learned"]
    cmd = [str(ROOT / "submit.sh"), "pipeline", "--conf", str(ROOT / DATASETS[dataset]), "--stages",
           STAGES if ranker == ["learned"] else STAGES.replace("ranker,", "")]
    for s in sets:
        cmd += ["--set", s]
    log = work / f"{step}.log"
    started = time.monotonic()
    with open(log, "w") as fh:
        code = subprocess.call(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                               env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1")))
    if code:
        raise SystemExit(f"bench/ranking.py: {dataset} step {step} failed (exit {code}); see {log}")
    with open(work / "reports" / step / "metrics.json") as fh:
        result = json.load(fh)
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def figure(result: dict, model: str, metric: str, k: int = 10, slice_: str = "overall") -> float | None:
    rows = result["metrics"] if slice_ == "overall" else result["by_slice"]
    for r in rows:
        if (r["model"], r["metric"], r["k"]) == (model, metric, k) and r.get("slice", "overall") == slice_:
            return round(r["value"], 4)
    return None


def summarise(dataset: str, result: dict) -> dict:
    ndcg = {m: figure(result, m, "ndcg") for m in (*BASELINES, "popular", "hybrid")}
    best = max(BASELINES, key=lambda m: ndcg[m] or 0.0)
    out = {"users": result["users"], "ndcg10": ndcg, "best_single": best,
           "best_single_ndcg10": ndcg[best], "hybrid_ndcg10": ndcg["hybrid"],
           "hybrid_over_best_single": round(ndcg["hybrid"] / ndcg[best], 3) if ndcg[best] else None,
           "recall10_hybrid": figure(result, "hybrid", "recall"),
           "cold_item_recall10": {m: figure(result, m, "recall", slice_="cold_items")
                                  for m in ("hybrid", "content", "als", "item_item", "fused")},
           "served": (result.get("ranker") or {}).get("choice", {}).get("use_label", "blend"),
           "seconds": result["seconds"]}
    if dataset == "movielens":
        out["als_ndcg10"] = ndcg["als"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--steps", default=",".join(s for s, _ in STEPS),
                        help="which steps to run (each still takes the settings of the steps before it)")
    args = parser.parse_args()
    datasets, wanted = args.datasets.split(","), args.steps.split(",")
    out_path = ROOT / "bench" / "results" / "ranking.json"
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    steps = results.setdefault("steps", {})
    for dataset in datasets:
        settings: list[str] = []
        for step, extra in STEPS:
            settings += extra
            if step not in wanted:
                continue
            print(f"{dataset}: {step} ...", flush=True)
            summary = summarise(dataset, run_step(dataset, step, settings))
            steps.setdefault(dataset, {})[step] = summary
            print(f"{dataset}: {step}: hybrid nDCG@10 {summary['hybrid_ndcg10']} (best single "
                  f"{summary['best_single']} {summary['best_single_ndcg10']}; serving {summary['served']}) "
                  f"in {summary['seconds']:.0f}s", flush=True)
            results["ablation"] = [
                {"step": s, **{f"{d}_ndcg10": steps.get(d, {}).get(s, {}).get("hybrid_ndcg10") for d in DATASETS}}
                for s, _ in STEPS]
            last = {d: steps[d][max(steps[d], key=lambda s: [n for n, _ in STEPS].index(s))] for d in steps}
            if "demo" in last:
                d = last["demo"]
                results["demo"] = {k: d[k] for k in ("best_single", "best_single_ndcg10", "hybrid_ndcg10",
                                                     "hybrid_over_best_single", "recall10_hybrid",
                                                     "cold_item_recall10", "served")}
            if "movielens" in last:
                m = last["movielens"]
                results["movielens"] = {"als_ndcg10": m["als_ndcg10"], "hybrid_ndcg10": m["hybrid_ndcg10"],
                                        "hybrid_over_als": round(m["hybrid_ndcg10"] / m["als_ndcg10"], 3),
                                        "served": m["served"], "users": m["users"]}
            results["command"] = "bench/ranking.py " + " ".join(sys.argv[1:])
            results["machine"] = f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, " \
                                 f"Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}"
            out_path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results.get("ablation"), indent=1))
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
