"""Benchmark: training throughput of both backends with 1 and 2 processes, against a plain
single-process PyTorch loop on the same shards, model and batch size, in one command.

    .venv/bin/python bench/train_scaling.py [--model default|tiny] [--rows 640] [--seq 64]

Builds shards of synthetic user/item text pairs (the same generator as the training
tests), then for each backend and process count runs one epoch through llmrec's train
launcher on Spark local[2] and reads rank 0's metrics.json: samples/s of the epoch (all
ranks together), start-up cost (launcher call -> train function entered on rank 0, and
entry -> processes joined with the model built). Every process uses 1 torch thread, so
the 2-process runs measure what distribution costs, not thread contention. Prints
scaling efficiency rate(2) / (2 * rate(1)) and each rate / the plain loop's; writes
bench/results/train_scaling_<model>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "tests"))
from speed import scratch  # noqa: E402  (bench/ is this script's own folder on sys.path)
os.environ["OMP_NUM_THREADS"] = "1"


def plain_loop(cfg, base: str, manifest: dict, gpu: bool = False) -> float:
    """samples/s of the simplest PyTorch loop: same model, batch, optimizer, 1 thread (on
    GPU: bf16 autocast, as the train loop runs there)."""
    import torch

    from llmrec.train.model import build_model
    from llmrec.train.readers import open_reader

    torch.set_num_threads(1)
    torch.manual_seed(cfg.train.seed)
    device = torch.device("cuda" if gpu else "cpu")
    model = build_model(cfg.model, cfg.tokenize.max_length).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    reader = open_reader("pyarrow", base, manifest, "train", batch_size=cfg.train.batch_size, shuffle=True)
    rows, t0 = 0, time.perf_counter()
    for b in reader:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=gpu):
            out = model(**{k: torch.as_tensor(b[k], dtype=torch.long, device=device)
                           for k in ("input_ids", "attention_mask", "token_type_ids")})
        loss = loss_fn(out.logits.squeeze(-1).float(),
                       torch.as_tensor(b["label"], dtype=torch.float32, device=device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        rows += len(b["label"])
    if gpu:
        torch.cuda.synchronize()
    return rows / (time.perf_counter() - t0)


def build_shards(spark, cfg, train_users: int, val_users: int) -> tuple[dict, str]:
    """gold.examples of synthetic user/item pairs (the training tests' generator) for this
    many train and val users, tokenized: (manifest, shard folder)."""
    from test_training import example_rows  # tests/train is not a package: on sys.path

    from llmrec import tables
    from llmrec.features import tokens
    from llmrec.tables.schemas import EXAMPLES

    rows = example_rows(train_users, "train", 1) + example_rows(val_users, "val", 2)
    tables.overwrite(spark.createDataFrame(rows, EXAMPLES.schema), cfg, EXAMPLES)
    manifest = tokens.build(spark, cfg)
    return manifest, os.path.dirname(tokens.manifest_path(cfg))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default", help="default (MiniLM-L6) or tiny")
    ap.add_argument("--rows", type=int, default=640, help="train rows (val is a quarter)")
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()

    from helpers import make_config
    from llmrec.spark import get_session
    from llmrec.train import launch

    root = scratch("llmrec-bench-train-")
    common = [f"model.name_or_path={args.model}", f"tokenize.max_length={args.seq}",
              "tokenize.row_group_rows=32", "train.epochs=1", f"train.batch_size={args.batch}",
              "train.threads_per_proc=1", "train.patience=0", "train.log_every=1000",
              "train.reader=pyarrow"]
    cfg = make_config(root, *common)
    spark = get_session(cfg)
    users = args.rows // 4
    manifest, base = build_shards(spark, cfg, users, max(8, users // 4))

    plain = plain_loop(cfg, base, manifest)
    print(f"plain PyTorch loop, 1 process: {plain:.1f} samples/s", flush=True)
    results = {"plain_samples_per_s": plain, "runs": {}}
    for backend in ("horovod", "torch_distributor"):
        for n in (1, 2):
            run_cfg = make_config(root, *common, f"train.backend={backend}", f"train.num_proc={n}",
                                  f"train.output_dir={root}/{backend}-{n}")
            t0 = time.perf_counter()
            m = launch.run(spark, run_cfg, force=True)
            wall = time.perf_counter() - t0
            rate = m["epochs"][0]["samples_per_s"]
            results["runs"][f"{backend}-{n}"] = {"samples_per_s": rate, "wall_s": wall, **m["timing"]}
            print(f"{backend} x{n}: {rate:.1f} samples/s ({rate / plain:.2f} x plain), start-up "
                  f"{m['timing']['launch_to_entry_s']:.1f} s + {m['timing']['entry_to_ready_s']:.1f} s, "
                  f"wall {wall:.0f} s", flush=True)
        one, two = (results["runs"][f"{backend}-{n}"]["samples_per_s"] for n in (1, 2))
        results["runs"][f"{backend}-scaling_efficiency"] = two / (2 * one)
        print(f"{backend}: scaling efficiency rate(2)/(2*rate(1)) = {two / (2 * one):.2f}", flush=True)
    rows = sum(s["rows"] for s in manifest["splits"].values())
    results.update(model=args.model, rows=rows, seq=args.seq, batch=args.batch,
                   machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                   measured=time.strftime("%Y-%m-%d"))
    out = ROOT / "bench" / "results" / f"train_scaling_{args.model}.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")
    spark.stop()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "tests" / "train"))
    main()
