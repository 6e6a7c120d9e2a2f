"""Exact evaluation: counts, confusion matrix, per-class precision and recall, and how honest
the probabilities are (expected calibration error over 15 bins, negative log-likelihood, Brier).

Everything is built from sums, so shares evaluated by several processes add up exactly."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from . import distributed as dist
from .data.mnist import Loader
from .device import autocast
from .errors import MnistlabError
from .heads import head_of

if TYPE_CHECKING:
    from .card import ModelCard
    from .inference import Classifier


def format_accuracy(correct: int, total: int) -> str:
    """Exact counts and two decimals: '9879/10000 = 98.79%'."""
    return f"{correct}/{total} = {100.0 * correct / max(total, 1):.2f}%"


ECE_BINS = 15


@dataclass
class Evaluation:
    confusion: torch.Tensor  # [true, predicted] counts, int64
    loss: float  # mean negative log-likelihood of the true class (nats)
    classes: tuple[str, ...]
    brier: float = float("nan")  # mean squared error of the probability vector against one-hot
    bins: torch.Tensor | None = None  # [ECE_BINS, 3]: count, summed confidence, summed correctness

    @property
    def ece(self) -> float:
        """Expected calibration error: confidence against accuracy, weighted over 15 equal-width bins."""
        if self.bins is None:
            return float("nan")
        count, conf, correct = self.bins.T
        return float((conf - correct).abs().sum() / max(float(count.sum()), 1))

    @property
    def correct(self) -> int:
        return int(self.confusion.diag().sum())

    @property
    def total(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.total, 1)

    def precision(self) -> list[float]:
        col = self.confusion.sum(0).clamp(min=1)
        return (self.confusion.diag() / col).tolist()

    def recall(self) -> list[float]:
        row = self.confusion.sum(1).clamp(min=1)
        return (self.confusion.diag() / row).tolist()

    def most_confused(self, k: int = 5) -> list[tuple[str, str, int]]:
        """The k largest off-diagonal cells as (true, predicted, count)."""
        off = self.confusion.clone()
        off.fill_diagonal_(0)
        counts, flat = off.flatten().topk(min(k, off.numel()))  # two classes have only two such cells
        n = off.shape[1]
        return [(self.classes[i // n], self.classes[i % n], int(c))
                for c, i in zip(counts.tolist(), flat.tolist()) if c > 0]

    def to_dict(self) -> dict:
        return {
            "correct": self.correct, "total": self.total, "accuracy": self.accuracy,
            "loss": self.loss, "nll": self.loss, "ece": self.ece, "brier": self.brier,
            "classes": list(self.classes),
            "precision": self.precision(), "recall": self.recall(),
            "confusion": self.confusion.tolist(),
            "most_confused": [{"true": t, "predicted": p, "count": c} for t, p, c in self.most_confused()],
        }

    def report(self) -> str:
        lines = [f"accuracy: {format_accuracy(self.correct, self.total)}",
                 f"calibration: ECE {100 * self.ece:.2f}% ({ECE_BINS} bins), NLL {self.loss:.4f}, "
                 f"Brier {self.brier:.4f}", "",
                 f"{'class':>12} {'precision':>9} {'recall':>7} {'count':>6}"]
        for name, p, r, n in zip(self.classes, self.precision(), self.recall(), self.confusion.sum(1).tolist()):
            lines.append(f"{name:>12} {100 * p:8.2f}% {100 * r:6.2f}% {n:6d}")
        w = max(5, len(str(int(self.confusion.max()))) + 1)
        lines += ["", "confusion matrix (rows: true class, columns: predicted)",
                  " " * 12 + "".join(f"{i:>{w}}" for i in range(len(self.classes)))]
        for name, row in zip(self.classes, self.confusion.tolist()):
            lines.append(f"{name[:11]:>12}" + "".join(f"{v:>{w}}" for v in row))
        lines += ["", "most confused (true -> predicted: count)"]
        lines += [f"  {t} -> {p}: {c}" for t, p, c in self.most_confused()] or ["  none"]
        return "\n".join(lines)


def predict_logits(model: torch.nn.Module, loader: Loader,
                   amp_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All logits (float32) and labels of a loader, in order."""
    was_training = model.training
    model.eval()
    device = loader.images.device
    logits, labels = [], []
    with torch.no_grad(), autocast(device, amp_dtype):
        for x, y in loader.batches():
            logits.append(model(x).float())
            labels.append(y)
    model.train(was_training)
    return torch.cat(logits), torch.cat(labels)


def shard_logits(model: torch.nn.Module, loader: Loader,
                 amp_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's share of the loader's logits and labels: under torchrun each rank takes
    a share; alone, all of them. Score them with evaluation_from_logits(..., across_ranks=True)."""
    if dist.world_size() > 1:
        loader = loader.shard(dist.rank(), dist.world_size())
    return predict_logits(model, loader, amp_dtype)


def evaluation_from_probs(probs: torch.Tensor, labels: torch.Tensor, classes: tuple[str, ...],
                          across_ranks: bool = False) -> Evaluation:
    """All the metrics from class probabilities [N, K]; with across_ranks, summed over the
    torchrun processes (every rank must then call it)."""
    k = len(classes)
    probs, labels = probs.double().cpu(), labels.cpu()
    conf, pred = probs.max(1)
    confusion = torch.bincount(labels * k + pred, minlength=k * k).double()
    nll = -probs.gather(1, labels[:, None]).clamp(min=1e-300).log().sum()
    brier = (probs - F.one_hot(labels, k).double()).square().sum()
    which = (conf * ECE_BINS).long().clamp(max=ECE_BINS - 1)
    bins = torch.zeros(ECE_BINS, 3, dtype=torch.float64)
    bins.index_add_(0, which, torch.stack([torch.ones_like(conf), conf, (pred == labels).double()], 1))
    sums = torch.cat([confusion, nll.view(1), brier.view(1), bins.flatten()])
    if across_ranks:
        sums = dist.all_reduce_sum(sums)
    confusion = sums[:k * k].round().long().view(k, k)
    total = max(int(confusion.sum()), 1)
    return Evaluation(confusion=confusion, loss=sums[k * k].item() / total, classes=tuple(classes),
                      brier=sums[k * k + 1].item() / total, bins=sums[k * k + 2:].view(ECE_BINS, 3))


def evaluation_from_logits(logits: torch.Tensor, labels: torch.Tensor, classes: tuple[str, ...],
                           temperature: float = 1.0, across_ranks: bool = False, head: str = "softmax") -> Evaluation:
    """All the metrics from logits, softened by `temperature`: the probabilities of the named head (heads.py),
    in float64."""
    probs = head_of(head).probabilities_torch(logits, temperature)
    return evaluation_from_probs(probs, labels, classes, across_ranks)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, head: str = "softmax") -> float:
    """The temperature T minimising the NLL of the head's probabilities at logits / T: a 1-D search on log T."""
    logits, kind = logits.double(), head_of(head)

    def nll(log_t: float) -> float:
        t = torch.exp(torch.tensor(log_t))
        return F.nll_loss(kind.log_probabilities_torch(logits, float(t)), labels).item()

    lo, hi = -3.0, 3.0  # T from 0.05 to 20; NLL is unimodal in log T
    for _ in range(60):  # golden-section search
        a, b = hi - 0.618 * (hi - lo), lo + 0.618 * (hi - lo)
        lo, hi = (lo, b) if nll(a) < nll(b) else (a, hi)
    return float(torch.exp(torch.tensor((lo + hi) / 2)))


# ---- a loaded model (inference.Classifier) over a whole split ----

def model_split(model: Classifier, split: str = "test", data_dir: str | os.PathLike | None = None,
                dataset: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images and labels of a split of the model's dataset (validation: the one it held out), or of
    another `dataset` (a registry name or a path), its labels turned into the model's classes by name."""
    from .data.own import get_dataset_spec, load_split

    if dataset is not None and dataset != model.card.dataset:
        if split == "validation":
            raise MnistlabError("the validation split is the one a model held out of its own dataset; "
                                "give --split test or train with --dataset.")
        images, labels = load_split(dataset, split, data_dir)
        return images, labels_by_name(labels, get_dataset_spec(dataset).classes, model.classes, dataset)
    if split == "validation" and not model.card.val_size:
        raise MnistlabError(f"{model.source or 'this model'} was trained on the whole training set: it has "
                            "no validation split (train with --val-size N to hold one out).")
    return load_split(model.card.dataset, split, data_dir, val_size=model.card.val_size)


def labels_by_name(labels: torch.Tensor, names: tuple[str, ...], classes: tuple[str, ...],
                   dataset: str) -> torch.Tensor:
    """A dataset's labels (indices into `names`) as indices into a model's `classes`, matched by name."""
    if tuple(names) == tuple(classes):
        return labels
    missing = [n for n in names if n not in classes]
    if missing:
        raise MnistlabError(f"{dataset}: class '{missing[0]}' is not among the model's classes ({', '.join(classes)}).")
    return torch.tensor([classes.index(n) for n in names], dtype=torch.int64)[labels]


def split_probabilities(model: Classifier, data_dir: str | os.PathLike | None = None, split: str = "test",
                        tta: str = "none", dataset: str | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(uint8 images, the model's probabilities [N, K] in float64, labels) over a whole split."""
    images, labels = model_split(model, split, data_dir, dataset)
    return images, torch.from_numpy(model.predict_proba(images.numpy(), tta)), labels


def evaluate(model: Classifier, data_dir: str | os.PathLike | None = None, split: str = "test",
             tta: str = "none", dataset: str | None = None) -> Evaluation:
    """Exact accuracy, confusion and calibration of a model on a whole split of its own dataset, or of `dataset`."""
    _, probs, labels = split_probabilities(model, data_dir, split, tta, dataset)
    return evaluation_from_probs(probs, labels, model.classes)


def evaluate_files(paths: list, data_dir: str | os.PathLike | None = None, split: str = "test",
                   device: str = "cpu", tta: str = "none", dataset: str | None = None
                   ) -> tuple[list[ModelCard], list[Evaluation], Evaluation]:
    """Evaluate one model, or an ensemble that averages the models' (calibrated) probabilities,
    each optionally averaged over the views of test-time augmentation `tta` first.

    Returns (the models' cards, the evaluation of each, the evaluation of their average)."""
    from .inference import load_model

    cards: list[ModelCard] = []
    members: list[Evaluation] = []
    total: torch.Tensor | None = None
    for path in paths:
        model = load_model(path, device)
        card = model.card
        if cards and (card.dataset, card.classes) != (cards[0].dataset, cards[0].classes):
            raise MnistlabError(f"{path}: trained on {card.dataset}, unlike {paths[0]}; "
                                "an ensemble needs one dataset.")
        _, probs, labels = split_probabilities(model, data_dir, split, tta, dataset)
        if total is not None and probs.shape != total.shape:
            raise MnistlabError(f"{path}: held out a different validation split from {paths[0]}; "
                                "an ensemble is judged on one split.")
        cards.append(card)
        members.append(evaluation_from_probs(probs, labels, card.classes))
        total = probs if total is None else total + probs
    assert total is not None, "evaluate_files needs at least one model"
    return cards, members, evaluation_from_probs(total / len(paths), labels, cards[0].classes)
