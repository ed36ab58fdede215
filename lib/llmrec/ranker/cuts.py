"""The cuts: the first stage runs twice, on two histories, so that the ranker learns
from data shaped exactly like what it serves, without seeing a validation or test pair.

  val    history = train; labels = validation's relevant pairs; users = those with one.
         The ranker's training data (and the cross-encoder's candidate negatives).
  serve  history = infer.history_splits (train, val); labels = test's relevant pairs;
         users = everyone. What is recommended, and what evaluation scores.

Everything learnt from interactions for a cut (ALS, co-occurrence, popularity, profile
texts, review digests, the ranker's features) reads `history(spark, cfg, cut)` and
nothing else, so the validation cut never sees a validation or test pair.
"""
from __future__ import annotations

import dataclasses

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from llmrec import tables
from llmrec.conf import Config
from llmrec.features.actions import Action, actions
from llmrec.tables.schemas import INTERACTIONS


@dataclasses.dataclass(frozen=True)
class Cut:
    name: str
    history_splits: tuple[str, ...]  # the interactions the first stage learns from
    label_split: str                 # the split whose relevant pairs label the candidates


def history_splits(cfg: Config) -> list[str]:
    """The serving history: infer.history_splits."""
    return [s.strip() for s in cfg.infer.history_splits.split(",") if s.strip()]


def serve(cfg: Config) -> Cut:
    return Cut("serve", tuple(history_splits(cfg)), "test")


def val(cfg: Config) -> Cut:
    return Cut("val", ("train",), "val")


def all_cuts(cfg: Config) -> tuple[Cut, Cut]:
    return serve(cfg), val(cfg)


def history(spark: SparkSession, cfg: Config, cut: Cut) -> DataFrame:
    """(user_idx, item_idx, weight, first_ts, last_ts, purchased) of the cut's history."""
    bought = actions(spark, cfg).where(F.col("event_type") == Action.PURCHASE.event_type) \
        .select("user_idx", "item_idx", F.lit(True).alias("purchased"))
    return tables.read(spark, cfg, INTERACTIONS).where(F.col("split").isin(list(cut.history_splits))) \
        .join(bought, ["user_idx", "item_idx"], "left") \
        .select("user_idx", "item_idx", "weight", "first_ts", "last_ts",
                F.coalesce("purchased", F.lit(False)).alias("purchased"))


def relevant(spark: SparkSession, cfg: Config, split: str) -> DataFrame:
    """(user_idx, item_idx) pairs of `split` that count as relevant (weight above
    evaluate.relevant_min_weight; every pair when it is null): test for evaluation,
    validation for the ranker's labels and every choice made on validation."""
    pairs = tables.read(spark, cfg, INTERACTIONS).where(F.col("split") == split)
    floor = cfg.evaluate.relevant_min_weight
    if floor is not None:
        pairs = pairs.where(F.col("weight") > floor)
    return pairs.select("user_idx", "item_idx")


def labelled_users(spark: SparkSession, cfg: Config, cut: Cut) -> DataFrame:
    """(user_idx) with a relevant pair in the cut's label split."""
    return relevant(spark, cfg, cut.label_split).select("user_idx").distinct()
