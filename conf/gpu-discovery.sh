#!/usr/bin/env bash
# Spark GPU discovery script (spark.executor.resource.gpu.discoveryScript, and
# spark.worker.resource.gpu.discoveryScript on standalone workers): prints the GPUs of
# this machine as Spark's ResourceInformation JSON, e.g.
#   {"name":"gpu","addresses":["0","1"]}
# Without nvidia-smi, or when it fails (no driver), it prints an empty address list and
# exits 0: Spark then sees a machine without GPUs instead of a failed executor start.
# Ship it with --files conf/gpu-discovery.sh (see README "On a cluster").
set -u
addresses=""
if command -v nvidia-smi >/dev/null 2>&1; then
  if out="$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null)"; then
    while IFS= read -r line; do
      line="${line//[[:space:]]/}"
      case "$line" in
        ''|*[!0-9]*) continue ;;  # blank lines and anything that is not a GPU index
      esac
      addresses="${addresses:+$addresses,}\"$line\""
    done <<< "$out"
  fi
fi
printf '{"name":"gpu","addresses":[%s]}\n' "$addresses"
