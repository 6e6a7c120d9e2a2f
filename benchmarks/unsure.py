"""Where a model should say "1 or 7?" rather than guess: the calibrated top probability below which
an answer names the top two (`mnistlab.inference.UNSURE_BELOW`), chosen on the 5,000 validation
digits and the real-input suite (benchmarks/realworld.py), never on the test set.

    cd benchmarks && python unsure.py [--model robust-real] [--data-dir ../../shared/data] [--n 500]

The rule, fixed before anything was scored: among the answers the model accepts as digits, in a pool
where every digit set of the suite and the validation digits weigh alike, the highest cut (of 0.40,
0.45, ..., 0.95) at which at most 1% of the right answers become "A or B?". The table gives, for each
cut, the share of right answers made unsure, the share of wrong answers made unsure (the mistakes it
owns up to), and how often the right digit is one of the two said when the top one is wrong.
"""

import argparse
import sys

import numpy as np

from common import machine
from mnistlab import load_model
from mnistlab.evaluation import model_split
from real_choose import prepared
from realworld import NON_DIGIT_SETS, build_suite

CUTS = np.round(np.arange(0.40, 0.951, 0.05), 2)
RIGHT_MADE_UNSURE = 0.01


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="robust-real")
    p.add_argument("--data-dir")
    p.add_argument("--n", type=int, default=500, help="images per set of the real-input suite")
    args = p.parse_args()
    print(f"machine: {machine()}")
    model = load_model(args.model)
    sets = {name: (images, labels) for name, (images, labels, _) in
            prepared(build_suite(args.n, 0, args.data_dir)).items() if name not in NON_DIGIT_SETS}
    sets["validation"] = tuple(t.numpy() for t in model_split(model, "validation", args.data_dir))
    rows = {cut: [] for cut in CUTS}
    for images, labels in sets.values():
        probs, scores = model.judge(images)
        accepted = scores >= model.card.reject_threshold if scores is not None else np.ones(len(labels), bool)
        order = np.argsort(-probs, axis=1)
        top = probs.max(1)
        right = (order[:, 0] == labels) & accepted
        wrong = (order[:, 0] != labels) & accepted
        second_right = wrong & (order[:, 1] == labels)
        for cut in CUTS:
            unsure = top < cut
            caught = (unsure & wrong).sum()
            rows[cut].append(((unsure & right).sum() / max(right.sum(), 1), caught / max(wrong.sum(), 1),
                              (unsure & second_right).sum() / max(caught, 1)))
    print(f"model: {model.name}; sets: {', '.join(sets)}\n")
    print("| below | right answers made unsure | wrong answers made unsure | of those, the right digit second |")
    print("|---|---|---|---|")
    chosen = None
    for cut in CUTS:
        right, wrong, second = np.mean(rows[cut], axis=0)
        print(f"| {cut:.2f} | {100 * right:.2f}% | {100 * wrong:.1f}% | {100 * second:.1f}% |")
        if right <= RIGHT_MADE_UNSURE:
            chosen = cut
    print(f"\nchosen: {chosen} (the highest cut making at most {100 * RIGHT_MADE_UNSURE:g}% of right answers unsure)")


if __name__ == "__main__":
    sys.exit(main())
