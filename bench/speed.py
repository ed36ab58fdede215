"""The speed figures in one file, bench/results/speed.json.

    .venv/bin/python bench/speed.py           # gathers the other benchmarks' results
    .venv/bin/python bench/speed.py --fresh   # first runs the README's two commands in a fresh clone
    .venv/bin/python bench/speed.py --fresh suite --demo-from /tmp/llmrec-speed-XXXX/fresh

--fresh clones this repository into a temporary folder and runs `bin/demo`, then
`CI=true bin/test` there, one after the other, each once the machine is quiet (1-minute
load average below 0.5). Each installs what it needs; that time is not counted:
demo_pipeline_s is the pipeline's own time from its run summary, suite_s is pytest's
"in N s" (with its exit code: a failed suite is recorded, not hidden). Without --fresh
those two are kept from the previous speed.json.
The ingest and tokenize figures are read from bench/results/ingest_pipeline.json
(bench/ingest_pipeline.py --events 1000000 --events 10000000) and tokenize_shards.json
(bench/tokenize_shards.py). Every figure has the machine and the load average beside it.
"""
from __future__ import annotations

import argparse
import atexit
import glob
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
GOALS = {"demo_pipeline_s": ("<=", 600), "suite_s": ("<=", 1200), "tokenize_ratio": (">=", 0.8),
         "ingest_ratio_1m": (">=", 0.3), "ingest_ratio_10m": (">=", 1.0),
         "peak_rss_10m_spark_over_pandas": ("<=", 0.5)}


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB")


def scratch(prefix: str) -> str:
    """A temporary folder removed when the benchmark exits: runs leave no roots in /tmp."""
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def settle(quiet: float = 0.5, most_s: float = 600) -> int:
    """Waits (at most most_s) for the 1-minute load average to fall below `quiet`: the goals
    are for a quiet machine, and the suite otherwise starts in the demo's wake (load ~2).
    Returns the seconds waited."""
    t0 = time.monotonic()
    while os.getloadavg()[0] >= quiet and time.monotonic() - t0 < most_s:
        time.sleep(10)
    return round(time.monotonic() - t0)


def timed_run(cmd: list[str], cwd: Path, log: Path, env: dict | None = None) -> dict:
    waited = settle()
    before, t0 = load(), time.monotonic()
    with open(log, "w") as out:
        code = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                              env={**os.environ, **(env or {})}).returncode
    return {"exit_code": code, "wall_s": round(time.monotonic() - t0, 1), "waited_for_quiet_s": waited,
            "load_avg_before": before, "load_avg_after": load(), "log": str(log)}


def demo_figure(clone: Path, run: dict | None = None) -> dict:
    """The pipeline's own time from the newest run summary of a clone's bin/demo."""
    summary = json.loads(Path(max(glob.glob(str(clone / "data" / "runs" / "*.json")),
                                  key=os.path.getmtime)).read_text())
    return {"value": summary["seconds"], "status": summary["status"], "commit": commit_of(clone),
            "stages_s": {r["stage"]: r.get("seconds") for r in summary["stages"]}, **(run or {})}


def suite_figure(clone: Path, run: dict) -> dict:
    """pytest's own "in N s" and its summary line from a clone's CI=true bin/test log."""
    lines = Path(run["log"]).read_text().strip().splitlines()
    line = next(x for x in reversed(lines) if re.search(r" in [\d.]+s", x))
    return {"value": float(re.search(r" in ([\d.]+)s", line)[1]), "pytest": line.strip("= "),
            "commit": commit_of(clone), **run}


def commit_of(clone: Path) -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True,
                          text=True).stdout.strip()


def fresh_runs(which: list[str]) -> dict:
    """bin/demo and/or CI=true bin/test, one after the other, in a fresh clone of HEAD."""
    clone = Path(tempfile.mkdtemp(prefix="llmrec-speed-")) / "fresh"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    out = {}
    if "demo" in which:
        out["demo_pipeline_s"] = demo_figure(clone, timed_run(["bin/demo"], clone, clone.parent / "demo.log"))
    if "suite" in which:
        run = timed_run(["bin/test"], clone, clone.parent / "test.log", {"CI": "true"})
        out["suite_s"] = suite_figure(clone, run)
    # The clone's virtualenv is 7 GB: left in /tmp after a few runs it filled the disk
    # (CI's install then failed). The logs and run summaries that --demo-from reads stay.
    shutil.rmtree(clone / ".venv", ignore_errors=True)
    return out


def from_results() -> dict:
    out = {}
    tok = RESULTS / "tokenize_shards.json"
    if tok.exists():
        t = json.loads(tok.read_text())
        out["tokenize_ratio"] = {"value": round(t["ratio_spark_over_driver"], 3), "rows": t["rows"],
                                 "load_avg_before": t.get("load_avg_before"), "measured": t.get("measured"),
                                 "source": "bench/results/tokenize_shards.json"}
    ing = RESULTS / "ingest_pipeline.json"
    if ing.exists():
        for row in json.loads(ing.read_text())["results"]:
            size = {1_000_000: "1m", 10_000_000: "10m"}.get(row["events_target"])
            if size is None or "ratio_spark_over_pandas" not in row:
                continue
            common = {"load_avg_before": row.get("load_avg_before"), "source": "bench/results/ingest_pipeline.json",
                      "spark_driver_memory": row.get("spark_driver_memory")}
            out[f"ingest_ratio_{size}"] = {"value": round(row["ratio_spark_over_pandas"], 3),
                                           "spark_s": round(row["spark_times_s"]["pipeline"], 1),
                                           "pandas_s": round(row["pandas_s"], 1), **common}
            if size == "10m":
                memory = {**common, "measure": "summed PSS of the process tree while the stages run"}
                out["peak_rss_10m_spark_gb"] = {"value": row["spark_peak_rss_gb"], **memory}
                out["peak_rss_10m_pandas_gb"] = {"value": row["pandas_peak_rss_gb"], **memory}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fresh", nargs="*", choices=["demo", "suite"],
                    help="run bin/demo and CI=true bin/test (or the one named) in a fresh clone")
    ap.add_argument("--demo-from", type=Path, help="take the demo figure from this earlier clone instead")
    args = ap.parse_args()
    path = RESULTS / "speed.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    figures = {k: previous[k] for k in ("demo_pipeline_s", "suite_s") if k in previous}
    if args.demo_from:
        figures["demo_pipeline_s"] = demo_figure(args.demo_from)
    if args.fresh is not None:
        figures.update(fresh_runs(args.fresh or ["demo", "suite"]))
    figures.update(from_results())
    if "peak_rss_10m_spark_gb" in figures:
        ratio = figures["peak_rss_10m_spark_gb"]["value"] / figures["peak_rss_10m_pandas_gb"]["value"]
        figures["peak_rss_10m_spark_over_pandas"] = {"value": round(ratio, 3)}
    for key, (op, goal) in GOALS.items():
        if key in figures:
            value = figures[key]["value"]  # None: the run did not finish, so not met
            figures[key]["goal"] = f"{op} {goal}"
            figures[key]["met"] = value is not None and (value <= goal if op == "<=" else value >= goal)
    result = {"machine": machine(), "written": time.strftime("%Y-%m-%d %H:%M"), **figures}
    path.write_text(json.dumps(result, indent=1))
    for key, fig in figures.items():
        print(f"{key:32} {fig['value']!s:>10}  {fig.get('goal', ''):>8}  {'met' if fig.get('met') else ''}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
