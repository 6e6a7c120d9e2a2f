"""Exact evaluation: counts, confusion matrix, per-class precision and recall."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import distributed as dist
from .data import Loader


def format_accuracy(correct: int, total: int) -> str:
    """Exact counts and two decimals: '9879/10000 = 98.79%'."""
    return f"{correct}/{total} = {100.0 * correct / max(total, 1):.2f}%"


@dataclass
class Evaluation:
    confusion: torch.Tensor  # [true, predicted] counts, int64
    loss: float  # mean cross-entropy (nats)
    classes: tuple[str, ...]

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
        counts, flat = off.flatten().topk(k)
        n = off.shape[1]
        return [(self.classes[i // n], self.classes[i % n], int(c))
                for c, i in zip(counts.tolist(), flat.tolist()) if c > 0]

    def to_dict(self) -> dict:
        return {
            "correct": self.correct, "total": self.total, "accuracy": self.accuracy,
            "loss": self.loss, "classes": list(self.classes),
            "precision": self.precision(), "recall": self.recall(),
            "confusion": self.confusion.tolist(),
            "most_confused": [{"true": t, "predicted": p, "count": c} for t, p, c in self.most_confused()],
        }

    def report(self) -> str:
        lines = [f"accuracy: {format_accuracy(self.correct, self.total)}", f"mean loss: {self.loss:.4f}", "",
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


def autocast(device: torch.device, dtype: torch.dtype | None):
    """bf16 autocast when dtype is given, else a no-op context."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, loader: Loader,
                   amp_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All logits (float32) and labels of a loader, in order."""
    was_training = model.training
    model.eval()
    device = loader.images.device
    logits, labels = [], []
    with autocast(device, amp_dtype):
        for x, y in loader.batches():
            logits.append(model(x).float())
            labels.append(y)
    model.train(was_training)
    return torch.cat(logits), torch.cat(labels)


def evaluate(model: torch.nn.Module, loader: Loader, classes: tuple[str, ...],
             amp_dtype: torch.dtype | None = None) -> Evaluation:
    """Exact counts over the whole loader. Under torchrun each rank takes a share and the
    confusion matrices and loss sums are added up, so the counts equal one process's."""
    if dist.world_size() > 1:
        loader = loader.shard(dist.rank(), dist.world_size())
    logits, labels = predict_logits(model, loader, amp_dtype)
    k = len(classes)
    sums = torch.cat([_confusion(logits, labels, k).flatten().double(),
                      F.cross_entropy(logits, labels, reduction="sum").double().view(1).cpu()])
    sums = dist.all_reduce_sum(sums)
    confusion = sums[:-1].round().long().view(k, k)
    total = int(confusion.sum())
    return Evaluation(confusion=confusion, loss=sums[-1].item() / total if total else float("nan"),
                      classes=tuple(classes))


def _confusion(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    return torch.bincount(labels * k + logits.argmax(1), minlength=k * k).reshape(k, k).cpu()


def evaluation_from_logits(logits: torch.Tensor, labels: torch.Tensor, classes: tuple[str, ...]) -> Evaluation:
    k = len(classes)
    loss = F.cross_entropy(logits, labels).item() if len(labels) else float("nan")
    return Evaluation(confusion=_confusion(logits, labels, k), loss=loss, classes=tuple(classes))
