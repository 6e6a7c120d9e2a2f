#!/usr/bin/env bash
# Every GPU figure in one go (issues 4, 5 and 7), for a machine with one CUDA GPU and PyTorch:
#   DATA=path/to/data bash benchmarks/gpu.sh 2>&1 | tee gpu.log
# Runs from the source tree (PYTHONPATH=src); nothing is installed.
# PART=1: fast preset (CUDA graph and eager), classic and accurate presets, torchrun.
# PART=2: torch.compile (default mode) against the CUDA-graph step.
# PART=3: the `best` preset and the ensemble candidates (benchmarks/members.py).
# PART=4: Fashion-MNIST (issue 16): each preset over 3 seeds, then the best recipe for longer, on
#         validation only; $DATA must hold FashionMNIST/raw/ beside MNIST/raw/.
# PART=5: whole commands as a user types them, --device cuda (issue 31): train fast and classic.
set -u
cd "$(dirname "$0")"
export PYTHONPATH="$PWD/../src" PYTHONUNBUFFERED=1 MNISTLAB_OFFLINE=1
DEVICE="${DEVICE:-cuda}" RUNS="${RUNS:-5}" DATA="${DATA:-../data}" PART="${PART:-all}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
if [ "$PART" = all ] || [ "$PART" = 1 ]; then
  echo "== fast preset: its CUDA-graph step (warm-up run first, it pays for the capture)"
  timeout 240 python3 speed.py --device "$DEVICE" --presets fast --runs "$RUNS" --data-dir "$DATA"
  echo "== fast preset, eager step"
  timeout 240 python3 speed.py --device "$DEVICE" --presets fast --runs "$RUNS" --no-cuda-graph --no-inference \
    --data-dir "$DATA"
  echo "== classic recipe and accurate preset"
  timeout 300 python3 speed.py --device "$DEVICE" --presets classic-cnn accurate --runs 1 --no-inference --data-dir "$DATA"
  echo "== torchrun, one GPU process (NCCL)"
  timeout 200 python3 distributed.py --device "$DEVICE" --nproc 1 --runs 3 --data-dir "$DATA"
fi
if [ "$PART" = all ] || [ "$PART" = 2 ]; then
  echo "== fast preset, torch.compile default mode (the warm-up run pays for compilation)"
  timeout 300 python3 speed.py --device "$DEVICE" --presets fast --runs "$RUNS" --compile default \
    --no-inference --data-dir "$DATA"
fi
if [ "$PART" = all ] || [ "$PART" = 3 ]; then
  # issue 5: the best preset alone (its GPU time), then the ensemble candidates eight at a time;
  # choose the ensemble afterwards with accuracy.py --extra "$MEMBERS"/*
  MEMBERS="${MEMBERS:-$(mktemp -d)}"
  echo "== best preset, seed 1, alone; then the ensemble candidates side by side -> $MEMBERS"
  timeout 200 python3 members.py --device "$DEVICE" --out "$MEMBERS" --only best-s1 --parallel 1 --data-dir "$DATA"
  timeout 600 python3 members.py --device "$DEVICE" --out "$MEMBERS" --parallel 8 --deadline 500 --data-dir "$DATA"
fi
if [ "$PART" = all ] || [ "$PART" = 4 ]; then
  FRUNS="${FRUNS:-$(mktemp -d)}"
  echo "== Fashion-MNIST: fast, accurate and best, seeds 1-3 -> $FRUNS"
  timeout 600 python3 datasets.py --dataset fashion-mnist --runs-dir "$FRUNS" --data-dir "$DATA"
  echo "== Fashion-MNIST: the best recipe for 60 and 100 epochs, validation only"
  timeout 600 python3 datasets.py --dataset fashion-mnist --runs-dir "$FRUNS" --presets best --curve 60 100 \
    --data-dir "$DATA"
fi
if [ "$PART" = 5 ]; then  # not in "all": the issue-31 rows alone fit a short session
  echo "== whole commands, --device cuda (fast with its report; classic cnn)"
  timeout 500 python3 whole_command.py --only-cuda --runs "${WRUNS:-3}" --data-dir "$DATA"
fi
