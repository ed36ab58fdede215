"""The common shell of every job: arguments, config, logging, session, exit code.

A job file is a few lines: ``main("ingest", body, add_args)`` where ``body(spark, cfg,
args)`` returns a dict of results (logged as JSON) and raises on failure. Failures end
in one line on stderr and a non-zero exit code: 2 for bad configuration or arguments,
1 for anything else (LLMREC_DEBUG=1 adds the traceback).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
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
        from llmrec.spark import get_session

        spark = get_session(cfg)
        result = body(spark, cfg, args) or {}
    except Exception as err:  # one clear line; the traceback only on request
        if os.environ.get("LLMREC_DEBUG"):
            traceback.print_exc()
        message = str(err).strip().splitlines()[0] if str(err).strip() else ""
        print(f"llmrec {job} failed: {type(err).__name__}: {message}", file=sys.stderr)
        return 1
    log.info("job %s finished in %s: %s", job, fmt_duration(time.monotonic() - started),
             json.dumps(result, default=str))
    return 0


def run(job: str, body: Callable, add_args: Callable | None = None) -> None:
    """Entry point for jobs/*.py: runs main and exits with its code."""
    sys.exit(main(job, body, add_args))
