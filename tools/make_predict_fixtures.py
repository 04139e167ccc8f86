#!/usr/bin/env python3
"""Makes the ImageNet class-name list and the `predict` fixtures of transfer-vision.

Run from the crate root with the project's venv (torchvision, onnxruntime, Pillow, numpy):

    /work/venv/bin/python tools/make_predict_fixtures.py

It writes:

- `assets/imagenet_classes.txt`: the 1000 ImageNet-1k class names in torchvision's order (sorted
  WordNet ids, 0 = tench), one per line, taken from
  `torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]` (the same list for
  every IMAGENET1K weight of torchvision). `src/imagenet.rs` embeds this file.
- `tests/fixtures/predict/*.png`: a few photos of `../shared/datasets/imagenet_samples`, resized
  (shorter side 224, Pillow bilinear, antialiased) and center-cropped to 224 x 224. Two stay RGB,
  one is saved greyscale (`L`) and one as a 256-colour palette PNG (`P`), which keeps the folder
  small and exercises the decoder's conversions to RGB.
- `tests/fixtures/predict/expected.json`: for each PNG, onnxruntime's top-5 class indices and
  softmax probabilities with `../shared/weights/mobilenet_v2_tf_imagenet.onnx`, the PNG's own
  pixels as input (decoded and converted to RGB by Pillow, no resize, no crop) scaled
  `p / 127.5 - 1`, NCHW: what `predict --resize none --crop none` must reproduce
  (`tests/predict_cli.rs`, tolerance 1e-4).

The script is deterministic: rerunning it gives the same files.
"""

import hashlib
import json
import os
import sys

import numpy as np
import onnxruntime as ort
import torchvision
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared")
SAMPLES = os.path.join(SHARED, "datasets", "imagenet_samples")
WEIGHTS = os.path.join(SHARED, "weights", "mobilenet_v2_tf_imagenet.onnx")
OUT = os.path.join(ROOT, "tests", "fixtures", "predict")
CLASSES = os.path.join(ROOT, "assets", "imagenet_classes.txt")

# (source image, fixture name, PIL mode of the saved PNG)
PICKS = [
    ("images/n01440764_tench.JPEG", "tench.png", "RGB"),
    ("images/n02099601_golden_retriever.JPEG", "golden_retriever.png", "RGB"),
    ("images/n04254680_soccer_ball.JPEG", "soccer_ball_grey.png", "L"),
    ("images/n04285008_sports_car.JPEG", "sports_car_palette.png", "P"),
]
SIZE = 224
TOP = 5


def write_classes():
    names = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    assert len(names) == 1000 and len(set(names)) == 1000, "expected 1000 distinct names"
    assert all(n == n.strip() and "\n" not in n for n in names)
    os.makedirs(os.path.dirname(CLASSES), exist_ok=True)
    with open(CLASSES, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(names) + "\n")
    return names


def square_224(path):
    """Shorter side to 224 (int(224 * long / short) for the other, Pillow BILINEAR), centre crop."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    if w <= h:
        size = (SIZE, int(SIZE * h / w))
    else:
        size = (int(SIZE * w / h), SIZE)
    im = im.resize(size, Image.BILINEAR)
    w, h = im.size
    left, top = int(round((w - SIZE) / 2.0)), int(round((h - SIZE) / 2.0))
    return im.crop((left, top, left + SIZE, top + SIZE))


def main():
    names = write_classes()
    os.makedirs(OUT, exist_ok=True)
    session = ort.InferenceSession(WEIGHTS, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    images = []
    for src, name, mode in PICKS:
        im = square_224(os.path.join(SAMPLES, src))
        if mode == "L":
            im = im.convert("L")
        elif mode == "P":
            im = im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        dst = os.path.join(OUT, name)
        im.save(dst, optimize=True)
        # Read back what was written: the PNG's pixels are the reference input.
        pixels = np.asarray(Image.open(dst).convert("RGB"), dtype=np.float32)
        assert pixels.shape == (SIZE, SIZE, 3)
        x = (pixels / 127.5 - 1.0).transpose(2, 0, 1)[None].astype(np.float32)
        logits = session.run(None, {input_name: x})[0][0].astype(np.float64)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        order = sorted(range(len(p)), key=lambda i: (-p[i], i))[:TOP]
        images.append(
            {
                "file": name,
                "source": os.path.relpath(os.path.join(SAMPLES, src), os.path.join(SHARED)),
                "mode": mode,
                "indices": order,
                "names": [names[i] for i in order],
                "probabilities": [float(np.float32(p[i])) for i in order],
                "logits": [float(np.float32(logits[i])) for i in order],
            }
        )
        print(f"{name:26s} {os.path.getsize(dst):7d} bytes  top-1 {names[order[0]]} ({p[order[0]]:.4f})")
    with open(WEIGHTS, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    expected = {
        "weights": "weights/mobilenet_v2_tf_imagenet.onnx",
        "weights_sha256": sha,
        "preprocessing": "PNG decoded by Pillow, convert('RGB'), no resize, no crop, p / 127.5 - 1, NCHW",
        "reference": f"onnxruntime {ort.__version__} CPUExecutionProvider; softmax in float64",
        "images": images,
    }
    with open(os.path.join(OUT, "expected.json"), "w", encoding="utf-8", newline="\n") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"total {total} bytes in {os.path.relpath(OUT, ROOT)}")
    if total >= 300_000:
        sys.exit(f"fixtures are {total} bytes, keep them under 300 KB")


if __name__ == "__main__":
    main()
