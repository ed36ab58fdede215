"""Benchmark: the ranking and beyond-accuracy metrics in Spark (llmrec.evaluate.metrics)
against a single-process pandas/numpy implementation of the same definitions, on the
same synthetic lists, in one command; the two must agree to 1e-9.

    .venv/bin/python bench/eval_metrics.py [--users 200000] [--items 50000] [--k 10]

Lists: per user, K distinct items drawn with a Zipf-like popularity, 1-5 relevant items
(half of them inside the list), a history of 5-20 items, 32-dim unit item vectors. Spark
runs local[N] (N = cores) with 4g driver memory; pandas runs in this process after it.
Timings exclude generating the data; Spark's include its planning, shuffles and the
collect of the (small) result. Writes bench/results/eval_metrics.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "tests"))
from speed import scratch  # noqa: E402  (bench/ is this script's own folder on sys.path)


def make_data(users: int, items: int, k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, items + 1) ** 0.8
    weights /= weights.sum()
    recs = np.stack([rng.choice(items, size=k, replace=False, p=weights) for _ in range(users)])
    n_rel = rng.integers(1, 6, users)
    truth_u, truth_i = [], []
    for u in range(users):
        inside = recs[u, rng.permutation(k)[: (n_rel[u] + 1) // 2]]
        outside = rng.integers(0, items, n_rel[u] - len(inside))
        rel = np.unique(np.concatenate([inside, outside]))
        truth_u += [u] * len(rel)
        truth_i += list(rel)
    n_hist = rng.integers(5, 21, users)
    hist = pd.DataFrame({"user_idx": np.repeat(np.arange(users), n_hist),
                         "item_idx": rng.choice(items, size=n_hist.sum(), p=weights)}).drop_duplicates()
    vectors = rng.normal(size=(items, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rec_df = pd.DataFrame({"model": "m", "user_idx": np.repeat(np.arange(users), k),
                           "item_idx": recs.ravel(), "rank": np.tile(np.arange(1, k + 1), users)})
    truth = pd.DataFrame({"user_idx": truth_u, "item_idx": truth_i})
    return rec_df, truth, hist, vectors


def pandas_metrics(recs: pd.DataFrame, truth: pd.DataFrame, hist: pd.DataFrame, vectors: np.ndarray,
                   items: int, k: int) -> dict:
    """The same definitions, vectorised in pandas/numpy, for one K."""
    n_users = truth.user_idx.nunique()
    n_rel = truth.groupby("user_idx").size().rename("n_rel")
    top = recs[recs["rank"] <= k]
    hits = top.merge(truth, on=["user_idx", "item_idx"]).merge(n_rel, left_on="user_idx", right_index=True)
    hits = hits.sort_values(["user_idx", "rank"])
    hits["hit_no"] = hits.groupby("user_idx").cumcount() + 1
    cut = np.minimum(hits.n_rel, k)
    idcg = np.cumsum(1 / np.log2(np.arange(2, k + 2)))
    out = {"precision": len(hits) / k / n_users, "recall": (1 / hits.n_rel).sum() / n_users,
           "ndcg": (1 / np.log2(hits["rank"] + 1) / idcg[cut - 1]).sum() / n_users,
           "map": (hits.hit_no / hits["rank"] / cut).sum() / n_users,
           "hit": (hits.hit_no == 1).sum() / n_users,
           "mrr": (1 / hits["rank"][hits.hit_no == 1]).sum() / n_users}
    counts = top.item_idx.value_counts()
    p = counts / counts.sum()
    shares = np.sort(np.concatenate([np.zeros(items - len(p)), p.to_numpy()]))
    pairs = hist.item_idx.value_counts()
    out.update(
        catalog_coverage=len(counts) / items, entropy=float(-(p * np.log2(p)).sum()),
        gini=float(((2 * np.arange(1, items + 1) - items - 1) * shares).sum() / (items - 1)),
        novelty=float(-np.log2(top.item_idx.map(pairs).fillna(1) / len(hist)).mean()))
    v = vectors[top.sort_values(["user_idx", "rank"]).item_idx.to_numpy()].reshape(-1, k, vectors.shape[1])
    s = v.sum(1)
    out["diversity"] = float((1 - ((s * s).sum(1) - (v * v).sum((1, 2))) / (k * (k - 1))).mean())
    h = pd.DataFrame(vectors[hist.item_idx.to_numpy()]).groupby(hist.user_idx.to_numpy()).mean()
    rel = top.merge(truth.assign(rel=1.0), on=["user_idx", "item_idx"], how="left").rel.fillna(0.0)
    unexpected = 1 - (vectors[top.item_idx.to_numpy()] * h.loc[top.user_idx].to_numpy()).sum(1)
    out["serendipity"] = float(pd.Series(rel.to_numpy() * unexpected).groupby(top.user_idx.to_numpy()).mean().mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()

    from conftest import make_config
    from llmrec.evaluate import metrics
    from llmrec.spark import get_session

    recs, truth, hist, vectors = make_data(args.users, args.items, args.k)
    cores = os.cpu_count() or 1
    cfg = make_config(Path(scratch("llmrec-bench-eval-")), f"spark.master=local[{cores}]", "spark.driver_memory=4g",
                      f"spark.shuffle_partitions={2 * cores}")
    spark = get_session(cfg)
    with tempfile.TemporaryDirectory() as tmp:  # Parquet in, so both sides start from files
        for name, df in (("recs", recs), ("truth", truth), ("hist", hist)):
            df.to_parquet(f"{tmp}/{name}.parquet")
        pd.DataFrame({"item_idx": np.arange(args.items), "vector": list(vectors)}).to_parquet(f"{tmp}/vec.parquet")
        t0 = time.perf_counter()
        r, t, h, v = (spark.read.parquet(f"{tmp}/{n}.parquet") for n in ("recs", "truth", "hist", "vec"))
        catalog = v.select("item_idx")
        got = metrics.ranking(r, t, [args.k]).unionByName(
            metrics.beyond_accuracy(r, t, [args.k], catalog, h, v)).collect()
        spark_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        want = pandas_metrics(*(pd.read_parquet(f"{tmp}/{n}.parquet") for n in ("recs", "truth", "hist")),
                              np.stack(pd.read_parquet(f"{tmp}/vec.parquet").vector.to_numpy()).astype(np.float64),
                              args.items, args.k)
        pandas_s = time.perf_counter() - t0
    spark_vals = {row.metric: row.value for row in got}
    diff = max(abs(spark_vals[m] - want[m]) for m in want)
    result = {"users": args.users, "items": args.items, "k": args.k, "rec_rows": len(recs),
              "spark_s": round(spark_s, 1), "pandas_s": round(pandas_s, 1),
              "ratio_pandas_over_spark": round(pandas_s / spark_s, 2), "max_abs_diff": diff,
              "metrics": {m: round(x, 6) for m, x in want.items()},
              "machine": f"{cores} cores, {platform.processor() or platform.machine()}, "
                         f"Python {platform.python_version()}"}
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / "eval_metrics.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    if diff > 1e-6:
        sys.exit(f"Spark and pandas disagree by {diff}")


if __name__ == "__main__":
    main()
