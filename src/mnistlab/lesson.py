"""The softmax lesson in NumPy: softmax, log-softmax, negative log-likelihood, cross-entropy.

Written to be read next to torch's own functions, which the tests check them against. Not only
a lesson: sigmoid, softmax and log_softmax are heads.py's, with which every model's logits become
probabilities, so the functions taught here are the ones that answer `predict` and `serve`.
"""

from __future__ import annotations

import numpy as np

from .heads import log_softmax, sigmoid, softmax

__all__ = ["cross_entropy", "lesson", "log_softmax", "measured", "nll_loss", "sigmoid", "softmax"]


def nll_loss(log_probs: np.ndarray, targets: np.ndarray) -> float:
    """Mean negative log-likelihood of the target classes, given log-probabilities [N, K]."""
    log_probs = np.atleast_2d(log_probs)
    targets = np.atleast_1d(targets)
    return float(-log_probs[np.arange(len(targets)), targets].mean())


def cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    """Cross-entropy = NLL of log-softmax: what torch.nn.CrossEntropyLoss computes from logits."""
    return nll_loss(log_softmax(np.atleast_2d(logits)), targets)


def lesson() -> str:
    """The tutorial's argument, worked through with its own numbers."""
    import torch

    z = np.array([0.2, 0.1, -0.1])
    sig, soft = sigmoid(z), softmax(z)
    one_hot = np.array([1, 0, 0])
    by_hand = float((-one_hot * np.log(soft)).sum())
    torch_one = torch.nn.CrossEntropyLoss()(torch.tensor([z.tolist()]), torch.tensor([0])).item()
    batch_logits = np.array([[0.1, 0.2, 0.9], [1.1, 0.1, 0.2], [0.2, 2.1, 0.1]])
    batch_y = np.array([2, 0, 1])
    torch_batch = torch.nn.CrossEntropyLoss()(torch.tensor(batch_logits), torch.tensor(batch_y)).item()
    big = np.array([1000.0, -1000.0, 0.0])
    return "\n".join([
        "1. Ten sigmoid outputs are ten separate yes/no answers, not one distribution.",
        f"   z = {z.tolist()}: sigmoid(z) = {np.round(sig, 4).tolist()}, sum = {sig.sum():.4f}",
        f"   softmax(z) = {np.round(soft, 4).tolist()}, sum = {soft.sum():.4f} (every entry > 0)",
        "2. Negative log-likelihood of the true class (y = class 0), by hand in NumPy:",
        f"   -sum(y * log(softmax(z))) = {by_hand:.4f}",
        "3. torch.nn.CrossEntropyLoss takes the raw logits (no softmax layer) and gives the same:",
        f"   CrossEntropyLoss(z, 0) = {torch_one:.4f}",
        "4. For a batch it averages over the samples. The tutorial's batch of three, targets [2, 0, 1]:",
        f"   CrossEntropyLoss = {torch_batch:.4f} (NumPy: {cross_entropy(batch_logits, batch_y):.4f})",
        "5. Why log-softmax subtracts the max first: for logits [1000, -1000, 0],",
        f"   naive exp overflows; stable log_softmax = {log_softmax(big).round(4).tolist()}",
        "",
        *measured(),
    ])


# The tutorial's question answered by measurement: what benchmarks/ood.py printed (BENCHMARKS.md,
# "Not a digit"), recorded here because training four models takes minutes; a test checks that
# BENCHMARKS.md holds the same figures.
MEASURED = {
    "command": "python benchmarks/ood.py (the fast recipe, seed 1, 5,000 validation images held out)",
    "machine": "a 2-core Xeon shared with other work",
    "rows": [  # head, trained with outlier exposure, test correct, ECE, mean |sum - 1|, AUROC Fashion, letters
        ("softmax", False, 9940, "0.24%", "0", "0.9928", "0.9583"),
        ("sigmoid", False, 9926, "0.20%", "0.027", "0.9852", "0.9488"),
        ("softmax", True, 9932, "0.24%", "0", "1.0000", "0.9915"),
        ("sigmoid", True, 9926, "0.17%", "0.056", "0.9999", "0.9903"),
    ],
    "sums_on_letters": ("0.63", "0.098"),  # a sigmoid head's mean sum on the held-out letters
}


def measured() -> list[str]:
    """Section 6: softmax and ten sigmoids, trained on the same CNN and recipe, side by side."""
    m: dict = MEASURED
    lines = ["6. So why softmax? Measured: the same CNN and recipe, trained with each head (the sigmoids one",
             "   against the rest with binary cross-entropy), and then with outlier exposure (made-up non-digits",
             "   whose target is 'none of these'). Accuracy on the 10,000 test digits; calibration after",
             "   temperature scaling; how far the outputs' sum strays from 1 on test digits; and how well the",
             "   best score on validation rejects non-digits (AUROC, 1 = perfectly; Fashion-MNIST's test set,",
             "   letters in fonts never trained on):",
             f"   {'head':24} {'test accuracy':>20} {'ECE':>6} {'|sum - 1|':>10} {'AUROC Fashion':>14} {'letters':>8}"]
    for head, oe, correct, ece, stray, fashion, letters in m["rows"]:
        name = f"{head}{' + outliers' if oe else ''}"
        lines.append(f"   {name:24} {f'{correct}/10000 = {correct / 100:.2f}%':>20} {ece:>6} {stray:>10} "
                     f"{fashion:>14} {letters:>8}")
    plain, oe = m["sums_on_letters"]
    lines += ["   Ten sigmoids can all say 'no', and on held-out letters their sum does fall (to "
              f"{plain} on average;",
              f"   {oe} with outliers). But trained on digits alone they reject non-digits a little worse than",
              "   softmax's largest probability, and their sum strays from 1 even on digits: no distribution.",
              "   What teaches a model 'none of these' is seeing non-digits (outlier exposure), with either",
              "   head; softmax keeps one honest distribution over the digits, and mnistlab says 'not a digit'",
              "   with a separate score and a threshold chosen on validation (mnistlab predict says it).",
              f"   Measured with: {m['command']};", f"   on {m['machine']} (BENCHMARKS.md, 'Not a digit')."]
    return lines
