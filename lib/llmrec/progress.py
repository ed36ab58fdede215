"""Progress for long jobs: a timed step's row counts, rate and duration, and while Spark
works, a heartbeat with task progress and ETA read from Spark's status tracker."""
from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time

log = logging.getLogger("llmrec")


def setup_logging(level: int = logging.INFO) -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s llmrec %(levelname)s %(message)s",
                                               "%H:%M:%S"))
        log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


def fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


RATE_OF = ("rows_in", "rows")  # the counter a step's rate is given for: the first one set


class Step:
    """One timed step's counters (`count`) and duration."""

    def __init__(self, name: str):
        self.name = name
        self.counts: dict[str, int] = {}
        self.started = time.monotonic()
        self.seconds = 0.0

    def count(self, **counts: int) -> None:
        self.counts.update(counts)


@contextlib.contextmanager
def timed(name: str, spark=None):
    """``with timed("clean.events", spark) as st: ...; st.count(rows_in=n)``: logs the
    start, Spark's task progress while it runs (given `spark`), then the duration, the
    counters and a rate of rows_in (or else rows) per second."""
    st = Step(name)
    log.info("stage %s: started", name)
    beat = _Heartbeat(spark, name) if spark is not None else None
    outer = _tag_jobs(spark, name)
    try:
        yield st
    finally:
        if beat:
            beat.stop()
        _tag_jobs(spark, outer)
    st.seconds = time.monotonic() - st.started
    counts = " ".join(f"{k}={v:,}" for k, v in st.counts.items())
    rate = next((st.counts[k] for k in RATE_OF if k in st.counts), None)
    rate_txt = f" ({rate / st.seconds:,.0f} rows/s)" if rate and st.seconds > 0 else ""
    log.info("stage %s: done in %s %s%s", name, fmt_duration(st.seconds), counts, rate_txt)


STEP_PROPERTY = "llmrec.step"  # on every Spark job a step starts: bench/spark_profile.py groups by it


def _tag_jobs(spark, name: str | None) -> str | None:
    """Tags the Spark jobs this thread starts from now with the step's name; returns the
    previous tag (nested steps restore it)."""
    if spark is None:
        return None
    try:
        sc = spark.sparkContext
        outer = sc.getLocalProperty(STEP_PROPERTY)
        sc.setLocalProperty(STEP_PROPERTY, name)
        return outer
    except Exception:  # noqa: BLE001 - Spark Connect has no SparkContext; the tag is only for profiles
        return None


class _Heartbeat:
    """Logs the active Spark stages' task progress and an ETA every ``every`` seconds."""

    def __init__(self, spark, label: str, every: float = 15.0):
        self.tracker = spark.sparkContext.statusTracker()
        self.label = label
        self.every = every
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        first_seen: dict[int, tuple[float, int]] = {}
        while not self.done.wait(self.every):
            try:
                for stage_id in self.tracker.getActiveStageIds():
                    info = self.tracker.getStageInfo(stage_id)
                    if info is None or info.numTasks == 0:
                        continue
                    now = time.monotonic()
                    t0, done0 = first_seen.setdefault(stage_id, (now, info.numCompletedTasks))
                    done, total = info.numCompletedTasks, info.numTasks
                    eta = ""
                    if done > done0 and now > t0:
                        eta = " ETA " + fmt_duration((total - done) * (now - t0) / (done - done0))
                    log.info("stage %s: spark stage %d: %d/%d tasks%s", self.label, stage_id,
                             done, total, eta)
            except Exception:  # the heartbeat must never break the job it watches
                return

    def stop(self) -> None:
        self.done.set()
