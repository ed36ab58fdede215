"""Benchmark: what a long local session keeps on its driver heap, with Spark's default
Tungsten page (32 MB for a 2g driver on 2 cores: heap / cores / 16) against llmrec's
2 MB page (lib/llmrec/spark.py), in one command.

    .venv/bin/python bench/driver_heap.py [--cycles 3]

Each page size runs in its own session (a fresh JVM, local[2], 2g heap, the test suite's
settings): the test suite's small shop (generate .. interactions), the embedding backfill
with a tiny random BERT, then --cycles rounds of candidates + recommend, as the test
suite and a notebook session do. After each round: the live heap (jmap -histo:live runs a
full GC first), the long[] arrays in it (Tungsten pages) and the driver's GC time so far.
Writes bench/results/driver_heap.json, with 2m / default ratios of the last round.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from argparse import Namespace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "tests"))
from speed import load, machine  # noqa: E402  (bench/ is this script's own folder on sys.path)

PAGES = {"default": "32m", "llmrec": "2m"}  # default: what Spark computes for 2g on local[2]


def live_heap(spark) -> dict:
    """Live heap and its long[] arrays in MB (a full GC first), and GC time so far in s."""
    jvm = spark.sparkContext._jvm
    pid = str(jvm.java.lang.ProcessHandle.current().pid())
    lines = subprocess.run(["jmap", "-histo:live", pid], capture_output=True, text=True, check=True).stdout
    total = next(int(line.split()[2]) for line in lines.splitlines() if line.startswith("Total"))
    longs = next((int(line.split()[2]) for line in lines.splitlines() if line.split()[3:4] == ["[J"]), 0)
    gc_ms = sum(b.getCollectionTime() for b in jvm.java.lang.management.ManagementFactory.getGarbageCollectorMXBeans())
    return {"live_heap_mb": round(total / 1e6, 1), "long_arrays_mb": round(longs / 1e6, 1),
            "gc_s": round(gc_ms / 1000, 1)}


def child(page: str, cycles: int, out: Path) -> None:
    from helpers import SHOP, make_config, save_tiny_model, tiny
    from llmrec import runs
    from llmrec.infer import backfill, candidates, rank
    from llmrec.spark import get_session

    work = out.parent  # the caller's temporary folder, removed with it
    cfg = make_config(work / "root", *SHOP, *tiny(save_tiny_model(work / "tiny")),
                      f'spark.conf={{"spark.buffer.pageSize": "{page}"}}')
    spark = get_session(cfg)
    page_bytes = spark.sparkContext._jvm.org.apache.spark.SparkEnv.get().memoryManager().pageSizeBytes()
    t0 = time.perf_counter()
    runs.pipeline(spark, cfg, Namespace(stages=["generate", "ingest", "clean", "interactions"]))
    backfill.run(spark, cfg)
    rounds = [{"round": 0, "s": round(time.perf_counter() - t0, 1), **live_heap(spark)}]
    for i in range(1, cycles + 1):
        t0 = time.perf_counter()
        candidates.build(spark, cfg)
        rank.recommend(spark, cfg)
        rounds.append({"round": i, "s": round(time.perf_counter() - t0, 1), **live_heap(spark)})
        print(f"page {page}: {rounds[-1]}", flush=True)
    out.write_text(json.dumps({"page_bytes": page_bytes, "rounds": rounds}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=3)
    ap.add_argument("--child", nargs=2, metavar=("PAGE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child[0], args.cycles, Path(args.child[1]))

    load_before = load()
    result = {}
    for name, page in PAGES.items():
        with tempfile.TemporaryDirectory(prefix="llmrec-bench-heap-") as work:
            out = Path(work) / "result.json"
            subprocess.run([sys.executable, __file__, "--cycles", str(args.cycles), "--child", page, str(out)],
                           check=True)
            result[name] = json.loads(out.read_text())
    last = {name: r["rounds"][-1] for name, r in result.items()}
    ratios = {f"{k}_llmrec_over_default": round(last["llmrec"][k] / last["default"][k], 3)
              for k in ("live_heap_mb", "long_arrays_mb", "gc_s")}
    ratios["cycle_s_llmrec_over_default"] = round(
        sum(r["s"] for r in result["llmrec"]["rounds"][1:]) / sum(r["s"] for r in result["default"]["rounds"][1:]), 3)
    record = {"command": f"bench/driver_heap.py --cycles {args.cycles}", "cycles": args.cycles,
              "machine": machine(), "load_avg_before": load_before,
              "variants": result, **ratios}
    (ROOT / "bench" / "results" / "driver_heap.json").write_text(json.dumps(record, indent=1))
    for name, r in result.items():
        print(f"{name:8} page {r['page_bytes'] >> 20} MB: " + "; ".join(
            f"round {x['round']} {x['s']} s, live {x['live_heap_mb']} MB (long[] {x['long_arrays_mb']}), "
            f"GC {x['gc_s']} s" for x in r["rounds"]))
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
