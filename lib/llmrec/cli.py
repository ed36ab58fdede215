"""The common shell of every job: arguments, config, logging, session, exit code.

The jobs are the pipeline's stages (llmrec.stages.STAGES) and `pipeline`, which runs
them in order. They are reached four ways, all through `main` or `invoke`: spark-submit
of jobs/run.py (what submit.sh does), the `llmrec` console script of the installed wheel
(Databricks python_wheel_task), `python -m llmrec.cli`, and `invoke` in a notebook. A
body ``(spark, cfg, args)`` returns a dict of results (logged as JSON) and raises on
failure. Failures end in one line on stderr (see llmrec.errors.describe) and a non-zero
exit code: 2 for bad configuration or arguments, 1 for anything else (LLMREC_DEBUG=1
adds the traceback).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import traceback
from argparse import ArgumentParser, Namespace
from typing import Callable

from llmrec import conf as conf_mod, runs
from llmrec.args import add_stage_list, build_parser
from llmrec.errors import describe
from llmrec.progress import fmt_duration, log, setup_logging
from llmrec.stages import NAMES, STAGES, Stage
from llmrec.stamps import new_run_id


@dataclasses.dataclass(frozen=True)
class Job:
    name: str
    body: Callable[..., dict]
    add_args: Callable[[ArgumentParser], None] | None = None
    stage: Stage | None = None  # None: not a stage of its own (pipeline)

    @property
    def doc(self) -> str:
        return (self.body.__doc__ or self.name).strip().splitlines()[0]

    def run(self, spark, cfg: conf_mod.Config, args: Namespace) -> dict:
        if self.stage is None:
            return self.body(spark, cfg, args) or {}
        return runs.execute(spark, cfg, self.stage, args, new_run_id())


JOBS: dict[str, Job] = {
    **{s.name: Job(s.name, s.body, s.add_args, s) for s in STAGES},
    "pipeline": Job("pipeline", runs.pipeline, lambda parser: add_stage_list(parser, NAMES)),
}


def _job(name: str) -> Job:
    if name not in JOBS:
        raise SystemExit(f"llmrec: unknown job {name!r}; jobs: {', '.join(JOBS)}")
    return JOBS[name]


def invoke(job: str, argv: list[str] | None = None) -> dict:
    """Runs a job in this process and returns its summary; raises on failure. For
    notebooks and callers with a SparkSession of their own (spark.mode: databricks)."""
    from llmrec.spark import get_session

    chosen = _job(job)
    args = build_parser(job, chosen.add_args).parse_args(argv or [])
    cfg = conf_mod.load(args.conf, args.overrides)
    return chosen.run(get_session(cfg), cfg, args)


def main(job: str, argv: list[str] | None = None) -> int:
    setup_logging()
    chosen = _job(job)
    args = build_parser(job, chosen.add_args).parse_args(argv)
    started = time.monotonic()
    try:
        cfg = conf_mod.load(args.conf, args.overrides)
    except conf_mod.ConfigError as err:
        print(f"llmrec {job}: config error: {err}", file=sys.stderr)
        return 2
    try:
        from llmrec.spark import get_session, where_running

        spark = get_session(cfg)
        log.info("job %s on %s", job, where_running(spark))
        result = chosen.run(spark, cfg, args)
    except Exception as err:  # one clear line; the traceback only on request
        if os.environ.get("LLMREC_DEBUG"):
            traceback.print_exc()
        print(f"llmrec {job} failed: {describe(err)}", file=sys.stderr)
        return 1
    log.info("job %s finished in %s: %s", job, fmt_duration(time.monotonic() - started),
             json.dumps(result, default=str))
    return 0


def usage() -> str:
    width = max(map(len, JOBS)) + 2
    return "jobs:\n" + "\n".join(f"  {name:<{width}}{job.doc}" for name, job in JOBS.items())


def console(argv: list[str] | None = None) -> None:
    """`llmrec JOB [--conf FILE] [--set k=v]... [job args]`: the console script, and
    jobs/run.py's entry (spark-submit). `llmrec --list` prints the jobs."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["--list"], ["-h"], ["--help"]):
        print(usage())
        sys.exit(0)
    if not argv or argv[0] not in JOBS:
        print(f"usage: llmrec JOB [--conf FILE] [--set k=v]...\n{usage()}", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(argv[0], argv[1:]))


if __name__ == "__main__":
    console()
