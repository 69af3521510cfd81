#!/usr/bin/env bash
# One short slot on a GPU machine (one H200, no network, no TensorFlow), everything printed in under 8 minutes:
#   1. 7B-shaped bf16 inference: actions/s of binning and VQ at batch 1 and 8 side by side, and the VQ decoder's
#      share of a query (bench/inference.py);
#   2. one 7B LoRA training step: time and peak memory without and with gradient checkpointing (bench/finetune.py).
# Weights are random (OpenVLA-7B never reaches us): speed and memory depend on shapes, not values.
#
#   bash bench/gpu_check.sh               # on the GPU machine: --size 7b, cuda, bf16
#   bash bench/gpu_check.sh --size tiny   # anywhere (CI runs it on CPU so the script cannot rot)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=7b
if [[ "${1:-}" == "--size" ]]; then SIZE="${2:?--size tiny|7b}"; fi
if [[ "$SIZE" != "7b" && "$SIZE" != "tiny" ]]; then echo "error: --size $SIZE: pass tiny or 7b" >&2; exit 2; fi
PY="${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}"
if [[ "$SIZE" == "7b" ]]; then BATCH=16; STEPS=3; REPEATS=5; else BATCH=2; STEPS=1; REPEATS=2; fi
start=$SECONDS
echo "== gpu_check --size $SIZE: $("$PY" -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU")')"
echo "== 1/2 inference, bf16 (bench/inference.py)"
timeout 300 "$PY" bench/inference.py --size "$SIZE" --dtype bf16 --batch 1 8 --repeats "$REPEATS"
echo "== 2/2 one LoRA training step, batch $BATCH, without / with gradient checkpointing (bench/finetune.py)"
timeout 300 "$PY" bench/finetune.py --size "$SIZE" --batch "$BATCH" --steps "$STEPS" --gradient_checkpointing both
echo "== gpu_check done in $((SECONDS - start)) s"
