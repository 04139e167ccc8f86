#!/usr/bin/env bash
# Builds and trims everything scripts/gpu_check.sh needs into .gpu/ (git-ignored), here, where
# the Rust registry is: the GPU machine has CUDA and PyTorch but no Rust toolchain, no network,
# and takes at most 64 MiB with a call (the repository's tracked files included).
#
#   scripts/prepare_gpu_bundle.sh            # then, on the GPU machine: scripts/gpu_check.sh
#   SHARED=/path/to/shared scripts/prepare_gpu_bundle.sh
#
# The binaries are built with `--features cuda` (they load the CUDA driver and NVRTC at run
# time, so they build and also run on the CPU without a GPU: `scripts/gpu_check.sh --device cpu`).
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared}
limit=$((60 * 1024 * 1024))

cargo build --release --features cuda --example alpaca --example device_check

rm -rf .gpu
mkdir -p .gpu/bin .gpu/fixtures/onnx .gpu/fixtures/train .gpu/tools .gpu/data .gpu/weights
# Stripped and xz-compressed (about 90 MiB down to 12); gpu_check.sh unpacks them with Python's
# lzma, which is wherever PyTorch is.
for bin in alpaca device_check; do
    strip -o ".gpu/bin/$bin" "target/release/examples/$bin"
    xz -9 -T2 ".gpu/bin/$bin"
done

# ONNX parity: the three fixtures are made again there by the shared fixture script from the
# same seed (PyTorch, onnx and onnxruntime are installed there): 60 MiB that need not travel.
# Regenerating them here with another PyTorch version gave bit-identical weights; the check
# compares the regenerated MobileNetV2's logits with these to make sure.
cp "$shared"/tools/make_onnx_fixtures.py .gpu/tools/
cp "$shared"/fixtures/onnx/mobilenet_v2.logits.npy .gpu/fixtures/onnx/expected_mobilenet_v2.logits.npy

# Training parity: the two MobileNetV2 cases (their backbone is the regenerated fixture).
cp "$shared"/fixtures/train/train_fixtures.json .gpu/fixtures/train/
for case in mobilenet_v2_head_adam mobilenet_v2_last_block_adam; do
    cp "$shared"/fixtures/train/"$case".*.npy .gpu/fixtures/train/
done

# The alpaca example, full size, with the real ImageNet weights.
cp -r "$shared"/datasets/alpaca .gpu/data/alpaca
cp "$shared"/weights/mobilenet_v2_tf_imagenet.onnx .gpu/weights/

bundle=$(du -sb .gpu | cut -f1)
tracked=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
echo "bundle $((bundle / 1024 / 1024)) MiB + tracked files $((tracked / 1024 / 1024)) MiB"
du -sh .gpu/*
if [ $((bundle + tracked)) -gt "$limit" ]; then
    echo "error: over 60 MiB; trim .gpu/" >&2
    exit 1
fi
