#!/usr/bin/env python3
"""Calibrates `imgfeat dedup`'s verification thresholds (`Verification::default` in src/search.rs, the same
constants in Spark's NearDuplicates): on the tuning split of scripts/evaluate.py (photos 1-300 of
../shared/data/imagenet-sample, the first 100 edited 20 ways), every rule of a grid of cosine thresholds (two
whole images, two objects, one of each) over the candidates within the default 47 bits is scored by the share of
edited copies it groups with their original. A rule is safe when it puts no two originals in one group, neither
at its thresholds nor with every threshold lowered by MARGIN (a rule at the very edge of the mistakes on one set
makes them on the next); the rule chosen is the strictest safe one (highest thresholds) that groups within CLOSE
of the best safe share (lower thresholds that buy less are noise on 2000 copies). It is then checked on the held-out split (photos 401-700) with the
CLI itself. Prints what it found; the constants are set by hand from it.

    .venv/bin/python scripts/tune_dedup.py

Needs the release CLI and what scripts/evaluate.py needs. The grid re-implements the rule in NumPy (codes of a
row: its object code and its whole-image code, one code when they are equal, counted as a whole image; a
candidate pair is joined when its codes are equal, or within the distance and the cosine of their features
reaches the threshold of their kinds; groups are connected components); the held-out check runs `imgfeat dedup`.
"""
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from evaluate import PHOTOS, grouping, groups_from_csv, run, write_split

DISTANCE = 47  # DuplicateRule::VERIFIED_DISTANCE
MARGIN = 0.03
CLOSE = 0.005  # a threshold is lowered only for at least half a point more of the copies grouped
GRID = [(whole, objects, mixed)
        for whole in np.round(np.arange(0.60, 0.85, 0.02), 2)
        for objects in (0.90, 0.95)
        for mixed in np.round(np.arange(0.60, 0.93, 0.02), 2) if mixed >= whole]


def split_table(work, collection, fillers, seed):
    """The split's originals and edits extracted into one table directory; (table, originals' stems, copies' stems)."""
    originals, queries, table = work / "originals", work / "queries", work / "table"
    write_split(collection, fillers, seed, originals, queries)
    table.mkdir()
    run("extract", "--threads", "2", "-o", table / "originals.parquet", originals)
    run("extract", "--threads", "2", "-o", table / "queries.parquet", queries)
    return table, sorted(p.stem for p in originals.iterdir()), sorted(p.stem for p in queries.iterdir())


def codes_of(table):
    """Every row's distinct codes: (stems, code bits, features, whole-image flags, owning row), rows in path order."""
    rows = sorted((r for f in sorted(table.iterdir()) for r in pq.read_table(f).to_pylist()), key=lambda r: r["path"])
    stems, bits, features, whole, owner = [], [], [], [], []
    for i, row in enumerate(rows):
        stems.append(Path(row["path"]).stem)
        for code, feature, is_whole in ((row["code"], row["feature"], False), (row["whole_code"], row["whole_feature"], True)):
            if code is None:
                continue
            if owner and owner[-1] == i and bits[-1] == code:
                whole[-1] = True
                continue
            bits.append(code)
            features.append(feature)
            whole.append(is_whole)
            owner.append(i)
    signs = np.array([np.unpackbits(np.frombuffer(c, np.uint8)) for c in bits], np.float32) * 2 - 1
    distance = np.rint((signs.shape[1] - signs @ signs.T) / 2).astype(np.int32)
    features = np.array(features, np.float32)
    return stems, distance, features @ features.T, np.array(whole), np.array(owner)


def groups(stems, distance, cosine, whole, owner, thresholds):
    whole_pair = whole[:, None] & whole[None, :]
    object_pair = ~whole[:, None] & ~whole[None, :]
    least = np.where(whole_pair, thresholds[0], np.where(object_pair, thresholds[1], thresholds[2]))
    joined = (distance == 0) | ((distance <= DISTANCE) & (cosine >= least - 1e-6))
    parent = list(range(len(stems)))

    def root(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x
    for a, b in zip(*np.nonzero(np.triu(joined, 1))):
        ra, rb = root(owner[a]), root(owner[b])
        parent[max(ra, rb)] = min(ra, rb)
    return {s: str(root(i)) for i, s in enumerate(stems)}


def main():
    names = sorted(p.name for p in PHOTOS.iterdir())
    with tempfile.TemporaryDirectory() as work:
        tuning = Path(work) / "tuning"
        tuning.mkdir()
        table, originals, copies = split_table(tuning, names[:300], names[300:700], 20261125)  # evaluate.py --tuning
        codes = codes_of(table)
        score = lambda t: grouping(groups(*codes, t), originals, copies)  # noqa: E731
        safe = []
        for thresholds in GRID:
            result = score(thresholds)
            if result["mixed"] == 0 and score(tuple(t - MARGIN for t in thresholds))["mixed"] == 0:
                safe.append((result["all"], thresholds))
        best = max(share for share, _ in safe)
        share, chosen = max(((share, t) for share, t in safe if share >= best - CLOSE), key=lambda s: (sum(s[1]), s[0]))
        print(f"tuning split (photos 1-300): {len(safe)} of {len(GRID)} rules mix no originals even {MARGIN} lower; "
              f"the best groups {best:.3f} of the copies; the strictest within {CLOSE} of it groups {share:.3f}: "
              f"whole {chosen[0]:.2f}, object {chosen[1]:.2f}, mixed {chosen[2]:.2f}")
        held_out = Path(work) / "held-out"
        held_out.mkdir()
        table, originals, copies = split_table(held_out, names[400:700], names[:400], 20261206)  # evaluate.py's
        run("dedup", table, "-o", held_out / "groups.csv")
        result = grouping(groups_from_csv(held_out / "groups.csv"), originals, copies)
        print(f"held-out split (photos 401-700), `imgfeat dedup` at its defaults: {result['all']:.3f} of the copies "
              f"grouped, {result['mixed']} originals in mixed groups")


if __name__ == "__main__":
    main()
