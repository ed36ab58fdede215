"""Benchmark: the tokenize job (Spark pandas UDF -> Parquet shards) against the same fast
tokenizer run single-process on the driver over the same rows, in one command.

    .venv/bin/python bench/tokenize_shards.py [--rows 200000] [--data ./data]

Rows: gold.examples of an existing run (default ./data, e.g. after bin/demo), repeated
with shifted user ids until --rows. Spark: tokens.build on local[2] (tokenize + write
shards + manifest), tokens/s = non-padding tokens / wall time. Driver: the same rows as
pandas, encoded in batches of 1,000 by the same tokenizer (padding to max_length), no
writing. Prints both and the ratio; writes bench/results/tokenize_shards.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "tests"))
from speed import load, scratch  # noqa: E402  (bench/ is this script's own folder on sys.path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--data", default=str(ROOT / "data"))
    args = ap.parse_args()

    from pyspark.sql import functions as F

    from helpers import make_config
    from llmrec import tables
    from llmrec.features import tokens
    from llmrec.spark import get_session
    from llmrec.tables.schemas import EXAMPLES

    src_cfg = make_config(args.data)
    root = scratch("llmrec-bench-tok-")
    cfg = make_config(root, "spark.driver_memory=6g", "tokenize.rows_per_file=50000")
    spark = get_session(cfg)
    source = tables.read(spark, src_cfg, EXAMPLES).cache()
    n = source.count()
    copies = max(1, -(-args.rows // n))
    big = source.crossJoin(spark.range(copies).withColumnRenamed("id", "copy")) \
        .withColumn("user_idx", F.col("user_idx") + F.col("copy") * 10_000_000).drop("copy") \
        .limit(args.rows)
    tables.overwrite(big, cfg, EXAMPLES)
    rows = tables.read(spark, cfg, EXAMPLES).count()
    print(f"{rows:,} rows ({n:,} distinct pairs from {args.data}, repeated)", flush=True)

    load_before = load()
    t0 = time.perf_counter()
    manifest = tokens.build(spark, cfg, force=True)
    spark_s = time.perf_counter() - t0
    n_tokens = manifest["stats"]["tokens"]

    pdf = tables.read(spark, cfg, EXAMPLES).select("user_text", "item_text").toPandas()
    from llmrec.train.model import load_tokenizer

    tok = load_tokenizer(cfg.model.name_or_path)
    t0 = time.perf_counter()
    counted = 0
    for start in range(0, len(pdf), 1000):
        part = pdf.iloc[start:start + 1000]
        enc = tokens.encode(tok, part["user_text"].tolist(), part["item_text"].tolist(),
                            cfg.tokenize.max_length, cfg.tokenize.truncation)
        counted += int(enc["attention_mask"].sum())
    driver_s = time.perf_counter() - t0
    assert counted == n_tokens, (counted, n_tokens)  # the same work on both sides

    result = {"rows": rows, "tokens": n_tokens, "max_length": cfg.tokenize.max_length,
              "spark_local2_s": spark_s, "spark_tokens_per_s": n_tokens / spark_s,
              "driver_s": driver_s, "driver_tokens_per_s": n_tokens / driver_s,
              "ratio_spark_over_driver": driver_s / spark_s,
              "spark_task_seconds": manifest["stats"]["task_seconds"],
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "load_avg_before": load_before,
              "measured": time.strftime("%Y-%m-%d")}
    print(f"Spark local[2] tokenize+write: {spark_s:.1f} s, {n_tokens / spark_s:,.0f} tokens/s")
    print(f"driver, one process, encode only: {driver_s:.1f} s, {n_tokens / driver_s:,.0f} tokens/s")
    print(f"ratio (Spark speed / driver speed): {driver_s / spark_s:.2f}")
    out = ROOT / "bench" / "results" / "tokenize_shards.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    spark.stop()


if __name__ == "__main__":
    main()
