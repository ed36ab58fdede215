"""Benchmark: ingest + clean + interactions on the synthetic shop, Spark vs pandas.

    .venv/bin/python bench/ingest_pipeline.py --events 1000000 --events 10000000 [--profile]

For each size: generates the shop in one process (not timed in the ratio), runs the
three Spark stages in a fresh local[N] session with a --driver-memory heap (default 1536m)
in another (peak memory sampled over its process tree while the stages run), then runs
a single-process pandas implementation of the same parsing, checks, dedup, weighting,
decay and aggregation on the same raw files, in a child process with a memory cap.
Prints events/s of each and the ratio spark/pandas, plus peak memory of each (summed
PSS; the JSON keeps the key names *_peak_rss_gb); records
each table's row count and order-free checksum (compare two runs: same rows); with
--profile, Spark's jobs, passes, shuffles and Delta commits per step (spark_profile.py).
Writes bench/results/ingest_pipeline.json.
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
sys.path.insert(0, str(ROOT / "bench"))
import spark_profile  # noqa: E402
from speed import load as load_avg  # noqa: E402


class PeakMemory:
    """Samples the summed memory (PSS) of a process and its children (the Spark JVM, workers)."""

    def __init__(self, pid: int):
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.at_peak: dict[str, int] = {}  # each process's PSS when the sum peaked
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.wait(0.5):
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                # PSS, not RSS: a page two processes share counts once. The JVM forks for
                # shell commands (Hadoop's), and a fork shares the whole heap until exec:
                # summed RSS counted the heap twice whenever a sample caught one.
                pss = {f"{p.pid} {p.name()}": p.memory_full_info().pss for p in procs if p.is_running()}
                if sum(pss.values()) > self.peak:
                    self.peak, self.at_peak = sum(pss.values()), pss
            except psutil.Error:
                pass

    def done(self) -> int:
        self.stop.set()
        self.thread.join()
        return self.peak


def shop_overrides(events: int, root: str, cores: int, heap: str) -> list[str]:
    return [f"storage.root={root}", f"spark.master=local[{cores}]", f"spark.driver_memory={heap}",
            f"synthetic.events={events}", f"synthetic.users={max(2000, events // 50)}",
            f"synthetic.items={max(500, events // 200)}", "synthetic.days=60",
            f"synthetic.files_per_day={max(1, events // 2_000_000)}",
            f"spark.shuffle_partitions={max(8, events // 250_000)}"]


def generate_child(events: int, root: str, cores: int, heap: str, out: str) -> None:
    from llmrec import conf
    from llmrec.data import synthetic
    from llmrec.spark import get_session

    cfg = conf.load(ROOT / "conf/local.yaml", shop_overrides(events, root, cores, heap))
    spark = get_session(cfg)
    t = time.perf_counter()
    synthetic.generate(spark, cfg)
    Path(out).write_text(json.dumps({"seconds": time.perf_counter() - t}))
    spark.stop()


def spark_child(events: int, root: str, cores: int, heap: str, out: str, profile: str | None,
                spark_conf: list[str] = ()) -> None:
    """The three stages in a fresh JVM; peak memory is sampled over this process tree
    while they run (not while the session starts, nor for the digests after)."""
    from llmrec import conf
    from llmrec.data import clean, ingest
    from llmrec.features import interactions
    from llmrec.progress import log, setup_logging, timed
    from llmrec.spark import get_session

    setup_logging()
    cfg = conf.load(ROOT / "conf/local.yaml", shop_overrides(events, root, cores, heap))
    if profile:
        cfg.spark.conf.update(spark_profile.profile_conf(profile))
    cfg.spark.conf.update(dict(kv.split("=", 1) for kv in spark_conf))
    spark = get_session(cfg)
    times, windows = {}, {}
    meter = PeakMemory(os.getpid())
    t0 = time.perf_counter()
    for name, fn in (("ingest", ingest.run), ("clean", clean.run), ("interactions", interactions.build)):
        t = time.perf_counter()
        windows[name] = [time.time() * 1000]
        with timed(name, spark):
            result = fn(spark, cfg)
        windows[name].append(time.time() * 1000)
        times[name] = time.perf_counter() - t
    times["pipeline"] = time.perf_counter() - t0
    peak = meter.done()
    log.info("peak memory (PSS) %.2f GB: %s", peak / 2**30,
             ", ".join(f"{name} {pss / 2**30:.2f}" for name, pss in sorted(meter.at_peak.items())))
    raw_events = spark.read.text(f"{cfg.raw_root}/events").count()
    Path(out).write_text(json.dumps({"times": times, "raw_events": raw_events, "nnz": result["nnz"],
                                     "windows": windows, "peak_rss": peak, "digests": digests(spark, cfg)}))
    spark.stop()


def digests(spark, cfg) -> dict:
    """Per table written: rows and an order-free checksum of them, to show a change left
    every row as it was. Weights are rounded to 6 decimals: a sum's last bits depend on the
    order Spark adds its terms, which its memory settings change (at 10M events, 2 MB
    against 32 MB pages: 97,582 of 6.25M weights 1-2 ulp apart, one across a 9th-decimal
    boundary; bench/compare_tables.py)."""
    from pyspark.sql import functions as F
    from llmrec import tables
    from llmrec.tables.schemas import BRONZE, INTERACTIONS, ITEM_INDEX, QUARANTINE, SILVER, USER_INDEX

    out = {}
    for table in (*BRONZE.values(), *SILVER.values(), QUARANTINE, USER_INDEX, ITEM_INDEX, INTERACTIONS):
        df = tables.read(spark, cfg, table)
        types = dict(df.dtypes)
        cols = [F.round(c, 6) if c == "weight" else  # maps hash by entry order: sort them first
                F.array_sort(F.map_entries(c)) if types[c].startswith("map") else F.col(c) for c in df.columns]
        rows, checksum = df.select(F.xxhash64(*cols).cast("decimal(38,0)").alias("h")) \
            .agg(F.count("*"), F.sum("h")).first()
        out[table.qualified] = [rows, str(checksum)]
    return out


def write_profile(folder: str, root: str, windows: dict) -> dict:
    """Spark jobs per step and Delta commits per stage (see spark_profile.py)."""
    steps = spark_profile.by_step(folder)
    per_stage = {}
    for stage, (t0, t1) in windows.items():
        made = spark_profile.commits(root, t0, t1)
        per_stage[stage] = {"commits": len(made), "files_added": sum(c["files_added"] for c in made),
                            "by_table": sorted({c["table"] for c in made})}
    print(spark_profile.table(steps), flush=True)
    print(json.dumps(per_stage, indent=1), flush=True)
    return {"steps": steps, "delta_commits": per_stage}


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
    meter = PeakMemory(proc.pid)
    code = proc.wait()
    peak = meter.done()
    if code != 0 or not os.path.exists(out):
        return None, peak, f"exit code {code}"
    result = json.loads(Path(out).read_text())
    os.remove(out)
    return result, peak, ""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, action="append")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--pandas-mem-gb", type=float, default=16.0)
    # Spark streams the data through tasks: a heap far below the input's size must do
    # (1536m against 2g at 10M: the same tables, 0.8x the memory, 1.06x the time; conf_ab_10m_heap.json)
    parser.add_argument("--driver-memory", default="1536m")
    parser.add_argument("--root", default="/tmp/llmrec-bench")
    parser.add_argument("--child", choices=["generate", "spark", "pandas"])
    parser.add_argument("--out")
    parser.add_argument("--results", default=str(ROOT / "bench" / "results" / "ingest_pipeline.json"),
                        help="where the figures go (another file to keep the headline run's)")
    parser.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE",
                        help="a Spark setting for the timed session (bench/conf_ab.py compares two)")
    parser.add_argument("--profile", action="store_true",
                        help="log Spark's events and report jobs, passes, shuffles and Delta commits per step")
    args = parser.parse_args()
    from llmrec import conf

    cfg = conf.load(ROOT / "conf/local.yaml")
    weights = {"events": cfg.interactions.event_weights, "reviews": cfg.interactions.review_weights,
               "half_life": cfg.interactions.half_life_days}
    if args.child == "generate":
        return generate_child(args.events[0], args.root, args.cores, args.driver_memory, args.out)
    if args.child == "spark":
        return spark_child(args.events[0], args.root, args.cores, args.driver_memory, args.out,
                           f"{args.root}/eventlog" if args.profile else None, args.spark_conf)
    if args.child == "pandas":
        return pandas_child(args.root, args.out, weights)

    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "python": platform.python_version()}
    results = []
    for events in args.events or [1_000_000]:
        root = f"{args.root}/{events}"
        subprocess.run(["rm", "-rf", root], check=True)
        common = ["--events", str(events), "--root", root, "--cores", str(args.cores),
                  "--driver-memory", args.driver_memory]
        generated, _, err = run_child(["--child", "generate", *common])
        if generated is None:
            raise SystemExit(f"generating the shop failed: {err}")
        load = load_avg()  # as the timed run starts (generation just ended)
        spark, _, err = run_child(["--child", "spark", *common, *(["--profile"] if args.profile else [])])
        if spark is None:
            raise SystemExit(f"spark run failed: {err}")
        spark_peak = spark["peak_rss"]
        spark["times"]["generate"] = generated["seconds"]
        pdres, pd_peak, pd_err = run_child(["--child", "pandas", "--root", root], args.pandas_mem_gb)
        t = spark["times"]
        row = {"events_target": events, "raw_events": spark["raw_events"], "spark_times_s": t,
               "spark_driver_memory": args.driver_memory, "load_avg_before": load,
               "table_digests": spark["digests"],
               "spark_events_per_s": spark["raw_events"] / t["pipeline"],
               "spark_peak_rss_gb": round(spark_peak / 2**30, 2), "nnz": spark["nnz"]}
        if pdres:
            row.update({"pandas_s": pdres["seconds"], "pandas_events_per_s": spark["raw_events"] / pdres["seconds"],
                        "pandas_peak_rss_gb": round(pd_peak / 2**30, 2), "pandas_nnz": pdres["nnz"],
                        "ratio_spark_over_pandas": pdres["seconds"] / t["pipeline"]})
        else:
            row.update({"pandas_failed": f"{pd_err} (memory cap {args.pandas_mem_gb} GB)",
                        "pandas_peak_rss_gb": round(pd_peak / 2**30, 2)})
        if args.profile:
            row["profile"] = write_profile(f"{root}/eventlog", root, spark["windows"])
        subprocess.run(["rm", "-rf", root], check=True)  # 10M events leave gigabytes of tables
        results.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "profile"}, indent=2), flush=True)
    out = Path(args.results)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "results": results}, indent=2))


if __name__ == "__main__":
    main()
