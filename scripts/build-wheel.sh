#!/usr/bin/env bash
# The Python wheel: imgfeat's Python package (python/imgfeat), its native module (python/src) built by
# maturin against glibc 2.17 (manylinux2014, abi3: any CPython ≥ 3.9), and the Spark 4 / Scala 2.13 jar
# from the Maven build inside it (imgfeat.spark.jar_path(); its models serve the local API too). Run
# after the jar's native library (cargo zigbuild) and `mvn install`, as scripts/test.sh does. Writes
# target/wheels/. The native module is stripped (`--strip`, only the module's own link step): the
# release profile's line tables made it 229 MB and the wheel 97 MB; stripped, 38 MB and 60 MB, most of
# which is the jar's models.
#
# `--jni-library` builds the jar's native library (target/x86_64-unknown-linux-gnu/release/libimgfeat.so),
# run before `mvn install`. Both builds make the same cargo call: cargo-zigbuild calls $CARGO in cargo's
# place, which is this script again; for the wheel it starts maturin, which calls this script as its
# cargo in turn, and the script runs cargo less the unstable target-applies-to-host setting maturin adds.
# Both see one zig environment, one feature set (the library is built beside the module) and one cargo
# configuration, so the core compiles once: on a clean target the library took 9m24s and the wheel
# then 13.6 s. (`maturin --zig`, or `cargo zigbuild` run as a cargo subcommand, gave cargo another
# configuration: the core compiled a second time, 8m51s in CI.)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

if [ -n "${IMGFEAT_REAL_CARGO:-}" ]; then  # called back in cargo's place
  if [ "${1:-}" = build ] && [ -z "${IMGFEAT_JNI_LIBRARY:-}" ]; then  # by cargo-zigbuild, its zig environment set: maturin, this script as cargo
    export CARGO="$PWD/scripts/build-wheel.sh"
    exec maturin build --release --target x86_64-unknown-linux-gnu --compatibility manylinux2014 \
      --auditwheel check --strip -m python/Cargo.toml -o target/wheels
  fi
  # by maturin: cargo itself, less the unstable target-applies-to-host setting maturin adds (cargo hashes
  # it into every crate's fingerprint)
  unset CARGO CARGO_UNSTABLE_TARGET_APPLIES_TO_HOST __CARGO_TEST_CHANNEL_OVERRIDE_DO_NOT_USE_THIS
  exec "$IMGFEAT_REAL_CARGO" "$@"
fi

if [ "${1:-}" = --jni-library ]; then  # the jar's library, by the very cargo call the wheel's build makes
  IMGFEAT_JNI_LIBRARY=1 IMGFEAT_REAL_CARGO=$(command -v cargo) CARGO="$PWD/scripts/build-wheel.sh" \
    PYO3_BUILD_EXTENSION_MODULE=1 cargo-zigbuild zigbuild --release --lib -p imgfeat -p imgfeat-python \
    --target x86_64-unknown-linux-gnu.2.17
  exit
fi

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
jar=target/jvm/imgfeat-spark.jar
if [ ! -f "$jar" ]; then
  echo "build-wheel: $jar is missing; build the jar first (mvn install)" >&2
  exit 1
fi
# The jar lies in the package folder only while maturin packs it: a zip of python/imgfeat (--py-files)
# must not carry 100 MB.
rm -rf python/imgfeat/jars
trap 'rm -rf python/imgfeat/jars' EXIT
mkdir -p python/imgfeat/jars
cp "$jar" "python/imgfeat/jars/imgfeat-spark4_2.13-$version.jar"
rm -f target/wheels/imgfeat-*.whl
IMGFEAT_REAL_CARGO=$(command -v cargo) CARGO="$PWD/scripts/build-wheel.sh" \
  cargo-zigbuild zigbuild --release --target x86_64-unknown-linux-gnu.2.17
ls target/wheels/imgfeat-*.whl
