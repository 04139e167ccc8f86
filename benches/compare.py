#!/usr/bin/env python3
"""One run, one machine: this crate against PyTorch, onnxruntime and tract, one table.

Runs, in this order and with the same thread count:
  1. benches/pytorch_reference.py --only forward --only train (PyTorch eager and onnxruntime on
     torchvision's models, exported to ONNX per input size and kept for step 3);
  2. cargo bench --bench forward (folded inference, flex) and --bench train_step (criterion
     medians, read from $CARGO_TARGET_DIR or target/, criterion/*/new/estimates.json);
  3. tract (benches/tract, its own crate so the main build never compiles it) on the same ONNX
     files, one process per model: a model tract cannot load or run reads n/a;
  4. with resnet18 among the models, its convolutions one by one (benches/conv_layers.json):
     pytorch_reference.py --only conv_layers and cargo bench --bench conv_layers.
Then prints markdown tables of medians (ms) and ratios (this crate's time / theirs: below
1.0 means this crate is faster), which is what BENCHMARKS.md records. The convolutions' table
ends with their count-weighted sums beside the full training step: how much of the step's gap
lies in the convolutions and how much around them (each engine's convolutions timed alone,
outside the step, so the split is an estimate).

  /work/venv/bin/python benches/compare.py [--threads 2] [--quick] [--json PATH]
      [--models mobilenet_v3_small,efficientnet_b0] [--rounds 2]

--rounds N runs steps 1-4 N times in a row and keeps, for every engine and row alike, the
fastest of its N medians: a VM whose speed drifts by tens of percent between minutes (the
project's does) otherwise hands whichever engine ran in a slow phase the worse ratio. Every
round's medians go to the JSON file too (`rounds`), and the script prints each round's ratios.

--models (default: all of MODELS) restricts every step to some models: pytorch_reference.py
gets the same --models, criterion a filter (`cargo bench --bench forward --
'^forward_fused/flex/(mobilenet_v3_small|efficientnet_b0)/'`), tract only their files.

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
CONV_PASSES = ("forward", "input_grad", "weight_grad")
MODELS = ("mobilenet_v2", "resnet18", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0")
SIZES = (160, 224)
BATCHES = (1, 16)
REGIMES = (("head", "head_only"), ("last_blocks", "last_blocks"), ("full", "full"))


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(cmd, env=None, capture=False, check=True):
    """Runs `cmd` in the repository root and returns its CompletedProcess (`stdout` captured
    when `capture`, else ""). A failure ends the script when `check`, else is logged: the
    caller checks `returncode` and reads whatever stdout it printed."""
    log("$ " + " ".join(cmd))
    full_env = dict(os.environ, **(env or {}))
    result = subprocess.run(cmd, cwd=ROOT, env=full_env, text=True,
                            stdout=subprocess.PIPE if capture else sys.stderr)
    if result.returncode != 0:
        message = f"{' '.join(cmd)} failed with exit code {result.returncode}"
        if check:
            sys.exit(f"compare.py: {message}")
        log(message)
    result.stdout = result.stdout or ""
    return result


def model_list(text):
    """`--models` value: comma-separated names of MODELS, kept in MODELS' order."""
    names = {n.strip() for n in text.split(",") if n.strip()}
    unknown = sorted(names - set(MODELS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown model(s) {', '.join(unknown) or repr(text)}; choose from {', '.join(MODELS)}")
    return [m for m in MODELS if m in names]


def target_dir():
    """Cargo's target directory, where criterion writes: `CARGO_TARGET_DIR` when set (relative
    to the repository), else `target/`."""
    target = os.environ.get("CARGO_TARGET_DIR")
    return os.path.join(ROOT, target or "target")


def criterion_filter(prefix, models):
    """A criterion filter (a regex on `GROUP/FUNCTION/PARAMETER` ids) for `models` under
    `prefix`: `^forward_fused/flex/(resnet18|efficientnet_b0)/`."""
    return f"^{prefix}/({'|'.join(models)})/"


def criterion_median_ms(group, function, since):
    """Median of a criterion benchmark run after `since` (seconds since the epoch)."""
    path = os.path.join(target_dir(), "criterion", group, function, "new", "estimates.json")
    if not os.path.exists(path) or os.path.getmtime(path) < since:
        sys.exit(f"compare.py: no fresh criterion result at {path}")
    with open(path) as f:
        return json.load(f)["median"]["point_estimate"] / 1e6


def measure(args, models, onnx_dir):
    """Steps 1-4 once: returns (PyTorch's meta, their medians, this crate's medians, whether
    the convolutions were measured, their spec)."""
    started = time.time()
    py_json = os.path.join(onnx_dir, "pytorch.json")

    # 1. PyTorch and onnxruntime.
    py_cmd = [sys.executable, "benches/pytorch_reference.py", "--only", "forward", "--only", "train",
              "--threads", str(args.threads), "--keep-onnx", onnx_dir, "--json", py_json,
              "--models", ",".join(models)]
    with open(os.path.join(ROOT, "benches", "conv_layers.json")) as f:
        conv_spec = json.load(f)
    conv_layers = conv_spec["network"] in models
    if conv_layers:
        py_cmd += ["--only", "conv_layers"]
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
        elif row["section"] == "conv_layers":
            theirs[("conv", row["layer"], row["conv_pass"])] = row["median_ms"]

    # 2. This crate.
    env = {"RAYON_NUM_THREADS": str(args.threads)}
    if args.quick:
        env["BENCH_QUICK"] = "1"
    run(["cargo", "bench", "--bench", "forward", "--", criterion_filter("forward_fused/flex", models)],
        env=env)
    run(["cargo", "bench", "--bench", "train_step", "--", criterion_filter("train_step", models)],
        env=env)
    ours = {}
    for model in models:
        for size in SIZES:
            for batch in BATCHES:
                ours[("forward", model, size, batch)] = criterion_median_ms(
                    "forward_fused_flex", os.path.join(model, f"b{batch}_{size}"), started)
        for regime, function in REGIMES:
            ours[("train", model, regime)] = criterion_median_ms(f"train_step_{model}", function, started)
    if conv_layers:
        run(["cargo", "bench", "--bench", "conv_layers"], env=env)
        for layer in conv_spec["layers"]:
            for conv_pass in CONV_PASSES:
                if conv_pass == "input_grad" and not layer.get("input_grad", True):
                    continue
                group = f"conv_layers_{conv_spec['network']}_{layer['name']}"
                ours[("conv", layer["name"], conv_pass)] = criterion_median_ms(group, conv_pass, started)

    # 3. tract, on the files step 1 exported: built once, then one process per model, so that a
    # model tract cannot load or run (an unsupported operator, a panic) leaves its rows n/a and
    # the others measured.
    tract_manifest = ["--manifest-path", "benches/tract/Cargo.toml"]
    tract_built = run(["cargo", "build", "--release", "--quiet", *tract_manifest],
                      check=False).returncode == 0
    for model in models if tract_built else []:
        specs = [f"{model}={s}={path}" for s in SIZES
                 if os.path.exists(path := os.path.join(onnx_dir, f"{model}_{s}.onnx"))]
        if not specs:
            log(f"tract: no ONNX file for {model} (the export failed): n/a")
            continue
        tract_cmd = ["cargo", "run", "--release", "--quiet", *tract_manifest,
                     "--", "--threads", str(args.threads), "--repeats", "3" if args.quick else "10",
                     "--warmup", "1" if args.quick else "3", *specs]
        for line in run(tract_cmd, capture=True, check=False).stdout.splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                log(f"tract: not a result line: {line!r}")
                continue
            theirs[("forward", row["model"], row["size"], row["batch"], "tract")] = row["median_ms"]
        missing = [f"b{b}_{s}" for s in SIZES for b in BATCHES
                   if ("forward", model, s, b, "tract") not in theirs]
        if missing:
            log(f"tract: no result for {model} {', '.join(missing)}: n/a")

    return py["meta"], theirs, ours, conv_layers, conv_spec


def fastest(rounds):
    """Per key, the fastest of the rounds' medians (a key missing from a round is skipped)."""
    medians = {}
    for r in rounds:
        for k, v in r.items():
            if v is not None:
                medians.setdefault(k, []).append(v)
    return {k: min(v) for k, v in medians.items()}


def ratio_spread(theirs, ours, section, engine):
    """Lowest–highest of this crate's median ÷ `engine`'s over the rows of `section`."""
    ratios = [mine / theirs[key + (engine,)] for key, mine in ours.items()
              if key[0] == section and mine is not None and theirs.get(key + (engine,))]
    return f"{min(ratios):.2f}–{max(ratios):.2f}×" if ratios else "–"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2,
                    help="threads for every engine (RAYON_NUM_THREADS, torch, onnxruntime, tract)")
    ap.add_argument("--quick", action="store_true", help="short runs, a smoke test")
    ap.add_argument("--json", metavar="PATH", help="write every median to this JSON file")
    ap.add_argument("--models", type=model_list, default=list(MODELS), metavar="NAME,NAME...",
                    help=f"comma-separated models to measure (default: all of {', '.join(MODELS)})")
    ap.add_argument("--rounds", type=int, default=1, metavar="N",
                    help="measure everything N times; each engine's row keeps its fastest median")
    args = ap.parse_args()
    models = args.models
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")

    load_start = os.getloadavg()
    started = time.time()
    onnx_dir = tempfile.mkdtemp(prefix="tv_compare_onnx_")
    per_round = []
    for i in range(args.rounds):
        if args.rounds > 1:
            log(f"round {i + 1} of {args.rounds}")
        per_round.append(measure(args, models, onnx_dir))
    py_meta, _, _, conv_layers, conv_spec = per_round[0]
    theirs = fastest([r[1] for r in per_round])
    ours = fastest([r[2] for r in per_round])
    load_end = os.getloadavg()
    meta = dict(py_meta, rust_threads=args.threads, rounds=args.rounds, machine=platform.machine(),
                models=models, load_start=load_start, load_end=load_end,
                wall_s=time.time() - started)

    def fmt(v):
        return "n/a" if v is None else (f"{v:,.1f}" if v < 100 else f"{v:,.0f}")

    def ratio(a, b):
        return "–" if a is None or b is None else f"{a / b:.2f}×"

    lines = [f"{meta['cpu']} ({meta['cores']} cores), {args.threads} threads everywhere; "
             f"PyTorch {meta['torch']}, onnxruntime {meta['onnxruntime']}, tract 0.21; "
             f"load {load_start[0]:.2f} → {load_end[0]:.2f}; {time.strftime('%Y-%m-%d')}",
             "",
             "| model | input | batch | this crate | PyTorch | onnxruntime | tract | ÷ PyTorch | ÷ onnxruntime | ÷ tract |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    rows = []
    for model in models:
        for size in SIZES:
            for batch in BATCHES:
                mine = ours[("forward", model, size, batch)]
                pt, ort, tr = (theirs.get(("forward", model, size, batch, e)) for e in ("pytorch", "onnxruntime", "tract"))
                rows.append(dict(section="forward", model=model, input=size, batch=batch, ours=mine,
                                 pytorch=pt, onnxruntime=ort, tract=tr))
                lines.append(f"| {model} | {size} | {batch} | {fmt(mine)} | {fmt(pt)} | {fmt(ort)} | {fmt(tr)} | "
                             f"{ratio(mine, pt)} | {ratio(mine, ort)} | {ratio(mine, tr)} |")
    lines += ["", "| model | training step (batch 16, 224) | this crate | PyTorch | ÷ PyTorch |", "|---|---|---|---|---|"]
    for model in models:
        for regime, _ in REGIMES:
            mine = ours[("train", model, regime)]
            pt = theirs.get(("train", model, regime, "pytorch"))
            rows.append(dict(section="train", model=model, regime=regime, ours=mine, pytorch=pt))
            lines.append(f"| {model} | {regime} | {fmt(mine)} | {fmt(pt)} | {ratio(mine, pt)} |")
    if conv_layers:
        network = conv_spec["network"]
        lines += ["", f"| {network} convolution (batch {conv_spec['batch']}, 224) | count | pass | "
                  "this crate | PyTorch | ÷ PyTorch |", "|---|---|---|---|---|---|"]
        sums = {"this crate": 0.0, "PyTorch": 0.0}
        for layer in conv_spec["layers"]:
            for conv_pass in CONV_PASSES:
                mine = ours.get(("conv", layer["name"], conv_pass))
                if mine is None:
                    continue
                pt = theirs.get(("conv", layer["name"], conv_pass))
                sums["this crate"] += layer["count"] * mine
                sums["PyTorch"] += layer["count"] * (pt or 0.0)
                rows.append(dict(section="conv_layers", layer=layer["name"], count=layer["count"],
                                 conv_pass=conv_pass, ours=mine, pytorch=pt))
                lines.append(f"| {layer['name']} | {layer['count']} | {conv_pass} | {fmt(mine)} | "
                             f"{fmt(pt)} | {ratio(mine, pt)} |")
        mine_sum, pt_sum = sums["this crate"], sums["PyTorch"]
        step_mine, step_pt = ours[("train", network, "full")], theirs.get(("train", network, "full", "pytorch"))
        lines.append(f"| all {sum(l['count'] for l in conv_spec['layers'])} convolutions, count-weighted "
                     f"| | every pass | {fmt(mine_sum)} | {fmt(pt_sum)} | {ratio(mine_sum, pt_sum)} |")
        lines.append(f"| full training step | | | {fmt(step_mine)} | {fmt(step_pt)} | {ratio(step_mine, step_pt)} |")
        if step_pt is not None:
            rest_mine, rest_pt = step_mine - mine_sum, step_pt - pt_sum
            lines.append(f"| the step less its convolutions | | | {fmt(rest_mine)} | {fmt(rest_pt)} | "
                         f"{ratio(rest_mine, rest_pt) if rest_pt > 0 else '–'} |")
    if args.rounds > 1:
        lines += ["", f"Each row above is the fastest of {args.rounds} rounds' medians, for every engine. "
                  "The rounds alone (this crate's time ÷ theirs, lowest–highest over the rows):", "",
                  "| round | inference ÷ PyTorch | inference ÷ onnxruntime | training ÷ PyTorch |",
                  "|---|---|---|---|"]
        for i, (_, their_round, our_round, _, _) in enumerate(per_round):
            spreads = [ratio_spread(their_round, our_round, section, engine) for section, engine in
                       (("forward", "pytorch"), ("forward", "onnxruntime"), ("train", "pytorch"))]
            lines.append(f"| {i + 1} | {' | '.join(spreads)} |")
    print("\n".join(lines))
    if args.json:
        rounds_json = [{"theirs": [[list(k), v] for k, v in r[1].items()],
                        "ours": [[list(k), v] for k, v in r[2].items()]} for r in per_round]
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows, "rounds": rounds_json}, f, indent=1)
        log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
