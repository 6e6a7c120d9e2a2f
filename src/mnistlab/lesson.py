"""The softmax lesson in NumPy: softmax, log-softmax, negative log-likelihood, cross-entropy.

Written to be read next to torch's own functions, which the tests check them against. Not only
a lesson: inference.py turns every model's logits into probabilities with this softmax and
log_softmax, so the functions taught here are the ones that answer `predict` and `serve`.
"""

from __future__ import annotations

import numpy as np


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def log_softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """log(softmax(z)), stable for huge logits: subtract the max before exponentiating."""
    z = np.asarray(z, dtype=np.float64)
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """Positive outputs that sum to 1: a distribution over the classes."""
    return np.exp(log_softmax(z, axis))


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
    ])
