#!/usr/bin/env python3
"""Independent reference implementation of the imgfeat pipeline (docs/PIPELINE.md).

It uses only onnxruntime, NumPy and Pillow and shares no code with the Rust crate. Its output,
tests/fixtures/reference_outputs.json, is the ground truth the Rust tests compare against. The aim is
to follow the written contract so that a disagreement points at one side or the other, rather than
both repeating the same mistake.

    reference.py --out tests/fixtures/reference_outputs.json tests/fixtures/photos/*.jpg
    reference.py --check tests/fixtures/reference_outputs.json tests/fixtures/photos/*.jpg
"""
import argparse
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

MODELS = Path(__file__).resolve().parents[2] / "models"
SCORE_THRESHOLD, IOU_THRESHOLD, MAX_DETECTIONS = 0.3, 0.6, 20
CROP_MARGIN, DETECTOR_SIZE, EMBED_SIZE = 0.10, 300, 224
SCORE_TOL, COSINE_MIN = 1e-5, 0.99999

# Each detector is described by data alone, as in the Rust Config: input dtype and scaling,
# output names, whether scores are logits, and how to read the label file.
DETECTORS = {
    "coco": dict(model="ssd_mobilenetv2_coco_float.onnx", labels="ssd_mobilenetv2_coco_labels.txt",
                 input="normalized_input_image_tensor", boxes="box_encodings",
                 scores="class_scores", uint8_input=True, sigmoid=False),
    "oidv4": dict(model="ssd_mobilenetv2_oidv4_float.onnx", labels="ssd_mobilenetv2_oidv4_labels.txt",
                  input="normalized_input_image_tensor", boxes="raw_outputs/box_encodings",
                  scores="raw_outputs/class_predictions", uint8_input=False, sigmoid=True),
}


def ssd_anchors():
    """The 1917 anchors as (ymin, xmin, ymax, xmax), generated from the TF SSD parameters.

    The aspect ratio written as 1/3 is 0.3333 in the TF Object Detection config the models were
    trained with. Exact 1/3 moves some anchors by 4e-5, so the file check below fails with it.
    """
    feature_maps, min_scale, max_scale = [19, 10, 5, 3, 2, 1], 0.2, 0.95
    n = len(feature_maps)
    scales = [min_scale + (max_scale - min_scale) * i / (n - 1) for i in range(n)] + [1.0]
    anchors = []
    for layer, f in enumerate(feature_maps):
        s = scales[layer]
        if layer == 0:  # the lowest layer is reduced to three boxes
            specs = [(0.1, 1.0), (s, 2.0), (s, 0.5)]
        else:
            specs = [(s, ar) for ar in (1.0, 2.0, 0.5, 3.0, 0.3333)]
            specs.append((math.sqrt(s * scales[layer + 1]), 1.0))
        for i in range(f):  # row, then column, then anchor
            for j in range(f):
                cy, cx = (i + 0.5) / f, (j + 0.5) / f
                for scale, ar in specs:
                    h, w = scale / math.sqrt(ar), scale * math.sqrt(ar)
                    anchors.append((cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2))
    anchors = np.array(anchors, dtype=np.float64)
    # The file is named "yxyx": corners evaluated from TensorFlow's graph, not (cy, cx, h, w).
    expected = np.load(MODELS / "ssd_anchors_300_1917_yxyx.npy").astype(np.float64)
    assert anchors.shape == expected.shape == (1917, 4), anchors.shape
    err = np.abs(anchors - expected).max()
    assert err <= 1e-6, f"generated anchors differ from the .npy fixture by {err:.3g}"
    return anchors


def session(model):
    """One intra-op thread and the default full graph optimisation, so results are reproducible."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(MODELS / model), opts, providers=["CPUExecutionProvider"])


def load_labels(name, path):
    """Map class id (score column) to name. COCO lines are "id-1  name"; OIDv4 row i is class i."""
    lines = [l for l in Path(path).read_text().splitlines() if l.strip()]
    if name == "coco":
        return {int(l.split(maxsplit=1)[0]) + 1: l.split(maxsplit=1)[1].strip() for l in lines}
    return {i: l.strip() for i, l in enumerate(lines)}


def decode_boxes(enc, anchors):
    """Faster R-CNN box coder (scales 10, 10, 5, 5); boxes (ymin, xmin, ymax, xmax) clipped to [0, 1]."""
    enc = enc.astype(np.float64)
    ya, xa = (anchors[:, 0] + anchors[:, 2]) / 2, (anchors[:, 1] + anchors[:, 3]) / 2
    ha, wa = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    cy, cx = enc[:, 0] / 10 * ha + ya, enc[:, 1] / 10 * wa + xa
    h, w = np.exp(enc[:, 2] / 5) * ha, np.exp(enc[:, 3] / 5) * wa
    return np.clip(np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=1), 0.0, 1.0)


def iou(a, b):
    """Intersection over union of two yxyx boxes; 0 when the union is empty."""
    ih = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iw = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ih * iw
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def detect(img, sess, cfg, anchors):
    """Steps 2-3: stretch to 300x300, run the SSD, decode, per-class greedy NMS, keep the top 20.

    Returns a list of (score, anchor, class_id, box) best first, box being yxyx in [0, 1].
    """
    x = np.asarray(img.resize((DETECTOR_SIZE, DETECTOR_SIZE), Image.BILINEAR), dtype=np.uint8)[None]
    if not cfg["uint8_input"]:
        x = x.astype(np.float32) * np.float32(2 / 255) - np.float32(1)
    enc, scores = sess.run([cfg["boxes"], cfg["scores"]], {cfg["input"]: x})
    boxes, scores = decode_boxes(enc[0], anchors), scores[0].astype(np.float64)
    if cfg["sigmoid"]:
        scores = 1.0 / (1.0 + np.exp(-scores))
    found = []
    for c in range(1, scores.shape[1]):  # column 0 is the background
        cand = np.flatnonzero(scores[:, c] >= SCORE_THRESHOLD)
        cand = cand[np.argsort(-scores[cand, c], kind="stable")]  # ties: lower anchor first
        kept = []
        for a in cand:
            if all(iou(boxes[a], boxes[k]) <= IOU_THRESHOLD for k in kept):
                kept.append(a)
        found += [(float(scores[a, c]), int(a), c, boxes[a]) for a in kept]
    found.sort(key=lambda d: (-d[0], d[1], d[2]))
    return found[:MAX_DETECTIONS]


def crop_rect(box, width, height):
    """Step 4: box in pixels, widened by the margin, clamped, then rounded outwards."""
    ymin, xmin, ymax, xmax = box[0] * height, box[1] * width, box[2] * height, box[3] * width
    mx, my = CROP_MARGIN * (xmax - xmin), CROP_MARGIN * (ymax - ymin)
    left, right = max(0.0, xmin - mx), min(float(width), xmax + mx)
    top, bottom = max(0.0, ymin - my), min(float(height), ymax + my)
    # Outwards, but a fraction under 1/1000 px is float noise and does not add a pixel.
    left, top = math.floor(left + 1e-3), math.floor(top + 1e-3)
    right, bottom = math.ceil(right - 1e-3), math.ceil(bottom - 1e-3)
    right, bottom = max(right, left + 1), max(bottom, top + 1)  # at least one pixel
    left, top = min(left, width - 1), min(top, height - 1)
    return [left, top, min(right, width), min(bottom, height)]


def embed(img, sess):
    """Step 5: 224x224 bilinear stretch, NCHW, (x - 127) / 128, EfficientNet-Lite0, L2-normalised."""
    x = np.asarray(img.resize((EMBED_SIZE, EMBED_SIZE), Image.BILINEAR), dtype=np.float32)
    x = ((x - 127.0) / 128.0).transpose(2, 0, 1)[None]
    f = sess.run(["features"], {"input": np.ascontiguousarray(x)})[0][0].astype(np.float64)
    return f / np.linalg.norm(f)


def sig7(v):
    """Round to 7 significant digits: float32 precision, and a compact, diff-friendly file."""
    return float(f"{v:.7g}")


def xyxy(box):
    return [sig7(box[1]), sig7(box[0]), sig7(box[3]), sig7(box[2])]


def run(paths, detector_names=tuple(DETECTORS)):
    anchors = ssd_anchors()
    embedder = session("efficientnet_lite0_embed.onnx")
    detectors = {n: (c, session(c["model"]), load_labels(n, MODELS / c["labels"]))
                 for n, c in DETECTORS.items() if n in detector_names}
    results = {}
    for path in paths:
        img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")  # step 1
        width, height = img.size
        whole = [sig7(v) for v in embed(img, embedder)]
        results[Path(path).name] = per_image = {}
        for name, (cfg, sess, labels) in detectors.items():
            dets = detect(img, sess, cfg, anchors)
            row = dict(width=width, height=height, detected=bool(dets), whole_feature=whole,
                       class_id=None, class_name=None, score=None, box_normalised=None,
                       crop_pixels=[0, 0, width, height],
                       detections=[dict(class_id=c, score=sig7(s), anchor=a, box=xyxy(b))
                                   for s, a, c, b in dets])
            crop = img
            if dets:  # main object = first detection (empty allow list)
                score, _, cls, box = dets[0]
                rect = crop_rect(box, width, height)
                crop = img.crop(tuple(rect))
                row.update(class_id=cls, class_name=labels[cls], score=sig7(score),
                           box_normalised=xyxy(box), crop_pixels=rect)
            row["feature"] = [sig7(v) for v in embed(crop, embedder)]
            per_image[name] = row
            print(f"{Path(path).name:16} {name:6} {row['class_name'] or '-':14} "
                  f"{row['score'] if dets else '-'}", file=sys.stderr)
    return results


def dumps(results):
    """Sorted keys, one field per line, but each list of numbers on a single line."""
    text = json.dumps(results, indent=1, sort_keys=True)
    return re.sub(r"\[[-\d.e,\s]*\]", lambda m: re.sub(r"\s+", "", m.group(0)).replace(",", ", "),
                  text) + "\n"


def compare(expected, actual):
    """All differences between two result sets, as readable lines (empty when they agree)."""
    errors = []

    def close(where, a, b):
        if (a is None) != (b is None) or (a is not None and not np.allclose(a, b, rtol=0, atol=SCORE_TOL)):
            errors.append(f"{where}: expected {a}, got {b}")

    def cosine(where, a, b):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) if a.shape == b.shape else -1.0
        if cos < COSINE_MIN:
            errors.append(f"{where}: cosine {cos:.7f} < {COSINE_MIN}")

    for img in sorted(set(expected) | set(actual)):
        if img not in expected or img not in actual:
            errors.append(f"{img}: present in only one of the two")
            continue
        for det in sorted(set(expected[img]) | set(actual[img])):
            e, a, at = expected[img].get(det), actual[img].get(det), f"{img}/{det}"
            if e is None or a is None:
                errors.append(f"{at}: present in only one of the two")
                continue
            for key in ("width", "height", "detected", "class_id", "class_name", "crop_pixels"):
                if e[key] != a[key]:
                    errors.append(f"{at}.{key}: expected {e[key]}, got {a[key]}")
            close(f"{at}.score", e["score"], a["score"])
            close(f"{at}.box_normalised", e["box_normalised"], a["box_normalised"])
            if [d["class_id"] for d in e["detections"]] != [d["class_id"] for d in a["detections"]]:
                errors.append(f"{at}.detections: classes differ")
            else:
                for i, (de, da) in enumerate(zip(e["detections"], a["detections"])):
                    close(f"{at}.detections[{i}].score", de["score"], da["score"])
                    close(f"{at}.detections[{i}].box", de["box"], da["box"])
            cosine(f"{at}.feature", e["feature"], a["feature"])
            cosine(f"{at}.whole_feature", e["whole_feature"], a["whole_feature"])
    return errors


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--out", help="write the results to this JSON file")
    mode.add_argument("--check", help="recompute and compare with this JSON file")
    p.add_argument("--detector", choices=list(DETECTORS), action="append",
                   help="run only this detector (repeatable; default: all); used by the benchmark")
    p.add_argument("images", nargs="+")
    args = p.parse_args()
    results = run(args.images, args.detector or tuple(DETECTORS))
    if args.out:
        Path(args.out).write_text(dumps(results))
        return 0
    expected = json.loads(Path(args.check).read_text())
    skipped = sorted(set(expected) - set(results))
    if skipped:  # checking a subset of the images is allowed, but say so
        print(f"not recomputed, not checked: {', '.join(skipped)}", file=sys.stderr)
    expected = {k: v for k, v in expected.items() if k in results}
    errors = compare(expected, json.loads(dumps(results)))
    for e in errors:
        print(f"MISMATCH {e}", file=sys.stderr)
    print(f"{args.check}: {'OK' if not errors else f'{len(errors)} mismatch(es)'}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
