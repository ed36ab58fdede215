"""Model inference for Spark: scalar-iterator pandas UDFs over a model loaded once per
Python worker, and the same code for a plain in-process call (notebooks, the API).

Two tasks:
  embed   texts -> mean-pooled, L2-normalised vectors of a BERT encoder (the bundled
          all-MiniLM-L6-v2 is trained for exactly this pooling)
  score   (first, second) text pairs -> the cross-encoder's relevance logit

A worker keeps each model it loaded in a module-level cache keyed by `ModelRef`, so
the partitions a worker runs after its first reuse the weights (Spark reuses Python
workers: spark.python.worker.reuse, on by default). Within an Arrow batch rows are
ordered by text length and padded per micro-batch to its longest row, which leaves the
results unchanged and saves the padding work; the original order is restored.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Iterator, Literal, Optional

import numpy as np
import pandas as pd

from llmrec.conf import Config
from llmrec.train import model as model_mod


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """Which model, for which task, and how to run it. Hashable: the worker cache key."""
    path: str
    task: Literal["embed", "score"]
    max_length: int
    truncation: str = "longest_first"
    batch_size: int = 64
    device: str = "auto"
    threads: int = 0
    sort_by_length: bool = True
    # Appends "pid task path" to this file on every load (tests count loads per worker).
    load_log: Optional[str] = dataclasses.field(default=None, compare=False)


def resolve(name_or_path: str) -> str:
    """`default` -> the bundled MiniLM directory; a path must be a local HF directory."""
    if name_or_path == "tiny":
        raise ValueError("'tiny' is a random model for training tests; inference needs a saved "
                         "model directory")
    return os.path.abspath(model_mod.tokenizer_dir(name_or_path))


def embed_ref(cfg: Config, load_log: str | None = None) -> ModelRef:
    return ModelRef(resolve(cfg.embed.model), "embed", cfg.embed.max_length,
                    batch_size=cfg.infer.batch_size, device=cfg.infer.device,
                    threads=cfg.infer.threads, sort_by_length=cfg.infer.sort_by_length,
                    load_log=load_log)


def score_ref(cfg: Config, path: str, max_length: int, truncation: str,
              load_log: str | None = None) -> ModelRef:
    return ModelRef(resolve(path), "score", max_length, truncation, cfg.infer.batch_size,
                    cfg.infer.device, cfg.infer.threads, cfg.infer.sort_by_length, load_log)


_IDS: dict[tuple[str, int], str] = {}


def model_id(ref: ModelRef) -> str:
    """name@<sha256 of weights and tokenizer, 12 hex>/<max_length>: what an embedding
    was made with; a different id means the stored vector must be recomputed."""
    key = (ref.path, ref.max_length)
    if key not in _IDS:
        digest = hashlib.sha256()
        folder = Path(ref.path)
        for name in ("config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json",
                     "vocab.txt"):
            f = folder / name
            if f.is_file():
                with open(f, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 22), b""):
                        digest.update(block)
        name = folder.name if folder.name not in ("model", "") else folder.parent.name
        _IDS[key] = f"{name}@{digest.hexdigest()[:12]}/{ref.max_length}"
    return _IDS[key]


@dataclasses.dataclass
class Loaded:
    tokenizer: object
    model: object
    device: object


_LOADED: dict[ModelRef, Loaded] = {}


def _device(ref: ModelRef):
    import torch

    if ref.device == "cpu" or not torch.cuda.is_available():
        if ref.device == "gpu":
            raise RuntimeError("infer.device=gpu but torch sees no GPU in this worker")
        return torch.device("cpu")
    index = 0
    try:  # the GPU Spark assigned to this task (spark.task.resource.gpu.amount)
        from pyspark import TaskContext

        ctx = TaskContext.get()
        if ctx is not None and "gpu" in ctx.resources():
            index = int(ctx.resources()["gpu"].addresses[0])
    except Exception:  # noqa: BLE001  (not in a Spark task: first GPU)
        pass
    return torch.device("cuda", index)


def _threads(ref: ModelRef) -> int:
    if ref.threads:
        return ref.threads
    try:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        if ctx is not None:
            return max(1, int(ctx.cpus()))
    except Exception:  # noqa: BLE001
        pass
    return max(1, os.cpu_count() or 1)


def load(ref: ModelRef) -> Loaded:
    """The model and tokenizer for `ref`, loaded on first use in this process."""
    import torch

    loaded = _LOADED.get(ref)
    device = _device(ref)
    if device.type == "cpu":  # set per call: the worker may now run a task with other cpus
        torch.set_num_threads(_threads(ref))
    if loaded is not None:
        return loaded
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if ref.task == "score":
        config = AutoConfig.from_pretrained(ref.path)
        if config.num_labels != 1 or not any("SequenceClassification" in a
                                             for a in config.architectures or ()):
            raise ValueError(f"{ref.path} is not a cross-encoder (a sequence classifier with one "
                             "logit, as the train job saves)")
    cls = AutoModel if ref.task == "embed" else AutoModelForSequenceClassification
    model = cls.from_pretrained(ref.path).to(device).eval()
    loaded = _LOADED[ref] = Loaded(model_mod.load_tokenizer(ref.path), model, device)
    if ref.load_log:
        with open(ref.load_log, "a") as fh:
            fh.write(f"{os.getpid()} {ref.task} {ref.path}\n")
    return loaded


def run(ref: ModelRef, first: list[str], second: list[str] | None = None) -> np.ndarray:
    """Embeddings (rows, dim) float32, or cross-encoder logits (rows,) float32."""
    import torch

    m = load(ref)
    n = len(first)
    if ref.sort_by_length:
        lengths = [len(a) + (len(second[i]) if second is not None else 0) for i, a in enumerate(first)]
        order = np.argsort(lengths, kind="stable")
    else:
        order = np.arange(n)
    out = None
    gpu = m.device.type == "cuda"
    # A model built for shorter inputs (the tiny test BERT, a model trained at
    # tokenize.max_length) cannot take embed.max_length tokens: cut at what it can.
    max_length = min(ref.max_length, getattr(m.model.config, "max_position_embeddings", ref.max_length))
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=gpu):
        for start in range(0, n, ref.batch_size):
            idx = order[start:start + ref.batch_size]
            a = [first[i] for i in idx]
            b = [second[i] for i in idx] if second is not None else None
            enc = model_mod.tokenize_pairs(m.tokenizer, a, b, max_length, ref.truncation,
                                           "longest", "pt").to(m.device)
            if ref.task == "embed":
                hidden = m.model(**enc).last_hidden_state.float()
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                result = torch.nn.functional.normalize(pooled, dim=-1)
            else:
                result = m.model(**enc).logits[:, 0].float()
            result = result.cpu().numpy()
            if out is None:
                out = np.empty((n, *result.shape[1:]), dtype=np.float32)
            out[idx] = result
    if out is None:
        dim = m.model.config.hidden_size if ref.task == "embed" else None
        out = np.empty((0, dim) if dim else (0,), dtype=np.float32)
    return out


def embed_udf(ref: ModelRef):
    """pandas UDF: text -> array<float> embedding."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    @F.pandas_udf(T.ArrayType(T.FloatType()))
    def embed(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        load(ref)  # once per worker: the cache outlives this task
        for texts in batches:
            vectors = run(ref, texts.fillna("").tolist())
            yield pd.Series(list(vectors))

    return embed


def score_udf(ref: ModelRef):
    """pandas UDF: (first text, second text) -> the cross-encoder's logit."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    @F.pandas_udf(T.FloatType())
    def score(batches: Iterator[tuple[pd.Series, pd.Series]]) -> Iterator[pd.Series]:
        load(ref)
        for first, second in batches:
            yield pd.Series(run(ref, first.fillna("").tolist(), second.fillna("").tolist()))

    return score


def arrow_batch(spark, cfg: Config) -> None:
    """Rows per Arrow batch for the inference stages of this session."""
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.infer.arrow_batch_rows))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))
