"""Shard readers for training: each rank reads a disjoint set of row groups.

Row groups of a split, in manifest order (files sorted, groups in file order), are dealt
out round-robin: rank r gets groups r, r + size, r + 2*size, ... Both readers follow
that rule, so each rank knows from the manifest alone how many rows it must read, and
both check it: a reader that read a different number of rows raises ShardError (the
petastorm thread pool was seen returning 0 rows for a shard without an error).

  petastorm  make_batch_reader (cur_shard/shard_count; the dummy pool, see above)
  pyarrow    plain pyarrow.parquet, for stacks where petastorm can't run (pyarrow >= 15)

Listwise shards (manifest group_size G > 1) hold each target's group as G consecutive
rows, its positive first, in row groups of whole groups: the shuffle moves whole groups,
and with a batch size that is a multiple of G every batch holds whole groups.
"""
from __future__ import annotations

import warnings
from typing import Iterator

import numpy as np

from llmrec import storage
from llmrec.conf import join

COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "label", "user_idx", "item_idx")


class ShardError(RuntimeError):
    """A shard is missing, unreadable, or holds a different number of rows than the manifest."""


def row_groups(manifest: dict, split: str) -> list[tuple[str, int, int]]:
    """(file, group index, rows) of a split, in the order readers deal them out."""
    if split not in manifest["splits"]:
        raise ShardError(f"the manifest has no split {split!r} (has {', '.join(manifest['splits'])})")
    files = sorted(manifest["splits"][split]["files"], key=lambda f: f["path"])
    return [(f["path"], i, n) for f in files for i, n in enumerate(f["row_groups"])]


def rank_rows(manifest: dict, split: str, rank: int, size: int) -> int:
    return sum(n for _, _, n in row_groups(manifest, split)[rank::size])


def check_files(base: str, manifest: dict, split: str) -> None:
    """Every file of the split exists, has a readable footer and the manifest's row count."""
    import pyarrow.parquet as pq

    fs, root = storage.arrow_fs(base)
    for f in manifest["splits"][split]["files"]:
        path = f"{root}/{f['path']}"
        try:
            with fs.open_input_file(path) as fh:
                rows = pq.ParquetFile(fh).metadata.num_rows
        except FileNotFoundError:
            raise ShardError(f"shard file missing: {path} (listed in the manifest; rerun tokenize)") from None
        except Exception as err:  # noqa: BLE001  (pyarrow raises several kinds)
            raise ShardError(f"shard file unreadable: {path}: {err}") from None
        if rows != f["rows"]:
            raise ShardError(f"shard file {path} has {rows} rows, the manifest says {f['rows']}")


def _rebatch(chunks: Iterator[dict], batch_size: int) -> Iterator[dict]:
    """Fixed-size batches out of arbitrary-size chunks (the last batch may be smaller)."""
    buf: list[dict] = []
    held = 0
    for chunk in chunks:
        buf.append(chunk)
        held += len(chunk["label"])
        while held >= batch_size:
            merged = {k: np.concatenate([c[k] for c in buf]) for k in COLUMNS}
            yield {k: v[:batch_size] for k, v in merged.items()}
            rest = {k: v[batch_size:] for k, v in merged.items()}
            buf, held = [rest], len(rest["label"])
    if held:
        yield {k: np.concatenate([c[k] for c in buf]) for k in COLUMNS}


class ShardReader:
    """Iterates one rank's part of a split as numpy batches; one pass is one epoch.

    `rows_read` holds the count of the last pass; a pass that ends with a count other
    than the manifest's for this rank raises ShardError.
    """

    def __init__(self, base: str, manifest: dict, split: str, rank: int = 0, size: int = 1,
                 batch_size: int = 32, shuffle: bool = False, seed: int = 0):
        self.base, self.manifest, self.split = storage.absolute(base), manifest, split
        self.rank, self.size, self.batch_size = rank, size, batch_size
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.group_size = int(manifest.get("group_size", 1))
        self.all_groups = row_groups(manifest, split)
        self.groups = self.all_groups[rank::size]
        self.expected = sum(n for _, _, n in self.groups)
        self.rows_read = 0
        check_files(self.base, manifest, split)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches_per_epoch(self) -> int:
        return -(-self.expected // self.batch_size)

    def _chunks(self) -> Iterator[dict]:
        raise NotImplementedError

    def _shuffled(self, chunks: Iterator[dict]) -> Iterator[dict]:
        rng = np.random.default_rng([self.seed, self.epoch, self.rank])
        g = self.group_size
        for chunk in chunks:
            n = len(chunk["label"])
            if n % g:
                raise ShardError(f"a row group of {n} rows does not hold whole groups of {g}")
            # whole groups move; rows keep their order within a group
            order = (rng.permutation(n // g)[:, None] * g + np.arange(g)).reshape(-1)
            yield {k: v[order] for k, v in chunk.items()}

    def __iter__(self) -> Iterator[dict]:
        self.rows_read = 0
        chunks = self._chunks()
        if self.shuffle:
            chunks = self._shuffled(chunks)
        for batch in _rebatch(chunks, self.batch_size):
            self.rows_read += len(batch["label"])
            yield batch
        if self.rows_read != self.expected:
            raise ShardError(
                f"{type(self).__name__}: rank {self.rank}/{self.size} read {self.rows_read} rows "
                f"of split {self.split}, the manifest says {self.expected} "
                f"({len(self.groups)} row groups of build {self.manifest['build']})")


class ArrowReader(ShardReader):
    def _chunks(self) -> Iterator[dict]:
        import pyarrow.parquet as pq

        fs, root = storage.arrow_fs(self.base)
        groups = list(self.groups)
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            groups = [groups[i] for i in rng.permutation(len(groups))]
        for rel, index, rows in groups:
            path = f"{root}/{rel}"
            try:
                with fs.open_input_file(path) as fh:
                    table = pq.ParquetFile(fh).read_row_group(index, columns=list(COLUMNS))
            except Exception as err:  # noqa: BLE001
                raise ShardError(f"reading row group {index} of {path}: {err}") from None
            if table.num_rows != rows:
                raise ShardError(f"row group {index} of {path} has {table.num_rows} rows, "
                                 f"the manifest says {rows}")
            yield to_numpy(table)


class PetastormReader(ShardReader):
    def _chunks(self) -> Iterator[dict]:
        from petastorm import make_batch_reader

        if not self.groups:
            return
        files = sorted({rel for rel, _, _ in self.all_groups})
        urls = [_url(join(self.base, rel)) for rel in files]
        # petastorm on pyarrow 14 warns about pyarrow's legacy dataset API on every read.
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm\.")
        # petastorm refuses more shards than row groups; with fewer groups than ranks, rank
        # r < groups gets group r either way.
        shards = min(self.size, len(self.all_groups))
        reader = make_batch_reader(urls, cur_shard=self.rank, shard_count=shards,
                                   reader_pool_type="dummy", num_epochs=1,
                                   # No shard_seed: it would reshuffle which groups a rank gets.
                                   shuffle_row_groups=self.shuffle, seed=self.seed + self.epoch,
                                   schema_fields=list(COLUMNS))
        try:
            for b in reader:
                yield {k: np.asarray(getattr(b, k)) for k in COLUMNS}
        finally:
            reader.stop()
            reader.join()  # not cleanup_cache(): there is no cache, it only prints a line


def _url(path: str) -> str:
    return "file://" + path if storage.is_local(path) and not path.startswith("file:") else path


def to_numpy(table) -> dict:
    """A pyarrow table of the shard columns -> dict of numpy arrays, token lists as 2-D."""
    out = {}
    for name in COLUMNS:
        col = table.column(name).combine_chunks()
        if name in ("label", "user_idx", "item_idx"):
            out[name] = col.to_numpy()
        else:
            values = col.flatten().to_numpy()
            out[name] = values.reshape(len(col), -1) if len(col) else values.reshape(0, 0)
    return out


def open_reader(kind: str, base: str, manifest: dict, split: str, **kwargs) -> ShardReader:
    readers = {"petastorm": PetastormReader, "pyarrow": ArrowReader}
    if kind not in readers:
        raise ValueError(f"train.reader must be one of {', '.join(readers)}, got {kind!r}")
    return readers[kind](base, manifest, split, **kwargs)
