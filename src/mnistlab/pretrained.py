"""Named models that ship inside the package: `load_model("fast")`, `mnistlab predict digit.png`.

The weights lie in mnistlab/weights/, made by scripts/make_pretrained.py, which writes
weights/manifest.json: for each name, the file, its sha256 (checked on every load, as
whisper checks its downloads), its exact test accuracy and the command that made it.

A model name is a word without a dot or a slash; anything else is a path. So `fast` is the
pretrained model and `./fast` or `fast.pt` a file: the two are never confused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import CheckpointError, MnistlabError

DEFAULT = "fast"  # what predict, serve and eval use when no model is given


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

    @property
    def accuracy(self) -> float:
        return self.test_correct / self.test_total

    @property
    def path(self) -> Path:
        return Path(str(resources.files("mnistlab").joinpath("weights", self.file)))


def catalogue() -> dict[str, Pretrained]:
    """Every pretrained model, by name, as the manifest lists them."""
    text = resources.files("mnistlab").joinpath("weights", "manifest.json").read_text(encoding="utf-8")
    return {name: Pretrained(name=name, **entry) for name, entry in json.loads(text).items()}


def is_name(text: str) -> bool:
    """A model name (a word: no dot, no slash) rather than a path."""
    return bool(text) and not any(c in text for c in "./\\")


def resolve(name: str) -> Path:
    """The checked file of a pretrained model; an unknown name or a damaged file is one sentence."""
    models = catalogue()
    if name not in models:
        raise MnistlabError(f"no pretrained model is called '{name}'; choose one of: {', '.join(models)} "
                            "(or give a file: a path has a dot or a slash, like ./model.pt).")
    entry = models[name]
    try:
        digest = hashlib.sha256(entry.path.read_bytes()).hexdigest()
    except OSError as e:
        raise CheckpointError(f"the pretrained model '{name}' is missing from the package ({e.strerror}); "
                              "reinstall mnistlab.") from None
    if digest != entry.sha256:
        raise CheckpointError(f"the pretrained model '{name}' ({entry.path}) fails its sha256 check: the file is "
                              "damaged or was replaced; reinstall mnistlab.")
    return entry.path
