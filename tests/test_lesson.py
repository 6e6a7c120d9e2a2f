import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mnistlab import lesson as losses


def test_softmax_is_a_distribution_and_sigmoid_is_not():
    z = np.array([0.2, 0.1, -0.1])
    assert losses.softmax(z).sum() == pytest.approx(1.0)
    assert (losses.softmax(z) > 0).all()
    assert losses.sigmoid(z).sum() == pytest.approx(1.5498, abs=1e-4)


def test_seed_numbers():
    z = np.array([[0.2, 0.1, -0.1]])
    assert losses.cross_entropy(z, np.array([0])) == pytest.approx(0.9729, abs=5e-5)
    batch = np.array([[0.1, 0.2, 0.9], [1.1, 0.1, 0.2], [0.2, 2.1, 0.1]])
    assert losses.cross_entropy(batch, np.array([2, 0, 1])) == pytest.approx(0.4966, abs=5e-5)


@pytest.mark.parametrize("scale", [1.0, 30.0, 1000.0])
def test_against_torch(scale):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(16, 10)) * scale
    y = rng.integers(0, 10, 16)
    zt = torch.tensor(z)
    np.testing.assert_allclose(losses.softmax(z), torch.softmax(zt, 1).numpy(), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(losses.log_softmax(z), torch.log_softmax(zt, 1).numpy(), rtol=1e-12, atol=1e-12)
    lp = losses.log_softmax(z)
    assert losses.nll_loss(lp, y) == pytest.approx(F.nll_loss(torch.tensor(lp), torch.tensor(y)).item(), rel=1e-12)
    assert losses.cross_entropy(z, y) == pytest.approx(F.cross_entropy(zt, torch.tensor(y)).item(), rel=1e-12)


def test_extreme_logits_stay_finite():
    z = np.array([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, -1000.0]])
    lp = losses.log_softmax(z)
    assert np.isfinite(lp).all()
    assert lp[0].tolist() == [0.0, -2000.0, -1000.0]
    np.testing.assert_allclose(losses.softmax(z)[1], [1 / 3] * 3)
    assert losses.cross_entropy(z[:1], np.array([1])) == pytest.approx(2000.0)


def test_lesson_prints_the_seed_numbers():
    text = losses.lesson()
    for number in ("0.9729", "0.4966", "sum = 1.0000", "sum = 1.5498"):
        assert number in text
