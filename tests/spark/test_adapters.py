"""Real-data adapters (lib/llmrec/data/adapters.py) on small hand-written dumps in the
real formats (tests/fixtures/, each with broken lines) and on recbole's ml-100k."""
from __future__ import annotations

import datetime as dt
import gzip
import json
import shutil
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from llmrec.data import adapters
from llmrec.data.adapters import read_source
from llmrec.tables.schemas import BRONZE

FIX = Path(__file__).resolve().parents[1] / "fixtures"
DAY = dt.date(2024, 3, 1)
QUARANTINE_COLUMNS = ["reason", "record", "source", "dt"]


def n_lines(path: Path, header: bool = False) -> int:
    """Records in a fixture file: non-blank lines, less the header."""
    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    return len(lines) - (1 if header else 0)


def iso(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def types(df_or_table) -> list[tuple[str, str]]:
    return [(f.name, f.dataType.simpleString()) for f in df_or_table.schema.fields]


def collect(frames: dict, kind: str,
            only: list[str] | None = None) -> dict[str, tuple[list[dict], list[dict]]]:
    """Every entity's (bronze rows, quarantine rows) as dicts, after checking the columns
    and types; one Spark job for all six frames (as JSON rows) keeps the tests quick."""
    assert set(frames) == {"events", "items", "reviews"}
    parts = []
    for entity in only or list(frames):
        good, bad = frames[entity]
        assert types(good) == types(BRONZE[entity])
        assert bad.columns == QUARANTINE_COLUMNS
        assert [f.dataType.simpleString() for f in bad.schema] == ["string"] * 3 + ["date"]
        for i, df in enumerate((good, bad)):
            parts.append(df.select(F.lit(entity).alias("entity"), F.lit(i).alias("side"), F.to_json(
                F.struct(*df.columns), {"ignoreNullFields": "false"}).alias("row")))
    rows = parts[0]
    for part in parts[1:]:
        rows = rows.unionByName(part)
    out = {entity: ([], []) for entity in only or frames}
    for r in rows.collect():
        row = json.loads(r["row"])
        assert row["source"] == kind and row["dt"] == DAY.isoformat()
        row["dt"] = DAY
        out[r["entity"]][r["side"]].append(row)
    return out


def by(rows: list[dict], key: str) -> dict:
    return {r[key]: r for r in rows}


# --------------------------------------------------------------------------- conversions

def test_value_conversions(spark):
    """Epoch text -> ISO UTC, prices, ratings: bad input passes through, never raises (ANSI)."""
    cases = [  # raw, epoch seconds, epoch ms, price, rating
        ("881250949", "1997-12-04T15:55:49Z", "1970-01-11T04:47:30Z", "881250949", "881250949"),
        (" 1600000000000 ", " 1600000000000 ", "2020-09-13T12:26:40Z", "1600000000000",
         "1600000000000"),
        ("5.0", "1970-01-01T00:00:05Z", "1970-01-01T00:00:00Z", "5.0", "5"),
        ("-1", "1969-12-31T23:59:59Z", "1969-12-31T23:59:59Z", "-1", "-1"),
        ("99999999999999999999", "99999999999999999999", "99999999999999999999",
         "99999999999999999999", "99999999999999999999"),
        ("1e40", "1e40", "1e40", "1e40", "1e40"),
        ("$1,299.00", "$1,299.00", "$1,299.00", "1299.00", "$1,299.00"),
        ("$ 12.99", "$ 12.99", "$ 12.99", "12.99", "$ 12.99"),
        ("4.5", "1970-01-01T00:00:04Z", "1970-01-01T00:00:00Z", "4.5", "4.5"),
        ("12.99 - 15.99", "12.99 - 15.99", "12.99 - 15.99", "12.99 - 15.99", "12.99 - 15.99"),
        ("   ", "   ", "   ", None, "   "),
        (None, None, None, None, None),
    ]
    df = spark.createDataFrame([(c[0],) for c in cases], "raw string")
    got = df.select("raw", adapters.iso_from_epoch(F.col("raw")).alias("s"),
                    adapters.iso_from_epoch(F.col("raw"), 1000).alias("ms"),
                    adapters.plain_price(F.col("raw")).alias("price"),
                    adapters.plain_rating(F.col("raw")).alias("rating")).collect()
    assert sorted(map(tuple, got), key=repr) == sorted(cases, key=repr)


# --------------------------------------------------------------------------- amazon

@pytest.fixture(scope="module")
def amazon2018(spark):
    d = FIX / "amazon2018"
    return collect(read_source(spark, "amazon", {"reviews": str(d / "reviews.json"),
                                                 "meta": str(d / "meta.json")}, DAY), "amazon")


@pytest.fixture(scope="module")
def amazon2023(spark, tmp_path_factory):
    """Read as the dumps are shipped: gzipped, the reviews as a folder of parts."""
    d, tmp = FIX / "amazon2023", tmp_path_factory.mktemp("amazon2023")
    (tmp / "reviews").mkdir()
    lines = (d / "reviews.jsonl").read_bytes().splitlines(keepends=True)
    for i, part in enumerate((lines[:2], lines[2:])):
        with gzip.open(tmp / "reviews" / f"part-{i}.jsonl.gz", "wb") as f:
            f.writelines(part)
    with gzip.open(tmp / "meta.jsonl.gz", "wb") as f:
        f.write((d / "meta.jsonl").read_bytes())
    paths = {"reviews": str(tmp / "reviews"), "meta": str(tmp / "meta.jsonl.gz")}
    return collect(read_source(spark, "amazon", paths, DAY), "amazon")


def test_amazon2018_reviews(amazon2018):
    good, bad = amazon2018["reviews"]
    assert len(good) == 5 and len(bad) == 1
    assert len(good) + len(bad) == n_lines(FIX / "amazon2018" / "reviews.json")
    assert bad[0]["reason"] == "malformed_record" and '"A5USER"' in bad[0]["record"]
    rows = {r["user_id"]: r for r in good}
    a1 = rows["A1USER"]
    assert a1["item_id"] == "B000TEST01" and a1["rating"] == "5"  # 5.0 -> "5"
    assert a1["title"] == "Five Stars" and a1["text"] == "Great kettle, boils fast."
    assert a1["review_time"] == iso(1252800000) == "2009-09-13T00:00:00Z"
    assert a1["review_id"].startswith("amz-") and len(a1["review_id"]) == 36
    # No unixReviewTime: the "MM d, yyyy" reviewTime is used.
    assert rows["A3USER"]["review_time"] == "2016-03-07T00:00:00Z"
    # Field-level problems pass through for the clean stage.
    assert rows["A4USER"]["rating"] == "five"
    anonymous = rows[None]
    assert anonymous["item_id"] == "B000TEST02"
    assert anonymous["review_time"] == "2020-09-13T12:26:40Z"
    assert len({r["review_id"] for r in good}) == 5


def test_amazon2018_verified_reviews_are_purchases(amazon2018):
    events, bad = amazon2018["events"]
    reviews = by(amazon2018["reviews"][0], "review_id")
    assert bad == [] and len(events) == 3
    assert {e["user_id"] for e in events} == {"A1USER", "A3USER", None}
    for e in events:
        assert e["event_type"] == "purchase" and e["event_id"].startswith("amz-p-")
        review = reviews["amz-" + e["event_id"][len("amz-p-"):]]
        assert (e["user_id"], e["item_id"], e["event_time"]) == \
            (review["user_id"], review["item_id"], review["review_time"])


def test_amazon2018_items(amazon2018):
    good, bad = amazon2018["items"]
    assert len(good) == 3 and len(bad) == 2
    assert len(good) + len(bad) == n_lines(FIX / "amazon2018" / "meta.json")
    assert {b["reason"] for b in bad} == {"malformed_record"}
    assert {b["record"] for b in bad} == {'{"asin": "B000TEST04", "title": "Broken quote}',
                                          '["not", "an", "object"]'}
    items = by(good, "item_id")
    kettle = items["B000TEST01"]
    assert kettle["title"] == "Steel Kettle 1.7L" and kettle["brand"] == "Boilco"
    assert kettle["price"] == "1299.00"  # "$1,299.00"
    assert kettle["category"] == "Home & Kitchen > Kitchen & Dining > Kettles"
    assert kettle["description"] == "A fast kettle. Auto shut-off."
    assert kettle["launch_time"] == "2013-06-19T00:00:00Z"
    assert json.loads(kettle["attributes"]) == {
        "Item Weight:": "1.2 pounds", "features": "1.7 litre | Steel", "date": "June 19, 2013"}
    teapot = items["B000TEST02"]
    assert teapot["price"] == "$12.99 - $15.99"  # unreadable: passed through
    assert teapot["category"] == "Amazon Home"  # empty category list: main_cat
    assert teapot["description"] is None and teapot["attributes"] is None
    mug = items["B000TEST03"]
    assert mug["price"] is None and mug["category"] is None  # "" price is missing


def test_amazon2023(amazon2023):
    reviews, bad = amazon2023["reviews"]
    assert len(reviews) == 3 and len(bad) == 2
    assert len(reviews) + len(bad) == n_lines(FIX / "amazon2023" / "reviews.jsonl")
    assert {b["reason"] for b in bad} == {"malformed_record"}
    assert "not json at all" in {b["record"] for b in bad}
    rows = by(reviews, "user_id")
    r1 = rows["AGUSER1"]
    assert r1["item_id"] == "B0PARENT1"  # parent_asin, not asin
    assert (r1["rating"], r1["title"], r1["text"]) == ("5", "Love it", "Works great on dry skin.")
    assert r1["review_time"] == iso(1588615855) == "2020-05-04T18:10:55Z"  # epoch ms
    assert rows["AGUSER2"]["review_time"] == "2020-09-13T12:26:40Z"
    assert rows["AGUSER3"]["review_time"] == "not-a-time"  # passed through

    events, _ = amazon2023["events"]
    assert sorted((e["user_id"], e["event_type"], e["event_time"]) for e in events) == [
        ("AGUSER1", "purchase", "2020-05-04T18:10:55Z"), ("AGUSER3", "purchase", "not-a-time")]

    items, bad = amazon2023["items"]
    assert len(items) == 2 and len(bad) == 1 and bad[0]["reason"] == "malformed_record"
    assert '"B0PARENT3"' in bad[0]["record"]
    items = by(items, "item_id")
    serum = items["B0PARENT1"]
    assert serum["price"] == "24.5" and serum["brand"] == "Rosy"  # number price; store
    assert serum["category"] == "Beauty > Skin Care > Serums"
    assert serum["description"] == "Hydrates skin. Made in France."
    assert serum["launch_time"] == "2015-03-19T00:00:00Z"  # details' Date First Available
    assert json.loads(serum["attributes"]) == {
        "Brand": "Rosy", "Item Volume": "30 Milliliters", "Date First Available": "March 19, 2015",
        "Rank": '{"Beauty":1234}', "features": "Vegan | 30 ml"}
    balm = items["B0PARENT2"]
    assert balm["price"] is None and balm["category"] == "All Beauty"  # main_category
    assert balm["attributes"] is None and balm["brand"] == "Balmy"


# --------------------------------------------------------------------------- retailrocket

def rr_paths(tree: bool = True) -> dict[str, str]:
    d = FIX / "retailrocket"
    paths = {"events": str(d / "events.csv"),
             # a comma-separated list, as in the config
             "item_properties": f"{d / 'item_properties_part1.csv'}, "
                                f"{d / 'item_properties_part2.csv'}"}
    if tree:
        paths["category_tree"] = str(d / "category_tree.csv")
    return paths


@pytest.fixture(scope="module")
def retailrocket(spark):
    return collect(read_source(spark, "retailrocket", rr_paths(), DAY), "retailrocket")


def test_retailrocket_events(retailrocket):
    events, bad = retailrocket["events"]
    assert len(events) == 7 and len(bad) == 3
    assert len(events) + len(bad) == n_lines(FIX / "retailrocket" / "events.csv", header=True)
    assert {b["reason"] for b in bad} == {"malformed_record"}
    assert {b["record"] for b in bad} == {"1433221332117,257597,view",
                                          "garbage line without commas",
                                          "1433226000000,111016,view,100,,extra"}
    assert "visitorid" not in {e["user_id"] for e in events}  # the header is no event
    rows = {(e["user_id"], e["item_id"], e["event_type"]): e for e in events}
    view = rows[("257597", "355908", "view")]
    assert view["event_time"] == iso(1433221332) == "2015-06-02T05:02:12Z"
    assert view["event_id"].startswith("rr-") and len(view["event_id"]) == 35
    assert ("111016", "100", "cart") in rows  # addtocart
    assert ("257597", "248676", "cart") in rows  # AddToCart
    assert rows[("483717", "355908", "purchase")]["event_time"] == "2015-06-02T05:17:56Z"
    assert (None, "100", "view") in rows  # empty visitorid: null, passed through
    assert ("111016", "100", "click") in rows  # unknown type: passed through
    assert len({e["event_id"] for e in events}) == 7
    assert retailrocket["reviews"] == ([], [])


def test_retailrocket_items(retailrocket):
    items, bad = retailrocket["items"]
    assert len(items) == 3
    reasons = sorted((b["reason"], b["record"]) for b in bad)
    assert reasons == [("bad_timestamp", "notatime,100,888,5"),
                       ("malformed_record", "1433646000000,100"),
                       ("malformed_record", "bad,line,here"),  # from the category tree
                       ("null_item_id", "1433646000000,,888,5")]
    n_props = n_lines(FIX / "retailrocket" / "item_properties_part1.csv", header=True) + \
        n_lines(FIX / "retailrocket" / "item_properties_part2.csv", header=True)
    assert n_props == 13  # 10 used + 3 quarantined
    items = by(items, "item_id")
    item = items["355908"]
    assert item["title"] == "Item 355908" and item["price"] is None and item["brand"] is None
    # Latest categoryid (1277, not 1338), its path from the tree, root first.
    assert item["category"] == "cat 140 > cat 312 > cat 1277"
    assert json.loads(item["attributes"]) == {
        "available": "0", "categoryid": "1277", "6": '"quoted"', "790": "n5760.000"}
    assert list(json.loads(item["attributes"]))[:2] == ["available", "categoryid"]
    assert item["launch_time"] == iso(1435460400) == "2015-06-28T03:00:00Z"  # first property
    assert items["248676"]["category"] == "cat 140 > cat 491"
    assert items["248676"]["launch_time"] == "2015-05-10T03:00:00Z"
    assert items["100"]["category"] == "cat 9999"  # not in the tree
    assert json.loads(items["100"]["attributes"]) == {"categoryid": "9999",
                                                      "6": "value with, a comma"}


def test_retailrocket_without_tree_and_property_cap(spark, tmp_path):
    props = tmp_path / "props.csv"
    rows = ["timestamp,itemid,property,value", "1000,7,categoryid,55", "2000,7,available,1"]
    rows += [f"{3000 + p},7,{p:03d},v{p}" for p in range(30)]
    props.write_text("\n".join(rows) + "\n")
    paths = rr_paths(tree=False)
    paths["item_properties"] += f",{props}"
    frames = read_source(spark, "retailrocket", paths, DAY)
    items, bad = collect(frames, "retailrocket", only=["items"])["items"]
    items = by(items, "item_id")
    assert items["355908"]["category"] == "cat 1277" and items["248676"]["category"] == "cat 491"
    attrs = json.loads(items["7"]["attributes"])
    assert len(attrs) == 20
    assert list(attrs) == ["available", "categoryid"] + [f"{p:03d}" for p in range(18)]
    assert items["7"]["launch_time"] == "1970-01-01T00:00:01Z"
    assert len(bad) == 3  # the tree is not read: only the property lines


# --------------------------------------------------------------------------- movielens

def test_movielens_classic(spark):
    out = collect(read_source(spark, "movielens", {"dir": str(FIX / "movielens")}, DAY),
                  "movielens")
    assert out["events"] == ([], [])
    reviews, bad = out["reviews"]
    assert len(reviews) == 4 and len(bad) == 1
    assert len(reviews) + len(bad) == n_lines(FIX / "movielens" / "u.data")
    assert bad[0] == {"reason": "malformed_record", "record": "3\t20\t2", "source": "movielens",
                      "dt": DAY}
    r = by(reviews, "review_id")["ml-1-10-881250949"]
    assert (r["user_id"], r["item_id"], r["rating"]) == ("1", "10", "4")
    assert r["title"] is None and r["text"] is None
    assert r["review_time"] == iso(881250949) == "1997-12-04T15:55:49Z"
    assert by(reviews, "review_id")["ml-2-30-891717800"]["rating"] == "x"

    items, bad = out["items"]
    assert len(items) == 3 and len(bad) == 1
    assert len(items) + len(bad) == n_lines(FIX / "movielens" / "u.item")
    assert bad[0]["reason"] == "malformed_record" and bad[0]["record"].startswith("40|")
    items = by(items, "item_id")
    cafe = items["10"]
    assert cafe["title"] == "Caf\u00e9 Dreams (1994)"  # latin-1 decoded
    assert cafe["category"] == "Movies > Comedy"
    assert cafe["description"] == "Genres: Comedy, Drama, Romance. Released 1994."
    assert json.loads(cafe["attributes"]) == {"genres": "Comedy|Drama|Romance", "year": "1994"}
    assert cafe["brand"] is None and cafe["price"] is None
    # A release date is no catalog launch (and often older than clean's sane range).
    assert {i["launch_time"] for i in items.values()} == {None}
    assert items["20"]["category"] == "Movies > Action"
    assert items["20"]["description"] == "Genres: Action, Sci-Fi, Thriller. Released 1997."
    lost = items["30"]
    assert lost["description"] == "Genres: unknown."
    assert json.loads(lost["attributes"]) == {"genres": "unknown"}


def test_movielens_recbole_ml100k(spark):
    pytest.importorskip("recbole")
    frames = read_source(spark, "movielens", {}, DAY)  # default: recbole's ml-100k
    reviews, bad_reviews = frames["reviews"]
    items, bad_items = frames["items"]
    assert types(reviews) == types(BRONZE["reviews"]) and types(items) == types(BRONZE["items"])
    # One job: the four counts and the two rows looked at.
    def part(df, name, pick="false"):
        row = F.when(F.expr(pick), F.to_json(F.struct("*")))
        return df.select(F.lit(name).alias("part"), row.alias("row"))

    summary = part(reviews, "reviews", "review_id = 'ml-196-242-881250949'") \
        .unionByName(part(bad_reviews, "bad_reviews")) \
        .unionByName(part(items, "items", "item_id = '1'")) \
        .unionByName(part(bad_items, "bad_items")) \
        .groupBy("part").agg(F.count("*").alias("n"), F.max("row").alias("row")).collect()
    summary = {r["part"]: r for r in summary}
    assert {p: r["n"] for p, r in summary.items()} == {"reviews": 100_000, "items": 1682}
    review, toy = json.loads(summary["reviews"]["row"]), json.loads(summary["items"]["row"])
    assert (review["user_id"], review["item_id"], review["rating"]) == ("196", "242", "3")
    assert review["review_time"] == "1997-12-04T15:55:49Z"
    assert toy["title"] == "Toy Story" and toy["category"] == "Movies > Animation"
    assert toy["description"] == "Genres: Animation, Children's, Comedy. Released 1995."


# --------------------------------------------------------------------------- errors

def test_unknown_kind_and_missing_keys(spark):
    with pytest.raises(ValueError, match="unknown source kind 'imdb'"):
        read_source(spark, "imdb", {}, DAY)
    with pytest.raises(ValueError, match="amazon: missing path key.*meta"):
        read_source(spark, "amazon", {"reviews": str(FIX / "amazon2018" / "reviews.json")}, DAY)
    with pytest.raises(ValueError, match="retailrocket: missing path key.*item_properties"):
        read_source(spark, "retailrocket", {"events": str(FIX / "retailrocket" / "events.csv")},
                    DAY)


def test_missing_paths(spark, tmp_path):
    gone = str(tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError, match="nope.json"):
        read_source(spark, "amazon", {"reviews": gone, "meta": gone}, DAY)
    paths = rr_paths()
    paths["item_properties"] += f",{tmp_path / 'part9.csv'}"
    with pytest.raises(FileNotFoundError, match="part9.csv"):
        read_source(spark, "retailrocket", paths, DAY)
    with pytest.raises(FileNotFoundError, match="no-such-dir"):
        read_source(spark, "movielens", {"dir": str(tmp_path / "no-such-dir")}, DAY)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="u.data"):
        read_source(spark, "movielens", {"dir": str(tmp_path / "empty")}, DAY)
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(FIX / "movielens" / "u.data", half / "u.data")
    with pytest.raises(FileNotFoundError, match="u.item"):
        read_source(spark, "movielens", {"dir": str(half)}, DAY)


def test_movielens_without_recbole_says_how_to_install(spark, monkeypatch):
    monkeypatch.setattr(adapters.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps recbole"):
        read_source(spark, "movielens", {}, DAY)


def test_amazon_unknown_naming(spark, tmp_path):
    odd = tmp_path / "odd.json"
    odd.write_text('{"foo": 1, "bar": 2}\n')
    with pytest.raises(ValueError, match="neither the Amazon 2018.*saw bar, foo"):
        read_source(spark, "amazon", {"reviews": str(odd), "meta": str(odd)}, DAY)
