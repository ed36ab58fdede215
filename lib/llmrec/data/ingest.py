"""Ingest: raw files -> bronze Delta tables, one date partition at a time.

Each (entity, day) is written by replacing exactly that bronze partition (and that
day's ingest quarantine), so a rerun yields the same rows and a new day's files are
appended without rewriting earlier days. Days already ingested (per the ledger) are
skipped unless asked for again.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from llmrec import tables
from llmrec.conf import Config, join
from llmrec.data import raw
from llmrec.progress import log, timed
from llmrec.tables.schemas import BRONZE, QUARANTINE

ENTITIES = ("items", "events", "reviews")
STAGE = "ingest"


@dataclass
class BatchCounts:
    """What one stage did to one entity over the days of a batch."""
    entity: str
    days: list[dt.date]
    rows_in: int = 0
    rows_out: int = 0
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def duplicates(self) -> int:
        return self.rows_in - self.rows_out - self.quarantined


def quarantine_frame(bad: DataFrame, entity: str, stage_name: str) -> DataFrame:
    return bad.select(F.lit(entity).alias("entity"), F.lit(stage_name).alias("stage"),
                      "reason", "record", "source", "dt")


def write_quarantine(bad: DataFrame, cfg: Config, entity: str, stage_name: str,
                     days: list[dt.date]) -> dict[tuple[dt.date, str], int]:
    """Replaces the quarantine rows of (stage, entity, days); returns {(day, reason): rows}.
    `bad` is drawn from a cached frame: counting it is a pass over memory, not a re-read."""
    tables.overwrite_partitions(quarantine_frame(bad, entity, stage_name), cfg, QUARANTINE,
                                stage=[stage_name], entity=[entity], dt=days)
    rows = bad.groupBy("dt", "reason").count().collect()
    return {(r["dt"], r["reason"]): r["count"] for r in rows}


def by_reason(counts: dict[tuple[dt.date, str], int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for (_, reason), n in counts.items():
        out[reason] = out.get(reason, 0) + n
    return out


def by_day(counts: dict[tuple[dt.date, str], int]) -> dict[dt.date, int]:
    out: dict[dt.date, int] = {}
    for (day, _), n in counts.items():
        out[day] = out.get(day, 0) + n
    return out


def pending_days(available: list[dt.date], days: list[dt.date] | None, done: set[dt.date]) -> list[dt.date]:
    """Days to process: those asked for that this entity has, or else those available
    and not yet done. (An entity may lack a day: no reviews were written on it.)"""
    if days:
        return sorted(set(days) & set(available))
    return [d for d in available if d not in done]


def _read_batches(spark: SparkSession, cfg: Config, days: list[dt.date] | None):
    """Yields (entity, days, bronze rows, malformed rows, the cached frames they are drawn
    from) for each entity with pending days. Cached, so that writing both and counting
    them parses the input once."""
    kind = cfg.source.kind
    done = tables.done_dates(spark, cfg)
    if kind == "synthetic":
        for entity in ENTITIES:
            available = raw.list_dates(spark, join(cfg.raw_root, entity))
            todo = pending_days(available, days, done.get((STAGE, entity), set()))
            if todo:
                yield entity, todo, *raw.read_days(spark, cfg.raw_root, entity, todo, kind)
        return
    from llmrec.data import adapters

    day = dt.date.fromisoformat(cfg.source.batch_date)
    frames = None
    for entity in ENTITIES:
        if pending_days([day], days, done.get((STAGE, entity), set())):
            frames = frames or adapters.read_source(spark, kind, cfg.source.paths, day)
            good, bad = (f.cache() for f in frames[entity])
            yield entity, [day], good, bad, (good, bad)


def run(spark: SparkSession, cfg: Config, days: list[dt.date] | None = None) -> list[BatchCounts]:
    results = []
    for entity, todo, good, bad, cached in _read_batches(spark, cfg, days):
        with timed(f"ingest.{entity}[{todo[0]}..{todo[-1]}]", spark) as st:
            table = BRONZE[entity]
            tables.overwrite_partitions(good, cfg, table, dt=todo)
            quarantined = write_quarantine(bad, cfg, entity, STAGE, todo)
            per_day_out = tables.counts_by_day(good)
            per_day_bad = by_day(quarantined)
            counts = BatchCounts(entity, todo, rows_out=sum(per_day_out.values()),
                                 reasons=by_reason(quarantined), quarantined=sum(per_day_bad.values()))
            counts.rows_in = counts.rows_out + counts.quarantined
            tables.record_done(spark, cfg, STAGE, entity, {
                d: (per_day_out.get(d, 0) + per_day_bad.get(d, 0), per_day_out.get(d, 0),
                    per_day_bad.get(d, 0)) for d in todo})
            st.count(rows_in=counts.rows_in, bronze=counts.rows_out, quarantined=counts.quarantined)
        for frame in cached:
            frame.unpersist()
        results.append(counts)
    if not results:
        require_some_input(days)
        log.info("ingest: nothing new to ingest")
    return results


def require_some_input(days: list[dt.date] | None) -> None:
    """Days asked for by name that no entity has are an error, not a silent no-op."""
    if days:
        raise FileNotFoundError(f"no input for day(s) {', '.join(map(str, days))}")
