"""Benchmark: the faiss search of one corpus graph for one query block, with each query's
exclusions (a user's history), as the top-K kernel does it now (a query asks for k plus
its own exclusions in the graph, queries searched in tiers of like width) against the
way it replaced (every query asks for k plus the block's largest exclusion list), on the
same graph and queries, in one command. No Spark: this is the per-task kernel.

    .venv/bin/python bench/faiss_exclusions.py [--corpus 100000] [--queries 4096] [--dim 32]
        [--k 50] [--history 12] [--ef-search 256] [--baseline e4d6754]

History sizes are lognormal (median --history, default 12, like the scale run's ~13
items a user) with a few heavy users; a third of each history is drawn from the query's 200 nearest items so
exclusions do remove results. Recall@k of both against the exact top k (exclusions
applied) is reported beside the times. `--history 0`: each query leaves out one id (the
content-neighbour case). Writes bench/results/faiss_exclusions[_self].json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from types import SimpleNamespace

import numpy as np
from topk_stream import ROOT, baseline_module  # the previous topk.py, read from git (and lib/ on the path)


def recall(top, truth_ids: np.ndarray) -> float:
    rows, ids, _, _ = top.result()
    got = set(zip(rows.tolist(), ids.tolist()))
    want = {(r, i) for r, row in enumerate(truth_ids) for i in row.tolist()}
    return len(got & want) / len(want)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=4096)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--history", type=int, default=12, help="median history size; 0: one id each")
    ap.add_argument("--ef-search", type=int, default=256, help="candidates.ef_search")
    ap.add_argument("--baseline", default="e4d6754")
    args = ap.parse_args()
    from llmrec.infer import topk

    old = baseline_module(args.baseline)
    rng = np.random.default_rng(7)
    c = rng.standard_normal((args.corpus, args.dim)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    c_ids = rng.permutation(args.corpus * 3)[:args.corpus].astype(np.int64)
    qv = rng.standard_normal((args.queries, args.dim)).astype(np.float32)
    qv /= np.linalg.norm(qv, axis=1, keepdims=True)
    scores = qv @ c.T
    near = np.argpartition(-scores, 200, axis=1)[:, :200]

    sizes = np.clip(rng.lognormal(np.log(max(args.history, 1)), 1.0, args.queries).astype(int), 1, 3000)
    if args.history == 0:  # like content neighbours: each query leaves out one id (itself)
        sizes = np.ones(args.queries, int)
    x_rows, x_ids = [], []
    for r, n in enumerate(sizes):
        own = np.concatenate([rng.choice(near[r], min(n // 3, 200), replace=False),
                              rng.integers(0, args.corpus, n - min(n // 3, 200))])
        own = np.unique(own)
        x_rows.append(np.full(len(own), r, np.int64))
        x_ids.append(c_ids[own])
    q = SimpleNamespace(ids=np.arange(args.queries, dtype=np.int64), vectors=qv,
                        x_rows=np.concatenate(x_rows), x_ids=np.concatenate(x_ids))
    order = np.argsort(c_ids)
    exact = scores[:, order]
    topk._mask(exact, c_ids[order], q.x_rows, q.x_ids)
    truth = topk.RunningTopK(args.queries, args.k)
    truth.add(exact, c_ids[order])
    truth_ids = truth.ids

    t = time.perf_counter()
    graph = topk._graph(c)
    build = time.perf_counter() - t
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "corpus": args.corpus, "queries": args.queries, "dim": args.dim, "k": args.k,
           "ef_search": args.ef_search, "history": args.history,
           "history_sizes": {"median": int(np.median(sizes)), "p99": int(np.percentile(sizes, 99)),
                             "max": int(sizes.max())},
           "graph_build_s": round(build, 2), "runs": []}
    for _ in range(2):  # alternating, twice: the machine is noisy
        for name, module in (("before", old), ("now", topk)):
            t = time.perf_counter()
            depth = [args.ef_search] if module is topk else []  # the baseline had no setting
            top = module._search(graph, c_ids, q, args.k, *depth)
            secs = time.perf_counter() - t
            out["runs"].append({"version": name, "seconds": round(secs, 2),
                                "recall": round(recall(top, truth_ids), 4)})
            print(out["runs"][-1], flush=True)
    by = {v: min(r["seconds"] for r in out["runs"] if r["version"] == v) for v in ("before", "now")}
    out["speedup"] = round(by["before"] / by["now"], 2)
    print(json.dumps(out, indent=1))
    (ROOT / "bench/results").mkdir(exist_ok=True)
    name = "faiss_exclusions.json" if args.history else "faiss_exclusions_self.json"
    (ROOT / "bench/results" / name).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
