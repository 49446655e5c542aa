#!/usr/bin/env bash
# Model compute per image on one thread: imgfeat's native executor and tract (criterion,
# `cargo bench --bench executor`) against onnxruntime and OpenVINO (f32, its default precision, and
# int8 quantised by NNCF) on the same models, timed in the same run by benches/model_flops.py, which
# also reports GFLOP/s against the machine's measured SGEMM peak. Written to BENCHMARKS.md.
#   scripts/bench-models.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet -r tests/reference/requirements.txt -r benches/requirements.txt

# onnxruntime and OpenVINO are timed before and after imgfeat's runs; the faster timing of each counts.
ort_earlier=$(.venv/bin/python benches/model_flops.py --measure-ort)
openvino_earlier=$(.venv/bin/python benches/model_flops.py --measure-openvino)
cargo bench --quiet --bench executor -- --noplot > /dev/null
# OpenVINO's default precision and imgfeat's bf16 follow these: bf16 where the CPU has AVX-512 BF16
# (every AMX CPU has it).
has_flag() { grep -m1 '^flags' /proc/cpuinfo | grep -qw "$1" && echo yes || echo no; }
# Median time of one criterion benchmark, in ms per image.
median_ms() {
  .venv/bin/python -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["median"]["point_estimate"] / 1e6 / int(sys.argv[2]), 2))' \
    "target/criterion/model/$1/$2/new/estimates.json" "$3"
}
declare -A ms
for kind in detector embedder; do
  for engine in native-portable native-bf16 native-int8 tract; do
    ms[$kind/$engine/1]=$(median_ms "${kind}_${engine}" batch1 1)
    ms[$kind/$engine/8]=$(median_ms "${kind}_${engine}" batch8 8)
  done
done
flops=$(.venv/bin/python benches/model_flops.py --native-ms "${ms[detector/native-portable/1]}" "${ms[embedder/native-portable/1]}" \
  --tract-ms "${ms[detector/tract/1]}" "${ms[embedder/tract/1]}" --ort-ms-earlier $ort_earlier \
  --openvino-ms-earlier $openvino_earlier --int8-ms "${ms[detector/native-int8/1]}" "${ms[embedder/native-int8/1]}" \
  $([ "$(has_flag avx512_bf16)" = yes ] && echo --bf16-ms "${ms[detector/native-bf16/1]}" "${ms[embedder/native-bf16/1]}"))
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
openvino_version=$(.venv/bin/python -c 'from importlib.metadata import version; print(version("openvino"), version("nncf"))')
section=$(cat <<MD
## Model compute: native executor vs onnxruntime and tract

Command: \`scripts/bench-models.sh\` ($(date -u +%Y-%m-%d), $cpu, one thread). The model alone, on an
input already resized and laid out: imgfeat from \`cargo bench --bench executor\` (criterion medians),
onnxruntime (the baseline: one intra-op thread, only the outputs imgfeat uses) and the GEMM peak from
\`benches/model_flops.py\`, in the same run. FLOPs count convolutions and matrix products (int8
multiply-adds count as two operations each, shown as GFLOP/s but not as a share of the f32 peak).
bf16 (\`"precision": "bf16"\`, what the default \`auto\` runs where the CPU has AVX-512 BF16): the 1x1 and
dense convolutions as bf16 products with f32 sums (\`vdpbf16ps\`); "native executor" is f32.
int8 (\`"precision": "int8"\`): the 1x1 and dense convolutions as u8×s8 products on AVX-512 VNNI; onnxruntime's
own int8 is its dynamic quantisation of the same models (\`quantize_dynamic\`, ConvInteger), timed too.
OpenVINO ${openvino_version% *} ($cpu; AMX: $(has_flag amx_tile), AVX-512 BF16: $(has_flag avx512_bf16)) runs
as \`benches/python_pipeline.py\` runs it: one inference thread, no pinning, the latency hint, static
shapes (it runs the SSD ~20 % slower with a dynamic batch axis; onnxruntime gains nothing from static
ones). Three precisions: f32 (\`INFERENCE_PRECISION_HINT=f32\`), its default on this CPU (named in the
table), and int8 from NNCF ${openvino_version#* } (\`nncf.quantize\`, default preset, calibrated on 300 photos of
imagenet-sample preprocessed as the pipeline does), which leaves the depthwise convolutions in the
default float precision as imgfeat's int8 leaves them in f32. Each engine's outputs are checked
against onnxruntime's on 4 photos before it is timed.

$flops

Batches (ms per image; the native executor runs a batch as one plan, tract with a concrete batch axis;
a batch plan runs its expansion blocks image by image, banded, and each product that reads and writes
channels-last once over all the batch's pixels. Those taller products run no faster per image on the
small maps, where one image's already fill the register tiles, and lose the cache on the large ones,
where eight images' tensors no longer fit, so the pipeline keeps to one-image plans):

| model | native f32, batch 1 | native f32, batch 8 | native bf16, batch 1 | native bf16, batch 8 | native int8, batch 1 | native int8, batch 8 | tract, batch 1 | tract, batch 8 |
|---|---|---|---|---|---|---|---|---|
| SSD MobileNetV2 (COCO) | ${ms[detector/native-portable/1]} | ${ms[detector/native-portable/8]} | ${ms[detector/native-bf16/1]} | ${ms[detector/native-bf16/8]} | ${ms[detector/native-int8/1]} | ${ms[detector/native-int8/8]} | ${ms[detector/tract/1]} | ${ms[detector/tract/8]} |
| EfficientNet-Lite0 | ${ms[embedder/native-portable/1]} | ${ms[embedder/native-portable/8]} | ${ms[embedder/native-bf16/1]} | ${ms[embedder/native-bf16/8]} | ${ms[embedder/native-int8/1]} | ${ms[embedder/native-int8/8]} | ${ms[embedder/tract/1]} | ${ms[embedder/tract/8]} |

(Where the CPU lacks AVX-512 BF16 the bf16 columns ran in f32.)
MD
)
echo "$section" | python3 scripts/splice-benchmarks.py
echo "$section"
