#!/usr/bin/env bash
# End-to-end benchmark of the CLI over ../shared/data/imagenet-sample (700 photos), written to
# BENCHMARKS.md. Baseline, measured in the same run: the independent Python pipeline
# (tests/reference/reference.py: onnxruntime + Pillow + NumPy, one thread, COCO detector only),
# which does the same work per image (decode, detect, crop, two embeddings).
#   scripts/bench.sh            # all 700 photos
#   BENCH_LIMIT=100 scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
data=../shared/data/imagenet-sample
[ -d "$data" ] || { echo "bench: $data is absent; nothing to measure" >&2; exit 1; }
limit=${BENCH_LIMIT:-700}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/photos"
ls "$data" | sort | head -n "$limit" | while read -r f; do ln -s "$(realpath "$data/$f")" "$work/photos/$f"; done
n=$(ls "$work/photos" | wc -l)

cargo build --release --quiet
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet -r tests/reference/requirements.txt

# Runs a command, prints "<seconds> <peak RSS in MiB>" and keeps its stdout in $work/out.
measure() {
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" > "$work/out" 2> "$work/err" || { cat "$work/err" >&2; exit 1; }
  awk '{printf "%s %.0f\n", $1, $2 / 1024}' "$work/time"
}

read -r t1 rss1 < <(measure ./target/release/imgfeat extract --threads 1 -o "$work/t1.parquet" "$work/photos")
summary1=$(cat "$work/out")
read -r t2 rss2 < <(measure ./target/release/imgfeat extract --threads 2 -o "$work/t2.parquet" "$work/photos")
summary2=$(cat "$work/out")
read -r tp rssp < <(measure .venv/bin/python tests/reference/reference.py --detector coco --out "$work/ref.json" "$work/photos"/*)
detected=$(echo "$summary2" | sed -n 's/.*ok (\([0-9]*\) with a detected object).*/\1/p')

rate() { awk -v n="$n" -v t="$1" 'BEGIN { printf "%.1f", n / t }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b / a }'; }
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
section=$(cat <<MD
## End-to-end CLI on imagenet-sample ($n photos)

Command: \`scripts/bench.sh\` ($(date -u +%Y-%m-%d), $cpu, $(nproc) cores). Wall time includes
model loading and writing Parquet. Baseline: the independent Python pipeline
(\`tests/reference/reference.py --detector coco\`: onnxruntime 1 thread, Pillow, NumPy), same work per image.

| run | wall s | images/s | × baseline | peak RSS MiB |
|---|---|---|---|---|
| Python reference, 1 thread (baseline) | $tp | $(rate "$tp") | 1.00 | $rssp |
| imgfeat, 1 thread | $t1 | $(rate "$t1") | $(ratio "$t1" "$tp") | $rss1 |
| imgfeat, 2 threads | $t2 | $(rate "$t2") | $(ratio "$t2" "$tp") | $rss2 |

- Scaling, 2 threads over 1: $(ratio "$t2" "$t1")×.
- Photos with a detected object (COCO, score ≥ 0.3): $detected of $n ($(awk -v d="$detected" -v n="$n" 'BEGIN { printf "%.0f", 100 * d / n }') %).
- imgfeat's own summary: \`$summary2\`
MD
)
python3 - "$section" <<'PY'
import re, sys, pathlib
path = pathlib.Path("BENCHMARKS.md")
text = path.read_text() if path.exists() else "# Benchmarks\n\nEvery figure here comes from a script in this repository, with its command; ratios are against a baseline measured in the same run.\n"
section = sys.argv[1].strip() + "\n"
pattern = re.compile(r"## End-to-end CLI on imagenet-sample.*?(?=\n## |\Z)", re.S)
text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section
path.write_text(text)
PY
echo "$section"
