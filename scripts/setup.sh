#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment in .venv with mnistlab and its dependencies.
# Usage: scripts/setup.sh [EXTRAS]   default: report (run plots); e.g. scripts/setup.sh serve,onnx,report
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-report}"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: the CPU build; an open range would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".${extras:+[$extras]}"
echo "mnistlab installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
