"""The embedded synthetic shop, generated in Spark so it scales past driver memory.

Every random draw is a hash of (seed, salt, row key), never Spark's rand(), so the shop
is the same whatever the partitioning, the cluster or the run.

The model behind the data: items have a category, a brand, a price tier and attributes,
and generated titles and descriptions that say so; users have a favourite category (and
a second one), a favourite brand slot and a price tier. A session picks a category,
views items that match the user's taste better than chance, carts some of them and buys
some carts; buyers sometimes write a review whose rating and text follow how well the
item matched. The last fifth of the period brings new items and new users (cold start).
A configured fraction of raw rows is corrupted in known ways; see BAD_KINDS.

Output: raw JSON-lines files, raw/{items,events,reviews}/dt=YYYY-MM-DD/, one line a row,
in the same format the ingest job reads for `source.kind: synthetic`.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from llmrec import storage
from llmrec.conf import Config, SyntheticConf, join

# category -> (nouns, brands, adjectives, materials, uses, base price)
CATALOG = {
    "Electronics > Headphones": (
        ["Wireless Headphones", "Noise-Cancelling Earbuds", "Over-Ear Headphones", "Sport Earbuds"],
        ["Sonora", "Auralis", "BassPeak", "Quietline"],
        ["Bluetooth", "Foldable", "Studio", "Lightweight"],
        ["aluminium", "soft-touch plastic", "memory foam", "silicone"],
        ["commuting", "the gym", "long flights", "home office calls"], 80.0),
    "Shoes > Running": (
        ["Trail Running Shoes", "Road Running Shoes", "Racing Flats", "Walking Sneakers"],
        ["Stridex", "Pacewell", "TerraRun", "Velocita"],
        ["Waterproof", "Cushioned", "Breathable", "Lightweight"],
        ["mesh", "recycled knit", "leather", "gore-tex"],
        ["marathon training", "muddy trails", "daily jogs", "long walks"], 95.0),
    "Kitchen > Cookware": (
        ["Non-Stick Frying Pan", "Cast Iron Skillet", "Stainless Saucepan", "Dutch Oven"],
        ["Ferrocasa", "ChefLine", "Copperleaf", "Hearthware"],
        ["Induction-Ready", "Oven-Safe", "Pre-Seasoned", "Heavy-Gauge"],
        ["cast iron", "stainless steel", "hard-anodised aluminium", "enamelled iron"],
        ["weeknight dinners", "searing steaks", "slow braises", "family breakfasts"], 60.0),
    "Books > Science Fiction": (
        ["Space Opera Novel", "Cyberpunk Thriller", "Time Travel Saga", "First Contact Novel"],
        ["Nebula Press", "Orbit House", "Starlit Books", "Quantum Publishing"],
        ["Award-Winning", "Bestselling", "Illustrated", "Paperback"],
        ["paperback", "hardcover", "deluxe hardcover", "large print"],
        ["rainy weekends", "the commute", "book clubs", "late-night reading"], 18.0),
    "Beauty > Skincare": (
        ["Hydrating Face Serum", "Daily Moisturiser", "Mineral Sunscreen", "Gentle Cleanser"],
        ["Luminelle", "Purederm", "Aquavera", "Botanique"],
        ["Fragrance-Free", "Vegan", "Dermatologist-Tested", "Organic"],
        ["hyaluronic acid", "niacinamide", "zinc oxide", "aloe vera"],
        ["dry skin", "sensitive skin", "daily protection", "morning routines"], 30.0),
    "Toys > Building Sets": (
        ["Space Station Building Set", "Castle Brick Kit", "Robot Construction Kit", "City Train Set"],
        ["Brickwise", "Buildora", "Toylab", "Kidcraft"],
        ["Motorised", "Collector's", "Beginner", "Deluxe"],
        ["ABS plastic", "wood", "recycled plastic", "metal"],
        ["ages 6 and up", "family evenings", "STEM learning", "gifts"], 45.0),
    "Sports > Yoga": (
        ["Yoga Mat", "Cork Yoga Block", "Stretching Strap", "Meditation Cushion"],
        ["Zenflow", "Asana Co", "Lotusform", "Groundwell"],
        ["Non-Slip", "Extra-Thick", "Eco-Friendly", "Travel"],
        ["natural rubber", "cork", "TPE foam", "organic cotton"],
        ["hot yoga", "pilates", "travel", "daily stretching"], 35.0),
    "Home > Coffee": (
        ["Espresso Machine", "Burr Coffee Grinder", "Pour-Over Kettle", "French Press"],
        ["Baristo", "Crema Lab", "Roastery", "Moka Haus"],
        ["Programmable", "Compact", "Barista-Grade", "Insulated"],
        ["brushed steel", "borosilicate glass", "ceramic", "matte black steel"],
        ["morning espresso", "slow weekends", "small kitchens", "coffee lovers"], 120.0),
    "Garden > Tools": (
        ["Pruning Shears", "Garden Hose Reel", "Cordless Hedge Trimmer", "Raised Planter Bed"],
        ["Greenhand", "Terravita", "Bloomfield", "Rootwise"],
        ["Ergonomic", "Heavy-Duty", "Rust-Proof", "Foldable"],
        ["carbon steel", "cedar wood", "galvanised steel", "reinforced polymer"],
        ["small balconies", "rose beds", "large lawns", "vegetable patches"], 50.0),
    "Pets > Dog Supplies": (
        ["Orthopedic Dog Bed", "Chew-Proof Toy", "Reflective Leash", "Slow-Feeder Bowl"],
        ["Pawfect", "Barkley", "Houndstooth", "Tailwag"],
        ["Washable", "Durable", "Reflective", "Non-Slip"],
        ["memory foam", "natural rubber", "nylon webbing", "stainless steel"],
        ["large breeds", "puppies", "night walks", "anxious chewers"], 40.0),
}
CATEGORIES = list(CATALOG)
COLORS = ["black", "white", "navy", "graphite", "red", "forest green", "sand", "sky blue"]
TIERS = ["budget", "mid-range", "premium"]
TIER_PRICE = [0.55, 1.0, 2.1]
BRAND_SLOTS = 4
EVENT_TYPES = ("view", "cart", "purchase")

# Review text by rating: what buyers say about an item that fits them or does not.
REVIEW_TITLES = {1: "Very disappointed", 2: "Not for me", 3: "It's okay",
                 4: "Really good", 5: "Absolutely love it"}
REVIEW_BODIES = {
    1: "The {noun} from {brand} broke within a week and feels cheap. Returning it.",
    2: "The {brand} {noun} does the job but the quality is poor for the price.",
    3: "Decent {noun}. Nothing special about this {brand} model, but it works.",
    4: "Good {noun} from {brand}; well made and worth the money for {use}.",
    5: "Best {noun} I have owned. {brand} nailed it - perfect for {use}, would buy again.",
}

# Kinds of corruption injected into raw rows, per entity, and the quarantine reason the
# clean (or ingest) stage must give them. Duplicates are removed, not quarantined.
BAD_KINDS = {
    "events": ["null_user_id", "unknown_item", "bad_timestamp", "bad_event_type",
               "malformed_record", "duplicate"],
    "items": ["bad_price", "null_title", "malformed_record", "duplicate"],
    "reviews": ["bad_rating", "null_item_id", "malformed_record", "duplicate"],
}
TS_FORMAT = "yyyy-MM-dd'T'HH:mm:ss'Z'"
SECONDS_PER_DAY = 86_400
# Mean raw events per session under the model below (measured; see tests): sizes
# the number of sessions so the total lands near synthetic.events.
EVENTS_PER_SESSION = 4.6


class Rand:
    """Deterministic uniform draws in [0, 1) from hashes of (seed, salt, keys)."""

    def __init__(self, seed: int):
        self.seed = seed

    def u(self, salt: str, *keys: Column) -> Column:
        h = F.xxhash64(F.lit(self.seed), F.lit(salt), *keys)
        return (F.pmod(h, F.lit(1 << 30)) / float(1 << 30)).cast("double")

    def pick(self, n: int | Column, salt: str, *keys: Column) -> Column:
        """A uniform integer in [0, n)."""
        return F.floor(self.u(salt, *keys) * n).cast("long")


def _lits(values) -> Column:
    return F.array(*[F.lit(v) for v in values])


def _nested(field_index: int) -> Column:
    """array<array<string>> of one CATALOG field for all categories."""
    return F.array(*[_lits(CATALOG[c][field_index]) for c in CATEGORIES])


def _at(arr: Column, idx: Column) -> Column:
    return F.element_at(arr, (idx + 1).cast("int"))


class Shop:
    """Column expressions for the shop's latent structure, shared by items and events."""

    def __init__(self, conf: SyntheticConf):
        self.c = conf
        self.r = Rand(conf.seed)
        self.n_cat = len(CATEGORIES)
        self.start = dt.datetime.fromisoformat(conf.start_date).replace(tzinfo=dt.timezone.utc)
        self.t0 = int(self.start.timestamp())
        # New items and users arrive in the last fifth of the period.
        self.late_from = 0.8 * conf.days
        self.n_new_items = int(round(conf.items * conf.cold_item_fraction))
        self.n_old_items = max(conf.items - self.n_new_items, self.n_cat)
        self.n_new_items = conf.items - self.n_old_items

    # --- items: index i -> attributes; category = i mod n_cat ---
    def category(self, i: Column) -> Column:
        return F.pmod(i, F.lit(self.n_cat))

    def brand_slot(self, i: Column) -> Column:
        return self.r.pick(BRAND_SLOTS, "brand", i)

    def tier(self, i: Column) -> Column:
        return self.r.pick(len(TIERS), "tier", i)

    def launch_day(self, i: Column) -> Column:
        if self.n_new_items == 0:
            return F.lit(0).cast("long")
        step = (self.c.days - self.late_from) / self.n_new_items
        return F.when(i < self.n_old_items, F.lit(0)) \
            .otherwise(F.floor(F.lit(self.late_from) + (i - self.n_old_items) * step)).cast("long")

    def items_available(self, day: Column) -> Column:
        """How many item indexes have launched by `day` (items launch in index order)."""
        if self.n_new_items == 0:
            return F.lit(self.c.items).cast("long")
        step = (self.c.days - self.late_from) / self.n_new_items
        launched = F.ceil((day + 1 - F.lit(self.late_from)) / step)
        return (F.lit(self.n_old_items) + F.least(F.greatest(launched, F.lit(0)),
                                                  F.lit(self.n_new_items))).cast("long")

    def item_in_category(self, cat: Column, n_avail: Column, salt: str, *keys: Column) -> Column:
        per_cat = F.floor((n_avail - 1 - cat) / self.n_cat) + 1
        return (cat + self.n_cat * self.r.pick(per_cat, salt, *keys)).cast("long")

    @staticmethod
    def item_id(i: Column) -> Column:
        return F.concat(F.lit("I"), F.lpad(i.cast("string"), 7, "0"))

    @staticmethod
    def user_id(u: Column) -> Column:
        return F.concat(F.lit("U"), F.lpad(u.cast("string"), 7, "0"))

    def ts_string(self, seconds: Column) -> Column:
        return F.date_format(F.timestamp_seconds(F.lit(self.t0) + seconds), TS_FORMAT)

    def day_string(self, day: Column) -> Column:
        return F.date_add(F.lit(self.start.date()), day.cast("int")).cast("string")


def items_frame(spark: SparkSession, shop: Shop) -> DataFrame:
    r = shop.r
    i = F.col("i")
    cat = shop.category(i)
    noun_idx = r.pick(4, "noun", i)
    df = spark.range(shop.c.items).withColumnRenamed("id", "i").select(
        "i", cat.alias("cat"), shop.brand_slot(i).alias("slot"), shop.tier(i).alias("tier"),
        noun_idx.alias("noun_idx"), r.pick(4, "adj", i).alias("adj_idx"),
        r.pick(4, "material", i).alias("mat_idx"), r.pick(4, "use", i).alias("use_idx"),
        r.pick(len(COLORS), "color", i).alias("color_idx"), r.u("price", i).alias("pu"),
        shop.launch_day(i).alias("launch_day"))
    at = lambda field, idx: _at(_at(_nested(field), F.col("cat")), F.col(idx))  # noqa: E731
    noun, brand, adj = at(0, "noun_idx"), at(1, "slot"), at(2, "adj_idx")
    material, use = at(3, "mat_idx"), at(4, "use_idx")
    color = _at(_lits(COLORS), F.col("color_idx"))
    tier_name = _at(_lits(TIERS), F.col("tier"))
    base = _at(_lits([CATALOG[c][5] for c in CATEGORIES]), F.col("cat"))
    price = F.round(base * _at(_lits(TIER_PRICE), F.col("tier")) * (0.8 + 0.4 * F.col("pu")), 2)
    title = F.concat_ws(" ", brand, adj, noun, F.lit("-"), F.initcap(color))
    description = F.concat(
        F.lit("The "), brand, F.lit(" "), noun, F.lit(" is a "), F.lower(adj), F.lit(", "),
        tier_name, F.lit(" choice for "), use, F.lit(". Made of "), material, F.lit(", in "),
        color, F.lit("."))
    attributes = F.to_json(F.create_map(F.lit("color"), color, F.lit("material"), material,
                                        F.lit("tier"), tier_name))
    return df.select(
        "i", "launch_day",
        shop.item_id(i).alias("item_id"), title.alias("title"), description.alias("description"),
        _at(_lits(CATEGORIES), F.col("cat")).alias("category"), brand.alias("brand"),
        price.cast("string").alias("price"), attributes.alias("attributes"),
        shop.ts_string(F.col("launch_day") * SECONDS_PER_DAY).alias("launch_time"),
        noun.alias("_noun"), use.alias("_use"))


def events_frame(spark: SparkSession, shop: Shop) -> DataFrame:
    """One row per raw event, with the latent match flags kept for the reviews."""
    c, r = shop.c, shop.r
    sessions_per_user = c.events / (c.users * EVENTS_PER_SESSION)
    u = F.col("u")
    users = spark.range(c.users).withColumnRenamed("id", "u").select(
        "u",
        F.when(r.u("cold_user", u) < c.cold_user_fraction,
               F.floor(F.lit(shop.late_from) + r.u("first_day", u) * (c.days - shop.late_from)))
        .otherwise(F.lit(0)).cast("long").alias("first_day"),
        r.pick(shop.n_cat, "cat1", u).alias("cat1"), r.pick(shop.n_cat, "cat2", u).alias("cat2"),
        r.pick(BRAND_SLOTS, "slot", u).alias("pref_slot"),
        r.pick(len(TIERS), "tier", u).alias("pref_tier"),
        # 1 .. 2*mean-1 sessions, mean `sessions_per_user`; late users have fewer.
        (1 + r.pick(max(1, int(round(2 * sessions_per_user - 1))), "n_sess", u)).alias("n_sess"))
    users = users.withColumn(
        "n_sess", F.greatest(F.lit(1), F.round(F.col("n_sess") * (c.days - F.col("first_day"))
                                                / c.days)).cast("int"))

    s = F.col("s")
    sessions = users.select("*", F.explode(F.sequence(F.lit(0), F.col("n_sess") - 1)).alias("s"))
    pick = r.u("sess_cat", u, s)
    sessions = sessions.select(
        "*",
        (F.col("first_day") + r.pick(c.days - F.col("first_day"), "day", u, s)).alias("day"),
        F.when(pick < 0.75, F.col("cat1")).when(pick < 0.9, F.col("cat2"))
        .otherwise(r.pick(shop.n_cat, "rand_cat", u, s)).alias("cat"),
        (1 + r.pick(5, "n_views", u, s)).alias("n_views"),
        r.pick(int(SECONDS_PER_DAY * 0.9), "start", u, s).alias("start_sec"))
    sessions = sessions.withColumn("n_avail", shop.items_available(F.col("day")))

    v = F.col("v")
    views = sessions.select("*", F.explode(F.sequence(F.lit(0), F.col("n_views") - 1)).alias("v"))
    # The viewed item: the best of 4 random items of the category by the user's taste.
    cands = []
    for k in range(4):
        item = shop.item_in_category(F.col("cat"), F.col("n_avail"), f"cand{k}", u, s, v)
        brand_match = (shop.brand_slot(item) == F.col("pref_slot")).cast("int")
        tier_match = (shop.tier(item) == F.col("pref_tier")).cast("int")
        score = 2.0 * brand_match + 1.5 * tier_match + 2.0 * r.u(f"noise{k}", u, s, v)
        cands.append(F.struct(score.alias("score"), item.alias("i"),
                              brand_match.alias("bm"), tier_match.alias("tm")))
    views = views.withColumn("best", F.greatest(*cands)).select(
        "u", "s", "v", "day", "start_sec", F.col("best.i").alias("i"),
        F.col("best.bm").alias("bm"), F.col("best.tm").alias("tm"))
    p_cart = 0.08 + 0.25 * F.col("bm") + 0.2 * F.col("tm")
    p_buy = 0.35 + 0.15 * (F.col("bm") + F.col("tm"))
    carted = r.u("cart", u, s, v) < p_cart
    bought = carted & (r.u("buy", u, s, v) < p_buy)
    kinds = F.filter(F.array(F.lit("view"), F.when(carted, F.lit("cart")),
                             F.when(bought, F.lit("purchase"))), lambda x: x.isNotNull())
    events = views.select("*", F.posexplode(kinds).alias("k", "event_type"))
    seconds = (F.col("day") * SECONDS_PER_DAY + F.col("start_sec") + F.col("v") * 120
               + F.col("k") * 45 + r.pick(40, "jitter", u, s, v))
    return events.select(
        "u", "i", "bm", "tm", "event_type", seconds.alias("sec"),
        F.concat_ws("-", F.lit("E"), u.cast("string"), s.cast("string"), v.cast("string"),
                    F.col("event_type")).alias("event_id"))


def reviews_frame(events: DataFrame, items: DataFrame, shop: Shop) -> DataFrame:
    c, r = shop.c, shop.r
    key = F.col("event_id")
    bought = events.where(F.col("event_type") == "purchase") \
        .where(r.u("review", key) < c.reviews_per_purchase)
    rating = F.least(F.lit(5), F.greatest(F.lit(1), F.round(
        1.6 + 1.3 * F.col("bm") + 1.1 * F.col("tm") + 1.6 * r.u("rating", key)))).cast("int")
    rv = bought.join(items.select("i", "brand", "_noun", "_use"), "i").select(
        "*", rating.alias("rating"),
        (F.col("sec") + SECONDS_PER_DAY * (1 + r.pick(5, "review_delay", key))).alias("rsec"))
    body = F.lit(None).cast("string")
    for stars, template in REVIEW_BODIES.items():
        fmt = template.replace("{noun}", "%1$s").replace("{brand}", "%2$s").replace("{use}", "%3$s")
        body = F.when(F.col("rating") == stars,
                      F.format_string(fmt, "_noun", "brand", "_use")).otherwise(body)
    title = _at(_lits([REVIEW_TITLES[k] for k in sorted(REVIEW_TITLES)]), F.col("rating") - 1)
    return rv.select(
        F.concat(F.lit("R"), F.substring("event_id", 3, 64)).alias("review_id"),
        shop.user_id(F.col("u")).alias("user_id"), shop.item_id(F.col("i")).alias("item_id"),
        F.col("rating").cast("string").alias("rating"), title.alias("title"), body.alias("text"),
        F.col("rsec").alias("sec"))


def _corrupt(df: DataFrame, entity: str, key: str, rate: float, r: Rand,
             fields: dict[str, tuple[str, Column]], keep_original: bool = False) -> DataFrame:
    """Serialises rows as JSON lines, corrupting a `rate` fraction with BAD_KINDS[entity].

    `fields` maps a bad kind to (column, bad value); `malformed_record` truncates the line
    and `duplicate` repeats it. With keep_original the corrupted line is written beside
    the good one instead of replacing it (items: the catalog itself stays whole).
    """
    kinds = BAD_KINDS[entity]
    draw = r.u(f"bad_{entity}", F.col(key))
    bad = F.when(draw < rate, F.floor(draw / rate * len(kinds)).cast("int"))
    df = df.withColumn("_bad", bad)
    cols = [c for c in df.columns if not c.startswith("_") and c != "dt"]
    corrupted_cols = []
    for name in cols:
        col = F.col(name)
        for kind, (target, value) in fields.items():
            if target == name:
                col = F.when(F.col("_bad") == kinds.index(kind), value).otherwise(col)
        corrupted_cols.append(col.alias(name))
    good = F.to_json(F.struct(*cols))
    corrupted = F.to_json(F.struct(*corrupted_cols))
    corrupted = F.when(F.col("_bad") == kinds.index("malformed_record"),
                       F.substring(corrupted, 1, 40)).otherwise(corrupted)
    lines = (F.when(F.col("_bad").isNull(), F.array(good))
             .when(F.col("_bad") == kinds.index("duplicate"), F.array(good, good))
             .otherwise(F.array(good, corrupted) if keep_original else F.array(corrupted)))
    return df.select(F.explode(lines).alias("value"), "dt")


def generate(spark: SparkSession, cfg: Config) -> tuple[dict[str, str], bool]:
    """Writes the shop's raw files under cfg.raw_root; returns ({entity: folder}, written).

    A marker file records the settings; a shop already written with the same settings
    is not written again (it would be byte-for-byte the same).
    """
    c = cfg.synthetic
    out = {entity: join(cfg.raw_root, entity) for entity in BAD_KINDS}
    marker = join(cfg.raw_root, "_shop.json")
    settings = json.dumps(dataclasses.asdict(c), sort_keys=True)
    if storage.read_text(spark, marker) == settings:
        return out, False
    shop = Shop(c)
    r = shop.r
    items = items_frame(spark, shop).cache()
    events = events_frame(spark, shop)
    events = events.select("*", shop.item_id(F.col("i")).alias("item_id"))
    reviews = reviews_frame(events, items, shop)

    raw_items = items.select(
        "item_id", "title", "description", "category", "brand", "price", "attributes",
        "launch_time", shop.day_string(F.col("launch_day")).alias("dt"))
    raw_events = events.select(
        "event_id", shop.user_id(F.col("u")).alias("user_id"), "item_id", "event_type",
        shop.ts_string(F.col("sec")).alias("event_time"),
        shop.day_string(F.floor(F.col("sec") / SECONDS_PER_DAY)).alias("dt"))
    raw_reviews = reviews.select(
        "review_id", "user_id", "item_id", "rating", "title", "text",
        shop.ts_string(F.col("sec")).alias("review_time"),
        shop.day_string(F.floor(F.col("sec") / SECONDS_PER_DAY)).alias("dt")) \
        .where(F.col("sec") < c.days * SECONDS_PER_DAY)  # reviews after the period are not seen yet

    rate = c.bad_row_rate
    lines = {
        "items": _corrupt(raw_items, "items", "item_id", rate, r, {
            "bad_price": ("price", F.lit("-19.99")), "null_title": ("title", F.lit(None))},
            keep_original=True),
        "events": _corrupt(raw_events, "events", "event_id", rate, r, {
            "null_user_id": ("user_id", F.lit(None)),
            "unknown_item": ("item_id", F.lit("I9999999")),
            "bad_timestamp": ("event_time", F.lit("2024-13-45T99:61:00Z")),
            "bad_event_type": ("event_type", F.lit("wishlist??"))}),
        "reviews": _corrupt(raw_reviews, "reviews", "review_id", rate, r, {
            "bad_rating": ("rating", F.lit("7")), "null_item_id": ("item_id", F.lit(None))}),
    }
    for entity, df in lines.items():
        folder = out[entity]
        # At most files_per_day files per day partition.
        bucket = F.pmod(F.xxhash64("value"), F.lit(c.files_per_day))
        df.repartition("dt", bucket).write.mode("overwrite").partitionBy("dt").text(folder)
    items.unpersist()
    storage.write_text(spark, marker, settings)
    return out, True
