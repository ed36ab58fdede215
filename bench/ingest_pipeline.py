"""Benchmark: ingest + clean + interactions on the synthetic shop, Spark vs pandas.

    .venv/bin/python bench/ingest_pipeline.py --events 1000000 [--events 10000000]

For each size: generates the shop (not timed in the ratio), runs the three Spark stages
in a fresh local[N] session (its own process, so peak memory is its own), then runs a
single-process pandas implementation of the same parsing, checks, dedup, weighting,
decay and aggregation on the same raw files, in a child process with a memory cap.
Prints events/s of each and the ratio spark/pandas, plus peak RSS of each process
tree; writes bench/results/ingest_pipeline.json.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))


class PeakRSS:
    """Samples the summed RSS of a process and its children (the Spark JVM, workers)."""

    def __init__(self, pid: int):
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.wait(0.5):
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass

    def done(self) -> int:
        self.stop.set()
        self.thread.join()
        return self.peak


def shop_overrides(events: int, root: str, cores: int) -> list[str]:
    return [f"storage.root={root}", f"spark.master=local[{cores}]", "spark.driver_memory=8g",
            f"synthetic.events={events}", f"synthetic.users={max(2000, events // 50)}",
            f"synthetic.items={max(500, events // 200)}", "synthetic.days=60",
            f"synthetic.files_per_day={max(1, events // 2_000_000)}",
            f"spark.shuffle_partitions={max(8, events // 250_000)}"]


def spark_child(events: int, root: str, cores: int, out: str) -> None:
    from llmrec import conf
    from llmrec.data import clean, ingest, synthetic
    from llmrec.features import interactions
    from llmrec.progress import setup_logging
    from llmrec.spark import get_session

    setup_logging()
    cfg = conf.load(ROOT / "conf/local.yaml", shop_overrides(events, root, cores))
    spark = get_session(cfg)
    times = {}
    t = time.perf_counter()
    synthetic.generate(spark, cfg)
    times["generate"] = time.perf_counter() - t
    t0 = time.perf_counter()
    for name, fn in (("ingest", ingest.run), ("clean", clean.run), ("interactions", interactions.build)):
        t = time.perf_counter()
        result = fn(spark, cfg)
        times[name] = time.perf_counter() - t
    times["pipeline"] = time.perf_counter() - t0
    raw_events = spark.read.text(f"{cfg.raw_root}/events").count()
    Path(out).write_text(json.dumps({"times": times, "raw_events": raw_events, "nnz": result["nnz"]}))
    spark.stop()


def pandas_child(root: str, out: str, weights: dict) -> None:
    """The same work in one pandas process: parse, check, dedup, weight, decay, aggregate."""
    import numpy as np
    import pandas as pd

    t0 = time.perf_counter()

    def load(entity):
        frames = []
        for path in sorted(glob.glob(f"{root}/raw/{entity}/dt=*/*.txt")):
            lines = pd.read_csv(path, sep="\x01", header=None, names=["line"], dtype=str,
                                quoting=3, engine="c")["line"]
            parsed = pd.json_normalize([_loads(x) for x in lines])
            frames.append(parsed)
        return pd.concat(frames, ignore_index=True)

    items = load("items")
    items = items[items["item_id"].notna() & items["title"].notna()]
    price = pd.to_numeric(items["price"], errors="coerce")
    items = items[price.notna() & (price >= 0)].drop_duplicates("item_id")
    events = load("events")
    events["ts"] = pd.to_datetime(events["event_time"], format="%Y-%m-%dT%H:%M:%SZ", errors="coerce")
    ok = (events["event_id"].notna() & events["user_id"].notna() & events["item_id"].isin(items["item_id"])
          & events["event_type"].isin(list(weights["events"])) & events["ts"].notna())
    events = events[ok].drop_duplicates("event_id")
    reviews = load("reviews")
    reviews["ts"] = pd.to_datetime(reviews["review_time"], format="%Y-%m-%dT%H:%M:%SZ", errors="coerce")
    rating = pd.to_numeric(reviews["rating"], errors="coerce")
    ok = (reviews["review_id"].notna() & reviews["user_id"].notna() & reviews["item_id"].isin(items["item_id"])
          & rating.between(1, 5) & reviews["ts"].notna())
    reviews = reviews[ok].drop_duplicates("review_id")
    w = pd.concat([
        pd.DataFrame({"u": events["user_id"], "i": events["item_id"], "ts": events["ts"],
                      "w": events["event_type"].map(weights["events"])}),
        pd.DataFrame({"u": reviews["user_id"], "i": reviews["item_id"], "ts": reviews["ts"],
                      "w": rating[ok].astype(int).astype(str).map(weights["reviews"])})])
    ref = w["ts"].max()
    age = (ref - w["ts"]).dt.total_seconds() / 86400
    w["w"] = w["w"] * np.power(0.5, age / weights["half_life"])
    agg = w.groupby(["u", "i"]).agg(weight=("w", "sum"), n=("w", "size"), first=("ts", "min"))
    # Dense indexes in id order, as gold.user_index / gold.item_index assign them.
    agg = agg.reset_index()
    agg["user_idx"] = agg["u"].astype("category").cat.codes
    agg["item_idx"] = agg["i"].astype("category").cat.codes
    nnz = len(agg)
    Path(out).write_text(json.dumps({"seconds": time.perf_counter() - t0, "nnz": nnz,
                                     "raw_events": int(len(events))}))


def _loads(line):
    try:
        value = json.loads(line)
        return value if isinstance(value, dict) else {}
    except ValueError:
        return {}


def run_child(args: list[str], mem_cap_gb: float | None = None) -> tuple[dict | None, int, str]:
    out = f"/tmp/llmrec-bench-{os.getpid()}-{time.monotonic_ns()}.json"

    def cap():
        if mem_cap_gb:
            limit = int(mem_cap_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    proc = subprocess.Popen([sys.executable, __file__, *args, "--out", out], preexec_fn=cap)
    meter = PeakRSS(proc.pid)
    code = proc.wait()
    peak = meter.done()
    if code != 0 or not os.path.exists(out):
        return None, peak, f"exit code {code}"
    return json.loads(Path(out).read_text()), peak, ""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, action="append")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--pandas-mem-gb", type=float, default=16.0)
    parser.add_argument("--root", default="/tmp/llmrec-bench")
    parser.add_argument("--child", choices=["spark", "pandas"])
    parser.add_argument("--out")
    args = parser.parse_args()
    from llmrec import conf

    cfg = conf.load(ROOT / "conf/local.yaml")
    weights = {"events": cfg.interactions.event_weights, "reviews": cfg.interactions.review_weights,
               "half_life": cfg.interactions.half_life_days}
    if args.child == "spark":
        return spark_child(args.events[0], args.root, args.cores, args.out)
    if args.child == "pandas":
        return pandas_child(args.root, args.out, weights)

    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "python": platform.python_version()}
    results = []
    for events in args.events or [1_000_000]:
        root = f"{args.root}/{events}"
        subprocess.run(["rm", "-rf", root], check=True)
        spark, spark_peak, err = run_child(["--child", "spark", "--events", str(events), "--root", root,
                                            "--cores", str(args.cores)])
        if spark is None:
            raise SystemExit(f"spark run failed: {err}")
        pdres, pd_peak, pd_err = run_child(["--child", "pandas", "--root", root], args.pandas_mem_gb)
        t = spark["times"]
        row = {"events_target": events, "raw_events": spark["raw_events"], "spark_times_s": t,
               "spark_events_per_s": spark["raw_events"] / t["pipeline"],
               "spark_peak_rss_gb": round(spark_peak / 2**30, 2), "nnz": spark["nnz"]}
        if pdres:
            row.update({"pandas_s": pdres["seconds"], "pandas_events_per_s": spark["raw_events"] / pdres["seconds"],
                        "pandas_peak_rss_gb": round(pd_peak / 2**30, 2), "pandas_nnz": pdres["nnz"],
                        "ratio_spark_over_pandas": pdres["seconds"] / t["pipeline"]})
        else:
            row.update({"pandas_failed": f"{pd_err} (memory cap {args.pandas_mem_gb} GB)",
                        "pandas_peak_rss_gb": round(pd_peak / 2**30, 2)})
        results.append(row)
        print(json.dumps(row, indent=2), flush=True)
    out = ROOT / "bench" / "results" / "ingest_pipeline.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "results": results}, indent=2))


if __name__ == "__main__":
    main()
