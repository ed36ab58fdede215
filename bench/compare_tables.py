"""Row-by-row comparison of one keyed table in two storage roots (two runs of a stage).

    .venv/bin/python bench/compare_tables.py ROOT_A ROOT_B [--table gold.interactions] [--out F] [--label TEXT]

Joins the two on the table's key and counts, per column, the rows whose values differ;
for floating-point columns also the largest absolute and relative difference, and how
many differ once rounded to 9 and to 6 decimals. Keys in only one of the two are counted
too. Checksums (bench/ingest_pipeline.py's digests) say whether two runs differ; this
says where and by how much.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))


def compare(spark, cfg_a, cfg_b, table) -> dict:
    from pyspark.sql import functions as F
    from llmrec import tables

    # _present marks each side's rows: null after the full join where a key is missing
    a, b = (tables.read(spark, cfg, table).withColumn("_present", F.lit(True)).alias(side)
            for cfg, side in ((cfg_a, "a"), (cfg_b, "b")))
    types = dict(a.dtypes)
    aggs = [F.count("*").alias("rows"), F.sum(F.col("a._present").isNull().cast("int")).alias("keys_only_in_b"),
            F.sum(F.col("b._present").isNull().cast("int")).alias("keys_only_in_a")]
    for c in (c for c in table.columns if c not in table.key):
        x, y = F.col(f"a.{c}"), F.col(f"b.{c}")
        aggs.append(F.sum((~x.eqNullSafe(y)).cast("int")).alias(f"{c}.differ"))
        if types[c] in ("double", "float"):
            aggs += [F.max(F.abs(x - y)).alias(f"{c}.max_abs_diff"),
                     F.max(F.abs(x - y) / F.abs(x)).alias(f"{c}.max_rel_diff"),
                     F.sum((F.round(x, 9) != F.round(y, 9)).cast("int")).alias(f"{c}.differ_at_9_decimals"),
                     F.sum((F.round(x, 6) != F.round(y, 6)).cast("int")).alias(f"{c}.differ_at_6_decimals")]
    return a.join(b, list(table.key), "full").agg(*aggs).first().asDict()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root_a")
    ap.add_argument("root_b")
    ap.add_argument("--table", default="gold.interactions")
    ap.add_argument("--out", type=Path, help="also write the figures here (JSON)")
    ap.add_argument("--label", default="", help="what the two runs were, kept in the JSON")
    args = ap.parse_args()
    from llmrec import conf
    from llmrec.spark import get_session
    from llmrec.tables import schemas

    table = next(t for t in vars(schemas).values()
                 if isinstance(t, schemas.Table) and t.qualified == args.table and t.key)
    cfg_a, cfg_b = (conf.load(ROOT / "conf/local.yaml", [f"storage.root={r}"]) for r in (args.root_a, args.root_b))
    spark = get_session(cfg_a)
    figures = {"table": args.table, "a": args.root_a, "b": args.root_b, "label": args.label,
               **compare(spark, cfg_a, cfg_b, table)}
    print(json.dumps(figures, indent=1))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1))
    spark.stop()


if __name__ == "__main__":
    main()
