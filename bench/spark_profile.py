"""Where a Spark run's time goes, from its event log and its Delta logs.

    conf = profile_conf(folder)          # spark.* settings that write the event log there
    ... run stages (progress.timed tags every Spark job with its step) ...
    print(table(by_step(folder)), commits(storage_root, t0, t1))

by_step groups Spark jobs by the llmrec step that started them (progress.STEP_PROPERTY):
jobs, stages run and skipped (a skipped stage reused a shuffle), tasks, the jobs' wall
time, bytes read from files, shuffled and written, and how many jobs were Delta's own
(log replay, file listing, statistics: "Delta: ..." in the job's description).
commits lists each Delta commit a run made (table, operation, files and rows added).
"""
from __future__ import annotations

import glob
import json
import os
from collections import defaultdict

from llmrec.progress import STEP_PROPERTY  # the tag progress.timed puts on every Spark job

MB = 2**20


def profile_conf(folder: str) -> dict:
    os.makedirs(folder, exist_ok=True)
    return {"spark.eventLog.enabled": "true", "spark.eventLog.dir": folder,
            "spark.eventLog.compress": "false"}


def _events(folder: str):
    # Spark 4 writes rolling logs: a folder per application, events_<n>_... files inside
    paths = glob.glob(os.path.join(folder, "**", "events_*"), recursive=True) or \
        glob.glob(os.path.join(folder, "*"))
    for path in sorted(paths, key=lambda p: (os.path.dirname(p), int(p.rsplit("events_", 1)[-1].split("_")[0])
                                             if "events_" in p else 0)):
        with open(path) as f:
            for line in f:
                yield json.loads(line)


def by_step(folder: str) -> dict[str, dict]:
    """{step: {jobs, delta_jobs, stages, skipped_stages, tasks, job_s, input_mb,
    shuffle_write_mb, output_mb, output_rows}}; jobs started outside a step are '(none)'."""
    job_step, job_start, stage_step, ran = {}, {}, {}, set()
    out: dict[str, dict] = defaultdict(lambda: defaultdict(float))
    for ev in _events(folder):
        kind = ev["Event"]
        if kind == "SparkListenerJobStart":
            props = ev.get("Properties") or {}
            step = props.get(STEP_PROPERTY) or "(none)"
            job_step[ev["Job ID"]], job_start[ev["Job ID"]] = step, ev["Submission Time"]
            row = out[step]
            row["jobs"] += 1
            row["delta_jobs"] += str(props.get("spark.job.description", "")).startswith("Delta")
            for sid in ev["Stage IDs"]:
                stage_step[sid] = step
            row["stages_planned"] += len(ev["Stage IDs"])
        elif kind == "SparkListenerJobEnd" and ev["Job ID"] in job_step:
            out[job_step[ev["Job ID"]]]["job_s"] += (ev["Completion Time"] - job_start[ev["Job ID"]]) / 1000
        elif kind == "SparkListenerStageCompleted":
            info = ev["Stage Info"]
            if info["Stage ID"] in stage_step:
                ran.add(info["Stage ID"])
                out[stage_step[info["Stage ID"]]]["stages"] += 1
        elif kind == "SparkListenerTaskEnd":
            row = out[stage_step.get(ev["Stage ID"], "(none)")]
            m = ev.get("Task Metrics") or {}
            row["tasks"] += 1
            row["input_mb"] += (m.get("Input Metrics") or {}).get("Bytes Read", 0) / MB
            row["shuffle_write_mb"] += (m.get("Shuffle Write Metrics") or {}).get("Shuffle Bytes Written", 0) / MB
            row["output_mb"] += (m.get("Output Metrics") or {}).get("Bytes Written", 0) / MB
            row["output_rows"] += (m.get("Output Metrics") or {}).get("Records Written", 0)
    result = {}
    for step, row in out.items():
        row["skipped_stages"] = row.pop("stages_planned", 0) - row["stages"]
        result[step] = {k: (round(v, 1) if isinstance(v, float) and not v.is_integer() else int(v))
                        for k, v in row.items()}
    return result


def _logs(storage_root: str):
    """(table, [each commit's actions, in version order]) for every Delta table under storage_root."""
    for log in sorted(glob.glob(os.path.join(storage_root, "**", "_delta_log"), recursive=True)):
        versions = []
        for commit in sorted(glob.glob(os.path.join(log, "*.json"))):
            with open(commit) as f:
                versions.append([json.loads(line) for line in f])
        yield os.path.relpath(os.path.dirname(log), storage_root), versions


def commits(storage_root: str, since_ms: float = 0, until_ms: float = float("inf")) -> list[dict]:
    """Every Delta commit under storage_root made between the two epoch times (ms)."""
    found = []
    for table, versions in _logs(storage_root):
        for actions in versions:
            info = next((a["commitInfo"] for a in reversed(actions) if "commitInfo" in a), {})
            if info and since_ms <= info.get("timestamp", 0) <= until_ms:
                metrics = info.get("operationMetrics") or {}
                found.append({"table": table, "ts": info["timestamp"], "operation": info.get("operation"),
                              "files_added": sum("add" in a for a in actions),
                              "rows": int(metrics.get("numOutputRows", metrics.get("numTargetRowsInserted", 0)))})
    return sorted(found, key=lambda c: c["ts"])


def live_files(storage_root: str) -> dict[str, int]:
    """Data files in the current version of each Delta table under storage_root (its log's
    adds less its removes)."""
    out = {}
    for table, versions in _logs(storage_root):
        live: set[str] = set()
        for action in (a for actions in versions for a in actions):
            if "add" in action:
                live.add(action["add"]["path"])
            elif "remove" in action:
                live.discard(action["remove"]["path"])
        out[table] = len(live)
    return out


def table(steps: dict[str, dict]) -> str:
    """The by_step figures as a markdown table, steps in the order they first appear."""
    cols = ["jobs", "delta_jobs", "stages", "skipped_stages", "tasks", "job_s", "input_mb",
            "shuffle_write_mb", "output_mb"]
    lines = ["| step | " + " | ".join(cols) + " |", "| --- |" + " ---: |" * len(cols)]
    for step, row in steps.items():
        lines.append(f"| {step} | " + " | ".join(str(row.get(c, 0)) for c in cols) + " |")
    return "\n".join(lines)
