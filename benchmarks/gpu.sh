#!/usr/bin/env bash
# Every GPU figure in one go (issues 4 and 7), for a machine with one CUDA GPU and PyTorch:
#   DATA=path/to/data bash benchmarks/gpu.sh 2>&1 | tee gpu.log
# Runs from the source tree (PYTHONPATH=src); nothing is installed.
set -u
cd "$(dirname "$0")"
export PYTHONPATH="$PWD/../src" PYTHONUNBUFFERED=1 MNISTLAB_OFFLINE=1
DEVICE="${DEVICE:-cuda}" RUNS="${RUNS:-5}" DATA="${DATA:-../data}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
echo "== fast preset, eager (warm-up run first)"
timeout 240 python3 speed.py --device "$DEVICE" --presets fast --runs "$RUNS" --data-dir "$DATA"
echo "== fast preset, torch.compile (the warm-up run pays for compilation)"
timeout 300 python3 speed.py --device "$DEVICE" --presets fast --runs "$RUNS" --compile --no-inference --data-dir "$DATA"
echo "== seed recipe and accurate preset"
timeout 300 python3 speed.py --device "$DEVICE" --presets seed-cnn accurate --runs 1 --no-inference --data-dir "$DATA"
echo "== torchrun, one GPU process (NCCL)"
timeout 200 python3 distributed.py --device "$DEVICE" --nproc 1 --runs 3 --data-dir "$DATA"
