"""What a model's last layer means: its head, one object per kind, named on the model card.

    softmax     one output per class, one distribution over them; cross-entropy
    sigmoid     one yes/no per class, trained one against the rest with binary cross-entropy; all may say no.
                Its probabilities are the sigmoids divided by their sum (so that top-k, accuracy and
                calibration read the same for every head), its raw outputs the sigmoids themselves
    none-class  one output per class and one more, "none", learnt from outliers; its probabilities are
                the classes' own distribution, given that the image is one of them

Each kind owns how many outputs it has, its training loss, its probabilities from logits, the
reject score a trained model records by default, and the probabilities an exported graph holds.

The NumPy parts serve the ONNX path, which never imports torch: the torch parts import it when
called (loss, evaluation, export), never when this module is imported. The static page's
JavaScript (serve/static/app.js, headOf) computes the same probabilities from the same logits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)), without overflow for very negative z."""
    return np.exp(-np.logaddexp(0.0, -np.asarray(z, dtype=np.float64)))


def log_softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """log(softmax(z)), stable for huge logits: subtract the max before exponentiating."""
    z = np.asarray(z, dtype=np.float64)
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """Positive outputs that sum to 1: a distribution over the classes."""
    return np.exp(log_softmax(z, axis))


def logsumexp(z: np.ndarray) -> np.ndarray:
    """log(sum(exp(z))) over the last axis, kept as a size-1 axis; stable for huge z."""
    m = z.max(axis=-1, keepdims=True)
    return m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


# How outlier exposure's outliers are pulled away from the digits (--outlier-loss). uniform (Hendrycks et al. 2019):
# an outlier's target is the uniform distribution. energy (Liu et al. 2020; softmax only): squared hinges on
# logsumexp(z), the score "not a digit" reads, up for a digit under ENERGY_MARGINS[0] and down for an outlier over
# ENERGY_MARGINS[1], so that a doubtful digit is pulled towards the digits and an outlier's class probabilities are
# left free rather than flattened.
OUTLIER_LOSSES = ("uniform", "energy")
# The shipped model's logsumexp is 3.5 at the lowest quarter of the validation digits; its outliers sit at log(10),
# where the uniform target leaves every logit near 0.
ENERGY_MARGINS = (3.5, 1.5)


def _scaled(logits: np.ndarray, temperature: float) -> np.ndarray:
    return np.asarray(logits, dtype=np.float64) / temperature


class Head:
    """softmax: one distribution over the classes, learnt with cross-entropy. The other kinds subclass it."""

    name = "softmax"
    extra_outputs = 0  # outputs beyond one per class

    def outputs(self, classes: int) -> int:
        """The model's number of outputs for `classes` classes."""
        return classes + self.extra_outputs

    def reject_score(self, outlier_exposure: bool) -> str:
        """The "not a digit" score (card.REJECT_SCORES) a trained model records: the best on validation for this
        head, with and without outlier exposure (benchmarks/ood.py, BENCHMARKS.md "Not a digit")."""
        return "energy" if outlier_exposure else "msp"

    def learnt_outliers(self, reject_score: str) -> bool:
        """Whether a model of this head whose card records `reject_score` was trained with outlier exposure: its
        score is one that only outlier exposure gives."""
        return reject_score == self.reject_score(True) != self.reject_score(False)

    # ---- NumPy: the ONNX path, inference and "not a digit" ----

    def log_probabilities(self, logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        """log of the class probabilities [N, K] of logits [N, outputs], float64, stable for large logits."""
        return log_softmax(_scaled(logits, temperature))

    def probabilities_and_raw(self, logits: np.ndarray, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """(class probabilities [N, K] summing to 1, the head's raw outputs [N, outputs]) of logits, float64."""
        probs = softmax(_scaled(logits, temperature))
        return probs, probs

    # ---- torch: training, evaluation, export ----

    def loss(self, logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0,
             outlier_weight: float = 0.0, outlier_loss: str = "uniform") -> torch.Tensor:
        """The training loss of a batch. Labels of -1 mark outliers (outlier exposure): their loss, times
        `outlier_weight`, pulls the head towards "none of these" (`_losses`; OUTLIER_LOSSES). Masks, not
        indexing: shapes stay fixed for a CUDA graph."""
        import torch.nn.functional as F

        if not outlier_weight:  # no outliers: plain cross-entropy
            return F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        return self._loss_with_outliers(logits, y, label_smoothing, outlier_weight, outlier_loss)

    def _loss_with_outliers(self, logits: torch.Tensor, y: torch.Tensor, label_smoothing: float,
                            outlier_weight: float, outlier_loss: str = "uniform") -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        logits = logits.float()
        inside = (y >= 0).float()
        outside = 1 - inside
        per, away = self._losses(logits, y, inside, label_smoothing)
        loss = (per * inside).sum() / inside.sum().clamp(min=1)
        if outlier_loss == "energy":  # softmax only (RunConfig.validate)
            lse = torch.logsumexp(logits, 1)
            digits_low = F.relu(ENERGY_MARGINS[0] - lse) ** 2
            loss = loss + outlier_weight * (digits_low * inside).sum() / inside.sum().clamp(min=1)
            away = F.relu(lse - ENERGY_MARGINS[1]) ** 2
        return loss + outlier_weight * (away * outside).sum() / outside.sum().clamp(min=1)

    def _losses(self, logits: torch.Tensor, y: torch.Tensor, inside: torch.Tensor,
                label_smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(each image's loss as a digit, as an outlier) [N]: an outlier's is cross-entropy against the
        uniform distribution."""
        import torch.nn.functional as F

        per = F.cross_entropy(logits, y.clamp(min=0), label_smoothing=label_smoothing, reduction="none")
        return per, -F.log_softmax(logits, 1).mean(1)

    def log_probabilities_torch(self, logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """log_probabilities in torch, float64."""
        import torch.nn.functional as F

        return F.log_softmax(logits.double() / temperature, 1)

    def probabilities_torch(self, logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """The class probabilities [N, K] in torch, float64, as evaluation scores them."""
        import torch

        return torch.softmax(logits.double() / temperature, 1)

    def exported_probabilities(self, logits: torch.Tensor, temperature: float) -> torch.Tensor:
        """The class probabilities an exported graph holds (`mnistlab export --probs`), in the logits' dtype."""
        import torch

        return torch.softmax(logits / temperature, dim=1)


class SigmoidHead(Head):
    """One yes/no per class; binary cross-entropy of each output against "is it this class?", summed."""

    name = "sigmoid"

    def loss(self, logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0,
             outlier_weight: float = 0.0, outlier_loss: str = "uniform") -> torch.Tensor:
        return self._loss_with_outliers(logits, y, label_smoothing, outlier_weight)

    def _losses(self, logits: torch.Tensor, y: torch.Tensor, inside: torch.Tensor,
                label_smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
        """An outlier's target is every class at "no" (smoothed alike)."""
        import torch.nn.functional as F

        k = logits.shape[1]
        target = F.one_hot(y.clamp(min=0), k).float() * inside[:, None]
        target = target * (1 - label_smoothing) + label_smoothing / k
        per = F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(1)
        return per, per

    def log_probabilities(self, logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        log_sig = -np.logaddexp(0, -_scaled(logits, temperature))  # log sigmoid(z)
        return log_sig - logsumexp(log_sig)

    def probabilities_and_raw(self, logits: np.ndarray, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        raw = sigmoid(_scaled(logits, temperature))
        return raw / np.maximum(raw.sum(axis=-1, keepdims=True), 1e-300), raw

    def log_probabilities_torch(self, logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        import torch.nn.functional as F

        return F.log_softmax(F.logsigmoid(logits.double() / temperature), 1)  # log(s_i / sum s)

    def probabilities_torch(self, logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        return self.log_probabilities_torch(logits, temperature).exp()

    def exported_probabilities(self, logits: torch.Tensor, temperature: float) -> torch.Tensor:
        import torch

        s = torch.sigmoid(logits / temperature)
        return s / s.sum(dim=1, keepdim=True)


class NoneClassHead(Head):
    """The classes and one more output, "none", the outliers' class: softmax and cross-entropy over all of them."""

    name = "none-class"
    extra_outputs = 1

    def reject_score(self, outlier_exposure: bool) -> str:
        """1 - p(none): a none-class head always learns from outliers (training refuses it without)."""
        return "not-none"

    def learnt_outliers(self, reject_score: str) -> bool:
        return bool(reject_score)

    def loss(self, logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0,
             outlier_weight: float = 0.0, outlier_loss: str = "uniform") -> torch.Tensor:
        return self._loss_with_outliers(logits, y, label_smoothing, outlier_weight)

    def _losses(self, logits: torch.Tensor, y: torch.Tensor, inside: torch.Tensor,
                label_smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
        """An outlier's target is the last output, "none"."""
        import torch
        import torch.nn.functional as F

        none = torch.where(y < 0, logits.shape[1] - 1, y)
        per = F.cross_entropy(logits, none, label_smoothing=label_smoothing, reduction="none")
        return per, per

    def log_probabilities(self, logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        return log_softmax(_scaled(logits, temperature)[..., :-1])

    def probabilities_and_raw(self, logits: np.ndarray, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        z = _scaled(logits, temperature)
        return softmax(z[..., :-1]), softmax(z)  # raw: all outputs' softmax, "none" included

    def log_probabilities_torch(self, logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        import torch.nn.functional as F

        return F.log_softmax((logits.double() / temperature)[:, :-1], 1)

    def probabilities_torch(self, logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        return self.log_probabilities_torch(logits, temperature).exp()

    def exported_probabilities(self, logits: torch.Tensor, temperature: float) -> torch.Tensor:
        import torch

        return torch.softmax(logits[:, :-1] / temperature, dim=1)


_BY_NAME: dict[str, Head] = {h.name: h for h in (Head(), SigmoidHead(), NoneClassHead())}
HEADS = tuple(_BY_NAME)  # the names a card and --head take


def head_of(name: str) -> Head:
    """The head a card or --head names."""
    if name not in _BY_NAME:
        raise ValueError(f"unknown head {name!r}: one of {', '.join(HEADS)}")
    return _BY_NAME[name]
