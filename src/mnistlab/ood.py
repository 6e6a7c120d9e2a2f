"""What the last layer's scores mean, and "not a digit": heads, out-of-distribution scores, the
reject threshold, and the two figures that judge a score (AUROC, false-positive rate at 95% TPR).

NumPy only, no torch: the ONNX path scores and rejects with it too, and the static page's
JavaScript (static/app.js) computes the same numbers from the same logits.

A softmax head gives one distribution over the classes: it always sums to 1, so on its own it
cannot say "none of these". A sigmoid head gives one yes/no per class (trained one against the
rest with binary cross-entropy); all ten may say no. mnistlab reports, for a sigmoid head, the
sigmoids normalised to sum to 1 as `probabilities` (so that top-k, accuracy and calibration read
the same for both heads) and keeps the raw sigmoids beside them (`Prediction.sigmoids`), whose
sum strays from 1 by what the head did not commit to.
"""

from __future__ import annotations

import numpy as np

from .card import HEADS, REJECT_SCORES  # noqa: F401 (named here too, with what they mean)
from .lesson import log_softmax, sigmoid, softmax

# REJECT_SCORES: higher = more like the training digits. msp: the largest probability (Hendrycks &
# Gimpel 2017);
# energy: T * logsumexp(z / T), the negative free energy (Liu et al. 2020); max-sigmoid: the
# largest of the ten sigmoids (the sigmoid head's own "is it any of these?").
# The score a model's card records, by (head, trained with outlier exposure): for each, the best
# on validation (the fast recipe's 5,000 validation digits against 5,000 validation outliers, AUROC;
# benchmarks/ood.py, BENCHMARKS.md): plain heads 0.9657 (msp) and 0.9623 (msp), with outlier
# exposure 0.9959 (energy) and 0.9958 (energy); an 11th output "none", 1 - p(none): 0.9973, the best.
REJECT_SCORE_FOR = {("softmax", False): "msp", ("sigmoid", False): "msp",
                    ("softmax", True): "energy", ("sigmoid", True): "energy", ("none-class", True): "not-none"}
KEEP = 0.99  # the threshold keeps 99% of the in-distribution validation digits


def head_outputs(logits: np.ndarray, head: str, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities [N, K] summing to 1, the head's raw outputs [N, K]) of logits [N, K], float64.

    softmax: both are softmax(z / T). sigmoid: the raw outputs are sigmoid(z / T), the probabilities
    those sigmoids divided by their sum."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    if head == "sigmoid":
        raw = sigmoid(z)
        return raw / np.maximum(raw.sum(axis=-1, keepdims=True), 1e-300), raw
    if head == "none-class":  # raw: all K + 1 outputs' softmax; probabilities: the K classes' own
        return softmax(z[..., :-1], axis=-1), softmax(z, axis=-1)
    probs = softmax(z, axis=-1)
    return probs, probs


def head_log_probabilities(logits: np.ndarray, head: str, temperature: float = 1.0) -> np.ndarray:
    """log of head_outputs' probabilities, stable for large logits."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    if head == "sigmoid":
        log_sig = -np.logaddexp(0, -z)  # log sigmoid(z)
        return log_sig - _logsumexp(log_sig)
    if head == "none-class":
        return log_softmax(z[..., :-1], axis=-1)
    return log_softmax(z, axis=-1)


def ood_score(logits: np.ndarray, name: str, temperature: float = 1.0, head: str = "softmax") -> np.ndarray:
    """The named score [N] of logits [N, K]; higher means more like a digit. msp is the largest of the
    head's probabilities (a sigmoid head's: its normalised sigmoids); the others read the logits alone."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    if name == "msp":
        return np.exp(head_log_probabilities(logits, head, temperature).max(axis=-1))
    if name == "energy":
        return temperature * _logsumexp(z)[..., 0]
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


def _logsumexp(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=-1, keepdims=True)
    return m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True))
