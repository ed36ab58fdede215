"""The user-item interaction matrix: implicit weights, time decay, stable indexes, splits.

weight(u, i) = sum over u's events and reviews on i of
               type_weight * 0.5 ** (age_days / half_life_days)
where age is measured from the newest event in the data (not the wall clock), so the
same input always gives the same matrix. A pair's split is decided by when the user
first touched the item: leave_last puts each user's last `test_n` items in test and
the `val_n` before them in val; global puts pairs first seen in the last `test_days`
days in test and the `val_days` before that in val.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from llmrec import tables
from llmrec.conf import Config, InteractionsConf
from llmrec.frames import CacheScope, map_lookup, top_per
from llmrec.tables.schemas import (
    INTERACTIONS, ITEM_INDEX, SILVER_EVENTS, SILVER_ITEMS, SILVER_REVIEWS, USER_INDEX, Table,
)

SECONDS_PER_DAY = 86_400.0


def weighted_events(events: DataFrame, reviews: DataFrame, conf: InteractionsConf) -> DataFrame:
    """(user_id, item_id, ts, w): one row per event or review with its undecayed weight."""
    ev = events.select("user_id", "item_id", F.col("event_ts").alias("ts"),
                       map_lookup({k: float(v) for k, v in conf.event_weights.items()}, F.col("event_type")).alias("w"))
    rv = reviews.select("user_id", "item_id", F.col("review_ts").alias("ts"),
                        map_lookup({k: float(v) for k, v in conf.review_weights.items()}, F.col("rating")).alias("w"))
    return ev.unionByName(rv).where(F.col("w").isNotNull())


def aggregate(weighted: DataFrame, conf: InteractionsConf, reference_ts: float) -> DataFrame:
    """Per (user_id, item_id): decayed weight, count, first and last time."""
    age_days = (F.lit(reference_ts) - F.col("ts").cast("double")) / SECONDS_PER_DAY
    decay = F.pow(F.lit(0.5), age_days / conf.half_life_days) if conf.half_life_days > 0 else F.lit(1.0)
    return weighted.groupBy("user_id", "item_id").agg(
        F.sum(F.col("w") * decay).alias("weight"), F.count("*").alias("n"),
        F.min("ts").alias("first_ts"), F.max("ts").alias("last_ts"))


def assign_split(pairs: DataFrame, conf: InteractionsConf, reference_ts: float) -> DataFrame:
    split = conf.split
    if split.method == "global":
        test_from = reference_ts - split.test_days * SECONDS_PER_DAY
        val_from = test_from - split.val_days * SECONDS_PER_DAY
        first = F.col("first_ts").cast("double")
        label = F.when(first >= test_from, "test").when(first >= val_from, "val").otherwise("train")
        return pairs.withColumn("split", label)
    if split.method == "ratio":
        # A seeded shuffle of each user's items: the first round(n x test_ratio) go to test.
        order = [F.xxhash64(F.lit(split.seed), "user_idx", "item_idx"), F.col("item_idx")]
        n = F.col("_items")
        test_n, val_n = F.round(n * split.test_ratio), F.round(n * split.val_ratio)
    else:  # leave_last: each user's items newest first (ties broken by item for determinism).
        order = [F.col("first_ts").desc(), F.col("item_idx").desc()]
        test_n, val_n = F.lit(split.test_n), F.lit(split.val_n)
    ranked = top_per(pairs, "user_idx", None, *order, rank="_rank") \
        .withColumn("_items", F.count("*").over(Window.partitionBy("user_idx")))
    eligible = F.col("_items") >= split.min_user_items
    label = F.when(eligible & (F.col("_rank") <= test_n), "test") \
        .when(eligible & (F.col("_rank") <= test_n + val_n), "val").otherwise("train")
    return ranked.withColumn("split", label).drop("_rank", "_items")


def update_index(spark: SparkSession, cfg: Config, table: Table, ids: DataFrame) -> DataFrame:
    """Appends ids not yet indexed as max+1, max+2, ... (in id order); returns the index.

    ids: (id, first_seen). Existing ids keep their index forever, so models and exports
    made from an earlier run stay valid.
    """
    id_col, idx_col = table.key[0], table.columns[1]
    current = tables.read_or_empty(spark, cfg, table)
    start = (current.agg(F.max(idx_col)).first()[0])
    start = -1 if start is None else start
    new = ids.join(current.select(id_col), id_col, "left_anti")
    # zipWithIndex numbers a sorted RDD without funnelling it through one partition.
    ordered = new.orderBy(id_col).rdd.zipWithIndex().map(
        lambda row_i: (row_i[0][id_col], start + 1 + row_i[1], row_i[0]["first_seen"]))
    fresh = spark.createDataFrame(ordered, table.schema)
    tables.merge_insert_new(fresh, cfg, table)
    return tables.read(spark, cfg, table)


def build(spark: SparkSession, cfg: Config) -> dict:
    """Builds gold.user_index, gold.item_index and gold.interactions; returns stats."""
    conf = cfg.interactions
    events = tables.read(spark, cfg, SILVER_EVENTS)
    reviews = tables.read_or_empty(spark, cfg, SILVER_REVIEWS)
    with CacheScope() as cached:
        weighted = cached(weighted_events(events, reviews, conf))
        # Epoch seconds of the newest event: the "now" of decay and of the global split.
        reference_ts = weighted.agg(F.max(F.col("ts").cast("double"))).first()[0]
        if reference_ts is None:
            raise ValueError("silver has no events or reviews with a known weight: nothing to build")

        users = weighted.groupBy(F.col("user_id")).agg(F.min("ts").alias("first_seen"))
        catalog = tables.read(spark, cfg, SILVER_ITEMS).select("item_id", F.col("launch_ts").alias("t0"))
        item_first = weighted.groupBy("item_id").agg(F.min("ts").alias("t1"))
        # Every catalog item gets an index, interacted with or not (cold items too).
        items = catalog.join(item_first, "item_id", "full") \
            .select("item_id", F.coalesce("t1", "t0").alias("first_seen"))
        user_index = update_index(spark, cfg, USER_INDEX, users)
        item_index = update_index(spark, cfg, ITEM_INDEX, items)

        pairs = aggregate(weighted, conf, reference_ts) \
            .join(user_index.select("user_id", "user_idx"), "user_id") \
            .join(item_index.select("item_id", "item_idx"), "item_id")
        result = assign_split(pairs, conf, reference_ts)
        # Clustered by user so the CSR export's per-block reads skip most files.
        result = result.repartitionByRange(spark.sparkContext.defaultParallelism, "user_idx") \
            .sortWithinPartitions("user_idx", "item_idx")
        tables.overwrite(result, cfg, INTERACTIONS)
    return stats(spark, cfg)


def stats(spark: SparkSession, cfg: Config) -> dict:
    inter = tables.read(spark, cfg, INTERACTIONS)
    n_users = tables.read(spark, cfg, USER_INDEX).count()
    n_items = tables.read(spark, cfg, ITEM_INDEX).count()
    per_split = {r["split"]: {"nnz": r["nnz"], "users": r["users"], "items": r["items"]}
                 for r in inter.groupBy("split").agg(
                     F.count("*").alias("nnz"), F.countDistinct("user_idx").alias("users"),
                     F.countDistinct("item_idx").alias("items")).collect()}
    nnz = sum(s["nnz"] for s in per_split.values())
    return {"users": n_users, "items": n_items, "nnz": nnz,
            "density": nnz / (n_users * n_items) if n_users and n_items else 0.0,
            "splits": per_split}
