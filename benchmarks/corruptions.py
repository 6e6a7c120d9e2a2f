"""`mnistlab eval --corruptions` timed: MNIST-C's 15 corruptions made on the 10,000 test images,
and each model judged on them and on the clean images; the table for BENCHMARKS.md.

    python benchmarks/corruptions.py robust-real classic-cnn [--data-dir DIR] [--seed 0]

Each model is timed from loading to the last corruption's figures, as the command runs it
(the corrupted images are made again for each model, as `eval --corruptions` would).
"""

import argparse
import time

from common import machine
from mnistlab.robustness import evaluate_corruptions


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--data-dir")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    print(f"machine: {machine()}")
    reports = {}
    for model in args.models:
        start = time.perf_counter()
        reports[model] = evaluate_corruptions([model], data_dir=args.data_dir, seed=args.seed)
        print(f"{model}: all 15 corruptions and the clean split, 10,000 images each: "
              f"{time.perf_counter() - start:.1f} s")
    print("\n| corruption | " + " | ".join(f"`{m}`" for m in args.models) + " |")
    print("|---|" + "---|" * len(args.models))
    first = reports[args.models[0]]
    for name in ["clean", *first.results]:
        cells = []
        for r in reports.values():
            ev = r.clean if name == "clean" else r.results[name]
            cells.append(f"{ev.correct} = {100 * ev.accuracy:.2f}% (ECE {100 * ev.ece:.1f}%, NLL {ev.loss:.3f})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("| **mean of 15** | " + " | ".join(
        f"**{100 * r.mean_accuracy:.2f}%** (ECE {100 * r.mean_ece:.1f}%, NLL {r.mean_nll:.3f}); error "
        f"{r.error_ratio:.1f}x clean" for r in reports.values()) + " |")


if __name__ == "__main__":
    main()
