#!/usr/bin/env bash
# The wgpu backend's checks on lavapipe (Mesa's software Vulkan driver, on the CPU) or on any
# GPU wgpu finds: every ONNX fixture against onnxruntime (1e-4 of the largest logit), a save/load
# round trip, the training-parity cases against PyTorch and a head trained on cached features
# against the uncached path and the CPU (examples/device_check), then the
# alpaca example's --quick run (batch 8 at 96 x 96: lavapipe runs the shaders on the CPU, about
# 100 times slower than the CPU backend). Installs lavapipe with apt when no Vulkan driver is
# present. .ci/run runs it last.
#
#   scripts/wgpu_check.sh [--device wgpu:N]
#
# Expects ../shared beside the repository; writes only to a temporary folder.
set -euo pipefail
cd "$(dirname "$0")/.."
device="${2:-wgpu}"
[ "${1:-}" = "--device" ] || device=wgpu

start=$SECONDS
if ! dpkg -s mesa-vulkan-drivers libvulkan1 >/dev/null 2>&1 && command -v apt-get >/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        mesa-vulkan-drivers libvulkan1 >/dev/null
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# The Vulkan loader complains on every start without one.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$out/xdg}"
mkdir -m 700 -p "$XDG_RUNTIME_DIR"
# Autotuning times each candidate kernel per new shape, and every candidate is a shader lavapipe
# compiles with LLVM: the least of it here (13.9 min instead of 17.4 for device_check, cold).
export CUBECL_AUTOTUNE_LEVEL="${CUBECL_AUTOTUNE_LEVEL:-minimal}"

cargo build --release --features wgpu --example device_check --example alpaca
echo "build: $((SECONDS - start)) s"
bin="${CARGO_TARGET_DIR:-target}/release/examples"
"$bin/device_check" --device "$device" --fixtures ../shared/fixtures
echo "device_check: $((SECONDS - start)) s"
"$bin/alpaca" --device "$device" --quick --quiet --batch-size 8 --image-size 96 \
    --weights ../shared/weights/mobilenet_v2_tf_imagenet.onnx \
    --data ../shared/datasets/alpaca --out "$out/alpaca"
for file in history.png predictions.png metrics.json model.tvm; do
    test -s "$out/alpaca/$file" || { echo "missing alpaca/$file"; exit 1; }
done
echo "alpaca --quick: $((SECONDS - start)) s"
echo "wgpu checks passed on $device in $((SECONDS - start)) s"
