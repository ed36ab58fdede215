"""Candidate generation: several cheap sources propose items per user, merged by
reciprocal-rank fusion into gold.candidates, which the second stage then ranks.

Sources (each proposes `candidates.per_source` items a user has not had):
  als      Spark ALS on implicit weights (user factors x item factors, blockwise top-K)
  cooc     neighbours by co-occurrence (cosine of co-interaction counts) of the user's
           newest history items, each neighbour scored by sum(history weight x similarity)
  content  the same over embedding neighbours: reaches new items that nobody has touched
  profile  the user's history-text embedding against every item embedding
  popular  the most popular items of the user's segment (dominant top-level category;
           users without history: everyone's most popular)

It runs once per cut (llmrec.ranker.cuts): on the serving history for every user, and
on the train split alone for the users with a validation pair, whose candidates the
ranker learns from; each cut's sources learn from that cut's history and nothing else.
The item neighbours and segment popularity kept in tables are the serving cut's.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from llmrec import tables
from llmrec.conf import CANDIDATE_SOURCES, CandidatesConf, Config
from llmrec.frames import CacheScope, best_per, map_lookup, top_level_category, top_per
from llmrec.infer.topk import topk
from llmrec.progress import log
from llmrec.ranker import cuts
from llmrec.tables.schemas import (
    CANDIDATES, ITEM_EMBEDDINGS, ITEM_INDEX, ITEM_NEIGHBORS, POPULAR_ITEMS, SILVER_ITEMS, USER_EMBEDDINGS,
    USER_EMBEDDINGS_VAL, USER_INDEX,
)

EVERYONE = "*"
PROFILES = {"serve": USER_EMBEDDINGS, "val": USER_EMBEDDINGS_VAL}  # each cut's user embeddings


def history(spark: SparkSession, cfg: Config) -> DataFrame:
    """(user_idx, item_idx, weight, first_ts, last_ts, purchased) of the serving history."""
    return cuts.history(spark, cfg, cuts.serve(cfg))


def exclusions(hist: DataFrame, mode: str) -> DataFrame:
    """(user_idx, item_idx) pairs never to recommend (recommend.exclude)."""
    if mode == "interacted":
        return hist.select("user_idx", "item_idx")
    if mode == "purchased":
        return hist.where("purchased").select("user_idx", "item_idx")
    return hist.select("user_idx", "item_idx").limit(0)


def recent_positive(hist: DataFrame, n: int) -> DataFrame:
    """(user_idx, item_idx, weight): each user's newest n positively weighted items."""
    return top_per(hist.where(F.col("weight") > 0), "user_idx", n, F.col("last_ts").desc(), F.col("item_idx")) \
        .select("user_idx", "item_idx", "weight")


def segments(spark: SparkSession, cfg: Config, hist: DataFrame) -> DataFrame:
    """(user_idx, segment): the top-level category a user's history weighs most in."""
    items = tables.read(spark, cfg, SILVER_ITEMS).join(
        tables.read(spark, cfg, ITEM_INDEX).select("item_id", "item_idx"), "item_id") \
        .select("item_idx", top_level_category("category").alias("segment"))
    per = hist.where(F.col("weight") > 0).join(items, "item_idx") \
        .groupBy("user_idx", "segment").agg(F.sum("weight").alias("score"))
    return best_per(per, "user_idx", 1, tie="segment").select("user_idx", "segment")


def popular(hist: DataFrame, segs: DataFrame, n: int) -> DataFrame:
    """(segment, rank, item_idx, score): items by summed positive weight among the
    segment's users, and among everyone (segment "*")."""
    pos = hist.where(F.col("weight") > 0).join(segs, "user_idx")
    per_seg = pos.groupBy("segment", "item_idx").agg(F.sum("weight").alias("score"))
    everyone = pos.groupBy("item_idx").agg(F.sum("weight").alias("score")) \
        .withColumn("segment", F.lit(EVERYONE))
    return best_per(per_seg.unionByName(everyone), "segment", n) \
        .select("segment", F.col("rank").cast("int"), "item_idx", F.col("score").cast("double"))


def cooc_neighbors(recent: DataFrame, n: int) -> DataFrame:
    """(item_idx, neighbor_idx, score, rank): cosine of co-interaction counts, best n per item."""
    a, b = recent.select("user_idx", "item_idx"), recent.select("user_idx", F.col("item_idx").alias("neighbor_idx"))
    counts = a.join(b, "user_idx").where(F.col("item_idx") != F.col("neighbor_idx")) \
        .groupBy("item_idx", "neighbor_idx").count()
    users = recent.groupBy("item_idx").agg(F.count("*").alias("n"))
    sim = counts.join(users, "item_idx").join(
        users.select(F.col("item_idx").alias("neighbor_idx"), F.col("n").alias("m")), "neighbor_idx") \
        .select("item_idx", "neighbor_idx", (F.col("count") / F.sqrt(F.col("n") * F.col("m"))).alias("score"))
    return best_per(sim, "item_idx", n, tie="neighbor_idx")


def content_neighbors(item_vectors: DataFrame, n: int, conf: CandidatesConf) -> DataFrame:
    """(item_idx, neighbor_idx, score, rank): cosine of item embeddings, best n per item."""
    queries = item_vectors.select("item_idx", "vector", F.array("item_idx").alias("self"))
    return topk(queries, item_vectors, n, conf.block_rows, "item_idx", "item_idx", exclude="self",
                index=conf.index, graph_rows=conf.graph_rows, ef_search=conf.ef_search) \
        .select(F.col("qid").alias("item_idx"), F.col("cid").alias("neighbor_idx"), "score", "rank")


def from_neighbors(recent: DataFrame, neighbors: DataFrame, excluded: DataFrame) -> DataFrame:
    """(user_idx, item_idx, score): sum over the user's recent items h of weight(h) x sim(h, item)."""
    votes = recent.join(neighbors, "item_idx").groupBy("user_idx", "neighbor_idx") \
        .agg(F.sum(F.col("weight") * F.col("score")).alias("score")) \
        .withColumnRenamed("neighbor_idx", "item_idx")
    return votes.join(excluded, ["user_idx", "item_idx"], "left_anti")


def _excluded_lists(excluded: DataFrame) -> DataFrame:
    return excluded.groupBy("user_idx").agg(F.collect_list("item_idx").alias("seen"))


def of_users(df: DataFrame, users: DataFrame | None) -> DataFrame:
    """The rows of `users` (user_idx) when given, filtered before any scoring: scoring a
    sample (evaluation's) then costs the sample, not the whole user base."""
    return df if users is None else df.join(users.select("user_idx"), "user_idx", "left_semi")


def als_scores(spark: SparkSession, cfg: Config, hist: DataFrame, excluded: DataFrame, n: int,
               users: DataFrame | None = None) -> DataFrame:
    """(user_idx, item_idx, score): the best n ALS scores of every user (or of `users`);
    the model is fitted on the whole history either way."""
    from pyspark.ml.recommendation import ALS

    conf = cfg.candidates.als
    train = hist.where(F.col("weight") > 0).select(
        F.col("user_idx").cast("int"), F.col("item_idx").cast("int"), F.col("weight").cast("float"))
    model = ALS(rank=conf.rank, maxIter=conf.iterations, regParam=conf.reg, alpha=conf.alpha,
                implicitPrefs=True, seed=conf.seed, userCol="user_idx", itemCol="item_idx",
                ratingCol="weight", coldStartStrategy="drop").fit(train)
    queries = of_users(model.userFactors.select(F.col("id").cast("long").alias("user_idx"),
                                                F.col("features").alias("vector")), users) \
        .join(_excluded_lists(excluded), "user_idx", "left")
    items = model.itemFactors.select(F.col("id").cast("long").alias("item_idx"), F.col("features").alias("vector"))
    return topk(queries, items, n, cfg.candidates.block_rows, "user_idx", "item_idx", exclude="seen") \
        .select(F.col("qid").alias("user_idx"), F.col("cid").alias("item_idx"), "score")


def profile_scores(spark: SparkSession, cfg: Config, excluded: DataFrame, n: int,
                   users: DataFrame | None = None, cut: str = "serve") -> DataFrame:
    """(user_idx, item_idx, score): the n items nearest each user's (or `users`') profile
    embedding (the cut's: gold.user_embeddings, or gold.user_embeddings_val)."""
    queries = of_users(tables.read(spark, cfg, PROFILES[cut]).select("user_idx", "vector"), users) \
        .join(_excluded_lists(excluded), "user_idx", "left")
    items = tables.read(spark, cfg, ITEM_EMBEDDINGS).select("item_idx", "vector")
    return topk(queries, items, n, cfg.candidates.block_rows, "user_idx", "item_idx", exclude="seen",
                index=cfg.candidates.index, graph_rows=cfg.candidates.graph_rows,
                ef_search=cfg.candidates.ef_search) \
        .select(F.col("qid").alias("user_idx"), F.col("cid").alias("item_idx"), "score")


def popular_scores(users: DataFrame, segs: DataFrame, pop: DataFrame, excluded: DataFrame) -> DataFrame:
    """The user's segment's popular items (everyone's for users without a segment)."""
    seg = users.join(segs, "user_idx", "left") \
        .select("user_idx", F.coalesce("segment", F.lit(EVERYONE)).alias("segment"))
    return seg.join(pop, "segment").select("user_idx", "item_idx", "score") \
        .join(excluded, ["user_idx", "item_idx"], "left_anti")


def fuse(sources: dict[str, DataFrame], weights: dict[str, float], rrf_k: int, per_source: int,
         per_user: int) -> DataFrame:
    """Reciprocal-rank fusion of the sources' (user_idx, item_idx, score) lists: the best
    per_user by sum of weight / (rrf_k + rank), each with every source's rank and score."""
    ranked = None
    for name, df in sources.items():
        part = best_per(df, "user_idx", per_source).select(
            "user_idx", "item_idx", F.lit(name).alias("source"), F.col("rank").cast("int"),
            F.col("score").cast("double"))
        ranked = part if ranked is None else ranked.unionByName(part)
    weight = map_lookup({s: float(w) for s, w in weights.items()}, F.col("source"))
    order = map_lookup({s: i for i, s in enumerate(CANDIDATE_SOURCES)}, F.col("source"))  # ties
    merged = ranked.groupBy("user_idx", "item_idx").agg(
        F.sum(weight / (F.lit(rrf_k) + F.col("rank"))).alias("fused"),
        F.min(F.struct("rank", order.alias("o"), "source")).alias("best"),
        F.map_from_entries(F.collect_list(F.struct("source", "rank"))).alias("source_ranks"),
        F.map_from_entries(F.collect_list(F.struct("source", "score"))).alias("source_scores"))
    return best_per(merged, "user_idx", per_user, score="fused").select(
        "user_idx", "item_idx", F.col("fused").alias("score"), F.col("best.source").alias("source"),
        "source_ranks", "source_scores")


def cut_candidates(spark: SparkSession, cfg: Config, cut: cuts.Cut, users: DataFrame,
                   content: DataFrame | None, cached: CacheScope) -> DataFrame:
    """The fused candidates of `users` with every source fit on the cut's history. For the
    serving cut, its popularity and co-occurrence neighbours are written to their tables.
    What it caches stays cached in the caller's scope until the candidates are written."""
    conf = cfg.candidates
    on = {s: w for s, w in conf.weights.items() if w > 0}
    hist = cached(cuts.history(spark, cfg, cut))
    excluded = cached(exclusions(hist, cfg.recommend.exclude))
    recent = cached(recent_positive(hist, conf.history_items))
    segs = cached(segments(spark, cfg, hist))
    pop = popular(hist, segs, conf.per_source * 3)
    cooc = cooc_neighbors(recent, conf.neighbors) if "cooc" in on else None
    if cut.name == "serve":
        tables.overwrite(pop, cfg, POPULAR_ITEMS)
        pop = tables.read(spark, cfg, POPULAR_ITEMS)
        if cooc is not None:
            tables.overwrite_partitions(cooc.withColumn("kind", F.lit("cooc")), cfg, ITEM_NEIGHBORS, kind=["cooc"])
            cooc = tables.read(spark, cfg, ITEM_NEIGHBORS).where(F.col("kind") == "cooc")
    else:
        pop, cooc = cached(pop), cached(cooc) if cooc is not None else None

    sources: dict[str, DataFrame] = {}
    mine = of_users(recent, users)
    for kind, nb in (("cooc", cooc), ("content", content)):
        if kind in on:
            sources[kind] = from_neighbors(mine, nb.select("item_idx", "neighbor_idx", "score"), excluded)
    if "als" in on:
        sources["als"] = als_scores(spark, cfg, hist, excluded, conf.per_source, users)
    if "profile" in on:
        sources["profile"] = profile_scores(spark, cfg, excluded, conf.per_source, users, cut.name)
    if "popular" in on:
        sources["popular"] = popular_scores(users, segs, pop, excluded)
    if not sources:
        raise ValueError("candidates.weights turns every source off")
    return fuse(sources, on, conf.rrf_k, conf.per_source, conf.per_user).withColumn("cut", F.lit(cut.name))


def build(spark: SparkSession, cfg: Config) -> dict:
    """Writes gold.candidates for both cuts in one commit, and the serving cut's
    gold.item_neighbors and gold.popular_items."""
    conf = cfg.candidates
    content = None
    if conf.weights.get("content", 0) > 0:  # embedding neighbours need no history: both cuts share them
        vectors = tables.read(spark, cfg, ITEM_EMBEDDINGS).select("item_idx", "vector")
        tables.overwrite_partitions(content_neighbors(vectors, conf.neighbors, conf)
                                    .withColumn("kind", F.lit("content")), cfg, ITEM_NEIGHBORS, kind=["content"])
        content = tables.read(spark, cfg, ITEM_NEIGHBORS).where(F.col("kind") == "content")
    everyone = tables.read(spark, cfg, USER_INDEX).select("user_idx")
    val_cut = cuts.val(cfg)
    with CacheScope() as cached:
        serve = cut_candidates(spark, cfg, cuts.serve(cfg), everyone, content, cached)
        val = cut_candidates(spark, cfg, val_cut, cuts.labelled_users(spark, cfg, val_cut), content, cached)
        tables.overwrite(serve.unionByName(val), cfg, CANDIDATES)
    return stats(spark, cfg)


def serving(spark: SparkSession, cfg: Config) -> DataFrame:
    """The serving cut's candidates (what is recommended)."""
    return tables.read(spark, cfg, CANDIDATES).where(F.col("cut") == "serve").drop("cut")


def stats(spark: SparkSession, cfg: Config) -> dict:
    """The serving cut's counts (users, rows, items, by source), and the validation cut's users and rows."""
    val = tables.read(spark, cfg, CANDIDATES).where(F.col("cut") == "val") \
        .agg(F.countDistinct("user_idx").alias("users"), F.count("*").alias("rows")).first()
    cands = serving(spark, cfg)
    row = cands.agg(F.countDistinct("user_idx").alias("users"), F.count("*").alias("rows"),
                    F.countDistinct("item_idx").alias("items")).first()
    by_source = {r["source"]: r["count"] for r in cands.select(F.explode(F.map_keys("source_ranks"))
                                                                .alias("source")).groupBy("source").count().collect()}
    best = {r["source"]: r["count"] for r in cands.groupBy("source").count().collect()}
    out = {"users": row["users"], "rows": row["rows"], "items": row["items"],
           "proposed_by_source": by_source, "best_source": best,
           "val_cut": {"users": val["users"], "rows": val["rows"]}}
    log.info("candidates: %s users, %s rows (%.1f a user), %s distinct items; proposed by %s",
             f"{row['users']:,}", f"{row['rows']:,}", row["rows"] / max(row["users"], 1),
             f"{row['items']:,}", ", ".join(f"{k} {v:,}" for k, v in sorted(by_source.items())))
    log.info("candidates as of validation (the ranker's): %s users, %s rows", f"{val['users']:,}",
             f"{val['rows']:,}")
    return out
