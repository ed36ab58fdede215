"""The ranked lists of every compared model: (user_idx, item_idx, rank) for the users asked.

Each model ranks the whole catalog for a user from the serving history (the splits of
`infer.history_splits`; test stays held out) and leaves out the items of that history:
  popular    items by how many users have them, the same list for everyone
  als        Spark ALS on the implicit weights (the candidate source, `candidates.als`)
  item_item  co-occurrence cosine neighbours of the user's recent items (the `cooc` source)
  content    the user's history-text embedding against the item embeddings (the `profile` source)
  fused      gold.candidates: every source merged by reciprocal-rank fusion, no cross-encoder
  hybrid     gold.recommendations: the fused candidates reranked by the cross-encoder
The first four are refitted here with K items per user; the last two are read as written
by the candidates and recommend jobs.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from llmrec import tables
from llmrec.conf import Config
from llmrec.frames import best_per, global_rank
from llmrec.infer import candidates as cands
from llmrec.tables.schemas import RECOMMENDATIONS


def _ranked(scores: DataFrame, k: int) -> DataFrame:
    """(user_idx, item_idx, score) -> the best k per user, ties to the smaller item."""
    return best_per(scores, "user_idx", k).select("user_idx", "item_idx", F.col("rank").cast("int"))


def popular(hist: DataFrame, users: DataFrame, k: int) -> DataFrame:
    """Everyone's most popular items minus the user's own. A user with n history items
    needs at most the global top k + n, so each user is joined to exactly that prefix of
    the list: rows = users x k + history pairs, whatever the catalog size."""
    by_users = hist.groupBy("item_idx").agg(F.count("*").alias("n"))
    listed = global_rank(by_users, F.col("n").desc(), F.col("item_idx"), name="pop_rank")  # one sort
    seen = hist.groupBy("user_idx").agg(F.count("*").alias("n_seen"))
    wanted = users.join(seen, "user_idx", "left").select(
        "user_idx", F.explode(F.sequence(F.lit(1), F.lit(k) + F.coalesce("n_seen", F.lit(0)))).alias("pop_rank"))
    unseen = wanted.join(listed, "pop_rank").join(hist.select("user_idx", "item_idx"),
                                                  ["user_idx", "item_idx"], "left_anti")
    return _ranked(unseen.withColumn("score", -F.col("pop_rank")), k)


def ranked_lists(spark: SparkSession, cfg: Config, models: list[str], users: DataFrame,
                 k: int, hist: DataFrame | None = None) -> DataFrame:
    """(model, user_idx, item_idx, rank) of every model in `models` for `users` (user_idx);
    `hist` is the serving history (cands.history), which the caller may have cached."""
    conf = cfg.candidates
    hist = cands.history(spark, cfg) if hist is None else hist
    excluded = cands.exclusions(hist, "interacted")
    lists: dict[str, DataFrame] = {}
    for name in models:
        if name == "popular":
            lists[name] = popular(hist, users, k)
        elif name == "als":
            lists[name] = _ranked(cands.als_scores(spark, cfg, hist, excluded, k, users), k)
        elif name == "item_item":
            recent = cands.recent_positive(hist, conf.history_items)
            neighbors = cands.cooc_neighbors(recent, conf.neighbors).select("item_idx", "neighbor_idx", "score")
            lists[name] = _ranked(cands.from_neighbors(cands.of_users(recent, users), neighbors, excluded), k)
        elif name == "content":
            lists[name] = _ranked(cands.profile_scores(spark, cfg, excluded, k, users), k)
        elif name == "fused":
            lists[name] = _ranked(cands.of_users(cands.serving(spark, cfg), users)
                                  .select("user_idx", "item_idx", "score"), k)
        elif name == "hybrid":
            lists[name] = cands.of_users(tables.read(spark, cfg, RECOMMENDATIONS), users).where(F.col("rank") <= k) \
                .select("user_idx", "item_idx", "rank")
        else:
            raise ValueError(f"unknown model {name!r}")
    out = None
    for name, df in lists.items():
        part = df.select(F.lit(name).alias("model"), "user_idx", "item_idx", "rank")
        out = part if out is None else out.unionByName(part)
    return out
