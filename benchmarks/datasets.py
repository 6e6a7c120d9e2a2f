"""A dataset's presets over several seeds: exact test counts, time, parameters (issue 16).

    python benchmarks/datasets.py --dataset fashion-mnist --runs-dir RUNS [--presets fast accurate best]
                                  [--seeds 1 2 3] [--data-dir DIR] [--curve EPOCHS ...]

Each run is `mnistlab train --preset P --dataset D --seed S --out RUNS/P-sS --no-report`, in a
process of its own, one after another; a run folder that already holds model.pt is reused (an
interrupted benchmark resumes, and runs made by hand with the same command count). The test
figure is the final epoch's, looked at once; where the preset holds out a validation split, its
last validation figure is printed beside it.

With --curve, the time-to-accuracy curve of each preset's recipe instead, on validation only:
one run per number of epochs (`--epochs E --val-size 5000`, the first seed), printing its last
validation figure and training time; the test set is not read.
"""

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from common import machine, summary
from mnistlab import format_accuracy, load_model
from mnistlab.training.runs import read_run_events


def run(preset: str, dataset: str, seed: int, out: Path, data_dir, flags: tuple[str, ...] = ()) -> None:
    if (out / "model.pt").is_file():
        return
    cmd = [sys.executable, "-m", "mnistlab", "train", "--preset", preset, "--dataset", dataset, "--seed", str(seed),
           "--out", str(out), "--no-report", "--no-progress", *flags] + (["--data-dir", data_dir] if data_dir else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--runs-dir", required=True)
    p.add_argument("--presets", nargs="+", default=["fast", "accurate", "best"])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--data-dir")
    p.add_argument("--curve", type=float, nargs="+", metavar="EPOCHS",
                   help="instead: each preset's recipe for these numbers of epochs, on validation only")
    args = p.parse_args()
    print(f"machine: {machine()}")
    print(f"command: python benchmarks/datasets.py {' '.join(sys.argv[1:])}\n")
    if args.curve:
        return curve(args)
    print("| preset | runs | test accuracy, mean [range] | correct per seed | training s, median [range] "
          "| parameters | validation (last epoch) |\n|---|---|---|---|---|---|---|")
    for preset in args.presets:
        rows = []
        for seed in args.seeds:
            out = Path(args.runs_dir) / f"{preset}-s{seed}"
            run(preset, args.dataset, seed, out, args.data_dir)
            events = read_run_events(out)
            test = [e for e in events if e["event"] == "test"][-1]
            val = [e for e in events if e["event"] == "validation"]
            seconds = [e for e in events if e["event"] == "epoch"][-1]["train_seconds"]
            rows.append((test["correct"], test["total"], seconds, val[-1] if val else None))
        accs = [100 * c / t for c, t, _, _ in rows]
        params = sum(p.numel() for p in load_model(Path(args.runs_dir) / f"{preset}-s{args.seeds[0]}" / "model.pt")
                     .backend.module.parameters())
        vals = ", ".join(format_accuracy(v["correct"], v["total"]) for *_, v in rows if v) or "none held out"
        print(f"| {preset} | {len(rows)} | {statistics.mean(accs):.2f} [{min(accs):.2f}-{max(accs):.2f}] "
              f"| {', '.join(str(c) for c, *_ in rows)} | {summary([s for _, _, s, _ in rows], '{:.1f}')} "
              f"| {params:,} | {vals} |", flush=True)


def curve(args) -> None:
    print("| preset | epochs | validation (last epoch) | training s |\n|---|---|---|---|")
    for preset in args.presets:
        for epochs in args.curve:
            out = Path(args.runs_dir) / f"curve-{preset}-{epochs:g}ep"
            flags = ("--epochs", f"{epochs:g}", "--val-size", "5000")
            run(preset, args.dataset, args.seeds[0], out, args.data_dir, flags)
            events = read_run_events(out)
            val = [e for e in events if e["event"] == "validation"][-1]
            seconds = [e for e in events if e["event"] == "epoch"][-1]["train_seconds"]
            print(f"| {preset} | {epochs:g} | {format_accuracy(val['correct'], val['total'])} | {seconds:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
