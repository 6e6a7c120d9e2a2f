"""The ONNX Runtime backend of a loaded model: an `.onnx` file from `mnistlab export`.

Imports onnxruntime and numpy only, never torch: `mnistlab predict model.onnx` and
`mnistlab serve model.onnx` run without PyTorch installed.
"""

from __future__ import annotations

import os

import numpy as np

from .card import embedded_card
from .errors import MnistlabError, first_line

METADATA_KEY = "mnistlab"  # the ONNX metadata property that holds the model card, as JSON


class OnnxBackend:
    runtime = "ONNX Runtime"

    def __init__(self, path: str | os.PathLike):
        try:
            import onnxruntime as ort
        except ImportError:
            raise MnistlabError("running an .onnx model needs onnxruntime: pip install 'mnistlab[onnx]'.") from None
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise MnistlabError(f"{path}: not a readable ONNX model ({first_line(e)}).") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in meta:
            raise MnistlabError(f"{path}: an ONNX model, but not one exported by mnistlab export.")
        self.card, self.outputs = embedded_card(meta[METADATA_KEY], f"{path}: its mnistlab metadata", str(path))
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        if list(inp.shape[1:]) != [1, 28, 28]:
            raise MnistlabError(f"{path}: its input has shape {inp.shape}, not [N, 1, 28, 28].")
        width = len(self.card.classes) if self.outputs == "probabilities" else self.card.outputs
        if len(out.shape) != 2 or isinstance(out.shape[1], int) and out.shape[1] != width:
            raise MnistlabError(f"{path}: its output has shape {out.shape}, not [N, {width}].")
        self.input_name = inp.name
        self._scale, self._shift = 1 / (255 * self.card.std), -self.card.mean / self.card.std

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Logits (or the file's own probabilities) [N, K] of uint8 images [N, 28, 28]."""
        x = np.multiply(images[:, None], self._scale, dtype=np.float32)  # (pixel / 255 - mean) / std
        x += self._shift
        return self.session.run(None, {self.input_name: x})[0]
