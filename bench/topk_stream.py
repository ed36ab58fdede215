"""Benchmark: the streaming blockwise top-K (llmrec.infer.topk: a task per query block
streams the corpus blocks through a running top K) against the one it replaced (a task
per query block x corpus block pair, each emitting its best K, then a window over all of
them), the same data, in one command.

    .venv/bin/python bench/topk_stream.py [--queries 20000] [--corpus 100000] [--dim 32]
        [--k 50] [--block-rows 4096] [--baseline 4e76f8a]

The baseline is lib/llmrec/infer/topk.py as of the commit given (read with git show).
Both run on local[N] (N = cores) over the same cached DataFrames (random vectors, 10
excluded ids per query, like a user's history), and both results are checked equal.
Rows emitted by the kernels (what goes into the shuffle before the final top K):
queries x corpus blocks x K before, queries x K x corpus partitions now.
Writes bench/results/topk_stream.json.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
from speed import scratch  # noqa: E402  (bench/ is this script's own folder on sys.path)


def baseline_module(commit: str):
    """The baseline's topk module, written where Spark's Python workers can import it."""
    folder = Path(scratch("topk-baseline-"))
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:lib/llmrec/infer/topk.py"],
                         check=True, capture_output=True, text=True).stdout
    (folder / "topk_baseline.py").write_text(src)
    sys.path.insert(0, str(folder))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])
    spec = importlib.util.spec_from_file_location("topk_baseline", folder / "topk_baseline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=20_000)
    ap.add_argument("--corpus", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--block-rows", type=int, default=4096)
    ap.add_argument("--baseline", default="4e76f8a")
    args = ap.parse_args()
    baseline = baseline_module(args.baseline)  # before the session: workers inherit PYTHONPATH

    import numpy as np

    from llmrec import spark as sparkmod
    from llmrec.conf import load
    from llmrec.infer import topk

    cfg = load(str(ROOT / "conf/local.yaml"))
    spark = sparkmod.get_session(cfg)
    rng = np.random.default_rng(0)
    q = rng.normal(size=(args.queries, args.dim)).astype(np.float32)
    c = rng.normal(size=(args.corpus, args.dim)).astype(np.float32)
    seen = rng.integers(0, args.corpus, size=(args.queries, 10))
    queries = spark.createDataFrame(
        [(i, q[i].tolist(), seen[i].tolist()) for i in range(args.queries)],
        "qid long, vector array<float>, seen array<long>").cache()
    corpus = spark.createDataFrame([(j, c[j].tolist()) for j in range(args.corpus)],
                                   "cid long, vector array<float>").cache()
    queries.count(), corpus.count()

    runs, results = {}, {}
    for name, module in (("baseline", baseline), ("streaming", topk)):
        start = time.perf_counter()
        rows = module.topk(queries, corpus, args.k, args.block_rows, exclude="seen") \
            .select("qid", "cid", "rank").collect()
        runs[name] = time.perf_counter() - start
        results[name] = sorted((r.qid, r.rank, r.cid) for r in rows)
        print(f"{name}: {runs[name]:.1f} s, {len(rows):,} rows", flush=True)
    assert results["baseline"] == results["streaming"], "the two top-Ks differ"
    c_blocks = math.ceil(args.corpus / args.block_rows)
    out = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, local[{spark.sparkContext.defaultParallelism}]",
        "args": vars(args), "seconds": runs, "speedup": runs["baseline"] / runs["streaming"],
        "kernel_rows_baseline": args.queries * c_blocks * args.k,
    }
    print(json.dumps(out, indent=1))
    (ROOT / "bench/results").mkdir(exist_ok=True)
    (ROOT / "bench/results/topk_stream.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
