"""Recommendation metrics in Spark, for any number of users and models at once.

Inputs are DataFrames, never collected: `recs` (model, user_idx, item_idx, rank), rank
1 = best, at least max(ks) long where the model has that many items; `truth`
(user_idx, item_idx), the relevant test items. The evaluated users are the users of
`truth`: a user with relevant items but no recommendations counts as zero; users with
no relevant item are not evaluated (their metrics are undefined).

Definitions (binary relevance, as Microsoft Recommenders' SparkRankingEvaluation and
Spark's RankingMetrics), averaged over the evaluated users:
  precision@K  hits in the top K / K
  recall@K     hits in the top K / relevant items
  ndcg@K       sum over hits of 1/log2(rank+1), divided by the ideal: sum_{i<=min(rel,K)} 1/log2(i+1)
  map@K        sum over hits of (hits up to that rank / rank), divided by min(rel, K)
  hit@K        1 when the top K holds a relevant item
  mrr@K        1 / rank of the first relevant item in the top K (0 if none)

Beyond accuracy, over the top K of every evaluated user (SparkDiversityEvaluation):
  catalog_coverage@K  distinct recommended items / catalog size
  entropy@K           distributional coverage: -sum p(i) log2 p(i), p(i) = i's share of recommendations
  gini@K              Gini index of the recommendation counts over the whole catalog (0 = even, 1 = one item)
  novelty@K           mean over recommendations of -log2(history pairs with i / all history pairs);
                      items absent from the history count as one pair (the most novel)
  diversity@K         intra-list diversity: mean over users of 1 - mean cosine of the item
                      embeddings of every pair in the list (lists of 2+ items with embeddings)
  serendipity@K       mean over users of the mean over the list of relevance(i) x
                      (1 - mean cosine between i and the user's history items)

Both cosine metrics use linearity instead of pair joins: for unit vectors, the sum of
v_i . v_j over ordered pairs i != j is |sum v|^2 - sum |v|^2, and the mean cosine of i to
a history H is v_i . mean(H); so a list costs O(K) vector additions, not O(K^2) joins.

AUC: the probability that a random positive outscores a random negative, ties counted
half (Mann-Whitney), exact, from counts per distinct score.
"""
from __future__ import annotations

from typing import Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from llmrec.frames import CacheScope, running_sum, top_per

RANKING = ("precision", "recall", "ndcg", "map", "hit", "mrr")
BEYOND = ("catalog_coverage", "entropy", "gini", "novelty", "diversity", "serendipity")


def dot(a: Column | str, b: Column | str) -> Column:
    """Dot product of two float-array columns, in double precision (Spark SQL, no UDF)."""
    products = F.zip_with(a, b, lambda x, y: x.cast("double") * y.cast("double"))
    return F.aggregate(products, F.lit(0.0).cast("double"), lambda acc, v: acc + v)


def _vector_sum(vectors: Column) -> Column:
    """Element-wise sum of an array of equal-length vectors."""
    zero = F.transform(F.element_at(vectors, 1), lambda _: F.lit(0.0))
    return F.aggregate(vectors, zero, lambda acc, v: F.zip_with(acc, v, lambda x, y: x + y))


def _ideal_dcg(n: Column) -> Column:
    return F.aggregate(F.sequence(F.lit(1), n), F.lit(0.0),
                       lambda acc, i: acc + F.lit(1.0) / F.log2(i + F.lit(1)))


def ranking(recs: DataFrame, truth: DataFrame, ks: Sequence[int]) -> DataFrame:
    """(model, metric, k, value, users) for every RANKING metric and K."""
    ks = sorted(set(ks))
    truth = truth.select("user_idx", "item_idx").distinct()
    relevant = truth.groupBy("user_idx").agg(F.count("*").alias("n_rel"))
    n_users = relevant.count()
    hits = top_per(recs.where(F.col("rank") <= max(ks)).join(truth, ["user_idx", "item_idx"])
                   .join(relevant, "user_idx"), ["model", "user_idx"], None, "rank", rank="hit_no")
    sums = []
    for k in ks:
        within = F.col("rank") <= k
        gain = F.lit(1.0) / F.log2(F.col("rank") + 1)
        cut = F.least(F.col("n_rel"), F.lit(k))
        terms = {
            "precision": F.lit(1.0 / k),
            "recall": F.lit(1.0) / F.col("n_rel"),
            "ndcg": gain / _ideal_dcg(cut),
            "map": F.col("hit_no") / F.col("rank") / cut,
            # once per user, on the first hit
            "hit": F.when(F.col("hit_no") == 1, F.lit(1.0)),
            "mrr": F.when(F.col("hit_no") == 1, F.lit(1.0) / F.col("rank")),
        }
        sums += [F.sum(F.when(within, terms[m])).alias(f"{m}@{k}") for m in RANKING]
    models = recs.select("model").distinct()
    per_model = models.join(hits.groupBy("model").agg(*sums), "model", "left")
    return _long(per_model, [(m, k) for k in ks for m in RANKING], n_users,
                 lambda name: F.coalesce(F.col(f"`{name}`"), F.lit(0.0)) / F.lit(max(n_users, 1)))


def _long(wide: DataFrame, names: list[tuple[str, int | None]], n_users: int, value) -> DataFrame:
    """Wide per-model columns `metric@k` -> rows (model, metric, k, value, users)."""
    rows = [F.struct(F.lit(m).alias("metric"), F.lit(k).cast("int").alias("k"),
                     value(f"{m}@{k}" if k is not None else m).cast("double").alias("value"))
            for m, k in names]
    return wide.select("model", F.explode(F.array(*rows)).alias("r")) \
        .select("model", "r.metric", "r.k", "r.value", F.lit(n_users).cast("long").alias("users"))


def beyond_accuracy(recs: DataFrame, truth: DataFrame, ks: Sequence[int], catalog: DataFrame,
                    history: DataFrame, vectors: DataFrame | None) -> DataFrame:
    """(model, metric, k, value, users) for every BEYOND metric and K.

    catalog: (item_idx) of every item; history: (user_idx, item_idx) pairs the models
    learnt from; vectors: (item_idx, vector) unit item embeddings, or None (then
    diversity and serendipity are null)."""
    ks = sorted(set(ks))
    users = truth.select("user_idx").distinct()
    n_users = users.count()
    n_items = catalog.select("item_idx").distinct().count()
    recs = recs.where(F.col("rank") <= max(ks)).join(users, "user_idx")
    n_pairs = history.count()
    pop = history.groupBy("item_idx").agg(F.count("*").alias("pairs"))
    rel = truth.select("user_idx", "item_idx", F.lit(1.0).alias("rel")).distinct()
    enriched = recs.join(pop, "item_idx", "left").join(rel, ["user_idx", "item_idx"], "left") \
        .withColumn("self_info", -F.log2(F.coalesce("pairs", F.lit(1)) / F.lit(max(n_pairs, 1))))
    if vectors is not None:
        # mean history vector per user: serendipity's mean cosine is v_i . mean(H)
        profile = history.join(vectors, "item_idx").groupBy("user_idx") \
            .agg(F.collect_list("vector").alias("vs"), F.count("*").alias("n_h")) \
            .select("user_idx", F.transform(_vector_sum(F.col("vs")), lambda x: x / F.col("n_h")).alias("h"))
        enriched = enriched.join(vectors, "item_idx", "left").join(profile, "user_idx", "left") \
            .withColumn("unexpected", F.lit(1.0) - dot(F.col("vector"), F.col("h"))).drop("h")
    with CacheScope() as cached:
        enriched = cached(enriched)  # every K aggregates the same rows
        rows = []
        for k in ks:
            top = enriched.where(F.col("rank") <= k)
            rows.append(_spread(top, k, n_items).join(_per_user(top, k, vectors is not None), "model", "outer"))
        wide = rows[0]
        for r in rows[1:]:
            wide = wide.join(r, "model", "outer")
        out = _long(wide, [(m, k) for k in ks for m in BEYOND], n_users, lambda name: F.col(f"`{name}`"))
        # a few rows per model, held on the driver: nothing stays cached for the caller
        return recs.sparkSession.createDataFrame(out.collect(), out.schema)


def _spread(top: DataFrame, k: int, n_items: int) -> DataFrame:
    """Per model: catalog coverage, entropy and Gini of the recommendation counts."""
    counts = top.groupBy("model", "item_idx").agg(F.count("*").alias("c"))
    total = Window.partitionBy("model")
    shares = counts.withColumn("p", F.col("c") / F.sum("c").over(total))
    per_model = shares.groupBy("model").agg(
        (F.count("*") / F.lit(n_items)).alias(f"catalog_coverage@{k}"),
        (-F.sum(F.col("p") * F.log2("p"))).alias(f"entropy@{k}"))
    return per_model.join(_gini(shares, n_items).withColumnRenamed("gini", f"gini@{k}"), "model")


def _gini(shares: DataFrame, n_items: int) -> DataFrame:
    """Gini over all n_items (never-recommended ones have share 0): with shares sorted
    ascending p_(1..n), G = sum_j (2j - n - 1) p_(j) / (n - 1). Items with equal counts
    take consecutive positions a+1..a+m, whose (2j - n - 1) sum to m(2a + m - n); so only
    the distinct counts are sorted, not the items."""
    levels = shares.groupBy("model", "c").agg(F.count("*").alias("m"), F.sum("p").alias("p_sum"))
    before = Window.partitionBy("model").orderBy("c").rowsBetween(Window.unboundedPreceding, -1)
    recommended = F.sum("m").over(Window.partitionBy("model"))
    # zero-count items occupy the first positions
    a = (F.lit(n_items) - recommended) + F.coalesce(F.sum("m").over(before), F.lit(0))
    term = F.col("p_sum") * (2 * a + F.col("m") - F.lit(n_items))
    return levels.withColumn("t", term).groupBy("model") \
        .agg((F.sum("t") / F.lit(max(n_items - 1, 1))).alias("gini"))


def _per_user(top: DataFrame, k: int, with_vectors: bool) -> DataFrame:
    """Per model: novelty, intra-list diversity and serendipity."""
    novelty = top.groupBy("model").agg(F.avg("self_info").alias(f"novelty@{k}"))
    if not with_vectors:
        return novelty.withColumn(f"diversity@{k}", F.lit(None).cast("double")) \
            .withColumn(f"serendipity@{k}", F.lit(None).cast("double"))
    lists = top.where(F.col("vector").isNotNull()).groupBy("model", "user_idx").agg(
        F.collect_list("vector").alias("vs"), F.count("*").alias("n"))
    s = _vector_sum(F.col("vs"))
    pair_sum = dot(s, s) - F.aggregate(F.col("vs"), F.lit(0.0), lambda acc, v: acc + dot(v, v))
    ild = lists.where(F.col("n") >= 2).select(
        "model", (F.lit(1.0) - pair_sum / (F.col("n") * (F.col("n") - 1))).alias("ild")) \
        .groupBy("model").agg(F.avg("ild").alias(f"diversity@{k}"))
    # users without history embeddings have no expectation to surprise: left out
    seren = top.where(F.col("unexpected").isNotNull()).groupBy("model", "user_idx") \
        .agg(F.avg(F.coalesce("rel", F.lit(0.0)) * F.col("unexpected")).alias("s")) \
        .groupBy("model").agg(F.avg("s").alias(f"serendipity@{k}"))
    return novelty.join(ild, "model", "left").join(seren, "model", "left")


def auc(scored: DataFrame, score: str = "score", label: str = "label") -> float | None:
    """Mann-Whitney AUC of `score` for binary `label` (ties count half); None without
    both classes."""
    levels = scored.groupBy(score).agg(
        F.sum(F.when(F.col(label) > 0, 1).otherwise(0)).cast("long").alias("pos"),
        F.sum(F.when(F.col(label) > 0, 0).otherwise(1)).cast("long").alias("neg"))
    row = running_sum(levels, "neg", score, name="neg_below") \
        .agg(F.sum(F.col("pos") * (F.col("neg_below") + F.col("neg") / 2)).alias("wins"),
             F.sum("pos").alias("P"), F.sum("neg").alias("N")).first()
    if not row["P"] or not row["N"]:
        return None
    return float(row["wins"]) / (row["P"] * row["N"])
