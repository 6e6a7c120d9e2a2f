"""One optimiser step: eager, or captured once as a CUDA graph and replayed.

A small model on a big GPU spends most of each step launching kernels from Python, far longer
than the GPU's own work (BENCHMARKS.md). A CUDA graph of the whole step
(forward, backward, optimiser) replays all of it with one launch.
"""

from __future__ import annotations

import contextlib

import torch

from ..device import autocast
from ..heads import Head


class EagerStep:
    """forward, backward, optimiser step; returns (loss, number correct) as device tensors."""

    def __init__(self, model, opt, amp, label_smoothing: float, head: Head, outlier_weight: float = 0.0,
                 outlier_loss: str = "uniform"):
        self.model, self.opt, self.amp, self.label_smoothing = model, opt, amp, label_smoothing
        self.head, self.outlier_weight, self.outlier_loss = head, outlier_weight, outlier_loss

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The head's training loss (heads.Head.loss); labels of -1 are outliers."""
        return self.head.loss(logits, y, self.label_smoothing, self.outlier_weight, self.outlier_loss)

    def __call__(self, x: torch.Tensor, y: torch.Tensor):
        with autocast(x.device, self.amp):
            logits = self.model(x)
            loss = self.loss(logits, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach(), (logits.argmax(1) == y).sum()

    def after_schedule(self) -> None:
        """Called after the learning-rate scheduler moved (nothing to do eagerly)."""


class GraphedStep(EagerStep):
    """The same step, captured as a CUDA graph after a few eager warm-up steps.

    The learning rate: torch's capturable Adam and AdamW read it from a device tensor, refreshed
    after each scheduler step (betas stay fixed). mnistlab's SGD (training.optim) reads a float,
    which the graph holds as it was at capture: a new rate drops the graph, and the next step
    captures it again (a run that captures SGD keeps its rate constant). Batches of another size
    (an epoch's last) run eagerly on the same weights and optimiser state.
    """

    WARMUP = 3

    def __init__(self, model, opt, amp, label_smoothing: float, head: Head, outlier_weight: float = 0.0,
                 outlier_loss: str = "uniform"):
        super().__init__(model, opt, amp, label_smoothing, head, outlier_weight, outlier_loss)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.shape: torch.Size | None = None  # of the batches the graph was captured for
        self.calls = 0
        self.captured_lrs: list[float] = []  # a float rate as the graph holds it
        device = next(model.parameters()).device
        self.lrs = []  # one device tensor per parameter group, read by a capturable optimiser
        if opt.defaults.get("capturable"):
            for group in opt.param_groups:
                group["lr"] = torch.tensor(float(group["lr"]), device=device)
                self.lrs.append(group["lr"])

    def after_schedule(self) -> None:
        for group, lr in zip(self.opt.param_groups, self.lrs):
            if group["lr"] is not lr:  # a scheduler wrote a float: copy it into the tensor
                lr.fill_(float(group["lr"]))
                group["lr"] = lr
        if not self.lrs and self.graph is not None and self._float_lrs() != self.captured_lrs:
            self.graph = None

    def _float_lrs(self) -> list[float]:
        return [float(group["lr"]) for group in self.opt.param_groups]

    def __call__(self, x: torch.Tensor, y: torch.Tensor):
        self.calls += 1
        if self.graph is None and self.calls <= self.WARMUP:
            with self.warm_up():
                out = super().__call__(x, y)
            self.shape = x.shape
            return out
        if x.shape != self.shape:
            return super().__call__(x, y)
        graph = self.graph
        if graph is None:
            self.static_x, self.static_y = x.clone(), y.clone()
            self.opt.zero_grad(set_to_none=True)  # the graph's backward then writes the gradients afresh
            self.captured_lrs = self._float_lrs()
            graph = self.graph = self.capture(self.body)
        self.static_x.copy_(x)
        self.static_y.copy_(y)
        graph.replay()
        return self.static_loss, self.static_correct

    def body(self) -> None:
        """The captured step: static_x and static_y in, static_loss and static_correct out."""
        with torch.autocast(self.static_x.device.type, dtype=self.amp, enabled=self.amp is not None,
                            cache_enabled=False):
            logits = self.model(self.static_x)
            loss = self.loss(logits, self.static_y)
        loss.backward()
        self.opt.step()
        self.static_loss = loss.detach()
        self.static_correct = (logits.argmax(1) == self.static_y).sum()

    @staticmethod
    @contextlib.contextmanager
    def warm_up():
        """Warm-up steps on a side stream, as CUDA graph capture requires."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            yield
        torch.cuda.current_stream().wait_stream(side)

    @staticmethod
    def capture(body) -> torch.cuda.CUDAGraph:
        """`body`'s kernels recorded, not run, as a graph that runs them at each replay()."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            body()
        return graph
