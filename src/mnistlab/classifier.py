"""A trained model ready to use: `load_model(path)` then `.predict_proba()` or `.evaluate()`."""

from __future__ import annotations

import os

import torch

from .checkpoints import load_checkpoint
from .data import Loader, load_split
from .errors import CheckpointError, MnistlabError
from .evaluation import Evaluation, evaluate, evaluation_from_logits
from .models import build_model


class Classifier:
    """A model with what it needs to be used: its classes, normalisation and temperature."""

    def __init__(self, module: torch.nn.Module, checkpoint: dict, device: torch.device, source: str = ""):
        self.module = module.eval()
        self.device = device
        self.source = source
        self.model_name: str = checkpoint["model"]
        self.dataset: str = checkpoint["dataset"]
        self.classes: tuple[str, ...] = tuple(checkpoint["classes"])
        self.mean, self.std = (float(v) for v in checkpoint["normalization"])
        self.temperature: float = float(checkpoint.get("temperature", 1.0))
        self.channels_last = getattr(module, "channels_last", False)

    def loader(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> Loader:
        return Loader(images, labels, batch_size, self.mean, self.std, self.device, self.channels_last)

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities [N, K] for uint8 images [N, 28, 28] (0 = background, 255 = ink)."""
        if images.dim() == 2:
            images = images.unsqueeze(0)
        if images.dim() != 3 or images.shape[1:] != (28, 28):
            raise MnistlabError(f"expected images of shape [N, 28, 28], got {list(images.shape)}.")
        x = self.loader(images, torch.zeros(len(images), dtype=torch.long)).normalize(images.to(self.device))
        return torch.softmax(self.module(x).float() / self.temperature, dim=1).cpu()

    def evaluate(self, data_dir: str | os.PathLike | None = None, split: str = "test") -> Evaluation:
        """Exact accuracy and confusion on the whole split of the model's own dataset."""
        images, labels = load_split(self.dataset, train=split == "train", data_dir=data_dir)
        return evaluate(self.module, self.loader(images, labels), self.classes)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> Classifier:
    """Load a checkpoint or model.pt written by `mnistlab train`."""
    ckpt = load_checkpoint(path)
    try:
        module = build_model(ckpt["model"], **ckpt.get("model_config", {}))
    except (MnistlabError, TypeError) as e:
        raise CheckpointError(f"{path}: cannot rebuild model '{ckpt['model']}' ({e}).") from None
    try:
        module.load_state_dict(ckpt["model_state"])
    except RuntimeError:
        raise CheckpointError(
            f"{path}: its weights do not fit the model '{ckpt['model']}' it names "
            "(a checkpoint of another model or a damaged file).") from None
    device = torch.device(device)
    if getattr(module, "channels_last", False):
        module = module.to(memory_format=torch.channels_last)
    return Classifier(module.to(device), ckpt, device, str(path))


def evaluate_file(path: str | os.PathLike, data_dir=None, split: str = "test", device: str = "cpu"):
    """Evaluate a checkpoint or an exported .onnx file on a whole split: (model info, Evaluation)."""
    from pathlib import Path

    if Path(path).suffix.lower() != ".onnx":
        from .training import resolve_device

        clf = load_model(path, resolve_device(device))
        return clf, clf.evaluate(data_dir, split)
    from .prediction import Predictor

    predictor = Predictor.from_checkpoint(path)
    backend = predictor.backend
    images, labels = load_split(backend.dataset, train=split == "train", data_dir=data_dir)
    probs = torch.cat([torch.from_numpy(backend(chunk.numpy())) for chunk in images.split(1000)])
    return backend, evaluation_from_logits(probs.clamp(min=1e-30).log().float(), labels, predictor.classes)
