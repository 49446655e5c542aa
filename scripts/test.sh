#!/usr/bin/env bash
# The project's test command (README, .ci/run):
#   0. no import cycles between the modules of src/ (scripts/check-module-cycles.py);
#   1. the committed onnxruntime reference still matches onnxruntime itself;
#   2. every Rust test, in the release profile (the only profile we build: debug builds of the model
#      runtime are too slow for real photos), including the pipeline over the generated hostile-input
#      corpus (tests/hostile);
#   3. `imgfeat report`'s page in headless Chromium (Selenium);
#   4. the JVM side: the native library built against glibc 2.17 and checked against manylinux2014; the Maven build (its ScalaTest unit tests, then the jar with the native library
#      and the models, installed in ~/.m2) for both Spark/Scala pairs of the matrix, then spark-submit
#      of the Scala and PySpark examples in local mode and on a standalone cluster on 127.0.0.1,
#      compared with the CLI (the jar as a file and as a package; Spark 3.5 on pyspark 3.5 from
#      .venv-spark35), and jobs that lose an executor (killed mid-job) or hit a Rust panic;
#   5. the Python wheel (scripts/build-wheel.sh) installed into fresh virtualenvs: its local API against
#      the CLI, the jar inside it in a PySpark session, and Spark Connect (a server on 127.0.0.1);
#   6. HDFS, YARN and S3 (tests/hadoop): MiniDFSCluster and MiniYARNCluster, and moto's S3 server, on
#      127.0.0.1, started and stopped by the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each phase prints its seconds, and pytest its 15 slowest tests, so that CI's hour can be read off.
test_started=$(date +%s)
phase() { echo "== test.sh: $1 at $(( $(date +%s) - test_started )) s"; }

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# The Spark 3.5 / Scala 2.12 pair runs on its own pyspark: one virtualenv holds one pyspark.
if [ ! -x .venv-spark35/bin/python ]; then
  python3 -m venv .venv-spark35
fi
.venv-spark35/bin/pip install --quiet --disable-pip-version-check -r jvm-bindings/requirements-spark35.txt
.venv/bin/pip install --quiet --disable-pip-version-check \
  -r tests/reference/requirements.txt -r jvm-bindings/requirements.txt -r tests/spark/requirements.txt \
  -r tests/report/requirements.txt -r tests/hadoop/requirements.txt -r tests/python/requirements.txt \
  -r scripts/build-requirements.txt
# No import cycles between the modules of src/ (docs/ARCHITECTURE.md).
python3 scripts/check-module-cycles.py
phase "reference check"
.venv/bin/python tests/reference/reference.py --check tests/fixtures/reference_outputs.json tests/fixtures/photos/*.jpg

phase "rust tests"
.venv/bin/python tests/hostile/generate_corpus.py target/hostile-corpus
cargo test --release
cargo build --release          # the CLI; everything else is already built
phase "report"
.venv/bin/python -m pytest -v -rs --durations=15 tests/report

# The jar's native library, against glibc 2.17 (manylinux2014) so that it loads on older clusters: a
# second target folder (target/x86_64-unknown-linux-gnu), the library alone.
# Built by the very cargo call the wheel's build makes (scripts/build-wheel.sh), so that the wheel then
# finds the core compiled and builds only its module.
phase "jni library (glibc 2.17)"
scripts/build-wheel.sh --jni-library

phase "maven"
mvn -q -B install              # Spark 4 / Scala 2.13: target/jvm/imgfeat-{spark,example}.jar, ai.imgfeat:imgfeat-spark4_2.13
mvn -q -B install -Pspark-3.5  # Spark 3.5 / Scala 2.12: target/jvm/spark3.5_2.12/, ai.imgfeat:imgfeat-spark3.5_2.12
# The Python wheel (the Spark 4 jar inside): only its module compiles (13.6 s), on the core built above.
phase "wheel"
scripts/build-wheel.sh
phase "packaging, spark, python tests"
.venv/bin/python -m pytest -v -rs --durations=15 tests/packaging tests/spark tests/python
# HDFS, YARN and S3 (servers on 127.0.0.1), in a pytest run of their own (their own Spark sessions).
phase "hadoop tests"
.venv/bin/python -m pytest -v -rs --durations=15 tests/hadoop
phase "done"
