"""The one SparkSession factory: local, cluster (spark-submit) and Databricks.

local      builds a session with Delta's jars from the project's .jars/ folder (resolved
           by Maven in bin/setup) and sensible laptop defaults;
cluster    takes whatever spark-submit configured (master, --packages) and only adds
           Delta's SQL extension and catalog if they are missing;
databricks uses the running session and changes nothing: Delta is built in.
"""
from __future__ import annotations

import glob
import os
import sys
from pathlib import Path

from llmrec.conf import Config

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"


def project_root() -> Path:
    return Path(__file__).resolve().parents[2]


def delta_jars() -> list[str]:
    """Delta's jars for local mode: $LLMREC_JARS or <project>/.jars."""
    folder = os.environ.get("LLMREC_JARS") or str(project_root() / ".jars")
    jars = sorted(glob.glob(os.path.join(folder, "*.jar")))
    if not any("delta-spark" in os.path.basename(j) for j in jars):
        raise RuntimeError(
            f"Delta jars not found in {folder}: run bin/setup (it resolves them with Maven) "
            "or set LLMREC_JARS")
    return jars


# SQL settings a running session takes, so they hold on Databricks too (whose session
# is attached to, not built): Arrow batches to Python UDFs bounded in bytes as well as
# rows, since each row of the top-K's pairs holds two whole blocks of vectors.
RUNTIME = {"spark.sql.execution.arrow.maxBytesPerBatch": str(64 << 20)}


def get_session(cfg: Config):
    """Returns the SparkSession for the configured mode, creating it if needed."""
    from pyspark.sql import SparkSession

    mode = cfg.spark.mode
    if mode == "databricks":
        # A notebook has an active session; a job's python_wheel_task may not have one
        # bound to its thread yet, and getOrCreate attaches to the cluster's.
        spark = SparkSession.getActiveSession() or SparkSession.builder.getOrCreate()
        for key, value in RUNTIME.items():
            spark.conf.set(key, cfg.spark.conf.get(key, value))
        return spark

    # Workers must run the same interpreter as the driver (the project venv).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(cfg.spark.app_name)
    settings = {
        "spark.sql.extensions": DELTA_EXTENSION,
        "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(cfg.spark.shuffle_partitions),
        # Deterministic, schema-checked writes; no silent column additions.
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        **RUNTIME,
    }
    if mode == "local":
        # Local mode and loopback clusters: never bind to another interface.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        settings.update({
            "spark.jars": ",".join(delta_jars()),
            "spark.driver.memory": cfg.spark.driver_memory,
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.sql.adaptive.enabled": "true",
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            # Delta reads its log with 50 tasks by default: far too many on a laptop.
            "spark.databricks.delta.snapshotPartitions": "2",
            # Tungsten's page is heap / cores / 16 by default (32 MB at 2g, 64 MB at 4g), and
            # every broadcast hash relation built on the driver takes a whole page, however
            # small its table. A long session (a notebook, the test suite) keeps dozens alive:
            # 1 GB of the suite's 2 GB heap, with full GCs back to back (docs/benchmarks.md).
            "spark.buffer.pageSize": "2m",
        })
        builder = builder.master(cfg.spark.master or "local[*]")
    elif cfg.spark.master:
        builder = builder.master(cfg.spark.master)
    settings.update(cfg.spark.conf)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def where_running(spark) -> str:
    """'<master>, driver heap N GiB', or what of it can be read (not the JVM under Spark Connect)."""
    try:
        sc = spark.sparkContext
        heap = sc._jvm.java.lang.Runtime.getRuntime().maxMemory() / 2**30
        return f"{sc.master}, driver heap {heap:.1f} GiB"
    except Exception:  # noqa: BLE001 - only a log line depends on it
        return "a session without a reachable driver JVM"
