#!/usr/bin/env python3
"""Edit-invariant codes (`fit-codes --edits 8`) against PCA + ITQ (`fit-codes`, the default): both fitted on photos
1-400 of ../shared/data/imagenet-sample, both evaluated on photos 401-700 with the evaluation's edits
(scripts/eval_edits.py, the same queries as scripts/evaluate.py's held-out split). Replaces the section
"## Edit-invariant codes against PCA + ITQ" of EVALUATION.md (scripts/evaluate.py keeps it when it rewrites the rest).

    .venv/bin/python scripts/compare_fits.py

Needs the release CLI and what scripts/evaluate.py needs.
"""
import datetime
import json
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from evaluate import PHOTOS, ROOT, grouping, groups_from_csv, run, search, write_split

SECTION = "## Edit-invariant codes against PCA + ITQ"
FITTED = 400
METHODS = {"edit-invariant (fit-codes --edits 8)": 8, "PCA + ITQ (fit-codes, the default)": 0}
DEDUP_RULES = {
    "dedup (default: within 47 bits, verified)": [],
    "dedup, verified within 63 bits": ["--max-distance", "63"],
    "dedup --no-verify (24 bits)": ["--no-verify"],
    "dedup --no-verify, 40 bits": ["--no-verify", "--max-distance", "40"],
    "dedup --no-verify, 47 bits": ["--no-verify", "--max-distance", "47"],
}


def codes(table):
    t = pq.read_table(table, columns=["path", "code", "whole_code"]).to_pydict()
    return {Path(p).stem: [np.unpackbits(np.frombuffer(c, np.uint8)) for c in (code, whole) if c is not None]
            for p, code, whole in zip(t["path"], t["code"], t["whole_code"])}


def hamming_figures(originals, queries):
    """Hamming recall@1 (best pair of codes, ties against) and the distances a codes-only rule must separate."""
    names = sorted(originals)
    nearest = lambda a, b: min(int(np.sum(x != y)) for x in a for y in b)  # noqa: E731
    found, own, wrong = [], [], []
    for q, qc in queries.items():
        d = np.array([nearest(qc, originals[n]) for n in names])
        i = names.index(q.split("__")[0])
        found.append(np.sum(d <= d[i]) == 1)
        own.append(d[i])
        wrong.append(np.min(np.delete(d, i)))
    between = [min(nearest(originals[a], originals[b]) for b in names if b != a) for a in names]
    return {"Hamming r@1": float(np.mean(found)), "bits from copy to its original, median": float(np.median(own)),
            "bits from copy to nearest other original, 1st percentile": float(np.percentile(wrong, 1)),
            "bits between two originals, min": float(np.min(between))}


def main():
    names = sorted(p.name for p in PHOTOS.iterdir())
    collection, fillers = names[400:700], names[:400]
    rows = {}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        fit, originals, queries = work / "fit", work / "originals", work / "queries"
        fit.mkdir()
        for name in names[:FITTED]:
            (fit / name).symlink_to(PHOTOS / name)
        write_split(collection, fillers, 20261206, originals, queries)  # evaluate.py's held-out split and seed
        query_files = sorted(queries.iterdir())
        order, stems = sorted(p.stem for p in originals.iterdir()), [p.stem for p in query_files]
        for method, edits in METHODS.items():
            models = work / f"models-{edits}"
            models.mkdir()
            for f in (ROOT / "models").iterdir():
                if f.suffix in (".onnx", ".txt", ".npy"):
                    (models / f.name).symlink_to(f)
            started = time.time()
            report = json.loads(run("fit-codes", "--threads", "2", "--bits-list", "256", "--edits", edits,
                                    "--model-dir", models, fit))[0]
            row = {"fit-codes seconds": time.time() - started, "edit/photo variance": report.get("edit_to_photo_variance")}
            table = work / f"table-{edits}"
            table.mkdir()
            run("extract", "--threads", "2", "--model-dir", models, "-o", table / "originals.parquet", originals)
            run("extract", "--threads", "2", "--model-dir", models, "-o", table / "queries.parquet", queries)
            row.update(hamming_figures(codes(table / "originals.parquet"), codes(table / "queries.parquet")))
            hits, _, _ = search(table / "originals.parquet", query_files, ["--model-dir", models])
            row["search r@1 (defaults)"] = float(np.mean([hits[q][:1] == [q.split("__")[0]] for q in stems]))
            for rule, extra in DEDUP_RULES.items():
                run("dedup", table, *extra, "-o", work / "groups.csv")
                g = grouping(groups_from_csv(work / "groups.csv"), order, stems)
                row[rule] = f"{g['all']:.3f} ({g['mixed']} mixed)"
            rows[method] = row
            print(method, row, flush=True)

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    avx512 = "avx512f" in Path("/proc/cpuinfo").read_text()
    columns = list(next(iter(rows.values())))
    fmt = lambda v: "–" if v is None else (f"{v:.3f}" if isinstance(v, float) and v < 1 else (f"{v:.0f}" if isinstance(v, float) else v))  # noqa: E731
    section = [
        SECTION, "",
        f"Command: `.venv/bin/python scripts/compare_fits.py` ({datetime.date.today()}, {cpu}, "
        f"{'with' if avx512 else 'no'} AVX-512, 2 threads). Both projections fitted on "
        f"photos 1–{FITTED} (the edit-invariant one with its own edits, `src/codes/edits.rs`), both evaluated on "
        "the held-out split above (photos 401–700, the same 2000 edited queries). Dedup figures: the share of edited "
        "copies grouped with their original (originals in mixed groups).", "",
        "| " + " | ".join(["fit", *columns]) + " |", "|---|" + "---|" * len(columns),
        *("| " + " | ".join([m, *(fmt(r[c]) for c in columns)]) + " |" for m, r in rows.items()), "",
    ]
    path = ROOT / "EVALUATION.md"
    text = path.read_text()
    text = re.sub(rf"\n{re.escape(SECTION)}\n.*?(?=\n## |\Z)", "", text, flags=re.S).rstrip("\n")
    path.write_text(text + "\n\n" + "\n".join(section))
    print("\n".join(section))


if __name__ == "__main__":
    main()
