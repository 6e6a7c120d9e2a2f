"""The model card: what a trained model is and how to feed it, in one object.

Checkpoints, the metadata of .safetensors files and of exported ONNX, .pt2 and TorchScript
files, a Hugging Face folder's config.json, and every loader write and read it through
`ModelCard.to_dict` and `ModelCard.from_dict`, as whisper rebuilds a model from its
`ModelDimensions`. Plain Python and NumPy: the ONNX path, which never imports torch, reads it too.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CheckpointError
from .heads import HEADS, head_of

# A model folder in the Hugging Face layout: the card as the model's config, the weights, a README model card.
HF_CONFIG, HF_WEIGHTS, HF_README = "config.json", "model.safetensors", "README.md"

# Models renamed since the first file format; files that use an old name still load.
RENAMED_MODELS = {"fast": "bn-cnn"}
# Sane ranges for what a card says: pixels are scaled to [0, 1] before (x - mean) / std, and a
# crafted std of 1e-300 or mean of 1e308 turns every input into inf or NaN.
MEAN_RANGE, STD_RANGE, TEMPERATURE_RANGE = (-1.0, 2.0), (1e-3, 1e3), (1e-3, 1e3)
MAX_CLASSES, MAX_CLASS_NAME = 1000, 100
MAX_THRESHOLD = 1e6  # a reject score is a probability or a log-sum-exp of logits
# The "not a digit" scores (defined in ood.py): msp, the largest probability; energy, T * logsumexp(z / T);
# max-sigmoid, the largest of the sigmoids; not-none, a none-class head's 1 - p(none). The heads are heads.py's.
REJECT_SCORES = ("msp", "energy", "max-sigmoid", "not-none")


@dataclass(frozen=True)
class ModelCard:
    model: str  # the registry name (mnistlab models)
    dataset: str  # the registry name (mnistlab datasets)
    classes: tuple[str, ...]  # one name per output, in order
    mean: float  # the model sees (pixel / 255 - mean) / std
    std: float
    temperature: float = 1.0  # probabilities are softmax(logits / temperature)
    val_size: int = 0  # training images the run held out for validation (0: none)
    model_config: dict = field(default_factory=dict)  # the model's keyword arguments
    head: str = "softmax"  # what turns logits into outputs: one of heads.HEADS
    # "not a digit": an image whose reject_score (ood.REJECT_SCORES) falls below the threshold,
    # chosen on the validation split to keep nearly all of its digits (RunConfig.reject_keep); "" and None:
    # the model never rejects
    reject_score: str = ""
    reject_threshold: float | None = None

    @property
    def outputs(self) -> int:
        """The model's outputs: one per class, and one more for a none-class head."""
        return head_of(self.head).outputs(len(self.classes))

    def to_dict(self) -> dict:
        return {"model": self.model, "model_config": dict(self.model_config), "dataset": self.dataset,
                "classes": list(self.classes), "normalization": [self.mean, self.std],
                "temperature": self.temperature, "val_size": self.val_size, "head": self.head,
                "reject_score": self.reject_score, "reject_threshold": self.reject_threshold}

    @classmethod
    def from_dict(cls, d: object, source: str = "model") -> ModelCard:
        """Read a card back; anything missing or absurd gets one sentence naming `source`."""
        def bad(what: str) -> CheckpointError:
            return CheckpointError(f"{source}: {what}; the file is damaged or was not written by mnistlab.")

        if not isinstance(d, dict):
            raise bad("it holds no model card")
        for key in ("model", "dataset", "classes", "normalization"):
            if key not in d:
                raise bad(f"its model card lacks '{key}'")
        model, dataset, classes = d["model"], d["dataset"], d["classes"]
        if not isinstance(model, str) or not isinstance(dataset, str):
            raise bad("its model and dataset names are not text")
        if (not isinstance(classes, (list, tuple)) or not 2 <= len(classes) <= MAX_CLASSES
                or not all(isinstance(c, str) and 0 < len(c.strip()) <= MAX_CLASS_NAME for c in classes)):
            raise bad(f"its class names are not a list of 2 to {MAX_CLASSES} names of 1 to {MAX_CLASS_NAME} characters")
        if len(set(classes)) != len(classes):
            raise bad("its class names are not all different")
        config = d.get("model_config") or {}
        if not isinstance(config, dict):
            raise bad("its model settings are not a dictionary")
        norm = d["normalization"]
        if not (isinstance(norm, (list, tuple)) and len(norm) == 2 and all(_finite(v) for v in norm)):
            raise bad("its normalisation is not two numbers")
        mean, std = float(norm[0]), float(norm[1])
        temperature = d.get("temperature", 1.0)
        for name, value, (lo, hi) in (("normalisation mean", mean, MEAN_RANGE), ("normalisation std", std, STD_RANGE),
                                      ("temperature", temperature, TEMPERATURE_RANGE)):
            if not (_finite(value) and lo <= value <= hi):
                raise bad(f"its {name} is {value!r}, outside [{lo:g}, {hi:g}]")
        val_size = d.get("val_size", 0)
        if isinstance(val_size, bool) or not isinstance(val_size, int) or val_size < 0:
            raise bad("its validation size is not a whole number")
        head, score, threshold = d.get("head", "softmax"), d.get("reject_score", ""), d.get("reject_threshold")
        if head not in HEADS:  # cards written before heads existed have none: softmax
            raise bad(f"its head is {head!r}, not one of {', '.join(HEADS)}")
        if score not in ("", *REJECT_SCORES) or (threshold is None) != (score == ""):
            raise bad(f"its reject score {score!r} and threshold {threshold!r} do not go together (a score of "
                      f"{', '.join(REJECT_SCORES)} with a number, or neither)")
        if threshold is not None and not (_finite(threshold) and abs(threshold) <= MAX_THRESHOLD):
            raise bad(f"its reject threshold is {threshold!r}, not a number within +-{MAX_THRESHOLD:g}")
        return cls(model=RENAMED_MODELS.get(model, model), dataset=dataset, classes=tuple(classes), mean=mean,
                   std=std, temperature=float(temperature), val_size=val_size, model_config=config, head=head,
                   reject_score=score, reject_threshold=None if threshold is None else float(threshold))


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_hf_folder(path: str | os.PathLike) -> bool:
    """A folder that holds a model in the Hugging Face layout (its config.json and model.safetensors)."""
    return Path(path).is_dir() and (Path(path) / HF_CONFIG).is_file() and (Path(path) / HF_WEIGHTS).is_file()


def embedded_card(text: str | bytes, what: str, source: str) -> tuple[ModelCard, str]:
    """The card that a model file holds as JSON text (`what`: where, for the sentence if it is not JSON), and
    what the file outputs: "probabilities" for a file exported with --probs, else "logits"."""
    try:
        info = json.loads(text)
    except ValueError:
        raise CheckpointError(f"{what} is not valid JSON.") from None
    outputs = "probabilities" if isinstance(info, dict) and info.get("output") == "probabilities" else "logits"
    return ModelCard.from_dict(info, source), outputs
