"""Cross-encoder training examples: (user history text, candidate item text, label).

A user's interactions are ordered by when the user first touched each item (the order
the split uses). A *target* is a positive pair (weight > examples.min_positive_weight):
in train, each user's last `targets_per_user` positive train items; in val and test,
every positive pair of the split. A target's history is what the user did before it
and is allowed to see: earlier train items for a train target, the train items (and,
for test, the val items) for a held-out one; the newest `history_len` of them, newest
first, with what the user did ("bought", "added to cart", "viewed").

Each target gets `neg_ratio` negatives among items the user never touched, shared out
among samplers (examples.negatives): uniform, by popularity, from the target's category
("hard"), or from the user's first-stage candidates of the target's cut ("candidates":
the validation cut for train and val targets, the serving cut for test ones), the
negatives a ranker over those candidates meets. Every draw is a hash of (seed, user,
target, draw number), so the examples are the same on any partitioning.

With examples.item_reviews / user_reviews the texts carry review text (see
`review_digests`, `own_reviews`), from the reviews of pairs in the validation cut's
history (train), so no example sees a validation or test review.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from llmrec import tables
from llmrec.conf import Config, ExamplesConf
from llmrec.features.actions import action_phrase, actions
from llmrec.frames import CacheScope, best_per, map_lookup, sample_users, top_per
from llmrec.progress import log
from llmrec.ranker import cuts
from llmrec.tables.schemas import (
    CANDIDATES, EXAMPLES, INTERACTIONS, ITEM_INDEX, SILVER_ITEMS, SILVER_REVIEWS, USER_INDEX,
)

SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}


NO_HISTORY = "No earlier activity."
PRICE_BANDS = ("budget", "mid-range", "premium", "luxury")

NEGATIVES_SCHEMA = T.StructType([
    T.StructField("split", T.StringType(), False), T.StructField("user_idx", T.LongType(), False),
    T.StructField("target_idx", T.LongType(), False), T.StructField("item_idx", T.LongType(), False),
    T.StructField("kind", T.StringType(), False),
])


def item_texts(spark: SparkSession, cfg: Config, cut: cuts.Cut | None = None) -> DataFrame:
    """(item_idx, item_id, category, item_text, phrase): the candidate text and the history
    phrase. With a cut and examples.item_reviews, the item text ends with the item's
    review digest as of that cut (embeddings use the text without one)."""
    items = tables.read(spark, cfg, SILVER_ITEMS).join(
        tables.read(spark, cfg, ITEM_INDEX).select("item_id", "item_idx"), "item_id")
    q = items.agg(F.percentile("price", [0.25, 0.5, 0.75]).alias("q")).first()["q"] or [None] * 3
    price = F.col("price")
    band = F.lit(None).cast("string")
    if q[0] is not None:
        band = (F.when(price.isNull(), None).when(price <= q[0], PRICE_BANDS[0])
                .when(price <= q[1], PRICE_BANDS[1]).when(price <= q[2], PRICE_BANDS[2])
                .otherwise(PRICE_BANDS[3]))
    labelled = lambda label, col: F.concat(F.lit(label), col)  # noqa: E731  (null stays null)
    description = F.substring(F.col("description"), 1, cfg.examples.description_chars)
    item_text = F.concat_ws(". ", F.col("title"), labelled("Category: ", F.col("category")),
                            labelled("Brand: ", F.col("brand")), labelled("Price: ", band),
                            description)
    phrase = F.concat_ws(" ", F.col("title"), F.concat(F.lit("("), F.col("category"), F.lit(")")))
    texts = items.select("item_idx", "item_id", "category", item_text.alias("item_text"),
                         phrase.alias("phrase"))
    if cut is None or not cfg.examples.item_reviews:
        return texts
    return texts.join(review_digests(spark, cfg, cut), "item_idx", "left") \
        .withColumn("item_text", F.concat_ws(". ", "item_text", "digest")).drop("digest")


def reviews_of_cut(spark: SparkSession, cfg: Config, cut: cuts.Cut) -> DataFrame:
    """(user_idx, item_idx, rating, text, review_ts): reviews of pairs in the cut's history."""
    pairs = tables.read(spark, cfg, INTERACTIONS).where(F.col("split").isin(list(cut.history_splits))) \
        .select("user_idx", "item_idx")
    return tables.read_or_empty(spark, cfg, SILVER_REVIEWS) \
        .join(tables.read(spark, cfg, USER_INDEX).select("user_id", "user_idx"), "user_id") \
        .join(tables.read(spark, cfg, ITEM_INDEX).select("item_id", "item_idx"), "item_id") \
        .join(pairs, ["user_idx", "item_idx"], "left_semi") \
        .select("user_idx", "item_idx", "rating", F.trim(F.coalesce("text", "title")).alias("text"), "review_ts")


def review_digests(spark: SparkSession, cfg: Config, cut: cuts.Cut) -> DataFrame:
    """(item_idx, digest): 'Reviews: 4.2/5 from 12. "newest snippet" "next"...', cut to
    examples.review_chars, from the reviews of the cut's history pairs."""
    snippet = F.concat(F.lit('"'), F.col("text"), F.lit('"'))
    per_item = reviews_of_cut(spark, cfg, cut).groupBy("item_idx").agg(
        F.avg("rating").alias("mean"), F.count("*").alias("n"),
        F.sort_array(F.collect_list(F.struct("review_ts", snippet.alias("s"))), asc=False).alias("newest"))
    digest = F.concat(F.lit("Reviews: "), F.format_number("mean", 1), F.lit("/5 from "), F.col("n").cast("string"),
                      F.lit(". "), F.concat_ws(" ", F.transform("newest", lambda r: r["s"])))
    return per_item.select("item_idx", F.substring(digest, 1, cfg.examples.review_chars).alias("digest"))


def own_reviews(spark: SparkSession, cfg: Config, cut: cuts.Cut) -> DataFrame:
    """(user_idx, item_idx, said): the user's newest review of a pair of the cut's history,
    cut to half of examples.review_chars: what the user text quotes."""
    newest = top_per(reviews_of_cut(spark, cfg, cut), ["user_idx", "item_idx"], 1, F.col("review_ts").desc())
    return newest.select("user_idx", "item_idx",
                         F.substring("text", 1, cfg.examples.review_chars // 2).alias("said"))


def sequences(spark: SparkSession, cfg: Config) -> DataFrame:
    """Every pair with its position in the user's sequence, split order and action."""
    order = map_lookup(SPLIT_ORDER, F.col("split"))
    pairs = tables.read(spark, cfg, INTERACTIONS) \
        .join(actions(spark, cfg), ["user_idx", "item_idx"], "left") \
        .select("user_idx", "item_idx", "weight", "split", order.alias("s_ord"),
                action_phrase(F.col("event_type")).alias("action"), "first_ts")
    return top_per(pairs, "user_idx", None, "first_ts", "item_idx", rank="pos").drop("first_ts")


def targets(seq: DataFrame, conf: ExamplesConf) -> DataFrame:
    """Positive pairs that become examples: (split, user_idx, target_idx, pos, s_ord)."""
    positive = seq.where(F.col("weight") > conf.min_positive_weight)
    # A train target needs at least one earlier item to describe the user with.
    train = top_per(positive.where((F.col("split") == "train") & (F.col("pos") > 1)), "user_idx",
                    conf.targets_per_user, F.col("pos").desc(), rank="_r").drop("_r")
    held_out = positive.where(F.col("split") != "train")
    chosen = train.unionByName(held_out)
    chosen = sample_users(chosen, conf.seed, conf.user_sample)
    return chosen.select(
        "split", "user_idx", F.col("item_idx").alias("target_idx"), "pos", "s_ord")


def _history_text(hist: DataFrame, keys: list[str], phrases: DataFrame, history_len: int) -> DataFrame:
    """keys + user_text from history rows (keys..., hpos, item_idx, action): the newest
    `history_len` items, newest first, "Recent activity: bought X (Category); viewed Y ..."."""
    said = F.concat(F.lit(': "'), F.col("said"), F.lit('"')) if "said" in hist.columns else F.lit(None)
    hist = top_per(hist, keys, history_len, F.col("hpos").desc(), rank="_r") \
        .join(phrases.select("item_idx", "phrase"), "item_idx") \
        .select(*keys, F.struct("hpos", F.concat(F.concat_ws(" ", "action", "phrase"),
                                                 F.coalesce(said, F.lit(""))).alias("p")).alias("e"))
    return hist.groupBy(*keys).agg(
        F.concat(F.lit("Recent activity: "), F.concat_ws(
            "; ", F.transform(F.sort_array(F.collect_list("e"), asc=False), lambda e: e["p"])))
        .alias("user_text"))


def with_own_reviews(spark: SparkSession, cfg: Config, seq: DataFrame, cut: cuts.Cut) -> DataFrame:
    """seq + `said` (the user's review of the pair) when examples.user_reviews."""
    if not cfg.examples.user_reviews:
        return seq
    return seq.join(own_reviews(spark, cfg, cut), ["user_idx", "item_idx"], "left")


def user_texts(seq: DataFrame, tgt: DataFrame, phrases: DataFrame, history_len: int) -> DataFrame:
    """(split, user_idx, target_idx, user_text): the newest allowed history, newest first."""
    t, h = tgt.alias("t"), seq.alias("h")
    visible = (F.col("h.pos") < F.col("t.pos")) & (
        (F.col("h.s_ord") < F.col("t.s_ord")) | ((F.col("h.s_ord") == 0) & (F.col("t.s_ord") == 0)))
    said = [F.col("h.said").alias("said")] if "said" in seq.columns else []
    hist = t.join(h, (F.col("t.user_idx") == F.col("h.user_idx")) & visible).select(
        "t.split", "t.user_idx", "t.target_idx", F.col("h.pos").alias("hpos"),
        F.col("h.item_idx").alias("item_idx"), F.col("h.action").alias("action"), *said)
    keys = ["split", "user_idx", "target_idx"]
    text = _history_text(hist, keys, phrases, history_len)
    return tgt.select(*keys).join(text, keys, "left") \
        .select(*keys, F.coalesce("user_text", F.lit(NO_HISTORY)).alias("user_text"))


def profile_texts(spark: SparkSession, cfg: Config, seq: DataFrame, phrases: DataFrame,
                  cut: cuts.Cut) -> DataFrame:
    """(user_idx, user_text) as of a cut: the user's newest items of the cut's history, in
    the format the cross-encoder was trained on. Users without such history are absent."""
    hist = with_own_reviews(spark, cfg, seq.where(F.col("split").isin(list(cut.history_splits))), cut)
    hist = hist.select("user_idx", F.col("pos").alias("hpos"), "item_idx", "action",
                       *(["said"] if "said" in hist.columns else []))
    return _history_text(hist, ["user_idx"], phrases, cfg.examples.history_len)


def _uniforms(seed: int, user: int, target: int, n: int) -> np.ndarray:
    """n uniforms in [0, 1) from splitmix64 of (seed, user, target, draw): partition-proof."""
    with np.errstate(over="ignore"):
        x = (np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
             ^ np.uint64(user) * np.uint64(0xBF58476D1CE4E5B9)
             ^ np.uint64(target) * np.uint64(0x94D049BB133111EB))
        z = x + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def allocate(shares: dict[str, float], n: int) -> list[tuple[str, int]]:
    """n draws shared out by `shares` (largest remainder; ties by name), in name order."""
    total = sum(shares.values())
    exact = {k: n * v / total for k, v in shares.items() if v > 0}
    counts = {k: int(x) for k, x in exact.items()}
    for k in sorted(exact, key=lambda k: (-(exact[k] - counts[k]), k))[:n - sum(counts.values())]:
        counts[k] += 1
    return [(k, counts[k]) for k in sorted(counts) if counts[k]]


class NegativeSampler:
    """Draws negatives for one target from catalog arrays (picklable, broadcast once)."""

    def __init__(self, item_idx: np.ndarray, popularity: np.ndarray, category: np.ndarray,
                 conf: ExamplesConf):
        order = np.argsort(item_idx, kind="stable")
        self.items = item_idx[order]
        weights = (popularity[order] + 1.0) ** conf.popularity_alpha
        self.cum = np.cumsum(weights) / weights.sum()
        self.cat = category[order]
        # Items grouped by category code: cat_items[cat_start[c]: cat_start[c] + cat_size[c]].
        by_cat = np.argsort(self.cat, kind="stable")
        self.cat_items = self.items[by_cat]
        codes, starts, sizes = np.unique(self.cat[by_cat], return_index=True, return_counts=True)
        self.cat_start = dict(zip(codes.tolist(), starts.tolist()))
        self.cat_size = dict(zip(codes.tolist(), sizes.tolist()))
        self.plan, self.ratio, self.seed = allocate(conf.negatives, conf.neg_ratio), conf.neg_ratio, conf.seed

    def _draw(self, kind: str, u: np.ndarray, category: int, candidates: np.ndarray) -> np.ndarray:
        if kind == "popularity":
            return self.items[np.minimum(np.searchsorted(self.cum, u, side="right"), len(self.items) - 1)]
        if kind == "hard":
            start, size = self.cat_start[category], self.cat_size[category]
            return self.cat_items[start + (u * size).astype(np.int64)]
        if kind == "candidates":
            return candidates[(u * len(candidates)).astype(np.int64)]
        return self.items[(u * len(self.items)).astype(np.int64)]

    def _usable(self, kind: str, category: int, candidates: np.ndarray) -> bool:
        return (kind != "hard" or category in self.cat_start) and (kind != "candidates" or len(candidates) > 0)

    def sample(self, user: int, target: int, category: int, seen: set,
               candidates: np.ndarray | None = None) -> list[tuple[int, str]]:
        """Up to `ratio` distinct unseen items with the sampler that drew each: each
        sampler its share, then uniform draws for what a sampler could not find."""
        candidates = np.asarray([] if candidates is None else candidates, dtype=np.int64)
        chosen: dict[int, str] = {}
        plan = [(k, n) for k, n in self.plan if self._usable(k, category, candidates)]
        # the fallback tops up to the whole ratio (tiny categories, short candidate lists)
        plan.append(("uniform", self.ratio))
        for attempt, (kind, n) in enumerate(plan):
            u = _uniforms(self.seed + 7919 * attempt, user, target, 8 * self.ratio + 16)
            wanted = min(self.ratio, len(chosen) + n)
            for item in self._draw(kind, u, category, candidates).tolist():
                if len(chosen) >= wanted:
                    break
                if item not in seen and item not in chosen:
                    chosen[item] = kind
            if len(chosen) == self.ratio:
                break
        return list(chosen.items())


def candidate_lists(spark: SparkSession, cfg: Config) -> DataFrame:
    """(split, user_idx, cands): each user's best examples.candidate_pool candidates by
    fused score, of the cut that target split sees (train and val: the validation cut;
    test: serving)."""
    if not tables.exists(spark, cfg, CANDIDATES):
        raise FileNotFoundError("examples.negatives takes candidates: run the candidates stage first")
    best = best_per(tables.read(spark, cfg, CANDIDATES), ["cut", "user_idx"], cfg.examples.candidate_pool)
    lists = best.groupBy("cut", "user_idx").agg(F.sort_array(F.collect_list("item_idx")).alias("cands"))
    split_cut = spark.createDataFrame([("train", "val"), ("val", "val"), ("test", "serve")], "split string, cut string")
    return lists.join(split_cut, "cut").select("split", "user_idx", "cands")


def negatives(spark: SparkSession, cfg: Config, seq: DataFrame, tgt: DataFrame, catalog: DataFrame) -> DataFrame:
    """(split, user_idx, target_idx, item_idx, kind) for each target's sampled negatives."""
    conf = cfg.examples
    # Category -> small int code, mapped on the executors (categories are few).
    names = sorted(r[0] for r in catalog.select(F.coalesce("category", F.lit(""))).distinct().collect())
    code = map_lookup({n: i for i, n in enumerate(names)}, F.coalesce("category", F.lit("")))
    cat_codes = catalog.select("item_idx", code.alias("cat"))
    train_counts = seq.where(F.col("split") == "train").groupBy("item_idx").count()
    arrays = cat_codes.join(train_counts, "item_idx", "left").fillna(0, ["count"]).toPandas()
    sampler = NegativeSampler(arrays["item_idx"].to_numpy(np.int64),
                              arrays["count"].to_numpy(np.float64),
                              arrays["cat"].to_numpy(np.int64), conf)
    shared = spark.sparkContext.broadcast(sampler)
    seen = seq.groupBy("user_idx").agg(F.collect_set("item_idx").alias("seen"))
    rows = tgt.join(cat_codes.withColumnRenamed("item_idx", "target_idx"), "target_idx").join(seen, "user_idx")
    if conf.negatives.get("candidates", 0) > 0:
        rows = rows.join(candidate_lists(spark, cfg), ["split", "user_idx"], "left")
    else:
        rows = rows.withColumn("cands", F.lit(None).cast("array<bigint>"))
    rows = rows.select("split", "user_idx", "target_idx", "cat", "seen", "cands")

    def draw(batches):
        s = shared.value
        for pdf in batches:
            out = [(split, user, target, item, kind)
                   for split, user, target, cat, seen_items, cands in pdf.itertuples(index=False)
                   for item, kind in s.sample(user, target, cat, set(seen_items.tolist()), cands)]
            yield pd.DataFrame(out, columns=NEGATIVES_SCHEMA.fieldNames())

    return rows.mapInPandas(draw, NEGATIVES_SCHEMA)


def build(spark: SparkSession, cfg: Config) -> dict:
    """Writes gold.examples (whole table, one commit); returns counts per split and kind.

    For a listwise cross-encoder (train.loss) a target is a group of one positive and
    exactly neg_ratio negatives: a target short of negatives (a catalog smaller than a
    user's history) is left out, and the count logged."""
    with CacheScope() as cached:
        _write(spark, cfg, cached)
    return stats(spark, cfg)


def _write(spark: SparkSession, cfg: Config, cached: CacheScope) -> None:
    conf = cfg.examples
    as_of = cuts.val(cfg)  # review text from train pairs only: no example sees a later review
    catalog = cached(item_texts(spark, cfg, as_of))
    seq = cached(sequences(spark, cfg))
    tgt = cached(targets(seq, conf))
    users = user_texts(with_own_reviews(spark, cfg, seq, as_of), tgt, catalog, conf.history_len)
    positives = tgt.select("split", "user_idx", "target_idx", F.col("target_idx").alias("item_idx"),
                           F.lit("positive").alias("kind"))
    pairs = positives.unionByName(negatives(spark, cfg, seq, tgt, catalog))
    if cfg.train.loss == "listwise":
        group = ["split", "user_idx", "target_idx"]
        sizes = pairs.groupBy(*group).agg(F.count("*").alias("n"))
        short = sizes.where(F.col("n") != conf.neg_ratio + 1).count()
        if short:
            log.warning("examples: %d target(s) have fewer than %d negatives; left out of the listwise groups",
                        short, conf.neg_ratio)
            pairs = pairs.join(sizes.where(F.col("n") == conf.neg_ratio + 1).select(*group), group, "left_semi")
    examples = pairs.join(users, ["split", "user_idx", "target_idx"]) \
        .join(catalog.select("item_idx", "item_text"), "item_idx") \
        .withColumn("label", (F.col("kind") == "positive").cast("int"))
    tables.overwrite(examples, cfg, EXAMPLES)


def stats(spark: SparkSession, cfg: Config) -> dict:
    rows = tables.read(spark, cfg, EXAMPLES).groupBy("split", "kind").count().collect()
    out: dict = {}
    for r in rows:
        split = out.setdefault(r["split"], {"rows": 0, "positives": 0, "negatives": {}})
        split["rows"] += r["count"]
        if r["kind"] == "positive":
            split["positives"] = r["count"]
        else:
            split["negatives"][r["kind"]] = r["count"]
    return out
