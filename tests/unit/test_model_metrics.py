"""The cross-encoder's construction (tiny, LoRA, bad paths) and the metrics it is judged by."""
import math

import numpy as np
import pytest
import torch

from llmrec.conf import LoraConf, ModelConf
from llmrec.train import metrics
from llmrec.train.model import (
    ModelNotFound, build_model, exportable, load_tokenizer, tokenize_pairs, vocab_hash,
)


def batch(texts):
    tok = load_tokenizer("tiny")
    enc = tok([t[0] for t in texts], [t[1] for t in texts], max_length=24, truncation="only_first",
              padding="max_length", return_tensors="pt")
    return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def test_tiny_model_scores_pairs_with_one_logit():
    torch.manual_seed(0)
    model = build_model(ModelConf(name_or_path="tiny"), 24).eval()
    out = model(**batch([("bought running shoes", "Trail shoes"), ("viewed a novel", "A pan")]))
    assert out.logits.shape == (2, 1)
    assert sum(p.numel() for p in model.parameters()) < 2_000_000


def test_lora_trains_adapters_only_and_merges_into_a_plain_model():
    torch.manual_seed(0)
    conf = ModelConf(name_or_path="tiny", lora=LoraConf(enabled=True, r=4, alpha=8, dropout=0.0))
    model = build_model(conf, 24)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "classifier" in n for n in trainable)
    # one step so the adapters are not zero, then merged output == adapter output
    inputs = batch([("bought running shoes", "Trail shoes")] * 4)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model(**inputs).logits.sum().backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        with_adapters = model(**inputs).logits
        merged = exportable(model)
        assert type(merged).__name__ == "BertForSequenceClassification"
        assert torch.allclose(merged(**inputs).logits, with_adapters, atol=1e-5)


def test_a_pair_is_tokenized_the_same_beside_a_row_too_long_to_cut_as_asked():
    """A row whose item text alone is over max_length sends the batch down the row-by-row
    path (cut longest_first); the other rows must come out as the batch path makes them,
    an empty item text included (a lone tokenizer(a, "") would drop the pair's [SEP])."""
    tok = load_tokenizer("default")
    first, second = ["Recent activity: trail shoes", "viewed a pan"], ["", "Cast iron skillet"]
    alone = tokenize_pairs(tok, first, second, 16, "only_first", False, None)
    beside = tokenize_pairs(tok, [*first, "x"], [*second, "word " * 40], 16, "only_first", False, None)
    assert beside["input_ids"][:2] == alone["input_ids"] and beside["token_type_ids"][:2] == alone["token_type_ids"]
    assert len(beside["input_ids"][2]) == 16  # the long row, cut longest_first


def test_models_are_never_downloaded():
    with pytest.raises(ModelNotFound, match="no Hugging Face model directory at bert-base-uncased"):
        build_model(ModelConf(name_or_path="bert-base-uncased"))


def test_vocab_hash_is_stable_and_names_the_vocabulary():
    tok = load_tokenizer("default")
    assert tok.is_fast and len(tok) == 30522
    assert vocab_hash(tok) == vocab_hash(load_tokenizer("tiny"))  # same tokenizer
    assert len(vocab_hash(tok)) == 64


def test_auc_by_hand_including_ties():
    # positives 0.9, 0.5; negatives 0.1, 0.5: pairs won 1 + 1 + 1 + 0.5 (tie) of 4
    assert metrics.auc([1, 0, 1, 0], [0.9, 0.1, 0.5, 0.5]) == 0.875
    assert metrics.auc([1, 1, 0, 0], [1, 1, 1, 1]) == 0.5
    assert metrics.auc([0, 0, 1], [3, 2, 1]) == 0.0
    assert math.isnan(metrics.auc([1, 1], [0.2, 0.3]))


def test_log_loss_matches_the_formula_and_stays_finite():
    y, z = np.array([1, 0, 1]), np.array([2.0, -1.0, -3.0])
    p = 1 / (1 + np.exp(-z))
    want = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert metrics.log_loss(y, z) == pytest.approx(want, rel=1e-12)
    assert math.isfinite(metrics.log_loss([1, 0], [-800.0, 800.0]))


def test_training_curves_plot(tmp_path):
    path = tmp_path / "curves.png"
    metrics.plot_curves([{"epoch": 1, "train_loss": 0.6, "val_loss": 0.5, "val_auc": 0.7},
                         {"epoch": 2, "train_loss": 0.5, "val_loss": 0.45, "val_auc": 0.8}], str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
