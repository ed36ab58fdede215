"""The ranker's features: one function of (a cut's candidates, that cut's history), so the
columns it learns from (validation cut) and the columns it serves on cannot drift apart.

Per (user, candidate), every value learnt from interactions comes from the cut's history:
  <source>_rank, <source>_score   each first-stage source's rank and score; missing when the
                                  source did not propose the item (the trees use that)
  fused_score, fused_rank         reciprocal-rank fusion, and its rank in the user's list
  n_sources                       how many sources proposed it
  item_users, item_segment_users  users with the item (positively), overall and in the
                                  user's segment (dominant top-level category)
  item_raters                     users with any pair on the item (a 1-star rating too)
  item_age_days, new_item         days from the item's launch (the catalog's, else its first
                                  pair in the history) to the cut's "now" (its newest pair);
                                  1 when no one in the history has touched it
  item_rating, item_reviews       mean star rating and number of reviews of history pairs
  user_items, user_idle_days      the user's history length; days since their newest item
  category_share, segment_share,  the share of the user's (positively weighted) history in
  brand_share, price_band_share   the item's category, top-level category, brand and price
                                  band (quartile within its category)
  attr_<key>_share                the same for each ranker.attributes key of the catalog; a
                                  value "a|b" (several genres) is its values' mean share
  profile_cos                     cosine of the user's profile embedding (the cut's) and the
                                  item's embedding
  ce_score                        the fine-tuned cross-encoder's probability, for each
                                  user's best ranker.ce_top candidates (missing below)
"""
from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from llmrec import tables
from llmrec.conf import CANDIDATE_SOURCES, Config
from llmrec.evaluate.metrics import dot
from llmrec.features.examples import reviews_of_cut
from llmrec.frames import best_per, top_level_category
from llmrec.infer.candidates import PROFILES
from llmrec.ranker import cuts
from llmrec.tables.schemas import ITEM_EMBEDDINGS, ITEM_INDEX, SILVER_ITEMS

SECONDS_PER_DAY = 86_400.0
BASE = (*[f"{s}_{x}" for s in CANDIDATE_SOURCES for x in ("rank", "score")],
        "fused_score", "fused_rank", "n_sources", "item_users", "item_segment_users", "item_raters", "item_age_days",
        "new_item", "item_rating", "item_reviews", "user_items", "user_idle_days", "category_share",
        "segment_share", "brand_share", "price_band_share", "profile_cos", "ce_score")
SHARED = (("category", "category_share"), ("segment", "segment_share"), ("brand", "brand_share"),
          ("price_band", "price_band_share"))


def pool(cands: DataFrame, depth: int) -> DataFrame:
    """Each user's best `depth` candidates by fused score: what the ranker sees."""
    return best_per(cands, "user_idx", depth).drop("rank")


def attribute_keys(spark: SparkSession, cfg: Config) -> list[str]:
    """ranker.attributes, or with "auto" the catalog's 5 most common attribute keys."""
    setting = cfg.ranker.attributes.strip()
    if setting != "auto":
        return sorted({k.strip() for k in setting.split(",") if k.strip()})
    rows = tables.read(spark, cfg, SILVER_ITEMS).select(F.explode(F.map_keys("attributes")).alias("k")) \
        .groupBy("k").count().orderBy(F.col("count").desc(), "k").limit(5).collect()
    return sorted(r["k"] for r in rows)


def names(keys: list[str]) -> list[str]:
    """The feature columns, in the model's order, for these attribute keys."""
    return [*BASE, *[f"attr_{k}_share" for k in keys]]


def catalog(spark: SparkSession, cfg: Config, keys: list[str]) -> DataFrame:
    """(item_idx, launch_ts, category, segment, brand, price_band, attr_<key>...): what the
    catalog says of each item (no interactions)."""
    items = tables.read(spark, cfg, SILVER_ITEMS).join(
        tables.read(spark, cfg, ITEM_INDEX).select("item_id", "item_idx"), "item_id")
    in_category = Window.partitionBy(F.coalesce("category", F.lit(""))).orderBy("price")
    band = F.when(F.col("price").isNotNull(),
                  F.least(F.floor(F.percent_rank().over(in_category) * 4), F.lit(3)).cast("int"))
    return items.select("item_idx", "launch_ts", "category", top_level_category("category").alias("segment"),
                        "brand", band.alias("price_band"),
                        *[F.col("attributes")[k].alias(f"attr_{k}") for k in keys])


def _share(hist: DataFrame, items: DataFrame, column: str, alias: str) -> DataFrame:
    """(user_idx, <column>, alias): the user's history weight on each value of `column`."""
    per = hist.join(items.select("item_idx", column), "item_idx").where(F.col(column).isNotNull()) \
        .groupBy("user_idx", column).agg(F.sum("weight").alias("w"))
    return per.join(hist.groupBy("user_idx").agg(F.sum("weight").alias("total")), "user_idx") \
        .select("user_idx", column, (F.col("w") / F.col("total")).alias(alias))


def _multi_share(hist: DataFrame, items: DataFrame, pairs: DataFrame, column: str, alias: str) -> DataFrame:
    """(user_idx, item_idx, alias) for the candidate `pairs`: the mean over the item's
    values of `column` ("a|b": a and b) of the user's share of that value."""
    values = items.select("item_idx", F.explode(F.split(column, r"\|")).alias(column)).where(F.col(column) != "")
    shares = _share(hist, values, column, "share")
    n_values = values.groupBy("item_idx").agg(F.count("*").alias("n"))
    return pairs.join(values, "item_idx").join(shares, ["user_idx", column]) \
        .groupBy("user_idx", "item_idx").agg(F.sum("share").alias("s")).join(n_values, "item_idx") \
        .select("user_idx", "item_idx", (F.col("s") / F.col("n")).alias(alias))


def _rank_of(source: str) -> Column:
    return F.col("source_ranks")[source].cast("double")


def build(spark: SparkSession, cfg: Config, cands: DataFrame, cut: cuts.Cut, keys: list[str],
          ce: DataFrame | None = None) -> DataFrame:
    """cands (user_idx, item_idx, score, source_ranks, source_scores, ...) + every feature
    column of `names(keys)`, as doubles (null = missing); other columns are kept."""
    hist = cuts.history(spark, cfg, cut)
    positive = hist.where(F.col("weight") > 0).select("user_idx", "item_idx", "weight")
    items = catalog(spark, cfg, keys)
    now = hist.agg(F.max("last_ts").alias("now"))
    days = lambda ts: (F.col("now").cast("double") - F.col(ts).cast("double")) / SECONDS_PER_DAY  # noqa: E731

    by_user = Window.partitionBy("user_idx").orderBy(F.col("score").desc(), "item_idx")
    out = cands.withColumn("fused_score", F.col("score")) \
        .withColumn("fused_rank", F.row_number().over(by_user).cast("double")) \
        .withColumn("n_sources", F.size(F.map_keys("source_ranks")).cast("double"))
    for s in CANDIDATE_SOURCES:
        out = out.withColumn(f"{s}_rank", _rank_of(s)).withColumn(f"{s}_score", F.col("source_scores")[s])

    # items: popularity, segment popularity, age, reviews
    item_users = positive.groupBy("item_idx").agg(F.countDistinct("user_idx").alias("item_users"))
    raters = hist.groupBy("item_idx").agg(F.countDistinct("user_idx").alias("item_raters"))
    first_pair = hist.groupBy("item_idx").agg(F.min("first_ts").alias("first_pair"))
    user_segment = best_per(_share(positive, items, "segment", "w"), "user_idx", 1, score="w", tie="segment") \
        .select("user_idx", F.col("segment").alias("user_segment"))
    segment_users = positive.join(user_segment, "user_idx").groupBy("user_segment", "item_idx") \
        .agg(F.countDistinct("user_idx").alias("item_segment_users"))
    reviews = _reviews_of(spark, cfg, cut)
    out = out.join(items, "item_idx", "left").crossJoin(F.broadcast(now)) \
        .join(item_users, "item_idx", "left").join(raters, "item_idx", "left").join(user_segment, "user_idx", "left") \
        .join(segment_users, ["user_segment", "item_idx"], "left").join(reviews, "item_idx", "left") \
        .join(first_pair, "item_idx", "left").withColumn("launched", F.coalesce("launch_ts", "first_pair")) \
        .withColumn("item_age_days", days("launched")) \
        .withColumn("new_item", F.when(F.col("first_pair").isNull(), 1.0).otherwise(0.0)) \
        .fillna(0, ["item_users", "item_segment_users", "item_raters", "item_reviews"])

    # the user: history length, idle days
    users = hist.groupBy("user_idx").agg(F.count("*").alias("user_items"), F.max("last_ts").alias("user_last"))
    out = out.join(users, "user_idx", "left").withColumn("user_idle_days", days("user_last")) \
        .fillna(0, ["user_items"])

    # the user's taste: shares of the history in the item's category, brand, band, attributes
    for column, alias in SHARED:
        out = out.join(_share(positive, items, column, alias), ["user_idx", column], "left").fillna(0.0, [alias])
    pairs = cands.select("user_idx", "item_idx")
    for k in keys:
        out = out.join(_multi_share(positive, items, pairs, f"attr_{k}", f"attr_{k}_share"),
                       ["user_idx", "item_idx"], "left").fillna(0.0, [f"attr_{k}_share"])

    # profile cosine (the cut's user embeddings), cross-encoder score
    profiles = tables.read_or_empty(spark, cfg, PROFILES[cut.name]).select("user_idx", F.col("vector").alias("u"))
    vectors = tables.read_or_empty(spark, cfg, ITEM_EMBEDDINGS).select("item_idx", F.col("vector").alias("v"))
    out = out.join(profiles, "user_idx", "left").join(vectors, "item_idx", "left") \
        .withColumn("profile_cos", F.when(F.col("u").isNotNull() & F.col("v").isNotNull(), dot("u", "v")))
    if ce is not None:
        out = out.join(ce.select("user_idx", "item_idx", "ce_score"), ["user_idx", "item_idx"], "left")
    else:
        out = out.withColumn("ce_score", F.lit(None).cast("double"))
    feature_names = names(keys)
    helpers = {"u", "v", "now", "user_last", "user_segment", "launch_ts", "first_pair", "launched", "category",
               "segment", "brand", "price_band", *[f"attr_{k}" for k in keys]}
    kept = [c for c in cands.columns if c not in feature_names]
    return out.select(*kept, *[F.col(n).cast("double").alias(n) for n in feature_names]) \
        .drop(*[h for h in helpers if h not in kept])


def _reviews_of(spark: SparkSession, cfg: Config, cut: cuts.Cut) -> DataFrame:
    """(item_idx, item_rating, item_reviews) from the reviews of the cut's history pairs."""
    return reviews_of_cut(spark, cfg, cut).groupBy("item_idx").agg(
        F.avg("rating").alias("item_rating"), F.count("*").alias("item_reviews"))


def assemble(frame: DataFrame, feature_names: list[str]) -> DataFrame:
    """frame + `features`: the feature columns as one vector, missing values as NaN (what
    xgboost reads as missing)."""
    from pyspark.ml.feature import VectorAssembler

    return VectorAssembler(inputCols=feature_names, outputCol="features", handleInvalid="keep").transform(frame)


def labelled(spark: SparkSession, cfg: Config, frame: DataFrame, cut: cuts.Cut) -> DataFrame:
    """frame + label: 1 for the cut's relevant pairs (validation: the ranker's targets)."""
    rel = cuts.relevant(spark, cfg, cut.label_split).withColumn("label", F.lit(1))
    return frame.join(rel, ["user_idx", "item_idx"], "left").fillna(0, ["label"])
