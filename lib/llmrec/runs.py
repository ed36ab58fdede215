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

import dataclasses
import datetime as dt
import hashlib
import json
import os
import time
import uuid
from typing import Callable

from llmrec import storage, tables, tracking
from llmrec.cli import describe
from llmrec.conf import Config, join
from llmrec.progress import fmt_duration, log
from llmrec.tables import schemas as T


@dataclasses.dataclass(frozen=True)
class StageIO:
    sections: tuple[str, ...]             # config sections that shape the outputs
    inputs: tuple[T.Table, ...] = ()
    outputs: tuple[T.Table, ...] = ()
    input_files: Callable[[Config], list[str]] = lambda cfg: []
    output_files: Callable[[Config], list[str]] = lambda cfg: []


def _raw(cfg: Config) -> list[str]:
    if cfg.source.kind == "synthetic":
        return [cfg.raw_root]
    return sorted(v for v in (cfg.source.paths or {}).values() if v)


def _shards(cfg: Config) -> list[str]:
    return [join(storage.absolute(cfg.storage.root), "shards")]


def _model(cfg: Config) -> list[str]:
    from llmrec.train.launch import output_dir

    return [output_dir(cfg)]


_BRONZE, _SILVER = tuple(T.BRONZE.values()), tuple(T.SILVER.values())
_ENCODE = ("model", "tokenize", "infer", "embed", "examples")
_EMBEDDINGS = (T.ITEM_EMBEDDINGS, T.USER_EMBEDDINGS)
IO = {
    "generate": StageIO(("source", "synthetic"), output_files=_raw),
    "ingest": StageIO(("source",), outputs=_BRONZE, input_files=_raw),
    "clean": StageIO(("source", "interactions"), _BRONZE, _SILVER),
    "interactions": StageIO(("interactions",), _SILVER, (T.USER_INDEX, T.ITEM_INDEX, T.INTERACTIONS),
                            output_files=lambda cfg: [join(cfg.storage.root, "export")]),
    "examples": StageIO(("interactions", "examples"), (T.INTERACTIONS, T.SILVER_ITEMS, T.ITEM_INDEX),
                        (T.EXAMPLES,)),
    "tokenize": StageIO(("examples", "tokenize", "model"), (T.EXAMPLES,), output_files=_shards),
    "train": StageIO(("model", "tokenize", "train"), input_files=_shards, output_files=_model),
    "embed": StageIO(_ENCODE, (T.SILVER_ITEMS, T.ITEM_INDEX, T.INTERACTIONS, T.USER_INDEX), _EMBEDDINGS),
    "candidates": StageIO(("candidates", "recommend", "interactions"),
                          (T.INTERACTIONS, T.ITEM_INDEX, *_EMBEDDINGS),
                          (T.ITEM_NEIGHBORS, T.POPULAR_ITEMS, T.CANDIDATES)),
    "recommend": StageIO(("recommend", "candidates", *_ENCODE), (T.CANDIDATES, T.INTERACTIONS, T.SILVER_ITEMS),
                         (T.RECOMMENDATIONS,), input_files=_model),
    "search": StageIO(("search", "candidates", *_ENCODE), (*_EMBEDDINGS, T.ITEM_INDEX), (T.SEARCH_RESULTS,),
                      input_files=lambda cfg: [cfg.search.queries]),
    "explain": StageIO(("explain", "recommend", *_ENCODE), (T.ITEM_EMBEDDINGS, T.INTERACTIONS),
                       (T.RECOMMENDATIONS,), input_files=_model),
    "evaluate": StageIO(("evaluate", "candidates", "recommend", "interactions", *_ENCODE),
                        (T.INTERACTIONS, T.CANDIDATES, T.RECOMMENDATIONS, T.EXAMPLES, T.ITEM_EMBEDDINGS),
                        (T.EVAL_METRICS,), input_files=_model),
}
ORDER = list(IO)
# Arguments that change what a stage does (the rest, like --conf, are in the config).
_ARGS_IGNORED = {"conf", "overrides", "stages", "force", "resume"}


def _versions(spark, cfg: Config, group: tuple[T.Table, ...]) -> dict[str, int | None]:
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
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]


def fingerprint(spark, cfg: Config, name: str, args) -> str:
    io = IO[name]
    settings = {s: cfg.to_dict()[s] for s in io.sections}
    arguments = {k: v for k, v in sorted(vars(args).items()) if k not in _ARGS_IGNORED and v}
    inputs = _versions(spark, cfg, tuple(t for t in io.inputs if t not in io.outputs))
    key = {"settings": settings, "args": arguments, "inputs": inputs,
           "files": files_signature(io.input_files(cfg)) if io.input_files(cfg) else ""}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _outputs_state(spark, cfg: Config, name: str) -> dict:
    io = IO[name]
    state: dict = _versions(spark, cfg, io.outputs)
    if io.output_files(cfg):
        state["files"] = files_signature(io.output_files(cfg))
    return state


def _done_runs(spark, cfg: Config) -> list[dict]:
    if not tables.exists(spark, cfg, T.STAGE_RUNS):
        return []
    rows = tables.read(spark, cfg, T.STAGE_RUNS).where("status = 'done'") \
        .select("stage", "fingerprint", "outputs", "finished_at").collect()
    return sorted((r.asDict() for r in rows), key=lambda r: r["finished_at"])


def is_done(spark, cfg: Config, name: str, fp: str) -> bool:
    """True when the stage's last successful run had fingerprint `fp` and its outputs are
    still as that run, or a later pipeline stage amending them, left them."""
    runs = _done_runs(spark, cfg)
    mine = [r for r in runs if r["stage"] == name]
    if not mine or mine[-1]["fingerprint"] != fp:
        return False
    last = mine[-1]
    current, recorded = _outputs_state(spark, cfg, name), json.loads(last["outputs"])
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
        if newest is not last and ORDER.index(newest["stage"]) <= ORDER.index(name):
            return False
    return True


def _rows(spark, cfg: Config, group: tuple[T.Table, ...]) -> int:
    # Delta answers count() from its log's statistics: no data is read.
    return sum(tables.read(spark, cfg, t).count() for t in group if tables.exists(spark, cfg, t))


def _written(spark, cfg: Config, before: dict[str, int | None], group: tuple[T.Table, ...]) -> int:
    return sum(tables.rows_written(spark, cfg, t, before.get(t.qualified)) for t in group
               if tables.exists(spark, cfg, t))


def execute(spark, cfg: Config, name: str, body: Callable, args, run_id: str,
            resume: bool = False) -> dict:
    """Runs one stage (or skips it, with resume), logs and records what it did."""
    if name not in IO:  # jobs that are not pipeline stages
        return body(spark, cfg, args) or {}
    io = IO[name]
    fp = fingerprint(spark, cfg, name, args)
    started_at, started = now(), time.monotonic()
    if resume and is_done(spark, cfg, name, fp):
        log.info("stage %s: skipped: its outputs are complete for the same inputs and config", name)
        record = {"stage": name, "status": "skipped", "fingerprint": fp, "seconds": 0.0}
        _append(spark, cfg, run_id, record, started_at, {}, None)
        return record
    watched = tuple(dict.fromkeys(io.outputs + (T.QUARANTINE,)))
    before = _versions(spark, cfg, watched)
    rows_in = _rows(spark, cfg, tuple(t for t in io.inputs if t not in io.outputs))
    try:
        summary = body(spark, cfg, args) or {}
    except BaseException as err:
        record = {"stage": name, "status": "failed", "fingerprint": fp, "rows_in": rows_in,
                  "seconds": round(time.monotonic() - started, 1),
                  "error": describe(err)}
        _append(spark, cfg, run_id, record, started_at, {}, None)
        raise
    record = {"stage": name, "status": "done", "fingerprint": fp, "rows_in": rows_in,
              "rows_out": _written(spark, cfg, before, io.outputs),
              "quarantined": _written(spark, cfg, before, (T.QUARANTINE,)),
              "seconds": round(time.monotonic() - started, 1)}
    log.info("stage %s: rows in %s, rows out %s, quarantined %s, %s", name, f"{record['rows_in']:,}",
             f"{record['rows_out']:,}", f"{record['quarantined']:,}", fmt_duration(record["seconds"]))
    _append(spark, cfg, run_id, record, started_at, _outputs_state(spark, cfg, name), summary)
    tracking.log_stage(cfg, record, summary)
    return summary


def _append(spark, cfg: Config, run_id: str, record: dict, started_at, outputs: dict, summary) -> None:
    row = (run_id, record["stage"], record["status"], record["fingerprint"], json.dumps(outputs),
           record.get("rows_in"), record.get("rows_out"), record.get("quarantined"), record["seconds"],
           started_at, now(), record.get("error"),
           json.dumps(summary, default=str) if summary is not None else None)
    tables.append(spark.createDataFrame([row], T.STAGE_RUNS.schema), cfg, T.STAGE_RUNS)


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def new_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def write_summary(spark, cfg: Config, run_id: str, summary: dict) -> str:
    """The pipeline run's summary as <root>/runs/<run_id>.json; returns its path."""
    path = join(cfg.storage.root, "runs", f"{run_id}.json")
    storage.write_text(spark, path, json.dumps(summary, indent=2, default=str))
    return path


def stage_records(spark, cfg: Config, run_id: str) -> list[dict]:
    if not tables.exists(spark, cfg, T.STAGE_RUNS):  # a run with no stage to run
        return []
    rows = tables.read(spark, cfg, T.STAGE_RUNS).where(f"run_id = '{run_id}'").orderBy("finished_at").collect()
    keep = ("stage", "status", "rows_in", "rows_out", "quarantined", "seconds", "error")
    return [{k: r[k] for k in keep if r[k] is not None} for r in rows]

