#!/usr/bin/env bash
# Reliability figures (issue 5), written to BENCHMARKS.md: the CLI over the hostile-input corpus
# (tests/hostile/generate_corpus.py) against the same CLI over normal photos — rows, errors, crashes,
# slowest input, peak RSS — and, where a nightly toolchain and cargo-fuzz are installed, both fuzz
# targets for a fixed budget each (FUZZ_SECONDS, default 300).
#   scripts/reliability.sh
set -euo pipefail
cd "$(dirname "$0")/.."
fuzz_seconds=${FUZZ_SECONDS:-300}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet -r tests/reference/requirements.txt
cargo build --release --quiet
.venv/bin/python tests/hostile/generate_corpus.py "$work/hostile" > /dev/null
photos=../shared/data/imagenet-sample
[ -d "$photos" ] || { echo "reliability: $photos is absent; using the fixture photos" >&2; photos=tests/fixtures/photos; }

# Runs the CLI over a folder: "<exit code> <seconds> <peak RSS MiB>", its summary line in $work/summary.
run_cli() {
  local code=0
  /usr/bin/time -f "%e %M" -o "$work/time" ./target/release/imgfeat extract --threads 2 -o "$work/out.parquet" "$1" \
    > "$work/stdout" 2> "$work/stderr" || code=$?
  # The run's summary line ("N images: … ok, … failed; …"), on stdout.
  { grep -a " images: " "$work/stdout" || true; } | tail -n 1 | sed 's/ → .*//' > "$work/summary"
  awk -v code="$code" '{printf "%s %s %.0f\n", code, $1, $2 / 1024}' "$work/time"
}
read -r code_h secs_h rss_h < <(run_cli "$work/hostile"); summary_h=$(cat "$work/summary")
read -r code_p secs_p rss_p < <(run_cli "$photos"); summary_p=$(cat "$work/summary")
inputs_h=$(ls "$work/hostile" | wc -l)

fuzz_rows=""
if cargo +nightly --version > /dev/null 2>&1 && cargo fuzz --version > /dev/null 2>&1; then
  for target in decode pipeline; do
    (cd fuzz && cargo +nightly fuzz build -O "$target" > /dev/null 2>&1)
    mkdir -p "fuzz/corpus/$target"
    # decode starts from the whole hostile corpus; pipeline (two models per input, ~100x slower) from
    # the valid files and the fixture photos, or seeding alone would take its whole budget.
    seeds="$work/hostile"
    if [ "$target" = pipeline ]; then
      seeds="$work/pipeline-seeds"; mkdir -p "$seeds"
      cp tests/fixtures/photos/*.jpg "$work"/hostile/valid-* "$seeds/"
    fi
    (cd fuzz && cargo +nightly fuzz run -O "$target" "corpus/$target" "$seeds" -- \
        -max_total_time="$fuzz_seconds" -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 > "$work/fuzz-$target.log" 2>&1) \
      && result="no crash, no timeout, no leak" || result="FINDING: see fuzz/artifacts/$target"
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/fuzz-$target.log" | tail -n 1)
    fuzz_rows+="| \`$target\` | ${fuzz_seconds} s | ${runs:-?} | $result |"$'\n'
  done
else
  fuzz_rows="| (not run: needs \`rustup toolchain install nightly\` and \`cargo install cargo-fuzz\`) | | | |"$'\n'
fi

section=$(cat <<MD
## Reliability: hostile inputs and fuzzing

Command: \`scripts/reliability.sh\` ($(date -u +%Y-%m-%d), $(nproc) cores). The CLI (2 threads) over the hostile
corpus that \`tests/hostile/generate_corpus.py\` writes ($inputs_h files: random bytes, truncations at
every header offset, byte mutations of 8 formats, decompression bombs, lying signatures, CMYK and 16-bit,
1×100000, bad EXIF orientations, 3000-frame GIF, trailing garbage), against the same CLI over normal photos
(\`$photos\`). \`tests/hostile.rs\` asserts the same corpus row by row in \`cargo test\`.

| input | exit code | summary | seconds | peak RSS MiB |
|---|---|---|---|---|
| hostile corpus | $code_h | $summary_h | $secs_h | $rss_h |
| normal photos (baseline) | $code_p | $summary_p | $secs_p | $rss_p |

Peak RSS over the hostile corpus: $(awk -v a="$rss_h" -v b="$rss_p" 'BEGIN { printf "%.2f", a / b }')× the normal photos'.

Fuzzing (\`cargo +nightly fuzz run <target> -- -max_total_time=$fuzz_seconds\`, libFuzzer with AddressSanitizer;
\`decode\` seeded with the hostile corpus, \`pipeline\` with the valid files and the fixture photos):

| target | budget | executions | result |
|---|---|---|---|
${fuzz_rows}
MD
)
echo "$section" | python3 scripts/splice-benchmarks.py
echo "$section"
