#!/usr/bin/env python3
"""Replaces (or appends) one section of BENCHMARKS.md: the section whose heading starts with the
first line of standard input, up to the next "## " heading. Every bench script writes through here.

    echo "$section" | python3 scripts/splice-benchmarks.py
"""
import pathlib
import re
import sys

section = sys.stdin.read().strip() + "\n"
heading = section.splitlines()[0]
if not heading.startswith("## "):
    sys.exit("splice-benchmarks: the section must start with a '## ' heading")
# The heading's fixed part: up to the first parenthesis or digit-bearing detail, so a re-run with
# another photo count or date replaces the old section instead of adding a second.
stem = re.split(r"\s\(", heading, maxsplit=1)[0]
path = pathlib.Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
text = path.read_text() if path.exists() else (
    "# Benchmarks\n\nEvery figure here comes from a script in this repository, with its command; "
    "ratios are against a baseline measured in the same run.\n")
pattern = re.compile(re.escape(stem) + r".*?(?=\n## |\Z)", re.S)
text = pattern.sub(lambda _: section, text, count=1) if pattern.search(text) else text.rstrip() + "\n\n" + section
path.write_text(text)
