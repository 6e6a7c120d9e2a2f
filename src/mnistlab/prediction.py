"""Predictions on a person's own images: `Predictor.from_checkpoint(path).predict(image)`.

The predictor runs either a PyTorch checkpoint or an exported `.onnx` file; the ONNX path
imports only onnxruntime, numpy and pillow, never torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import MnistlabError
from .preprocessing import preprocess


@dataclass
class Prediction:
    probabilities: np.ndarray  # [K], sums to 1
    classes: tuple[str, ...]
    preprocessed: np.ndarray  # the uint8 28x28 image the model saw
    source: str = ""

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
        order = np.argsort(-self.probabilities)[:k]
        return [(self.classes[i], float(self.probabilities[i])) for i in order]

    def to_dict(self, k: int = 3) -> dict:
        return {"source": self.source, "prediction": self.label, "confidence": self.confidence,
                "top": [{"class": c, "probability": p} for c, p in self.top(k)],
                "probabilities": {c: float(p) for c, p in zip(self.classes, self.probabilities)}}


class _TorchBackend:
    def __init__(self, path: str | os.PathLike, device: str):
        import torch

        from .classifier import load_model

        self._torch = torch
        self.clf = load_model(path, device)
        self.classes, self.name = self.clf.classes, f"{self.clf.model_name} ({Path(path).name})"
        self.model_name, self.dataset = self.clf.model_name, self.clf.dataset

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.clf.predict_proba(self._torch.from_numpy(images)).numpy()


class _OnnxBackend:
    def __init__(self, path: str | os.PathLike):
        try:
            import onnxruntime as ort
        except ImportError:
            raise MnistlabError("running an .onnx model needs onnxruntime: pip install 'mnistlab[onnx]'.") from None
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise MnistlabError(f"{path}: not a readable ONNX model ({str(e).splitlines()[0][:200]}).") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "mnistlab" not in meta:
            raise MnistlabError(f"{path}: an ONNX model, but not one exported by mnistlab export.")
        info = json.loads(meta["mnistlab"])
        inp = self.session.get_inputs()[0]
        if list(inp.shape[1:]) != [1, 28, 28]:
            raise MnistlabError(f"{path}: its input has shape {inp.shape}, not [N, 1, 28, 28].")
        self.input_name = inp.name
        self.model_name, self.dataset = info["model"], info.get("dataset", "mnist")
        self.classes = tuple(info["classes"])
        self.mean, self.std = info["normalization"]
        self._scale, self._shift = 1 / (255 * self.std), -self.mean / self.std  # pixel * scale + shift
        self.outputs_probs = info["output"] == "probabilities"
        self.temperature = float(info.get("temperature", 1.0))
        self.val_size = int(info.get("val_size", 0))
        self.name = f"{info['model']} ({Path(path).name}, ONNX Runtime)"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        x = np.multiply(images[:, None], self._scale, dtype=np.float32)
        x += self._shift
        out = self.session.run(None, {self.input_name: x})[0].astype(np.float64)
        if self.outputs_probs:
            return out
        if self.temperature != 1.0:
            out /= self.temperature
        out -= out.max(1, keepdims=True)  # softmax, in place
        np.exp(out, out=out)
        out /= out.sum(1, keepdims=True)
        return out


class Predictor:
    """Preprocess images the MNIST way and return the model's whole class distribution."""

    def __init__(self, backend):
        self.backend = backend
        self.classes: tuple[str, ...] = backend.classes
        self.name: str = backend.name

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = "cpu") -> Predictor:
        """A PyTorch checkpoint (model.pt, ckpt-*.pt) or an .onnx file from `mnistlab export`."""
        if Path(path).suffix.lower() == ".onnx":
            if not Path(path).is_file():
                raise MnistlabError(f"{path}: no such ONNX file.")
            return cls(_OnnxBackend(path))
        return cls(_TorchBackend(path, device))

    def predict(self, image, name: str | None = None) -> Prediction:
        """One image (path, bytes or PIL image) -> its Prediction."""
        pixels = preprocess(image, name)
        source = name or (str(image) if isinstance(image, (str, os.PathLike)) else "")
        return self._classify(pixels, source)  # preprocess gives valid uint8 28x28: no re-checking

    def predict_pixels(self, pixels: np.ndarray, source: str = "") -> Prediction:
        """An already MNIST-like 28x28 array (ink high, 0-255) -> its Prediction."""
        pixels = np.asarray(pixels)
        if pixels.shape != (28, 28):
            raise MnistlabError(f"expected a 28x28 array, got shape {list(pixels.shape)}.")
        if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 255:
            raise MnistlabError("pixel values must lie between 0 and 255.")
        return self._classify(np.round(pixels).astype(np.uint8), source)

    def _classify(self, pixels: np.ndarray, source: str) -> Prediction:
        return Prediction(self.backend(pixels[None])[0], self.classes, pixels, source)
