#!/usr/bin/env bash
# int8 and f32 on each instruction-set path this CPU has (forced with IMGFEAT_MAX_ISA, as a CPU without
# AVX-512 or without AVX2 would run them), end to end: `imgfeat extract --threads 1` over the first N
# photos of imagenet-sample, models loaded in each run, images/s from the CLI's summary, the better of
# two runs. int8's rows are the same bits on every path (tests/int8_identity.rs); this says what each
# path costs. Written to BENCHMARKS.md.
#   scripts/bench-isa.sh [N]     (default 40; needs ../shared/data and a release build)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-40}
source_dir=../shared/data/imagenet-sample
[ -d "$source_dir" ] || { echo "bench-isa: $source_dir is absent" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/photos"
ls "$source_dir" | sort | head -n "$n" | while read -r f; do cp "$source_dir/$f" "$work/photos/"; done
has_flag() { grep -m1 '^flags' /proc/cpuinfo | grep -qw "$1"; }
caps=()
has_flag avx512f && caps+=(avx512)
has_flag avx2 && caps+=(avx2)
caps+=(baseline)
# images/s of the better of two runs.
rate() {
  local best=0 r
  for _ in 1 2; do
    r=$(IMGFEAT_MAX_ISA=$1 target/release/imgfeat extract --threads 1 --precision "$2" -o "$work/t.parquet" "$work/photos" 2>&1 \
      | sed -n 's/.* \([0-9.]*\) images\/s.*/\1/p')
    rm -rf "$work/t.parquet"
    best=$(python3 -c "print(max($best, $r))")
  done
  echo "$best"
}
rows=""
for cap in "${caps[@]}"; do
  f32=$(rate "$cap" f32)
  int8=$(rate "$cap" int8)
  rows+="| $cap | $f32 | $int8 | $(python3 -c "print(f'{$int8 / $f32:.2f}')") |"$'\n'
done
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
section=$(cat <<MD
## int8 and f32 on each instruction set

Command: \`scripts/bench-isa.sh $n\` ($(date -u +%Y-%m-%d), $cpu; AVX-512 VNNI: $(has_flag avx512_vnni && echo yes || echo no),
AVX-VNNI: $(has_flag avx_vnni && echo yes || echo no); one thread). \`IMGFEAT_MAX_ISA\` forces the path a CPU without AVX-512
(\`avx2\`) or without AVX2 (\`baseline\`) takes; \`imgfeat extract --threads 1\` over the first $n photos of
imagenet-sample, models loaded in each run, images/s end to end (the better of two runs). int8's products
run on AVX-512 VNNI where the path allows AVX-512, else on AVX-VNNI where the CPU has it (256-bit), else
\`vpmaddwd\` (AVX2) or plain integer loops (baseline); its rows are the same bits on every path
(\`tests/int8_identity.rs\`). On the baseline its f32 layers fuse each multiply-add through libm's correctly
rounded \`fmaf\`, a call each, to give the vector paths' bits: what the baseline's int8 column pays for
(int8 there is for identical rows, not speed; it says so in the log). f32 on the baseline multiplies and
adds separately (its rows differ by rounding between paths anyway), and its products run matrixmultiply,
which picks its own instruction set: hence its speed near AVX2's.

| path | f32 images/s | int8 images/s | int8 × f32 |
|---|---|---|---|
$rows
MD
)
echo "$section" | python3 scripts/splice-benchmarks.py
echo "$section"
