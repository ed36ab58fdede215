"""Tokenized shards: gold.examples -> Parquet files the training readers consume.

Each Spark task tokenizes its rows with the model's fast tokenizer (loaded once per
Python worker) and writes shard files with pyarrow, in row groups of exactly
`tokenize.row_group_rows` rows (the unit readers assign to ranks) and at most
`rows_per_file` rows a file, so the manifest's row counts come from the writers
themselves. Layout under <root>/shards/:

  <build>/<split>/part-<partition>-<attempt>-<n>.parquet   a task's files
  manifest.json                                       written last: the files that count

A build directory is named after a checksum of the examples' content and the
tokenization settings; a rerun with the same inputs finds the manifest up to date and
does nothing.
Files of failed task attempts and of older builds are deleted once the manifest names
the new build.
"""
from __future__ import annotations

import functools
import json
import math
import operator
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from llmrec import stamps, storage, tables
from llmrec.conf import Config, join
from llmrec.progress import log
from llmrec.tables.schemas import EXAMPLES
from llmrec.train import model as model_mod

TOKEN_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")
SHARD_COLUMNS = TOKEN_COLUMNS + ("label", "user_idx", "item_idx")
FORMAT = 1

# Fields nullable: pandas UDF results come back as nullable, and Spark checks the match.
TOKENS_TYPE = T.StructType([T.StructField(c, T.ArrayType(T.IntegerType(), False), True)
                            for c in TOKEN_COLUMNS])
FILES_SCHEMA = T.StructType([
    T.StructField("split", T.StringType()), T.StructField("path", T.StringType()),
    T.StructField("rows", T.LongType()), T.StructField("row_groups", T.ArrayType(T.LongType())),
    T.StructField("positives", T.LongType()), T.StructField("tokens", T.LongType()),
    T.StructField("seconds", T.DoubleType()),
])


def encode(tokenizer, first: list[str], second: list[str], max_length: int,
           truncation: str) -> dict[str, np.ndarray]:
    """Pairs -> int32 arrays (rows, max_length), padded to max_length."""
    enc = model_mod.tokenize_pairs(tokenizer, first, second, max_length, truncation,
                                   "max_length", "np")
    return {c: enc[c].astype(np.int32) for c in TOKEN_COLUMNS}


def tokenize_udf(name_or_path: str, max_length: int, truncation: str):
    """A scalar-iterator pandas UDF (user_text, item_text) -> struct of token arrays."""

    @F.pandas_udf(TOKENS_TYPE)
    def tokenize(batches: Iterator[tuple[pd.Series, pd.Series]]) -> Iterator[pd.DataFrame]:
        tok = model_mod.load_tokenizer(name_or_path)
        for first, second in batches:
            enc = encode(tok, first.tolist(), second.tolist(), max_length, truncation)
            yield pd.DataFrame({c: list(enc[c]) for c in TOKEN_COLUMNS})

    return tokenize


def arrow_table(enc: dict[str, np.ndarray], pdf: pd.DataFrame):
    """The shard schema as a pyarrow Table (token arrays as list<int32>)."""
    import pyarrow as pa

    cols = {}
    for c in TOKEN_COLUMNS:
        a = enc[c]
        offsets = pa.array(np.arange(0, a.size + 1, a.shape[1], dtype=np.int32))
        cols[c] = pa.ListArray.from_arrays(offsets, pa.array(a.reshape(-1)))
    cols["label"] = pa.array(pdf["label"].to_numpy(np.int32))
    cols["user_idx"] = pa.array(pdf["user_idx"].to_numpy(np.int64))
    cols["item_idx"] = pa.array(pdf["item_idx"].to_numpy(np.int64))
    return pa.table(cols)


class _ShardFiles:
    """One task's shard files of a split: row groups of exactly `group_rows` rows (the last
    may be short), at most `file_rows` rows a file; `done` lists the closed files."""

    def __init__(self, fs, root: str, build: str, split: str, ctx, group_rows: int, file_rows: int):
        self.fs, self.root, self.build, self.split, self.ctx = fs, root, build, split, ctx
        self.group_rows, self.file_rows = group_rows, file_rows
        self.pending = None  # rows not yet in a whole row group
        self.current = None  # the open file: writer, path, row groups, counts
        self.done: list[dict] = []

    def add(self, table) -> None:
        import pyarrow as pa

        self.pending = table if self.pending is None else pa.concat_tables([self.pending, table])
        self._write_groups(final=False)

    def finish(self) -> list[dict]:
        if self.pending is not None:
            self._write_groups(final=True)
        if self.current is not None:
            self._close()
        return self.done

    def _open(self, schema) -> None:
        import pyarrow.parquet as pq

        # The attempt id keeps a retried task from writing over its failed twin.
        rel = (f"{self.build}/{self.split}/part-{self.ctx.partitionId():05d}-{self.ctx.taskAttemptId()}"
               f"-{len(self.done):03d}.parquet")
        self.fs.create_dir(f"{self.root}/{self.build}/{self.split}", recursive=True)
        self.current = {"split": self.split, "path": rel, "rows": 0, "row_groups": [], "positives": 0,
                        "tokens": 0, "writer": pq.ParquetWriter(self.fs.open_output_stream(f"{self.root}/{rel}"),
                                                                schema)}

    def _close(self) -> None:
        self.current["writer"].close()
        self.done.append({k: self.current[k] for k in ("split", "path", "rows", "row_groups", "positives",
                                                        "tokens")})
        self.current = None

    def _write_groups(self, final: bool) -> None:
        import pyarrow.compute as pc

        while self.pending.num_rows >= self.group_rows or (final and self.pending.num_rows):
            n = min(self.group_rows, self.pending.num_rows)
            group, self.pending = self.pending.slice(0, n), self.pending.slice(n)
            if self.current is None:
                self._open(group.schema)
            self.current["writer"].write_table(group, row_group_size=n)
            self.current["rows"] += n
            self.current["row_groups"].append(n)
            self.current["positives"] += pc.sum(group["label"]).as_py() or 0
            self.current["tokens"] += pc.sum(pc.list_flatten(group["attention_mask"])).as_py() or 0
            if self.current["rows"] >= self.file_rows:
                self._close()


def _shard_writer(base: str, build: str, name_or_path: str, max_length: int, truncation: str,
                  row_group_rows: int, rows_per_file: int):
    """mapInPandas body: tokenizes a partition (one split) into files of whole, exact row groups."""
    file_rows = max(1, rows_per_file // row_group_rows) * row_group_rows

    def write(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from pyspark import TaskContext

        tok = model_mod.load_tokenizer(name_or_path)
        fs, root = storage.arrow_fs(base)
        t0 = time.perf_counter()
        files = None
        for pdf in batches:
            if pdf.empty:
                continue
            if files is None:
                files = _ShardFiles(fs, root, build, pdf["split"].iloc[0], TaskContext.get(), row_group_rows,
                                    file_rows)
            enc = encode(tok, pdf["user_text"].tolist(), pdf["item_text"].tolist(), max_length, truncation)
            files.add(arrow_table(enc, pdf))
        done = files.finish() if files is not None else []
        seconds = time.perf_counter() - t0
        if done:
            yield pd.DataFrame([dict(f, seconds=seconds / len(done)) for f in done])

    return write


def examples_checksum(examples: DataFrame) -> tuple[str, dict[str, int]]:
    """(Row count and XOR of row hashes, rows per split), in one pass. The checksum is the
    same for the same rows in any order or version (the examples job rewrites its table on
    every run; identical content must not invalidate the shards and the model trained on them)."""
    per_split = examples.groupBy("split").agg(F.count("*").alias("n"),
                                              F.bit_xor(F.xxhash64(*examples.columns)).alias("x")).collect()
    counts = {r["split"]: r["n"] for r in per_split}
    xor = functools.reduce(operator.xor, (r["x"] for r in per_split), 0)
    return f"{sum(counts.values())}-{xor & 0xFFFFFFFFFFFFFFFF:016x}", counts


def fingerprint(checksum: str, vocab_sha: str, cfg: Config) -> str:
    key = {"format": FORMAT, "examples": checksum, "vocab": vocab_sha, "model": cfg.model.name_or_path,
           "tokenize": cfg.tokenize.__dict__}
    if cfg.group_size > 1:  # the listwise layout (pointwise shards keep their fingerprint)
        key["group_size"] = cfg.group_size
    return stamps.fingerprint(key)


def manifest_path(cfg: Config) -> str:
    return join(storage.absolute(cfg.storage.root), "shards", "manifest.json")


def read_manifest(path: str) -> dict | None:
    """The manifest at `path` (local or URI), or None if there is none."""
    fs, p = storage.arrow_fs(path)
    try:
        with fs.open_input_stream(p) as fh:
            return json.loads(fh.read().decode())
    except FileNotFoundError:
        return None


def _split_frame(examples: DataFrame, split: str, rows: int, conf, seed: int, grouped: bool) -> DataFrame:
    files = max(1, math.ceil(rows / conf.rows_per_file))
    part = examples.where(F.col("split") == split).repartition(files, "user_idx", "target_idx")
    if grouped:
        # Listwise: a target's group stays together, its positive first (row groups are
        # whole groups: a task's rows are, and row_group_rows is a multiple of the size).
        return part.sortWithinPartitions(F.xxhash64(F.lit(seed), "user_idx", "target_idx"), "user_idx",
                                         "target_idx", F.col("label").desc(), "item_idx")
    # Rows mixed by a seeded hash so each row group holds many users (readers shuffle
    # row groups and rows within them; that alone would keep a user's rows together).
    return part.sortWithinPartitions(F.xxhash64(F.lit(seed), "user_idx", "target_idx", "item_idx"))


def build(spark: SparkSession, cfg: Config, force: bool = False) -> dict:
    """Tokenizes gold.examples into shards + manifest.json; returns the manifest."""
    conf = cfg.tokenize
    tok = model_mod.load_tokenizer(cfg.model.name_or_path)
    vocab_sha = model_mod.vocab_hash(tok)
    examples = tables.read(spark, cfg, EXAMPLES)
    checksum, counts = examples_checksum(examples)
    fp = fingerprint(checksum, vocab_sha, cfg)
    base = join(storage.absolute(cfg.storage.root), "shards")
    current = read_manifest(manifest_path(cfg))
    if current and current.get("fingerprint") == fp and not force:
        log.info("tokenize: shards are up to date (build %s); nothing to do", current["build"])
        return current

    build_id = f"build-{fp}"
    writer = _shard_writer(base, build_id, cfg.model.name_or_path, conf.max_length,
                           conf.truncation, conf.row_group_rows, conf.rows_per_file)
    t0 = time.perf_counter()

    def write_split(split: str) -> list[dict]:
        part = _split_frame(examples, split, counts[split], conf, cfg.examples.seed, cfg.group_size > 1)
        return [r.asDict() for r in part.mapInPandas(writer, FILES_SCHEMA).collect()]

    # One Spark job per split, submitted together: the small val and test splits (a file
    # or two each) run on the cores the train split leaves free instead of one after another.
    with ThreadPoolExecutor(len(counts) or 1) as pool:
        files = [f for split_files in pool.map(write_split, sorted(counts)) for f in split_files]
    seconds = time.perf_counter() - t0

    splits = {}
    for split in sorted(counts):
        mine = sorted((f for f in files if f["split"] == split), key=lambda f: f["path"])
        rows = sum(f["rows"] for f in mine)
        if rows != counts[split]:
            raise RuntimeError(f"tokenize: split {split} wrote {rows} rows, gold.examples has "
                               f"{counts[split]}")
        splits[split] = {"rows": rows, "positives": sum(f["positives"] for f in mine),
                         "tokens": sum(f["tokens"] for f in mine),
                         "files": [{"path": f["path"], "rows": f["rows"],
                                    "row_groups": list(f["row_groups"])} for f in mine]}
    tokens = sum(s["tokens"] for s in splits.values())
    manifest = {
        "format": FORMAT, "build": build_id, "fingerprint": fp, "created_at": time.time(),
        "examples_version": tables.version(spark, cfg, EXAMPLES), "examples_checksum": checksum,
        "model": cfg.model.name_or_path,
        "tokenizer": {"name": model_mod.tokenizer_dir(cfg.model.name_or_path).rstrip("/"),
                      "class": type(tok).__name__, "vocab_size": len(tok), "vocab_sha256": vocab_sha},
        "max_length": conf.max_length, "truncation": conf.truncation,
        "row_group_rows": conf.row_group_rows, "group_size": cfg.group_size, "columns": list(SHARD_COLUMNS),
        "splits": splits,
        "stats": {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
                  "rows_per_s": sum(counts.values()) / seconds,
                  "task_seconds": sum(f["seconds"] for f in files)},
    }
    storage.write_text(spark, manifest_path(cfg), json.dumps(manifest, indent=1))
    _remove_unlisted(base, manifest)
    return manifest


def _remove_unlisted(base: str, manifest: dict) -> None:
    """Deletes older builds and files of failed task attempts (not in the manifest)."""
    import pyarrow.fs as pafs

    fs, root = storage.arrow_fs(base)
    listed = {f"{root}/{f['path']}" for s in manifest["splits"].values() for f in s["files"]}
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=False)):
        if info.type == pafs.FileType.Directory and info.base_name != manifest["build"]:
            fs.delete_dir(info.path)
    for info in fs.get_file_info(pafs.FileSelector(f"{root}/{manifest['build']}", recursive=True)):
        if info.type == pafs.FileType.File and info.path not in listed:
            fs.delete_file(info.path)
