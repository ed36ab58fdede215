"""Clean: bronze -> silver. Types every field, checks every row, removes duplicates.

A row that fails a check goes to quarantine with the first reason that applies (the
rules in `typed`, in order); the others are deduplicated by key within the batch and merged into silver:
events and reviews insert only keys not yet present (a rerun adds nothing), items are
upserted (a later batch's version of an item wins). For every batch,
rows_in = inserted + quarantined + duplicates (in the batch or already in silver).
"""
from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from llmrec import tables
from llmrec.conf import Config
from llmrec.data.ingest import (
    STAGE as INGEST, BatchCounts, by_day, by_reason, pending_days, require_some_input,
    write_quarantine,
)
from llmrec.frames import CacheScope, top_per
from llmrec.progress import log, timed
from llmrec.tables.schemas import BRONZE, SILVER, SILVER_ITEMS

STAGE = "clean"
# Items first: events and reviews are checked against the known catalog.
ORDER = ("items", "events", "reviews")
TIMESTAMP_FORMATS = ("yyyy-MM-dd'T'HH:mm:ssXXX", "yyyy-MM-dd'T'HH:mm:ss.SSSXXX",
                     "yyyy-MM-dd'T'HH:mm:ss", "yyyy-MM-dd HH:mm:ss")
EARLIEST = "1995-01-01"  # the web shop era; anything before is a broken clock


def parse_timestamp(col: Column) -> Column:
    """ISO-8601 (with or without offset) or 'yyyy-MM-dd HH:mm:ss'; null if none fits."""
    parsed = F.coalesce(*[F.try_to_timestamp(col, F.lit(fmt)) for fmt in TIMESTAMP_FORMATS])
    sane = (parsed >= F.lit(EARLIEST).cast("timestamp")) & \
        (parsed <= F.current_timestamp() + F.expr("INTERVAL 1 DAY"))
    return F.when(sane, parsed)


def _blank(col: str) -> Column:
    return F.col(col).isNull() | (F.trim(F.col(col)) == "")


def _bad_id(col: str, max_chars: int) -> Column:
    """An id that is present but is a JSON object or array (stored as its text), longer
    than max_chars, or holds a control character."""
    value = F.col(col)
    return value.isNotNull() & (value.rlike(r"^\s*[\[{]") | (F.length(value) > max_chars)
                                | value.rlike(r"\p{Cntrl}"))


def _first_reason(rules: list[tuple[str, Column]]) -> Column:
    reason = F.lit(None).cast("string")
    for name, failed in reversed(rules):
        reason = F.when(failed, F.lit(name)).otherwise(reason)
    return reason


def typed(entity: str, df: DataFrame, cfg: Config, known_items: DataFrame | None) -> DataFrame:
    """Adds the typed columns of silver and a `reason` column (null: the row is good)."""
    if entity == "items":
        df = df.withColumn("price_num", F.expr("try_cast(price AS DOUBLE)")) \
            .withColumn("launch_ts", parse_timestamp(F.col("launch_time"))) \
            .withColumn("attributes_map", F.from_json("attributes", "map<string,string>"))
        rules = [
            ("null_item_id", _blank("item_id")),
            ("bad_item_id", _bad_id("item_id", cfg.source.max_id_chars)),
            ("null_title", _blank("title")),
            ("bad_price", F.col("price").isNotNull()
             & (F.col("price_num").isNull() | (F.col("price_num") < 0) | F.isnan("price_num"))),
            ("bad_timestamp", F.col("launch_time").isNotNull() & F.col("launch_ts").isNull()),
            ("bad_attributes", F.col("attributes").isNotNull() & F.col("attributes_map").isNull()),
        ]
        return df.withColumn("reason", _first_reason(rules))

    ts_col = "event_time" if entity == "events" else "review_time"
    df = df.withColumn("ts", parse_timestamp(F.col(ts_col)))
    if known_items is not None:
        df = df.join(known_items.select("item_id", F.lit(True).alias("_known")), "item_id", "left")
    known = F.col("_known").isNotNull() if known_items is not None else F.lit(True)
    key = "event_id" if entity == "events" else "review_id"
    rules = [(f"null_{key}", _blank(key)), ("null_user_id", _blank("user_id")),
             ("null_item_id", _blank("item_id"))]
    rules += [(f"bad_{c}", _bad_id(c, cfg.source.max_id_chars)) for c in (key, "user_id", "item_id")]
    if entity == "events":
        allowed = list(cfg.interactions.event_weights)
        rules.append(("bad_event_type", ~F.coalesce(F.col("event_type").isin(allowed), F.lit(False))))
    else:
        df = df.withColumn("rating_num", F.expr("try_cast(rating AS DOUBLE)"))
        rules.append(("bad_rating", F.col("rating_num").isNull() | (F.col("rating_num") < 1)
                      | (F.col("rating_num") > 5) | (F.col("rating_num") != F.floor("rating_num"))))
    rules += [("bad_timestamp", F.col("ts").isNull()), ("unknown_item", ~known)]
    return df.withColumn("reason", _first_reason(rules))


def to_silver(entity: str, good: DataFrame) -> DataFrame:
    if entity == "items":
        return good.select("item_id", "title", "description", "category", "brand",
                           F.col("price_num").alias("price"),
                           F.col("attributes_map").alias("attributes"), "launch_ts", "source", "dt")
    if entity == "events":
        return good.select("event_id", "user_id", "item_id", "event_type",
                           F.col("ts").alias("event_ts"), "source", "dt")
    return good.select("review_id", "user_id", "item_id", F.col("rating_num").cast("int").alias("rating"),
                       "title", "text", F.col("ts").alias("review_ts"), "source", "dt")


def dedup(df: DataFrame, key: tuple[str, ...]) -> DataFrame:
    """One row per key; among conflicting rows the choice is deterministic."""
    order = [F.col(c).asc_nulls_last() for c in df.columns if c not in key and c != "attributes"]
    return top_per(df, list(key), 1, *order, rank="_rn").drop("_rn")


def clean_batch(spark: SparkSession, cfg: Config, entity: str, days: list[dt.date]) -> BatchCounts:
    bronze = tables.read(spark, cfg, BRONZE[entity]).where(F.col("dt").isin(days))
    known = None if entity == "items" else tables.read_or_empty(spark, cfg, SILVER_ITEMS)
    with CacheScope() as cached:
        checked = cached(typed(entity, bronze, cfg, known))
        quarantined = write_quarantine(
            checked.where(F.col("reason").isNotNull()).select(
                "reason", F.to_json(F.struct(*BRONZE[entity].columns)).alias("record"), "source", "dt"),
            cfg, entity, STAGE, days)
        table = SILVER[entity]
        unique = dedup(to_silver(entity, checked.where(F.col("reason").isNull())), table.key)
        if entity == "items":  # inserted or updated
            rows_out = tables.merge_upsert(unique, cfg, table, newer="s.dt >= t.dt")
        else:
            rows_out = tables.merge_insert_new(unique, cfg, table)
        per_day_in = tables.counts_by_day(checked)
        per_day_bad = by_day(quarantined)
        tables.record_done(spark, cfg, STAGE, entity, {
            d: (per_day_in.get(d, 0), None, per_day_bad.get(d, 0)) for d in days})
        return BatchCounts(entity, days, rows_in=sum(per_day_in.values()), rows_out=rows_out,
                           quarantined=sum(per_day_bad.values()), reasons=by_reason(quarantined))


def run(spark: SparkSession, cfg: Config, days: list[dt.date] | None = None) -> list[BatchCounts]:
    """Cleans every bronze day that is ingested but not yet cleaned (or the given days)."""
    results = []
    done = tables.done_dates(spark, cfg)
    for entity in ORDER:
        ingested = sorted(done.get((INGEST, entity), set()))
        todo = pending_days(ingested, days, done.get((STAGE, entity), set()))
        if not todo:
            continue
        with timed(f"clean.{entity}[{todo[0]}..{todo[-1]}]", spark) as st:
            counts = clean_batch(spark, cfg, entity, todo)
            st.count(rows_in=counts.rows_in, silver=counts.rows_out,
                     quarantined=counts.quarantined, duplicates=counts.duplicates)
            if counts.reasons:
                log.info("clean.%s quarantine reasons: %s", entity,
                         ", ".join(f"{k}={v:,}" for k, v in sorted(counts.reasons.items())))
        results.append(counts)
    if not results:
        require_some_input(days)
        log.info("clean: nothing new to clean")
    return results
