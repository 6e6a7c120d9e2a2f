"""Training throughput under torchrun with 1, 2, ... processes (images per second of training).

    python benchmarks/distributed.py [--nproc 1 2] [--runs 3] [--device cpu|cuda] [--data-dir DIR]

Each configuration is launched with `torchrun --standalone` (loopback only) and trains the
fast preset for --epochs epochs with the same global batch; throughput is the number of
training images served divided by the training seconds rank 0 records. On a CPU each
process gets cores/nproc threads. Median and range over --runs runs.
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import machine, summary
from mnistlab.training.runs import read_run_events


def one_run(nproc: int, args) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as out:
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // nproc))}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               "-m", "mnistlab", "train", "--preset", "fast", "--epochs", str(args.epochs), "--device", args.device,
               "--no-progress", "--out", out, "--eval-every", "1000"]
        if args.data_dir:
            cmd += ["--data-dir", str(Path(args.data_dir).resolve())]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode:
            sys.exit(proc.stderr[-3000:])
        events = read_run_events(out)
        epochs = [e for e in events if e["event"] == "epoch"]
        test = [e for e in events if e["event"] == "test"][-1]
        return sum(e["samples"] for e in epochs) / epochs[-1]["train_seconds"], test["correct"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nproc", nargs="+", type=int, default=[1, 2])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--epochs", type=float, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-dir")
    args = p.parse_args()
    print(f"machine: {machine()}")
    print(f"command: python benchmarks/distributed.py {' '.join(sys.argv[1:])}\n")
    print("| processes | global batch | training images/s, median [range] | test correct per run |")
    print("|---|---|---|---|")
    for n in args.nproc:
        results = [one_run(n, args) for _ in range(args.runs)]
        print(f"| {n} | 128 ({128 // n} per process) | {summary([r[0] for r in results], '{:,.0f}')} "
              f"| {', '.join(str(r[1]) for r in results)} |", flush=True)


if __name__ == "__main__":
    main()
