#!/usr/bin/env bash
# Every GPU figure in one go (issues 4, 5 and 7), for a machine with one CUDA GPU and PyTorch:
#   DATA=path/to/data bash benchmarks/gpu.sh 2>&1 | tee gpu.log
# Runs from the source tree (PYTHONPATH=src); nothing is installed.
# PART=1: eager fast preset, seed and accurate presets, torchrun. PART=2: CUDA graphs and `best`.
set -u
cd "$(dirname "$0")"
export PYTHONPATH="$PWD/../src" PYTHONUNBUFFERED=1 MNISTLAB_OFFLINE=1
DEVICE="${DEVICE:-cuda}" RUNS="${RUNS:-5}" DATA="${DATA:-../data}" PART="${PART:-all}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
if [ "$PART" != 2 ]; then
  echo "== fast preset: its CUDA-graph step (warm-up run first, it pays for the capture)"
  timeout 240 python3 speed.py --device "$DEVICE" --presets fast --runs "$RUNS" --data-dir "$DATA"
  echo "== fast preset, eager step"
  timeout 240 python3 speed.py --device "$DEVICE" --presets fast --runs "$RUNS" --no-cuda-graph --no-inference \
    --data-dir "$DATA"
  echo "== seed recipe and accurate preset"
  timeout 300 python3 speed.py --device "$DEVICE" --presets seed-cnn accurate --runs 1 --no-inference --data-dir "$DATA"
  echo "== torchrun, one GPU process (NCCL)"
  timeout 200 python3 distributed.py --device "$DEVICE" --nproc 1 --runs 3 --data-dir "$DATA"
fi
if [ "$PART" != 1 ]; then
  echo "== fast preset, torch.compile reduce-overhead: CUDA graphs (the warm-up run pays for compilation)"
  timeout 300 python3 speed.py --device "$DEVICE" --presets fast --runs "$RUNS" --compile reduce-overhead \
    --no-inference --data-dir "$DATA"
  echo "== best preset, one seed"
  out=$(mktemp -d)
  timeout 300 python3 -m mnistlab train --preset best --device "$DEVICE" --data-dir "$DATA" --out "$out/best" \
    --no-progress --no-report --log-interval 100000 && python3 -m mnistlab eval "$out/best/model.pt" --data-dir "$DATA" | head -3
fi
