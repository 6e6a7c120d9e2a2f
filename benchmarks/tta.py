"""Test-time augmentation, judged on the validation split only: never reads the test set.

    python benchmarks/tta.py RUN_DIR ... [--views none shift rotate zoom] [--max-members 5]
                             [--data-dir DIR] [--device cpu]

For each view set of `mnistlab eval --tta`: every run's errors and NLL on the 5,000 images the
`best` preset holds out, and the ensemble that accuracy.py's rule (greedy by validation NLL,
at most --max-members) would choose with it. The runs must hold out the same validation split.
"""

import argparse
import time
from pathlib import Path

from accuracy import greedy_ensemble, validation_probabilities
from common import machine
from mnistlab.evaluation import evaluation_from_probs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="run folders holding model.pt")
    p.add_argument("--views", nargs="+", default=["none", "shift", "rotate", "zoom"])
    p.add_argument("--max-members", type=int, default=5)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    print(f"machine: {machine()}\nvalidation split only; {len(args.runs)} runs", flush=True)
    runs = [Path(r) for r in args.runs]
    print("\n| views | seconds | errors of each run | summed errors | mean NLL | ensemble chosen on validation "
          "| its errors | its NLL | its ECE |\n|---|---|---|---|---|---|---|---|---|")
    for views in args.views:
        t0 = time.perf_counter()
        probs, labels, classes = validation_probabilities(runs, args.data_dir, args.device, views)
        members = [evaluation_from_probs(prob, labels, classes) for prob in probs]
        chosen, _ = greedy_ensemble(probs, labels, classes, args.max_members)
        ens = evaluation_from_probs(sum(probs[i] for i in chosen) / len(chosen), labels, classes)
        errors = [m.total - m.correct for m in members]
        print(f"| {views} | {time.perf_counter() - t0:.0f} | {' '.join(map(str, errors))} | {sum(errors)} "
              f"| {sum(m.loss for m in members) / len(members):.4f} | {', '.join(runs[i].name for i in chosen)} "
              f"| {ens.total - ens.correct} of {ens.total} | {ens.loss:.4f} | {100 * ens.ece:.2f}% |", flush=True)


if __name__ == "__main__":
    main()
