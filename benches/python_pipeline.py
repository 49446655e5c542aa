"""The baseline a Python user would write for imgfeat's job, tuned: onnxruntime + Pillow + NumPy, one
process per thread (each with single-threaded onnxruntime sessions, which beats intra-op threads on
these small models), vectorised box decoding and NMS, and the crop and the whole image embedded in
one batch of two (or once, when the crop is the whole image, as imgfeat does). Same models,
thresholds and outputs as `imgfeat extract` (docs/PIPELINE.md).

    python benches/python_pipeline.py PHOTOS_DIR --threads 2

Prints one JSON line: images, ok, failed, detected, seconds (after the workers loaded their models).
"""
import os

# One BLAS thread per process: the processes are the parallelism (set before NumPy loads OpenBLAS).
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse
import io
import json
import struct
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

# IMGFEAT_MODEL_DIR when set (Spark ships this file alone to the executors), else the repository's models/.
MODELS = Path(os.environ.get("IMGFEAT_MODEL_DIR") or Path(__file__).resolve().parents[1] / "models")
THRESHOLD, IOU, MAX_DETECTIONS, MARGIN = 0.3, 0.6, 20, 0.10
_worker = {}


def anchors():
    """TensorFlow's SSD anchors as (cy, cx, h, w), from the shipped corner file."""
    corners = np.load(MODELS / "ssd_anchors_300_1917_yxyx.npy").astype(np.float32)
    return np.stack([(corners[:, 0] + corners[:, 2]) / 2, (corners[:, 1] + corners[:, 3]) / 2,
                     corners[:, 2] - corners[:, 0], corners[:, 3] - corners[:, 1]], axis=1)


def load_projection(bits):
    """mean, P·R from imgfeat's safetensors projection (8-byte header length, JSON header, raw data)."""
    raw = (MODELS / f"codes_itq_{bits}.safetensors").read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length])
    data = raw[8 + length:]

    def tensor(name):
        start, end = header[name]["data_offsets"]
        return np.frombuffer(data[start:end], dtype=np.float32).reshape(header[name]["shape"])

    return tensor("mean"), tensor("pca") @ tensor("rotation")


def init_worker():
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = lambda name: ort.InferenceSession(str(MODELS / name), options, providers=["CPUExecutionProvider"])
    _worker.update(detector=session("ssd_mobilenetv2_coco_float.onnx"), embedder=session("efficientnet_lite0_embed.onnx"),
                   anchors=anchors(), projection=load_projection(256))


def nms(boxes, scores):
    order = np.argsort(-scores, kind="stable")
    keep = []
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        y0 = np.maximum(boxes[i, 0], boxes[rest, 0]); x0 = np.maximum(boxes[i, 1], boxes[rest, 1])
        y1 = np.minimum(boxes[i, 2], boxes[rest, 2]); x1 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(y1 - y0, 0, None) * np.clip(x1 - x0, 0, None)
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-12)
        order = rest[iou <= IOU]
    return keep


def extract(path):
    with open(path, "rb") as f:
        return extract_bytes(f.read())


def extract_bytes(data):
    """One image's row: detected flag, crop and whole-image features and codes, or an error."""
    if not _worker:
        init_worker()
    try:
        image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    except Exception as error:  # a bad file is a failed row, as in imgfeat
        return {"error": str(error)}
    w, h = image.size
    detector, embedder, a = _worker["detector"], _worker["embedder"], _worker["anchors"]
    x = np.asarray(image.resize((300, 300), Image.BILINEAR), dtype=np.uint8)[None]
    encodings, scores = detector.run(None, {"normalized_input_image_tensor": x})
    encodings, scores = encodings[0], scores[0][:, 1:]
    anchor_idx, class_idx = np.nonzero(scores >= THRESHOLD)
    detections = []
    if anchor_idx.size:
        t = encodings[anchor_idx]
        an = a[anchor_idx]
        cy = t[:, 0] / 10 * an[:, 2] + an[:, 0]; cx = t[:, 1] / 10 * an[:, 3] + an[:, 1]
        bh = np.exp(t[:, 2] / 5) * an[:, 2]; bw = np.exp(t[:, 3] / 5) * an[:, 3]
        boxes = np.clip(np.stack([cy - bh / 2, cx - bw / 2, cy + bh / 2, cx + bw / 2], axis=1), 0, 1)
        s = scores[anchor_idx, class_idx]
        for c in np.unique(class_idx):
            members = np.flatnonzero(class_idx == c)
            detections += [(s[m], anchor_idx[m], c + 1, boxes[m]) for m in members[nms(boxes[members], s[members])]]
        detections.sort(key=lambda d: (-d[0], d[1], d[2]))
        detections = detections[:MAX_DETECTIONS]
    crop, box = image, (0, 0, w, h)
    if detections:
        ymin, xmin, ymax, xmax = detections[0][3]
        dx, dy = (xmax - xmin) * w * MARGIN, (ymax - ymin) * h * MARGIN
        left = int(np.floor(max(0, xmin * w - dx) + 1e-3)); top = int(np.floor(max(0, ymin * h - dy) + 1e-3))
        right = int(np.ceil(min(w, xmax * w + dx) - 1e-3)); bottom = int(np.ceil(min(h, ymax * h + dy) - 1e-3))
        box = (min(left, w - 1), min(top, h - 1), max(right, left + 1), max(bottom, top + 1))
        crop = image.crop(box)
    # A crop that is the whole image (no detection, or a box that fills it) is embedded once, as
    # imgfeat does.
    images = (image,) if box == (0, 0, w, h) else (crop, image)
    batch = np.stack([np.asarray(im.resize((224, 224), Image.BILINEAR), dtype=np.float32) for im in images])
    batch = ((batch - 127.0) / 128.0).transpose(0, 3, 1, 2)
    features = embedder.run(["features"], {"input": np.ascontiguousarray(batch)})[0]
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    mean, directions = _worker["projection"]
    codes = np.packbits((features - mean) @ directions > 0, axis=1)
    return {"detected": bool(detections), "feature": features[0], "code": codes[0].tobytes(),
            "whole_feature": features[-1], "whole_code": codes[-1].tobytes()}


def ready(_):
    return os.getpid()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    files = sorted(str(p) for p in Path(args.folder).rglob("*") if p.is_file() and not p.name.startswith("."))
    with Pool(args.threads, initializer=init_worker) as pool:
        pool.map(ready, range(args.threads))  # workers have loaded their models
        started = time.perf_counter()
        rows = pool.map(extract, files, chunksize=8)
        seconds = time.perf_counter() - started
    failed = sum("error" in r for r in rows)
    print(json.dumps({"images": len(files), "ok": len(files) - failed, "failed": failed,
                      "detected": sum(r.get("detected", False) for r in rows), "seconds": round(seconds, 3)}))


if __name__ == "__main__":
    sys.exit(main())
