"""Choosing the default pretrained model for real people's digits: candidates that add font digits
(--synthetic-digits) and the pixel kinds that real pictures have (specks, outline, invert_region,
scratch) to the robust-oe recipe, judged on the 5,000-image validation split and on the project's own
real-input suite (benchmarks/realworld.py, fonts never trained on), never on the test set, MNIST-C or
the sets held back for judging the project.

    python benchmarks/real_choose.py [NAME ...] [--data-dir DIR] [--train-only]

Each candidate is trained into runs/real/NAME (its log, which ends with the test figure every run
prints, goes to runs/real/NAME.log, unread). The shipped `robust-real` is scored beside them as it is.

The rule, fixed before any candidate was scored:
- the threshold: each candidate's "not a digit" threshold is refitted to reject REJECT_SHARE of real
  digits: of one pool in which every digit set of the suite and MNIST's validation digits weigh
  alike (each set's scores repeated, cyclically, to the size of the largest; images in which the
  preprocessing found no digit have no score and stay out), so that a set far from MNIST is not
  sacrificed to keep MNIST's own 99%;
- eligible: clean validation accuracy ≥ 99.30% and, at that threshold, ≥ 93% of the suite's
  non-digits (one in which no digit was found counts as not rejected) and of 5,000 validation
  outliers (outliers.outlier_set, all four families) rejected;
- among the eligible, the highest mean over the suite's digit sets of "accepted and right"; where
  none is eligible, the one passing more gates, then the same mean.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from common import machine, trained_candidate
from mnistlab import load_model
from mnistlab.data.outliers import outlier_set
from mnistlab.data.preprocess import NoDigitError, preprocess, quiet_decoder_warnings
from mnistlab.evaluation import model_split
from mnistlab.ood import reject_threshold, rejected_share
from mnistlab.training.config import ROBUST_AUGMENT, recipe
from realworld import NON_DIGIT_SETS, build_suite

OUT = Path("runs") / "real"
KINDS = {"specks": 0.1, "outline": 0.1, "invert_region": 0.1, "scratch": 0.15}
CANDIDATES = {  # name -> changes to the robust-oe preset
    "oe-f15": dict(synthetic_digits=0.15),
    "oe-f15-k": dict(synthetic_digits=0.15, augment={**ROBUST_AUGMENT, "pixel_share": 0.35, **KINDS}),
    "oe-f30-k": dict(synthetic_digits=0.3, augment={**ROBUST_AUGMENT, "pixel_share": 0.35, **KINDS}),
    "oe1-f30-k": dict(outlier_exposure=1.0, synthetic_digits=0.3,
                      augment={**ROBUST_AUGMENT, "pixel_share": 0.35, **KINDS}),
}
REJECT_SHARE = 0.02
GATES = {"clean": 0.993, "non_digits": 0.93}


def trained(name: str, data_dir) -> tuple[Path, float | None]:
    """The candidate's model.pt, trained if missing (seconds of training, or None if it was there)."""
    return trained_candidate(OUT / name, {**recipe("robust-oe"), "seed": 1, "val_size": 5000, **CANDIDATES[name]},
                             data_dir)


def prepared(suite: dict) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """Each set preprocessed once for all candidates: (images the preprocessing read [N, 28, 28], their labels (-1:
    a non-digit), how many it found no digit in)."""
    quiet_decoder_warnings()
    out = {}
    for name, items in suite.items():
        images, labels, unreadable = [], [], 0
        for data, label in items:
            try:
                images.append(preprocess(data))
                labels.append(-1 if label is None else label)
            except NoDigitError:
                unreadable += 1
        out[name] = (np.stack(images) if images else np.zeros((0, 28, 28), np.uint8), np.array(labels), unreadable)
    return out


def score(path, sets: dict, validation: tuple[np.ndarray, np.ndarray], outliers: np.ndarray) -> dict:
    """The candidate's figures at the threshold the rule fits (the module docstring)."""
    model = load_model(path)
    judged = {name: model.judge(images) for name, (images, _, _) in sets.items()}
    val_probs, val_scores = model.judge(validation[0])
    digit_scores = [s for name in sets if name not in NON_DIGIT_SETS and (s := judged[name][1]) is not None] + [
        val_scores]
    largest = max(len(s) for s in digit_scores)
    pool = np.concatenate([np.resize(s, largest) for s in digit_scores])  # each set weighs alike
    threshold = reject_threshold(pool, 1 - REJECT_SHARE)
    per_set = {}
    for name, (_, labels, unreadable) in sets.items():
        probs, scores = judged[name]
        n = len(labels) + unreadable
        rejected = scores < threshold
        right = int(((probs.argmax(1) == labels) & ~rejected).sum())
        per_set[name] = {"n": n, "right": right, "wrong": int((~rejected).sum()) - right,
                         "rejected": int(rejected.sum()), "unreadable": unreadable}
    digits = [name for name in sets if name not in NON_DIGIT_SETS]
    non_digit = [per_set[name]["rejected"] / per_set[name]["n"] for name in sets if name in NON_DIGIT_SETS]
    return {"threshold": threshold, "sets": per_set,
            "digits_right_mean": float(np.mean([per_set[n]["right"] / per_set[n]["n"] for n in digits])),
            "non_digits_rejected": float(np.mean(non_digit)) if non_digit else 0.0,
            "outliers_rejected": rejected_share(model.ood_scores(outliers), threshold),
            "clean_correct": int((val_probs.argmax(1) == validation[1]).sum()), "clean_total": len(validation[1]),
            "validation_kept": float((val_scores >= threshold).mean()), "card_threshold": model.card.reject_threshold}


def gates(r: dict) -> list[bool]:
    return [r["clean_correct"] / r["clean_total"] >= GATES["clean"],
            min(r["non_digits_rejected"], r["outliers_rejected"]) >= GATES["non_digits"]]


def row(name: str, r: dict, names: list[str]) -> str:
    """The candidate's line of the table: each digit set's right / rejected / unreadable, in %."""
    def pct(s: str, outcome: str) -> str:
        return f"{100 * r['sets'][s][outcome] / r['sets'][s]['n']:.1f}"

    cells = [f"{pct(s, 'right')} / {pct(s, 'rejected')} / {pct(s, 'unreadable')}" for s in names
             if s not in NON_DIGIT_SETS]
    cells += [f"{100 * r['non_digits_rejected']:.1f} rejected"] if set(names) & set(NON_DIGIT_SETS) else []
    clean = f"{r['clean_correct']}/{r['clean_total']} = {100 * r['clean_correct'] / r['clean_total']:.2f}%"
    return (f"| {name} | {clean} | {r['threshold']:.3f} ({100 * r['validation_kept']:.2f}%) | " + " | ".join(cells)
            + f" | {100 * r['digits_right_mean']:.2f}% | {100 * r['outliers_rejected']:.1f}% |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help=f"candidates, of {', '.join(CANDIDATES)} (default: all)")
    p.add_argument("--data-dir")
    p.add_argument("--train-only", action="store_true", help="train what is missing, score nothing")
    p.add_argument("--n", type=int, default=500, help="images per set of the real-input suite")
    args = p.parse_args()
    if set(args.names) - set(CANDIDATES):
        p.error(f"unknown candidates: {', '.join(sorted(set(args.names) - set(CANDIDATES)))}")
    print(f"machine: {machine()}")
    paths = {"robust-real (shipped)": "robust-real"}
    for name in args.names or CANDIDATES:
        paths[name], seconds = trained(name, args.data_dir)
        print(f"{name}: {paths[name]} ({'-' if seconds is None else f'{seconds:.0f} s'} of training)", flush=True)
    if args.train_only:
        return
    sets = prepared(build_suite(args.n, 0, args.data_dir))
    validation = tuple(t.numpy() for t in model_split(load_model("robust-real"), "validation", args.data_dir))
    outliers = outlier_set("validation", 5000, seed=1, data_dir=args.data_dir)
    results = {name: score(path, sets, validation, outliers) for name, path in paths.items()}
    names = list(next(iter(results.values()))["sets"])
    print("| candidate | clean validation | threshold (validation kept) | "
          + " | ".join(names) + " | mean of the digit sets | validation outliers rejected |")
    print("|---" * (len(names) + 5) + "|")
    for name, r in results.items():
        print(row(name, r, names), flush=True)
    candidates = {n: r for n, r in results.items() if n in CANDIDATES}
    chosen = max(candidates, key=lambda n: (sum(gates(candidates[n])), candidates[n]["digits_right_mean"]))
    print(f"chosen: {chosen} (gates passed: {sum(gates(candidates[chosen]))} of {len(GATES)}); its threshold keeps "
          f"{100 * results[chosen]['validation_kept']:.2f}% of the validation digits")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "choice.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
