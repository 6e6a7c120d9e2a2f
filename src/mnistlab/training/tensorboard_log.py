"""TensorBoard logging for `mnistlab train --tensorboard [DIR]`: a sink on the run's RunLog.

Every event that goes to metrics.jsonl also goes here, as scalars (metrics.jsonl stays the record):

    train/loss, train/lr             the running loss at each log line and the learning rate then, by step
    epoch/seconds                    each epoch's training time (evaluation excluded), by epoch
    epoch/train_loss, epoch/train_accuracy
    validation/accuracy, validation/loss, test/accuracy, test/loss   by epoch

Needs the tensorboard package (mnistlab[tensorboard]); `tensorboard --logdir DIR` shows it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import MnistlabError

if TYPE_CHECKING:
    from .runs import RunLog

DEFAULT_SUBDIR = "tensorboard"  # inside the run folder, when --tensorboard is given without a folder


def require_tensorboard() -> None:
    """Refuse at once, before any work, where the tensorboard package is missing."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise MnistlabError("--tensorboard needs the tensorboard package: pip install 'mnistlab[tensorboard]'.") \
            from None


def log_dir(run_dir: Path, where: str | os.PathLike | bool) -> Path:
    """The run folder's tensorboard/ (for True or ""), or for a folder given, a subfolder named as the
    run folder is, so that one `tensorboard --logdir DIR` compares the runs logged there."""
    if isinstance(where, bool) or where == "":
        return run_dir / DEFAULT_SUBDIR
    return Path(where) / run_dir.name


class TensorBoardSink:
    """Writes a run's events as TensorBoard scalars; `history` is what the run resumes from, if anything."""

    def __init__(self, path: Path, history: list[dict]):
        from torch.utils.tensorboard import SummaryWriter

        self.path = path
        self.writer = SummaryWriter(str(path))
        # an epoch's time is the growth of the run's training seconds since the epoch before
        self.seconds = next((e["train_seconds"] for e in reversed(history) if e["event"] == "epoch"), 0.0)

    def __call__(self, event: dict) -> None:
        kind, add = event["event"], self.writer.add_scalar
        if kind == "train":
            add("train/loss", event["loss"], event["global_step"])
            add("train/lr", event["lr"], event["global_step"])
        elif kind == "epoch":
            add("epoch/seconds", event["train_seconds"] - self.seconds, event["epoch"])
            add("epoch/train_loss", event["train_loss"], event["epoch"])
            add("epoch/train_accuracy", event["train_accuracy"], event["epoch"])
            self.seconds = event["train_seconds"]
        elif kind in ("validation", "test"):
            add(f"{kind}/accuracy", event["accuracy"], event["epoch"])
            add(f"{kind}/loss", event["loss"], event["epoch"])

    def close(self) -> None:
        self.writer.close()


@contextlib.contextmanager
def tensorboard_logged(log: RunLog, run_dir: Path, where: str | os.PathLike | bool | None) -> Iterator[None]:
    """Within the block, `log`'s events also go to TensorBoard (nothing where `where` is None, or off rank 0)."""
    if where is None or where is False or not log.speak:
        yield
        return
    sink = TensorBoardSink(log_dir(run_dir, where), log.history)
    log.sinks.append(sink)
    try:
        yield
    finally:
        log.sinks.remove(sink)
        sink.close()
