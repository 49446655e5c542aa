#!/usr/bin/env bash
# Makes docs/report.png, the README's screenshot of `imgfeat report`: the shared photos
# (../shared/data: ImageNet samples, odd formats and near-duplicates) extracted, reported, and the
# top of the page rendered by headless Chromium. Needs `cargo build --release` and scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=../shared/data
[ -d "$shared" ] || { echo "report-screenshot: $shared is absent" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
target/release/imgfeat extract "$shared/formats" "$shared/imagenet-sample" -o "$work/features.parquet"
target/release/imgfeat report "$work/features.parquet" -o "$work/report.html"
chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,1100 \
  --virtual-time-budget=5000 --screenshot="$work/report.png" "file://$work/report.html" 2>/dev/null
.venv/bin/python - "$work/report.png" docs/report.png <<'PY'
import sys
from PIL import Image
# A 256-colour palette keeps the committed file small; the page is mostly flat colour and thumbnails.
Image.open(sys.argv[1]).convert("RGB").quantize(256).save(sys.argv[2], optimize=True)
PY
echo "report-screenshot: docs/report.png ($(du -k docs/report.png | cut -f1) KiB)"
