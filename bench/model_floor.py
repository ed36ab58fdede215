"""Benchmark: how close the bundled MiniLM cross-encoder runs to this CPU's fp32 peak, in
one command: what bounds the demo's model stages (docs/benchmarks.md, "The models' floor").

    .venv/bin/python bench/model_floor.py [--pairs 512] [--tokens 80]

On one thread (as each Spark task runs it):
  matmul   GFLOPS of torch's fp32 matmul at the model's feed-forward shape (64 pairs of
           --tokens tokens: 64*tokens x 384 by 384 x 1536): the core's practical peak
  model    pairs/s of engine.run scoring --pairs random-word pairs, each cut to --tokens
           tokens, with the bundled MiniLM as a cross-encoder (random head: the cost is
           the encoder's), in batches of 64 (infer.batch_size's default)
  bound    the pairs/s the matmul rate would give if every model FLOP ran at it (FLOPs per
           pair counted from the config: 4 projections and 2 feed-forward matrices per
           layer, attention scores and sums), and model / bound
Writes bench/results/model_floor.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))


def matmul_gflops(rows: int, hidden: int, inner: int, seconds: float = 3.0) -> float:
    import torch

    a, b = torch.randn(rows, hidden), torch.randn(hidden, inner)
    a @ b  # warm-up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    return 2 * rows * hidden * inner * n / (time.perf_counter() - start) / 1e9


def flops_per_pair(config, tokens: int) -> float:
    h, ff, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    per_token = 2 * (4 * h * h + 2 * h * ff)  # q, k, v, output projections; two feed-forward matrices
    attention = 2 * 2 * tokens * h  # scores and weighted sums, per token
    return layers * tokens * (per_token + attention)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=512)
    ap.add_argument("--tokens", type=int, default=80)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "model_floor.json"))
    args = ap.parse_args()

    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from llmrec.infer import engine
    from llmrec.train import model as model_mod

    hf_logging.set_verbosity_error()  # the new head's "newly initialized" notice is expected here
    hf_logging.disable_progress_bar()
    load_before = [round(x, 2) for x in os.getloadavg()]
    torch.set_num_threads(1)
    base = model_mod.tokenizer_dir("default")
    config = AutoConfig.from_pretrained(base)
    gflops = matmul_gflops(64 * args.tokens, config.hidden_size, config.intermediate_size)

    # MiniLM with a one-logit head, saved as the train job saves a cross-encoder
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
        model.save_pretrained(tmp)
        tokenizer = model_mod.load_tokenizer(base)
        tokenizer.save_pretrained(tmp)
        ref = engine.ModelRef(tmp, "score", args.tokens, "longest_first", batch_size=64, threads=1)
        vocab = [w for w in tokenizer.get_vocab() if w.isalpha()]
        rng = random.Random(0)
        text = lambda n: " ".join(rng.choice(vocab) for _ in range(n))  # noqa: E731
        first = [text(args.tokens) for _ in range(args.pairs)]  # long enough to be cut to --tokens
        second = [text(args.tokens // 2) for _ in range(args.pairs)]
        engine.run(ref, first[:64], second[:64])  # load and warm up
        start = time.perf_counter()
        engine.run(ref, first, second)
        pairs_s = args.pairs / (time.perf_counter() - start)

    per_pair = flops_per_pair(config, args.tokens)
    bound = gflops * 1e9 / per_pair
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "torch": torch.__version__,
        "load_avg_before": load_before,
        "threads": 1, "tokens": args.tokens, "pairs": args.pairs,
        "matmul_gflops": round(gflops, 1), "gflop_per_pair": round(per_pair / 1e9, 3),
        "model_pairs_per_s": round(pairs_s, 1), "bound_pairs_per_s": round(bound, 1),
        "model_over_bound": round(pairs_s / bound, 3),
    }
    print(json.dumps(result, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
