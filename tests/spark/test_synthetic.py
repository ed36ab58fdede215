"""The synthetic shop: deterministic, sized as asked, learnable structure, and every
kind of injected bad row is caught by ingest + clean with the counts adding up."""
import hashlib

import pytest
from pyspark.sql import functions as F

from helpers import make_config
from llmrec import tables
from llmrec.data import clean, ingest, synthetic
from llmrec.tables.schemas import QUARANTINE, SILVER_EVENTS, SILVER_ITEMS, SILVER_REVIEWS

SHOP = ["synthetic.users=300", "synthetic.items=120", "synthetic.days=30", "synthetic.events=12000",
        "synthetic.bad_row_rate=0.05", "synthetic.cold_item_fraction=0.2"]


def raw_digest(spark, cfg, entity):
    lines = spark.read.text(f"{cfg.raw_root}/{entity}").select(F.concat_ws("|", "dt", "value").alias("v"))
    return hashlib.sha256("\n".join(sorted(r.v for r in lines.collect())).encode()).hexdigest(), lines.count()


@pytest.fixture(scope="module")
def shop(spark, tmp_path_factory):
    cfg = make_config(tmp_path_factory.mktemp("shop"), *SHOP)
    synthetic.generate(spark, cfg)
    ingested = {c.entity: c for c in ingest.run(spark, cfg)}
    cleaned = {c.entity: c for c in clean.run(spark, cfg)}
    return cfg, ingested, cleaned


def test_deterministic_whatever_the_partitioning(spark, shop, tmp_path):
    cfg = shop[0]
    other = make_config(tmp_path, *SHOP, "synthetic.files_per_day=3")
    spark.conf.set("spark.sql.shuffle.partitions", "7")
    try:
        synthetic.generate(spark, other)
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", "4")
    for entity in ("items", "events", "reviews"):
        assert raw_digest(spark, cfg, entity) == raw_digest(spark, other, entity)
    # the same settings again: the shop on disk is kept, not rewritten
    assert synthetic.generate(spark, cfg)[1] is False
    # a different seed is a different shop
    third = make_config(tmp_path / "seed", *SHOP, "synthetic.seed=7", "synthetic.bad_row_rate=0")
    synthetic.generate(spark, third)
    assert raw_digest(spark, third, "events") != raw_digest(spark, cfg, "events")


def test_size_and_cold_start(spark, shop):
    cfg, ingested, _ = shop
    assert 0.85 * 12000 <= ingested["events"].rows_in <= 1.15 * 12000
    items = tables.read(spark, cfg, SILVER_ITEMS)
    assert items.count() == 120  # bad item rows are extra copies: the catalog stays whole
    late = items.where(F.col("launch_ts") > F.lit("2024-01-20").cast("timestamp")).count()
    assert late == 24  # cold_item_fraction 0.2 of 120 launch in the last fifth
    events = tables.read(spark, cfg, SILVER_EVENTS).join(items.select("item_id", "launch_ts"), "item_id")
    assert events.where(F.col("event_ts") < F.col("launch_ts")).count() == 0


def test_structure_is_learnable(spark, shop):
    cfg = shop[0]
    events = tables.read(spark, cfg, SILVER_EVENTS).join(
        tables.read(spark, cfg, SILVER_ITEMS).select("item_id", "category", "brand"), "item_id")
    # users concentrate on a favourite category (75% of sessions) far above 1/10 chance
    per_user = events.groupBy("user_id", "category").count()
    top_share = per_user.groupBy("user_id").agg((F.max("count") / F.sum("count")).alias("s")) \
        .agg(F.avg("s")).first()[0]
    assert top_share > 0.5
    funnel = {r.event_type: r["count"] for r in events.groupBy("event_type").count().collect()}
    assert funnel["view"] > funnel["cart"] > funnel["purchase"] > 0
    reviews = tables.read(spark, cfg, SILVER_REVIEWS)
    five = reviews.where("rating = 5").first()
    one = reviews.where("rating <= 2").first()
    assert "would buy again" in five.text and ("poor" in one.text or "broke" in one.text)


def test_every_bad_kind_is_caught_and_counts_add_up(spark, shop):
    cfg, ingested, cleaned = shop
    reasons = {r.reason for r in tables.read(spark, cfg, QUARANTINE).select("reason").distinct().collect()}
    expected = {k for kinds in synthetic.BAD_KINDS.values() for k in kinds if k != "duplicate"}
    assert expected <= reasons
    for entity in ("items", "events", "reviews"):
        raw_lines = spark.read.text(f"{cfg.raw_root}/{entity}").count()
        i, c = ingested[entity], cleaned[entity]
        assert raw_lines == i.rows_in == i.rows_out + i.quarantined
        assert i.rows_out == c.rows_in == c.rows_out + c.quarantined + c.duplicates
        assert c.duplicates > 0
    assert tables.read(spark, cfg, SILVER_EVENTS).groupBy("event_id").count().where("count > 1").count() == 0
