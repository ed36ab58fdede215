"""Stage runs: what each stage read and wrote, resume, and the pipeline's run summary.

Every job (alone or inside `pipeline`) goes through `execute`, which
- logs and records the stage in meta.stage_runs: rows in (the input tables' sizes),
  rows out (rows its commits wrote to the output tables), rows quarantined, duration;
- fingerprints what the stage's output depends on: its config sections, its arguments,
  the versions of its input tables and the file listings of its input folders (raw
  files, shards, the trained model);
- with resume, skips a stage whose last successful run had the same fingerprint and
  whose outputs are still exactly what that run (or a later stage amending them, such
  as explain's MERGE into gold.recommendations) left.
"""
from __future__ import annotations

import json
import os
import time
from argparse import Namespace

from llmrec import storage, tables, tracking
from llmrec.conf import Config, join
from llmrec.errors import describe
from llmrec.progress import fmt_duration, log
from llmrec.stages import NAMES, STAGES, Stage
from llmrec.stamps import fingerprint as digest, new_run_id, utc_now
from llmrec.tables import schemas


# Arguments that change what a stage does (the rest, like --conf, are in the config).
_ARGS_IGNORED = {"conf", "overrides", "stages", "force", "resume"}


def _versions(spark, cfg: Config, group: tuple[schemas.Table, ...]) -> dict[str, int | None]:
    return {t.qualified: tables.version(spark, cfg, t) if tables.exists(spark, cfg, t) else None
            for t in group}


def files_signature(paths: list[str]) -> str | None:
    """A hash of the files under `paths` (names, sizes, modification times); None when a
    path is missing, so that a stage reading it is never taken as done."""
    import pyarrow.fs as pafs

    listing = []
    for path in paths:
        fs, p = storage.arrow_fs(path)
        info = fs.get_file_info(p)
        if info.type == pafs.FileType.NotFound:
            return None
        infos = [info] if info.type == pafs.FileType.File else \
            fs.get_file_info(pafs.FileSelector(p, recursive=True))
        # relative names: a copied folder (same files, same times) has the same signature
        listing += sorted((os.path.relpath(i.path, p), i.size, i.mtime_ns)
                          for i in infos if i.type == pafs.FileType.File)
    return digest(listing)


def _setting(tree: dict, key: str):
    """A section (``train``) or one key of it (``train.loss``) of the config as a dict."""
    for part in key.split("."):
        tree = tree[part]
    return tree


def fingerprint(spark, cfg: Config, stage: Stage, args) -> str:
    settings = {s: _setting(cfg.to_dict(), s) for s in stage.sections}
    arguments = {k: v for k, v in sorted(vars(args).items()) if k not in _ARGS_IGNORED and v}
    inputs = _versions(spark, cfg, tuple(t for t in stage.inputs if t not in stage.outputs))
    files = stage.input_files(cfg)
    return digest({"settings": settings, "args": arguments, "inputs": inputs,
                   "files": files_signature(files) if files else ""})


def _outputs_state(spark, cfg: Config, stage: Stage) -> dict:
    state: dict = _versions(spark, cfg, stage.outputs)
    if stage.output_files(cfg):
        state["files"] = files_signature(stage.output_files(cfg))
    return state


def _done_runs(spark, cfg: Config) -> list[dict]:
    if not tables.exists(spark, cfg, schemas.STAGE_RUNS):
        return []
    rows = tables.read(spark, cfg, schemas.STAGE_RUNS).where("status = 'done'") \
        .select("stage", "fingerprint", "outputs", "finished_at").collect()
    return sorted((r.asDict() for r in rows), key=lambda r: r["finished_at"])


def is_done(spark, cfg: Config, stage: Stage, fp: str) -> bool:
    """True when the stage's last successful run had fingerprint `fp` and its outputs are
    still as that run, or a later pipeline stage amending them, left them."""
    runs = _done_runs(spark, cfg)
    mine = [r for r in runs if r["stage"] == stage.name]
    if not mine or mine[-1]["fingerprint"] != fp:
        return False
    last = mine[-1]
    current, recorded = _outputs_state(spark, cfg, stage), json.loads(last["outputs"])
    if current.pop("files", "") != recorded.get("files", ""):
        return False
    for table, version in current.items():
        if version is None:
            return False
        # the newest run that wrote this table must be this one or a later stage's amendment
        writers = [r for r in runs if json.loads(r["outputs"]).get(table) is not None
                   and r["finished_at"] >= last["finished_at"]]
        newest = writers[-1] if writers else None
        if newest is None or json.loads(newest["outputs"])[table] != version:
            return False
        if newest is not last and NAMES.index(newest["stage"]) <= NAMES.index(stage.name):
            return False
    return True


def _rows(spark, cfg: Config, group: tuple[schemas.Table, ...]) -> int:
    # Delta answers count() from its log's statistics: no data is read.
    return sum(tables.read(spark, cfg, t).count() for t in group if tables.exists(spark, cfg, t))


def _written(spark, cfg: Config, before: dict[str, int | None], group: tuple[schemas.Table, ...]) -> int:
    return sum(tables.rows_written(spark, cfg, t, before.get(t.qualified)) for t in group
               if tables.exists(spark, cfg, t))


def execute(spark, cfg: Config, stage: Stage, args, run_id: str, resume: bool = False) -> dict:
    """Runs one stage (or skips it, with resume), logs and records what it did."""
    name = stage.name
    fp = fingerprint(spark, cfg, stage, args)
    started_at, started = utc_now(), time.monotonic()
    if resume and is_done(spark, cfg, stage, fp):
        log.info("stage %s: skipped: its outputs are complete for the same inputs and config", name)
        record = {"stage": name, "status": "skipped", "fingerprint": fp, "seconds": 0.0}
        _append(spark, cfg, run_id, record, started_at, {}, None)
        return record
    watched = tuple(dict.fromkeys(stage.outputs + (schemas.QUARANTINE,)))
    before = _versions(spark, cfg, watched)
    rows_in = _rows(spark, cfg, tuple(t for t in stage.inputs if t not in stage.outputs))
    try:
        summary = stage.body(spark, cfg, args) or {}
    except BaseException as err:
        record = {"stage": name, "status": "failed", "fingerprint": fp, "rows_in": rows_in,
                  "seconds": round(time.monotonic() - started, 1),
                  "error": describe(err)}
        _append(spark, cfg, run_id, record, started_at, {}, None)
        raise
    record = {"stage": name, "status": "done", "fingerprint": fp, "rows_in": rows_in,
              "rows_out": _written(spark, cfg, before, stage.outputs),
              "quarantined": _written(spark, cfg, before, (schemas.QUARANTINE,)),
              "seconds": round(time.monotonic() - started, 1)}
    log.info("stage %s: rows in %s, rows out %s, quarantined %s, %s", name, f"{record['rows_in']:,}",
             f"{record['rows_out']:,}", f"{record['quarantined']:,}", fmt_duration(record["seconds"]))
    _append(spark, cfg, run_id, record, started_at, _outputs_state(spark, cfg, stage), summary)
    tracking.log_stage(cfg, record, summary)
    return summary


def _append(spark, cfg: Config, run_id: str, record: dict, started_at, outputs: dict, summary) -> None:
    row = (run_id, record["stage"], record["status"], record["fingerprint"], json.dumps(outputs),
           record.get("rows_in"), record.get("rows_out"), record.get("quarantined"), record["seconds"],
           started_at, utc_now(), record.get("error"),
           json.dumps(summary, default=str) if summary is not None else None)
    tables.append(spark.createDataFrame([row], schemas.STAGE_RUNS.schema), cfg, schemas.STAGE_RUNS)


def write_summary(spark, cfg: Config, run_id: str, summary: dict) -> str:
    """The pipeline run's summary as <root>/runs/<run_id>.json; returns its path."""
    path = join(cfg.storage.root, "runs", f"{run_id}.json")
    storage.write_text(spark, path, json.dumps(summary, indent=2, default=str))
    return path


def stage_records(spark, cfg: Config, run_id: str) -> list[dict]:
    if not tables.exists(spark, cfg, schemas.STAGE_RUNS):  # a run with no stage to run
        return []
    rows = tables.read(spark, cfg, schemas.STAGE_RUNS).where(f"run_id = '{run_id}'").orderBy("finished_at").collect()
    keep = ("stage", "status", "rows_in", "rows_out", "quarantined", "seconds", "error")
    return [{k: r[k] for k in keep if r[k] is not None} for r in rows]



def pipeline(spark, cfg: Config, args: Namespace) -> dict:
    """Every stage in order (or those of --stages), skipping those up to date.

    A stage whose outputs are complete for the same inputs and config is skipped
    (--no-resume or --force: run them all). Writes the run summary to <root>/runs/<run>.json."""
    wanted = getattr(args, "stages", None) or NAMES
    resume = getattr(args, "resume", True) and not getattr(args, "force", False)
    run_id = new_run_id()
    summary = {"run_id": run_id, "status": "running", "resume": resume, "stages": [],
               "config": cfg.to_dict(), "started_at": utc_now().isoformat() + "Z"}
    started = time.monotonic()
    results = {}
    with tracking.pipeline_run(cfg, run_id):
        try:
            for stage in STAGES:
                if stage.name in wanted and stage.runs_for(cfg):
                    results[stage.name] = execute(spark, cfg, stage, args, run_id, resume)
            summary["status"] = "done"
        except BaseException as err:
            summary["status"], summary["error"] = "failed", describe(err)
            raise
        finally:
            summary["seconds"] = round(time.monotonic() - started, 1)
            summary["stages"] = stage_records(spark, cfg, run_id)
            summary["results"] = results
            path = write_summary(spark, cfg, run_id, summary)
            log.info("pipeline %s %s in %s; run summary: %s", run_id, summary["status"],
                     fmt_duration(summary["seconds"]), path)
    return {"run_id": run_id, "summary": path,
            "stages": {r["stage"]: r["status"] for r in summary["stages"]}}
