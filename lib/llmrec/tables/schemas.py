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


STR, DBL, INT, LONG, TS, DATE = StringType(), DoubleType(), IntegerType(), LongType(), TimestampType(), DateType()


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
    ("event_id", STR, True), ("user_id", STR, True), ("item_id", STR, True),
    ("event_type", STR, True), ("event_time", STR, True), ("source", STR, False), ("dt", DATE, False),
), partition_by=("dt",))

BRONZE_ITEMS = Table("bronze", "items", _schema(
    ("item_id", STR, True), ("title", STR, True), ("description", STR, True), ("category", STR, True),
    ("brand", STR, True), ("price", STR, True), ("attributes", STR, True),  # JSON object text
    ("launch_time", STR, True), ("source", STR, False), ("dt", DATE, False),
), partition_by=("dt",))

BRONZE_REVIEWS = Table("bronze", "reviews", _schema(
    ("review_id", STR, True), ("user_id", STR, True), ("item_id", STR, True), ("rating", STR, True),
    ("title", STR, True), ("text", STR, True), ("review_time", STR, True), ("source", STR, False),
    ("dt", DATE, False),
), partition_by=("dt",))

# Rows that failed a check, with the reason and the row as JSON; replaced per
# (stage, entity, dt) so a rerun leaves the same rows.
QUARANTINE = Table("quarantine", "rows", _schema(
    ("entity", STR, False), ("stage", STR, False), ("reason", STR, False), ("record", STR, True),
    ("source", STR, True), ("dt", DATE, False),
), partition_by=("stage", "entity", "dt"))

SILVER_EVENTS = Table("silver", "events", _schema(
    ("event_id", STR, False), ("user_id", STR, False), ("item_id", STR, False),
    ("event_type", STR, False), ("event_ts", TS, False), ("source", STR, False), ("dt", DATE, False),
), partition_by=("dt",), key=("event_id",))

SILVER_ITEMS = Table("silver", "items", _schema(
    ("item_id", STR, False), ("title", STR, False), ("description", STR, True),
    ("category", STR, True), ("brand", STR, True), ("price", DBL, True),
    ("attributes", MapType(STR, STR), True), ("launch_ts", TS, True), ("source", STR, False),
    ("dt", DATE, False),
), key=("item_id",))

SILVER_REVIEWS = Table("silver", "reviews", _schema(
    ("review_id", STR, False), ("user_id", STR, False), ("item_id", STR, False), ("rating", INT, False),
    ("title", STR, True), ("text", STR, True), ("review_ts", TS, False), ("source", STR, False),
    ("dt", DATE, False),
), partition_by=("dt",), key=("review_id",))

# Stable dense ids: a new id gets max+1..; an old id keeps its index forever.
USER_INDEX = Table("gold", "user_index", _schema(
    ("user_id", STR, False), ("user_idx", LONG, False), ("first_seen", TS, True),
), key=("user_id",))

ITEM_INDEX = Table("gold", "item_index", _schema(
    ("item_id", STR, False), ("item_idx", LONG, False), ("first_seen", TS, True),
), key=("item_id",))

INTERACTIONS = Table("gold", "interactions", _schema(
    ("user_idx", LONG, False), ("item_idx", LONG, False), ("weight", DBL, False), ("n", LONG, False),
    ("first_ts", TS, False), ("last_ts", TS, False), ("split", STR, False),
), partition_by=("split",), key=("user_idx", "item_idx"))

# Cross-encoder pairs: a user's history text and a candidate item's text; label 1 for a
# held-out positive, 0 for a sampled negative (kind: positive|uniform|popularity|hard).
# Rebuilt whole by each examples run (deterministic by seed).
EXAMPLES = Table("gold", "examples", _schema(
    ("user_idx", LONG, False), ("item_idx", LONG, False), ("target_idx", LONG, False),
    ("label", INT, False), ("kind", STR, False), ("user_text", STR, False), ("item_text", STR, False),
    ("split", STR, False),
), partition_by=("split",), key=("split", "user_idx", "target_idx", "item_idx"))

VECTOR = ArrayType(FloatType())

# Embeddings (mean-pooled, L2-normalised) of the text in `text`; `text_hash` and `model`
# (name, weights hash, max length) decide whether a backfill must embed a row again.
ITEM_EMBEDDINGS = Table("gold", "item_embeddings", _schema(
    ("item_idx", LONG, False), ("item_id", STR, False), ("text", STR, False), ("text_hash", STR, False),
    ("vector", VECTOR, False), ("model", STR, False), ("updated_at", TS, False),
), key=("item_idx",))

# A user's embedding from the text of their recent history (infer.history_splits).
USER_EMBEDDINGS = Table("gold", "user_embeddings", _schema(
    ("user_idx", LONG, False), ("user_id", STR, False), ("text", STR, False), ("text_hash", STR, False),
    ("vector", VECTOR, False), ("model", STR, False), ("updated_at", TS, False),
), key=("user_idx",))

# The same as of the validation cut: the train-only history text of each user with a
# validation pair, for the first stage the ranker learns from (llmrec.ranker.cuts).
USER_EMBEDDINGS_VAL = Table("gold", "user_embeddings_val", USER_EMBEDDINGS.schema, key=("user_idx",))

# Each item's nearest items (kind: content = embedding cosine, cooc = co-occurrence cosine).
ITEM_NEIGHBORS = Table("gold", "item_neighbors", _schema(
    ("kind", STR, False), ("item_idx", LONG, False), ("rank", INT, False), ("neighbor_idx", LONG, False),
    ("score", DBL, False),
), partition_by=("kind",), key=("kind", "item_idx", "neighbor_idx"))

# Most popular items per segment (a user's dominant top-level category; "*" = everyone).
POPULAR_ITEMS = Table("gold", "popular_items", _schema(
    ("segment", STR, False), ("rank", INT, False), ("item_idx", LONG, False), ("score", DBL, False),
), key=("segment", "item_idx"))

# Candidates per user and cut, merged over sources by reciprocal-rank fusion; `source`
# is the source that ranked the item best, `source_ranks` and `source_scores` every
# source's rank and score of it. cut: serve (the first stage fit on the serving history,
# for every user) or val (fit on train only, for the users with a validation pair: what
# the ranker learns from; see llmrec.ranker.cuts).
CANDIDATES = Table("gold", "candidates", _schema(
    ("cut", STR, False), ("user_idx", LONG, False), ("item_idx", LONG, False), ("score", DBL, False),
    ("source", STR, False), ("source_ranks", MapType(STR, INT), False),
    ("source_scores", MapType(STR, DBL), False),
), partition_by=("cut",), key=("cut", "user_idx", "item_idx"))

# Explanations (the explain job): the history items most similar to the recommended
# one, and the words that drove the cross-encoder's score (side: user or item text).
HISTORY_CONTRIBUTION = StructType([StructField("item_idx", LONG, False), StructField("item_id", STR, False),
                                   StructField("title", STR, True), StructField("action", STR, True),
                                   StructField("similarity", DBL, False)])
TOKEN_ATTRIBUTION = StructType([StructField("side", STR, False), StructField("token", STR, False),
                                StructField("attribution", DBL, False)])

# Top-K per user. reason, top_history and tokens are filled in by the explain job.
RECOMMENDATIONS = Table("gold", "recommendations", _schema(
    ("user_idx", LONG, False), ("user_id", STR, False), ("rank", INT, False), ("item_idx", LONG, False),
    ("item_id", STR, False), ("score", DBL, False), ("ce_score", DBL, True), ("cand_score", DBL, False),
    ("source", STR, False), ("sources", ArrayType(STR), False), ("reason", STR, True),
    ("top_history", ArrayType(HISTORY_CONTRIBUTION), True), ("tokens", ArrayType(TOKEN_ATTRIBUTION), True),
    ("model", STR, False), ("generated_at", TS, False),
), key=("user_idx", "rank"))

# One evaluation run's metrics, a partition per run (a rerun of the run replaces it).
# slice: overall, or the users and relevant items of a slice (cold_items, cold_users,
# tail_items; llmrec.evaluate.slices); `users` is how many users the value averages over.
EVAL_METRICS = Table("gold", "eval_metrics", _schema(
    ("run", STR, False), ("slice", STR, False), ("model", STR, False), ("metric", STR, False), ("k", INT, True),
    ("value", DBL, True), ("users", LONG, False), ("created_at", TS, False),
), partition_by=("run",), key=("run", "slice", "model", "metric", "k"))

# Batch search results; one partition per batch of queries, replaced when it is rerun.
SEARCH_RESULTS = Table("gold", "search_results", _schema(
    ("batch", STR, False), ("query_id", STR, False), ("query", STR, False), ("user_id", STR, True),
    ("rank", INT, False), ("item_idx", LONG, False), ("item_id", STR, False), ("score", DBL, False),
    ("retrieval_score", DBL, False), ("ce_score", DBL, True),
), partition_by=("batch",), key=("batch", "query_id", "rank"))

# A row each time a stage finished an (entity, dt): what incremental runs skip.
LEDGER = Table("meta", "ledger", _schema(
    ("stage", STR, False), ("entity", STR, False), ("dt", DATE, False), ("rows_in", LONG, True),
    ("rows_out", LONG, True), ("quarantined", LONG, True), ("finished_at", TS, False),
), key=("stage", "entity", "dt"))

# A row per stage run (done, skipped or failed): what resume checks and what the run
# summaries and dashboards read.
STAGE_RUNS = Table("meta", "stage_runs", _schema(
    ("run_id", STR, False), ("stage", STR, False), ("status", STR, False), ("fingerprint", STR, False),
    ("outputs", STR, False), ("rows_in", LONG, True), ("rows_out", LONG, True), ("quarantined", LONG, True),
    ("seconds", DBL, False), ("started_at", TS, False), ("finished_at", TS, False), ("error", STR, True),
    ("summary", STR, True),
), key=("run_id", "stage"))

ALL = (BRONZE_EVENTS, BRONZE_ITEMS, BRONZE_REVIEWS, QUARANTINE, SILVER_EVENTS, SILVER_ITEMS,
       SILVER_REVIEWS, USER_INDEX, ITEM_INDEX, INTERACTIONS, EXAMPLES, ITEM_EMBEDDINGS,
       USER_EMBEDDINGS, USER_EMBEDDINGS_VAL, ITEM_NEIGHBORS, POPULAR_ITEMS, CANDIDATES, RECOMMENDATIONS, EVAL_METRICS,
       SEARCH_RESULTS, LEDGER, STAGE_RUNS)
BRONZE = {"events": BRONZE_EVENTS, "items": BRONZE_ITEMS, "reviews": BRONZE_REVIEWS}
SILVER = {"events": SILVER_EVENTS, "items": SILVER_ITEMS, "reviews": SILVER_REVIEWS}
