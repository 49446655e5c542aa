"""How close each model runs to this machine's GEMM peak, and to onnxruntime: the models' FLOPs per
image (counted from the ONNX graphs with concrete shapes) against a measured single-thread SGEMM rate.

    python benches/model_flops.py --native-ms 13.1 6.9 --tract-ms 29.1 20.5 [--int8-ms 4.0 2.0]

The times are imgfeat's per image on one thread, detector then embedder (from `cargo bench --bench
executor`; scripts/bench-models.sh passes them); the script times onnxruntime and OpenVINO (f32, its
default precision on this CPU, and int8 quantised by NNCF) on the same models in the same run,
computing only the outputs imgfeat uses; OpenVINO runs as benches/python_pipeline.py runs it, after
a check that its outputs agree with onnxruntime's on real photos. GEMM peak: NumPy's OpenBLAS SGEMM
on 2048² matrices, one thread.
Counts: a multiply-add is 2 FLOPs; convolutions and matrix products only (element-wise ops and pools
are under 2 % of the total on these models).
"""
import argparse
import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"
for _name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):  # set on some machines; they slow a current OpenBLAS
    os.environ.pop(_name, None)

import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import python_pipeline  # noqa: E402  (benches/, this script's folder)
from onnx import shape_inference  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "models"


def flops(path, input_shape):
    model = onnx.load(str(path))
    graph = model.graph
    graph.input[0].type.tensor_type.ClearField("shape")
    for d in input_shape:
        graph.input[0].type.tensor_type.shape.dim.add().dim_value = d
    del graph.value_info[:]
    model = shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input)}
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    total = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            w = weights.get(node.input[1]) or shapes.get(node.input[1])
            out = shapes[node.output[0]]
            total += 2 * int(np.prod(out)) * int(np.prod(w[1:]))  # per output value: (Cin/group)·kh·kw MACs
        elif node.op_type in ("MatMul", "Gemm"):
            a = shapes.get(node.input[0]) or weights.get(node.input[0])
            b = weights.get(node.input[1]) or shapes.get(node.input[1])
            total += 2 * int(np.prod(a)) * b[-1]
    return total


def sgemm_peak(n=2048, repeats=5):
    a = np.random.rand(n, n).astype(np.float32)
    b = np.random.rand(n, n).astype(np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best


def _timed(f):
    started = time.perf_counter()
    f()
    return time.perf_counter() - started


def median_ms(f):
    for _ in range(3):
        f()
    return 1000 * np.median([_timed(f) for _ in range(30)])


def ort_ms(path, feed, outputs):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return median_ms(lambda: session.run(outputs, feed))


MODELS_MEASURED = [
    ("SSD MobileNetV2 (COCO)", "ssd_mobilenetv2_coco_float.onnx", [1, 300, 300, 3], np.uint8,
     "normalized_input_image_tensor", ["box_encodings", "class_scores"]),
    ("EfficientNet-Lite0", "efficientnet_lite0_embed.onnx", [1, 3, 224, 224], np.float32, "input", ["features"]),
]


def ort_ms_per_model(quantized=False):
    """onnxruntime's ms per image for each model, in MODELS_MEASURED's order; `quantized`: after
    onnxruntime's own dynamic int8 quantisation (quantize_dynamic: s8 weights, u8 activations
    quantised at run time, as imgfeat's int8 does)."""
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    times = []
    with tempfile.TemporaryDirectory() as scratch:
        for _, file, shape, dtype, name, outputs in MODELS_MEASURED:
            feed = {name: (np.random.rand(*shape) * 255).astype(dtype)}
            path = MODELS / file
            if quantized:
                path = Path(scratch) / file
                quantize_dynamic(MODELS / file, path, weight_type=QuantType.QInt8)
            times.append(ort_ms(path, feed, outputs))
    return times


OPENVINO_ENGINES = ("openvino-f32", "openvino", "openvino-int8")


def openvino_ms_per_model(engine):
    """OpenVINO's ms per image for each model, in MODELS_MEASURED's order, and the precision of its
    floating-point layers: the models as benches/python_pipeline.py loads them for `engine` (one
    thread, latency hint, static shapes), on the same inputs as onnxruntime, once their outputs have
    passed python_pipeline's check against onnxruntime on 4 photos."""
    loaded = python_pipeline.load_engine(engine)
    python_pipeline.check(engine, loaded, python_pipeline.calibration_photos()[:4])
    times = []
    for run, (_, _, shape, dtype, _, _) in zip((loaded.detect, loaded.embed), MODELS_MEASURED):
        x = (np.random.rand(*shape) * 255).astype(dtype)
        times.append(median_ms(lambda: run(x)))
    return times, loaded.precision


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure-ort", action="store_true",
                        help="only time onnxruntime and print its ms per image for both models")
    parser.add_argument("--native-ms", type=float, nargs=2, metavar=("DETECTOR", "EMBEDDER"),
                        help="imgfeat's native executor, ms per image")
    parser.add_argument("--tract-ms", type=float, nargs=2, metavar=("DETECTOR", "EMBEDDER"),
                        help="tract, ms per image")
    parser.add_argument("--bf16-ms", type=float, nargs=2, metavar=("DETECTOR", "EMBEDDER"),
                        help="imgfeat's native executor in bf16, ms per image (absent where the CPU lacks AVX-512 BF16)")
    parser.add_argument("--int8-ms", type=float, nargs=2, metavar=("DETECTOR", "EMBEDDER"),
                        help="imgfeat's native executor in int8, ms per image")
    parser.add_argument("--ort-ms-earlier", type=float, nargs=2, metavar=("DETECTOR", "EMBEDDER"),
                        help="onnxruntime timed before imgfeat's runs (--measure-ort): the faster of the two "
                             "timings is the baseline, so a slower machine during one of them does not flatter imgfeat")
    parser.add_argument("--measure-openvino", action="store_true",
                        help="only time OpenVINO and print its ms per image for both models, f32 then its default "
                             "precision then int8")
    parser.add_argument("--openvino-ms-earlier", type=float, nargs=6,
                        metavar=("F32_DET", "F32_EMB", "DEFAULT_DET", "DEFAULT_EMB", "INT8_DET", "INT8_EMB"),
                        help="OpenVINO timed before imgfeat's runs (--measure-openvino): as for onnxruntime, each "
                             "engine's faster timing counts")
    args = parser.parse_args()
    if args.measure_ort:
        print(" ".join(f"{ms:.3f}" for ms in ort_ms_per_model()))
        return
    if args.measure_openvino:
        print(" ".join(f"{ms:.3f}" for engine in OPENVINO_ENGINES for ms in openvino_ms_per_model(engine)[0]))
        return
    if args.native_ms is None or args.tract_ms is None:
        parser.error("--native-ms and --tract-ms are required")
    peak = sgemm_peak()
    ort_later = ort_ms_per_model()
    ort_int8 = ort_ms_per_model(quantized=True) if args.int8_ms else None
    earlier = args.ort_ms_earlier or ort_later
    openvino_later, precisions = {}, {}
    for engine in OPENVINO_ENGINES:
        openvino_later[engine], precisions[engine] = openvino_ms_per_model(engine)
    openvino_earlier = dict(zip(OPENVINO_ENGINES, np.reshape(args.openvino_ms_earlier, (3, 2)))) \
        if args.openvino_ms_earlier else openvino_later
    openvino = {engine: np.minimum(openvino_earlier[engine], openvino_later[engine]) for engine in OPENVINO_ENGINES}
    print(f"SGEMM peak, one thread (OpenBLAS via NumPy, 2048²): {peak / 1e9:.0f} GFLOP/s")
    print()
    print("| model | GFLOP per image | engine | ms per image | GFLOP/s | % of peak | × onnxruntime |")
    print("|---|---|---|---|---|---|---|")
    for index, (label, file, shape, _, _, _) in enumerate(MODELS_MEASURED):
        count = flops(MODELS / file, shape)
        theirs_ms = min(earlier[index], ort_later[index])
        # (engine, ms, whether it computes in f32)
        engines = [("onnxruntime (baseline)", theirs_ms, True), ("imgfeat native executor", args.native_ms[index], True),
                   ("tract 0.23", args.tract_ms[index], True),
                   ("OpenVINO f32", openvino["openvino-f32"][index], True),
                   (f"OpenVINO default ({precisions['openvino']})", openvino["openvino"][index],
                    precisions["openvino"] == "f32")]
        if args.bf16_ms:
            engines.append(("imgfeat native executor, bf16", args.bf16_ms[index], False))
        if args.int8_ms:
            engines += [("imgfeat native executor, int8", args.int8_ms[index], False),
                        ("onnxruntime int8 (quantize_dynamic)", ort_int8[index], False)]
        engines.append((f"OpenVINO int8 (NNCF; other layers {precisions['openvino-int8']})",
                        openvino["openvino-int8"][index], False))
        for engine, ms, f32 in engines:
            rate = count / (ms / 1000)
            # int8 and bf16 multiply-adds are not f32 FLOPs: no share of the SGEMM peak for them.
            share = f"{100 * rate / peak:.0f} %" if f32 else "—"
            print(f"| {label} | {count / 1e9:.2f} | {engine} | {ms:.1f} | {rate / 1e9:.0f} | {share} "
                  f"| {theirs_ms / ms:.2f} |")
    print()
    timings = "; ".join(f"{label}: {a:.2f} then {b:.2f} ms" for (label, *_), a, b in zip(MODELS_MEASURED, earlier, ort_later))
    print(f"onnxruntime was timed before and after imgfeat's runs ({timings}); the baseline is the faster of the two.")
    print()
    names = {"openvino-f32": "f32", "openvino": f"default, {precisions['openvino']}", "openvino-int8": "int8"}
    timings = "; ".join(f"{names[engine]}: " + ", ".join(f"{a:.2f} then {b:.2f} ms ({model})" for a, b, model in
                                                  zip(openvino_earlier[engine], openvino_later[engine], ("SSD", "EfficientNet")))
                        for engine in OPENVINO_ENGINES)
    print(f"OpenVINO was timed likewise ({timings}); the faster of each pair counts.")
    ratios = lambda ours, engine: " / ".join(f"{theirs / mine:.2f}×" for mine, theirs in zip(ours, openvino[engine]))
    against = (f"imgfeat against OpenVINO (detector / embedder, OpenVINO's ms over imgfeat's): native f32 × OpenVINO f32 "
               f"{ratios(args.native_ms, 'openvino-f32')}, × OpenVINO default ({precisions['openvino']}) "
               f"{ratios(args.native_ms, 'openvino')}")
    if args.bf16_ms:
        against += f"; native bf16 × OpenVINO default ({precisions['openvino']}) {ratios(args.bf16_ms, 'openvino')}"
    if args.int8_ms:
        against += f"; native int8 × OpenVINO int8 {ratios(args.int8_ms, 'openvino-int8')}"
    print(f"{against}.")


if __name__ == "__main__":
    main()
