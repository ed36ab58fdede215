"""Semantic search: query texts (optionally with a user) -> top-K items.

1. The query is embedded with the item-embedding model; with a known user, their
   profile embedding is added (weight `search.profile_weight`) and the sum normalised.
2. The `search.retrieve` nearest items by cosine (exact blockwise top-K).
3. The cross-encoder reranks them: first text "Looking for: <query>." plus the user's
   history text when there is one, second text the item's.
final = blend x cross-encoder probability + (1 - blend) x (cosine + 1) / 2.

The batch job writes gold.search_results (one partition per batch, replaced on rerun);
llmrec.infer.api runs the same steps for one query in the driver (notebooks).
"""
from __future__ import annotations

import json
import os
from typing import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from llmrec import tables
from llmrec.conf import Config
from llmrec.frames import CacheScope, best_per
from llmrec.infer import backfill, engine, rank
from llmrec.infer.topk import topk
from llmrec.progress import log
from llmrec.tables.schemas import (
    ITEM_EMBEDDINGS, ITEM_INDEX, SEARCH_RESULTS, USER_EMBEDDINGS, USER_INDEX,
)

QUERY_SCHEMA = T.StructType([T.StructField("query_id", T.StringType(), False),
                             T.StructField("query", T.StringType(), False),
                             T.StructField("user_id", T.StringType(), True)])


def query_text(query: str, user_text: str | None) -> str:
    """The cross-encoder's first text for a search."""
    return f"Looking for: {query}." + (f" {user_text}" if user_text else "")


def personalise(query: np.ndarray, profile: np.ndarray | None, weight: float) -> np.ndarray:
    """normalize(query + weight x profile); the query alone without a profile."""
    if profile is None or weight == 0:
        return query
    v = np.asarray(query, dtype=np.float32) + weight * np.asarray(profile, dtype=np.float32)
    return v / max(float(np.linalg.norm(v)), 1e-9)


def read_queries(path: str) -> list[dict]:
    """JSON lines {"query_id", "text", "user_id"?}; a bad line is an error naming it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"search queries file not found: {path}")
    out = []
    with open(path) as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                text = str(row["text"]).strip()
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"{path}:{n}: expected a JSON object with a \"text\"") from None
            if not text:
                raise ValueError(f"{path}:{n}: empty query text")
            out.append({"query_id": str(row.get("query_id", n)), "query": text,
                        "user_id": None if row.get("user_id") is None else str(row["user_id"])})
    if not out:
        raise ValueError(f"{path}: no queries")
    return out


def check_item_embeddings(spark: SparkSession, cfg: Config, ref: engine.ModelRef) -> None:
    row = tables.read(spark, cfg, ITEM_EMBEDDINGS).select("model").distinct().collect()
    models = {r["model"] for r in row}
    if models != {engine.model_id(ref)}:
        raise ValueError(f"gold.item_embeddings holds {sorted(models) or 'nothing'}, not "
                         f"{engine.model_id(ref)}: run the embed job first")


def _first_texts(queries: pd.Series, user_texts: pd.Series) -> pd.Series:
    return pd.Series([query_text(q, u) for q, u in zip(queries, user_texts)])


def _personalise_udf(weight: float):
    @F.pandas_udf(T.ArrayType(T.FloatType()))
    def combine(batches: Iterator[tuple[pd.Series, pd.Series]]) -> Iterator[pd.Series]:
        for q, u in batches:
            yield pd.Series([personalise(a, b, weight) for a, b in zip(q, u)])

    return combine


def search(spark: SparkSession, cfg: Config, queries: list[dict], batch: str,
           load_log: str | None = None) -> dict:
    """Runs a batch of queries; writes and returns the results per query."""
    conf = cfg.search
    eref = engine.embed_ref(cfg, load_log)
    check_item_embeddings(spark, cfg, eref)
    path = rank.cross_encoder(cfg)
    sref = rank.score_ref(cfg, path, load_log) if path else None
    engine.arrow_batch(spark, cfg)
    q = spark.createDataFrame(queries, QUERY_SCHEMA).withColumn("qid", F.xxhash64("query_id"))
    if q.select("query_id").distinct().count() != len(queries):
        raise ValueError("search: query_id values must be unique in a batch")
    profiles = tables.read(spark, cfg, USER_INDEX).select("user_id", "user_idx") \
        .join(tables.read_or_empty(spark, cfg, USER_EMBEDDINGS)
              .select("user_idx", F.col("vector").alias("profile"), F.col("text").alias("user_text")), "user_idx")
    with CacheScope() as cached:
        q = cached(q.join(profiles, "user_id", "left").withColumn("vector", _personalise_udf(conf.profile_weight)(
            engine.embed_udf(eref)("query"), F.col("profile"))))
        items = tables.read(spark, cfg, ITEM_EMBEDDINGS).select("item_idx", "vector", F.col("text").alias("second"))
        hits = topk(q.select("qid", "vector"), items.select("item_idx", "vector"), conf.retrieve,
                    cfg.candidates.block_rows, "qid", "item_idx", index=cfg.candidates.index,
                    graph_rows=cfg.candidates.graph_rows, ef_search=cfg.candidates.ef_search) \
            .select("qid", F.col("cid").alias("item_idx"), F.col("score").alias("retrieval_score"))
        first = F.pandas_udf(_first_texts, T.StringType())("query", "user_text")
        pairs = hits.join(q.select("qid", "query_id", "query", "user_id", "user_text"), "qid") \
            .join(items.select("item_idx", "second"), "item_idx").withColumn("first", first)
        scored = rank.with_ce_scores(spark, pairs, sref) \
            .withColumn("cos01", (F.col("retrieval_score") + 1.0) / 2.0) \
            .withColumn("score", rank.blend("ce_score", "cos01", conf.blend))
        results = best_per(scored, "query_id", conf.k) \
            .join(tables.read(spark, cfg, ITEM_INDEX).select("item_idx", "item_id"), "item_idx") \
            .withColumn("batch", F.lit(batch))
        tables.overwrite_partitions(results, cfg, SEARCH_RESULTS, batch=[batch])
    return summary(spark, cfg, batch)


def summary(spark: SparkSession, cfg: Config, batch: str, show: int = 3) -> dict:
    """Each query's top `show` item titles, logged and returned."""
    titles = backfill.item_texts(spark, cfg).select(
        "item_idx", F.substring_index("text", ". ", 1).alias("title"))
    rows = tables.read(spark, cfg, SEARCH_RESULTS).where(F.col("batch") == batch) \
        .join(titles, "item_idx").orderBy("query_id", "rank").collect()
    out: dict = {}
    for r in rows:
        entry = out.setdefault(r["query_id"], {"query": r["query"], "user_id": r["user_id"], "top": []})
        if len(entry["top"]) < show:
            entry["top"].append(f"{r['item_id']} {r['title']} ({r['score']:.3f})")
    for qid, entry in out.items():
        who = f" [user {entry['user_id']}]" if entry["user_id"] else ""
        log.info("search %s %r%s: %s", qid, entry["query"], who, "; ".join(entry["top"]))
    return {"batch": batch, "queries": len(out), "results": out}
