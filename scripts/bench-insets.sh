#!/usr/bin/env bash
# What the rows' insets cost (issue 19's budget: extraction at most 10 % slower, rows at most 25 % larger):
# `imgfeat extract --threads 1` over imagenet-sample (ordinary photos) with the default configuration
# (`insets`: 4) against `{"insets": 0}` (the baseline, rows without insets), alternating, models loaded in
# each run, the better of two runs each; the tables' sizes and how many rows carry an inset. Written to
# BENCHMARKS.md.
#   scripts/bench-insets.sh      (needs ../shared/data, a release build and .venv with pyarrow)
set -euo pipefail
cd "$(dirname "$0")/.."
photos=../shared/data/imagenet-sample
[ -d "$photos" ] || { echo "bench-insets: $photos is absent" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo '{"insets": 0}' > "$work/no-insets.json"
best_with=0
best_without=0
for _ in 1 2; do
  for variant in with without; do
    config=()
    [ "$variant" = without ] && config=(--config "$work/no-insets.json")
    rm -f "$work/$variant.parquet"
    rate=$(target/release/imgfeat extract --threads 1 "${config[@]}" -o "$work/$variant.parquet" "$photos" 2>&1 \
      | sed -n 's/.* \([0-9.]*\) images\/s.*/\1/p')
    if [ "$variant" = with ]; then best_with=$(python3 -c "print(max($best_with, $rate))"); else best_without=$(python3 -c "print(max($best_without, $rate))"); fi
  done
done
read -r photos_count with_insets inset_count < <(.venv/bin/python -c "
import pyarrow.parquet as pq
lengths = pq.read_table('$work/with.parquet', columns=['insets']).column('insets').to_pylist()
print(len(lengths), sum(1 for l in lengths if l), sum(len(l) for l in lengths if l))")
size_with=$(stat -c %s "$work/with.parquet")
size_without=$(stat -c %s "$work/without.parquet")
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
ratio() { python3 -c "print(f'{$1 / $2:.3f}')"; }
section=$(cat <<MD
## What the rows' insets cost

Command: \`scripts/bench-insets.sh\` ($(date -u +%Y-%m-%d), $cpu; one thread). \`imgfeat extract --threads 1\`
over the $photos_count photos of imagenet-sample (ordinary photos, nothing pasted into them), models loaded in
each run, the better of two alternating runs each. Baseline, in the same run: \`{"insets": 0}\` (rows without
insets). Each row looks for photos pasted into it (every side a seam, or a collage's cells, on a copy at most
512 pixels a side) and embeds each it finds; here $with_insets of $photos_count rows carry one or more
($inset_count insets in all). The seam search alone: \`cargo bench --bench stages -- "inset seams"\` (~0.5 ms
on a 600×400 photo; it took 3.3 ms as a row and cost extraction 0.844× until its per-pixel passes were
vectorised, its runs found a 64-pixel word at a time, and its reduced copy sampled directly rather than
through the \`image\` crate's two-pass float resize).

| rows | images/s | × baseline | table bytes | × baseline |
|---|---|---|---|---|
| without insets (baseline) | $best_without | 1.000 | $size_without | 1.000 |
| with insets (default, up to 4) | $best_with | $(ratio "$best_with" "$best_without") | $size_with | $(ratio "$size_with" "$size_without") |
MD
)
echo "$section" | python3 scripts/splice-benchmarks.py
echo "$section"
