"""Smoke test for a Horovod build: horovod.spark.run with 2 processes on Spark local[2].

Each process does hvd.init() and a sum-allreduce of [rank + 1]; with 2 processes both
must return 3.0. Run it with the Python that bin/build-horovod installed Horovod into
(that environment also needs pyspark, numpy and pyarrow, and Java 17 on the machine):

    /tmp/hvd-venv/bin/python deps/horovod/smoke_test.py

Prints the per-rank results and the timings; exits 0 on success, 1 on a wrong result.
"""
from __future__ import annotations

import os
import sys
import time

# Loopback only: the machine may have no routable interface (containers, laptops off-line).
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("OMP_NUM_THREADS", "1")

NUM_PROC = 2


def allreduce_fn():
    """Runs in each Horovod process (a Spark task): returns (rank, allreduced value)."""
    import horovod.torch as hvd
    import torch

    hvd.init()
    value = hvd.allreduce(torch.tensor([float(hvd.rank() + 1)]), op=hvd.Sum, name="smoke")
    return hvd.rank(), float(value.item())


def main() -> int:
    t0 = time.perf_counter()
    import horovod
    import horovod.spark
    import torch
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master(f"local[{NUM_PROC}]")
             .appName("horovod-smoke-test")
             .config("spark.driver.host", "127.0.0.1")
             .config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .getOrCreate())
    spark.sparkContext.setLogLevel("WARN")
    t1 = time.perf_counter()
    try:
        results = horovod.spark.run(allreduce_fn, num_proc=NUM_PROC, start_timeout=300, verbose=1)
    finally:
        spark.stop()
    t2 = time.perf_counter()

    expected = [(rank, float(sum(range(1, NUM_PROC + 1)))) for rank in range(NUM_PROC)]
    print(f"horovod {horovod.__version__}, torch {torch.__version__}, pyspark {spark.version}")
    print(f"results: {results}")
    print(f"spark session {t1 - t0:.1f} s, horovod.spark.run {t2 - t1:.1f} s")
    if sorted(results) != expected:
        print(f"FAIL: expected {expected}", file=sys.stderr)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
