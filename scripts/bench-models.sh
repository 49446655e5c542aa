#!/usr/bin/env bash
# Model compute per image on one thread: imgfeat's native executor and tract (criterion,
# `cargo bench --bench executor`) against onnxruntime on the same models, timed in the same run by
# benches/model_flops.py, which also reports GFLOP/s against the machine's measured SGEMM peak.
# Written to BENCHMARKS.md.
#   scripts/bench-models.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet -r tests/reference/requirements.txt -r benches/requirements.txt

# onnxruntime is timed before and after imgfeat's runs; the faster timing is the baseline.
ort_earlier=$(.venv/bin/python benches/model_flops.py --measure-ort)
cargo bench --quiet --bench executor -- --noplot > /dev/null
# Median time of one criterion benchmark, in ms per image.
median_ms() {
  .venv/bin/python -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["median"]["point_estimate"] / 1e6 / int(sys.argv[2]), 2))' \
    "target/criterion/model/$1/$2/new/estimates.json" "$3"
}
declare -A ms
for kind in detector embedder; do
  for engine in native-portable native-int8 tract; do
    ms[$kind/$engine/1]=$(median_ms "${kind}_${engine}" batch1 1)
    ms[$kind/$engine/8]=$(median_ms "${kind}_${engine}" batch8 8)
  done
done
flops=$(.venv/bin/python benches/model_flops.py --native-ms "${ms[detector/native-portable/1]}" "${ms[embedder/native-portable/1]}" \
  --tract-ms "${ms[detector/tract/1]}" "${ms[embedder/tract/1]}" --ort-ms-earlier $ort_earlier \
  --int8-ms "${ms[detector/native-int8/1]}" "${ms[embedder/native-int8/1]}")
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
section=$(cat <<MD
## Model compute: native executor vs onnxruntime and tract

Command: \`scripts/bench-models.sh\` ($(date -u +%Y-%m-%d), $cpu, one thread). The model alone, on an
input already resized and laid out: imgfeat from \`cargo bench --bench executor\` (criterion medians),
onnxruntime (the baseline: one intra-op thread, only the outputs imgfeat uses) and the GEMM peak from
\`benches/model_flops.py\`, in the same run. FLOPs count convolutions and matrix products (int8
multiply-adds count as two operations each, shown as GFLOP/s but not as a share of the f32 peak).
int8 (\`"precision": "int8"\`): the 1x1 and dense convolutions as u8×s8 products on AVX-512 VNNI; onnxruntime's
own int8 is its dynamic quantisation of the same models (\`quantize_dynamic\`, ConvInteger), timed too.

$flops

Batches (ms per image; the native executor runs a batch as one plan, tract with a concrete batch axis;
a batch plan runs its expansion blocks image by image, banded, and each product that reads and writes
channels-last once over all the batch's pixels. Those taller products run no faster per image on the
small maps, where one image's already fill the register tiles, and lose the cache on the large ones,
where eight images' tensors no longer fit, so the pipeline keeps to one-image plans):

| model | native, batch 1 | native, batch 8 | native int8, batch 1 | native int8, batch 8 | tract, batch 1 | tract, batch 8 |
|---|---|---|---|---|---|---|
| SSD MobileNetV2 (COCO) | ${ms[detector/native-portable/1]} | ${ms[detector/native-portable/8]} | ${ms[detector/native-int8/1]} | ${ms[detector/native-int8/8]} | ${ms[detector/tract/1]} | ${ms[detector/tract/8]} |
| EfficientNet-Lite0 | ${ms[embedder/native-portable/1]} | ${ms[embedder/native-portable/8]} | ${ms[embedder/native-int8/1]} | ${ms[embedder/native-int8/8]} | ${ms[embedder/tract/1]} | ${ms[embedder/tract/8]} |
MD
)
echo "$section" | python3 scripts/splice-benchmarks.py
echo "$section"
