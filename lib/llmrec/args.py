"""Command-line arguments: the parser every job shares and the argument kinds jobs add."""
from __future__ import annotations

import argparse
import datetime as dt
import os
from typing import Callable, Sequence

DEFAULT_CONF = "conf/local.yaml"


def build_parser(job: str, add_args: Callable[[argparse.ArgumentParser], None] | None = None
                 ) -> argparse.ArgumentParser:
    """--conf and --set, then the job's own arguments."""
    parser = argparse.ArgumentParser(prog=f"submit.sh {job}")
    parser.add_argument("--conf", default=os.environ.get("LLMREC_CONF", DEFAULT_CONF),
                        help="YAML config (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set synthetic.users=5000 (repeatable)")
    if add_args:
        add_args(parser)
    return parser


def parse_dates(text: str) -> list[dt.date]:
    try:
        return sorted({dt.date.fromisoformat(d.strip()) for d in text.split(",") if d.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD[,YYYY-MM-DD...], got {text!r}") from None


def add_force(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="redo the work even if the outputs are up to date")


def add_dates(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dates", type=parse_dates, default=None,
                        help="process these days again (YYYY-MM-DD,...); default: days not yet done")


def add_stage_list(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    """--stages a,b (checked against `names`), --no-resume and --force."""
    def stage_list(text: str) -> list[str]:
        chosen = [s.strip() for s in text.split(",") if s.strip()]
        unknown = [s for s in chosen if s not in names]
        if unknown or not chosen:
            raise argparse.ArgumentTypeError(f"unknown stage(s) {', '.join(unknown) or '(none)'}; "
                                             f"stages: {', '.join(names)}")
        return chosen

    parser.add_argument("--stages", type=stage_list, default=None,
                        help="comma-separated stages to run, in pipeline order (default: all)")
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="run every chosen stage even if its outputs are up to date")
    add_force(parser)
