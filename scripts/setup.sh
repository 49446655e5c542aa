#!/usr/bin/env bash
# One-time set-up of a fresh machine: the system packages the build and the tests need beyond a Rust
# toolchain.
# nasm assembles libjpeg-turbo's SIMD JPEG decoder (built from source by mozjpeg-sys).
set -euo pipefail
missing=()
command -v nasm >/dev/null || missing+=(nasm)
# Maven builds the JVM side (pom.xml); Debian's package brings a JDK 17 with it if none is installed.
command -v mvn >/dev/null || missing+=(maven)
# Headless Chromium and its WebDriver test the HTML report (tests/report).
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (https://rustup.rs)" >&2; exit 1; }
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${missing[@]}"
fi
echo "setup: ok"
