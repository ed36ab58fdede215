"""Hybrid ranking: the fine-tuned cross-encoder scores each user's best candidates in a
pandas UDF, blended with the fused candidate score, top-K per user into
gold.recommendations (ties: the smaller item index first, so reruns are identical).

final = blend x sigmoid(cross-encoder logit) + (1 - blend) x candidate score / user's best
"""
from __future__ import annotations

import json
import math
import os

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from llmrec.stamps import utc_now
from llmrec import tables
from llmrec.conf import Config
from llmrec.features import examples as ex
from llmrec.frames import best_per, sample_users, top_per
from llmrec.infer import backfill, engine
from llmrec.infer.candidates import exclusions, history
from llmrec.progress import log
from llmrec.tables.schemas import CANDIDATES, ITEM_INDEX, RECOMMENDATIONS, USER_INDEX

TASK_ROWS = 2_000


def cross_encoder(cfg: Config) -> str | None:
    """The cross-encoder's directory (recommend.cross_encoder), or None for `none`."""
    choice = cfg.recommend.cross_encoder
    if choice == "none":
        return None
    if choice == "trained":
        from llmrec.train.launch import output_dir

        path = os.path.join(output_dir(cfg), "model")
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise FileNotFoundError(f"no trained cross-encoder at {path}: run the train job first "
                                    "(or set recommend.cross_encoder=none or a model directory)")
        return path
    return choice


def score_ref(cfg: Config, path: str, load_log: str | None = None) -> engine.ModelRef:
    """Scores with the sequence length and truncation the model was trained with."""
    tok = cfg.tokenize
    saved = os.path.join(path, "llmrec_config.json")
    if os.path.isfile(saved):
        with open(saved) as fh:
            trained = json.load(fh).get("tokenize", {})
        max_length, truncation = trained.get("max_length", tok.max_length), trained.get("truncation", tok.truncation)
    else:
        max_length, truncation = tok.max_length, tok.truncation
    return engine.score_ref(cfg, path, max_length, truncation, load_log)


def scoring_pairs(spark: SparkSession, cfg: Config, df: DataFrame) -> DataFrame:
    """df (user_idx, item_idx, ...) + the texts the cross-encoder scores: first = the
    user's history text (NO_HISTORY without one), second = the item text."""
    users = backfill.user_texts(spark, cfg).select("user_idx", F.col("text").alias("first"))
    items = backfill.item_texts(spark, cfg).select("item_idx", F.col("text").alias("second"))
    return df.join(users, "user_idx", "left").join(items, "item_idx") \
        .withColumn("first", F.coalesce("first", F.lit(ex.NO_HISTORY)))


def task_partitions(spark: SparkSession, rows: int, task_rows: int) -> int:
    """About task_rows rows a task, in whole rounds over the cores: a lone last task
    would leave cores idle."""
    cores = spark.sparkContext.defaultParallelism
    return cores * max(1, math.ceil(rows / (task_rows * cores)))


def with_ce_scores(spark: SparkSession, pairs: DataFrame, ref: engine.ModelRef | None) -> DataFrame:
    """pairs (first, second, ...) + ce_score = sigmoid(logit), or null without a model."""
    if ref is None:
        return pairs.withColumn("ce_score", F.lit(None).cast("double"))
    logit = engine.score_udf(ref)("first", "second")
    return pairs.repartition(task_partitions(spark, pairs.count(), TASK_ROWS)) \
        .withColumn("ce_score", F.lit(1.0) / (F.lit(1.0) + F.exp(-logit.cast("double"))))


def blend(ce: str, other: str, weight: float) -> F.Column:
    """weight x ce + (1 - weight) x other; `other` alone where there is no ce score."""
    return F.when(F.col(ce).isNull(), F.col(other)) \
        .otherwise(F.lit(weight) * F.col(ce) + F.lit(1.0 - weight) * F.col(other))


def rerank_pool(cands: DataFrame, conf) -> DataFrame:
    """The user's best `rerank_top` by fused score plus every source's best `rerank_per_source`."""
    source_best = F.exists(F.map_values("source_ranks"), lambda r: r <= conf.rerank_per_source)
    return best_per(cands, "user_idx", None, rank="_r") \
        .where((F.col("_r") <= conf.rerank_top) | source_best).drop("_r")


def top_k(scored: DataFrame, k: int, new_slots: int) -> DataFrame:
    """Each user's k best by `final` (ties: smaller item), where the best `new_slots` new
    items are always among the k; ranked by `final`."""
    by_final = [F.col("final").desc(), F.col("item_idx")]
    ranked = top_per(scored, ["user_idx", "new_item"], None, *by_final, rank="_n")
    reserved = F.col("new_item") & (F.col("_n") <= new_slots)
    chosen = top_per(ranked.withColumn("_p", F.when(reserved, 0).otherwise(1)), "user_idx", k,
                     "_p", *by_final, rank="_c")
    return top_per(chosen, "user_idx", None, *by_final).drop("_n", "_p", "_c")


def recommend(spark: SparkSession, cfg: Config, load_log: str | None = None) -> dict:
    conf = cfg.recommend
    path = cross_encoder(cfg)
    ref = score_ref(cfg, path, load_log) if path else None
    engine.arrow_batch(spark, cfg)
    hist = history(spark, cfg)
    # Another seed than the examples': a different fifth of the users from training's.
    sampled = sample_users(tables.read(spark, cfg, CANDIDATES), cfg.examples.seed + 1, conf.user_sample)
    cands = rerank_pool(sampled, conf) \
        .join(exclusions(hist, conf.exclude), ["user_idx", "item_idx"], "left_anti") \
        .join(hist.select("item_idx").distinct().withColumn("known", F.lit(True)), "item_idx", "left") \
        .withColumn("new_item", F.col("known").isNull()).drop("known")
    scored = with_ce_scores(spark, scoring_pairs(spark, cfg, cands), ref) \
        .withColumn("cand_score", F.col("score") / F.max("score").over(Window.partitionBy("user_idx"))) \
        .withColumn("final", blend("ce_score", "cand_score", conf.blend))
    recs = top_k(scored, conf.k, conf.new_item_slots) \
        .join(tables.read(spark, cfg, USER_INDEX).select("user_idx", "user_id"), "user_idx") \
        .join(tables.read(spark, cfg, ITEM_INDEX).select("item_idx", "item_id"), "item_idx") \
        .select("user_idx", "user_id", "rank", "item_idx", "item_id", F.col("final").alias("score"),
                "ce_score", "cand_score", "source",
                F.array_sort(F.map_keys("source_ranks")).alias("sources"),
                F.lit(None).cast("string").alias("reason"),  # the explain job fills these three
                F.lit(None).cast(RECOMMENDATIONS.schema["top_history"].dataType).alias("top_history"),
                F.lit(None).cast(RECOMMENDATIONS.schema["tokens"].dataType).alias("tokens"),
                F.lit(engine.model_id(ref) if ref else "candidates-only").alias("model"),
                F.lit(utc_now()).alias("generated_at"))
    tables.overwrite(recs, cfg, RECOMMENDATIONS)
    return stats(spark, cfg)


def stats(spark: SparkSession, cfg: Config) -> dict:
    recs = tables.read(spark, cfg, RECOMMENDATIONS)
    row = recs.agg(F.countDistinct("user_idx").alias("users"), F.count("*").alias("rows"),
                   F.countDistinct("item_idx").alias("items"), F.avg("ce_score").alias("ce")).first()
    catalog = tables.read(spark, cfg, ITEM_INDEX).count()
    by_source = {r["source"]: r["count"] for r in recs.groupBy("source").count().collect()}
    out = {"users": row["users"], "rows": row["rows"], "distinct_items": row["items"],
           "catalog_coverage": round(row["items"] / max(catalog, 1), 4), "by_source": by_source,
           "mean_ce_score": None if row["ce"] is None else round(row["ce"], 4)}
    log.info("recommend: %s users, %s rows, %s distinct items (%.1f%% of the catalog); best source %s",
             f"{row['users']:,}", f"{row['rows']:,}", f"{row['items']:,}", 100 * out["catalog_coverage"],
             ", ".join(f"{k} {v:,}" for k, v in sorted(by_source.items())))
    return out
