#!/usr/bin/env bash
# The wgpu backend's checks on lavapipe (Mesa's software Vulkan driver, on the CPU) or on any
# GPU wgpu finds: every ONNX fixture against onnxruntime (1e-4 of the largest logit), a save/load
# round trip and the training-parity cases against PyTorch (examples/device_check), then the
# alpaca example's --quick run. Installs lavapipe with apt when no Vulkan driver is present.
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

cargo build --release --features wgpu --example device_check --example alpaca
echo "build: $((SECONDS - start)) s"
./target/release/examples/device_check --device "$device" --fixtures ../shared/fixtures
echo "device_check: $((SECONDS - start)) s"
./target/release/examples/alpaca --device "$device" --quick --quiet \
    --weights ../shared/weights/mobilenet_v2_tf_imagenet.onnx \
    --data ../shared/datasets/alpaca --out "$out/alpaca"
for file in history.png predictions.png metrics.json model.tvm; do
    test -s "$out/alpaca/$file" || { echo "missing alpaca/$file"; exit 1; }
done
echo "wgpu checks passed on $device in $((SECONDS - start)) s"
