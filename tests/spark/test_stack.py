"""The pinned stack works together: PySpark 4.0 pandas UDFs and Arrow transfers on
pyarrow 14 (the newest pyarrow petastorm 0.13.1 can use), Delta reads and writes."""
import os
from typing import Iterator

import pandas as pd
import pyarrow
import pyspark
import pytest
from pyspark.sql import functions as F

from helpers import make_config
from llmrec import tables
from llmrec.tables.schemas import STAGE_RUNS


def test_pins():
    assert pyspark.__version__.startswith("4.0.")
    assert pyarrow.__version__ == "14.0.2"


def test_iterator_pandas_udf_and_arrow_on_pinned_pyarrow(spark):
    @F.pandas_udf("array<int>")
    def spread(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        for ids in batches:
            yield ids.apply(lambda i: [int(i), int(i) * 2])

    df = spark.range(5000).select(spread("id").alias("a"))
    pdf = df.toPandas()  # Arrow path (spark.sql.execution.arrow.pyspark.enabled)
    assert len(pdf) == 5000 and list(pdf["a"][7]) == [7, 14]
    assert df.select(F.sum(F.element_at("a", 2))).first()[0] == 2 * sum(range(5000))


def test_delta_roundtrip_with_time_travel(spark, tmp_path):
    path = str(tmp_path / "t")
    spark.range(3).write.format("delta").save(path)
    spark.range(3, 5).write.format("delta").mode("append").save(path)
    assert spark.read.format("delta").load(path).count() == 5
    assert spark.read.format("delta").option("versionAsOf", 0).load(path).count() == 3


def test_local_sessions_use_small_tungsten_pages(spark):
    """Every broadcast hash relation built on the driver takes one Tungsten page, however
    small its table (by default heap / cores / 16: 32 MB at 2g): local sessions use 2 MB
    pages, so a long session does not fill its heap with them."""
    assert spark.sparkContext._jvm.org.apache.spark.SparkEnv.get().memoryManager().pageSizeBytes() == 2 << 20


def test_a_tables_version_and_rows_written_are_read_from_its_log(spark, tmp_path):
    """tables.version, rows_written and last_commit_changed read the Delta log's files
    instead of running DeltaTable.history's job: the same figures, checkpoints (and their
    Parquet and CRC files) not taken for commits."""
    from delta.tables import DeltaTable

    cfg = make_config(tmp_path)
    path = tables.path(cfg, STAGE_RUNS)
    with pytest.raises(FileNotFoundError, match="meta.stage_runs"):
        tables.version(spark, cfg, STAGE_RUNS)
    spark.range(2).write.format("delta").option("delta.checkpointInterval", "2").save(path)
    for _ in range(3):
        spark.range(2).write.format("delta").mode("append").save(path)
    assert any(name.endswith(".checkpoint.parquet") for name in os.listdir(os.path.join(path, "_delta_log")))
    assert tables.version(spark, cfg, STAGE_RUNS) == DeltaTable.forPath(spark, path).history(1).first()["version"] == 3
    # version 4: a MERGE updating the 4 rows of id 1 and inserting ids 2 and 3
    DeltaTable.forPath(spark, path).alias("t").merge(spark.range(1, 4).alias("s"), "t.id = s.id") \
        .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute()
    changed = {r.version: tables._rows_changed(r.operation, r.operationMetrics)
               for r in DeltaTable.forPath(spark, path).history().collect()}
    assert changed == {0: 2, 1: 2, 2: 2, 3: 2, 4: 6}
    assert tables.rows_written(spark, cfg, STAGE_RUNS, None) == 14
    assert tables.rows_written(spark, cfg, STAGE_RUNS, 2) == 8
    assert tables.rows_written(spark, cfg, STAGE_RUNS, 4) == 0
    assert tables.last_commit_changed(spark, cfg, STAGE_RUNS) == 6
