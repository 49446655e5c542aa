#!/usr/bin/env bash
# Spark benchmark on a standalone cluster on 127.0.0.1 (2 workers × 1 core): imgfeat's transformer
# (scala-example ExtractJob, its default precision and int8) against the baseline a PySpark user would write, a
# pandas_udf around onnxruntime (benches/spark_pandas_udf.py), over ../shared/data/imagenet-sample.
# Same input, same partitions, same work per image, all writing Parquet; written to BENCHMARKS.md.
#   scripts/bench-spark.sh [COPIES] [ROUNDS]   (builds the library and the jar first, so it measures the code as it is)
# Every job runs on the sample (700 photos) and on the sample copied COPIES times (default 4), each
# ROUNDS times (default 2; the fastest counts: single runs move by ±3 s).
# The difference between the two sizes is what the extra photos cost each job, without the fixed
# costs (JVM and Python start-up, executors, listing, model loading) that dominate a 700-photo job:
# the per-photo ratio a long job tends to.
set -euo pipefail
cd "$(dirname "$0")/.."
data=../shared/data/imagenet-sample
[ -d "$data" ] || { echo "bench-spark: $data is absent; nothing to measure" >&2; exit 1; }
copies=${1:-4}
rounds=${2:-2}
[ "$copies" -ge 2 ] || { echo "bench-spark: COPIES must be at least 2" >&2; exit 1; }
[ "$rounds" -ge 1 ] || { echo "bench-spark: ROUNDS must be at least 1" >&2; exit 1; }
# A jar left from an older build would carry an older native library.
cargo build --release --quiet
# target/jvm/imgfeat-spark.jar and imgfeat-example.jar (Spark 4 / Scala 2.13), with the library just
# built (a release jar bundles one built against glibc 2.17; this machine needs no such thing).
IMGFEAT_NATIVE_LIB=$PWD/target/release/libimgfeat.so mvn -q -B package -DskipTests
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet -r tests/reference/requirements.txt -r jvm-bindings/requirements.txt pandas==3.1.1 pyarrow==26.0.1

work=$(mktemp -d)
cleanup() { scripts/spark-cluster.sh stop >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/small" "$work/large"
cp -r "$data" "$work/small/copy1"
for copy in $(seq "$copies"); do cp -r "$data" "$work/large/copy$copy"; done
n_small=$(find "$work/small" -type f | wc -l)
n_large=$(find "$work/large" -type f | wc -l)

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

# job name, size, expected rows: runs the job on that size's folder, checks its row count and keeps
# "<wall seconds> <peak RSS MiB>" in $work/<job>-<size>.time.
job() {
  local input="file://$work/$2" output="$work/$1-$2.parquet" times="$work/$1-$2.time" summary
  local extractor=(--class ai.imgfeat.example.ExtractJob --jars target/jvm/imgfeat-spark.jar target/jvm/imgfeat-example.jar)
  case $1 in
    imgfeat) run "$1-$2" "${submit[@]}" "${extractor[@]}" "$input" "$output" > "$times"; summary="imgfeat: $3 rows" ;;
    int8) run "$1-$2" "${submit[@]}" "${extractor[@]}" --precision int8 "$input" "$output" > "$times"; summary="imgfeat: $3 rows" ;;
    udf) run "$1-$2" "${submit[@]}" --conf "spark.executorEnv.IMGFEAT_MODEL_DIR=$PWD/models" --py-files benches/python_pipeline.py \
           benches/spark_pandas_udf.py "$input" "$output" > "$times"; summary="pandas_udf: $3 rows" ;;
  esac
  grep -q "$summary" "$work/$1-$2.out" || { cat "$work/$1-$2.out" >&2; exit 1; }
}

# Every job ROUNDS times, the rounds one after another (so that a slower spell of the machine
# touches every job alike); each keeps its fastest wall time and its largest RSS.
declare -A wall rss
detected_counts=""
for round in $(seq "$rounds"); do
  for size in small large; do
    count=$([ $size = small ] && echo "$n_small" || echo "$n_large")
    for name in imgfeat int8 udf; do
      job $name $size "$count"
      read -r seconds mib < "$work/$name-$size.time"
      if [ "$round" = 1 ] || awk -v a="$seconds" -v b="${wall[$name/$size]}" 'BEGIN { exit !(a < b) }'; then wall[$name/$size]=$seconds; fi
      if [ "$round" = 1 ] || [ "$mib" -gt "${rss[$name/$size]}" ]; then rss[$name/$size]=$mib; fi
    done
  done
done

# The same work: the baseline must find the same main objects as imgfeat (it embeds the crop only
# when there is one). imgfeat's default precision is bf16 where the CPU has AVX-512 BF16, which moves
# a score across the threshold now and then: there the counts may differ by 1 % of the photos.
bf16=$(grep -m1 '^flags' /proc/cpuinfo | grep -qw avx512_bf16 && echo yes || echo no)
case "${IMGFEAT_MAX_ISA:-}" in avx2|baseline) bf16=no ;; esac  # the cap turns bf16 off, as on a CPU without it
default_precision=$([ "$bf16" = yes ] && echo bf16 || echo f32)
detected() { .venv/bin/python -c 'import sys, pyarrow.compute as pc, pyarrow.parquet as pq; print(pc.sum(pq.read_table(sys.argv[1], columns=["detected"])["detected"]).as_py())' "$1"; }
for size in small large; do
  d_udf=$(detected "$work/udf-$size.parquet") d_imgfeat=$(detected "$work/imgfeat-$size.parquet")
  count=$([ $size = small ] && echo "$n_small" || echo "$n_large")
  allowed=$([ "$default_precision" = f32 ] && echo 0 || echo $((count / 100)))
  [ $((d_udf > d_imgfeat ? d_udf - d_imgfeat : d_imgfeat - d_udf)) -le "$allowed" ] \
    || { echo "bench-spark: on $size the baseline detected $d_udf photos, imgfeat $d_imgfeat: not the same work" >&2; exit 1; }
  detected_counts+="$size: baseline $d_udf, imgfeat $d_imgfeat; "
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
rate() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.1f", n / t }'; }
extra() { awk -v a="${wall[$1/large]}" -v b="${wall[$1/small]}" 'BEGIN { printf "%.1f", a - b }'; }
# What a job costs besides its photos: the small job's wall time less its photos at the extra photos' rate.
fixed() { awk -v s="${wall[$1/small]}" -v d="$(extra "$1")" -v n="$n_small" -v e=$((n_large - n_small)) 'BEGIN { printf "%.1f", s - d * n / e }'; }
row() { # label, job name
  local d; d=$(extra "$2")
  echo "| $1 | ${wall[$2/small]} | $(ratio "${wall[udf/small]}" "${wall[$2/small]}") | ${wall[$2/large]} | $(ratio "${wall[udf/large]}" "${wall[$2/large]}") | $d | $(rate $((n_large - n_small)) "$d") | $(ratio "$(extra udf)" "$d") | $(fixed "$2") | ${rss[$2/large]} |"
}
section=$(cat <<MD
## Spark: imgfeat transformer vs pandas_udf + onnxruntime ($n_small and $n_large photos)

Command: \`scripts/bench-spark.sh $copies $rounds\` ($(date -u +%Y-%m-%d), $(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')); standalone cluster on 127.0.0.1, 2
workers × 1 core, 1 GiB executors, 4 partitions (2 per core) for every job; wall time of spark-submit
(JVM start-up included), the fastest of $rounds runs of each job. Baseline: \`benches/spark_pandas_udf.py\`, a
pandas_udf running the tuned Python pipeline (onnxruntime, Pillow, NumPy; models loaded once per
Python worker). Each job ran on the $n_small photos of the sample and on the sample copied $copies
times ($n_large photos); "extra photos" is the difference, the cost of $((n_large - n_small)) more
photos without the fixed costs every job pays once (start-up, executors, listing, the first tasks'
warm-up, the write's commit): the ratio a long job tends to. "Fixed costs" is the $n_small-photo job's
wall time less its photos at that rate: a job of N photos takes about fixed + N / rate seconds.
The default precision is \`auto\`: bf16 where the CPU has AVX-512 BF16 (this one: $bf16), else f32.
Photos with a detected object (the same work, within 1 % where the default is bf16): ${detected_counts% }

| job | $n_small photos: wall s | × baseline | $n_large photos: wall s | × baseline | extra photos: s | images/s | × baseline | fixed costs s | peak RSS per worker MiB (executor JVM + Python workers) |
|---|---|---|---|---|---|---|---|---|---|
$(row "pandas_udf + onnxruntime (baseline)" udf)
$(row "imgfeat ImageFeatureExtractor, default precision ($default_precision on this CPU)" imgfeat)
$(row "imgfeat ImageFeatureExtractor, \`setPrecision(\"int8\")\`" int8)
MD
)
echo "$section" | python3 scripts/splice-benchmarks.py
echo "$section"
