#!/usr/bin/env bash
# submit.sh JOB [--conf FILE] [--set k=v]... [-- spark-submit args]
# Packages lib/ for --py-files, attaches Delta (local jars, or --packages on clusters),
# picks the master (spark-submit args > conf spark.master > local[*]) and runs
# jobs/run.py JOB (the jobs are llmrec.cli.JOBS: the stages of llmrec.stages and pipeline).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

PYTHON="${PYTHON:-$HERE/.venv/bin/python}"
[ -x "$PYTHON" ] || { echo "submit.sh: $PYTHON not found: run bin/setup first (or set PYTHON)" >&2; exit 2; }
jobs() { PYTHONPATH="$HERE/lib" "$PYTHON" -m llmrec.cli --list; }
usage() {
  echo "usage: ./submit.sh JOB [--conf FILE] [--set key=value]... [-- spark-submit args]"
  echo
  jobs
  echo
  echo "environment: PYTHON (default .venv/bin/python), SPARK_HOME (default: the pyspark package)"
}

[ $# -ge 1 ] || { usage >&2; exit 2; }
case "$1" in -h|--help|help) usage; exit 0 ;; esac
JOB="$1"; shift
# grep reads the whole list (not -q): an early exit would break the pipe under pipefail.
jobs | grep "^  $JOB " >/dev/null || { echo "submit.sh: unknown job '$JOB' (./submit.sh --help lists them)" >&2; exit 2; }

CONF="${LLMREC_CONF:-conf/local.yaml}"
JOB_ARGS=(); SETS=(); SUBMIT_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --conf) CONF="$2"; shift 2 ;;
    --conf=*) CONF="${1#--conf=}"; shift ;;
    --set) SETS+=(--set "$2"); shift 2 ;;
    --set=*) SETS+=(--set "${1#--set=}"); shift ;;
    --) shift; SUBMIT_ARGS=("$@"); break ;;
    *) JOB_ARGS+=("$1"); shift ;;
  esac
done

conf_get() { PYTHONPATH="$HERE/lib" "$PYTHON" -m llmrec.conf "$CONF" "${SETS[@]}" --get "$1"; }
MODE="$(conf_get spark.mode)" || exit 2

# The master: an explicit --master after -- wins, then the config, then local[*].
MASTER=""
for ((i = 0; i < ${#SUBMIT_ARGS[@]}; i++)); do
  [ "${SUBMIT_ARGS[$i]}" = "--master" ] && MASTER="${SUBMIT_ARGS[$((i + 1))]}"
done
# The driver's heap is fixed when spark-submit starts its JVM: a session setting made
# later (spark.driver.memory) comes too late, so it goes on the command line here.
if [[ " ${SUBMIT_ARGS[*]} " != *" --driver-memory "* ]]; then
  SUBMIT_ARGS=(--driver-memory "$(conf_get spark.driver_memory)" "${SUBMIT_ARGS[@]}")
fi
if [ -z "$MASTER" ]; then
  MASTER="$(conf_get spark.master)"
  [ -n "$MASTER" ] || MASTER="local[*]"
  SUBMIT_ARGS=(--master "$MASTER" "${SUBMIT_ARGS[@]}")
fi

# lib/ as a zip for the executors (the driver imports the same zip).
mkdir -p build
"$PYTHON" - <<'PY'
import pathlib, zipfile
import os
tmp = pathlib.Path(f"build/llmrec.zip.{os.getpid()}.tmp")  # concurrent submits: each its own
with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
    for p in sorted(pathlib.Path("lib").rglob("*.py")):
        z.write(p, p.relative_to("lib"))
tmp.replace("build/llmrec.zip")
PY

DELTA_VERSION="$(sed -n 's/^delta-spark==//p' requirements/base.txt)"
if [ "$MODE" = "local" ]; then
  export LLMREC_JARS="${LLMREC_JARS:-$HERE/.jars}"
  JARS="$(ls "$LLMREC_JARS"/*.jar 2>/dev/null | paste -sd, -)"
  [ -n "$JARS" ] || { echo "submit.sh: no Delta jars in .jars/: run bin/setup" >&2; exit 2; }
  DELTA_ARGS=(--jars "$JARS")
else
  DELTA_ARGS=(--packages "io.delta:delta-spark_2.13:$DELTA_VERSION")
fi

if [ -n "${SPARK_HOME:-}" ]; then SUBMIT="$SPARK_HOME/bin/spark-submit"
else SUBMIT="$(dirname "$PYTHON")/spark-submit"; fi

# Local and loopback clusters bind to 127.0.0.1, never to another interface.
case "$MASTER" in local*|spark://127.0.0.1*|spark://localhost*) export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}" ;; esac
export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$PYTHON}" PYSPARK_DRIVER_PYTHON="${PYSPARK_DRIVER_PYTHON:-$PYTHON}"
LOG_ARGS=(--driver-java-options "-Dlog4j.configurationFile=file:$HERE/conf/log4j2.properties")
exec "$SUBMIT" "${SUBMIT_ARGS[@]}" "${DELTA_ARGS[@]}" "${LOG_ARGS[@]}" --py-files build/llmrec.zip \
  jobs/run.py "$JOB" --conf "$CONF" "${SETS[@]}" --set "spark.master=$MASTER" "${JOB_ARGS[@]}"
