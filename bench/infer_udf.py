"""Benchmark: embedding inference in a Spark pandas UDF (llmrec.infer.engine) against a
plain single-process PyTorch loop over the same rows and model, in one command.

    .venv/bin/python bench/infer_udf.py [--rows 2000] [--model default] [--device auto]

Rows: synthetic catalog item texts (the embed job's text: title, category, brand,
price band, description). Plain loop: AutoModel + tokenizer in this process, batches
of 64 padded to the longest row, mean pooling, torch threads = all cores. UDF: the
embed UDF on local[N] (N = cores; one model per Python worker, torch threads = the
task's cpus), swept over infer.batch_size x infer.arrow_batch_rows, and with
sort_by_length off at the best setting. rows/s counts the whole Spark job (read,
UDF, collect of a checksum), so the ratio includes Spark's overhead. With a GPU
(--device gpu or auto on a GPU machine) both sides run on it in bf16 (UDF) / bf16 (loop).
Writes bench/results/infer_udf[_gpu].json.
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


def texts_frame(spark, rows: int):
    """The embed job's item text for `rows` synthetic catalog items."""
    from pyspark.sql import functions as F

    from llmrec.conf import SyntheticConf
    from llmrec.data.synthetic import Shop, items_frame

    items = items_frame(spark, Shop(SyntheticConf(items=rows)))
    text = F.concat_ws(". ", "title", F.concat(F.lit("Category: "), "category"),
                       F.concat(F.lit("Brand: "), "brand"), F.lit("Price: mid-range"),
                       F.substring("description", 1, 160))
    return items.select(F.col("i").alias("id"), text.alias("text"))


def plain_loop(path: str, texts: list[str], batch: int, max_length: int, gpu: bool) -> float:
    """What a user would write by hand: rows/s."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(os.cpu_count() or 1)
    device = torch.device("cuda" if gpu else "cpu")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).to(device).eval()
    t0 = time.perf_counter()
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=gpu):
        for start in range(0, len(texts), batch):
            enc = tok(texts[start:start + batch], max_length=max_length, truncation=True,
                      padding=True, return_tensors="pt").to(device)
            hidden = model(**enc).last_hidden_state.float()
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
            pooled.cpu()
    return len(texts) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--model", default="default")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    ap.add_argument("--batch-sizes", default="16,64,256")
    ap.add_argument("--arrow-rows", default="64,1024")
    ap.add_argument("--out", help="where the JSON goes (default bench/results/infer_udf[_gpu].json)")
    args = ap.parse_args()

    import torch
    from pyspark.sql import functions as F

    from conftest import make_config
    from llmrec.infer import engine
    from llmrec.spark import get_session

    cores = os.cpu_count() or 1
    gpu = args.device == "gpu" or (args.device == "auto" and torch.cuda.is_available())
    root = scratch("llmrec-bench-infer-")
    base = [f"spark.master=local[{cores}]", f"embed.model={args.model}", "embed.max_length=128",
            f"infer.device={'gpu' if gpu else 'cpu'}", "spark.driver_memory=6g"]
    cfg = make_config(root, *base)
    spark = get_session(cfg)
    df = texts_frame(spark, args.rows).repartition(cores * 2).cache()
    texts = [r.text for r in df.orderBy("id").collect()]
    path = engine.resolve(args.model)

    plain = plain_loop(path, texts, 64, 128, gpu)
    print(f"plain PyTorch loop, 1 process, {cores} threads, batch 64: {plain:,.1f} rows/s", flush=True)

    def udf_rate(batch: int, arrow: int, sort: bool = True) -> float:
        c = make_config(root, *base, f"infer.batch_size={batch}", f"infer.arrow_batch_rows={arrow}",
                        f"infer.sort_by_length={str(sort).lower()}")
        engine.arrow_batch(spark, c)
        embed = engine.embed_udf(engine.embed_ref(c))
        # warm: every worker loads the model before the timed pass
        df.select(F.size(embed("text")).alias("d")).agg(F.sum("d")).first()
        t0 = time.perf_counter()
        df.select(F.aggregate(embed("text"), F.lit(0.0), lambda a, x: a + x).alias("s")) \
            .agg(F.sum("s")).first()
        return args.rows / (time.perf_counter() - t0)

    sweep = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        for arrow in [int(a) for a in args.arrow_rows.split(",")]:
            rate = udf_rate(batch, arrow)
            sweep.append({"batch_size": batch, "arrow_batch_rows": arrow, "rows_per_s": rate,
                          "ratio_vs_plain": rate / plain})
            print(f"UDF local[{cores}] batch {batch:>4} arrow {arrow:>5}: {rate:,.1f} rows/s "
                  f"(x{rate / plain:.2f} the plain loop)", flush=True)
    best = max(sweep, key=lambda r: r["rows_per_s"])
    unsorted = udf_rate(best["batch_size"], best["arrow_batch_rows"], sort=False)
    print(f"best setting without length sorting: {unsorted:,.1f} rows/s "
          f"(sorting gives x{best['rows_per_s'] / unsorted:.2f})")
    plain_again = plain_loop(path, texts, 64, 128, gpu)  # the machine is noisy: baseline twice
    print(f"plain loop again: {plain_again:,.1f} rows/s")
    result = {"rows": args.rows, "model": engine.model_id(engine.embed_ref(cfg)), "device": "gpu" if gpu else "cpu",
              "plain_rows_per_s": [plain, plain_again], "sweep": sweep, "best": best,
              "best_unsorted_rows_per_s": unsorted,
              "machine": (torch.cuda.get_device_name(0) if gpu else
                          f"{platform.processor() or platform.machine()}, {cores} cores"),
              "measured": time.strftime("%Y-%m-%d")}
    out = Path(args.out or ROOT / "bench" / "results" / f"infer_udf{'_gpu' if gpu else ''}.json")
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    spark.stop()


if __name__ == "__main__":
    main()
