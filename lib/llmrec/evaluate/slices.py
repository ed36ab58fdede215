"""Metrics by slice, and the first stage's candidate recall: where each model wins or loses.

Slices of the evaluated users' relevant test pairs (each slice keeps the users with at
least one relevant pair in it, and only those pairs count as relevant):
  overall      every relevant pair
  cold_items   pairs whose item has no interaction in the serving history (train, val)
  cold_users   pairs of users with at most COLD_USER_ITEMS items in the serving history
  tail_items   pairs whose item is outside the TAIL_SHARE most popular of the catalog
               (popularity: users with the item in the serving history)

Candidate recall@N, the ceiling of any reranker: the share of a user's relevant pairs
among the first N a source proposed (or among the fused list's first N), averaged over
users; on the serving cut with test labels (slice overall, for the evaluated users) and
on the validation cut with validation labels (slice validation, every labelled user).
"""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from llmrec import tables
from llmrec.conf import CANDIDATE_SOURCES, Config
from llmrec.evaluate import metrics
from llmrec.frames import best_per
from llmrec.ranker import cuts
from llmrec.tables.schemas import CANDIDATES, ITEM_INDEX

COLD_USER_ITEMS = 2
TAIL_SHARE = 0.2
SLICES = ("overall", "cold_items", "cold_users", "tail_items")
RECALL_AT = (10, 20, 50, 100)


def slice_truths(spark: SparkSession, cfg: Config, truth: DataFrame, hist: DataFrame) -> dict[str, DataFrame]:
    """{slice: (user_idx, item_idx)} relevant pairs of each slice; hist: (user_idx, item_idx) of
    the serving history."""
    known = hist.select("item_idx").distinct()
    light = hist.groupBy("user_idx").count().where(F.col("count") > COLD_USER_ITEMS).select("user_idx")
    users_per_item = tables.read(spark, cfg, ITEM_INDEX).select("item_idx") \
        .join(hist.groupBy("item_idx").agg(F.countDistinct("user_idx").alias("n")), "item_idx", "left") \
        .fillna(0, ["n"])
    n_items = users_per_item.count()
    # a top-N sort, not a window over one partition
    head = users_per_item.orderBy(F.col("n").desc(), "item_idx").limit(max(1, int(TAIL_SHARE * n_items))) \
        .select("item_idx")
    return {"overall": truth,
            "cold_items": truth.join(known, "item_idx", "left_anti"),
            "cold_users": truth.join(light, "user_idx", "left_anti"),
            "tail_items": truth.join(head, "item_idx", "left_anti")}


def by_slice(lists: DataFrame, truths: dict[str, DataFrame], ks: list[int]) -> DataFrame:
    """(slice, model, metric, k, value, users): the ranking metrics of every model per slice."""
    out = None
    for name, truth in truths.items():
        part = metrics.ranking(lists, truth, ks).withColumn("slice", F.lit(name))
        out = part if out is None else out.unionByName(part)
    return out


def candidate_lists(cands: DataFrame, depth: int) -> DataFrame:
    """(model, user_idx, item_idx, rank): each source's proposals by its rank, and the fused
    list by fused score, as models candidates.<source> and candidates.fused."""
    per_source = cands.select("user_idx", "item_idx", F.explode("source_ranks").alias("source", "rank")) \
        .select(F.concat(F.lit("candidates."), "source").alias("model"), "user_idx", "item_idx", "rank")
    fused = best_per(cands, "user_idx", depth).select(F.lit("candidates.fused").alias("model"), "user_idx",
                                                      "item_idx", F.col("rank").cast("int"))
    return per_source.unionByName(fused)


def candidate_recall(spark: SparkSession, cfg: Config, users: DataFrame, truth: DataFrame) -> DataFrame:
    """(slice, model, metric, k, value, users): candidate recall@N of the serving cut for
    `users` against `truth` (overall), and of the validation cut for every labelled user
    against the relevant validation pairs (validation)."""
    ks = [k for k in RECALL_AT if k <= cfg.candidates.per_user]
    cands = tables.read(spark, cfg, CANDIDATES)
    val_cut = cuts.val(cfg)
    serve = candidate_lists(cands.where(F.col("cut") == "serve").join(users, "user_idx", "left_semi"),
                            cfg.candidates.per_user)
    val = candidate_lists(cands.where(F.col("cut") == "val"), cfg.candidates.per_user)
    rows = []
    for name, lists, labels in (("overall", serve, truth),
                                ("validation", val, cuts.relevant(spark, cfg, val_cut.label_split))):
        rows.append(metrics.ranking(lists, labels, ks).where(F.col("metric") == "recall")
                    .withColumn("slice", F.lit(name)))
    return rows[0].unionByName(rows[1])


def sources_in_order(cfg: Config) -> list[str]:
    return [f"candidates.{s}" for s in CANDIDATE_SOURCES if cfg.candidates.weights.get(s, 0) > 0] + \
        ["candidates.fused"]
