#!/usr/bin/env python3
"""Near-duplicate retrieval quality: edited copies of real photos queried against the originals, for
imgfeat's codes (64/128/256 bits), its float features, the whole-image embedding alone, and perceptual
hashes (pHash, dHash) as baselines; plus precision/recall of `imgfeat dedup` at a few thresholds.
Writes EVALUATION.md.

    .venv/bin/python scripts/evaluate.py            # 100 photos of ../shared/data/imagenet-sample
    .venv/bin/python scripts/evaluate.py --photos 300

Needs the release CLI (cargo build --release), Pillow, NumPy, pyarrow and imagehash
(scripts/evaluate-requirements.txt).
"""
import argparse
import datetime
import subprocess
import tempfile
from pathlib import Path

import imagehash
import numpy as np
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared/data/imagenet-sample"
CLI = ROOT / "target/release/imgfeat"


def edits(photo, other, rng):
    """The edit types of issue 6, each with a random strength."""
    w, h = photo.size
    f = rng.uniform(0.5, 0.9)
    cw, ch = int(w * f), int(h * f)
    x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
    s = rng.uniform(0.4, 0.8)
    out = {
        "crop": photo.crop((x, y, x + cw, y + ch)),
        "rescale": photo.resize((max(1, int(w * s)), max(1, int(h * s))), Image.BILINEAR),
        "jpeg": None,  # encoded below at quality 20-50
        "flip": ImageOps.mirror(photo),
        "brightness_contrast": ImageEnhance.Contrast(ImageEnhance.Brightness(photo).enhance(rng.uniform(0.7, 1.3))).enhance(rng.uniform(0.7, 1.3)),
        "rotation": photo.rotate(rng.uniform(-10, 10), resample=Image.BILINEAR, expand=False, fillcolor=(0, 0, 0)),
        "text_overlay": photo.copy(),
        "padding": ImageOps.expand(photo, border=int(max(w, h) * rng.uniform(0.1, 0.3)), fill=tuple(int(v) for v in rng.integers(0, 256, 3))),
        "new_background": other.copy(),
    }
    draw = ImageDraw.Draw(out["text_overlay"])
    for i in range(3):
        draw.text((int(w * 0.05), int(h * (0.1 + 0.3 * i))), "SALE -50% imgfeat", fill=(255, 255, 255))
    small = photo.resize((int(w * 0.45), int(h * 0.45)), Image.BILINEAR)
    bw, bh = out["new_background"].size
    out["new_background"].paste(small, (int(rng.integers(0, max(1, bw - small.width))), int(rng.integers(0, max(1, bh - small.height)))))
    return out


def extract(folder, out, bits):
    subprocess.run([str(CLI), "extract", "--threads", "2", "--bits", str(bits), "-o", str(out), str(folder)],
                   check=True, capture_output=True)
    table = pq.read_table(out).to_pydict()
    return {Path(p).name: {k: table[k][i] for k in table} for i, p in enumerate(table["path"])}


def unpack(code):
    return np.unpackbits(np.frombuffer(code, np.uint8)) if code is not None else None


def rank_of(true_score, other_scores):
    """1 + the originals that score strictly better, plus ties counted against us (pessimistic)."""
    return 1 + int(np.sum(other_scores <= true_score))


def metrics(ranks):
    ranks = np.asarray(ranks)
    return {"r@1": float(np.mean(ranks <= 1)), "r@10": float(np.mean(ranks <= 10)), "mAP": float(np.mean(1.0 / ranks))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=100)
    args = parser.parse_args()
    names = sorted(p.name for p in PHOTOS.iterdir())[: args.photos]
    rng = np.random.default_rng(20261125)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        originals, queries = work / "originals", work / "queries"
        originals.mkdir()
        queries.mkdir()
        kinds = []
        for i, name in enumerate(names):
            photo = Image.open(PHOTOS / name).convert("RGB")
            other = Image.open(PHOTOS / names[(i + 1) % len(names)]).convert("RGB")
            photo.save(originals / f"{i:04d}.png")
            for kind, edited in edits(photo, other, rng).items():
                path = queries / f"{i:04d}__{kind}.png"
                if kind == "jpeg":
                    photo.save(path.with_suffix(".jpg"), quality=int(rng.integers(20, 51)))
                else:
                    edited.save(path)
                if i == 0:
                    kinds.append(kind)
        results = {}
        rows = {}
        for bits in (64, 128, 256):
            rows[bits] = (extract(originals, work / f"o{bits}.parquet", bits), extract(queries, work / f"q{bits}.parquet", bits))
        orig256, query256 = rows[256]
        order = sorted(orig256)
        # Scores per method: lower is better (distances), so similarities are negated.
        def code_scores(orig, query, q):
            qc = [unpack(query[q][c]) for c in ("code", "whole_code") if query[q][c] is not None]
            out = []
            for o in order:
                oc = [unpack(orig[o][c]) for c in ("code", "whole_code") if orig[o][c] is not None]
                out.append(min(int(np.sum(a != b)) for a in qc for b in oc))
            return np.array(out, float)

        def cosine_scores(query, q, columns):
            qf = [np.asarray(query[q][c]) for c in columns if query[q][c] is not None]
            out = []
            for o in order:
                of = [np.asarray(orig256[o][c]) for c in columns if orig256[o][c] is not None]
                out.append(-max(float(a @ b) for a in qf for b in of))
            return np.array(out, float)

        hashes = {}
        for method, fn in (("pHash", imagehash.phash), ("dHash", imagehash.dhash)):
            hashes[method] = {p.name: fn(Image.open(p)) for p in list(originals.iterdir()) + list(queries.iterdir())}

        methods = {f"imgfeat codes, {b} bits": (lambda q, b=b: code_scores(rows[b][0], rows[b][1], q)) for b in (64, 128, 256)}
        methods["imgfeat float features (object and whole)"] = lambda q: cosine_scores(query256, q, ("feature", "whole_feature"))
        methods["whole-image embedding only (no detection)"] = lambda q: cosine_scores(query256, q, ("whole_feature",))
        for method in ("pHash", "dHash"):
            methods[f"{method} (64 bits)"] = lambda q, m=method: np.array([hashes[m][q] - hashes[m][o] for o in order], float)

        for method, scores_of in methods.items():
            ranks = {k: [] for k in kinds}
            for q in sorted(query256):
                kind = q.split("__")[1].rsplit(".", 1)[0]
                true = order.index(q.split("__")[0] + ".png")
                scores = scores_of(q)
                ranks[kind].append(rank_of(scores[true], np.delete(scores, true)))
            results[method] = {k: metrics(r) for k, r in ranks.items()}
            results[method]["all"] = metrics([r for rs in ranks.values() for r in rs])

        # dedup precision/recall: pairs within the threshold (min over code pairs, 256 bits) among all
        # originals and edits; true pairs are a photo and its edits (and edits of the same photo).
        items = [(n, orig256[n]) for n in order] + [(q, query256[q]) for q in sorted(query256)]
        codes = [[unpack(r[c]) for c in ("code", "whole_code") if r[c] is not None] for _, r in items]
        photo_of = [n.split("__")[0].split(".")[0] for n, _ in items]
        dist = np.full((len(items), len(items)), 10**6)
        for i in range(len(items)):
            for j in range(i + 1, len(items)):
                dist[i, j] = min(int(np.sum(a != b)) for a in codes[i] for b in codes[j])
        same = np.array([[photo_of[i] == photo_of[j] for j in range(len(items))] for i in range(len(items))])
        upper = np.triu(np.ones_like(same, bool), 1)
        dedup = []
        for threshold in (8, 16, 24, 32, 48, 64):
            within = (dist <= threshold) & upper
            tp = int(np.sum(within & same))
            dedup.append((threshold, tp / max(1, int(np.sum(within))), tp / int(np.sum(same & upper))))

    lines = [
        "# Evaluation: near-duplicate retrieval", "",
        f"Command: `.venv/bin/python scripts/evaluate.py --photos {args.photos}` ({datetime.date.today()}). "
        f"The first {args.photos} photos of `../shared/data/imagenet-sample`, each edited {len(kinds)} ways "
        "(crop 50–90 %, rescale 40–80 %, JPEG quality 20–50, horizontal flip, brightness and contrast ±30 %, "
        "rotation ±10°, text overlay, padding 10–30 %, the photo at 45 % pasted onto the next photo), each edit "
        "queried against the originals. imgfeat scores a pair by the best of its code pairs (object and whole "
        "image, as `imgfeat search`); ranks count ties against the method. pHash and dHash (the `imagehash` "
        "package) are the baselines.", "",
        "Recall@1 per edit type:", "",
        "| method | " + " | ".join(kinds) + " | all |", "|---|" + "---|" * (len(kinds) + 1),
    ]
    for method, r in results.items():
        lines.append(f"| {method} | " + " | ".join(f"{r[k]['r@1']:.2f}" for k in kinds) + f" | {r['all']['r@1']:.2f} |")
    lines += ["", "Over all edits:", "", "| method | recall@1 | recall@10 | mAP |", "|---|---|---|---|"]
    for method, r in results.items():
        lines.append(f"| {method} | {r['all']['r@1']:.3f} | {r['all']['r@10']:.3f} | {r['all']['mAP']:.3f} |")
    lines += ["", "`imgfeat dedup` (256-bit codes, best code pair) over originals and edits together: a pair is true "
              "when both come from the same photo.", "", "| max distance | precision | recall |", "|---|---|---|"]
    lines += [f"| {t} | {p:.3f} | {r:.3f} |" for t, p, r in dedup]
    (ROOT / "EVALUATION.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
