"""An A/B of one Spark setting on the data stages (ingest + clean + interactions), in one command.

    .venv/bin/python bench/conf_ab.py --events 10000000 \\
        --a spark.buffer.pageSize=32m --b spark.buffer.pageSize=2m --rounds 2

Generates the shop once (bench/ingest_pipeline.py's generator), then runs the three
stages in a fresh JVM per run, A and B alternating as A B B A ... (a drift in the
machine's speed over the runs then weighs on both alike). Every run starts from the same
raw files with the previous run's tables removed, so each is a first load, and the
tables' digests must be equal across runs (the same rows whatever the setting). Writes
bench/results/conf_ab_<events, e.g. 10m>.json (or --out): each run's stage times, peak memory
(summed PSS), load average and each table's live data files, and B's median pipeline time
over A's. spark.driver.memory as a setting is the run's JVM heap (given at launch: a
session cannot change it).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ingest_pipeline as bench  # noqa: E402
import spark_profile  # noqa: E402
from speed import load, machine  # noqa: E402


def order(rounds: int) -> list[str]:
    """A B, then B A, then A B...: each round reverses the last."""
    return [x for r in range(rounds) for x in (("a", "b") if r % 2 == 0 else ("b", "a"))]


def clear_tables(root: Path) -> None:
    """Everything a run wrote (tables, checkpoints, exports); the raw files stay."""
    for path in root.iterdir():
        if path.is_dir() and path.name != "raw":
            shutil.rmtree(path)
        elif path.is_file():
            path.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--a", action="append", required=True, metavar="KEY=VALUE", help="setting(s) of run A")
    ap.add_argument("--b", action="append", required=True, metavar="KEY=VALUE", help="setting(s) of run B")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--driver-memory", default="2g")
    ap.add_argument("--root", default="/tmp/llmrec-bench-ab")
    ap.add_argument("--out", help="result file (default bench/results/conf_ab_<events>.json)")
    args = ap.parse_args()

    root = Path(args.root) / str(args.events)
    shutil.rmtree(root, ignore_errors=True)
    common = ["--events", str(args.events), "--root", str(root), "--cores", str(args.cores)]
    generated, _, err = bench.run_child(["--child", "generate", *common, "--driver-memory", args.driver_memory])
    if generated is None:
        raise SystemExit(f"generating the shop failed: {err}")
    settings = {"a": args.a, "b": args.b}
    runs = []
    for arm in order(args.rounds):
        clear_tables(root)
        before = load()
        heap = dict(kv.split("=", 1) for kv in settings[arm]).get("spark.driver.memory", args.driver_memory)
        conf = [x for kv in settings[arm] if not kv.startswith("spark.driver.memory=") for x in ("--spark-conf", kv)]
        result, _, err = bench.run_child(["--child", "spark", *common, "--driver-memory", heap, *conf])
        if result is None:
            raise SystemExit(f"run {arm} ({settings[arm]}) failed: {err}")
        peak = result["peak_rss"]  # sampled while the stages ran, as ingest_pipeline.py reports it
        runs.append({"arm": arm, "settings": settings[arm], "times_s": result["times"],
                     "peak_pss_gb": round(peak / 2**30, 2), "load_avg_before": before,
                     "digests": result["digests"], "data_files": spark_profile.live_files(str(root))})
        print(f"{arm} {settings[arm]}: {result['times']['pipeline']:.1f} s, peak {peak / 2**30:.2f} GB, "
              f"load {before}", flush=True)
    shutil.rmtree(root, ignore_errors=True)

    digests = {json.dumps(r["digests"], sort_keys=True) for r in runs}
    median = {arm: statistics.median(r["times_s"]["pipeline"] for r in runs if r["arm"] == arm)
              for arm in ("a", "b")}
    summary = {"machine": machine(), "events": args.events, "driver_memory": args.driver_memory,
               "a": args.a, "b": args.b, "order": order(args.rounds),
               "median_pipeline_s": {k: round(v, 1) for k, v in median.items()},
               "ratio_b_over_a": round(median["b"] / median["a"], 3),
               "same_tables_in_every_run": len(digests) == 1, "runs": runs}
    size = f"{args.events // 1_000_000}m" if args.events % 1_000_000 == 0 else f"{args.events // 1000}k"
    out = Path(args.out) if args.out else bench.ROOT / "bench" / "results" / f"conf_ab_{size}.json"
    out.write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=1))
    if len(digests) != 1:
        raise SystemExit("the tables differ between runs: the setting changed the results")


if __name__ == "__main__":
    main()
