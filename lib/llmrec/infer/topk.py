"""Blockwise top-K by inner product in Spark: exact, or approximate with faiss graphs.

Queries and corpus are each cut into blocks of about `block_rows` vectors (by a hash of
the id, so no global ordering is needed). A query block sits in a partition of its own;
the corpus blocks are spread over a few partitions (one, when there are enough query
blocks to keep every core busy). Each task streams one corpus partition's blocks past
one query block and keeps a running top K per query, so what leaves a task is at most
K rows per query and corpus partition: the shuffle is queries x K (x corpus partitions),
not queries x corpus blocks x K. Memory per task is one query block, one corpus block,
their score matrix and the running top K, whatever the catalog size. Ties are broken by
the smaller corpus id, so results are deterministic.

A query may carry ids to leave out (items the user already has, the item itself).

`index="faiss"` swaps the exact product for an HNSW graph (faiss IndexHNSWFlat, inner
product), the roles turned round: a task holds one corpus block's graph, built once,
and streams query blocks past it, each query searched for k plus its excluded count;
a window merges the corpus blocks' top Ks (queries x corpus blocks x K rows: a graph
holds `graph_rows` vectors, far more than a block, and pays off only over many).
Approximate (recall is measured in the tests), for catalogs where queries x corpus
multiplications are too many.
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from llmrec.frames import best_per

RESULT = T.StructType([T.StructField("qid", T.LongType(), False),
                       T.StructField("cid", T.LongType(), False),
                       T.StructField("score", T.DoubleType(), False),
                       T.StructField("rank", T.IntegerType(), False)])
ARROW_RESULT = pa.schema([pa.field("qid", pa.int64(), False), pa.field("cid", pa.int64(), False),
                          pa.field("score", pa.float64(), False), pa.field("rank", pa.int32(), False)])


NO_ID = np.iinfo(np.int64).max  # an empty slot's id: after every real id in a tie


class RunningTopK:
    """Each query's best k (score desc, then id asc) over the corpus blocks seen so far."""

    def __init__(self, n_queries: int, k: int):
        self.k = k
        self.scores = np.full((n_queries, k), -np.inf, np.float32)  # per row, best first
        self.ids = np.full((n_queries, k), NO_ID, np.int64)

    def add(self, scores: np.ndarray, c_ids: np.ndarray) -> None:
        """Merges one corpus block's scores (queries x block; -inf = left out)."""
        k, n = self.k, scores.shape[1]
        if k == 0 or n == 0:
            return
        # A score below the k-th best kept can never rise into the top k; a query with
        # fewer than k kept needs only this block's own k best (ties included: >=).
        floor = self.scores[:, -1].copy()
        short = np.isneginf(floor)
        if short.any():
            if n > k:
                floor[short] = np.partition(scores[short], n - k, axis=1)[:, n - k]
            hit = (scores >= floor[:, None]) & (scores > -np.inf)
        else:
            hit = scores >= floor[:, None]
        # flatnonzero, not nonzero: ten times faster on a large, sparse mask.
        r, j = np.divmod(np.flatnonzero(hit), n)
        self.merge(r, c_ids[j], scores[r, j])

    def merge(self, r: np.ndarray, ids: np.ndarray, scores: np.ndarray) -> None:
        """Merges candidates given as (query row, corpus id, score), sorted by row."""
        if len(r) == 0:
            return
        k = self.k
        rows, first, counts = np.unique(r, return_index=True, return_counts=True)
        slot = np.arange(len(r)) - np.repeat(first, counts)
        at = np.repeat(np.arange(len(rows)), counts)
        new_s = np.full((len(rows), counts.max()), -np.inf, np.float32)
        new_i = np.full(new_s.shape, NO_ID, np.int64)
        new_s[at, slot], new_i[at, slot] = scores, ids
        s = np.concatenate([self.scores[rows], new_s], axis=1)
        i = np.concatenate([self.ids[rows], new_i], axis=1)
        by_id = np.argsort(i, axis=1, kind="stable")  # then a stable sort by score: ties by id
        s, i = np.take_along_axis(s, by_id, 1), np.take_along_axis(i, by_id, 1)
        best = np.argsort(-s, axis=1, kind="stable")[:, :k]
        self.scores[rows], self.ids[rows] = np.take_along_axis(s, best, 1), np.take_along_axis(i, best, 1)

    def result(self):
        """(query row, corpus id, score, rank from 1) arrays, by query then rank."""
        rows, cols = np.nonzero(self.scores > -np.inf)
        return rows, self.ids[rows, cols], self.scores[rows, cols].astype(np.float64), cols + 1


def best_k(scores: np.ndarray, c_ids: np.ndarray, k: int):
    """Per row of one score matrix, the k highest scores (ties: smaller id first) -> (row, id, score)."""
    top = RunningTopK(scores.shape[0], k)
    top.add(scores, np.asarray(c_ids, dtype=np.int64))
    rows, ids, vals, _ = top.result()
    return rows, ids, vals


def _blocks(df: DataFrame, id_col: str, vec_col: str, blocks: int, parts: int,
            exclude_col: str | None = None) -> DataFrame:
    """(block, ids, vectors flattened[, excluded]): one row per block, the blocks in `parts`
    partitions by range (one block each when parts = blocks)."""
    row = [F.col(id_col).alias("id"), F.col(vec_col).cast("array<float>").alias("v")]
    if exclude_col:
        row.append(F.col(exclude_col).cast("array<long>").alias("x"))
    # Partitioned before packing: the range sampling then reads small rows, and the
    # packing happens once, in the partition the block stays in.
    packed = df.select(F.pmod(F.xxhash64(F.col(id_col)), F.lit(blocks)).alias("block"),
                       F.struct(*row).alias("row")) \
        .repartitionByRange(parts, "block") \
        .groupBy("block").agg(F.collect_list("row").alias("rows"))
    cols = ["block", F.col("rows.id").alias("ids"), F.flatten("rows.v").alias("vectors")]
    if exclude_col:
        cols.append(F.col("rows.x").alias("excluded"))
    return packed.select(*cols)


class Block:
    """One block of one side, out of an Arrow pair row: ids, vectors, and the (row, id)
    pairs of what its queries leave out."""

    def __init__(self, batch: pa.RecordBatch, i: int, side: str, excluding: bool = False):
        self.ids = batch.column(f"{side}_ids")[i].values.to_numpy().astype(np.int64)
        self.vectors = batch.column(f"{side}_vectors")[i].values.to_numpy(zero_copy_only=False) \
            .astype(np.float32).reshape(len(self.ids), -1)
        self.x_rows = self.x_ids = np.empty(0, np.int64)
        if excluding:
            lists = batch.column("excluded")[i].values  # one list (or null) per query
            lengths = pc.fill_null(lists.value_lengths(), 0).to_numpy()
            self.x_rows = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
            self.x_ids = lists.flatten().to_numpy().astype(np.int64)

    def sorted(self) -> "Block":
        """The same block by ascending id (what _mask searches)."""
        order = np.argsort(self.ids, kind="stable")
        self.ids, self.vectors = self.ids[order], self.vectors[order]
        return self


def _mask(scores: np.ndarray, c_ids: np.ndarray, x_rows: np.ndarray, x_ids: np.ndarray) -> None:
    """Sets scores[i, j] = -inf where (i, corpus id j) is an excluded pair (c_ids sorted)."""
    if len(x_ids) == 0:
        return
    pos = np.searchsorted(c_ids, x_ids)
    hit = pos < len(c_ids)
    hit[hit] = c_ids[pos[hit]] == x_ids[hit]
    scores[x_rows[hit], pos[hit]] = -np.inf


def _keys(rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(row, id) pairs as one 16-byte key each, for np.isin."""
    pairs = np.ascontiguousarray(np.stack([rows.astype(np.int64), ids.astype(np.int64)], axis=1))
    return pairs.view(np.dtype((np.void, 16))).ravel()


def _graph(c: np.ndarray):
    import faiss

    faiss.omp_set_num_threads(1)  # one Spark task, one core
    graph = faiss.IndexHNSWFlat(c.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    graph.add(np.ascontiguousarray(c))
    return graph


def _search(graph, c_ids: np.ndarray, q: Block, k: int, ef_search: int) -> RunningTopK:
    """The best k of each query that an HNSW search of one corpus block finds. A query asks
    for k plus its exclusions that lie in this block; queries are searched in tiers of like
    width (powers of two), so one heavy user does not widen its whole block's search (nor
    deepen it: the search depth is ef_search, or the width where that is more)."""
    n = len(q.ids)
    inside = np.isin(q.x_ids, c_ids)
    left_out = _keys(q.x_rows[inside], q.x_ids[inside]) if inside.any() else None
    width = np.minimum(k + np.bincount(q.x_rows[inside], minlength=n), len(c_ids))
    tier = np.left_shift(1, np.ceil(np.log2(np.maximum(width, 1))).astype(np.int64))
    top = RunningTopK(n, k)
    for w in np.unique(tier):
        rows = np.flatnonzero(tier == w)
        want = int(min(w, len(c_ids)))
        graph.hnsw.efSearch = max(ef_search, want)
        found, where = graph.search(np.ascontiguousarray(q.vectors[rows]), want)
        r = np.repeat(rows, want)
        where, found = where.ravel(), found.ravel()
        ok = where >= 0
        r, ids, found = r[ok], c_ids[where[ok]], found[ok]
        if left_out is not None:
            keep = ~np.isin(_keys(r, ids), left_out)
            r, ids, found = r[keep], ids[keep], found[keep]
        top.merge(r, ids, found)
    return top


def _batch(q_ids: np.ndarray, top: RunningTopK) -> pa.RecordBatch:
    rows, ids, vals, rank = top.result()
    return pa.RecordBatch.from_arrays(
        [pa.array(q_ids[rows]), pa.array(ids), pa.array(vals), pa.array(rank.astype(np.int32))],
        schema=ARROW_RESULT)


# Arrow in and out (mapInArrow): a pair row's vectors reach numpy without pandas'
# per-row conversion, which cost more than the products themselves.
def _exact_kernel(k: int, excluding: bool):
    """Pairs (corpus block, query block): a running top K per query block, out at the end."""
    def top(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        held = {}  # query block -> (block, running top k): one per task
        for batch in batches:
            for i, q_block in enumerate(batch.column("q_block").to_pylist()):
                if q_block not in held:
                    q = Block(batch, i, "q", excluding)
                    held[q_block] = (q, RunningTopK(len(q.ids), k))
                q, running = held[q_block]
                c = Block(batch, i, "c").sorted()
                scores = q.vectors @ c.vectors.T
                _mask(scores, c.ids, q.x_rows, q.x_ids)
                running.add(scores, c.ids)
        for q, running in held.values():
            yield _batch(q.ids, running)

    return top


def _faiss_kernel(k: int, excluding: bool, ef_search: int):
    """Pairs (query block, corpus block): one graph per corpus block, each query block's
    top K in it out at once (the final window merges the corpus blocks)."""
    def top(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        graphs = {}  # corpus block -> (ids, graph): one per task
        for batch in batches:
            for i, c_block in enumerate(batch.column("c_block").to_pylist()):
                if c_block not in graphs:
                    c = Block(batch, i, "c")
                    graphs[c_block] = (c.ids, _graph(c.vectors))
                c_ids, graph = graphs[c_block]
                q = Block(batch, i, "q", excluding)
                yield _batch(q.ids, _search(graph, c_ids, q, k, ef_search))

    return top


def topk(queries: DataFrame, corpus: DataFrame, k: int, block_rows: int = 4096,
         query_id: str = "qid", corpus_id: str = "cid", vector: str = "vector",
         exclude: str | None = None, index: str = "exact", graph_rows: int = 250_000,
         ef_search: int = 256) -> DataFrame:
    """(qid, cid, score, rank): each query's k corpus rows of highest inner product.

    queries: (query_id, vector[, exclude array<long>]); corpus: (corpus_id, vector).
    Blocks of block_rows vectors; with index="faiss", graphs of graph_rows vectors searched
    ef_search deep (HNSW's efSearch: recall against time).
    """
    cores = queries.sparkSession.sparkContext.defaultParallelism
    q_blocks = max(1, math.ceil(queries.count() / block_rows))
    c_blocks = max(1, math.ceil(corpus.count() / (block_rows if index == "exact" else graph_rows)))
    # A cartesian product, never a broadcast: each task pairs a partition of one side,
    # streamed, with one block of the other, held (in the JVM and by the kernel).
    # Enough tasks for every core twice over, and no more streamed partitions than that.
    if index == "exact":  # hold a query block, stream the corpus past it
        q_parts, c_parts = q_blocks, min(c_blocks, max(1, math.ceil(2 * cores / q_blocks)))
    else:  # hold a corpus block's graph (built once), stream the queries past it
        q_parts, c_parts = min(q_blocks, max(1, math.ceil(2 * cores / c_blocks))), c_blocks
    q = _blocks(queries, query_id, vector, q_blocks, q_parts, exclude) \
        .select(F.col("block").alias("q_block"), F.col("ids").alias("q_ids"), F.col("vectors").alias("q_vectors"),
                *(["excluded"] if exclude else []))
    c = _blocks(corpus, corpus_id, vector, c_blocks, c_parts) \
        .select(F.col("block").alias("c_block"), F.col("ids").alias("c_ids"), F.col("vectors").alias("c_vectors"))
    if index == "exact":
        found = c.hint("shuffle_replicate_nl").crossJoin(q).mapInArrow(_exact_kernel(k, exclude is not None), RESULT)
        final = c_parts == 1  # each query's whole corpus went through one task
    else:
        kernel = _faiss_kernel(k, exclude is not None, ef_search)
        found = q.hint("shuffle_replicate_nl").crossJoin(c).mapInArrow(kernel, RESULT)
        final = c_blocks == 1
    if final:
        return found
    return best_per(found, "qid", k, tie="cid")
