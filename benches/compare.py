#!/usr/bin/env python3
"""One run, one machine: this crate against PyTorch, onnxruntime and tract, one table.

Runs, in this order and with the same thread count:
  1. benches/pytorch_reference.py --only forward --only train (PyTorch eager and onnxruntime on
     torchvision's models, exported to ONNX per input size and kept for step 3);
  2. cargo bench --bench forward (folded inference, flex) and --bench train_step (criterion
     medians, read from target/criterion/*/new/estimates.json);
  3. tract (benches/tract, its own crate so the main build never compiles it) on the same ONNX
     files.
Then prints one markdown table of medians (ms) and ratios (this crate's time / theirs: below
1.0 means this crate is faster), which is what BENCHMARKS.md records.

  /work/venv/bin/python benches/compare.py [--threads 2] [--quick] [--json PATH]

Needs the venv of benches/README.md (torch, torchvision, onnxruntime, onnx, numpy) and cargo.
The machine should be otherwise idle (the script prints the load average before and after).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("mobilenet_v2", "resnet18")
SIZES = (160, 224)
BATCHES = (1, 16)
REGIMES = (("head", "head_only"), ("last_blocks", "last_blocks"), ("full", "full"))


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(cmd, env=None, capture=False):
    log("$ " + " ".join(cmd))
    full_env = dict(os.environ, **(env or {}))
    result = subprocess.run(cmd, cwd=ROOT, env=full_env, text=True,
                            stdout=subprocess.PIPE if capture else sys.stderr)
    if result.returncode != 0:
        sys.exit(f"compare.py: {' '.join(cmd)} failed with exit code {result.returncode}")
    return result.stdout


def criterion_median_ms(group, function, since):
    """Median of a criterion benchmark run after `since` (seconds since the epoch)."""
    path = os.path.join(ROOT, "target", "criterion", group, function, "new", "estimates.json")
    if not os.path.exists(path) or os.path.getmtime(path) < since:
        sys.exit(f"compare.py: no fresh criterion result at {path}")
    with open(path) as f:
        return json.load(f)["median"]["point_estimate"] / 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2,
                    help="threads for every engine (RAYON_NUM_THREADS, torch, onnxruntime, tract)")
    ap.add_argument("--quick", action="store_true", help="short runs, a smoke test")
    ap.add_argument("--json", metavar="PATH", help="write every median to this JSON file")
    args = ap.parse_args()

    load_start = os.getloadavg()
    started = time.time()
    onnx_dir = tempfile.mkdtemp(prefix="tv_compare_onnx_")
    py_json = os.path.join(onnx_dir, "pytorch.json")

    # 1. PyTorch and onnxruntime.
    py_cmd = [sys.executable, "benches/pytorch_reference.py", "--only", "forward", "--only", "train",
              "--threads", str(args.threads), "--keep-onnx", onnx_dir, "--json", py_json]
    if args.quick:
        py_cmd.append("--quick")
    run(py_cmd)
    with open(py_json) as f:
        py = json.load(f)
    theirs = {}
    for row in py["results"]:
        if row["section"] == "forward":
            theirs[("forward", row["model"], row["input"], row["batch"], row["engine"])] = row["median_ms"]
        elif row["section"] == "train":
            theirs[("train", row["model"], row["regime"], row["engine"])] = row["median_ms"]

    # 2. This crate.
    env = {"RAYON_NUM_THREADS": str(args.threads)}
    if args.quick:
        env["BENCH_QUICK"] = "1"
    run(["cargo", "bench", "--bench", "forward", "--", "forward_fused/flex"], env=env)
    run(["cargo", "bench", "--bench", "train_step"], env=env)
    ours = {}
    for model in MODELS:
        for size in SIZES:
            for batch in BATCHES:
                ours[("forward", model, size, batch)] = criterion_median_ms(
                    "forward_fused_flex", os.path.join(model, f"b{batch}_{size}"), started)
        for regime, function in REGIMES:
            ours[("train", model, regime)] = criterion_median_ms(f"train_step_{model}", function, started)

    # 3. tract, on the files step 1 exported.
    specs = [f"{m}={s}={os.path.join(onnx_dir, f'{m}_{s}.onnx')}" for m in MODELS for s in SIZES]
    tract_cmd = ["cargo", "run", "--release", "--quiet", "--manifest-path", "benches/tract/Cargo.toml",
                 "--", "--threads", str(args.threads), "--repeats", "3" if args.quick else "10",
                 "--warmup", "1" if args.quick else "3", *specs]
    for line in run(tract_cmd, capture=True).splitlines():
        row = json.loads(line)
        theirs[("forward", row["model"], row["size"], row["batch"], "tract")] = row["median_ms"]

    load_end = os.getloadavg()
    meta = dict(py["meta"], rust_threads=args.threads, machine=platform.machine(),
                load_start=load_start, load_end=load_end, wall_s=time.time() - started)

    def fmt(v):
        return "–" if v is None else (f"{v:,.1f}" if v < 100 else f"{v:,.0f}")

    def ratio(a, b):
        return "–" if a is None or b is None else f"{a / b:.2f}×"

    lines = [f"{meta['cpu']} ({meta['cores']} cores), {args.threads} threads everywhere; "
             f"PyTorch {meta['torch']}, onnxruntime {meta['onnxruntime']}, tract 0.21; "
             f"load {load_start[0]:.2f} → {load_end[0]:.2f}; {time.strftime('%Y-%m-%d')}",
             "",
             "| model | input | batch | this crate | PyTorch | onnxruntime | tract | ÷ PyTorch | ÷ onnxruntime | ÷ tract |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    rows = []
    for model in MODELS:
        for size in SIZES:
            for batch in BATCHES:
                mine = ours[("forward", model, size, batch)]
                pt, ort, tr = (theirs.get(("forward", model, size, batch, e)) for e in ("pytorch", "onnxruntime", "tract"))
                rows.append(dict(section="forward", model=model, input=size, batch=batch, ours=mine,
                                 pytorch=pt, onnxruntime=ort, tract=tr))
                lines.append(f"| {model} | {size} | {batch} | {fmt(mine)} | {fmt(pt)} | {fmt(ort)} | {fmt(tr)} | "
                             f"{ratio(mine, pt)} | {ratio(mine, ort)} | {ratio(mine, tr)} |")
    lines += ["", "| model | training step (batch 16, 224) | this crate | PyTorch | ÷ PyTorch |", "|---|---|---|---|---|"]
    for model in MODELS:
        for regime, _ in REGIMES:
            mine = ours[("train", model, regime)]
            pt = theirs.get(("train", model, regime, "pytorch"))
            rows.append(dict(section="train", model=model, regime=regime, ours=mine, pytorch=pt))
            lines.append(f"| {model} | {regime} | {fmt(mine)} | {fmt(pt)} | {ratio(mine, pt)} |")
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
        log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
