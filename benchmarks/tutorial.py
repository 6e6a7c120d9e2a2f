"""The whole classic command against the tutorial's own script, side by side on this machine.

    python benchmarks/tutorial.py [--data-dir ../shared/data] [--runs 3] [--model cnn]

Each round runs, one after the other and nothing else alongside, the tutorial's script as its
readers would (`../shared/seed/run_tutorial.sh`: torchvision's DataLoader, in a virtual
environment of its own) and `mnistlab train --preset classic`, each as a whole process: start-up,
data, ten epochs, evaluation, saving (and mnistlab's report). The figure is the ratio of the
medians of wall time. "Outside training steps" is mnistlab's wall time minus the training time
it reports (start-up, decoding the data, test passes, checkpoints, the report).
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine

REPO = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return wall, proc.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--model", default="cnn", choices=("cnn", "mlp"))
    p.add_argument("--no-report", action="store_true", help="time mnistlab without its report too")
    args = p.parse_args()
    tutorial = REPO.parent / "shared" / "seed" / "run_tutorial.sh"
    env = {**os.environ, "MODEL": args.model, "MNISTLAB_OFFLINE": "1"}
    mnistlab = [sys.executable, "-m", "mnistlab", "train", "--preset", "classic", "--model", args.model,
                "--data-dir", args.data_dir, "--no-progress"] + (["--no-report"] if args.no_report else [])
    print(f"machine: {machine()}")
    print(f"command: python benchmarks/tutorial.py {' '.join(sys.argv[1:])}\n", flush=True)
    rows = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as out:
            ours, text = timed([*mnistlab, "--out", str(Path(out) / "run")], env)
        train_s = float(re.search(r"; ([\d.]+) s of training", text).group(1))
        accuracy = re.search(r"test accuracy: (\S+ = \S+)", text).group(1)
        theirs, their_text = timed(["bash", str(tutorial), args.data_dir], env)
        their_acc = re.findall(r"\(([\d.]+%)\)", their_text)[-1]
        rows.append((theirs, ours, train_s))
        print(f"round {i + 1}: tutorial {theirs:.1f} s ({their_acc}); mnistlab {ours:.1f} s ({accuracy}; "
              f"{train_s:.1f} s of training steps, {ours - train_s:.1f} s outside them): {theirs / ours:.2f}x",
              flush=True)
    theirs, ours = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
    outside = statistics.median(r[1] - r[2] for r in rows)
    print(f"\nmedian of {args.runs}: tutorial {theirs:.1f} s, mnistlab {ours:.1f} s "
          f"({outside:.1f} s outside training steps): {theirs / ours:.2f}x faster")


if __name__ == "__main__":
    main()
