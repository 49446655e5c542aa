#!/usr/bin/env bash
# End-to-end benchmark of the CLI over ../shared/data/imagenet-sample (700 photos), written to
# BENCHMARKS.md. Baseline, measured in the same run with the same number of threads: the tuned Python
# pipeline a user would write (benches/python_pipeline.py: onnxruntime + Pillow + NumPy, one process
# per thread), doing the same work per image (decode, detect, crop, two embeddings or one when the
# crop is the whole image, codes).
#   scripts/bench.sh            # all 700 photos
#   BENCH_LIMIT=100 scripts/bench.sh
#   BENCH_ROUNDS=3 scripts/bench.sh   # every run 3 times, the fastest counts (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
data=../shared/data/imagenet-sample
[ -d "$data" ] || { echo "bench: $data is absent; nothing to measure" >&2; exit 1; }
limit=${BENCH_LIMIT:-700}
rounds=${BENCH_ROUNDS:-2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/photos"
ls "$data" | sort | head -n "$limit" | while read -r f; do ln -s "$(realpath "$data/$f")" "$work/photos/$f"; done
n=$(ls "$work/photos" | wc -l)

cargo build --release --quiet
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet -r tests/reference/requirements.txt   # onnxruntime, NumPy, Pillow

# Runs a command, prints "<seconds> <peak RSS in MiB>" and keeps its stdout in $work/out.
measure() {
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" > "$work/out" 2> "$work/err" || { cat "$work/err" >&2; exit 1; }
  awk '{printf "%s %.0f\n", $1, $2 / 1024}' "$work/time"
}

# imgfeat's own rate excludes model loading (it includes writing Parquet); so does the baseline's.
imgfeat_rate() { sed -n 's/.* \([0-9.]*\) images\/s on.*/\1/p' "$work/out"; }
python_rate() { .venv/bin/python -c 'import json,sys; r=json.load(open(sys.argv[1])); print(round(r["images"]/r["seconds"],1))' "$work/out"; }

# Every run ROUNDS times, one round after another (so that a slower spell of the machine touches
# every run alike); each keeps its fastest rate and its largest RSS.
declare -A rate rss
# label, rate parser, command...
bench_run() {
  local label=$1 parse=$2 seconds mib r
  measure "${@:3}" > "$work/m"; read -r seconds mib < "$work/m"
  r=$($parse)
  if [ -z "${rate[$label]:-}" ] || awk -v a="$r" -v b="${rate[$label]}" 'BEGIN { exit !(a > b) }'; then rate[$label]=$r; fi
  if [ -z "${rss[$label]:-}" ] || [ "$mib" -gt "${rss[$label]}" ]; then rss[$label]=$mib; fi
}
for round in $(seq "$rounds"); do
  bench_run i1 imgfeat_rate ./target/release/imgfeat extract --threads 1 -o "$work/t1.parquet" "$work/photos"
  bench_run i2 imgfeat_rate ./target/release/imgfeat extract --threads 2 -o "$work/t2.parquet" "$work/photos"
  summary2=$(cat "$work/out")
  bench_run q1 imgfeat_rate ./target/release/imgfeat extract --threads 1 --precision int8 -o "$work/q1.parquet" "$work/photos"
  bench_run q2 imgfeat_rate ./target/release/imgfeat extract --threads 2 --precision int8 -o "$work/q2.parquet" "$work/photos"
  bench_run p1 python_rate .venv/bin/python benches/python_pipeline.py "$work/photos" --threads 1
  bench_run p2 python_rate .venv/bin/python benches/python_pipeline.py "$work/photos" --threads 2
done
detected=$(echo "$summary2" | sed -n 's/.*ok (\([0-9]*\) with a detected object).*/\1/p')
# The same work: the baseline must find the same main objects (it embeds the crop only when there is one).
detected_p=$(.venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["detected"])' "$work/out")
[ "$detected_p" = "$detected" ] || { echo "bench: the baseline detected $detected_p photos, imgfeat $detected: not the same work" >&2; exit 1; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
section=$(cat <<MD
## End-to-end CLI on imagenet-sample ($n photos)

Command: \`scripts/bench.sh\` ($(date -u +%Y-%m-%d), $cpu, $(nproc) cores), the fastest of $rounds
runs of each. Rates exclude model loading; imgfeat's include writing Parquet. Baseline: the tuned Python pipeline
(\`benches/python_pipeline.py\`: onnxruntime with one intra-op thread per process, Pillow, NumPy, one
process per thread), the same work per image, with the same number of threads.

| threads | Python baseline images/s | imgfeat images/s | imgfeat × baseline | peak RSS MiB, Python (largest process) | peak RSS MiB, imgfeat |
|---|---|---|---|---|---|
| 1 | ${rate[p1]} | ${rate[i1]} | $(ratio "${rate[i1]}" "${rate[p1]}") | ${rss[p1]} | ${rss[i1]} |
| 2 | ${rate[p2]} | ${rate[i2]} | $(ratio "${rate[i2]}" "${rate[p2]}") | ${rss[p2]} | ${rss[i2]} |
| 1, imgfeat \`--precision int8\` | ${rate[p1]} | ${rate[q1]} | $(ratio "${rate[q1]}" "${rate[p1]}") | ${rss[p1]} | ${rss[q1]} |
| 2, imgfeat \`--precision int8\` | ${rate[p2]} | ${rate[q2]} | $(ratio "${rate[q2]}" "${rate[p2]}") | ${rss[p2]} | ${rss[q2]} |

- imgfeat scaling, 2 threads over 1: $(ratio "${rate[i2]}" "${rate[i1]}")× (int8: $(ratio "${rate[q2]}" "${rate[q1]}")×).
- Photos with a detected object (COCO, score ≥ 0.3), by imgfeat and by the baseline alike: $detected of $n ($(awk -v d="$detected" -v n="$n" 'BEGIN { printf "%.0f", 100 * d / n }') %).
- imgfeat's own summary: \`$summary2\`
- Models run on the native executor (default config); its model-only speed against onnxruntime is in "Model compute" below.
MD
)
echo "$section" | python3 scripts/splice-benchmarks.py
echo "$section"
