#!/usr/bin/env bash
# The project's test command (README, .ci/run):
#   1. the committed onnxruntime reference still matches onnxruntime itself;
#   2. every Rust test, in the release profile (the only profile we build: debug builds of the model
#      runtime are too slow for real photos), including the pipeline over the generated hostile-input
#      corpus (tests/hostile);
#   3. `imgfeat report`'s page in headless Chromium (Selenium);
#   4. the JVM side: the jar with the native library, then spark-submit of the Scala and PySpark
#      examples in local mode and on a standalone cluster on 127.0.0.1, compared with the CLI, and
#      jobs that lose an executor (killed mid-job) or hit a Rust panic.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check \
  -r tests/reference/requirements.txt -r jvm-bindings/requirements.txt -r tests/spark/requirements.txt \
  -r tests/report/requirements.txt
.venv/bin/python tests/reference/reference.py --check tests/fixtures/reference_outputs.json tests/fixtures/photos/*.jpg

.venv/bin/python tests/hostile/generate_corpus.py target/hostile-corpus
cargo test --release
cargo build --release          # the cdylib for the jar and the CLI; everything else is already built
.venv/bin/python -m pytest -v -rs tests/report

jvm-bindings/build.sh
.venv/bin/python -m pytest -v -rs tests/spark
