"""Exact blockwise top-K by inner product, in Spark.

Queries and corpus are each cut into blocks of about `block_rows` vectors (by a hash of
the id, so no global ordering is needed); every (query block, corpus block) pair is one
task that multiplies the two matrices and keeps each query's best K of that corpus
block; a window then keeps each query's best K overall. Memory per task is two blocks
and their score matrix, whatever the catalog size; work is queries x corpus, spread
over all cores. Ties are broken by the smaller corpus id, so results are deterministic.

A query may carry ids to leave out (items the user already has, the item itself).

`index="faiss"` swaps the exact product for an HNSW graph (faiss IndexHNSWFlat, inner
product) built per corpus block and searched for k plus the query's excluded count:
approximate (recall is measured in the tests), for catalogs where queries x corpus
multiplications are too many; use large `block_rows` with it, since a graph pays off
only over many vectors.
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

RESULT = T.StructType([T.StructField("qid", T.LongType(), False),
                       T.StructField("cid", T.LongType(), False),
                       T.StructField("score", T.DoubleType(), False)])


def _blocks(df: DataFrame, id_col: str, vec_col: str, block_rows: int, prefix: str,
            exclude_col: str | None = None) -> DataFrame:
    n = df.count()
    blocks = max(1, math.ceil(n / block_rows))
    cols = [F.col(id_col).alias("id"), F.col(vec_col).alias("v")]
    if exclude_col:
        cols.append(F.col(exclude_col).alias("x"))
    return df.select(F.pmod(F.xxhash64(F.col(id_col)), F.lit(blocks)).alias(f"{prefix}_block"),
                     F.struct(*cols).alias("row")) \
        .groupBy(f"{prefix}_block").agg(F.collect_list("row").alias(f"{prefix}_rows"))


def _mask(scores: np.ndarray, c_ids: np.ndarray, excluded: list) -> None:
    """Sets scores[i, j] = -inf where corpus id j is in query i's excluded ids (c_ids sorted)."""
    lists = [np.asarray(x if x is not None else [], dtype=np.int64) for x in excluded]
    if not any(len(x) for x in lists):
        return
    rows = np.repeat(np.arange(len(lists)), [len(x) for x in lists])
    ids = np.concatenate(lists)
    pos = np.searchsorted(c_ids, ids)
    hit = pos < len(c_ids)
    hit[hit] = c_ids[pos[hit]] == ids[hit]
    scores[rows[hit], pos[hit]] = -np.inf


def best_k(scores: np.ndarray, c_ids: np.ndarray, k: int):
    """Per row, the k highest scores (ties: smaller id first) -> (row, id, score) arrays."""
    n = scores.shape[1]
    k = min(k, n)
    if k == 0:
        return (np.empty(0, np.int64),) * 2 + (np.empty(0),)
    kth = np.partition(scores, n - k, axis=1)[:, n - k]
    rows, ids, vals = [], [], []
    for i in range(scores.shape[0]):
        cand = np.nonzero(scores[i] >= kth[i])[0]  # every tie at the boundary included
        cand = cand[np.isfinite(scores[i, cand])]
        cand = cand[np.lexsort((c_ids[cand], -scores[i, cand]))][:k]
        rows.append(np.full(len(cand), i))
        ids.append(c_ids[cand])
        vals.append(scores[i, cand])
    return np.concatenate(rows), np.concatenate(ids), np.concatenate(vals)


def _faiss_scores(q: np.ndarray, c: np.ndarray, excluded: list, k: int) -> np.ndarray:
    """A scores matrix holding only what an HNSW search found (the rest -inf)."""
    import faiss

    faiss.omp_set_num_threads(1)  # one Spark task, one core
    index = faiss.IndexHNSWFlat(c.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efSearch = max(64, 2 * k)
    index.add(np.ascontiguousarray(c))
    extra = max((len(x) for x in excluded if x is not None), default=0)
    found, where = index.search(np.ascontiguousarray(q), min(k + extra, len(c)))
    scores = np.full((len(q), len(c)), -np.inf, dtype=np.float32)
    rows = np.repeat(np.arange(len(q)), where.shape[1])
    ok = where.ravel() >= 0
    scores[rows[ok], where.ravel()[ok]] = found.ravel()[ok]
    return scores


def _kernel(k: int, excluding: bool, index: str = "exact"):
    def top(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            for q_rows, c_rows in zip(pdf["q_rows"], pdf["c_rows"]):
                q_ids = np.array([r["id"] for r in q_rows], dtype=np.int64)
                c_ids = np.array([r["id"] for r in c_rows], dtype=np.int64)
                q = np.stack([np.asarray(r["v"], dtype=np.float32) for r in q_rows])
                c = np.stack([np.asarray(r["v"], dtype=np.float32) for r in c_rows])
                order = np.argsort(c_ids, kind="stable")
                c_ids, c = c_ids[order], c[order]
                excluded = [r["x"] for r in q_rows] if excluding else []
                scores = q @ c.T if index == "exact" else _faiss_scores(q, c, excluded, k)
                if excluding:
                    _mask(scores, c_ids, excluded)
                rows, ids, vals = best_k(scores, c_ids, k)
                yield pd.DataFrame({"qid": q_ids[rows], "cid": ids, "score": vals.astype(np.float64)})

    return top


def topk(queries: DataFrame, corpus: DataFrame, k: int, block_rows: int = 4096,
         query_id: str = "qid", corpus_id: str = "cid", vector: str = "vector",
         exclude: str | None = None, index: str = "exact") -> DataFrame:
    """(qid, cid, score, rank): each query's k corpus rows of highest inner product.

    queries: (query_id, vector[, exclude array<long>]); corpus: (corpus_id, vector).
    """
    q = _blocks(queries, query_id, vector, block_rows, "q", exclude)
    c = _blocks(corpus, corpus_id, vector, block_rows, "c")
    pairs = q.crossJoin(c)
    # One (query block, corpus block) pair per task: each row holds two whole blocks.
    n_pairs = pairs.count()
    pairs = pairs.repartition(max(1, n_pairs), "q_block", "c_block")
    scored = pairs.select("q_rows", "c_rows").mapInPandas(_kernel(k, exclude is not None, index), RESULT)
    best = Window.partitionBy("qid").orderBy(F.col("score").desc(), F.col("cid"))
    return scored.withColumn("rank", F.row_number().over(best)).where(F.col("rank") <= k)
