"""Benchmark: what one rank's failed exit costs a TorchDistributor run (torchrun's exit
barrier), in one command.

    .venv/bin/python bench/exit_barrier.py [--runs 3]

Starts two torchrun agents the way TorchDistributor's non-local mode does (one per
barrier task: --nnodes=2, --node_rank, --rdzv_endpoint, --rdzv_id=0, one process each; rank
0's agent hosts the rendezvous store), on 127.0.0.1. Each worker joins a gloo group, sums a
tensor, leaves the group, then exits 0, or 1 on the arm's failing rank. Per arm: each run's
wall time, until both agents have exited. The rank-1 arm runs once: it is the slow one.
Writes bench/results/exit_barrier.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from speed import load, machine, scratch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "integration")]
from standalone import free_port  # noqa: E402  (the integration tests' loopback port)
WORKER = """
import os, torch, torch.distributed as dist
dist.init_process_group("gloo")
t = torch.ones(4)
dist.all_reduce(t)
dist.destroy_process_group()
os._exit(1 if os.environ["RANK"] == os.environ["FAIL_RANK"] else 0)
"""


def one_run(worker: str, fail_rank: str) -> dict:
    port, t0 = free_port(), time.perf_counter()
    agents = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={r}",
                                f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=0", "--nproc_per_node=1", worker],
                               env={**os.environ, "FAIL_RANK": fail_rank},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
              for r in (0, 1)]
    logs = [a.communicate()[1] for a in agents]
    return {"wall_s": round(time.perf_counter() - t0, 1), "agent_exit_codes": [a.returncode for a in agents],
            "rank0_agent_timed_out_at_exit_barrier": "Error waiting on exit barrier" in logs[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="runs of the quick arms")
    args = ap.parse_args()
    worker = os.path.join(scratch("llmrec-exit-barrier-"), "worker.py")
    Path(worker).write_text(WORKER)
    record = {"machine": machine(), "load_avg_before": load(), "arms": {}}
    for name, fail_rank, runs in (("none fails", "-", args.runs), ("rank 0 exits 1", "0", args.runs),
                                  ("rank 1 exits 1", "1", 1)):
        record["arms"][name] = [one_run(worker, fail_rank) for _ in range(runs)]
        print(name, [r["wall_s"] for r in record["arms"][name]], flush=True)
    record["load_avg_after"] = load()
    (ROOT / "bench" / "results" / "exit_barrier.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
