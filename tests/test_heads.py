"""The heads (mnistlab.heads): each kind's outputs, probabilities, loss and default reject score, in NumPy and torch."""

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mnistlab.card import ModelCard
from mnistlab.heads import ENERGY_MARGINS, HEADS, head_of

T = 1.7


def logits(outputs: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(40, outputs)) * 8


def test_outputs_and_names():
    assert HEADS == ("softmax", "sigmoid", "none-class")
    assert [head_of(h).outputs(10) for h in HEADS] == [10, 10, 11]
    assert all(head_of(h).name == h for h in HEADS)
    card = ModelCard(model="mlp", dataset="mnist", classes=tuple("abc"), mean=0.1, std=0.3, head="none-class")
    assert card.outputs == 4
    with pytest.raises(ValueError, match="tanh"):
        head_of("tanh")


def test_softmax_probabilities_are_one_distribution():
    z = logits(10)
    probs, raw = head_of("softmax").probabilities_and_raw(z, T)
    want = np.exp(z / T) / np.exp(z / T).sum(1, keepdims=True)
    assert np.allclose(probs, want) and raw is probs and np.allclose(probs.sum(1), 1)


def test_sigmoid_probabilities_are_the_sigmoids_normalised():
    z = logits(10)
    probs, raw = head_of("sigmoid").probabilities_and_raw(z, T)
    sig = 1 / (1 + np.exp(-z / T))
    assert np.allclose(raw, sig) and np.allclose(probs, sig / sig.sum(1, keepdims=True))
    assert np.allclose(probs.sum(1), 1) and not np.allclose(raw.sum(1), 1)  # ten sigmoids are no distribution


def test_none_class_probabilities_are_the_classes_own():
    z = logits(11)
    probs, raw = head_of("none-class").probabilities_and_raw(z, T)
    assert probs.shape == (40, 10) and raw.shape == (40, 11)
    assert np.allclose(raw.sum(1), 1) and np.allclose(probs.sum(1), 1)
    assert np.allclose(probs, raw[:, :10] / raw[:, :10].sum(1, keepdims=True))  # given that it is not "none"


@pytest.mark.parametrize("name", HEADS)
def test_numpy_and_torch_agree(name):
    head = head_of(name)
    z = logits(head.outputs(10), seed=1)
    z[0, :2] = [1e4, -1e4]  # huge logits stay finite
    log_probs = head.log_probabilities(z, T)
    assert np.isfinite(log_probs).all()
    assert np.allclose(np.exp(log_probs), head.probabilities_and_raw(z, T)[0])
    zt = torch.from_numpy(z)
    assert np.allclose(head.log_probabilities_torch(zt, T).numpy(), log_probs, rtol=1e-12, atol=1e-12)
    assert np.allclose(head.probabilities_torch(zt, T).numpy(), np.exp(log_probs), rtol=1e-12, atol=1e-300)
    exported = head.exported_probabilities(zt[1:], T).numpy()  # the graph's own formula, without the huge row
    assert np.allclose(exported, np.exp(log_probs[1:]), rtol=1e-9, atol=1e-300)


def test_losses_are_the_formulas():
    z, y = torch.randn(6, 10), torch.tensor([3, 1, 4, 1, -1, -1])
    inside = y >= 0
    softmax, sigmoid, none_class = (head_of(h) for h in HEADS)
    bce = F.binary_cross_entropy_with_logits(z[inside], F.one_hot(y[inside], 10).float(), reduction="none").sum(1)
    assert torch.allclose(sigmoid.loss(z, y), bce.mean())  # the outliers weigh nothing without outlier_weight
    away = F.binary_cross_entropy_with_logits(z[~inside], torch.zeros(2, 10), reduction="none").sum(1).mean()
    assert torch.allclose(sigmoid.loss(z, y, 0.0, 0.5), bce.mean() + 0.5 * away)
    none = F.cross_entropy(z, torch.where(inside, y, 9), reduction="none")  # the last output is "none"
    assert torch.allclose(none_class.loss(z, y, 0.0, 0.5), none[inside].mean() + 0.5 * none[~inside].mean())
    uniform = -F.log_softmax(z[~inside], 1).mean(1).mean()  # cross-entropy against the uniform distribution
    assert torch.allclose(softmax.loss(z, y, 0.0, 0.5), F.cross_entropy(z[inside], y[inside]) + 0.5 * uniform)
    lse, (digits_least, outliers_most) = torch.logsumexp(z, 1), ENERGY_MARGINS  # energy: two squared hinges
    energy = (F.relu(digits_least - lse[inside]) ** 2).mean() + (F.relu(lse[~inside] - outliers_most) ** 2).mean()
    assert torch.allclose(softmax.loss(z, y, 0.0, 0.5, "energy"), F.cross_entropy(z[inside], y[inside]) + 0.5 * energy)
    plain = torch.tensor([3, 1, 4, 1, 5, 9])
    assert torch.equal(softmax.loss(z, plain, 0.1), F.cross_entropy(z, plain, label_smoothing=0.1))
    smoothed = F.one_hot(plain, 10).float() * 0.9 + 0.01
    assert torch.allclose(sigmoid.loss(z, plain, 0.1),
                          F.binary_cross_entropy_with_logits(z, smoothed, reduction="none").sum(1).mean())


def test_default_reject_scores():
    softmax, sigmoid, none_class = (head_of(h) for h in HEADS)
    assert [softmax.reject_score(False), softmax.reject_score(True)] == ["msp", "energy"]
    assert [sigmoid.reject_score(False), sigmoid.reject_score(True)] == ["msp", "energy"]
    assert none_class.reject_score(True) == "not-none"
    assert softmax.learnt_outliers("energy") and not softmax.learnt_outliers("msp")
    assert not sigmoid.learnt_outliers("max-sigmoid") and not sigmoid.learnt_outliers("")
    assert none_class.learnt_outliers("not-none") and not none_class.learnt_outliers("")


def test_the_onnx_path_imports_no_torch():
    code = "import sys, mnistlab.heads, mnistlab.ood, mnistlab.card; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr
