"""Recommend: the serving cut's candidates of each (sampled) user, ordered by the second
stage, top-K per user into gold.recommendations (ties: the smaller item index first, so
reruns are identical). recommend.ranker says how they are ordered:

  learned  what the ranker stage chose on validation (llmrec.ranker.choose): its LambdaMART
           model over the features of the best ranker.pool candidates (the cross-encoder
           scoring the best ranker.ce_top), or the single source or fusion that beat it; with
           the new-item slots chosen there
  blend    the fine-tuned cross-encoder scores each user's rerank pool in a pandas UDF:
           final = blend x sigmoid(logit) + (1 - blend) x candidate score / user's best
  none     the fused candidate score
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
from llmrec.frames import best_per, sample_users
from llmrec.infer import backfill, engine
from llmrec.infer.candidates import exclusions, history, serving
from llmrec.ranker import choose, cuts, features, saved
from llmrec.progress import log
from llmrec.tables.schemas import ITEM_INDEX, RECOMMENDATIONS, USER_INDEX

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


def scoring_pairs(spark: SparkSession, cfg: Config, df: DataFrame, cut: cuts.Cut | None = None) -> DataFrame:
    """df (user_idx, item_idx, ...) + the texts the cross-encoder scores, as of the cut
    (default: serving): first = the user's history text (NO_HISTORY without one), second =
    the item text (with its review digest when examples.item_reviews)."""
    cut = cut or cuts.serve(cfg)
    users = backfill.user_texts(spark, cfg, cut).select("user_idx", F.col("text").alias("first"))
    items = ex.item_texts(spark, cfg, cut).select("item_idx", F.col("item_text").alias("second"))
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


def ce_top_scores(spark: SparkSession, cfg: Config, cands: DataFrame, cut: cuts.Cut) -> DataFrame | None:
    """(user_idx, item_idx, ce_score) for each user's best ranker.ce_top candidates, or
    None without a cross-encoder (recommend.cross_encoder: none, or ce_top 0)."""
    path = cross_encoder(cfg)
    if path is None or not cfg.ranker.ce_top:
        return None
    top = best_per(cands, "user_idx", cfg.ranker.ce_top).select("user_idx", "item_idx")
    pairs = scoring_pairs(spark, cfg, top, cut)
    return with_ce_scores(spark, pairs, score_ref(cfg, path)).select("user_idx", "item_idx", "ce_score")


def blend(ce: str, other: str, weight: float) -> F.Column:
    """weight x ce + (1 - weight) x other; `other` alone where there is no ce score."""
    return F.when(F.col(ce).isNull(), F.col(other)) \
        .otherwise(F.lit(weight) * F.col(ce) + F.lit(1.0 - weight) * F.col(other))


def rerank_pool(cands: DataFrame, conf) -> DataFrame:
    """The user's best `rerank_top` by fused score plus every source's best `rerank_per_source`."""
    source_best = F.exists(F.map_values("source_ranks"), lambda r: r <= conf.rerank_per_source)
    return best_per(cands, "user_idx", None, rank="_r") \
        .where((F.col("_r") <= conf.rerank_top) | source_best).drop("_r")


def _new_items(cands: DataFrame, hist: DataFrame) -> DataFrame:
    """cands + new_item: 1.0 for an item no one in the history has, else 0.0."""
    known = hist.select("item_idx").distinct().withColumn("known", F.lit(True))
    return cands.join(known, "item_idx", "left") \
        .withColumn("new_item", F.when(F.col("known").isNull(), 1.0).otherwise(0.0)).drop("known")


def _learned(spark: SparkSession, cfg: Config, cands: DataFrame) -> tuple[DataFrame, int, str]:
    """The ranker stage's choice over the serving candidates: (scored with `final`, the
    new-item slots, the model id)."""
    summary, model = saved.load(spark, cfg)
    choice = summary["choice"]
    cut = cuts.serve(cfg)
    pool = features.pool(cands, cfg.ranker.pool)
    ce = ce_top_scores(spark, cfg, pool, cut) if summary.get("with_ce") else None
    frame = features.build(spark, cfg, pool, cut, summary["attribute_keys"], ce)
    if model is not None:
        frame = model.transform(features.assemble(frame, summary["features"])).drop("features")
    model_id = summary["model_id"] if model is not None else choice["use_label"]
    log.info("recommend: %s (validation nDCG@%d %.4f), new-item slots %d", choice["use_label"], choice["k"],
             choice["val_ndcg"][choice["use_label"]], choice["new_item_slots"])
    return frame.withColumn("final", choose.final(choice["use"])), choice["new_item_slots"], model_id


def _blended(spark: SparkSession, cfg: Config, cands: DataFrame, hist: DataFrame,
             load_log: str | None) -> tuple[DataFrame, int, str]:
    """The cross-encoder blend over each user's rerank pool (or the fused score alone,
    recommend.ranker none): (scored with `final`, the new-item slots, the model id)."""
    conf = cfg.recommend
    path = cross_encoder(cfg) if conf.ranker == "blend" else None
    ref = score_ref(cfg, path, load_log) if path else None
    pool = _new_items(rerank_pool(cands, conf) if ref else cands, hist)
    scored = with_ce_scores(spark, scoring_pairs(spark, cfg, pool), ref) \
        .withColumn("cand_score", F.col("score") / F.max("score").over(Window.partitionBy("user_idx"))) \
        .withColumn("final", blend("ce_score", "cand_score", conf.blend))
    return scored, conf.new_item_slots, engine.model_id(ref) if ref else "candidates-only"


def recommend(spark: SparkSession, cfg: Config, load_log: str | None = None) -> dict:
    conf = cfg.recommend
    engine.arrow_batch(spark, cfg)
    hist = history(spark, cfg)
    # Another seed than the examples': a different fifth of the users from training's.
    sampled = sample_users(serving(spark, cfg), cfg.examples.seed + 1, conf.user_sample) \
        .join(exclusions(hist, conf.exclude), ["user_idx", "item_idx"], "left_anti")
    if conf.ranker == "learned":
        scored, slots, model_id = _learned(spark, cfg, sampled)
        scored = scored.withColumn("cand_score", F.col("fused_score") / F.max("fused_score").over(
            Window.partitionBy("user_idx")))
    else:
        scored, slots, model_id = _blended(spark, cfg, sampled, hist, load_log)
    recs = choose.top_k(scored, conf.k, slots) \
        .join(tables.read(spark, cfg, USER_INDEX).select("user_idx", "user_id"), "user_idx") \
        .join(tables.read(spark, cfg, ITEM_INDEX).select("item_idx", "item_id"), "item_idx") \
        .select("user_idx", "user_id", "rank", "item_idx", "item_id", F.col("final").alias("score"),
                "ce_score", "cand_score", "source",
                F.array_sort(F.map_keys("source_ranks")).alias("sources"),
                F.lit(None).cast("string").alias("reason"),  # the explain job fills these three
                F.lit(None).cast(RECOMMENDATIONS.schema["top_history"].dataType).alias("top_history"),
                F.lit(None).cast(RECOMMENDATIONS.schema["tokens"].dataType).alias("tokens"),
                F.lit(model_id).alias("model"), F.lit(utc_now()).alias("generated_at"))
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
