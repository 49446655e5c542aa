#!/usr/bin/env bash
# Spark benchmark on a standalone cluster on 127.0.0.1 (2 workers × 1 core): imgfeat's transformer
# (scala-example ExtractJob) against the baseline a PySpark user would write, a pandas_udf around
# onnxruntime (benches/spark_pandas_udf.py), over ../shared/data/imagenet-sample. Same input, same
# partitions, same work per image, both writing Parquet; written to BENCHMARKS.md.
#   scripts/bench-spark.sh [COPIES]   (builds the library and the jar first, so it measures the code as it is)
# COPIES (default 1): the sample copied that many times into the input, to see the jobs' fixed costs
# (JVM and Python start-up, listing, model loading) shrink against the photo work.
set -euo pipefail
cd "$(dirname "$0")/.."
data=../shared/data/imagenet-sample
[ -d "$data" ] || { echo "bench-spark: $data is absent; nothing to measure" >&2; exit 1; }
# A jar left from an older build would carry an older native library.
cargo build --release --quiet
jvm-bindings/build.sh > /dev/null
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet -r tests/reference/requirements.txt -r jvm-bindings/requirements.txt pandas==3.1.1 pyarrow==26.0.1

work=$(mktemp -d)
cleanup() { scripts/spark-cluster.sh stop >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
copies=${1:-1}
mkdir "$work/photos"
for copy in $(seq "$copies"); do cp -r "$data" "$work/photos/copy$copy"; done
n=$(find "$work/photos" -type f | wc -l)

SPARK_HOME=$(.venv/bin/python -c 'import pyspark, os; print(os.path.dirname(pyspark.__file__))')
export SPARK_HOME SPARK_LOCAL_IP=127.0.0.1 SPARK_CONF_DIR=$PWD/jvm-bindings/spark-conf
export PYSPARK_PYTHON=$PWD/.venv/bin/python PYSPARK_DRIVER_PYTHON=$PWD/.venv/bin/python
submit=("$SPARK_HOME/bin/spark-submit" --master spark://127.0.0.1:7077 --total-executor-cores 2
        --executor-cores 1 --executor-memory 1g)
scripts/spark-cluster.sh start >/dev/null

# Peak resident memory of the executor side (executor JVMs + their Python workers), sampled every
# 0.2 s, divided by the two workers.
sample_rss() {
  local peak=0 total
  while [ -d "$work" ] && [ ! -f "$work/stop-sampling" ]; do
    total=$(ps -eo rss=,args= | awk '/CoarseGrainedExecutorBackend|pyspark\.(daemon|worker)/ && !/awk/ { s += $1 } END { print s + 0 }')
    [ "$total" -gt "$peak" ] && peak=$total
    sleep 0.2
  done
  echo $(( peak / 2 / 1024 ))
}

run() { # label, command...; prints "<wall seconds> <peak RSS MiB per worker>"
  rm -f "$work/stop-sampling"
  sample_rss > "$work/rss" &
  local sampler=$! start end
  start=$(date +%s.%N)
  "${@:2}" > "$work/$1.out" 2> "$work/$1.err" || { tail -30 "$work/$1.err" >&2; exit 1; }
  end=$(date +%s.%N)
  touch "$work/stop-sampling"; wait "$sampler"
  echo "$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }') $(cat "$work/rss")"
}

run imgfeat "${submit[@]}" --class ai.imgfeat.example.ExtractJob \
  --jars target/jvm/imgfeat-spark.jar target/jvm/imgfeat-example.jar "file://$work/photos" "$work/imgfeat.parquet" > "$work/imgfeat.time"
run udf "${submit[@]}" --conf "spark.executorEnv.IMGFEAT_MODEL_DIR=$PWD/models" --py-files benches/python_pipeline.py \
  benches/spark_pandas_udf.py "file://$work/photos" "$work/udf.parquet" > "$work/udf.time"
read -r t_imgfeat rss_imgfeat < "$work/imgfeat.time"
read -r t_udf rss_udf < "$work/udf.time"
grep -q "imgfeat: $n rows" "$work/imgfeat.out" || { cat "$work/imgfeat.out" >&2; exit 1; }
grep -q "pandas_udf: $n rows" "$work/udf.out" || { cat "$work/udf.out" >&2; exit 1; }

if [ "$copies" = 1 ]; then
  title="Spark: imgfeat transformer vs pandas_udf + onnxruntime ($n photos)" command="scripts/bench-spark.sh"
else
  title="Spark, the sample $copies times: imgfeat transformer vs pandas_udf + onnxruntime ($n photos)"
  command="scripts/bench-spark.sh $copies"
fi
section=$(cat <<MD
## $title

Command: \`$command\` ($(date -u +%Y-%m-%d)); standalone cluster on 127.0.0.1, 2 workers ×
1 core, 1 GiB executors, 4 partitions (2 per core) for both; wall time of spark-submit (JVM start-up included, about 10 s for
either). Baseline: \`benches/spark_pandas_udf.py\`, a pandas_udf running the tuned Python pipeline
(onnxruntime, Pillow, NumPy; models loaded once per Python worker).

| job | wall s | images/s | imgfeat × baseline | peak RSS per worker MiB (executor JVM + Python workers) |
|---|---|---|---|---|
| pandas_udf + onnxruntime (baseline) | $t_udf | $(awk -v n="$n" -v t="$t_udf" 'BEGIN { printf "%.1f", n / t }') | 1.00 | $rss_udf |
| imgfeat ImageFeatureExtractor | $t_imgfeat | $(awk -v n="$n" -v t="$t_imgfeat" 'BEGIN { printf "%.1f", n / t }') | $(awk -v a="$t_udf" -v b="$t_imgfeat" 'BEGIN { printf "%.2f", a / b }') | $rss_imgfeat |
MD
)
echo "$section" | python3 scripts/splice-benchmarks.py
echo "$section"
