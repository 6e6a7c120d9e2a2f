"""Load time of a model: its .safetensors file against the same weights in a .pt checkpoint.

    python benchmarks/load.py [--models robust-real classic-cnn] [--reps 50]

For each pretrained model, the shipped .safetensors file and a model.pt holding the same card
and tensors (written as `mnistlab train` writes one) lie in a temporary folder; both are
loaded in turn, interleaved in one process so that a busy machine slows both alike, `reps`
times each after one warm-up. Two figures each: reading the file (card and tensors,
checkpoints.load_weights) and the whole load_model (the module rebuilt, the weights copied
in). The files are in the page cache after the warm-up, as a model loaded again would be.
"""

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine
from mnistlab import load_model
from mnistlab.checkpoints import load_weights, save_checkpoint
from mnistlab.pretrained import catalogue


def lscpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no lscpu)"
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "unknown")


def timed(fn, path) -> float:
    t0 = time.perf_counter()
    fn(path)
    return 1000 * (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(catalogue()))
    p.add_argument("--reps", type=int, default=50)
    args = p.parse_args()
    print(f"machine: {machine()}; lscpu: {lscpu_model()}")
    print(f"command: python benchmarks/load.py {' '.join(sys.argv[1:])}\n")
    print(f"| model | file | size | read the file: ms, median of {args.reps} [min-max] | load_model: ms, median "
          f"[min-max] |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for name in args.models:
            st = Path(d) / f"{name}.safetensors"
            shutil.copyfile(catalogue()[name].path, st)
            card, weights = load_weights(st)
            pt = Path(d) / f"{name}.pt"
            save_checkpoint(card, {"model_state": weights}, pt)
            times = {(path, fn): [] for path in (st, pt) for fn in (load_weights, load_model)}
            for key in times:  # warm-up: imports, the page cache
                key[1](key[0])
            for _ in range(args.reps):
                for (path, fn), ts in times.items():
                    ts.append(timed(fn, path))
            for path in (st, pt):
                read, whole = times[(path, load_weights)], times[(path, load_model)]
                print(f"| {name} | {path.suffix} | {path.stat().st_size:,} bytes "
                      f"| {statistics.median(read):.2f} [{min(read):.2f}-{max(read):.2f}] "
                      f"| {statistics.median(whole):.2f} [{min(whole):.2f}-{max(whole):.2f}] |", flush=True)


if __name__ == "__main__":
    main()
