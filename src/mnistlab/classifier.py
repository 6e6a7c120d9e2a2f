"""A trained model ready to use: `load_model(path)` then `.predict_proba()` or `.evaluate()`."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from .augment import tta_views
from .checkpoints import load_checkpoint
from .data import Loader, load_split, normalize
from .errors import CheckpointError, MnistlabError
from .evaluation import Evaluation, evaluation_from_probs, predict_logits
from .models import build_model

SPLITS = ("test", "train", "validation")


def load_eval_split(dataset: str, split: str, data_dir=None, val_size: int = 0,
                    source: str = "this model") -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of a split; "validation" is the part of the training set that a run
    with `val_size` held out (the same images for every seed), for choices made without the test set."""
    if split not in SPLITS:
        raise MnistlabError(f"unknown split '{split}'; choose one of: {', '.join(SPLITS)}.")
    images, labels = load_split(dataset, train=split != "test", data_dir=data_dir)
    if split != "validation":
        return images, labels
    if not val_size:
        raise MnistlabError(f"{source} was trained on the whole training set: it has no validation split "
                            "(train with --val-size N to hold one out).")
    from .training import split_train_val

    return split_train_val(images, labels, val_size)[1]


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
        self.val_size: int = int(checkpoint.get("config", {}).get("val_size", 0))
        self.channels_last = getattr(module, "channels_last", False)

    def loader(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> Loader:
        return Loader(images, labels, batch_size, self.mean, self.std, self.device, self.channels_last)

    def load_split(self, split: str = "test", data_dir=None) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images and labels of a split of the model's dataset (validation: the one it held out)."""
        return load_eval_split(self.dataset, split, data_dir, self.val_size, self.source or "this model")

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
        """Class probabilities [N, K] for uint8 images [N, 28, 28] (0 = background, 255 = ink);
        with `tta` (see augment.TTA_VIEWS), the mean over that test-time augmentation's views."""
        if images.dim() == 2:
            images = images.unsqueeze(0)
        if images.dim() != 3 or images.shape[1:] != (28, 28):
            raise MnistlabError(f"expected images of shape [N, 28, 28], got {list(images.shape)}.")

        def probs(views: torch.Tensor) -> torch.Tensor:
            x = normalize(views.to(self.device), self.mean, self.std, self.channels_last)
            return torch.softmax(self.module(x).float() / self.temperature, dim=1).cpu()

        return mean_over_views(probs, images, tta)

    def _batched_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Temperature-scaled probabilities [N, K] in float64 of many uint8 images, in batches."""
        logits, _ = predict_logits(self.module, self.loader(images, torch.zeros(len(images), dtype=torch.long)))
        return torch.softmax(logits.double() / self.temperature, 1)

    def split_probabilities(self, data_dir=None, split: str = "test", tta: str = "none"):
        """(uint8 images, temperature-scaled probabilities [N, K] in float64, labels) over a whole split."""
        images, labels = self.load_split(split, data_dir)
        return images, mean_over_views(self._batched_probabilities, images, tta), labels

    def evaluate(self, data_dir: str | os.PathLike | None = None, split: str = "test",
                 tta: str = "none") -> Evaluation:
        """Exact accuracy and confusion on the whole split of the model's own dataset."""
        _, probs, labels = self.split_probabilities(data_dir, split, tta)
        return evaluation_from_probs(probs, labels, self.classes)


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


def mean_over_views(probs: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                    tta: str = "none") -> torch.Tensor:
    """Test-time augmentation: the mean of `probs` over the views `tta` makes of uint8 images."""
    views = tta_views(images, tta)
    return sum(probs(v) for v in views) / len(views)


def split_probabilities(path: str | os.PathLike, data_dir=None, split: str = "test", device: str = "cpu",
                        tta: str = "none") -> tuple[dict, torch.Tensor, torch.Tensor]:
    """(model info, calibrated probabilities [N, K], labels) of a checkpoint or .onnx file on a split;
    with `tta`, averaged over the views of that test-time augmentation."""
    from pathlib import Path

    from .prediction import Predictor

    if Path(path).suffix.lower() == ".onnx":
        backend = Predictor.from_checkpoint(path).backend
        images, labels = load_eval_split(backend.dataset, split, data_dir, backend.val_size, str(path))

        def onnx_probs(views: torch.Tensor) -> torch.Tensor:
            return torch.cat([torch.from_numpy(backend(chunk.numpy())) for chunk in views.split(1000)])

        probs = mean_over_views(onnx_probs, images, tta)
        return {"model": backend.model_name, "dataset": backend.dataset, "classes": backend.classes}, probs, labels
    from .training import resolve_device

    clf = load_model(path, resolve_device(device))
    _, probs, labels = clf.split_probabilities(data_dir, split, tta)
    info = {"model": clf.model_name, "dataset": clf.dataset, "classes": clf.classes, "temperature": clf.temperature}
    return info, probs, labels


def evaluate_files(paths: list, data_dir=None, split: str = "test", device: str = "cpu", tta: str = "none"):
    """Evaluate one model, or an ensemble that averages the models' (calibrated) probabilities,
    each optionally averaged over the views of test-time augmentation `tta` first.

    Returns (infos, evaluations of each member, evaluation of the average)."""
    infos, members, total = [], [], None
    for path in paths:
        info, probs, labels = split_probabilities(path, data_dir, split, device, tta)
        if infos and (info["dataset"], tuple(info["classes"])) != (infos[0]["dataset"], tuple(infos[0]["classes"])):
            raise MnistlabError(f"{path}: trained on {info['dataset']}, unlike {paths[0]}; "
                                "an ensemble needs one dataset.")
        if total is not None and probs.shape != total.shape:
            raise MnistlabError(f"{path}: held out a different validation split from {paths[0]}; "
                                "an ensemble is judged on one split.")
        infos.append(info)
        members.append(evaluation_from_probs(probs, labels, tuple(info["classes"])))
        total = probs if total is None else total + probs
    return infos, members, evaluation_from_probs(total / len(paths), labels, tuple(infos[0]["classes"]))
