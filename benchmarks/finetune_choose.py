"""Choose the few-shot recipe (issue 22) on validation writers, never on the writers or the test set it is judged on.

    python benchmarks/finetune_choose.py [--init robust-real] [--writers 100 101 102 103] [--data-dir ../shared/data]
                                         [--only NAME ...]

For each candidate and writer: fine-tune `--init` (a pretrained name or a weights file) on 10 drawings of each
digit as `mnistlab train --init` does (the classifier alone learns, on the features of the rest, frozen), with
replay drawn from MNIST's first 50,000 training images only; judge on 50 other drawings of each digit; probe what
the model kept on MNIST training images 50,000-59,999, which the replay never draws; refit the threshold as the
fine-tune does and see what share of the validation outliers it still rejects.

The rule, fixed before scoring: a candidate is eligible where, for every writer, the refitted threshold rejects at
least 90% of the validation outliers (issue 29's goal for a fine-tuned model) and at most 2% of the held-out
drawings. Of those, the most held-out drawings right; then the smallest worst probe change; then the fewest
augmentations (the fastest). The probe's change is also held within issue 22's 0.2 points: the rule first lacked
that gate, and on the bn-cnn default it would have chosen a candidate that lost 0.37 points (BENCHMARKS.md). And
the held-out drawings rejected are gated at 2% on average over the writers and 5% for any one: the threshold keeps
98.4% of its pool by design, and over 32 writers one of them lies above 2% by chance alone.
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

from common import machine
from mnistlab.data.own import carve, load_split
from mnistlab.training import finetune as ft
from mnistlab_testkit.handwriting import make_handwriting

BASE = dict(steps=300, lr=3e-2, batch=64, replay=64, outliers=0.5, augment=16, label_smoothing=0.1, blend=0.7)
CANDIDATES = {
    "300 steps at 3e-2, 16 augmentations, blend 0.7": BASE,
    "lr 1e-2": BASE | {"lr": 1e-2},
    "lr 1e-1": BASE | {"lr": 1e-1},
    "200 steps": BASE | {"steps": 200},
    "blend 0.5": BASE | {"blend": 0.5},
    "no blend": BASE | {"blend": 1.0},
    "8 augmentations": BASE | {"augment": 8},
    "4 augmentations": BASE | {"augment": 4},
    # none of the above was eligible (held-out rejected 2.2% at best): outliers weigh more, or the steps go further
    "as many outliers as digits": BASE | {"outliers": 1.0},
    "as many outliers as digits, 8 augmentations": BASE | {"outliers": 1.0, "augment": 8},
    "twice as many outliers as digits": BASE | {"outliers": 2.0},
    "500 steps": BASE | {"steps": 500},
    # the chosen one ("as many outliers as digits, 8 augmentations") kept 13.5% and 39.5% of the validation outliers
    # rejected for two of the six judging writers: on eight validation writers (100-107), these
    "twice as many outliers, 8 augmentations": BASE | {"outliers": 2.0, "augment": 8},
    "as many outliers, 8 augmentations, no blend": BASE | {"outliers": 1.0, "augment": 8, "blend": 1.0},
    "four times as many outliers, 8 augmentations": BASE | {"outliers": 4.0, "augment": 8},
    # for the bn-cnn default, whose two-layer classifier moved MNIST by 0.2-0.37 points in all of the above
    "as many outliers, 8 augmentations, blend 0.5": BASE | {"outliers": 1.0, "augment": 8, "blend": 0.5},
    "as many outliers, 8 augmentations, lr 1e-2": BASE | {"outliers": 1.0, "augment": 8, "lr": 1e-2},
    "as many outliers, 8 augmentations, lr 1e-2, blend 0.5": BASE | {"outliers": 1.0, "augment": 8, "lr": 1e-2,
                                                                     "blend": 0.5},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--init", default="robust-real")
    p.add_argument("--writers", type=int, nargs="+", default=[100, 101, 102, 103])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--only", nargs="+", choices=list(CANDIDATES), help="these candidates (default: all)")
    args = p.parse_args()
    print(f"machine: {machine()}\n")
    card, state = ft._load_init(args.init)
    x, y = load_split("mnist", "train", args.data_dir)
    replay, probe = (x[:50_000], y[:50_000]), (x[50_000:], y[50_000:])
    validation = carve(card.dataset, card.val_size, args.data_dir)[1] if card.val_size else None
    outliers = ft._outlier_sets(1, args.data_dir, print)
    start = ft._module(card, state, 10, False)
    probe_before = ft._correct(ft._logits(start, card, probe[0], ft.Features(start, card), True), probe[1], 10)[0]
    print(f"probe before: {probe_before}/10000\n")
    print("| candidate | held-out after (all writers) | worst probe change (points) | validation outliers rejected: "
          "fewest, median | held-out rejected: mean, most | eligible | s a writer |\n|---|---|---|---|---|---|---|")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = {}
        for w in args.writers:
            root = Path(tmp) / f"writer{w}"
            make_handwriting(root / "train", 10, writer=w, seed=0)
            make_handwriting(root / "test", 50, writer=w, seed=1)
            data[w] = load_split(str(root), "train"), load_split(str(root), "test")
        for name, recipe in CANDIDATES.items():
            if args.only and name not in args.only:
                continue
            right, total, drops, rejected, mine_rejected, t0 = 0, 0, [], [], [], time.perf_counter()
            for (xu, yu), (xt, yt) in data.values():
                torch.manual_seed(1)
                module = ft._module(card, state, 10, False)
                features = ft.Features(module, card)

                def logits(images, cache=False, module=module, features=features):
                    return ft._logits(module, card, images, features, cache)

                keep = ft._kept(card, logits, validation)
                ft._train_classifier(module, card, features, (xu, yu), replay, outliers[0], recipe, 1,
                                     say=lambda s: None)
                held_out = logits(xt)
                a, n = ft._correct(held_out, yt, 10)
                right, total = right + a, total + n
                drops.append((ft._correct(logits(probe[0], True), probe[1], 10)[0] - probe_before) / 100)
                reject = ft._refit(card, logits, held_out, validation, outliers, keep)
                rejected.append(reject.outliers_rejected)
                mine_rejected.append(reject.held_out_rejected)
            eligible = (min(rejected) >= 0.9 and sum(mine_rejected) / len(mine_rejected) <= 0.02
                        and max(mine_rejected) <= 0.05 and min(drops) >= -0.2)
            rows[name] = (eligible, right, min(drops), -recipe["augment"])
            print(f"| {name} | {right}/{total} = {100 * right / total:.2f}% | {min(drops):+.2f} | {min(rejected):.1%}, "
                  f"{sorted(rejected)[len(rejected) // 2]:.1%} | {sum(mine_rejected) / len(mine_rejected):.2%}, "
                  f"{max(mine_rejected):.1%} | {'yes' if eligible else 'no'} | "
                  f"{(time.perf_counter() - t0) / len(data):.1f} |", flush=True)
    chosen = [name for name, row in rows.items() if row[0]]
    print(f"\nchosen: {max(chosen, key=lambda name: rows[name][1:]) if chosen else 'none eligible'}")


if __name__ == "__main__":
    main()
