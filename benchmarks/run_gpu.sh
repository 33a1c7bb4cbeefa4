#!/usr/bin/env bash
# Every GPU measurement of chapters 10-11 in one run (a GPU is lent for minutes, not hours):
#   1. the kernel against a float32 reference, fixed tile setting, float16 and bfloat16;
#   2. the benchmark with the fixed tile setting ("untuned"), peak memory at N = 16384;
#   3. the benchmark with the autotuned tile settings ("tuned");
#   4. the autotuned kernels against the reference, bfloat16.
# Usage: OUT=some/folder bash benchmarks/run_gpu.sh   (results land in $OUT; copy them here)
set -u
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv | tee "$OUT/nvidia-smi.txt"
$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/nvidia-smi.txt"
step() { echo "===== $1 ($(date +%T))"; shift; "$@"; echo "===== exit $? ($(date +%T))"; }
step "check, fixed tiles" $PY -m tools.flash_gpu_check --settings fixed --out "$OUT/check-fixed.json"
step "benchmark, fixed tiles" $PY -m attnbook.bench flash --device cuda --untuned --memory-n 16384 \
  --out "$OUT/flash-cuda-untuned.jsonl"
step "benchmark, autotuned" $PY -m attnbook.bench flash --device cuda --memory-n 16384 \
  --out "$OUT/flash-cuda-tuned.jsonl"
step "check, autotuned" $PY -m tools.flash_gpu_check --settings tuned --out "$OUT/check-tuned.json"
