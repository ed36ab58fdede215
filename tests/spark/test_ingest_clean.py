"""Ingest and clean on hand-written raw files: every kind of bad row lands in quarantine
with its reason, counts add up, reruns change nothing, a new day leaves old days alone."""
import datetime as dt
import json

import pytest
from pyspark.sql import functions as F

from helpers import make_config

from llmrec import tables
from llmrec.data import clean, ingest
from llmrec.tables.schemas import BRONZE_EVENTS, QUARANTINE, SILVER_EVENTS, SILVER_ITEMS, SILVER_REVIEWS

D1, D2 = dt.date(2024, 3, 1), dt.date(2024, 3, 2)


def item(i, **kw):
    row = {"item_id": f"I{i}", "title": f"Item {i}", "description": "d", "category": "C",
           "brand": "B", "price": "10.50", "attributes": '{"color":"red"}',
           "launch_time": "2024-03-01T00:00:00Z"}
    row.update(kw)
    return row


def event(eid, **kw):
    row = {"event_id": eid, "user_id": "U1", "item_id": "I1", "event_type": "view",
           "event_time": "2024-03-01T10:00:00Z"}
    row.update(kw)
    return row


def review(rid, **kw):
    row = {"review_id": rid, "user_id": "U1", "item_id": "I1", "rating": "5", "title": "t",
           "text": "great", "review_time": "2024-03-01T12:00:00+01:00"}
    row.update(kw)
    return row


def write_raw(cfg, entity, day, rows):
    folder = f"{cfg.raw_root}/{entity}/dt={day.isoformat()}"
    import os

    os.makedirs(folder, exist_ok=True)
    with open(f"{folder}/part-0.json", "w") as fh:
        for row in rows:
            fh.write(row if isinstance(row, str) else json.dumps(row))
            fh.write("\n")


def quarantine_reasons(spark, cfg, entity, stage):
    rows = tables.read(spark, cfg, QUARANTINE).where(
        (F.col("entity") == entity) & (F.col("stage") == stage)).groupBy("reason").count().collect()
    return {r["reason"]: r["count"] for r in rows}


def build_day1(cfg):
    write_raw(cfg, "items", D1, [
        item(1), item(2), item(3, price="$12"), item(4, price="-3"), item(5, title=None),
        item(6, launch_time="yesterday"), item(7, attributes="{not json"), item(2),  # dup
        item(9, item_id={"id": 9}),  # an object for an id: ingest keeps it as its JSON text
        '{"item_id": "I8", "title": ',  # malformed line
    ])
    write_raw(cfg, "events", D1, [
        event("e1"), event("e2", item_id="I2", event_type="purchase"),
        event("e1"),  # exact duplicate
        event("e3", user_id=None), event("e4", user_id="  "), event("e5", item_id="I404"),
        event("e6", event_type="wishlist"), event("e7", event_time="2024-13-45T99:61:00Z"),
        event("e8", event_time="1970-01-01T00:00:00Z"), event(None),
        event("e9", item_id=None), event("e10", event_time="2024-03-01 11:00:00"),
        "not json at all",
        # hostile ids: an object, 10,000 characters, a control character, an array, a
        # newline in the key; a number is fine (real dumps have them) and reaches silver
        event("e11", user_id={"x": 1}), event("e12", user_id="U" * 10_000), event("e13", user_id="U\x071"),
        event("e14", item_id=["I1"]), event("e\n15"), event("e16", user_id=12345),
    ])
    write_raw(cfg, "reviews", D1, [
        review("r1"), review("r2", rating="7"), review("r3", rating="4.5"),
        review("r4", rating="x"), review("r5", item_id="I3"),  # I3 quarantined: unknown
        review("r6", review_time=None), review("r1"),
    ])


@pytest.fixture(scope="module")
def day1(spark, tmp_path_factory):
    """Day 1 ingested and cleaned once; the tests below read it, the last one extends it."""
    cfg = make_config(tmp_path_factory.mktemp("day1"))
    build_day1(cfg)
    ingested = {c.entity: c for c in ingest.run(spark, cfg)}
    cleaned = {c.entity: c for c in clean.run(spark, cfg)}
    return cfg, ingested, cleaned


def test_bad_rows_reasons_and_counts_add_up(spark, day1):
    cfg, ingested, cleaned = day1
    assert quarantine_reasons(spark, cfg, "items", "ingest") == {"malformed_record": 1}
    assert quarantine_reasons(spark, cfg, "events", "ingest") == {"malformed_record": 1}
    assert ingested["events"].rows_in == 19 and ingested["events"].rows_out == 18
    assert ingested["items"].rows_in == 10

    assert quarantine_reasons(spark, cfg, "items", "clean") == {
        "bad_price": 2, "null_title": 1, "bad_timestamp": 1, "bad_attributes": 1, "bad_item_id": 1}
    assert quarantine_reasons(spark, cfg, "events", "clean") == {
        "null_user_id": 2, "unknown_item": 1, "bad_event_type": 1, "bad_timestamp": 2,
        "null_event_id": 1, "null_item_id": 1, "bad_user_id": 3, "bad_item_id": 1, "bad_event_id": 1}
    assert quarantine_reasons(spark, cfg, "reviews", "clean") == {
        "bad_rating": 3, "unknown_item": 1, "bad_timestamp": 1}

    silver_events = tables.read(spark, cfg, SILVER_EVENTS)
    assert sorted((r.event_id, r.user_id) for r in silver_events.collect()) == [
        ("e1", "U1"), ("e10", "U1"), ("e16", "12345"), ("e2", "U1")]
    assert sorted(r.item_id for r in tables.read(spark, cfg, SILVER_ITEMS).collect()) == ["I1", "I2"]
    (r1,) = tables.read(spark, cfg, SILVER_REVIEWS).collect()
    assert r1.rating == 5 and r1.review_ts == dt.datetime(2024, 3, 1, 11, 0)  # +01:00 -> UTC

    # input = silver + quarantine + duplicates removed, per entity
    for c in cleaned.values():
        assert c.rows_in == c.rows_out + c.quarantined + c.duplicates
    assert cleaned["events"].duplicates == 1 and cleaned["events"].rows_out == 4
    assert cleaned["items"].duplicates == 1 and cleaned["reviews"].duplicates == 1

    # the quarantined record keeps the raw row, so nothing is lost
    rec = tables.read(spark, cfg, QUARANTINE).where("reason = 'unknown_item' AND entity = 'events'") \
        .first().record
    assert json.loads(rec)["item_id"] == "I404"


def test_missing_day_is_a_clear_error(spark, day1):
    with pytest.raises(FileNotFoundError, match="no input for day"):
        ingest.run(spark, day1[0], days=[dt.date(2030, 1, 1)])
    with pytest.raises(FileNotFoundError, match="no input for day"):
        clean.run(spark, day1[0], days=[dt.date(2030, 1, 1)])


def bronze_files(spark, cfg, day):
    return set(tables.read(spark, cfg, BRONZE_EVENTS).where(F.col("dt") == day)
               .select(F.input_file_name()).distinct().toPandas().iloc[:, 0])


def test_rerun_is_idempotent_and_new_day_leaves_old_days(spark, day1):
    cfg = day1[0]
    before = {t.qualified: tables.read(spark, cfg, t).count()
              for t in (BRONZE_EVENTS, SILVER_EVENTS, QUARANTINE)}

    assert ingest.run(spark, cfg) == [] and clean.run(spark, cfg) == []  # nothing new
    ingest.run(spark, cfg, days=[D1])  # forced rerun of the same day
    clean.run(spark, cfg, days=[D1])
    after = {t.qualified: tables.read(spark, cfg, t).count()
             for t in (BRONZE_EVENTS, SILVER_EVENTS, QUARANTINE)}
    assert after == before

    day1_files = bronze_files(spark, cfg, D1)
    write_raw(cfg, "events", D2, [event("e20", event_time="2024-03-02T09:00:00Z"),
                                  event("e1"),  # already in silver from day 1
                                  event("e21", item_id="I404")])
    (batch,) = ingest.run(spark, cfg)
    assert batch.entity == "events" and batch.days == [D2]
    (cleaned,) = clean.run(spark, cfg)
    assert cleaned.rows_out == 1 and cleaned.duplicates == 1 and cleaned.quarantined == 1
    assert bronze_files(spark, cfg, D1) == day1_files  # day 1's files were not rewritten
    ids = [r.event_id for r in tables.read(spark, cfg, SILVER_EVENTS).collect()]
    assert sorted(ids) == ["e1", "e10", "e16", "e2", "e20"]
    assert quarantine_reasons(spark, cfg, "events", "clean")["unknown_item"] == 2
