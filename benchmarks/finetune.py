"""Few-shot fine-tuning on synthetic handwriting (issue 22): held-out and MNIST test accuracy, before and after.

    python benchmarks/finetune.py [--init robust-real] [--writers 0 1 2 3 4 5] [--data-dir ../shared/data]

Each writer (tests/handwriting.py: pen-stroke digits in one writer's consistent style) gives 10
drawings of each digit to fine-tune on and 50 other drawings of each to judge on, never seen in
training; the recipe was fixed beforehand on writers 100 and 101 (BENCHMARKS.md).
"""

import argparse
import statistics
import tempfile
from pathlib import Path

from common import machine
from mnistlab.training.finetune import finetune
from mnistlab_testkit.handwriting import make_handwriting


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--init", default="robust-real")
    p.add_argument("--writers", type=int, nargs="+", default=list(range(6)))
    p.add_argument("--train", type=int, default=10, help="drawings of each digit to fine-tune on")
    p.add_argument("--held-out", type=int, default=50, help="drawings of each digit to judge on")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    print(f"machine: {machine()}\n")
    print("| writer | held-out before | after | MNIST test before | after | threshold | held-out rejected | "
          "validation outliers rejected | fine-tuning s |\n|---|---|---|---|---|---|---|---|---|")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for w in args.writers:
            root = Path(tmp) / f"writer{w}"
            make_handwriting(root / "train", args.train, writer=w, seed=0)
            make_handwriting(root / "test", args.held_out, writer=w, seed=1)
            r = finetune(args.init, str(root), out=root / "ft", data_dir=args.data_dir, say=lambda s: None)
            rows.append(r)
            (b, n), (a, _) = r.held_out_before, r.held_out_after
            rj = r.reject
            said = ("- | - | -" if rj is None else f"{rj.threshold:.3f} | {100 * rj.held_out_rejected:.1f}% | "
                    + ("-" if rj.outliers_rejected is None else f"{100 * rj.outliers_rejected:.1f}%"))
            print(f"| {w} | {b}/{n} | {a}/{n} | {r.base_before[0]} | {r.base_after[0]} | {said} | {r.seconds:.1f} |",
                  flush=True)
    errors_before = sum(r.held_out_before[1] - r.held_out_before[0] for r in rows)
    errors_after = sum(r.held_out_after[1] - r.held_out_after[0] for r in rows)
    total = sum(r.held_out_after[1] for r in rows)
    print(f"\nheld-out: {total - errors_before}/{total} = {100 * (1 - errors_before / total):.2f}% before, "
          f"{total - errors_after}/{total} = {100 * (1 - errors_after / total):.2f}% after "
          f"({errors_before} -> {errors_after} errors)")
    drops = [(r.base_before[0] - r.base_after[0]) / 100 for r in rows]
    print(f"MNIST test: change per writer {', '.join(f'{-d:+.2f}' for d in drops)} points "
          f"(worst {-max(drops):+.2f}); fine-tuning {statistics.median(r.seconds for r in rows):.1f} s median")


if __name__ == "__main__":
    main()
