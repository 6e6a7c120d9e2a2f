"""A trained model ready to use, whatever file it came from: `load_model(path)`, then
`.predict(image)`, `.predict_proba(images)` or `.explain(pixels)` (whole splits: mnistlab.evaluation).

One interface: uint8 images [N, 28, 28] in (0 = background, 255 = ink), temperature-scaled
probabilities [N, K] out. `load_model` picks the backend once: PyTorch for checkpoints,
.safetensors files, Hugging Face folders and .pt2 programs, ONNX Runtime for `.onnx` files.
Prediction, evaluation, ensembles, test-time augmentation, serving, reports and export all
stand on it. Importing this module imports no torch, so an `.onnx` model runs with
onnxruntime, NumPy and Pillow alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

import numpy as np

from .card import ModelCard, is_hf_folder
from .data.preprocess import NoDigitError, preprocess
from .errors import MnistlabError
from .heads import head_of
from .ood import ood_score
from .pretrained import DEFAULT

BATCH = 1000  # images per backend call: bounds memory on whole splits, one call for a single image
NO_INK = 26  # a 28x28 array whose brightest pixel is below a tenth of full scale holds no digit
MODEL_SUFFIXES = (".pt", ".pt2", ".safetensors", ".onnx")  # the files load_model reads (and Hugging Face folders)
# Below this calibrated top probability an answer names the top two ("1 or 7?") rather than guess: the
# highest cut that says so of at most 1% of the right answers (benchmarks/unsure.py).
UNSURE_BELOW = 0.95
SALIENCY_METHOD = "occlusion: 4x4 patches, stride 2, blanked one at a time; mean fall of the log-probability"


class ModelOutputError(MnistlabError):
    """The model gave NaN or infinite scores: there is no answer to give, and none is made up."""


class Backend(Protocol):
    card: ModelCard
    runtime: str  # "PyTorch", "PyTorch (torch.export)" or "ONNX Runtime"
    outputs: str  # "logits", or "probabilities" for an .onnx or .pt2 file exported with --probs

    def __call__(self, images: np.ndarray) -> np.ndarray: ...


@dataclass
class Prediction:
    probabilities: np.ndarray  # [K], sums to 1 (a sigmoid head's sigmoids, normalised: see ood.py)
    classes: tuple[str, ...]
    preprocessed: np.ndarray  # the uint8 28x28 image the model saw
    source: str = ""
    # with explain=True: why the model answered so (see Classifier.explain)
    logits: np.ndarray | None = None  # [K], the scores before softmax (at temperature 1)
    temperature: float = 1.0  # probabilities = softmax(logits / temperature)
    saliency: np.ndarray | None = None  # [28, 28]: the predicted class's log-probability lost when blanked
    # "not a digit" (see ood.py): the card's reject score of this image (higher: more like a digit), its
    # name and the card's threshold; None where the model has no threshold (trained without --val-size)
    ood_score: float | None = None
    reject_score: str = ""
    reject_threshold: float | None = None
    sigmoids: np.ndarray | None = None  # [K] a sigmoid head's own outputs, which need not sum to 1

    @property
    def rejected(self) -> bool:
        """The image does not look like anything the model was trained on: its score is below the threshold."""
        return (self.reject_threshold is not None and self.ood_score is not None
                and self.ood_score < self.reject_threshold)

    @property
    def why(self) -> str:
        """Why it was rejected, in one sentence ("" if it was not)."""
        if not self.rejected:
            return ""
        return (f"not a digit: its {self.reject_score} score {self.ood_score:.4g} is below "
                f"{self.reject_threshold:.4g}, the threshold that keeps nearly all digits; "
                f"the nearest digit is {self.label}")

    @property
    def unsure(self) -> bool:
        """A digit, but the model cannot tell which of its top two: the top probability is below UNSURE_BELOW."""
        return not self.rejected and self.confidence < UNSURE_BELOW

    @property
    def answer(self) -> str:
        """What to tell a person, in a few words: the digit, "1 or 7?" where unsure, or "not a digit"."""
        if self.rejected:
            return "not a digit"
        return f"{self.label} or {self.runner_up[0]}?" if self.unsure else self.label

    @property
    def index(self) -> int:
        return int(self.probabilities.argmax())

    @property
    def label(self) -> str:
        return self.classes[self.index]

    @property
    def confidence(self) -> float:
        return float(self.probabilities.max())

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(self.classes[i], float(self.probabilities[i])) for i in order]

    @property
    def runner_up(self) -> tuple[str, float]:
        """The second most probable class and its probability."""
        return self.top(2)[1]

    def to_dict(self, k: int = 3) -> dict:
        out = {"source": self.source, "prediction": self.label, "confidence": self.confidence,
               "top": [{"class": c, "probability": p} for c, p in self.top(k)],
               "probabilities": {c: float(p) for c, p in zip(self.classes, self.probabilities)},
               "rejected": self.rejected, "why": self.why, "unsure": self.unsure, "answer": self.answer,
               "reject": None if self.ood_score is None else {"score": self.reject_score, "value": self.ood_score,
                                                              "threshold": self.reject_threshold}}
        if self.sigmoids is not None:
            out["sigmoids"] = {c: float(p) for c, p in zip(self.classes, self.sigmoids)}
        if self.logits is not None and self.saliency is not None:
            runner, p = self.runner_up
            out |= {"runner_up": {"class": runner, "probability": p}, "logits": self.logits.tolist(),
                    "temperature": self.temperature, "saliency": np.round(self.saliency, 5).tolist(),
                    "saliency_method": SALIENCY_METHOD}
        return out


class Classifier:
    """A model with what it needs to be used: its card (classes, normalisation, temperature) and a backend."""

    def __init__(self, backend: Backend, source: str = ""):
        self.backend, self.card, self.source = backend, backend.card, source
        self.classes: tuple[str, ...] = backend.card.classes
        where = f"{Path(source).name}, " if source else ""
        self.name = f"{backend.card.model} ({where}{backend.runtime})"

    @classmethod
    def from_pretrained(cls, name: str = DEFAULT, device: str = "cpu") -> Classifier:
        """A model that ships with mnistlab, by name (`mnistlab models` lists them)."""
        from . import pretrained

        if not pretrained.is_name(name):
            raise MnistlabError(f"'{name}' is a path, not a pretrained model's name; use load_model for files.")
        return load_model(name, device)

    def predict(self, image, name: str | None = None, explain: bool = False) -> Prediction:
        """One image (path, bytes or PIL image), preprocessed the MNIST way -> its Prediction;
        with `explain`, also its logits and a saliency map."""
        pixels = preprocess(image, name)
        source = name or (str(image) if isinstance(image, (str, os.PathLike)) else "")
        return self.explain(pixels, source) if explain else self._prediction(pixels, source)

    def predict_pixels(self, pixels, source: str = "", explain: bool = False) -> Prediction:
        """An already MNIST-like 28x28 array (ink high, 0-255) -> its Prediction."""
        try:
            shape = tuple(np.shape(pixels))
        except ValueError:  # rows of different lengths
            shape = ("ragged",)
        if shape != (28, 28):
            raise MnistlabError(f"expected a 28x28 array, got shape {list(shape)}.")
        pixels = as_pixels(pixels)[0]
        if pixels.max() < NO_INK:
            raise NoDigitError(f"{source or 'pixels'}: no digit found (no pixel reaches {NO_INK} of 255).")
        return self.explain(pixels, source) if explain else self._prediction(pixels, source)

    def _prediction(self, pixels: np.ndarray, source: str) -> Prediction:
        scores = self._checked(self.backend(pixels[None]))
        probs, raw = self._outputs(scores)
        return Prediction(probs[0], self.classes, pixels, source, **self._rejection(scores[0], raw[0]))

    def _outputs(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, the head's raw outputs) of a backend's scores, float64."""
        if self.backend.outputs == "probabilities":  # an .onnx file that holds its own softmax
            return scores.astype(np.float64), scores.astype(np.float64)
        return head_of(self.card.head).probabilities_and_raw(scores, self.card.temperature)

    def _rejection(self, scores: np.ndarray, raw: np.ndarray) -> dict:
        """Prediction's "not a digit" fields (and a sigmoid head's raw outputs) for one image's scores."""
        out = {"sigmoids": raw if self.card.head == "sigmoid" and self.backend.outputs == "logits" else None}
        value = self.ood_scores_of(scores[None])
        if value is None:
            return out
        return out | {"ood_score": float(value[0]), "reject_score": self.card.reject_score,
                      "reject_threshold": self.card.reject_threshold}

    def ood_scores_of(self, scores: np.ndarray) -> np.ndarray | None:
        """The card's reject score [N] of a backend's scores [N, K]; None where the card has no threshold, or
        the file gives probabilities and the score needs logits (only msp is read from probabilities)."""
        name = self.card.reject_score
        if not name:
            return None
        if self.backend.outputs == "probabilities":
            return scores.astype(np.float64).max(1) if name == "msp" else None
        return ood_score(scores, name, self.card.temperature, self.card.head)

    def ood_scores(self, images) -> np.ndarray | None:
        """The card's reject score [N] of uint8 images [N, 28, 28] (None: the model has no threshold)."""
        images = as_pixels(images)
        return self.ood_scores_of(self._scores(images)) if len(images) else None

    def _checked(self, scores: np.ndarray) -> np.ndarray:
        if not np.isfinite(scores).all():
            raise ModelOutputError(f"{self.source or 'the model'}: the model gave NaN or infinite scores for "
                                   "this input; its weights are unusable.")
        return scores

    def explain(self, pixels: np.ndarray, source: str = "") -> Prediction:
        """The Prediction of one uint8 28x28 image with why: its logits, and an occlusion map.

        Occlusion: each 4x4 patch (stride 2) is blanked in turn, all 169 variants in one batch, and
        each pixel gets the mean fall of the predicted class's log-probability over the patches
        that cover it (log, not probability: a confident model's probability hardly moves). It
        needs nothing but the model's outputs, so every backend, and the static page's
        onnxruntime-web, draws the same map."""
        patch, stride = 4, 2
        corners = [(r, c) for r in range(0, 28 - patch + 1, stride) for c in range(0, 28 - patch + 1, stride)]
        batch = np.repeat(pixels[None], len(corners) + 1, axis=0)
        for k, (r, c) in enumerate(corners, start=1):
            batch[k, r:r + patch, c:c + patch] = 0
        scores = self._checked(self.backend(batch)).astype(np.float64)
        if self.backend.outputs == "probabilities":  # an exported file that holds its own softmax
            t, log_probs = 1.0, np.log(np.maximum(scores, 1e-300))
        else:
            t = self.card.temperature
            log_probs = head_of(self.card.head).log_probabilities(scores, t)
        target = int(log_probs[0].argmax())
        heat, count = np.zeros((28, 28)), np.zeros((28, 28))
        for k, (r, c) in enumerate(corners, start=1):
            heat[r:r + patch, c:c + patch] += log_probs[0, target] - log_probs[k, target]
            count[r:r + patch, c:c + patch] += 1
        logits = scores[0] if self.backend.outputs == "logits" else log_probs[0]
        return Prediction(np.exp(log_probs[0]), self.classes, pixels, source, logits=logits, temperature=t,
                          saliency=heat / count, **self._rejection(scores[0], self._outputs(scores[:1])[1][0]))

    def predict_proba(self, images, tta: str = "none") -> np.ndarray:
        """Probabilities [N, K] (float64) of uint8 images [N, 28, 28]; with `tta` (see augment.TTA_VIEWS),
        the mean over that test-time augmentation's views."""
        images = as_pixels(images)
        if tta == "none":
            return self._probabilities(images)
        from .data.augment import tta_views  # torch, only when views are asked for
        from .data.mnist import refuse_mirrors

        if tta == "flip":
            refuse_mirrors(self.card.dataset, "--tta flip")
        views = tta_views(images, tta)
        return cast(np.ndarray, sum(self._probabilities(v) for v in views)) / len(views)

    def judge(self, images) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities [N, K], the card's reject score [N] or None without a threshold) of uint8 images
        [N, 28, 28], from one pass of the model."""
        scores = self._scores(as_pixels(images))
        return self._outputs(scores)[0], self.ood_scores_of(scores) if len(scores) else None

    def _probabilities(self, images: np.ndarray) -> np.ndarray:
        return self._outputs(self._scores(images))[0]

    def _scores(self, images: np.ndarray) -> np.ndarray:
        """The backend's checked scores [N, K] of uint8 images [N, 28, 28], BATCH at a time."""
        parts = [self._checked(self.backend(images[i:i + BATCH])) for i in range(0, len(images), BATCH)]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.classes)), np.float32)

    def _check_outputs(self) -> Classifier:
        """Refuse at load time a model that gives non-finite answers: one pass on a blank image and a
        stroke, so that crafted weights fail here, in one sentence, not in every later request."""
        probe = np.zeros((2, 28, 28), dtype=np.uint8)
        probe[1, 4:24, 12:16] = 255
        try:
            self._probabilities(probe)
        except ModelOutputError:
            raise ModelOutputError(f"{self.source or 'the model'}: refused: it gives NaN or infinite scores "
                                   "(damaged or crafted weights).") from None
        return self


def load_model(path: str | os.PathLike, device: str = "cpu", torch_free: bool = False) -> Classifier:
    """A pretrained model's name ("robust-real", "classic-cnn": see `mnistlab models`); a checkpoint,
    model.pt or model.safetensors from `mnistlab train`, a folder in the Hugging Face layout or a
    .pt2 program from `mnistlab export` (PyTorch, on `device`); or an .onnx file from `mnistlab
    export` (ONNX Runtime, CPU). A name is a word with no dot or slash; anything else is a path.
    Nothing is fetched from a network.

    With `torch_free`, a pretrained model on the CPU runs on its shipped ONNX copy where onnxruntime
    is installed: the same answers, without importing torch, for a caller that only predicts (the
    PyTorch backend is what export and fine-tuning need)."""
    from . import pretrained

    if isinstance(path, str) and pretrained.is_name(path):
        source = path
        onnx = pretrained.resolve_onnx(path) if torch_free and str(device) == "cpu" and _has_onnxruntime() else None
        path = onnx or pretrained.resolve(path)
    else:
        source = str(path)
    if Path(path).suffix.lower() == ".onnx":
        from .onnx_backend import OnnxBackend

        if not Path(path).is_file():
            raise MnistlabError(f"{path}: no such ONNX file.")
        return Classifier(OnnxBackend(path), source)._check_outputs()
    from . import torch_backend
    from .device import resolve_device

    return Classifier(torch_backend.load(path, resolve_device(str(device))), source)._check_outputs()


def _has_onnxruntime() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def is_model_path(path: str | os.PathLike) -> bool:
    """A path that names a model file by its suffix, or a folder in the Hugging Face layout."""
    return Path(path).suffix.lower() in MODEL_SUFFIXES or is_hf_folder(path)


def as_pixels(images) -> np.ndarray:
    """uint8 [N, 28, 28] from an array or tensor of 0-255 values ([28, 28] for one image)."""
    if hasattr(images, "detach"):  # a torch tensor, possibly on a GPU
        images = images.detach().cpu()
    try:
        a = np.asarray(images)
    except (ValueError, TypeError, OverflowError):
        raise MnistlabError("images must be an array of numbers.") from None
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[1:] != (28, 28):
        raise MnistlabError(f"expected images of shape [N, 28, 28], got {list(a.shape)}.")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)  # a view such as a[:, :, ::-1] has strides torch refuses
    if a.dtype.kind not in "biuf":
        raise MnistlabError("pixel values must be numbers between 0 and 255.")
    if a.size and (not np.isfinite(a).all() or a.min() < 0 or a.max() > 255):
        raise MnistlabError("pixel values must lie between 0 and 255.")
    return np.round(a).astype(np.uint8)
