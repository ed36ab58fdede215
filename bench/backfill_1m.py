"""Benchmark: the catalog embedding backfill on a 1M-item synthetic catalog with the
default model, killed after a time budget and resumed, in one command.

    .venv/bin/python bench/backfill_1m.py [--items 1000000] [--minutes 10] [--resume-minutes 4]

1. Writes silver.items + gold.item_index for --items synthetic items (Spark local[*]).
2. Runs the items backfill (`embed.chunk_rows` = --chunk-rows) in a child process and
   relays its progress lines (chunk, rows, rate, ETA); SIGKILLs it after --minutes.
3. Starts it again: the rows the killed run committed must be found up to date (not
   redone); relays progress for --resume-minutes, then kills it too.
On a 2-core CPU machine the whole catalog would take hours: the figures are the rate,
the ETA the job itself prints, and the resume check. Writes bench/results/backfill_1m.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "tests"))
from speed import scratch  # noqa: E402  (bench/ is this script's own folder on sys.path)


def settings(root: str, chunk_rows: int) -> list[str]:
    return [f"storage.root={root}", f"embed.chunk_rows={chunk_rows}", "spark.driver_memory=4g",
            "spark.shuffle_partitions=16"]


def prepare(root: str, items: int, chunk_rows: int) -> None:
    from pyspark.sql import functions as F

    from conftest import make_config
    from llmrec import tables
    from llmrec.conf import SyntheticConf
    from llmrec.data.synthetic import Shop, items_frame
    from llmrec.spark import get_session
    from llmrec.tables.schemas import ITEM_INDEX, SILVER_ITEMS

    cfg = make_config(root, *settings(root, chunk_rows))
    spark = get_session(cfg)
    raw = items_frame(spark, Shop(SyntheticConf(items=items)))
    silver = raw.select("item_id", "title", "description", "category", "brand",
                        F.col("price").cast("double").alias("price"),
                        F.from_json("attributes", "map<string,string>").alias("attributes"),
                        F.to_timestamp("launch_time").alias("launch_ts"), F.lit("synthetic").alias("source"),
                        F.lit("2024-01-01").cast("date").alias("dt"))
    tables.overwrite(silver, cfg, SILVER_ITEMS)
    tables.overwrite(raw.select("item_id", F.col("i").alias("item_idx"),
                                F.lit(None).cast("timestamp").alias("first_seen")), cfg, ITEM_INDEX)
    print(f"catalog: {tables.read(spark, cfg, SILVER_ITEMS).count():,} items in {root}", flush=True)
    spark.stop()


def child(root: str, chunk_rows: int) -> None:
    from conftest import make_config
    from llmrec.infer import backfill
    from llmrec.progress import setup_logging, timed
    from llmrec.spark import get_session
    from llmrec.tables.schemas import ITEM_EMBEDDINGS

    setup_logging()
    cfg = make_config(root, *settings(root, chunk_rows), "spark.master=local[*]")
    spark = get_session(cfg)
    with timed("embed.items", spark):  # task-level progress and ETA between chunk lines
        backfill.backfill(spark, cfg, ITEM_EMBEDDINGS, backfill.item_texts(spark, cfg))


def run_for(root: str, chunk_rows: int, minutes: float) -> list[str]:
    """Runs the backfill child for `minutes`, relaying its llmrec lines; returns them."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", "--root", root,
                             "--chunk-rows", str(chunk_rows)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    lines: list[str] = []

    def relay() -> None:
        for line in proc.stdout:
            if "llmrec" in line:
                print(line.rstrip(), flush=True)
                lines.append(line)

    reader = threading.Thread(target=relay, daemon=True)
    reader.start()
    try:
        proc.wait(minutes * 60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        print(f"-- killed after {minutes} min", flush=True)
    proc.wait()
    reader.join(10)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--resume-minutes", type=float, default=4)
    ap.add_argument("--chunk-rows", type=int, default=20_000)
    ap.add_argument("--root", default=None)
    ap.add_argument("--child", action="store_true")
    args = ap.parse_args()
    if args.child:
        return child(args.root, args.chunk_rows)

    root = args.root or scratch("llmrec-bench-backfill-")
    t0 = time.perf_counter()
    if not os.path.isdir(os.path.join(root, "silver", "items")):  # --root of an earlier run: reuse
        prepare(root, args.items, args.chunk_rows)
    prepare_s = time.perf_counter() - t0
    first = run_for(root, args.chunk_rows, args.minutes)
    second = run_for(root, args.chunk_rows, args.resume_minutes)

    chunk_re = re.compile(r"chunk (\d+)/(\d+): ([\d,]+) rows in (\S+); ([\d,]+)/([\d,]+) done, "
                          r"([\d.]+) rows/s, ETA (\S+)")
    progress = [m.groups() for m in (chunk_re.search(x) for x in first) if m]
    todo_re = re.compile(r"([\d,]+) of ([\d,]+) rows to embed")
    todos = [[int(g.replace(",", "")) for g in m.groups()] for m in (todo_re.search(x) for x in second) if m]
    committed = int(progress[-1][4].replace(",", "")) if progress else 0
    result = {"items": args.items, "chunk_rows": args.chunk_rows, "prepare_s": round(prepare_s, 1),
              "first_run_minutes": args.minutes, "chunks_committed": len(progress),
              "rows_committed": committed,
              "rows_per_s": float(progress[-1][6]) if progress else None,
              "eta_printed": progress[-1][7] if progress else None,
              "resume_todo": todos[0][0] if todos else None,
              "resume_skipped_as_done": (todos[0][1] - todos[0][0]) if todos else None,
              "resume_ok": bool(todos) and todos[0][1] - todos[0][0] == committed,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "measured": time.strftime("%Y-%m-%d")}
    print(json.dumps(result, indent=1))
    out = ROOT / "bench" / "results" / "backfill_1m.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
