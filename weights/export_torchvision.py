#!/usr/bin/env python3
"""Export torchvision's ImageNet classifiers (IMAGENET1K_V1 weights) to ONNX: MobileNetV2,
ResNet18/34, MobileNetV3 Small/Large and EfficientNet-B0.

BatchNorm nodes are kept (TorchScript exporter, dynamo=False, no constant folding), the batch
dimension is dynamic, and initializers keep torchvision's state-dict names, so transfer-vision
loads them by name. Needs: pip install torch torchvision onnx

    python weights/export_torchvision.py [--out weights] [--models mobilenet_v2 resnet18 ...]
"""
import argparse
import os

import torch
import torchvision


def export(name: str, out_dir: str) -> str:
    builders = {
        "mobilenet_v2": (torchvision.models.mobilenet_v2, torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1),
        "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1),
        "resnet34": (torchvision.models.resnet34, torchvision.models.ResNet34_Weights.IMAGENET1K_V1),
        "mobilenet_v3_small": (torchvision.models.mobilenet_v3_small,
                               torchvision.models.MobileNet_V3_Small_Weights.IMAGENET1K_V1),
        "mobilenet_v3_large": (torchvision.models.mobilenet_v3_large,
                               torchvision.models.MobileNet_V3_Large_Weights.IMAGENET1K_V1),
        "efficientnet_b0": (torchvision.models.efficientnet_b0,
                            torchvision.models.EfficientNet_B0_Weights.IMAGENET1K_V1),
    }
    build, weights = builders[name]
    model = build(weights=weights).eval()
    path = os.path.join(out_dir, f"{name}.onnx")
    torch.onnx.export(
        model,
        torch.zeros(1, 3, 224, 224),
        path,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        do_constant_folding=False,
        training=torch.onnx.TrainingMode.EVAL,
        keep_initializers_as_inputs=False,
        dynamo=False,
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2", "resnet18"],
                        choices=["mobilenet_v2", "resnet18", "resnet34", "mobilenet_v3_small",
                                 "mobilenet_v3_large", "efficientnet_b0"])
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name in args.models:
        print("wrote", export(name, args.out))


if __name__ == "__main__":
    main()
