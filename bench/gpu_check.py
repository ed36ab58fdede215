"""The GPU check (bench/gpu_check.sh runs it): fine-tuning samples/s of a BERT-base-sized
cross-encoder (random weights, bf16 autocast) under Horovod and TorchDistributor, 1 process
each, against a plain PyTorch loop on the same shards in the same command; then MiniLM
embedding rows/s in the Spark pandas UDF against a plain loop (bench/infer_udf.py).

    .venv/bin/python bench/gpu_check.py [--size base|mini] [--rows 8192] [--seq 128]

Without a GPU it falls back to CPU at the `mini` size (a 4-layer, 256-wide BERT and fewer
rows: the same code path in minutes) and writes bench/results/gpu_cpu_fallback.json, so a
CPU run never passes for a GPU figure; with one it writes bench/results/gpu.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "lib"), str(ROOT / "tests"), str(ROOT / "tests" / "train"), str(ROOT / "bench")]
from speed import scratch  # noqa: E402  (bench/ is this script's own folder on sys.path)

# BertConfig's defaults are BERT-base (12 layers, 768 wide, 12 heads, 3072 FFN).
SIZES = {"base": {}, "mini": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                                  intermediate_size=1024)}


def random_bert(size: str, seq: int, out: str) -> str:
    """A randomly initialised BERT of `size` with the bundled MiniLM tokenizer, saved as a
    Hugging Face directory (what model.name_or_path takes)."""
    from transformers import BertConfig, BertForSequenceClassification

    from llmrec.train.model import load_tokenizer

    tok = load_tokenizer("default")
    config = BertConfig(vocab_size=len(tok), max_position_embeddings=max(512, seq), num_labels=1, **SIZES[size])
    BertForSequenceClassification(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def main() -> None:
    import torch

    gpu = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="base" if gpu else "mini")
    ap.add_argument("--rows", type=int, default=8192 if gpu else 512, help="train rows (val: a quarter)")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32 if gpu else 16)
    ap.add_argument("--infer-rows", type=int, default=20000 if gpu else 500)
    args = ap.parse_args()

    from helpers import make_config
    from train_scaling import build_shards, plain_loop

    from llmrec.spark import get_session
    from llmrec.train import launch

    started = time.perf_counter()
    root = scratch("llmrec-gpu-check-")
    model_dir = random_bert(args.size, args.seq, os.path.join(root, f"bert-{args.size}"))
    common = [f"model.name_or_path={model_dir}", f"tokenize.max_length={args.seq}", "tokenize.row_group_rows=256",
              "train.epochs=1", f"train.batch_size={args.batch}", "train.patience=0", "train.log_every=1000",
              "train.reader=pyarrow", "train.num_proc=1", f"train.device={'gpu' if gpu else 'cpu'}"]
    cfg = make_config(root, *common)
    spark = get_session(cfg)
    users = args.rows // 4
    manifest, base = build_shards(spark, cfg, users, max(8, users // 16))

    plain = plain_loop(cfg, base, manifest, gpu=gpu)
    print(f"plain PyTorch loop: {plain:,.1f} samples/s", flush=True)
    train = {"plain_samples_per_s": plain}
    for backend in ("horovod", "torch_distributor"):
        run_cfg = make_config(root, *common, f"train.backend={backend}", f"train.output_dir={root}/{backend}")
        t0 = time.perf_counter()
        m = launch.run(spark, run_cfg, force=True)
        rate = m["epochs"][0]["samples_per_s"]
        train[backend] = {"samples_per_s": rate, "ratio_vs_plain": rate / plain, "device": m["device"],
                          "wall_s": time.perf_counter() - t0, **m["timing"]}
        print(f"{backend} x1: {rate:,.1f} samples/s (x{rate / plain:.2f} the plain loop) on {m['device']}", flush=True)
    spark.stop()

    infer_out = os.path.join(root, "infer.json")
    subprocess.run([sys.executable, str(ROOT / "bench" / "infer_udf.py"), "--rows", str(args.infer_rows),
                    "--device", "gpu" if gpu else "cpu", "--batch-sizes", "64,256", "--arrow-rows", "1024",
                    "--out", infer_out], check=True)
    infer = json.loads(Path(infer_out).read_text())
    result = {
        "device": "gpu" if gpu else "cpu",
        "machine": torch.cuda.get_device_name(0) if gpu else f"{platform.processor() or platform.machine()}, "
                                                            f"{os.cpu_count()} cores",
        "train": {"model": f"bert-{args.size} (random weights)", "seq": args.seq, "batch": args.batch,
                  "rows": sum(s["rows"] for s in manifest["splits"].values()), "bf16": gpu, **train},
        "embed": {"model": infer["model"], "rows": infer["rows"], "plain_rows_per_s": infer["plain_rows_per_s"],
                  "udf_best": infer["best"]},
        "seconds": round(time.perf_counter() - started, 1),
        "measured": time.strftime("%Y-%m-%d"),
    }
    out = ROOT / "bench" / "results" / ("gpu.json" if gpu else "gpu_cpu_fallback.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
