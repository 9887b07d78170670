#!/usr/bin/env bash
# Run one taxi-duration command with spark-submit, shipping the package as a wheel (--py-files).
#
#   scripts/submit.sh [spark-submit options ...] -- [taxi-duration global options] COMMAND [ARGS ...]
#
#   scripts/submit.sh --master spark://127.0.0.1:7077 -- --workspace ws ingest src/taxi_duration/data/taxis_sample_2019-03.csv
#   scripts/submit.sh --master yarn --deploy-mode client -- --workspace hdfs:///user/me/ws train --model gbt
#
# Environment:
#   PYTHON   interpreter with the dependencies (default: .venv/bin/python if present, else python3); it is the
#            driver's Python and, unless PYSPARK_PYTHON says otherwise, the executors'
#   WHEEL    an already built wheel to ship (default: build one with `pip wheel --no-deps` into $DIST)
#   DIST     where to build the wheel (default: dist/ of the repository)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$repo/.venv/bin/python" ]]; then PYTHON="$repo/.venv/bin/python"; else PYTHON="$(command -v python3)"; fi
fi

spark_opts=()
while [[ $# -gt 0 && "$1" != "--" ]]; do
  spark_opts+=("$1")
  shift
done
if [[ $# -eq 0 ]]; then
  echo "usage: $0 [spark-submit options ...] -- [taxi-duration global options] COMMAND [ARGS ...]" >&2
  exit 2
fi
shift  # the --

if [[ -z "${WHEEL:-}" ]]; then
  DIST="${DIST:-$repo/dist}"
  mkdir -p "$DIST"
  "$PYTHON" -m pip wheel --no-deps --quiet --disable-pip-version-check -w "$DIST" "$repo" >&2
  WHEEL="$(ls -t "$DIST"/taxi_duration_predictor-*.whl | head -n 1)"
fi
if [[ ! -f "$WHEEL" ]]; then
  echo "error: WHEEL $WHEEL: no such file" >&2
  exit 2
fi

spark_home="$("$PYTHON" -c 'from pyspark.find_spark_home import _find_spark_home; print(_find_spark_home())')"
export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}"
# the driver's Python (spark-submit starts it) and the executors' (unless spark.pyspark.python is set)
export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$PYTHON}"

exec "$spark_home/bin/spark-submit" \
  --name taxi-duration \
  --py-files "$WHEEL" \
  --driver-java-options "-Dlog4j2.configurationFile=$repo/src/taxi_duration/conf/log4j2.properties" \
  "${spark_opts[@]}" \
  "$here/spark_submit_entry.py" "$@"
