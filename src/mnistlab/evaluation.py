"""Exact evaluation: counts, confusion matrix, per-class precision and recall, and how honest
the probabilities are (expected calibration error over 15 bins, negative log-likelihood, Brier).

Everything is built from sums, so shares evaluated by several processes add up exactly."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .data.mnist import Loader
from .device import autocast
from .speedups import enabled
from .training import distributed as dist


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
    # inference mode also skips the version counters and view tracking that no_grad keeps
    no_grad = torch.inference_mode() if enabled("inference-mode") else torch.no_grad()
    with no_grad, autocast(device, amp_dtype):
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


def head_log_probabilities(logits: torch.Tensor, temperature: float = 1.0, head: str = "softmax") -> torch.Tensor:
    """log of the class probabilities [N, K], float64: log-softmax of logits / T, or for a sigmoid head
    the log of the sigmoids normalised to sum to 1, or for a none-class head the softmax of all outputs
    but "none" (as ood.head_outputs, in NumPy)."""
    z = logits.double() / temperature
    if head == "sigmoid":
        return F.log_softmax(F.logsigmoid(z), 1)  # log(s_i / sum s) = log s_i - logsumexp(log s)
    if head == "none-class":  # the classes' own distribution: given that it is one of them
        return F.log_softmax(z[:, :-1], 1)
    return F.log_softmax(z, 1)


def evaluation_from_logits(logits: torch.Tensor, labels: torch.Tensor, classes: tuple[str, ...],
                           temperature: float = 1.0, across_ranks: bool = False, head: str = "softmax") -> Evaluation:
    """All the metrics from logits, softened by `temperature` (softmax in float64; see head_log_probabilities)."""
    probs = (torch.softmax(logits.double() / temperature, 1) if head == "softmax"
             else head_log_probabilities(logits, temperature, head).exp())
    return evaluation_from_probs(probs, labels, classes, across_ranks)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, head: str = "softmax") -> float:
    """The temperature T minimising the NLL of the head's probabilities at logits / T: a 1-D search on log T."""
    logits, labels = logits.double(), labels

    def nll(log_t: float) -> float:
        t = torch.exp(torch.tensor(log_t))
        if head == "softmax":
            return F.cross_entropy(logits / t, labels).item()
        return F.nll_loss(head_log_probabilities(logits, float(t), head), labels).item()

    lo, hi = -3.0, 3.0  # T from 0.05 to 20; NLL is unimodal in log T
    for _ in range(60):  # golden-section search
        a, b = hi - 0.618 * (hi - lo), lo + 0.618 * (hi - lo)
        lo, hi = (lo, b) if nll(a) < nll(b) else (a, hi)
    return float(torch.exp(torch.tensor((lo + hi) / 2)))
