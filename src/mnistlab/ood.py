"""Saying "not a digit": out-of-distribution scores, the reject threshold, and the two figures that judge a
score (AUROC, false-positive rate at 95% TPR). What the last layer's scores mean is heads.py's.

NumPy only, no torch: the ONNX path scores and rejects with it too, and the static page's
JavaScript (static/app.js) computes the same numbers from the same logits.

A softmax head's probabilities always sum to 1, so on their own they cannot say "none of these";
these scores, read from the logits, and a threshold chosen on validation digits can.
"""

from __future__ import annotations

import numpy as np

from .card import REJECT_SCORES  # noqa: F401 (named here too, with what they mean)
from .heads import head_of, logsumexp, sigmoid, softmax

# REJECT_SCORES: higher = more like the training digits. msp: the largest probability (Hendrycks &
# Gimpel 2017);
# energy: T * logsumexp(z / T), the negative free energy (Liu et al. 2020); max-sigmoid: the
# largest of the ten sigmoids (the sigmoid head's own "is it any of these?"); not-none: a
# none-class head's 1 - p(none). Which one a model records by default is its head's (Head.reject_score).
KEEP = 0.99  # the threshold keeps 99% of the in-distribution validation digits


def ood_score(logits: np.ndarray, name: str, temperature: float = 1.0, head: str = "softmax") -> np.ndarray:
    """The named score [N] of logits [N, K]; higher means more like a digit. msp is the largest of the
    head's probabilities (a sigmoid head's: its normalised sigmoids); the others read the logits alone."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    if name == "msp":
        return np.exp(head_of(head).log_probabilities(logits, temperature).max(axis=-1))
    if name == "energy":
        return temperature * logsumexp(z)[..., 0]
    if name == "max-sigmoid":
        return sigmoid(z.max(axis=-1))
    if name == "not-none":  # a none-class head: 1 - p(none)
        return 1 - softmax(z, axis=-1)[..., -1]
    raise ValueError(f"unknown score {name!r}")


def reject_threshold(scores: np.ndarray, keep: float = KEEP) -> float:
    """The largest threshold that keeps at least `keep` of these (in-distribution) scores: an
    image is rejected when its score is below it."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    return float(s[int(np.floor((1 - keep) * len(s)))])


def rejected_share(scores: np.ndarray, threshold: float) -> float:
    """The share of these scores below the threshold: the images called not a digit."""
    return float((np.asarray(scores) < threshold).mean())


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """The probability that a random in-distribution image scores above a random outlier (ties
    count half): the area under the ROC curve, from ranks (Mann-Whitney U)."""
    inside, outside = np.asarray(inside, np.float64), np.asarray(outside, np.float64)
    both = np.concatenate([inside, outside])
    order = both.argsort(kind="stable")
    ranks = np.empty(len(both))
    ranks[order] = np.arange(1, len(both) + 1)
    _, first, counts = np.unique(both[order], return_index=True, return_counts=True)
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)  # tied values share their mean rank
    u = ranks[:len(inside)].sum() - len(inside) * (len(inside) + 1) / 2
    return float(u / (len(inside) * len(outside)))


def fpr_at_tpr(inside: np.ndarray, outside: np.ndarray, tpr: float = 0.95) -> float:
    """The share of outliers kept when the threshold keeps `tpr` of the in-distribution images."""
    return float((np.asarray(outside) >= reject_threshold(inside, tpr)).mean())

