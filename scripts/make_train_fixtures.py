#!/usr/bin/env python3
"""Training-parity goldens for the architectures added after ../shared/fixtures/train was made,
by the same method as ../shared/tools/make_train_fixtures.py, into tests/fixtures/train.

The backbones are the seed-0 models of ../shared/tools/make_onnx_fixtures.py, i.e. exactly the
weights of ../shared/fixtures/onnx/{model}.onnx (checked below against that file's logits). Each
case replaces the head with a fresh 2-class linear layer (its initial weights saved here),
freezes what the case says, keeps frozen BatchNorm layers in eval mode (trainable ones in train
mode), disables dropout (and with it stochastic depth: the model is in eval mode) and runs three
optimizer steps on fixed random batches. The goldens are the loss before each step and the head
after the last one.

Usage (from the repository root, with ../shared beside it and torch + torchvision installed):
    python scripts/make_train_fixtures.py [OUT_DIR]      # default tests/fixtures/train
"""
import json
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared")
sys.path.insert(0, os.path.join(SHARED, "tools"))
from make_onnx_fixtures import build  # noqa: E402

# name, model, input size, trainable prefixes, optimizer, lr, steps
CASES = [
    ("mobilenet_v3_small_last_block_adam", "mobilenet_v3_small", 96,
     ["features.12.", "classifier."], "adam", 1e-3, 3),
    ("efficientnet_b0_last_block_adam", "efficientnet_b0", 96,
     ["features.8.", "classifier."], "adam", 1e-3, 3),
]
# torchvision's BatchNorm momentum per model (the fixture builder sets None to calibrate).
MOMENTUM = {"mobilenet_v3_small": 0.01, "efficientnet_b0": 0.1}


def head_of(model):
    """The head's key and module: the last Linear of `classifier`."""
    index = len(model.classifier) - 1
    return f"classifier.{index}", index


def check_backbone(model, name):
    """The rebuilt model must give the ONNX fixture's logits (same weights)."""
    onnx_dir = os.path.join(SHARED, "fixtures", "onnx")
    x = torch.from_numpy(np.load(os.path.join(onnx_dir, f"{name}.input.npy")))
    golden = np.load(os.path.join(onnx_dir, f"{name}.logits.npy"))
    with torch.no_grad():
        ours = model.eval()(x).numpy()
    diff = np.abs(ours - golden).max() / np.abs(golden).max()
    assert diff < 1e-5, f"{name}: rebuilt weights differ from the ONNX fixture ({diff:.2e})"


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "fixtures", "train")
    os.makedirs(out, exist_ok=True)
    meta = {}
    for name, model_name, size, prefixes, opt_name, lr, steps in CASES:
        gen = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        m, _ = build(model_name, gen)
        check_backbone(m, model_name)
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.momentum = MOMENTUM[model_name]
        head_key, index = head_of(m)
        head = torch.nn.Linear(m.classifier[index].in_features, 2)
        init = torch.randn(head.weight.shape, generator=torch.Generator().manual_seed(1)) * 0.01
        with torch.no_grad():
            head.weight.copy_(init)
            head.bias.zero_()
        m.classifier[index] = head
        trainable = []
        for pname, p in m.named_parameters():
            p.requires_grad = any(pname.startswith(pre) for pre in prefixes)
            if p.requires_grad:
                trainable.append(pname)
        m.eval()
        for mname, mod in m.named_modules():
            if isinstance(mod, torch.nn.BatchNorm2d) and any(
                (mname + ".").startswith(pre) for pre in prefixes
            ):
                mod.train()
        data_gen = torch.Generator().manual_seed(2)
        xs = torch.randn(steps, 4, 3, size, size, generator=data_gen)
        ys = torch.randint(0, 2, (steps, 4), generator=data_gen)
        params = [p for p in m.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=lr)
        losses = []
        for i in range(steps):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(m(xs[i]), ys[i])
            losses.append(float(loss.detach()))
            loss.backward()
            opt.step()
        save = lambda what, a: np.save(os.path.join(out, f"{name}.{what}.npy"), a)
        save("inputs", xs.numpy())
        save("labels", ys.numpy().astype(np.int64))
        save("head_init_weight", init.numpy())
        save("head_final_weight", head.weight.detach().numpy())
        save("head_final_bias", head.bias.detach().numpy())
        meta[name] = {
            "model": model_name,
            # Relative to this folder: ../shared beside the repository.
            "backbone_onnx": f"../../../../shared/fixtures/onnx/{model_name}.onnx",
            "input_size": size,
            "head": head_key,
            "trainable_prefixes": prefixes,
            "trainable_params": trainable,
            "optimizer": opt_name,
            "lr": lr,
            "sgd_momentum": None,
            "adam": {"betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0},
            "steps": steps,
            "batch": 4,
            "losses": losses,
            "head_bias_init": "zeros",
            "dropout": "off (model in eval mode except trainable BatchNorm)",
            "made_by": "scripts/make_train_fixtures.py, torch " + torch.__version__,
        }
        print(name, ["%.7f" % l for l in losses])
    with open(os.path.join(out, "train_fixtures.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
