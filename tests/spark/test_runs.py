"""Pipeline runs: resume skips exactly the stages whose outputs are complete for the same
inputs and config; every stage run is recorded with rows in/out, quarantine and time; the
run summary JSON says what happened, also when a stage fails."""
import json
from argparse import Namespace

import pytest
from pyspark.sql import functions as F

from helpers import SHOP, fresh, make_config
from llmrec import runs, stages, tables
from llmrec.tables.schemas import (
    BRONZE, BRONZE_EVENTS, INTERACTIONS, QUARANTINE, SILVER_EVENTS, SILVER_ITEMS, SILVER_REVIEWS, STAGE_RUNS,
)

DATA = ["generate", "ingest", "clean", "interactions"]
EXAMPLES_STAGE = stages.BY_NAME["examples"]


def pipeline(spark, cfg, **kw):
    args = Namespace(stages=kw.pop("stages", DATA), resume=kw.pop("resume", True), force=False)
    result = runs.pipeline(spark, cfg, args)
    return result, json.loads(open(result["summary"]).read())


def versions(spark, cfg, *group):
    return {t.qualified: tables.version(spark, cfg, t) for t in group}


def test_resume_skips_complete_stages_and_reruns_changed_ones(spark, shop, tmp_path):
    # the shared shop was built by the pipeline: its run summary and stage records
    cfg = fresh(shop, tmp_path)
    (first,) = [json.loads(p.read_text()) for p in (tmp_path / "root" / "runs").glob("*.json")]
    assert first["status"] == "done" and [s["stage"] for s in first["stages"]] == DATA
    by_stage = {s["stage"]: s for s in first["stages"]}
    # the counters: what the commits wrote, what went to quarantine, what the stage read
    assert by_stage["clean"]["rows_out"] == sum(tables.read(spark, cfg, t).count()
                                                for t in (SILVER_EVENTS, SILVER_ITEMS, SILVER_REVIEWS))
    bronze = sum(tables.read(spark, cfg, t).count() for t in BRONZE.values())
    assert by_stage["clean"]["rows_in"] == by_stage["ingest"]["rows_out"] == bronze > 0
    quarantined = tables.read(spark, cfg, QUARANTINE)
    assert by_stage["ingest"]["quarantined"] == quarantined.where(F.col("stage") == "ingest").count()
    assert by_stage["clean"]["quarantined"] == quarantined.where(F.col("stage") == "clean").count()
    assert by_stage["interactions"]["rows_out"] > tables.read(spark, cfg, INTERACTIONS).count() > 0
    before = versions(spark, cfg, BRONZE_EVENTS, SILVER_EVENTS, INTERACTIONS)

    # a copy of the shop resumes as the shop would: nothing to do
    again, summary = pipeline(spark, cfg)
    assert again["stages"] == {s: "skipped" for s in DATA}
    assert versions(spark, cfg, BRONZE_EVENTS, SILVER_EVENTS, INTERACTIONS) == before

    # a config change that shapes interactions (not the raw data): ingest, clean kept
    changed = fresh_config(tmp_path / "root", "interactions.half_life_days=7")
    third, _ = pipeline(spark, changed)
    assert third["stages"] == {"generate": "skipped", "ingest": "skipped", "clean": "done",
                               "interactions": "done"}

    # a table changed outside the pipeline: the stage that owns it runs again
    extra = tables.read(spark, changed, INTERACTIONS).limit(1).withColumn("weight", F.lit(99.0))
    tables.append(extra, changed, INTERACTIONS)
    fourth, _ = pipeline(spark, changed, stages=["clean", "interactions"])
    assert fourth["stages"] == {"clean": "skipped", "interactions": "done"}
    assert tables.read(spark, changed, INTERACTIONS).where("weight = 99.0").count() == 0

    # --no-resume runs what it is given; the record table has every run, skipped ones too
    fifth, _ = pipeline(spark, changed, stages=["generate"], resume=False)
    assert fifth["stages"] == {"generate": "done"}
    recorded = tables.read(spark, changed, STAGE_RUNS).groupBy("status").count().collect()
    assert {r["status"]: r["count"] for r in recorded} == {"done": 4 + 2 + 1 + 1, "skipped": 4 + 2 + 1}


def fresh_config(root, *overrides):
    return make_config(root, *SHOP, *overrides)


def test_failed_stage_is_recorded_and_summarised(spark, tmp_path):
    small = make_config(tmp_path / "root", *SHOP, "synthetic.events=600", "synthetic.bad_row_rate=0.05")
    # examples straight after ingest: its input tables do not exist
    with pytest.raises(FileNotFoundError, match="not found"):
        pipeline(spark, small, stages=["generate", "ingest", "examples"])
    (run_id,) = [r.run_id for r in tables.read(spark, small, STAGE_RUNS).select("run_id").distinct().collect()]
    summary = json.loads(open(f"{small.storage.root}/runs/{run_id}.json").read())
    assert summary["status"] == "failed" and summary["error"].startswith("FileNotFoundError: table ")
    assert [(s["stage"], s["status"]) for s in summary["stages"]] == \
        [("generate", "done"), ("ingest", "done"), ("examples", "failed")]
    quarantined = tables.read(spark, small, QUARANTINE).count()
    assert summary["stages"][1]["quarantined"] == quarantined > 0
    assert summary["stages"][-1]["error"] == summary["error"]
    # the done stage is kept by the next run; the failed one is not taken as done
    assert pipeline(spark, small, stages=["generate"])[0]["stages"] == {"generate": "skipped"}
    args = Namespace(stages=["examples"], resume=True, force=False)
    assert not runs.is_done(spark, small, EXAMPLES_STAGE, runs.fingerprint(spark, small, EXAMPLES_STAGE, args))


def test_failures_are_one_line_with_their_cause(spark):
    """A UDF's exception: the line is the Python error it raised, not Spark's 'see the
    stack trace below'; a Java error: its root cause."""
    from pyspark.sql.functions import udf

    from llmrec.errors import describe

    @udf("int")
    def broken(x):
        raise RuntimeError(f"tensor size {x} does not match")

    with pytest.raises(Exception) as raised:
        spark.range(1).select(broken("id")).collect()
    assert describe(raised.value) == "PythonException in a Spark task: RuntimeError: tensor size 0 does not match"
    with pytest.raises(Exception) as raised:
        spark.read.parquet("/nonexistent/llmrec/table").collect()
    line = describe(raised.value)
    assert "\n" not in line and "/nonexistent/llmrec/table" in line
