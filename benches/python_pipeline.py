"""The baseline a Python user would write for imgfeat's job, tuned: onnxruntime + Pillow + NumPy, one
process per thread (each with single-threaded onnxruntime sessions, which beats intra-op threads on
these small models), vectorised box decoding and NMS, and the crop and the whole image embedded in
one batch of two (or once, when the crop is the whole image, as imgfeat does). Same models,
thresholds and outputs as `imgfeat extract` (docs/PIPELINE.md).

    python benches/python_pipeline.py PHOTOS_DIR --threads 2 [--engine openvino-int8] [--check]

`--engine` runs the same models on OpenVINO instead (see `openvino_models`): `openvino-f32`,
`openvino` (its default precision on this CPU: bf16 where the CPU has AVX-512 BF16 or AMX) or
`openvino-int8` (NNCF's post-training quantisation, calibrated on real photos and cached under
target/openvino-int8/). `--check` times nothing: it compares the engine's model outputs with
onnxruntime's on the folder's first photos and fails when they disagree beyond the engine's tolerance.

Prints one JSON line: images, ok, failed, detected, seconds (after the workers loaded their models).
"""
import os

# One BLAS thread per process: the processes are the parallelism (set before NumPy loads OpenBLAS).
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse
import hashlib
import io
import json
import struct
import sys
import time
from collections import namedtuple
from importlib.metadata import version
from multiprocessing import Pool, Process
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

REPOSITORY = Path(__file__).resolve().parents[1]
# IMGFEAT_MODEL_DIR when set (Spark ships this file alone to the executors), else the repository's models/.
MODELS = Path(os.environ.get("IMGFEAT_MODEL_DIR") or REPOSITORY / "models")
DETECTOR, DETECTOR_OUTPUTS = "ssd_mobilenetv2_coco_float.onnx", ["box_encodings", "class_scores"]
EMBEDDER, EMBEDDER_OUTPUTS = "efficientnet_lite0_embed.onnx", ["features"]  # not the classifier's logits
THRESHOLD, IOU, MAX_DETECTIONS, MARGIN = 0.3, 0.6, 20, 0.10
ENGINES = ("onnxruntime", "openvino-f32", "openvino", "openvino-int8")
# NNCF calibrates on the first photos of the shared sample (the photos the benchmarks run on: the
# quantisation ranges are those of the data timed, as a user would calibrate on their own photos).
CALIBRATION, CALIBRATION_PHOTOS = REPOSITORY.parent / "shared" / "data" / "imagenet-sample", 300
# Largest relative error (‖engine − onnxruntime‖ / ‖onnxruntime‖, per output and photo) that --check
# lets pass: f32 differs by summation order only (~1e-6); bf16 keeps 8 bits of mantissa (up to ~0.1,
# on the box encodings) and int8 rounds more; an engine that computes garbage is off by ~1.
TOLERANCE = {"openvino-f32": 1e-4, "openvino": 0.2, "openvino-int8": 0.3}
_worker = {}
# A loaded engine: detect(uint8 NHWC batch) -> (box encodings, class scores), embed(float NCHW
# batch) -> features, and the precision its floating-point layers run in.
Engine = namedtuple("Engine", "detect embed precision")


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


def decode(data):
    return ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")


def detector_input(image):
    """The SSD's input: the whole image resized to 300×300, RGB bytes, NHWC, a batch of one."""
    return np.asarray(image.resize((300, 300), Image.BILINEAR), dtype=np.uint8)[None]


def embedder_input(images):
    """EfficientNet-Lite0's input: each image resized to 224×224, (x − 127) / 128, NCHW."""
    batch = np.stack([np.asarray(im.resize((224, 224), Image.BILINEAR), dtype=np.float32) for im in images])
    return np.ascontiguousarray(((batch - 127.0) / 128.0).transpose(0, 3, 1, 2))


def onnxruntime_models():
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = lambda name: ort.InferenceSession(str(MODELS / name), options, providers=["CPUExecutionProvider"])
    detector, embedder = session(DETECTOR), session(EMBEDDER)
    return Engine(lambda x: detector.run(DETECTOR_OUTPUTS, {"normalized_input_image_tensor": x}),
                  lambda x: embedder.run(EMBEDDER_OUTPUTS, {"input": x})[0], "f32")


def openvino_models(engine):
    """The models on OpenVINO, set up as the onnxruntime sessions are: one inference thread without
    pinning (the processes are the parallelism; pinned, every process would pin its thread to the
    same first core), the latency hint (one stream, no batching behind the caller's back), and only
    the outputs imgfeat uses. Shapes are made static, the embedder compiled once per batch size the
    pipeline runs (1 and 2): OpenVINO runs the SSD ~20 % slower with the batch axis left dynamic
    (onnxruntime runs it no faster static)."""
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": 1, "ENABLE_CPU_PINNING": False, "PERFORMANCE_HINT": "LATENCY"}
    if engine == "openvino-f32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    detector, embedder = openvino_int8_models() if engine == "openvino-int8" else (
        openvino_model(DETECTOR, DETECTOR_OUTPUTS), openvino_model(EMBEDDER, EMBEDDER_OUTPUTS))

    def compiled(model, shape):
        model = model.clone()
        model.reshape({0: shape})
        return core.compile_model(model, "CPU", config)

    def runner(compiled_model):
        request = compiled_model.create_infer_request()
        return lambda x: request.infer({0: x}).to_tuple()

    detector = compiled(detector, [1, 300, 300, 3])
    embedders = {n: runner(compiled(embedder, [n, 3, 224, 224])) for n in (1, 2)}
    return Engine(runner(detector), lambda x: embedders[len(x)](x)[0],
                  detector.get_property("INFERENCE_PRECISION_HINT").to_string())


def openvino_model(file, outputs):
    """The ONNX model as an OpenVINO model that computes `outputs` alone."""
    import openvino as ov

    model = ov.Core().read_model(MODELS / file)
    return ov.Model([model.output(name) for name in outputs], model.get_parameters())


def calibration_photos():
    photos = sorted(p for p in CALIBRATION.iterdir() if p.is_file() and not p.name.startswith("."))[:CALIBRATION_PHOTOS]
    if len(photos) < CALIBRATION_PHOTOS:
        sys.exit(f"python_pipeline: int8 calibration needs {CALIBRATION_PHOTOS} photos in {CALIBRATION}, found {len(photos)}")
    return photos


def openvino_int8_paths():
    """Where the quantised detector and embedder are cached: named by a digest of what made them
    (the model file, the calibration photos' names, the NNCF and OpenVINO versions), so a change to
    any of them quantises again and a rerun does not. Imports neither: a process that forks workers
    should not carry them."""
    digest = hashlib.sha256(f"{[p.name for p in calibration_photos()]} {version('nncf')} {version('openvino')}".encode())
    paths = []
    for file in (DETECTOR, EMBEDDER):
        key = digest.copy()
        key.update((MODELS / file).read_bytes())
        paths.append(REPOSITORY / "target" / "openvino-int8" / f"{Path(file).stem}-{key.hexdigest()[:12]}.xml")
    return paths


def openvino_int8_models():
    """The detector and embedder quantised by NNCF (post-training, default preset: symmetric int8
    weights and activations), calibrated on CALIBRATION_PHOTOS photos preprocessed as the pipeline
    does (the embedder on whole images); loaded from the cache when there."""
    import nncf
    import openvino as ov

    models = []
    for path, file, outputs, preprocess in zip(openvino_int8_paths(), (DETECTOR, EMBEDDER), (DETECTOR_OUTPUTS, EMBEDDER_OUTPUTS),
                                               (detector_input, lambda image: embedder_input([image]))):
        if not path.exists():
            print(f"python_pipeline: quantising {file} with NNCF on {CALIBRATION_PHOTOS} photos of {CALIBRATION}",
                  file=sys.stderr)
            dataset = nncf.Dataset(calibration_photos(), lambda photo: preprocess(decode(photo.read_bytes())))
            quantized = nncf.quantize(openvino_model(file, outputs), dataset, subset_size=CALIBRATION_PHOTOS)
            path.parent.mkdir(parents=True, exist_ok=True)
            ov.save_model(quantized, path, compress_to_fp16=False)
        models.append(ov.Core().read_model(path))
    return models


def load_engine(engine):
    return onnxruntime_models() if engine == "onnxruntime" else openvino_models(engine)


def check(engine, loaded, files):
    """Fails (SystemExit) when `loaded` (engine `engine`) and onnxruntime disagree on the models'
    outputs for `files` by a relative error over TOLERANCE[engine]; returns the largest relative
    error per output otherwise. The embedder runs on batches of one and two images, as the pipeline
    runs it (OpenVINO compiles it for each)."""
    reference = onnxruntime_models()
    worst = {}
    for file in files:
        image = decode(Path(file).read_bytes())
        x, one = detector_input(image), embedder_input([image])
        two = embedder_input([image.transpose(Image.FLIP_LEFT_RIGHT), image])
        pairs = list(zip(DETECTOR_OUTPUTS, loaded.detect(x), reference.detect(x))) + [
            ("features", loaded.embed(one), reference.embed(one)),
            ("features, batch of 2", loaded.embed(two), reference.embed(two))]
        for name, got, expected in pairs:
            error = float(np.linalg.norm(got - expected) / np.linalg.norm(expected))
            worst[name] = max(worst.get(name, 0.0), error)
    if max(worst.values()) > TOLERANCE[engine]:
        sys.exit(f"python_pipeline: {engine} ({loaded.precision}) disagrees with onnxruntime on {len(files)} photos: "
                 f"largest relative errors {worst}, tolerance {TOLERANCE[engine]}")
    return worst


def init_worker(engine="onnxruntime"):
    _worker.update(models=load_engine(engine), anchors=anchors(), projection=load_projection(256))


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
        image = decode(data)
    except Exception as error:  # a bad file is a failed row, as in imgfeat
        return {"error": str(error)}
    w, h = image.size
    models, a = _worker["models"], _worker["anchors"]
    encodings, scores = models.detect(detector_input(image))
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
    features = models.embed(embedder_input(images))
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
    parser.add_argument("--engine", choices=ENGINES, default="onnxruntime")
    parser.add_argument("--check", action="store_true",
                        help="time nothing: compare the engine's model outputs with onnxruntime's on the folder's "
                             "first 4 photos and fail beyond the engine's tolerance")
    args = parser.parse_args()
    files = sorted(str(p) for p in Path(args.folder).rglob("*") if p.is_file() and not p.name.startswith("."))
    if args.check:
        loaded = load_engine(args.engine)
        print(json.dumps({"engine": args.engine, "precision": loaded.precision,
                          "largest_relative_error": check(args.engine, loaded, files[:4])}))
        return
    if args.engine == "openvino-int8" and not all(path.exists() for path in openvino_int8_paths()):
        # NNCF runs OpenVINO's thread pool, which the workers forked after it could inherit broken:
        # calibrate in a process of its own and fork the workers from this clean one.
        calibrator = Process(target=openvino_int8_models)
        calibrator.start()
        calibrator.join()
        if calibrator.exitcode:
            sys.exit("python_pipeline: quantising with NNCF failed")
    with Pool(args.threads, initializer=init_worker, initargs=(args.engine,)) as pool:
        pool.map(ready, range(args.threads))  # workers have loaded their models
        started = time.perf_counter()
        rows = pool.map(extract, files, chunksize=8)
        seconds = time.perf_counter() - started
    failed = sum("error" in r for r in rows)
    print(json.dumps({"images": len(files), "ok": len(files) - failed, "failed": failed,
                      "detected": sum(r.get("detected", False) for r in rows), "seconds": round(seconds, 3)}))


if __name__ == "__main__":
    sys.exit(main())
