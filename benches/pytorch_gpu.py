#!/usr/bin/env python3
"""PyTorch CUDA reference for `device_check --bench` (scripts/gpu_check.sh, BENCHMARKS.md).

The same shapes and steps as examples/device_check.rs: torchvision mobilenet_v2 and resnet18
(random weights), input 224;
  forward     eval mode, torch.no_grad(), batch 1 / 32 / 128 (BatchNorm is not folded: PyTorch
              eager has no such pass; cuDNN runs BN as its own kernel);
  train step  model.train(), a fresh 2-class head, zero_grad + forward + cross-entropy +
              backward + Adam(lr 1e-3) step, batch 32, everything trainable.
Median of --repeats timed runs after 3 untimed ones, each ended by torch.cuda.synchronize().
PyTorch's defaults otherwise (cudnn.benchmark off, TF32 for cuDNN convolutions on, for matmul off);
--precision bf16 / f16 runs under torch.autocast.

Usage: python3 benches/pytorch_gpu.py [--repeats 20] [--precision f32|bf16|f16] [--json PATH]
"""
import argparse
import json
import statistics
import time

import torch
import torchvision


def median_ms(fn, repeats):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def build(name, classes=1000):
    if name == "mobilenet_v2":
        return torchvision.models.mobilenet_v2(num_classes=classes)
    return torchvision.models.resnet18(num_classes=classes)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--precision", choices=["f32", "bf16", "f16"], default="f32")
    ap.add_argument("--forward-batches", default="1,32,128")
    ap.add_argument("--train-batch", type=int, default=32)
    ap.add_argument("--json")
    a = ap.parse_args()
    dev = torch.device("cuda")
    dtype = {"f32": None, "bf16": torch.bfloat16, "f16": torch.float16}[a.precision]

    def autocast():
        return torch.autocast("cuda", dtype=dtype, enabled=dtype is not None)

    rows = []
    print("| model | what | batch | median ms | images/s |\n|---|---|---|---|---|")
    for name in ["mobilenet_v2", "resnet18"]:
        model = build(name).to(dev).eval()
        for batch in [int(b) for b in a.forward_batches.split(",")]:
            x = torch.randn(batch, 3, 224, 224, device=dev)

            def fwd():
                with torch.no_grad(), autocast():
                    model(x)

            rows.append((name, "forward", batch, median_ms(fwd, a.repeats)))
            print("| %s | %s | %d | %.2f | %.0f |" % (*rows[-1], batch * 1e3 / rows[-1][3]))
        model = build(name, classes=2).to(dev).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x = torch.randn(a.train_batch, 3, 224, 224, device=dev)
        y = torch.arange(a.train_batch, device=dev) % 2
        scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)

        def step():
            opt.zero_grad(set_to_none=True)
            with autocast():
                loss = torch.nn.functional.cross_entropy(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            loss.item()

        rows.append((name, "train step (full)", a.train_batch, median_ms(step, a.repeats)))
        print("| %s | %s | %d | %.2f | %.0f |" % (*rows[-1], a.train_batch * 1e3 / rows[-1][3]))
    meta = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0), "precision": a.precision,
            "cudnn": torch.backends.cudnn.version()}
    print(meta)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"meta": meta, "rows": [dict(zip(["model", "what", "batch", "median_ms"], r)) for r in rows]},
                      f, indent=2)


if __name__ == "__main__":
    main()
