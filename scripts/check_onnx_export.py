#!/usr/bin/env python3
"""Checks an ONNX file exported by transfer-vision against the crate's own logits.

    cargo run --release --example export_check -- --model RUN/model.tvm --data DATA \
        --onnx OUT.onnx --out DIR
    python3 scripts/check_onnx_export.py --onnx OUT.onnx --dir DIR [--tol 1e-4]

Runs onnxruntime (CPU) on DIR/inputs.npy ([N, 3, H, W] float32) with the exported file, in
batches of --batch (the batch dimension of the file is symbolic), and compares the result with
DIR/logits.npy ([N, C] float32, the crate's logits). Prints the file's metadata, max |diff|,
max |logit|, their ratio and how often the top-1 classes agree; exits 1 when the ratio exceeds
--tol (or the shapes differ), 2 when a file cannot be read. Needs numpy and onnxruntime.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", required=True, type=Path, help="the exported ONNX file")
    parser.add_argument("--dir", required=True, type=Path,
                        help="folder with inputs.npy and logits.npy (export_check's --out)")
    parser.add_argument("--tol", type=float, default=1e-4,
                        help="largest max|diff| / max|logit| accepted (default 1e-4)")
    parser.add_argument("--batch", type=int, default=16, help="images per onnxruntime run")
    args = parser.parse_args()

    try:
        inputs = np.load(args.dir / "inputs.npy")
        expected = np.load(args.dir / "logits.npy")
        session = ort.InferenceSession(str(args.onnx), providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - any unreadable input is the same failure
        print(f"error: {e}", file=sys.stderr)
        return 2

    meta = session.get_modelmeta()
    props = meta.custom_metadata_map
    names = json.loads(props["class_names"]) if "class_names" in props else None
    print(f"{args.onnx}: producer {meta.producer_name}, model {props.get('model')}, "
          f"classes {names}")
    print(f"preprocessing: {props.get('preprocessing')}")
    inp = session.get_inputs()[0]
    out = session.get_outputs()[0]
    print(f"input {inp.name} {inp.shape}, output {out.name} {out.shape}")

    rows = []
    for start in range(0, len(inputs), args.batch):
        rows.append(session.run([out.name], {inp.name: inputs[start:start + args.batch]})[0])
    got = np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)
    if got.shape != expected.shape:
        print(f"FAIL: onnxruntime gives {got.shape}, the crate {expected.shape}")
        return 1

    diff = float(np.abs(got - expected).max())
    scale = float(np.abs(expected).max())
    ratio = diff / scale if scale > 0 else float("inf")
    agree = int((got.argmax(1) == expected.argmax(1)).sum())
    print(f"{len(got)} images: max |diff| {diff:.3e}, max |logit| {scale:.3e}, "
          f"max |diff| / max |logit| {ratio:.3e} (tolerance {args.tol:g}); "
          f"top-1 agrees on {agree}/{len(got)}")
    if ratio > args.tol:
        print("FAIL")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
