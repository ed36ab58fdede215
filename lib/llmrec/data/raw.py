"""llmrec's own raw format (what the synthetic shop writes): JSON lines under
raw/<entity>/dt=YYYY-MM-DD/, with the bronze columns as fields.

A line that is not a JSON object goes to quarantine as `malformed_record`, whole.
"""
from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from llmrec.conf import join
from llmrec.tables.schemas import BRONZE

CORRUPT = "_corrupt_record"


def list_dates(spark: SparkSession, folder: str) -> list[dt.date]:
    """The dt=YYYY-MM-DD partitions under a folder, on any Hadoop file system."""
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(folder)
    fs = hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if not fs.exists(hpath):
        return []
    dates = []
    for status in fs.listStatus(hpath):
        name = status.getPath().getName()
        if status.isDirectory() and name.startswith("dt="):
            try:
                dates.append(dt.date.fromisoformat(name[3:]))
            except ValueError:
                continue  # not a partition folder of ours
    return sorted(dates)


def json_schema(entity: str) -> StructType:
    fields = [f.name for f in BRONZE[entity].schema.fields if f.name not in ("source", "dt")]
    return StructType([StructField(n, StringType()) for n in fields + [CORRUPT]])


def read_days(spark: SparkSession, raw_root: str, entity: str, days: list[dt.date],
              source: str = "synthetic") -> tuple[DataFrame, DataFrame, tuple[DataFrame]]:
    """Returns (bronze rows, malformed rows as quarantine candidates, (the cached parse
    both are drawn from: unpersist it when they are written)) for some days."""
    folder = join(raw_root, entity)
    paths = [join(folder, f"dt={day.isoformat()}") for day in days]
    df = spark.read.schema(json_schema(entity)).option("basePath", folder) \
        .option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", CORRUPT) \
        .json(paths).withColumn("source", F.lit(source)).withColumn("dt", F.col("dt").cast("date"))
    # Spark refuses queries on the corrupt column alone over raw JSON: cache the parse.
    df = df.cache()
    good = df.where(F.col(CORRUPT).isNull()).drop(CORRUPT)
    bad = df.where(F.col(CORRUPT).isNotNull()).select(
        F.lit("malformed_record").alias("reason"), F.col(CORRUPT).alias("record"), "source", "dt")
    return good, bad, (df,)
