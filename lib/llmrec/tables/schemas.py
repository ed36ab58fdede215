"""Table contracts: every Delta table's name, schema, partitioning and key.

Bronze keeps what the source said, as strings, so nothing is lost before validation;
silver is typed and deduplicated; gold is derived. All live under ``storage.root``.
"""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql.types import (
    ArrayType, DateType, DoubleType, FloatType, IntegerType, LongType, MapType, StringType,
    StructField, StructType, TimestampType,
)


def _schema(*fields: tuple) -> StructType:
    return StructType([StructField(name, tp, nullable) for name, tp, nullable in fields])


S, D, I, L, T, DT = StringType(), DoubleType(), IntegerType(), LongType(), TimestampType(), DateType()


@dataclass(frozen=True)
class Table:
    layer: str
    name: str
    schema: StructType
    partition_by: tuple[str, ...] = ()
    key: tuple[str, ...] = ()

    @property
    def qualified(self) -> str:
        return f"{self.layer}.{self.name}"

    @property
    def columns(self) -> list[str]:
        return self.schema.fieldNames()


# Raw rows as the source gave them; `dt` is the batch (ingest) date.
BRONZE_EVENTS = Table("bronze", "events", _schema(
    ("event_id", S, True), ("user_id", S, True), ("item_id", S, True),
    ("event_type", S, True), ("event_time", S, True), ("source", S, False), ("dt", DT, False),
), partition_by=("dt",))

BRONZE_ITEMS = Table("bronze", "items", _schema(
    ("item_id", S, True), ("title", S, True), ("description", S, True), ("category", S, True),
    ("brand", S, True), ("price", S, True), ("attributes", S, True),  # JSON object text
    ("launch_time", S, True), ("source", S, False), ("dt", DT, False),
), partition_by=("dt",))

BRONZE_REVIEWS = Table("bronze", "reviews", _schema(
    ("review_id", S, True), ("user_id", S, True), ("item_id", S, True), ("rating", S, True),
    ("title", S, True), ("text", S, True), ("review_time", S, True), ("source", S, False),
    ("dt", DT, False),
), partition_by=("dt",))

# Rows that failed a check, with the reason and the row as JSON; replaced per
# (stage, entity, dt) so a rerun leaves the same rows.
QUARANTINE = Table("quarantine", "rows", _schema(
    ("entity", S, False), ("stage", S, False), ("reason", S, False), ("record", S, True),
    ("source", S, True), ("dt", DT, False),
), partition_by=("stage", "entity", "dt"))

SILVER_EVENTS = Table("silver", "events", _schema(
    ("event_id", S, False), ("user_id", S, False), ("item_id", S, False),
    ("event_type", S, False), ("event_ts", T, False), ("source", S, False), ("dt", DT, False),
), partition_by=("dt",), key=("event_id",))

SILVER_ITEMS = Table("silver", "items", _schema(
    ("item_id", S, False), ("title", S, False), ("description", S, True),
    ("category", S, True), ("brand", S, True), ("price", D, True),
    ("attributes", MapType(S, S), True), ("launch_ts", T, True), ("source", S, False),
    ("dt", DT, False),
), key=("item_id",))

SILVER_REVIEWS = Table("silver", "reviews", _schema(
    ("review_id", S, False), ("user_id", S, False), ("item_id", S, False), ("rating", I, False),
    ("title", S, True), ("text", S, True), ("review_ts", T, False), ("source", S, False),
    ("dt", DT, False),
), partition_by=("dt",), key=("review_id",))

# Stable dense ids: a new id gets max+1..; an old id keeps its index forever.
USER_INDEX = Table("gold", "user_index", _schema(
    ("user_id", S, False), ("user_idx", L, False), ("first_seen", T, True),
), key=("user_id",))

ITEM_INDEX = Table("gold", "item_index", _schema(
    ("item_id", S, False), ("item_idx", L, False), ("first_seen", T, True),
), key=("item_id",))

INTERACTIONS = Table("gold", "interactions", _schema(
    ("user_idx", L, False), ("item_idx", L, False), ("weight", D, False), ("n", L, False),
    ("first_ts", T, False), ("last_ts", T, False), ("split", S, False),
), partition_by=("split",), key=("user_idx", "item_idx"))

# Cross-encoder pairs: a user's history text and a candidate item's text; label 1 for a
# held-out positive, 0 for a sampled negative (kind: positive|uniform|popularity|hard).
# Rebuilt whole by each examples run (deterministic by seed).
EXAMPLES = Table("gold", "examples", _schema(
    ("user_idx", L, False), ("item_idx", L, False), ("target_idx", L, False),
    ("label", I, False), ("kind", S, False), ("user_text", S, False), ("item_text", S, False),
    ("split", S, False),
), partition_by=("split",), key=("split", "user_idx", "target_idx", "item_idx"))

VECTOR = ArrayType(FloatType())

# Embeddings (mean-pooled, L2-normalised) of the text in `text`; `text_hash` and `model`
# (name, weights hash, max length) decide whether a backfill must embed a row again.
ITEM_EMBEDDINGS = Table("gold", "item_embeddings", _schema(
    ("item_idx", L, False), ("item_id", S, False), ("text", S, False), ("text_hash", S, False),
    ("vector", VECTOR, False), ("model", S, False), ("updated_at", T, False),
), key=("item_idx",))

# A user's embedding from the text of their recent history (infer.history_splits).
USER_EMBEDDINGS = Table("gold", "user_embeddings", _schema(
    ("user_idx", L, False), ("user_id", S, False), ("text", S, False), ("text_hash", S, False),
    ("vector", VECTOR, False), ("model", S, False), ("updated_at", T, False),
), key=("user_idx",))

# Each item's nearest items (kind: content = embedding cosine, cooc = co-occurrence cosine).
ITEM_NEIGHBORS = Table("gold", "item_neighbors", _schema(
    ("kind", S, False), ("item_idx", L, False), ("rank", I, False), ("neighbor_idx", L, False),
    ("score", D, False),
), partition_by=("kind",), key=("kind", "item_idx", "neighbor_idx"))

# Most popular items per segment (a user's dominant top-level category; "*" = everyone).
POPULAR_ITEMS = Table("gold", "popular_items", _schema(
    ("segment", S, False), ("rank", I, False), ("item_idx", L, False), ("score", D, False),
), key=("segment", "item_idx"))

# Candidates per user, merged over sources by reciprocal-rank fusion; `source` is the
# source that ranked the item best, `source_ranks` every source's rank of it.
CANDIDATES = Table("gold", "candidates", _schema(
    ("user_idx", L, False), ("item_idx", L, False), ("score", D, False), ("source", S, False),
    ("source_ranks", MapType(S, I), False),
), key=("user_idx", "item_idx"))

# Explanations (the explain job): the history items most similar to the recommended
# one, and the words that drove the cross-encoder's score (side: user or item text).
HISTORY_CONTRIBUTION = StructType([StructField("item_idx", L, False), StructField("item_id", S, False),
                                   StructField("title", S, True), StructField("action", S, True),
                                   StructField("similarity", D, False)])
TOKEN_ATTRIBUTION = StructType([StructField("side", S, False), StructField("token", S, False),
                                StructField("attribution", D, False)])

# Top-K per user. reason, top_history and tokens are filled in by the explain job.
RECOMMENDATIONS = Table("gold", "recommendations", _schema(
    ("user_idx", L, False), ("user_id", S, False), ("rank", I, False), ("item_idx", L, False),
    ("item_id", S, False), ("score", D, False), ("ce_score", D, True), ("cand_score", D, False),
    ("source", S, False), ("sources", ArrayType(S), False), ("reason", S, True),
    ("top_history", ArrayType(HISTORY_CONTRIBUTION), True), ("tokens", ArrayType(TOKEN_ATTRIBUTION), True),
    ("model", S, False), ("generated_at", T, False),
), key=("user_idx", "rank"))

# One evaluation run's metrics, a partition per run (a rerun of the run replaces it).
EVAL_METRICS = Table("gold", "eval_metrics", _schema(
    ("run", S, False), ("model", S, False), ("metric", S, False), ("k", I, True), ("value", D, True),
    ("users", L, False), ("created_at", T, False),
), partition_by=("run",), key=("run", "model", "metric", "k"))

# Batch search results; one partition per batch of queries, replaced when it is rerun.
SEARCH_RESULTS = Table("gold", "search_results", _schema(
    ("batch", S, False), ("query_id", S, False), ("query", S, False), ("user_id", S, True),
    ("rank", I, False), ("item_idx", L, False), ("item_id", S, False), ("score", D, False),
    ("retrieval_score", D, False), ("ce_score", D, True),
), partition_by=("batch",), key=("batch", "query_id", "rank"))

# A row each time a stage finished an (entity, dt): what incremental runs skip.
LEDGER = Table("meta", "ledger", _schema(
    ("stage", S, False), ("entity", S, False), ("dt", DT, False), ("rows_in", L, True),
    ("rows_out", L, True), ("quarantined", L, True), ("finished_at", T, False),
), key=("stage", "entity", "dt"))

# A row per stage run (done, skipped or failed): what resume checks and what the run
# summaries and dashboards read.
STAGE_RUNS = Table("meta", "stage_runs", _schema(
    ("run_id", S, False), ("stage", S, False), ("status", S, False), ("fingerprint", S, False),
    ("outputs", S, False), ("rows_in", L, True), ("rows_out", L, True), ("quarantined", L, True),
    ("seconds", D, False), ("started_at", T, False), ("finished_at", T, False), ("error", S, True),
    ("summary", S, True),
), key=("run_id", "stage"))

ALL = (BRONZE_EVENTS, BRONZE_ITEMS, BRONZE_REVIEWS, QUARANTINE, SILVER_EVENTS, SILVER_ITEMS,
       SILVER_REVIEWS, USER_INDEX, ITEM_INDEX, INTERACTIONS, EXAMPLES, ITEM_EMBEDDINGS,
       USER_EMBEDDINGS, ITEM_NEIGHBORS, POPULAR_ITEMS, CANDIDATES, RECOMMENDATIONS, EVAL_METRICS,
       SEARCH_RESULTS, LEDGER, STAGE_RUNS)
BRONZE = {"events": BRONZE_EVENTS, "items": BRONZE_ITEMS, "reviews": BRONZE_REVIEWS}
SILVER = {"events": SILVER_EVENTS, "items": SILVER_ITEMS, "reviews": SILVER_REVIEWS}
