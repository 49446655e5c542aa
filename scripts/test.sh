#!/usr/bin/env bash
# The project's test command (README, .ci/run): checks the committed onnxruntime reference against
# onnxruntime itself, then runs every Rust test in the release profile (the only profile we build:
# debug builds of the model runtime are too slow to test real photos with).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/reference/requirements.txt
.venv/bin/python tests/reference/reference.py --check tests/fixtures/reference_outputs.json tests/fixtures/photos/*.jpg

cargo test --release
