#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment in .venv with mnistlab and its dependencies.
# Usage: scripts/setup.sh [EXTRAS]   e.g. scripts/setup.sh serve,onnx
# The report extra (matplotlib) always comes along: training, the main job, draws each run's report.
# EXTRAS add to it (pyproject.toml, [project.optional-dependencies]): serve, onnx, tensorboard,
# data, docs, or test for all of them and the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="report${1:+,$1}"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: the CPU build; an open range would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[$extras]"
echo "mnistlab installed in .venv with [$extras] ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
echo "run it as .venv/bin/mnistlab, or 'source .venv/bin/activate' first to type plain mnistlab"
