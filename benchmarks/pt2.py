"""Parity of `mnistlab export --format pt2` with the PyTorch model, on the whole test set.

    python benchmarks/pt2.py [--data-dir DIR] [--models robust-real classic-cnn]

Each pretrained model is exported with torch.export (batch norm folded, dynamic batch), once
giving logits and once probabilities (--probs), loaded back through load_model, and its
probabilities on the 10,000 test images compared with those of the model itself: how many
images get the same class, and the largest difference of a probability.
"""

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from common import machine
from mnistlab import load_model, load_split
from mnistlab.export import export
from mnistlab.pretrained import catalogue


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir")
    p.add_argument("--models", nargs="+", default=list(catalogue()))
    args = p.parse_args()
    images = load_split("mnist", "test", data_dir=args.data_dir)[0].numpy()
    print(f"machine: {machine()}")
    print(f"command: python benchmarks/pt2.py {' '.join(sys.argv[1:])}\n")
    print("| model | .pt2 outputs | same class | largest probability difference | file size |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for name in args.models:
            ref = load_model(name).predict_proba(images)
            for probs in (False, True):
                path = export(name, "pt2", Path(d) / f"{name}-{probs}.pt2", probs=probs)
                got = load_model(path).predict_proba(images)
                same = int((got.argmax(1) == ref.argmax(1)).sum())
                print(f"| {name} | {'probabilities' if probs else 'logits'} | {same:,}/{len(images):,} "
                      f"| {np.abs(got - ref).max():.2e} | {path.stat().st_size:,} bytes |", flush=True)


if __name__ == "__main__":
    main()
