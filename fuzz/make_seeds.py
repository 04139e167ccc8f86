#!/usr/bin/env python3
"""Writes the fuzz seed corpora under fuzz/seeds/ (committed; rerun to regenerate).

- onnx_load/: a tiny torchvision MobileNetV2 (width 0.1, 2 classes) exported with BatchNorm kept
  and folded, the same with anonymous tensor names, and a few-node non-classifier graph.
- image_decode/: one small image per supported format, each behind the 13-byte parameter
  prefix the harness reads (mode, size, a, b, c, seed), plus a raw-pixel case.
The saved_model/ seed (a .tvm) is written by Rust:
`cargo test --release --test fuzz_regressions -- --ignored write_saved_model_seed`, and so are
the truncation seeds image_decode/cut_* (the damaged-image fixtures cut at every 1/16):
`cargo test --release --test fuzz_regressions -- --ignored write_truncation_seeds`.

Needs torch, torchvision, onnx and Pillow.
"""
import io
import os

import onnx
import torch
import torchvision
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def export(model, fold):
    buf = io.BytesIO()
    torch.onnx.export(
        model.eval(), torch.zeros(1, 3, 32, 32), buf, input_names=["input"], output_names=["logits"],
        opset_version=17, do_constant_folding=fold,
        training=torch.onnx.TrainingMode.EVAL,
        dynamo=False)
    return buf.getvalue()


def anonymise(data):
    m = onnx.load_from_string(data)
    names = {}
    for i, init in enumerate(m.graph.initializer):
        names[init.name] = f"t{i}"
        init.name = names[init.name]
    for node in m.graph.node:
        node.input[:] = [names.get(x, x) for x in node.input]
    return m.SerializeToString()


def main():
    torch.manual_seed(0)
    tiny = torchvision.models.mobilenet_v2(width_mult=0.1, num_classes=2)
    kept = export(tiny, fold=False)
    write("onnx_load", "mobilenet_v2_w010_bn.onnx", kept)
    write("onnx_load", "mobilenet_v2_w010_folded.onnx", export(tiny, fold=True))
    write("onnx_load", "mobilenet_v2_w010_anonymous.onnx", anonymise(kept))
    small = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU6(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
    write("onnx_load", "conv_bn_linear.onnx", export(small, fold=False))
    write("onnx_load", "empty", b"")

    prefixes = [bytes([m, 24, 7, 9, 11]) + (1234 + m).to_bytes(8, "little") for m in (0, 2, 4, 6, 8, 14)]
    img = Image.new("RGB", (19, 13))
    img.putdata([((x * 13) % 256, (y * 19) % 256, (x * y) % 256) for y in range(13) for x in range(19)])
    formats = [("png", "PNG", {}), ("jpg", "JPEG", {"quality": 80}), ("gif", "GIF", {}),
               ("bmp", "BMP", {}), ("tif", "TIFF", {}), ("webp", "WEBP", {"lossless": True}),
               ("ppm", "PPM", {})]
    for i, (ext, fmt, kw) in enumerate(formats):
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        write("image_decode", f"rgb.{ext}", prefixes[i % len(prefixes)] + buf.getvalue())
    grey = io.BytesIO()
    img.convert("L").save(grey, "PNG")
    write("image_decode", "grey.png", prefixes[5] + grey.getvalue())
    write("image_decode", "raw_pixels", bytes([9, 5, 7, 3, 40]) + bytes(8) + bytes(range(256)))


if __name__ == "__main__":
    main()
