"""Feature-space "not a digit" scores for robust-real, beside today's energy: an experiment, nothing shipped.

    python benchmarks/feature_scores.py [--data-dir DIR] [--n 500] [--bank 10000]

Reads robust-real's penultimate features (the input of its last Linear layer) and scores each image with:
energy and max softmax (from the logits, at the card's temperature, as today); Mahalanobis (class means and
one shared covariance fitted on MNIST training digits less the 5,000-image validation split, score = minus
the smallest class distance), on raw and on L2-normalised features; kNN (cosine similarity of L2-normalised
features to the k-th nearest of `--bank` random training digits, k = 1, 5, 50); and sums of z-normalised
scores (z statistics from the validation digits). Each score's threshold is refitted by
benchmarks/real_choose.py's rule: reject 2% (energy: also 1, 3, 4 and 5%) of a pool in which every digit
set of the real-input suite (benchmarks/realworld.py, `--n` images each, seed 0) and the validation digits
weigh alike. Printed per score: each digit set's and the non-digits' rejected share (unreadable images
count as not rejected), the share of 5,000 validation outliers (outliers.outlier_set) rejected, and the
AUROC of validation digits against the suite's non-digits. The MNIST test file is never read.
"""

import argparse
import sys

import numpy as np
import torch

from common import machine
from mnistlab.data.outliers import outlier_set
from mnistlab.data.own import carve
from mnistlab.inference import BATCH, load_model
from mnistlab.ood import auroc, ood_score, reject_threshold
from real_choose import REJECT_SHARE, prepared
from realworld import NON_DIGIT_SETS, build_suite

CURVE = (0.01, 0.03, 0.04, 0.05)  # energy's threshold placed at these shares of real digits too


def forward(model, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(logits [N, K], penultimate features [N, D]) of uint8 images, float64, from one pass."""
    last = [m for m in model.backend.module.modules() if isinstance(m, torch.nn.Linear)][-1]
    seen: list[torch.Tensor] = []
    hook = last.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0].detach().float().cpu()))
    try:
        logits = [model.backend(images[i:i + BATCH]) for i in range(0, len(images), BATCH)]
    finally:
        hook.remove()
    return np.concatenate(logits).astype(np.float64), torch.cat(seen).double().numpy()


def unit(f: np.ndarray) -> np.ndarray:
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


class Mahalanobis:
    """Class means and one shared covariance (its pseudo-inverse: dead units have no variance)."""

    def __init__(self, features: np.ndarray, labels: np.ndarray) -> None:
        self.means = np.stack([features[labels == c].mean(0) for c in range(10)])
        centred = features - self.means[labels]
        self.precision = np.linalg.pinv(centred.T @ centred / len(features), hermitian=True)

    def __call__(self, f: np.ndarray) -> np.ndarray:
        d = np.stack([(((f - m) @ self.precision) * (f - m)).sum(1) for m in self.means], 1)
        return -d.min(1)


def knn(bank: np.ndarray, f: np.ndarray, k: int) -> np.ndarray:
    """The cosine similarity of each (unit) feature to its k-th nearest in the (unit) bank."""
    out = [np.partition(f[i:i + 2000] @ bank.T, -k, axis=1)[:, -k] for i in range(0, len(f), 2000)]
    return np.concatenate(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir")
    p.add_argument("--n", type=int, default=500, help="images per set of the real-input suite")
    p.add_argument("--bank", type=int, default=10000, help="training digits the kNN scores compare with")
    args = p.parse_args()
    print(f"command: python {' '.join(sys.argv)}\nmachine: {machine()}", flush=True)
    model = load_model("robust-real")
    card = model.card
    (train, train_labels), (val, _) = carve(card.dataset, card.val_size, args.data_dir)
    sets = prepared(build_suite(args.n, 0, args.data_dir))
    images = {"validation": val.numpy(), **{name: s[0] for name, s in sets.items()},
              "outliers": outlier_set("validation", 5000, seed=1, data_dir=args.data_dir)}
    unreadable = {name: s[2] for name, s in sets.items()}
    _, train_f = forward(model, train.numpy())
    maha, maha_unit = Mahalanobis(train_f, train_labels.numpy()), Mahalanobis(unit(train_f), train_labels.numpy())
    bank = unit(train_f[np.random.default_rng(0).choice(len(train_f), args.bank, replace=False)])
    dead = int((train_f.max(0) <= 0).sum())
    print(f"features: {train_f.shape[1]} ({dead} never active on training digits); fitted on {len(train_f)} "
          f"training digits, kNN bank {args.bank}", flush=True)

    scores: dict[str, dict[str, np.ndarray]] = {}
    for name, x in images.items():
        logits, f = forward(model, x)
        s = {"energy": ood_score(logits, "energy", card.temperature),
             "msp": ood_score(logits, "msp", card.temperature, card.head),
             "mahalanobis": maha(f), "mahalanobis-l2": maha_unit(unit(f))}
        s |= {f"knn-{k}": knn(bank, unit(f), k) for k in (1, 5, 50)}
        for score, values in s.items():
            scores.setdefault(score, {})[name] = values
    for a, b in (("energy", "mahalanobis"), ("energy", "mahalanobis-l2"), ("energy", "knn-50")):
        def z(score: str, name: str) -> np.ndarray:
            return (scores[score][name] - scores[score]["validation"].mean()) / scores[score]["validation"].std()

        scores[f"z({a})+z({b})"] = {n: z(a, n) + z(b, n) for n in images}

    digit_sets = [n for n in sets if n not in NON_DIGIT_SETS] + ["validation"]
    head = ["score", "threshold", *digit_sets, *NON_DIGIT_SETS, "validation outliers",
            "AUROC (validation vs non-digits)"]
    print("\n| " + " | ".join(head) + " |\n" + "|---" * len(head) + "|")
    # each score at real_choose's share; then energy's trade-off: the threshold at other shares of real digits
    rows = [(name, s, REJECT_SHARE) for name, s in scores.items()]
    rows += [(f"energy, {100 * share:g}% of real digits", scores["energy"], share) for share in CURVE]
    rows += [("energy (card threshold)", scores["energy"], card.reject_threshold)]
    for name, s, share in rows:
        threshold = share
        if name != "energy (card threshold)":  # real_choose's rule: every digit set weighs alike
            largest = max(len(s[n]) for n in digit_sets)
            pool = np.concatenate([np.resize(s[n], largest) for n in digit_sets])
            threshold = reject_threshold(pool, 1 - share)
        cells = [f"{100 * (s[n] < threshold).sum() / (len(s[n]) + unreadable.get(n, 0)):.1f}"
                 for n in [*digit_sets, *NON_DIGIT_SETS, "outliers"]]
        area = auroc(s["validation"], np.concatenate([s[n] for n in NON_DIGIT_SETS]))
        print(f"| {name} | {threshold:.4g} | " + " | ".join(cells) + f" | {area:.4f} |", flush=True)


if __name__ == "__main__":
    main()
