#!/usr/bin/env bash
# End-to-end benchmark of the CLI over ../shared/data/imagenet-sample (700 photos), written to
# BENCHMARKS.md. Baseline, measured in the same run with the same number of threads: the tuned Python
# pipeline a user would write (benches/python_pipeline.py: onnxruntime + Pillow + NumPy, one process
# per thread), doing the same work per image (decode, detect, crop, two embeddings or one when the
# crop is the whole image, codes); and the same pipeline on OpenVINO in f32, in its default precision
# and in int8 (NNCF), each checked against onnxruntime's model outputs first.
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
.venv/bin/pip install --quiet -r tests/reference/requirements.txt -r benches/requirements.txt   # onnxruntime, NumPy, Pillow; OpenVINO, NNCF

# Runs a command, prints "<seconds> <peak RSS in MiB>" and keeps its stdout in $work/out.
measure() {
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" > "$work/out" 2> "$work/err" || { cat "$work/err" >&2; exit 1; }
  awk '{printf "%s %.0f\n", $1, $2 / 1024}' "$work/time"
}

# imgfeat's own rate excludes model loading (it includes writing Parquet); so does the baseline's.
imgfeat_rate() { sed -n 's/.* \([0-9.]*\) images\/s on.*/\1/p' "$work/out"; }
python_rate() { .venv/bin/python -c 'import json,sys; r=json.load(open(sys.argv[1])); print(round(r["images"]/r["seconds"],1))' "$work/out"; }
python_field() { .venv/bin/python -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r[sys.argv[2]])' "$work/out" "$1"; }

# The Python pipeline's engines. Each OpenVINO engine's models must agree with onnxruntime's on the
# first photos (this also quantises and caches the int8 models, outside the timed runs).
engines=(onnxruntime openvino-f32 openvino openvino-int8)
declare -A detected_by precision worst_error summary
for engine in "${engines[@]:1}"; do
  .venv/bin/python benches/python_pipeline.py "$work/photos" --engine "$engine" --check > "$work/out" 2> "$work/err" \
    || { cat "$work/err" >&2; exit 1; }
  precision[$engine]=$(python_field precision)
  worst_error[$engine]=$(.venv/bin/python -c 'import json,sys; print("%.2g" % max(json.load(open(sys.argv[1]))["largest_relative_error"].values()))' "$work/out")
done

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
# imgfeat in f32, in its default precision (auto: bf16 where the CPU has AVX-512 BF16) and in int8.
imgfeat_runs=(f32:f32 default:auto int8:int8)
for round in $(seq "$rounds"); do
  for run in "${imgfeat_runs[@]}"; do
    for t in 1 2; do
      bench_run "imgfeat-${run%%:*}/$t" imgfeat_rate ./target/release/imgfeat extract --threads "$t" --precision "${run#*:}" -o "$work/${run%%:*}$t.parquet" "$work/photos"
      summary[imgfeat-${run%%:*}]=$(cat "$work/out")
    done
  done
  for engine in "${engines[@]}"; do
    bench_run "$engine/1" python_rate .venv/bin/python benches/python_pipeline.py "$work/photos" --threads 1 --engine "$engine"
    bench_run "$engine/2" python_rate .venv/bin/python benches/python_pipeline.py "$work/photos" --threads 2 --engine "$engine"
    detected_by[$engine]=$(python_field detected)
  done
done
for run in "${imgfeat_runs[@]}"; do
  detected_by[imgfeat-${run%%:*}]=$(echo "${summary[imgfeat-${run%%:*}]}" | sed -n 's/.*ok (\([0-9]*\) with a detected object).*/\1/p')
  # The precision and kernels the rows were made in, as the table records them.
  precision[imgfeat-${run%%:*}]=$(.venv/bin/python -c 'import json,sys,pyarrow.parquet as pq; a=json.loads(pq.read_metadata(sys.argv[1]).metadata[b"imgfeat.provenance"])["arithmetic"]; print(a["precision"], "on", a["kernels"])' "$work/${run%%:*}2.parquet")
done
detected=${detected_by[imgfeat-f32]}
# The same work: the f32 pipelines must find the same main objects (they embed the crop only when
# there is one). bf16 and int8 move scores across the threshold: their counts are reported instead.
for engine in onnxruntime openvino-f32; do
  [ "${detected_by[$engine]}" = "$detected" ] \
    || { echo "bench: the $engine baseline detected ${detected_by[$engine]} photos, imgfeat f32 $detected: not the same work" >&2; exit 1; }
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
amx=$(grep -m1 '^flags' /proc/cpuinfo | grep -qw amx_tile && echo yes || echo no)
bf16=$(grep -m1 '^flags' /proc/cpuinfo | grep -qw avx512_bf16 && echo yes || echo no)
openvino_version=$(.venv/bin/python -c 'from importlib.metadata import version; print(version("openvino"))')
label_of() {
  case $1 in
    onnxruntime) echo "Python + onnxruntime (f32)" ;;
    openvino-f32) echo "Python + OpenVINO f32" ;;
    openvino) echo "Python + OpenVINO default (${precision[openvino]})" ;;
    openvino-int8) echo "Python + OpenVINO int8 (NNCF; other layers ${precision[openvino-int8]})" ;;
    imgfeat-f32) echo "imgfeat \`--precision f32\`" ;;
    imgfeat-default) echo "**imgfeat default** (${precision[imgfeat-default]})" ;;
    imgfeat-int8) echo "imgfeat \`--precision int8\` (${precision[imgfeat-int8]})" ;;
  esac
}
section=$(cat <<MD
## End-to-end CLI on imagenet-sample ($n photos)

Command: \`scripts/bench.sh\` ($(date -u +%Y-%m-%d), $cpu, $(nproc) cores; AMX: $amx, AVX-512 BF16: $bf16), the
fastest of $rounds runs of each. Rates exclude model loading; imgfeat's include writing Parquet. Baselines, in the
same run with the same number of threads: the tuned Python pipeline (\`benches/python_pipeline.py\`: Pillow,
NumPy, one process per thread) doing the same work per image, on onnxruntime (one intra-op thread per process)
and on OpenVINO $openvino_version (\`--engine\`: one inference thread per process, no pinning, the latency hint,
static shapes) in f32, in its default precision on this CPU, and in int8 quantised by NNCF (default preset,
calibrated on 300 photos of imagenet-sample; the depthwise convolutions stay in the default float precision).

| threads | pipeline | images/s | peak RSS MiB (Python: largest process) | photos with a detected object |
|---|---|---|---|---|
$(for t in 1 2; do for engine in "${engines[@]}" imgfeat-f32 imgfeat-default imgfeat-int8; do
  echo "| $t | $(label_of "$engine") | ${rate[$engine/$t]} | ${rss[$engine/$t]} | ${detected_by[$engine]} |"
done; done)

| threads | imgfeat default × onnxruntime | imgfeat default × OpenVINO default | imgfeat int8 × OpenVINO int8 | imgfeat f32 × OpenVINO f32 |
|---|---|---|---|---|
$(for t in 1 2; do
  echo "| $t | $(ratio "${rate[imgfeat-default/$t]}" "${rate[onnxruntime/$t]}") | $(ratio "${rate[imgfeat-default/$t]}" "${rate[openvino/$t]}") | $(ratio "${rate[imgfeat-int8/$t]}" "${rate[openvino-int8/$t]}") | $(ratio "${rate[imgfeat-f32/$t]}" "${rate[openvino-f32/$t]}") |"
done)

- imgfeat scaling, 2 threads over 1: default $(ratio "${rate[imgfeat-default/2]}" "${rate[imgfeat-default/1]}")×, int8 $(ratio "${rate[imgfeat-int8/2]}" "${rate[imgfeat-int8/1]}")×.
- The f32 pipelines (imgfeat, onnxruntime, OpenVINO f32) detect an object in the same $detected of $n photos (COCO, score ≥ 0.3); bf16 and int8 move a few scores across the threshold.
- OpenVINO's model outputs against onnxruntime's on the first 4 photos, largest relative error (‖OpenVINO − onnxruntime‖ / ‖onnxruntime‖, per output): f32 ${worst_error[openvino-f32]}, default ${worst_error[openvino]}, int8 ${worst_error[openvino-int8]}.
- imgfeat's own summary (default, 2 threads): \`${summary[imgfeat-default]}\`
- Each model alone, against onnxruntime and OpenVINO: "Model compute" below.
MD
)
echo "$section" | python3 scripts/splice-benchmarks.py
echo "$section"
