"""How a fine-tuned model's "not a digit" threshold is refitted: rules compared on validation writers.

    python benchmarks/finetune_threshold.py [--init robust-real] [--writers 100 ... 131] [--data-dir ../shared/data]

For each writer: fine-tune `--init` with the few-shot recipe on 10 drawings of each digit (replay from MNIST's first
50,000 training images), then place the threshold by each rule and see what it rejects: the validation outliers,
the writer's 500 held-out drawings, the model's validation digits. The rules:

    pooled     the pool of the validation digits and your held-out drawings (which, from 100 on, weigh as much)
               keeps the share that the init model's threshold kept of the validation digits
    1/10       the same, your drawings weighing a tenth of the pool
    floor 90%  pooled, but never below the 90th percentile of the scores of the outliers the fine-tune learnt from
    floor 95%  likewise, the 95th
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from common import machine
from mnistlab.data.own import carve, load_split
from mnistlab.ood import reject_threshold, rejected_share
from mnistlab.training import finetune as ft
from mnistlab_testkit.handwriting import make_handwriting


def thresholds(mine: np.ndarray, val: np.ndarray, learnt: np.ndarray, keep: float) -> dict[str, float]:
    pooled = ft.pooled_threshold(mine, val, keep)
    tenth = np.repeat(mine, max(1, round(len(val) / len(mine) / 9)))
    return {"pooled": pooled, "1/10": reject_threshold(np.concatenate([val, tenth]), keep),
            "floor 90%": max(pooled, float(np.quantile(learnt, 0.90))),
            "floor 95%": max(pooled, float(np.quantile(learnt, 0.95)))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--init", default="robust-real")
    p.add_argument("--writers", type=int, nargs="+", default=list(range(100, 132)))
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    print(f"machine: {machine()}\n")
    card, state = ft._load_init(args.init)
    x, y = load_split("mnist", "train", args.data_dir)
    replay = (x[:50_000], y[:50_000])
    validation = carve(card.dataset, card.val_size, args.data_dir)[1]
    learnt_outliers, validation_outliers = ft._outlier_sets(1, args.data_dir, print)
    shares: dict[str, list] = {}
    for w in args.writers:
        with tempfile.TemporaryDirectory() as tmp:
            make_handwriting(Path(tmp) / "train", 10, writer=w, seed=0)
            make_handwriting(Path(tmp) / "test", 50, writer=w, seed=1)
            (xu, yu), (xt, _) = load_split(str(Path(tmp)), "train"), load_split(str(Path(tmp)), "test")
        torch.manual_seed(1)
        module = ft._module(card, state, 10, False)
        features = ft.Features(module, card)

        def logits(images, cache=False, module=module, features=features):
            return ft._logits(module, card, images, features, cache)

        def scores(images, cache=False):
            return ft._scores(card, logits(images, cache))

        keep = ft._kept(card, logits, validation)
        ft._train_classifier(module, card, features, (xu, yu), replay, learnt_outliers, ft.RECIPES["few-shot"], 1,
                             say=lambda s: None)
        mine, val = scores(xt), scores(validation[0], True)
        outliers = scores(torch.from_numpy(validation_outliers), True)
        for rule, t in thresholds(mine, val, scores(torch.from_numpy(learnt_outliers), True), keep).items():
            shares.setdefault(rule, []).append([rejected_share(s, t) for s in (outliers, mine, val)])
    print(f"{len(args.writers)} writers ({args.writers[0]}-{args.writers[-1]})\n")
    print("| rule | validation outliers rejected: fewest, median | held-out rejected: most, mean | validation digits "
          "rejected: most |\n|---|---|---|---|")
    for rule, rows in shares.items():
        a = np.array(rows)
        print(f"| {rule} | {a[:, 0].min():.1%}, {np.median(a[:, 0]):.1%} | {a[:, 1].max():.1%}, {a[:, 1].mean():.2%} | "
              f"{a[:, 2].max():.1%} |")


if __name__ == "__main__":
    main()
