"""Named models that ship inside the package: `load_model("robust-real")`, `mnistlab predict digit.png`.

The weights lie in mnistlab/weights/, made by scripts/make_pretrained.py, which writes
weights/manifest.json: for each name, the file, its sha256 (checked on every load, as
whisper checks its downloads), its exact test accuracy and the command that made it. Beside each
.safetensors file lies the same model exported to ONNX (its own sha256 in the manifest): where
onnxruntime is installed, `mnistlab predict` runs that copy and never imports torch, which
would take most of the command's time; its answers are the PyTorch model's, to the printed digit.

A model name is a word without a dot or a slash; anything else is a path. So `robust-real` is the
pretrained model and `./robust-real` or `robust-real.pt` a file: the two are never confused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import CheckpointError, MnistlabError

DEFAULT = "robust-real"  # what predict, serve and eval use when no model is given


@dataclass(frozen=True)
class Pretrained:
    name: str
    file: str  # inside mnistlab/weights/
    sha256: str
    test_correct: int
    test_total: int
    dataset: str
    description: str
    command: str  # how the file was made
    # on the test split under MNIST-C's 15 corruptions (seed 0), looked at once when the file was made:
    # {"mean_accuracy", "mean_ece", "mean_rejected", "corruptions": {name: {"correct", "total", "ece", "rejected"}}}
    mnist_c: dict | None = None
    test_ece: float | None = None
    reject: dict | None = None  # {"score", "threshold", "test_rejected"}: "not a digit", None where it has none
    onnx: dict | None = None  # {"file", "sha256"}: the same model as an ONNX graph, for a start without torch

    @property
    def accuracy(self) -> float:
        return self.test_correct / self.test_total

    @property
    def path(self) -> Path:
        return _shipped(self.file)


def catalogue() -> dict[str, Pretrained]:
    """Every pretrained model, by name, as the manifest lists them."""
    text = resources.files("mnistlab").joinpath("weights", "manifest.json").read_text(encoding="utf-8")
    return {name: Pretrained(name=name, **entry) for name, entry in json.loads(text).items()}


def is_name(text: str) -> bool:
    """A model name (a word: no dot, no slash) rather than a path."""
    return bool(text) and not any(c in text for c in "./\\")


def resolve(name: str) -> Path:
    """The checked file of a pretrained model; an unknown name or a damaged file is one sentence."""
    entry = _entry(name)
    return _checked(name, entry.path, entry.sha256)


def resolve_onnx(name: str) -> Path | None:
    """The checked ONNX copy of a pretrained model, or None where the package ships none."""
    entry = _entry(name)
    if entry.onnx is None:
        return None
    return _checked(name, _shipped(entry.onnx["file"]), entry.onnx["sha256"])


def _entry(name: str) -> Pretrained:
    models = catalogue()
    if name not in models:
        raise MnistlabError(f"no pretrained model is called '{name}'; choose one of: {', '.join(models)} "
                            "(or give a file: a path has a dot or a slash, like ./model.pt).")
    return models[name]


def _shipped(file: str) -> Path:
    return Path(str(resources.files("mnistlab").joinpath("weights", file)))


def _checked(name: str, path: Path, sha256: str) -> Path:
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as e:
        raise CheckpointError(f"the pretrained model '{name}' is missing from the package ({e.strerror}); "
                              "reinstall mnistlab.") from None
    if digest != sha256:
        raise CheckpointError(f"the pretrained model '{name}' ({path}) fails its sha256 check: the file is "
                              "damaged or was replaced; reinstall mnistlab.")
    return path
