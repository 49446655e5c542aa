#!/usr/bin/env bash
# The Python wheel: imgfeat's Python package (python/imgfeat), its native module (python/src) built by
# maturin against glibc 2.17 (manylinux2014, abi3: any CPython ≥ 3.9), and the Spark 4 / Scala 2.13 jar
# from the Maven build inside it (imgfeat.spark.jar_path(); its models serve the local API too). Run
# after the jar's native library (cargo zigbuild) and `mvn install`, as scripts/test.sh does. Writes
# target/wheels/.
#
# maturin runs inside cargo-zigbuild's environment: cargo-zigbuild calls $CARGO in cargo's place, which
# here is this script again (the `build` branch below), and maturin calls it in turn (cargo itself, less
# the unstable target-applies-to-host setting maturin adds), so that the module is built with the very
# zig wrappers and settings of the jar's library. Where both builds are already in target/, each
# rebuild takes under a minute. On a clean clone cargo still compiles the core a second time for the
# module (8m51s in CI on 2026-12-06); why is not yet found (unifying the features by building both
# crates in one invocation did not change it).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

if [ -n "${IMGFEAT_REAL_CARGO:-}" ]; then  # called back in cargo's place
  if [ "${1:-}" = build ]; then  # by cargo-zigbuild, its zig environment set: maturin, this script as cargo
    export CARGO="$PWD/scripts/build-wheel.sh"
    exec maturin build --release --target x86_64-unknown-linux-gnu --compatibility manylinux2014 \
      --auditwheel check -m python/Cargo.toml -o target/wheels
  fi
  # by maturin: cargo itself, less the unstable target-applies-to-host setting maturin adds (cargo hashes
  # it into every crate's fingerprint)
  unset CARGO CARGO_UNSTABLE_TARGET_APPLIES_TO_HOST __CARGO_TEST_CHANNEL_OVERRIDE_DO_NOT_USE_THIS
  exec "$IMGFEAT_REAL_CARGO" "$@"
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
