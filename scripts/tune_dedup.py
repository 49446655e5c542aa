#!/usr/bin/env python3
"""Calibrates `imgfeat dedup`'s verification thresholds (`Verification::default` in src/search.rs, the same
constants in Spark's NearDuplicates): on the tuning split of scripts/evaluate.py (photos 1-300 of
../shared/data/imagenet-sample, the first 100 edited 20 ways), every rule of a grid of cosine thresholds (two
whole images, two objects, one of each) over the candidates within the default 47 bits is scored by the share of
edited copies it groups with their original. A rule is safe when it puts no two originals in one group, neither
at its thresholds nor with every threshold lowered by MARGIN (a rule at the very edge of the mistakes on one set
makes them on the next); the rule chosen is the strictest safe one (the largest sum of the three thresholds)
that groups within CLOSE of the best safe share (lower thresholds that buy less are noise on 2000 copies). The
same is reported for candidates within 63 bits, what a wider radius would buy. Then, with those three fixed,
the inset threshold (a row's inset against another row's whole image) is chosen the same way from INSET_GRID.
The rule is then checked on the held-out split (photos 401-700) with the CLI itself. Prints what it found; the constants are set by hand from it.

    .venv/bin/python scripts/tune_dedup.py

Needs the release CLI and what scripts/evaluate.py needs. The grid re-implements the rule in NumPy (codes of a
row: its object code and its whole-image code, one code when they are equal, counted as a whole image; a code
several rows carry is one code, represented by its first entry in path order, and joins those rows; two distinct
codes are joined when they are within the distance and the cosine of their features reaches the threshold of
their kinds; a row's insets are compared with the other distinct codes that are whole images only; groups are
connected components); the held-out check runs `imgfeat dedup`.
"""
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from evaluate import PHOTOS, components, grouping, groups_from_csv, run, write_split

DISTANCE = 47  # DuplicateRule::VERIFIED_DISTANCE
WIDER = 63  # the widest radius probed within 3 bits per 16-bit band, for comparison
MARGIN = 0.03
CLOSE = 0.005  # a threshold is lowered only for at least half a point more of the copies grouped
GRID = [(whole, objects, mixed)
        for whole in np.round(np.arange(0.60, 0.85, 0.02), 2)
        for objects in (0.90, 0.95)
        for mixed in np.round(np.arange(0.60, 0.93, 0.02), 2) if mixed >= whole]
INSET_GRID = list(np.round(np.arange(0.60, 0.93, 0.02), 2))
OFF = 2.0  # a threshold no cosine reaches


def split_table(work, collection, fillers, seed):
    """The split's originals and edits extracted into one table directory; (table, originals' stems, copies' stems)."""
    originals, queries, table = work / "originals", work / "queries", work / "table"
    write_split(collection, fillers, seed, originals, queries)
    table.mkdir()
    run("extract", "--threads", "2", "-o", table / "originals.parquet", originals)
    run("extract", "--threads", "2", "-o", table / "queries.parquet", queries)
    return table, sorted(p.stem for p in originals.iterdir()), sorted(p.stem for p in queries.iterdir())


def codes_of(table):
    """The table's distinct codes as `duplicate_groups` compares them: (row stems, Hamming distances, cosines and
    whole-image flags of the distinct codes, the row naming each, pairs of rows carrying one code). Rows are in
    path order, each row's object code before its whole-image code (one code, a whole image's, when they are equal);
    a code several entries carry is represented by its first entry, with that entry's feature and kind."""
    rows = sorted((r for f in sorted(table.iterdir()) for r in pq.read_table(f).to_pylist()), key=lambda r: r["path"])
    stems, bits, features, whole, owner, first_of, same, inset = [], [], [], [], [], {}, [], []
    for i, row in enumerate(rows):
        stems.append(Path(row["path"]).stem)
        entries = []
        pairs = ((row["code"], row["feature"], False), (row["whole_code"], row["whole_feature"], True))
        for code, feature, is_whole in pairs:
            if code is None:
                continue
            if entries and entries[-1][0] == code:
                entries[-1][2] = True
                continue
            entries.append([code, feature, is_whole])
        for code, feature, is_whole in entries:
            if code in first_of:
                same.append((i, owner[first_of[code]]))
                continue
            first_of[code] = len(bits)
            bits.append(code)
            features.append(feature)
            whole.append(is_whole)
            owner.append(i)
            inset.append(False)
        for found in row.get("insets") or []:
            bits.append(found["code"])
            features.append(found["feature"])
            whole.append(False)
            owner.append(i)
            inset.append(True)
    signs = np.array([np.unpackbits(np.frombuffer(c, np.uint8)) for c in bits], np.float32) * 2 - 1
    distance = np.rint((signs.shape[1] - signs @ signs.T) / 2).astype(np.int32)
    features = np.array(features, np.float32)
    return stems, distance, features @ features.T, np.array(whole), np.array(owner), same, np.array(inset)


def groups(stems, distance, cosine, whole, owner, same, inset, thresholds, within=DISTANCE):
    """{stem: group} under the verified rule with `thresholds` (whole, object, mixed, inset) and candidates `within`
    bits."""
    whole_pair = whole[:, None] & whole[None, :]
    object_pair = ~whole[:, None] & ~whole[None, :]
    least = np.where(whole_pair, thresholds[0], np.where(object_pair, thresholds[1], thresholds[2]))
    inset_whole = (inset[:, None] & whole[None, :]) | (whole[:, None] & inset[None, :])
    least = np.where(inset[:, None] | inset[None, :], np.where(inset_whole, thresholds[3], OFF), least)
    joined = (distance <= within) & (cosine >= least)
    candidates = ((owner[a], owner[b]) for a, b in zip(*np.nonzero(np.triu(joined, 1))))
    return {s: str(group) for s, group in zip(stems, components(len(stems), [*same, *candidates]))}


def calibrate(codes, originals, copies, within, grid):
    """The safe rules' best share of copies grouped, and the strictest safe rule within CLOSE of it with its share."""
    score = lambda t: grouping(groups(*codes, t, within), originals, copies)  # noqa: E731
    safe = []
    for thresholds in grid:
        result = score(thresholds)
        if result["mixed"] == 0 and score(tuple(t - MARGIN if t < OFF else t for t in thresholds))["mixed"] == 0:
            safe.append((round(result["all"] * len(copies)), thresholds))  # copies grouped: exact comparisons
    if not safe:
        raise SystemExit(f"no rule of the grid within {within} bits keeps every original apart: widen GRID")
    best = max(grouped for grouped, _ in safe)
    close = ((g, t) for g, t in safe if g >= best - CLOSE * len(copies))
    grouped, chosen = max(close, key=lambda s: (sum(s[1]), s[0]))
    return len(safe), best / len(copies), grouped / len(copies), chosen


def main():
    names = sorted(p.name for p in PHOTOS.iterdir())
    with tempfile.TemporaryDirectory() as work:
        tuning = Path(work) / "tuning"
        tuning.mkdir()
        table, originals, copies = split_table(tuning, names[:300], names[300:700], 20261125)  # evaluate.py --tuning
        codes = codes_of(table)
        for within in (DISTANCE, WIDER):
            grid = [(*t, OFF) for t in GRID]
            safe, best, share, chosen = calibrate(codes, originals, copies, within, grid)
            print(f"tuning split (photos 1-300), candidates within {within} bits, insets aside: {safe} of {len(grid)} "
                  f"rules mix no originals even {MARGIN} lower; the best groups {best:.3f} of the copies; the strictest "
                  f"within {CLOSE} of it groups {share:.3f}: whole {chosen[0]:.2f}, object {chosen[1]:.2f}, "
                  f"mixed {chosen[2]:.2f}")
            grid = [(*chosen[:3], t) for t in INSET_GRID]
            safe, best, share, chosen = calibrate(codes, originals, copies, within, grid)
            print(f"  with the rows' insets: {safe} of {len(grid)} inset thresholds safe; the best groups {best:.3f}; "
                  f"the strictest within {CLOSE} of it groups {share:.3f}: inset {chosen[3]:.2f}")
        held_out = Path(work) / "held-out"
        held_out.mkdir()
        table, originals, copies = split_table(held_out, names[400:700], names[:400], 20261206)  # evaluate.py's
        run("dedup", table, "-o", held_out / "groups.csv")
        result = grouping(groups_from_csv(held_out / "groups.csv"), originals, copies)
        print(f"held-out split (photos 401-700), `imgfeat dedup` at its defaults: {result['all']:.3f} of the copies "
              f"grouped, {result['mixed']} originals in mixed groups")


if __name__ == "__main__":
    main()
