#!/usr/bin/env bash
# The CUDA check, run on a machine with an NVIDIA GPU from the bundle that
# scripts/prepare_gpu_bundle.sh made (.gpu/): no Rust, no network needed there.
#
#   scripts/gpu_check.sh [--device cuda|cpu] [--quick] [--out DIR]
#
# 1. ONNX logits vs onnxruntime (MobileNetV2 carried; folded MobileNetV2 and ResNet18 made there
#    by the shared fixture script) and the MobileNetV2 training-parity cases, on the device;
#    the same forward parity in bf16 and f16 (CUDA only).
# 2. Benchmarks: forward batch 1/32/128 and a full training step at batch 32, both models, beside
#    PyTorch on the same card (benches/pytorch_gpu.py), f32 and bf16.
# 3. The alpaca example with --quick, then in full with the real weights.
# Writes summary.md (the tables), log.txt and the JSON results to --out (default $OUT or
# /tmp/gpu_check). `--device cpu` runs the same on the CPU (no PyTorch rows, smaller benchmarks):
# the dry run of this script where no GPU is lent. Exit status: the number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."
device=cuda quick=0 out=${OUT:-/tmp/gpu_check}
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device=$2; shift 2 ;;
        --quick) quick=1; shift ;;
        --out) out=$2; shift 2 ;;
        *) echo "usage: $0 [--device cuda|cpu] [--quick] [--out DIR]" >&2; exit 2 ;;
    esac
done
G=.gpu
PY=${PYTHON:-python3}
[ -f "$G/bin/device_check.xz" ] || { echo "no $G/bin: run scripts/prepare_gpu_bundle.sh first" >&2; exit 2; }
mkdir -p "$out"
work=$(mktemp -d)
mkdir -p "$work/bin"
for bin in alpaca device_check; do
    "$PY" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
        "$G/bin/$bin.xz" "$work/bin/$bin" && chmod +x "$work/bin/$bin"
done
summary=$out/summary.md
failed=0
exec > >(tee "$out/log.txt") 2>&1

step() { # step NAME COMMAND...: runs, times and records one step
    local name=$1; shift
    echo "== $name: $*"
    local t0=$SECONDS
    if "$@"; then echo "-- $name: ok ($((SECONDS - t0)) s)"
    else echo "-- $name: FAILED ($((SECONDS - t0)) s)"; failed=$((failed + 1)); fi
}

{
    echo "# GPU check ($(date -u +%F), device $device)"
    echo
    if command -v nvidia-smi >/dev/null; then
        echo '```'
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
        echo '```'
    else
        echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2) ($(nproc) threads)"
    fi
} > "$summary"

if [ "$device" = cpu ]; then
    batches=1,4; train_batch=4; repeats=3
else
    batches=1,32,128; train_batch=32; repeats=20
fi
[ "$quick" = 1 ] && repeats=3

# 1. Fixtures made there, then parity (and f32 benchmarks) on the device.
fix=$work/fixtures
cp -r "$G/fixtures" "$fix"
step "make ONNX fixtures" "$PY" "$G/tools/make_onnx_fixtures.py" "$fix/onnx" --models mobilenet_v2,resnet18
step "make folded MobileNetV2 fixture" "$PY" "$G/tools/make_onnx_fixtures.py" "$fix/onnx" --models mobilenet_v2 --fused
step "regenerated MobileNetV2 = the shared fixture (training parity uses it)" "$PY" -c '
import sys, numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
print("max |logit diff| vs the shared fixture:", float(np.abs(a - b).max()))
sys.exit(0 if np.abs(a - b).max() <= 1e-5 else 1)' "$fix/onnx/mobilenet_v2.logits.npy" "$fix/onnx/expected_mobilenet_v2.logits.npy"
precisions=f32
[ "$device" = cpu ] || precisions="f32 bf16 f16"
for p in $precisions; do
    step "device_check $p" "$work/bin/device_check" --device "$device" --precision "$p" --fixtures "$fix" \
        --bench --forward-batches "$batches" --train-batch "$train_batch" --repeats "$repeats" \
        --json "$out/device_check_$p.json"
done

# 2. PyTorch on the same card.
if [ "$device" != cpu ]; then
    for p in f32 bf16; do
        step "pytorch $p" "$PY" benches/pytorch_gpu.py --precision "$p" --repeats "$repeats" \
            --json "$out/pytorch_$p.json"
    done
fi

# 3. The alpaca example.
alpaca=("$work/bin/alpaca" --device "$device" --data "$G/data/alpaca" --quiet
        --weights "$G/weights/mobilenet_v2_tf_imagenet.onnx")
step "alpaca --quick" "${alpaca[@]}" --quick --out "$work/alpaca_quick"
if [ "$quick" = 0 ]; then
    step "alpaca" "${alpaca[@]}" --out "$work/alpaca"
    cp "$work/alpaca/metrics.json" "$out/alpaca_metrics.json" 2>/dev/null
fi

# The summary: parity, benchmarks side by side, alpaca accuracy.
"$PY" - "$out" "$device" >> "$summary" <<'PY'
import json, os, sys
out, device = sys.argv[1], sys.argv[2]
def load(name):
    p = os.path.join(out, name)
    return json.load(open(p)) if os.path.exists(p) else None
for p in ["f32", "bf16", "f16"]:
    d = load(f"device_check_{p}.json")
    if not d:
        continue
    print(f"\n## {p}: parity\n\n| check | result | tolerance | pass |\n|---|---|---|---|")
    for r in d["onnx"]:
        print(f"| ONNX {r['fixture']} | max diff / max logit {r['ratio']:.2e}, top-1 {r['top1_agree']} | {r['tolerance']:.0e} | {r['pass']} |")
    for r in d["train"]:
        print(f"| train {r['case']} | max rel loss {r['max_rel_loss']:.2e} | {r['tolerance']:.0e} | {r['pass']} |")
    for f in d["failures"]:
        print(f"| FAILED | {f} | | |")
    torch = load(f"pytorch_{p}.json")
    ref = {(r["model"], r["what"], r["batch"]): r["median_ms"] for r in (torch or {}).get("rows", [])}
    print(f"\n## {p}: benchmarks (median ms)\n\n| model | what | batch | transfer-vision | PyTorch | ratio |\n|---|---|---|---|---|---|")
    for r in d["bench"]:
        t = ref.get((r["model"], r["what"], r["batch"]))
        cols = f"{t:.2f} | {r['median_ms'] / t:.2f}" if t else "– | –"
        print(f"| {r['model']} | {r['what']} | {r['batch']} | {r['median_ms']:.2f} | {cols} |")
    if torch:
        print(f"\nPyTorch: {torch['meta']}")
m = load("alpaca_metrics.json")
if m:
    e = m["final_evaluation"]
    print(f"\n## alpaca (full run)\n\nvalidation accuracy {e.get('accuracy')} on {m['val_images']} images, "
          f"{m['total_seconds']:.0f} s in all; per epoch:")
    for h in m["history"]["epochs"]:
        print(f"- epoch {h['epoch'] + 1} {h['phase']}: val {h['val_accuracy']:.3f}, {h['seconds']:.1f} s")
PY
echo; cat "$summary"
echo "failed steps: $failed"
rm -rf "$work"
exit "$failed"
