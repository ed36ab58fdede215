"""Embedding backfills: the catalog into gold.item_embeddings, users' recent-history
texts into gold.user_embeddings (as served) and gold.user_embeddings_val (as of the
validation cut, for the users the ranker learns from).

Incremental: a row is embedded only when its text hash or the model id differs from
the stored row (new items, changed texts, a new model). The rows to do are cut into
chunks of about `embed.chunk_rows` by a hash of the key; each chunk is embedded into a
staging folder and then MERGEd into the table in one commit. A run killed midway has
committed its finished chunks, which the next run finds up to date and skips: it
resumes without redoing them. Rerunning with nothing changed embeds nothing. No step
holds more than a chunk's texts in flight, and no step collects rows to the driver.
"""
from __future__ import annotations

import math
import time

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from llmrec.stamps import utc_now
from llmrec import storage, tables
from llmrec.conf import Config
from llmrec.features import examples as ex
from llmrec.infer import engine
from llmrec.progress import fmt_duration, log
from llmrec.ranker import cuts
from llmrec.tables.schemas import ITEM_EMBEDDINGS, USER_EMBEDDINGS, USER_EMBEDDINGS_VAL, USER_INDEX, Table

TASK_ROWS = 5_000


def item_texts(spark: SparkSession, cfg: Config) -> DataFrame:
    """(item_idx, item_id, text): every catalog item's text, as the cross-encoder sees it."""
    return ex.item_texts(spark, cfg).select("item_idx", "item_id", F.col("item_text").alias("text"))


def user_texts(spark: SparkSession, cfg: Config, cut: cuts.Cut | None = None) -> DataFrame:
    """(user_idx, user_id, text): users with history in the cut (default: serving),
    their newest items as the cross-encoder's user text; for the validation cut only the
    users with a validation pair (the ranker's)."""
    cut = cut or cuts.serve(cfg)
    seq = ex.sequences(spark, cfg)
    phrases = ex.item_texts(spark, cfg)
    texts = ex.profile_texts(spark, cfg, seq, phrases, cut)
    if cut.name == "val":
        texts = texts.join(cuts.labelled_users(spark, cfg, cut), "user_idx", "left_semi")
    users = tables.read(spark, cfg, USER_INDEX).select("user_id", "user_idx")
    return texts.join(users, "user_idx").select("user_idx", "user_id", F.col("user_text").alias("text"))


def _marked(texts: DataFrame, current: DataFrame, key: str, model: str) -> DataFrame:
    """texts + text_hash + `_todo`: whether the row's text or model differs from what the
    table holds (or the table lacks it)."""
    hashed = texts.withColumn("text_hash", F.sha2("text", 256))
    done = current.select(key, F.col("text_hash").alias("_h"), F.col("model").alias("_m"))
    todo = F.col("_h").isNull() | (F.col("_h") != F.col("text_hash")) | (F.col("_m") != model)
    return hashed.join(done, key, "left").withColumn("_todo", todo).drop("_h", "_m")


def _todo(texts: DataFrame, current: DataFrame, key: str, model: str) -> DataFrame:
    """Rows whose text or model differs from what the table holds (or that it lacks)."""
    return _marked(texts, current, key, model).where("_todo").drop("_todo")


def backfill(spark: SparkSession, cfg: Config, table: Table, texts: DataFrame,
             load_log: str | None = None) -> dict:
    """Embeds the rows of `texts` (key, <id>, text) that are new or changed into `table`."""
    key = table.key[0]
    ref = engine.embed_ref(cfg, load_log)
    model = engine.model_id(ref)
    engine.arrow_batch(spark, cfg)
    current = tables.read_or_empty(spark, cfg, table)
    # both counts from one pass: the texts (users' histories, joins) are costly to derive
    total, todo_n = _marked(texts, current, key, model).agg(F.count("*"), F.count_if("_todo")).first()
    summary = {"table": table.qualified, "rows": total, "up_to_date": total - todo_n,
               "embedded": 0, "chunks": 0, "model": model}
    if todo_n == 0:
        log.info("embed %s: all %s rows up to date for %s", table.qualified, f"{total:,}", model)
        return summary
    chunks = math.ceil(todo_n / cfg.embed.chunk_rows)
    parallelism = spark.sparkContext.defaultParallelism
    log.info("embed %s: %s of %s rows to embed with %s in %d chunk(s)", table.qualified,
             f"{todo_n:,}", f"{total:,}", model, chunks)
    embed = engine.embed_udf(ref)
    started = time.monotonic()
    done = 0
    for chunk in range(chunks):
        t0 = time.monotonic()
        # Re-derived per chunk against the table as it is now: rows other chunks (or a
        # run killed earlier) already committed are not done twice.
        todo = _todo(texts, tables.read_or_empty(spark, cfg, table), key, model) \
            .where(F.pmod(F.xxhash64(F.col(key)), F.lit(chunks)) == chunk)
        # Tasks of ~TASK_ROWS rows: even work for the cores, and task-level progress.
        parts = max(parallelism, math.ceil(min(todo_n, cfg.embed.chunk_rows) / TASK_ROWS))
        out = todo.repartition(parts, key).select(
            "*", embed("text").alias("vector"), F.lit(model).alias("model"),
            F.lit(utc_now()).alias("updated_at"))
        # Staged first, so the MERGE reads finished vectors and never runs the model twice.
        with storage.staging(cfg.storage.root, f"{table.name}-chunk-{chunk:05d}") as chunk_path:
            out.write.parquet(chunk_path)
            rows = tables.merge_upsert(spark.read.parquet(chunk_path), cfg, table)
        done += rows
        elapsed = time.monotonic() - started
        rate = done / elapsed if elapsed else 0.0
        eta = (todo_n - done) / rate if rate else 0.0
        log.info("embed %s: chunk %d/%d: %s rows in %s; %s/%s done, %.1f rows/s, ETA %s",
                 table.qualified, chunk + 1, chunks, f"{rows:,}", fmt_duration(time.monotonic() - t0),
                 f"{done:,}", f"{todo_n:,}", rate, fmt_duration(max(eta, 0.0)))
    summary.update(embedded=done, chunks=chunks,
                   rows_per_s=round(done / max(time.monotonic() - started, 1e-9), 1))
    return summary


def run(spark: SparkSession, cfg: Config, load_log: str | None = None) -> dict:
    """The catalog, then the users as served, then the users as of the validation cut:
    returns what each backfill did."""
    items = backfill(spark, cfg, ITEM_EMBEDDINGS, item_texts(spark, cfg), load_log)
    users = backfill(spark, cfg, USER_EMBEDDINGS, user_texts(spark, cfg), load_log)
    users_val = backfill(spark, cfg, USER_EMBEDDINGS_VAL, user_texts(spark, cfg, cuts.val(cfg)), load_log)
    return {"items": items, "users": users, "users_val": users_val}
