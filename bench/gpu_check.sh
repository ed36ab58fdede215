#!/usr/bin/env bash
# bench/gpu_check.sh: the GPU check, one command on a machine with one NVIDIA GPU (under
# 8 minutes there). Writes bench/results/gpu.json: BERT-base fine-tuning samples/s (random
# weights, seq 128, bf16) under Horovod and TorchDistributor against a plain PyTorch loop,
# and MiniLM embedding rows/s in the Spark UDF against a plain loop (bench/gpu_check.py).
# Without a GPU it runs the same code on CPU at a small size and writes
# bench/results/gpu_cpu_fallback.json instead. Needs the project venv (bin/setup).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -x .venv/bin/python ] || { echo "gpu_check: no .venv: run bin/setup first" >&2; exit 2; }
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,utilization.gpu --format=csv
else
  echo "gpu_check: no nvidia-smi: the CPU fallback runs"
fi
export SPARK_LOCAL_IP=127.0.0.1 PYTHONPATH="$PWD/lib"
exec timeout "${GPU_CHECK_TIMEOUT:-900}" .venv/bin/python bench/gpu_check.py "$@"
