"""Choosing the default pretrained model (issue 21): robust-recipe candidates with outlier
exposure, each judged on the 5,000-image validation split only, never on the test set or on
MNIST-C's 15 test corruptions.

    python benchmarks/default_choose.py [NAME ...] [--data-dir DIR]     # train what is missing, then score

Every candidate is the `robust` preset (ROBUST_AUGMENT, Adam one-cycle, label smoothing 0.1,
seed 1, --val-size 5000) with the changes in CANDIDATES, trained into runs/default/NAME. Its
training log (which holds the test figure every run ends with) goes to runs/default/NAME.log,
unread. Each candidate gets, on validation:

- clean accuracy and ECE;
- under the 14 held-out corruptions (corruptions.HELD_OUT, seed 0): mean and worst accuracy, and
  the largest ECE;
- "not a digit": AUROC of its card's reject score, the validation digits against 5,000
  validation outliers (outliers.outlier_set("validation"), all four families), and the share of
  held-out-corrupted validation digits wrongly rejected at its card's threshold.

The rule, fixed before any candidate was scored: the default keeps ten outputs (a softmax head),
so that the page's fine-tune and every export keep working. Eligible are the candidates with clean
validation accuracy ≥ 99.30% and validation AUROC ≥ 0.995 (the issue's clean and Fashion-MNIST
goals, carried over to validation), and at most 5% of held-out-corrupted digits rejected; among
them, the highest held-out mean accuracy. Where none is eligible, the one that passes the most of
the three gates, then the highest held-out mean.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from common import machine, trained_candidate
from mnistlab import load_model
from mnistlab.data.corruptions import HELD_OUT, corrupt
from mnistlab.data.outliers import outlier_set
from mnistlab.evaluation import evaluation_from_logits, model_split
from mnistlab.ood import auroc, rejected_share
from mnistlab.training.config import ROBUST_AUGMENT, recipe
from ood import logits

OUT = Path("runs") / "default"
WIDE = {"channels": [32, 64], "hidden": 256}
CANDIDATES = {  # name -> changes to the robust preset
    "S6-oe": dict(outlier_exposure=0.5),
    "W10-oe": dict(model_config=WIDE, epochs=10, outlier_exposure=0.5),
    "W10-oe-cf": dict(model_config=WIDE, epochs=10, outlier_exposure=0.5, outlier_families="characters,fashion"),
    "W10-oe.25-cf": dict(model_config=WIDE, epochs=10, outlier_exposure=0.25, outlier_families="characters,fashion"),
    "S12-oe-cf": dict(epochs=12, outlier_exposure=0.5, outlier_families="characters,fashion"),
    # added after the five above were scored: none reached the clean gate, W10-oe came nearest
    "W15-oe": dict(model_config=WIDE, epochs=15, outlier_exposure=0.5),
    "W15-oe-p35": dict(model_config=WIDE, epochs=15, outlier_exposure=0.5,
                       augment={**ROBUST_AUGMENT, "pixel_share": 0.35}),
}
GATES = {"clean": 0.993, "auroc": 0.995, "rejected": 0.05}


def trained(name: str, data_dir) -> tuple[Path, float | None]:
    """The candidate's model.pt, trained if missing (seconds of training, or None if it was there)."""
    return trained_candidate(OUT / name, {**recipe("robust"), "seed": 1, "val_size": 5000, **CANDIDATES[name]},
                             data_dir)


def score(path: Path, outliers: np.ndarray, data_dir) -> dict:
    model = load_model(path)
    card = model.card
    images, labels = (t.numpy() for t in model_split(model, "validation", data_dir))

    def judged(z):
        ev = evaluation_from_logits(torch.from_numpy(z), torch.from_numpy(labels), card.classes, card.temperature,
                                    head=card.head)
        return ev, model.ood_scores_of(z)

    clean, s_clean = judged(logits(model, images))
    held = {name: judged(logits(model, corrupt(images, name, seed=0))) for name in HELD_OUT}
    s_out = model.ood_scores_of(logits(model, outliers))
    rejected = {name: rejected_share(s, card.reject_threshold) for name, (_, s) in held.items()}
    accuracy = {name: ev.accuracy for name, (ev, _) in held.items()}
    return {"correct": clean.correct, "total": clean.total, "accuracy": clean.accuracy, "ece": clean.ece,
            "held_out": accuracy, "held_out_mean": float(np.mean(list(accuracy.values()))),
            "held_out_max_ece": max(ev.ece for ev, _ in held.values()),
            "score": card.reject_score, "threshold": card.reject_threshold, "auroc": auroc(s_clean, s_out),
            "held_out_rejected": rejected, "held_out_rejected_mean": float(np.mean(list(rejected.values()))),
            "bytes": path.with_suffix(".safetensors").stat().st_size}


def gates(r: dict) -> list[bool]:
    return [r["accuracy"] >= GATES["clean"], r["auroc"] >= GATES["auroc"],
            r["held_out_rejected_mean"] <= GATES["rejected"]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help=f"candidates, of {', '.join(CANDIDATES)} (default: all)")
    p.add_argument("--data-dir")
    args = p.parse_args()
    if set(args.names) - set(CANDIDATES):
        p.error(f"unknown candidates: {', '.join(sorted(set(args.names) - set(CANDIDATES)))}")
    print(f"machine: {machine()}")
    outliers = outlier_set("validation", 5000, seed=1, data_dir=args.data_dir)
    results = {}
    for name in args.names or CANDIDATES:
        path, seconds = trained(name, args.data_dir)
        results[name] = score(path, outliers, args.data_dir) | {"train_seconds": seconds,
                                                                 "changes": CANDIDATES[name]}
        r = results[name]
        worst = min(r["held_out"], key=r["held_out"].get)
        worst_r = max(r["held_out_rejected"], key=r["held_out_rejected"].get)
        print(f"| {name} | {r['correct']}/{r['total']} = {100 * r['accuracy']:.2f}% (ECE {100 * r['ece']:.2f}%) | "
              f"{100 * r['held_out_mean']:.2f}%, {worst} {100 * r['held_out'][worst]:.2f}% | "
              f"{100 * r['held_out_max_ece']:.1f}% | {r['score']} {r['auroc']:.4f} | "
              f"{100 * r['held_out_rejected_mean']:.2f}%, {worst_r} {100 * r['held_out_rejected'][worst_r]:.1f}% | "
              f"{r['bytes'] / 1024:.0f} KiB | {'-' if seconds is None else f'{seconds:.0f} s'} |", flush=True)
    chosen = max(results, key=lambda n: (sum(gates(results[n])), results[n]["held_out_mean"]))
    print(f"chosen: {chosen} (gates passed: {sum(gates(results[chosen]))} of 3)")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "validation.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
