#!/usr/bin/env python3
"""torchvision DataLoader reference for benches/data_loading.rs.

Images per second through decode + ImageNet train transforms (RandomResizedCrop 224,
RandomHorizontalFlip, ToTensor, Normalize) on ../shared/datasets/hymenoptera_data/train
(244 images; torchvision skips the .gif), batch 16, with 0, 1 and 2 DataLoader workers.
Each configuration runs a warm-up epoch, then reports the median of EPOCHS timed epochs.

Usage: python3 benches/torchvision_loading.py [DATA_DIR] [--epochs N] [--threads T]
Needs torch and torchvision. Pin the same thread count as the Rust bench for a fair comparison
(the defaults below use 2 intra-op threads, like the 2-core machine the reference numbers
came from: 466 images/s with 0 workers, 560 with 2).
"""
import argparse
import os
import statistics
import time

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms as T

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DIR = os.path.join(HERE, "..", "..", "shared", "datasets", "hymenoptera_data", "train")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", nargs="?", default=DEFAULT_DIR)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tf = T.Compose([
        T.RandomResizedCrop(224),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    ds = datasets.ImageFolder(args.data, tf)
    print(f"{args.data}: {len(ds)} images, classes {ds.classes}")
    print(f"torch {torch.__version__}, threads {args.threads}, batch {args.batch}")
    for workers in (0, 1, 2):
        loader = DataLoader(ds, batch_size=args.batch, shuffle=True, num_workers=workers,
                            persistent_workers=workers > 0)
        for _ in loader:  # warm-up epoch (starts the workers)
            pass
        times = []
        for _ in range(args.epochs):
            t0 = time.perf_counter()
            n = 0
            for x, y in loader:
                n += x.shape[0]
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        print(f"workers {workers}: {n / med:7.1f} images/s (median of {args.epochs} epochs, {med * 1000:.0f} ms/epoch)")


if __name__ == "__main__":
    main()
