"""The common shell of every job: arguments, config, logging, session, exit code.

A job file is a few lines: ``run("ingest")``; the body and its extra arguments come from
``stages.JOBS``. A body ``(spark, cfg, args)`` returns a dict of results (logged as
JSON) and raises on failure. Failures end in one line on stderr (see `describe`) and a
non-zero exit code: 2 for bad configuration or arguments, 1 for anything else
(LLMREC_DEBUG=1 adds the traceback).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import time
import traceback
from typing import Callable

from llmrec import conf as conf_mod
from llmrec.progress import fmt_duration, log, setup_logging

DEFAULT_CONF = "conf/local.yaml"


def parse_dates(text: str) -> list[dt.date]:
    try:
        return sorted({dt.date.fromisoformat(d.strip()) for d in text.split(",") if d.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD[,YYYY-MM-DD...], got {text!r}") from None


def build_parser(job: str, add_args: Callable | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"submit.sh {job}")
    parser.add_argument("--conf", default=os.environ.get("LLMREC_CONF", DEFAULT_CONF),
                        help="YAML config (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set synthetic.users=5000 (repeatable)")
    if add_args:
        add_args(parser)
    return parser


def java_causes(err: BaseException) -> list[str]:
    """The first lines of the Java exceptions behind a Spark error, outermost first: the
    innermost ("java.io.IOException: No space left on device") is what the Python-side
    message often buries. Empty for errors that did not come from the JVM."""
    origin = getattr(err, "_origin", None) or getattr(err, "java_exception", None)
    chain = []
    try:
        while origin is not None and len(chain) < 20:
            chain.append(str(origin.toString()).strip().splitlines()[0])
            origin = origin.getCause()
    except Exception:  # the gateway may be gone (the JVM died): keep what we have
        pass
    return chain


def describe(err: BaseException) -> str:
    """One line for a failure: the error's first line (for a bare Py4J error, which says
    only which Java call failed, the root cause instead), the root cause if different,
    and the file Spark was reading or writing if it named one."""
    text = str(err).strip()
    line = f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"
    if type(err).__name__ == "PythonException":  # a UDF failed: its traceback's last line
        raised = [x.strip() for x in text.splitlines() if re.match(r"\s*[\w.]+(Error|Exception)\b.*:", x)]
        if raised:
            return f"PythonException in a Spark task: {raised[-1]}"
    chain = java_causes(err)
    if chain:
        root = chain[-1]
        line = root if type(err).__name__ == "Py4JJavaError" else \
            line if root in line else f"{line} (cause: {root})"
        files = [m.group(1) for c in chain for m in [re.search(r"(?:reading|to) file (\S+?)\.?(?:\s|$)", c)] if m]
        if files and files[0] not in line:
            line += f" [file {files[0]}]"
    return line


def invoke(job: str, argv: list[str] | None = None) -> dict:
    """Runs a job in this process and returns its summary; raises on failure. For
    notebooks and callers with a SparkSession of their own (spark.mode: databricks)."""
    from llmrec.spark import get_session
    from llmrec.stages import JOBS

    body, add_args = JOBS[job]
    args = build_parser(job, add_args).parse_args(argv or [])
    cfg = conf_mod.load(args.conf, args.overrides)
    from llmrec import runs

    return runs.execute(get_session(cfg), cfg, job, body, args, runs.new_run_id())


def main(job: str, body: Callable, add_args: Callable | None = None, argv: list[str] | None = None) -> int:
    setup_logging()
    parser = build_parser(job, add_args)
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        cfg = conf_mod.load(args.conf, args.overrides)
    except conf_mod.ConfigError as err:
        print(f"llmrec {job}: config error: {err}", file=sys.stderr)
        return 2
    try:
        from llmrec.spark import get_session, where_running

        from llmrec import runs

        spark = get_session(cfg)
        log.info("job %s on %s", job, where_running(spark))
        result = runs.execute(spark, cfg, job, body, args, runs.new_run_id())
    except Exception as err:  # one clear line; the traceback only on request
        if os.environ.get("LLMREC_DEBUG"):
            traceback.print_exc()
        print(f"llmrec {job} failed: {describe(err)}", file=sys.stderr)
        return 1
    log.info("job %s finished in %s: %s", job, fmt_duration(time.monotonic() - started),
             json.dumps(result, default=str))
    return 0


def run(job: str) -> None:
    """Entry point for jobs/*.py: runs main and exits with its code."""
    from llmrec.stages import JOBS

    sys.exit(main(job, *JOBS[job]))


def console(argv: list[str] | None = None) -> None:
    """The `llmrec JOB [args]` console script: the same jobs as submit.sh, for a Spark
    that already exists (a Databricks cluster, pyspark in a notebook's driver)."""
    from llmrec.stages import JOBS

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in JOBS:
        print(f"usage: llmrec JOB [--conf FILE] [--set k=v]...; jobs: {', '.join(JOBS)}", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(argv[0], *JOBS[argv[0]], argv=argv[1:]))
