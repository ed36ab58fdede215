#!/usr/bin/env bash
# The scale run of docs/benchmarks.md: the whole pipeline on conf/scale.yaml (10M events,
# 1M items, 500k users) on this machine, each part under /usr/bin/time -v (peak memory).
#   part 1: generate .. tokenize with the configuration as it is;
#   part 2: train .. evaluate with the tiny random BERT as the cross-encoder and the
#           embedding model (MiniLM on 2 CPU cores needs ~4 h for 1M items, measured by
#           bench/backfill_1m.py), the cross-encoder reranking 2% of the users.
# Usage: bench/scale_run.sh [1|2|all]   (logs in data-scale/logs/)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PART="${1:-all}"
LOGS=data-scale/logs
mkdir -p "$LOGS"
run() {  # run NAME ARGS...: one timed submit, its log and the time's summary
  local name="$1"; shift
  /usr/bin/time -v ./submit.sh "$@" --conf conf/scale.yaml >"$LOGS/$name.log" 2>&1
  grep -E "Elapsed|Maximum resident" "$LOGS/$name.log"
}
if [ "$PART" = 1 ] || [ "$PART" = all ]; then
  run part1 pipeline --stages generate,ingest,clean,interactions,examples,tokenize
fi
if [ "$PART" = 2 ] || [ "$PART" = all ]; then
  MODEL="$PWD/data-scale/models/cross_encoder/model"
  run part2 pipeline --stages train,embed,candidates,recommend,search,explain,evaluate \
    --set model.name_or_path=tiny --set train.epochs=1 --set train.batch_size=64 \
    --set embed.model="$MODEL" --set embed.chunk_rows=500000 --set recommend.user_sample=0.02 \
    --set evaluate.run=scale
fi
