"""Cross-encoder training examples: (user history text, candidate item text, label).

A user's interactions are ordered by when the user first touched each item (the order
the split uses). A *target* is a positive pair (weight > examples.min_positive_weight):
in train, each user's last `targets_per_user` positive train items; in val and test,
every positive pair of the split. A target's history is what the user did before it
and is allowed to see: earlier train items for a train target, the train items (and,
for test, the val items) for a held-out one; the newest `history_len` of them, newest
first, with what the user did ("bought", "added to cart", "viewed").

Each target gets `neg_ratio` negatives among items the user never touched, drawn
uniformly, by popularity, or from the target's category ("hard"). Every draw is a hash
of (seed, user, target, draw number), so the examples are the same on any partitioning.
"""
from __future__ import annotations

import enum

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from llmrec import tables
from llmrec.conf import Config, ExamplesConf
from llmrec.frames import map_lookup, sample_users, top_per
from llmrec.tables.schemas import (
    EXAMPLES, INTERACTIONS, ITEM_INDEX, SILVER_EVENTS, SILVER_ITEMS, USER_INDEX,
)

SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}


class Action(enum.Enum):
    """What a user did to an item: the strongest of the pair's event types (a pair with
    only a review is REVIEW), its phrase in user texts and its sentence in reasons."""
    REVIEW = ("review", 0, "reviewed", "reviewed {item}")
    VIEW = ("view", 1, "viewed", "viewed {item}")
    CART = ("cart", 2, "added to cart", "added {item} to your cart")
    PURCHASE = ("purchase", 3, "bought", "bought {item}")

    def __init__(self, event_type: str, strength: int, phrase: str, sentence: str):
        self.event_type, self.strength, self.phrase, self.sentence = event_type, strength, phrase, sentence


def action_phrase(event_type: Column) -> Column:
    """The phrase of the Action of an event type column (null: REVIEW's)."""
    return F.coalesce(map_lookup({a.event_type: a.phrase for a in Action}, event_type),
                      F.lit(Action.REVIEW.phrase))

NO_HISTORY = "No earlier activity."
PRICE_BANDS = ("budget", "mid-range", "premium", "luxury")

NEGATIVES_SCHEMA = T.StructType([
    T.StructField("split", T.StringType(), False), T.StructField("user_idx", T.LongType(), False),
    T.StructField("target_idx", T.LongType(), False), T.StructField("item_idx", T.LongType(), False),
    T.StructField("kind", T.StringType(), False),
])


def item_texts(spark: SparkSession, cfg: Config) -> DataFrame:
    """(item_idx, item_id, category, item_text, phrase): the candidate text and the history
    phrase."""
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
    return items.select("item_idx", "item_id", "category", item_text.alias("item_text"),
                        phrase.alias("phrase"))


def actions(spark: SparkSession, cfg: Config) -> DataFrame:
    """(user_idx, item_idx, event_type): the strongest event type of each pair with events."""
    strength = map_lookup({a.event_type: a.strength for a in Action}, F.col("event_type"))
    events = tables.read(spark, cfg, SILVER_EVENTS) \
        .join(tables.read(spark, cfg, USER_INDEX).select("user_id", "user_idx"), "user_id") \
        .join(tables.read(spark, cfg, ITEM_INDEX).select("item_id", "item_idx"), "item_id")
    best = events.groupBy("user_idx", "item_idx").agg(F.max(strength).alias("strength"))
    event_type = map_lookup({a.strength: a.event_type for a in Action}, F.col("strength"))
    return best.select("user_idx", "item_idx", event_type.alias("event_type"))


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
    hist = top_per(hist, keys, history_len, F.col("hpos").desc(), rank="_r") \
        .join(phrases.select("item_idx", "phrase"), "item_idx") \
        .select(*keys, F.struct("hpos", F.concat_ws(" ", "action", "phrase").alias("p")).alias("e"))
    return hist.groupBy(*keys).agg(
        F.concat(F.lit("Recent activity: "), F.concat_ws(
            "; ", F.transform(F.sort_array(F.collect_list("e"), asc=False), lambda e: e["p"])))
        .alias("user_text"))


def user_texts(seq: DataFrame, tgt: DataFrame, phrases: DataFrame, history_len: int) -> DataFrame:
    """(split, user_idx, target_idx, user_text): the newest allowed history, newest first."""
    t, h = tgt.alias("t"), seq.alias("h")
    visible = (F.col("h.pos") < F.col("t.pos")) & (
        (F.col("h.s_ord") < F.col("t.s_ord")) | ((F.col("h.s_ord") == 0) & (F.col("t.s_ord") == 0)))
    hist = t.join(h, (F.col("t.user_idx") == F.col("h.user_idx")) & visible).select(
        "t.split", "t.user_idx", "t.target_idx", F.col("h.pos").alias("hpos"),
        F.col("h.item_idx").alias("item_idx"), F.col("h.action").alias("action"))
    keys = ["split", "user_idx", "target_idx"]
    text = _history_text(hist, keys, phrases, history_len)
    return tgt.select(*keys).join(text, keys, "left") \
        .select(*keys, F.coalesce("user_text", F.lit(NO_HISTORY)).alias("user_text"))


def profile_texts(seq: DataFrame, phrases: DataFrame, splits: list[str], history_len: int) -> DataFrame:
    """(user_idx, user_text) for serving: the user's newest items of `splits`, in the
    format the cross-encoder was trained on. Users without such history are absent."""
    hist = seq.where(F.col("split").isin(splits)).select(
        "user_idx", F.col("pos").alias("hpos"), "item_idx", "action")
    return _history_text(hist, ["user_idx"], phrases, history_len)


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
        self.kind, self.ratio, self.seed = conf.negatives, conf.neg_ratio, conf.seed

    def _draw(self, kind: str, u: np.ndarray, category: int) -> np.ndarray:
        if kind == "popularity":
            return self.items[np.minimum(np.searchsorted(self.cum, u, side="right"), len(self.items) - 1)]
        if kind == "hard":
            start, size = self.cat_start[category], self.cat_size[category]
            return self.cat_items[start + (u * size).astype(np.int64)]
        return self.items[(u * len(self.items)).astype(np.int64)]

    def sample(self, user: int, target: int, category: int, seen: set) -> list[tuple[int, str]]:
        """Up to `ratio` distinct unseen items with the sampler that drew each."""
        chosen: dict[int, str] = {}
        kinds = [self.kind] if self.kind != "hard" or category in self.cat_start else []
        kinds.append("uniform")  # fallback when the first sampler runs dry (tiny categories)
        for attempt, kind in enumerate(kinds):
            u = _uniforms(self.seed + 7919 * attempt, user, target, 8 * self.ratio + 16)
            for item in self._draw(kind, u, category).tolist():
                if item not in seen and item not in chosen:
                    chosen[item] = kind
                    if len(chosen) == self.ratio:
                        return list(chosen.items())
        return list(chosen.items())


def negatives(spark: SparkSession, seq: DataFrame, tgt: DataFrame, catalog: DataFrame,
              conf: ExamplesConf) -> DataFrame:
    """(split, user_idx, target_idx, item_idx, kind) for each target's sampled negatives."""
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
    rows = tgt.join(cat_codes.withColumnRenamed("item_idx", "target_idx"), "target_idx") \
        .join(seen, "user_idx").select("split", "user_idx", "target_idx", "cat", "seen")

    def draw(batches):
        s = shared.value
        for pdf in batches:
            out = [(split, user, target, item, kind)
                   for split, user, target, cat, seen_items in pdf.itertuples(index=False)
                   for item, kind in s.sample(user, target, cat, set(seen_items.tolist()))]
            yield pd.DataFrame(out, columns=NEGATIVES_SCHEMA.fieldNames())

    return rows.mapInPandas(draw, NEGATIVES_SCHEMA)


def build(spark: SparkSession, cfg: Config) -> dict:
    """Writes gold.examples (whole table, one commit); returns counts per split and kind."""
    conf = cfg.examples
    catalog = item_texts(spark, cfg).cache()
    seq = sequences(spark, cfg).cache()
    tgt = targets(seq, conf).cache()
    users = user_texts(seq, tgt, catalog, conf.history_len)
    positives = tgt.select("split", "user_idx", "target_idx", F.col("target_idx").alias("item_idx"),
                           F.lit("positive").alias("kind"))
    pairs = positives.unionByName(negatives(spark, seq, tgt, catalog, conf))
    examples = pairs.join(users, ["split", "user_idx", "target_idx"]) \
        .join(catalog.select("item_idx", "item_text"), "item_idx") \
        .withColumn("label", (F.col("kind") == "positive").cast("int"))
    tables.overwrite(examples, cfg, EXAMPLES)
    for df in (catalog, seq, tgt):
        df.unpersist()
    return stats(spark, cfg)


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
