"""The seed's recipe (SGD lr 0.1, momentum 0.5, batch 64, 10 epochs) for mlp and cnn, several seeds.

    python benchmarks/seed_recipe.py [--seeds 1 2 3] [--precision auto] [--data-dir DIR]

Prints a Markdown table: test accuracy and seconds of training (evaluation excluded), median and
range over the seeds. The seed's own script took 65 s (mlp) and 77 s (cnn) on this kind of machine.
"""

import argparse
import statistics
import sys
import tempfile
import time

from common import machine, summary
from mnistlab import RunConfig, train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["mlp", "cnn"])
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--precision", default="auto")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    print(f"machine: {machine()}")
    print(f"command: python {' '.join(sys.argv)}\n")
    print("| model | precision | seeds | test accuracy, median [range] | correct (per seed) "
          "| training s, median [range] | wall s per run |")
    print("|---|---|---|---|---|---|---|")
    for model in args.models:
        accs, secs, counts, walls = [], [], [], []
        for seed in args.seeds:
            cfg = RunConfig(model=model, seed=seed, epochs=args.epochs, precision=args.precision)
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory() as out:
                r = train(cfg, out=out, data_dir=args.data_dir, progress=False)
            walls.append(time.perf_counter() - t0)
            accs.append(100 * r.test_accuracy)
            secs.append(r.train_seconds)
            counts.append(str(r.test_correct))
        print(f"| {model} | {args.precision} | {' '.join(map(str, args.seeds))} | {summary(accs)}% "
              f"| {', '.join(counts)} | {summary(secs, '{:.1f}')} | {statistics.median(walls):.1f} |", flush=True)


if __name__ == "__main__":
    main()
