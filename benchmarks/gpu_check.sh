#!/usr/bin/env bash
# The first thing to run on a machine with an NVIDIA GPU (README, "GPU check"):
#   1. the CUDA-only tests (skipped on CPU machines);
#   2. a short ResNet-50 256x128 batch-64 training on the synthetic `market` preset, AMP off and
#      on: images/s, peak GPU memory, seconds of memory init, clustering, epochs and evaluation;
#   3. the same under torchrun on 2 GPUs when there are two or more;
#   4. the pseudo labels at N = 10^6 (D = 2048) with the kNN on the GPU, Jaccard and CA-Jaccard;
#   5. one epoch of a ViT-B/16 (CLIP's image encoder, timm, random weights) at 256x128, AMP on:
#      the transformer path (position grid, input adapter, AdamW + warm-up) on the GPU.
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR]   (a python with cacl installed: $PYTHON or python)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${1:-runs/gpu_check}
mkdir -p "$OUT"
if ! gpus=$("$PY" -c "import torch, cacl; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"); then
  echo "gpu_check: '$PY' cannot import torch and cacl: set PYTHON, e.g. PYTHON=.venv/bin/python" >&2
  exit 2
fi
if [ "${gpus:-0}" -lt 1 ]; then
  echo "gpu_check: no CUDA device (torch.cuda.is_available() is False): nothing to check here" >&2
  exit 2
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])"
status=0
step() { echo; echo "=== $1 ($(date +%T))"; }

step "1. CUDA tests"
"$PY" -m pytest -q -p no:cacheprovider -k "cuda or gpu" tests 2>&1 | tee "$OUT/cuda_tests.log" | tail -15
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

for amp in false true; do
  step "2. one GPU, ResNet-50 256x128 batch 64, AMP $amp"
  "$PY" benchmarks/gpu_train_check.py --amp "$amp" --iters "${ITERS:-200}" \
    --output "$OUT/train_amp_$amp" 2>"$OUT/train_amp_$amp.log" | tee "$OUT/train_amp_$amp.json"
  [ "${PIPESTATUS[0]}" -eq 0 ] || { status=1; tail -20 "$OUT/train_amp_$amp.log"; }
done

if [ "$gpus" -ge 2 ]; then
  step "3. torchrun, 2 GPUs, AMP true"
  "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 benchmarks/gpu_train_check.py \
    --amp true --iters "${ITERS:-200}" --output "$OUT/train_ddp2" 2>"$OUT/train_ddp2.log" \
    | tee "$OUT/train_ddp2.json"
  [ "${PIPESTATUS[0]}" -eq 0 ] || { status=1; tail -20 "$OUT/train_ddp2.log"; }
else
  step "3. torchrun: skipped (one GPU)"
fi

for distance in jaccard ca_jaccard; do
  step "4. pseudo labels, N = ${BIG_N:-1000000}, $distance, kNN on the GPU"
  "$PY" benchmarks/bench_pseudo_labels.py --sizes "${BIG_N:-1000000}" --cameras 15 \
    --distance "$distance" --device cuda --no-floor --knn exact approximate 2>&1 | tee "$OUT/pseudo_labels_$distance.txt"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done
step "5. one GPU, ViT-B/16 CLIP 256x128 batch 64, AMP true, one epoch"
"$PY" benchmarks/gpu_train_check.py --amp true --epochs 1 --iters "${VIT_ITERS:-100}" \
  --backbone vit_base_patch16_clip_224.openai --pretrained none \
  --override optim.name=adamw optim.warmup_epochs=1 optim.decay_all=false \
  --output "$OUT/train_vit_b16" 2>"$OUT/train_vit_b16.log" | tee "$OUT/train_vit_b16.json"
[ "${PIPESTATUS[0]}" -eq 0 ] || { status=1; tail -20 "$OUT/train_vit_b16.log"; }

echo; echo "gpu_check: done (status $status); outputs in $OUT"
exit $status
