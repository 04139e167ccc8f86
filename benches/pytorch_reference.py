#!/usr/bin/env python3
"""PyTorch / onnxruntime reference numbers for transfer-vision's benchmarks (BENCHMARKS.md).

Measures, on the CPU, with the same thread count for every engine (default 2):

  forward  inference of torchvision mobilenet_v2, resnet18, mobilenet_v3_small,
           mobilenet_v3_large and efficientnet_b0 (random weights, 1000 classes, eval mode,
           torch.no_grad) at batch 1 and 16, input 160 and 224; the same models exported to ONNX
           (legacy TorchScript exporter, dynamic batch) through onnxruntime.
  train    one training step (zero_grad, forward, cross-entropy, backward, Adam lr 1e-3 step) at
           batch 16, 224, on a fresh 2-class head, for three regimes:
             head        backbone frozen (requires_grad False, eval mode), head trains;
             last_blocks mobilenet_v2 features[14:] + classifier / resnet18 layer4 + fc /
                         mobilenet_v3_small features[9:] + classifier / mobilenet_v3_large
                         features[13:] + classifier / efficientnet_b0 features[6:] +
                         classifier train (their BatchNorms in train mode), the frozen rest
                         in eval mode;
             full        everything trains, model.train().
  memory   peak resident memory of one full-training step (the first, which allocates Adam's
           state) at batch 32, 224, each model in a fresh subprocess; also the peak before the
           step (imports, model, batch, optimizer) so the step's own share is visible. Read from
           VmHWM, not ru_maxrss: on Linux ru_maxrss is inherited across fork + exec, so a child
           reports at least its parent's peak (the JSON keeps ru_maxrss for reference).
  conv_layers  (only with --only conv_layers) ResNet18's convolutions one by one at batch 16,
           224, as listed in benches/conv_layers.json: forward (F.conv2d) and the input and the
           weight gradient each on its own (aten::convolution_backward with one output asked
           for), the counterpart of benches/conv_layers.rs.
  epoch    (only with --epoch [DATA_DIR] or --only epoch) seconds per train and val epoch of the
           PyTorch transfer-learning tutorial recipe on hymenoptera_data (ImageFolder train/val,
           RandomResizedCrop 224 + flip / Resize 256 + CenterCrop 224, ImageNet normalisation,
           batch 16, SGD lr 1e-3 momentum 0.9, StepLR(7, 0.1)), DataLoader num_workers 0 and 2,
           for feature extraction (head only) and fine-tuning the last blocks.

forward and train cover every model of --models (default: all five); memory and epoch, whose
Rust counterparts (benches/train_memory.rs, benches/epoch_time.rs) measure mobilenet_v2 and
resnet18 only, cover those two unless --models names others (they work for all five).

Times are medians over --repeats timed runs after --warmup untimed ones, in milliseconds
(epochs: seconds). Results go to stdout as markdown tables and, with --json PATH, to a JSON file
that also records versions, threads, CPU and load average.

Setup (see benches/README.md):
  python3 -m venv /work/venv
  /work/venv/bin/pip install torch torchvision onnxruntime onnx numpy pillow
Usage:
  /work/venv/bin/python benches/pytorch_reference.py [--threads 2] [--repeats 20] [--quick]
      [--only forward|train|memory|epoch|conv_layers ...] [--models NAME,NAME...] [--epoch [DATA_DIR]]
      [--json PATH]
"""
import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "datasets",
                                             "hymenoptera_data"))
MODELS = ("mobilenet_v2", "resnet18", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0")
# What the memory and epoch sections measure without --models: the models of their Rust
# counterparts (benches/train_memory.rs, benches/epoch_time.rs).
MEMORY_EPOCH_MODELS = ("mobilenet_v2", "resnet18")
REGIMES = ("head", "last_blocks", "full")
SECTIONS = ("forward", "train", "memory", "epoch", "conv_layers")


# ---------------------------------------------------------------------------------------------
# models and freezing


def build(name, num_classes=1000):
    """torchvision model with random weights; num_classes != 1000 replaces the head (the last
    linear layer: mobilenet_v2 and efficientnet classifier[1], mobilenet_v3 classifier[3],
    resnet fc)."""
    model = getattr(torchvision.models, name)(weights=None)
    if num_classes != 1000:
        if name.startswith("resnet"):
            model.fc = nn.Linear(model.fc.in_features, num_classes)
        else:
            index = 3 if name.startswith("mobilenet_v3") else 1
            head = model.classifier[index]
            model.classifier[index] = nn.Linear(head.in_features, num_classes)
    return model


def trainable_modules(model, name, regime):
    """The submodules that train under `regime` (None: the whole model)."""
    if regime == "full":
        return None
    # The blocks that fine-tuning unfreezes, as in the crate's train_step bench: torchvision
    # indices of `features` (mobilenet_v2 features.14, mobilenet_v3_small features.9, ...).
    first_block = {"mobilenet_v2": 14, "mobilenet_v3_small": 9, "mobilenet_v3_large": 13,
                   "efficientnet_b0": 6}
    if name in first_block:
        # The whole classifier: mobilenet_v3's hidden linear layer trains with the head.
        head = [model.classifier]
        last = [model.features[first_block[name]:]]
    elif name.startswith("resnet"):
        head = [model.fc]
        last = [model.layer4]
    else:
        raise ValueError(f"no regimes for {name}")
    if regime == "head":
        return head
    if regime == "last_blocks":
        return last + head
    raise ValueError(regime)


def set_regime(model, name, regime):
    """Set requires_grad and train/eval modes; return the trainable parameters.

    Frozen layers run in eval mode (BatchNorm uses and keeps its running statistics); trainable
    layers, BatchNorm included, run in train mode.  Call again after any model.train()/eval().
    """
    mods = trainable_modules(model, name, regime)
    if mods is None:
        model.train()
        for p in model.parameters():
            p.requires_grad_(True)
        return list(model.parameters())
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    params = []
    for m in mods:
        m.train()
        for p in m.parameters():
            p.requires_grad_(True)
            params.append(p)
    return params


# ---------------------------------------------------------------------------------------------
# timing helpers


def time_it(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times),
            "runs": len(times)}


def loadavg():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# ---------------------------------------------------------------------------------------------
# forward (PyTorch and onnxruntime)


def export_onnx(model, path, size):
    x = torch.randn(1, 3, size, size)
    import warnings
    with warnings.catch_warnings():  # "legacy TorchScript-based ONNX export" deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (x,), path, dynamo=False, input_names=["input"],
                          output_names=["logits"], opset_version=17,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def ort_session(path, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def bench_forward(args, log):
    rows = []
    with tempfile.TemporaryDirectory(prefix="tv_onnx_") as tmp:
        if args.keep_onnx:  # the exported files outlive the run (benches/compare.py feeds tract)
            os.makedirs(args.keep_onnx, exist_ok=True)
            tmp = args.keep_onnx
        for name in args.models:
            torch.manual_seed(0)
            model = build(name).eval()
            for size in (160, 224):
                # One export per input size (static height/width, dynamic batch).
                sess = None
                if not args.no_onnx:
                    path = os.path.join(tmp, f"{name}_{size}.onnx")
                    try:
                        export_onnx(model, path, size)
                        sess = ort_session(path, args.threads)
                    except Exception as e:  # keep the PyTorch numbers if the export breaks
                        log(f"ONNX export/session failed for {name} {size}: {e!r}")
                for batch in (1, 16):
                    x = torch.randn(batch, 3, size, size)
                    with torch.no_grad():
                        ref = model(x).numpy()
                        r = time_it(lambda: model(x), args.warmup, args.repeats)
                    rows.append(dict(section="forward", model=name, input=size, batch=batch,
                                     mode="inference", engine="pytorch", **r))
                    log(f"forward pytorch {name} b{batch} {size}: {r['median_ms']:.1f} ms")
                    if sess is not None:
                        xn = x.numpy()
                        out = sess.run(None, {"input": xn})[0]
                        # Relative to the logits' scale: random-init MobileNetV2 logits are
                        # ~1e-9 (torchvision's init shrinks activations through the blocks).
                        diff = float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-30))
                        r = time_it(lambda: sess.run(None, {"input": xn}), args.warmup,
                                    args.repeats)
                        rows.append(dict(section="forward", model=name, input=size,
                                         batch=batch, mode="inference", engine="onnxruntime",
                                         max_rel_diff_vs_pytorch=diff, **r))
                        log(f"forward onnxruntime {name} b{batch} {size}: "
                            f"{r['median_ms']:.1f} ms (max |diff| / max |logit| vs pytorch {diff:.1e})")
                del sess
    return rows


# ---------------------------------------------------------------------------------------------
# training step


def make_step(model, params, x, y):
    opt = torch.optim.Adam(params, lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return step


def bench_train(args, log):
    rows = []
    batch, size = 16, 224
    for name in args.models:
        for regime in REGIMES:
            torch.manual_seed(0)
            model = build(name, num_classes=2)
            params = set_regime(model, name, regime)
            x = torch.randn(batch, 3, size, size)
            y = torch.randint(0, 2, (batch,))
            step = make_step(model, params, x, y)
            r = time_it(step, args.warmup, args.train_repeats)
            n_train = sum(p.numel() for p in params)
            rows.append(dict(section="train", model=name, input=size, batch=batch,
                             mode=f"train step, {regime}", regime=regime, engine="pytorch",
                             trainable_params=n_train, **r))
            log(f"train {name} {regime}: {r['median_ms']:.1f} ms ({n_train} trainable params)")
    return rows


# ---------------------------------------------------------------------------------------------
# convolutions one by one


def bench_conv_layers(args, log):
    with open(os.path.join(HERE, "conv_layers.json")) as f:
        spec = json.load(f)
    rows = []
    batch = spec["batch"]
    torch.manual_seed(0)
    for layer in spec["layers"]:
        c_in, c_out, size, k = layer["c_in"], layer["c_out"], layer["size"], layer["kernel"]
        stride, padding = [layer["stride"]] * 2, [layer["padding"]] * 2
        x = torch.rand(batch, c_in, size, size) - 0.5
        w = torch.rand(c_out, c_in, k, k) - 0.5
        dy = torch.rand_like(torch.nn.functional.conv2d(x, w, stride=stride, padding=padding)) - 0.5

        def backward(mask):
            return lambda: torch.ops.aten.convolution_backward(
                dy, x, w, None, stride, padding, [1, 1], False, [0, 0], 1, mask)

        passes = {"forward": lambda: torch.nn.functional.conv2d(x, w, stride=stride,
                                                                 padding=padding),
                  "weight_grad": backward([False, True, False])}
        if layer.get("input_grad", True):
            passes["input_grad"] = backward([True, False, False])
        for name, fn in passes.items():
            r = time_it(fn, args.warmup, args.repeats)
            rows.append(dict(section="conv_layers", network=spec["network"], layer=layer["name"],
                             count=layer["count"], conv_pass=name, engine="pytorch", **r))
            log(f"conv {layer['name']} {name}: {r['median_ms']:.2f} ms")
    return rows


# ---------------------------------------------------------------------------------------------
# peak memory (in a fresh subprocess per case)


def peak_rss_kib():
    """Peak resident memory of this process so far, KiB.

    VmHWM from /proc/self/status where there is one: on Linux, getrusage's ru_maxrss survives
    fork + exec, so a child started by a big parent reports at least the parent's peak (seen
    here: a 2.5 GiB parent made every child read 2.5 GiB). Elsewhere ru_maxrss (KiB on Linux,
    bytes on macOS).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r // 1024 if sys.platform == "darwin" else r


def memory_child(name, threads, batch):
    """Runs in the child: one full-training step, prints a JSON line with peak RSS (KiB)."""
    after_imports = peak_rss_kib()  # python + numpy + torch + torchvision
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(name, num_classes=2)
    params = set_regime(model, name, "full")
    x = torch.randn(batch, 3, 224, 224)
    y = torch.randint(0, 2, (batch,))
    step = make_step(model, params, x, y)
    before = peak_rss_kib()
    t0 = time.perf_counter()
    step()
    dt = time.perf_counter() - t0
    peak = peak_rss_kib()
    print(json.dumps({"after_imports_kib": after_imports, "before_step_kib": before, "peak_kib": peak, "step_ms": dt * 1e3,
                      "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


def bench_memory(args, log):
    rows = []
    batch = 32
    for name in args.memory_epoch_models:
        cmd = [sys.executable, os.path.abspath(__file__), "--_memory-child", name,
               "--threads", str(args.threads)]
        p = subprocess.run(cmd, capture_output=True, text=True, close_fds=True)
        if p.returncode != 0:
            log(f"memory child for {name} failed ({p.returncode}):\n{p.stderr[-2000:]}")
            continue
        d = json.loads(p.stdout.strip().splitlines()[-1])
        row = dict(section="memory", model=name, input=224, batch=batch,
                   mode="train step, full", engine="pytorch",
                   peak_rss_mib=d["peak_kib"] / 1024, before_step_rss_mib=d["before_step_kib"] / 1024,
                   after_imports_rss_mib=d["after_imports_kib"] / 1024,
                   step_ms=d["step_ms"], ru_maxrss_mib=d["ru_maxrss_kib"] / 1024)
        rows.append(row)
        log(f"memory {name}: peak {row['peak_rss_mib']:.0f} MiB "
            f"(before step {row['before_step_rss_mib']:.0f} MiB)")
    return rows


# ---------------------------------------------------------------------------------------------
# seconds per epoch, tutorial recipe


def bench_epoch(args, log):
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms as T

    norm = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    tfs = {
        "train": T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                            norm]),
        "val": T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), norm]),
    }
    sets = {k: datasets.ImageFolder(os.path.join(args.epoch, k), tfs[k]) for k in ("train", "val")}
    log(f"epoch data {args.epoch}: train {len(sets['train'])}, val {len(sets['val'])} images, "
        f"classes {sets['train'].classes}")
    rows = []
    for name in args.memory_epoch_models:
        for regime, label in (("head", "feature extraction"), ("last_blocks", "fine-tune last blocks")):
            for workers in (0, 2):
                torch.manual_seed(0)
                model = build(name, num_classes=2)
                params = set_regime(model, name, regime)
                opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
                sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.1)
                loss_fn = nn.CrossEntropyLoss()
                loaders = {k: DataLoader(sets[k], batch_size=16, shuffle=(k == "train"),
                                         num_workers=workers) for k in sets}

                def run_epoch(phase):
                    t0 = time.perf_counter()
                    if phase == "train":
                        set_regime(model, name, regime)
                    else:
                        model.eval()
                    loss_sum, correct, n = 0.0, 0, 0
                    for inputs, labels in loaders[phase]:
                        opt.zero_grad()
                        with torch.set_grad_enabled(phase == "train"):
                            outputs = model(inputs)
                            loss = loss_fn(outputs, labels)
                            if phase == "train":
                                loss.backward()
                                opt.step()
                        loss_sum += loss.item() * inputs.size(0)
                        correct += int((outputs.argmax(1) == labels).sum())
                        n += inputs.size(0)
                    if phase == "train":
                        sched.step()
                    return time.perf_counter() - t0, loss_sum / n, correct / n

                times = {"train": [], "val": []}
                for e in range(args.epoch_warmup + args.epochs):
                    for phase in ("train", "val"):
                        dt, _, _ = run_epoch(phase)
                        if e >= args.epoch_warmup:
                            times[phase].append(dt)
                row = dict(section="epoch", model=name, input=224, batch=16, mode=label,
                           regime=regime, engine="pytorch", workers=workers,
                           train_epoch_s=statistics.median(times["train"]),
                           val_epoch_s=statistics.median(times["val"]),
                           train_epochs_s=times["train"], val_epochs_s=times["val"],
                           epochs=args.epochs, warmup_epochs=args.epoch_warmup)
                rows.append(row)
                log(f"epoch {name} {label} workers={workers}: train {row['train_epoch_s']:.2f} s, "
                    f"val {row['val_epoch_s']:.2f} s")
    return rows


# ---------------------------------------------------------------------------------------------
# output


def markdown(rows):
    out = []
    fwd = [r for r in rows if r["section"] == "forward"]
    if fwd:
        out += ["### Inference (ms per batch, median)", "",
                "| model | input | batch | PyTorch | onnxruntime |", "|---|---|---|---|---|"]
        keys = sorted({(r["model"], r["input"], r["batch"]) for r in fwd})
        for k in keys:
            cell = {r["engine"]: r["median_ms"] for r in fwd
                    if (r["model"], r["input"], r["batch"]) == k}
            fmt = lambda v: "–" if v is None else f"{v:.1f}"
            out.append(f"| {k[0]} | {k[1]} | {k[2]} | {fmt(cell.get('pytorch'))} | "
                       f"{fmt(cell.get('onnxruntime'))} |")
        out.append("")
    tr = [r for r in rows if r["section"] == "train"]
    if tr:
        out += ["### Training step, batch 16, 224, Adam (ms, median)", "",
                "| model | regime | trainable params | PyTorch |", "|---|---|---|---|"]
        for r in tr:
            out.append(f"| {r['model']} | {r['regime']} | {r['trainable_params']:,} | "
                       f"{r['median_ms']:.1f} |")
        out.append("")
    mem = [r for r in rows if r["section"] == "memory"]
    if mem:
        out += ["### Peak RSS, one full-training step, batch 32, 224 (MiB)", "",
                "| model | peak RSS | after imports | before the step | step's share "
                "(peak - before) | step ms |", "|---|---|---|---|---|---|"]
        for r in mem:
            out.append(f"| {r['model']} | {r['peak_rss_mib']:.0f} | "
                       f"{r['after_imports_rss_mib']:.0f} | {r['before_step_rss_mib']:.0f} | "
                       f"{r['peak_rss_mib'] - r['before_step_rss_mib']:.0f} | "
                       f"{r['step_ms']:.0f} |")
        out.append("")
    conv = [r for r in rows if r["section"] == "conv_layers"]
    if conv:
        out += ["### Convolutions one by one, batch 16, 224 (ms, median)", "",
                "| layer | convolutions | pass | PyTorch |", "|---|---|---|---|"]
        for r in conv:
            out.append(f"| {r['network']} {r['layer']} | {r['count']} | {r['conv_pass']} | "
                       f"{r['median_ms']:.2f} |")
        out.append("")
    ep = [r for r in rows if r["section"] == "epoch"]
    if ep:
        out += ["### Seconds per epoch, hymenoptera, tutorial recipe (median)", "",
                "| model | mode | workers | train epoch s | val epoch s |", "|---|---|---|---|---|"]
        for r in ep:
            out.append(f"| {r['model']} | {r['mode']} | {r['workers']} | "
                       f"{r['train_epoch_s']:.2f} | {r['val_epoch_s']:.2f} |")
        out.append("")
    return "\n".join(out)


def model_list(text):
    """`--models` value: comma-separated names of MODELS, in the order given, no repeats."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown model(s) {', '.join(unknown) or repr(text)}; choose from {', '.join(MODELS)}")
    return list(dict.fromkeys(names))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2,
                    help="torch.set_num_threads and onnxruntime intra_op_num_threads (default 2)")
    ap.add_argument("--repeats", type=int, default=20,
                    help="timed runs per forward case (default 20)")
    ap.add_argument("--train-repeats", type=int, default=None,
                    help="timed steps per training case (default: --repeats // 2, at least 3)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 3 repeats, 1 warm-up, 1 epoch without warm-up epoch")
    ap.add_argument("--only", action="append", choices=SECTIONS,
                    help="run only this section (repeatable); default: forward, train, memory "
                         "(+ epoch when --epoch is given)")
    ap.add_argument("--epoch", nargs="?", const=DEFAULT_DATA, default=None, metavar="DATA_DIR",
                    help=f"also measure seconds per epoch on DATA_DIR (default {DEFAULT_DATA})")
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per epoch case (default 3)")
    ap.add_argument("--epoch-warmup", type=int, default=1,
                    help="untimed epochs first per epoch case (default 1)")
    ap.add_argument("--models", type=model_list, default=None, metavar="NAME,NAME...",
                    help=f"comma-separated models to measure, of {', '.join(MODELS)} (default: "
                         f"all for forward and train, {' and '.join(MEMORY_EPOCH_MODELS)} for "
                         "memory and epoch)")
    ap.add_argument("--no-onnx", action="store_true", help="skip onnxruntime")
    ap.add_argument("--keep-onnx", metavar="DIR",
                    help="write the exported ONNX files (NAME_SIZE.onnx) to DIR and keep them")
    ap.add_argument("--json", metavar="PATH", help="write all results to this JSON file")
    ap.add_argument("--_memory-child", dest="memory_child", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.memory_child:
        memory_child(args.memory_child, args.threads, 32)
        return

    args.memory_epoch_models = args.models or list(MEMORY_EPOCH_MODELS)
    args.models = args.models or list(MODELS)
    if args.quick:
        args.repeats, args.warmup, args.epochs, args.epoch_warmup = 3, 1, 1, 0
    if args.train_repeats is None:
        args.train_repeats = max(3, args.repeats // 2)
    sections = args.only or ["forward", "train", "memory"] + (["epoch"] if args.epoch else [])
    if "epoch" in sections and args.epoch is None:
        args.epoch = DEFAULT_DATA

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    import onnxruntime
    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "host": platform.node(), "cpu": cpu_model(), "cores": os.cpu_count(),
        "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__, "threads": args.threads, "repeats": args.repeats,
        "train_repeats": args.train_repeats, "warmup": args.warmup, "quick": args.quick,
        "sections": sections, "models": args.models,
        "memory_epoch_models": args.memory_epoch_models, "loadavg_start": loadavg(),
        "mkldnn": torch.backends.mkldnn.is_available(),
    }
    log(f"torch {meta['torch']}, torchvision {meta['torchvision']}, onnxruntime "
        f"{meta['onnxruntime']}, {args.threads} threads, load {meta['loadavg_start']}")
    t0 = time.perf_counter()
    rows = []
    for s in SECTIONS:
        if s in sections:
            rows += {"forward": bench_forward, "train": bench_train, "memory": bench_memory,
                     "epoch": bench_epoch, "conv_layers": bench_conv_layers}[s](args, log)
    meta["loadavg_end"] = loadavg()
    meta["wall_s"] = time.perf_counter() - t0

    print(f"PyTorch {meta['torch']} / torchvision {meta['torchvision']} / onnxruntime "
          f"{meta['onnxruntime']}, {args.threads} threads, {meta['cpu']} ({meta['cores']} cores), "
          f"load {meta['loadavg_start']} -> {meta['loadavg_end']}"
          + (", QUICK (smoke test, not for BENCHMARKS.md)" if args.quick else "") + "\n")
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": rows}, f, indent=1)
        log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
