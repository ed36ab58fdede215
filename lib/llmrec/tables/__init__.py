"""Reading and writing the Delta tables of schemas.py, always as whole transactions.

Writes are one of: overwrite of the partitions a batch owns (replaceWhere), insert of
keys not yet present (MERGE), or upsert by key (MERGE). Each is a single Delta commit,
so a failed job leaves the table as it was and a rerun adds no duplicates. A write that
loses a race with another writer of the same table is redone (see `_retrying`).
"""
from __future__ import annotations

import datetime as dt
import functools
import itertools
import json
import random
import time
from typing import Callable, Iterable, Iterator

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from llmrec.stamps import utc_now
from llmrec import storage
from llmrec.conf import Config, join
from llmrec.progress import log
from llmrec.tables.schemas import LEDGER, Table


class SchemaError(ValueError):
    pass


class ConcurrentWriteError(RuntimeError):
    pass


# Delta's optimistic concurrency: a commit that lost the race against another writer of
# the same table (another run of the same stage) fails with one of these; the write is
# then redone against the table's new version. Names as PySpark and delta-spark raise them.
_CONFLICTS = ("ConcurrentAppend", "ConcurrentDeleteRead", "ConcurrentDeleteDelete",
              "ConcurrentTransaction", "MetadataChanged", "ProtocolChanged", "DELTA_CONCURRENT",
              "DELTA_METADATA_CHANGED", "DELTA_PROTOCOL_CHANGED")


def _retrying(write: Callable) -> Callable:
    """Retries a whole write (plan, files and commit) when Delta reports a conflicting
    concurrent commit; after `attempts` it fails with one line naming the table."""
    @functools.wraps(write)
    def wrapper(df, cfg, table, *args, attempts: int = 5, **kwargs):
        for attempt in range(1, attempts + 1):
            try:
                return write(df, cfg, table, *args, **kwargs)
            except Exception as err:
                text = f"{type(err).__name__}: {err}"
                conflict = next((c for c in _CONFLICTS if c in text), None)
                if conflict is None:
                    raise
                if attempt == attempts:
                    raise ConcurrentWriteError(
                        f"{table.qualified} was changed by another writer at the same time "
                        f"({conflict}) {attempts} times in a row; rerun the stage") from None
                log.warning("%s: concurrent commit by another writer (%s); retrying (%d/%d)",
                            table.qualified, conflict, attempt, attempts - 1)
                time.sleep(random.uniform(0.5, 2.0) * attempt)
    return wrapper


def path(cfg: Config, table: Table) -> str:
    return join(cfg.storage.root, table.layer, table.name)


def exists(spark: SparkSession, cfg: Config, table: Table) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, path(cfg, table))


def read(spark: SparkSession, cfg: Config, table: Table) -> DataFrame:
    if not exists(spark, cfg, table):
        raise FileNotFoundError(f"table {table.qualified} not found at {path(cfg, table)}: "
                                "run the stage that writes it first")
    return spark.read.format("delta").load(path(cfg, table))


def _commit_files(cfg: Config, table: Table) -> tuple[object, dict[int, str]]:
    """(file system, {version: path of its commit file}) from a listing of the Delta log."""
    import pyarrow.fs as pafs

    fs, log_dir = storage.arrow_fs(join(path(cfg, table), "_delta_log"))
    infos = fs.get_file_info(pafs.FileSelector(log_dir, allow_not_found=True))
    commits = {int(i.base_name[:-len(".json")]): i.path for i in infos
               if i.base_name.endswith(".json") and i.base_name[:-len(".json")].isdigit()}
    if not commits:
        raise FileNotFoundError(f"table {table.qualified} not found at {path(cfg, table)}")
    return fs, commits


def version(spark: SparkSession, cfg: Config, table: Table) -> int:
    """The table's newest version: its highest numbered commit file, found by listing the
    Delta log as Delta itself does (log cleanup never removes the newest). No Spark job,
    unlike DeltaTable.history: a pipeline asks this a hundred times, for every stage's
    inputs and outputs."""
    return max(_commit_files(cfg, table)[1])


def _history(cfg: Config, table: Table) -> Iterator[tuple[int, dict]]:
    """(version, commitInfo) of each commit, newest first, each read from its file in the
    Delta log only when asked for: what DeltaTable.history returns, without its Spark job."""
    fs, commits = _commit_files(cfg, table)
    for v in sorted(commits, reverse=True):
        with fs.open_input_stream(commits[v]) as f:
            actions = [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]
        yield v, next((a["commitInfo"] for a in actions if "commitInfo" in a), {})


def read_or_empty(spark: SparkSession, cfg: Config, table: Table) -> DataFrame:
    if exists(spark, cfg, table):
        return read(spark, cfg, table)
    return spark.createDataFrame([], table.schema)


def conform(df: DataFrame, table: Table) -> DataFrame:
    """Selects the contract's columns in order, cast to their types; a missing one is an error."""
    missing = [c for c in table.columns if c not in df.columns]
    if missing:
        raise SchemaError(f"{table.qualified}: missing column(s) {', '.join(missing)}")
    return df.select([F.col(f.name).cast(f.dataType).alias(f.name) for f in table.schema.fields])


def _writer(df: DataFrame, table: Table):
    writer = df.write.format("delta")
    if table.partition_by:
        writer = writer.partitionBy(*table.partition_by)
    return writer


@_retrying
def overwrite(df: DataFrame, cfg: Config, table: Table) -> None:
    _writer(conform(df, table), table).mode("overwrite").option("overwriteSchema", "true") \
        .save(path(cfg, table))


@_retrying
def append(df: DataFrame, cfg: Config, table: Table) -> None:
    """A blind append (one commit; concurrent appends never conflict in Delta)."""
    _writer(conform(df, table), table).mode("append").save(path(cfg, table))


def _rows_changed(operation: str | None, metrics: dict | None) -> int:
    """Rows one commit inserted or updated, from its operation metrics."""
    m = metrics or {}
    if operation == "MERGE":
        return int(m.get("numTargetRowsInserted", 0)) + int(m.get("numTargetRowsUpdated", 0))
    if operation == "UPDATE":
        return int(m.get("numUpdatedRows", 0))
    return 0 if operation == "DELETE" else int(m.get("numOutputRows", 0))


def rows_written(spark: SparkSession, cfg: Config, table: Table, since: int | None) -> int:
    """Rows the table's commits after version `since` (all, if None) inserted or updated,
    from their operation metrics: nothing is counted by reading data."""
    floor = -1 if since is None else since
    newer = itertools.takewhile(lambda commit: commit[0] > floor, _history(cfg, table))
    return sum(_rows_changed(info.get("operation"), info.get("operationMetrics")) for _, info in newer)


def _literal(value) -> str:
    if isinstance(value, (dt.date, dt.datetime)):
        return f"'{value.isoformat()}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


def partition_predicate(**values: Iterable) -> str:
    """SQL predicate for replaceWhere, e.g. entity IN ('events') AND dt IN ('2024-01-01')."""
    parts = []
    for column, vals in values.items():
        vals = list(vals)
        parts.append(f"{column} IN ({', '.join(_literal(v) for v in vals)})" if vals else "false")
    return " AND ".join(parts)


@_retrying
def overwrite_partitions(df: DataFrame, cfg: Config, table: Table, **partitions: Iterable) -> None:
    """Atomically replaces exactly the given partitions (and nothing else) with df's rows."""
    # mergeSchema: a table written before a column was added to its contract gains it
    writer = _writer(conform(df, table), table).option("mergeSchema", "true")
    if exists(df.sparkSession, cfg, table):
        writer = writer.mode("overwrite").option("replaceWhere", partition_predicate(**partitions))
    else:  # the first write creates the table
        writer = writer.mode("append")
    writer.save(path(cfg, table))


def _key_condition(table: Table, extra: str = "") -> str:
    cond = " AND ".join(f"t.{k} = s.{k}" for k in table.key)
    return f"{cond} AND {extra}" if extra else cond


def _create_if_absent(spark: SparkSession, cfg: Config, table: Table) -> None:
    """Creates the table empty, so that even the first write is a MERGE. A first write
    that carries the rows (a plain append creating the table) was tried: two runs creating
    the table at once both committed, and every key was there twice
    (test_concurrent_runs_of_a_stage). Two runs creating it empty at once are harmless,
    or conflict (ProtocolChanged) and the loser retries."""
    if not exists(spark, cfg, table):
        _writer(spark.createDataFrame([], table.schema), table).mode("append").save(path(cfg, table))


def last_commit_changed(spark: SparkSession, cfg: Config, table: Table) -> int:
    """Rows the table's latest commit inserted or updated."""
    _, last = next(_history(cfg, table))
    return _rows_changed(last.get("operation"), last.get("operationMetrics"))


@_retrying
def merge_insert_new(df: DataFrame, cfg: Config, table: Table, prune: str = "") -> int:
    """Inserts rows whose key is not in the table yet; existing rows are left untouched.
    Returns the number of rows inserted.

    ``prune`` is an optional predicate on the target (t.) that limits the files scanned.
    """
    from delta.tables import DeltaTable

    _create_if_absent(df.sparkSession, cfg, table)
    target = DeltaTable.forPath(df.sparkSession, path(cfg, table))
    target.alias("t").merge(conform(df, table).alias("s"), _key_condition(table, prune)) \
        .whenNotMatchedInsertAll().execute()
    return last_commit_changed(df.sparkSession, cfg, table)


@_retrying
def merge_upsert(df: DataFrame, cfg: Config, table: Table, newer: str = "") -> int:
    """Inserts new keys and updates existing ones (only where ``newer`` holds, if given).
    Returns the number of rows inserted or updated."""
    from delta.tables import DeltaTable

    _create_if_absent(df.sparkSession, cfg, table)
    target = DeltaTable.forPath(df.sparkSession, path(cfg, table))
    merge = target.alias("t").merge(conform(df, table).alias("s"), _key_condition(table))
    merge = merge.whenMatchedUpdateAll(condition=newer) if newer else merge.whenMatchedUpdateAll()
    merge.whenNotMatchedInsertAll().execute()
    return last_commit_changed(df.sparkSession, cfg, table)


# The ledger: which (stage, entity, dt) batches are done, for incremental runs. It is
# append-only (a cheap blind append, no MERGE); a day redone appears twice, which is
# harmless: readers ask whether a day is done, and the newest row has its counts.

def done_dates(spark: SparkSession, cfg: Config) -> dict[tuple[str, str], set[dt.date]]:
    """{(stage, entity): days done}, from one read of the ledger (a stage asks once, not per entity)."""
    if not exists(spark, cfg, LEDGER):
        return {}
    done: dict[tuple[str, str], set[dt.date]] = {}
    for r in read(spark, cfg, LEDGER).select("stage", "entity", "dt").distinct().collect():
        done.setdefault((r.stage, r.entity), set()).add(r.dt)
    return done


def record_done(spark: SparkSession, cfg: Config, stage: str, entity: str,
                per_day: dict[dt.date, tuple[int | None, int | None, int | None]]) -> None:
    """Marks days done for a stage: {day: (rows_in, rows_out, quarantined)}, one commit."""
    now = utc_now()
    rows = [(stage, entity, day, *counts, now) for day, counts in sorted(per_day.items())]
    if rows:
        _writer(spark.createDataFrame(rows, LEDGER.schema), LEDGER).mode("append").save(path(cfg, LEDGER))


def counts_by_day(df: DataFrame) -> dict[dt.date, int]:
    return {r["dt"]: r["count"] for r in df.groupBy("dt").count().collect()}
