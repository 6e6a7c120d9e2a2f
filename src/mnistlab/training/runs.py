"""A training run's folder and voice: config.json, metrics.jsonl, the printed lines, Ctrl-C.

    runs/cnn-mnist-20261126-130000/
        config.json        the RunConfig
        metrics.jsonl      one JSON event a line: train, epoch, validation, test, calibration
        ckpt-epochNNN.pt   resumable checkpoints; model.pt and model.safetensors, the final weights
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from tqdm import tqdm

from .. import distributed as dist
from ..errors import MnistlabError
from ..fileio import append_line, atomic_write, write_json
from .config import RunConfig


def new_run_dir(cfg: RunConfig, root: str = "runs") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    dataset = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(cfg.dataset).stem).strip("-") or "data"  # --dataset PATH: its name
    base = Path(root) / f"{cfg.model}-{dataset}-{stamp}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


def prepare_run_dir(out: str | os.PathLike | None, cfg: RunConfig, resuming_from: Path | None = None) -> Path:
    """The run's folder, with its config.json written. A folder that holds another run is refused:
    only a run resumed from a checkpoint in its own folder writes where checkpoints already are."""
    run_dir = Path(dist.broadcast_str(str(out) if out else str(new_run_dir(cfg))))
    if run_dir.exists() and not run_dir.is_dir():
        raise MnistlabError(f"--out {run_dir} is a file, not a folder.")
    own = resuming_from is not None and run_dir.resolve() == resuming_from.resolve()
    if not own and run_dir.is_dir() and any(run_dir.glob("*.pt")):
        hint = "choose another folder" if resuming_from else "choose another folder or use --resume"
        raise MnistlabError(f"--out {run_dir} already holds a run; {hint}.")
    if dist.is_main():
        write_json(cfg.to_dict(), run_dir / "config.json")  # fails early if the folder is unwritable
    return run_dir


class RunLog:
    """Plain lines, or a tqdm bar on a terminal; only rank 0 speaks and writes metrics.

    metrics.jsonl starts as the history the run resumes from (empty for a new run), so that a
    run killed after its last checkpoint leaves no events behind that the resumed run repeats.
    Each sink (a function of one event, e.g. tensorboard_log.TensorBoardSink) sees every event
    recorded after it was added, on rank 0 only.
    """

    def __init__(self, metrics_path: Path, progress: bool | None, history: list[dict] | None = None):
        self.speak = dist.is_main()
        self.progress = self.speak and (sys.stderr.isatty() if progress is None else progress)
        self.metrics_path = metrics_path
        self.history: list[dict] = list(history or [])
        self.sinks: list[Callable[[dict], None]] = []
        if self.speak:
            lines = "".join(json.dumps(event) + "\n" for event in self.history)
            atomic_write(metrics_path, lambda tmp: Path(tmp).write_text(lines))

    def line(self, text: str) -> None:
        if self.speak:
            tqdm.write(text, file=sys.stdout)

    def record(self, **event) -> None:
        self.history.append(event)
        if self.speak:
            append_line(self.metrics_path, json.dumps(event))
            for sink in self.sinks:
                sink(event)

    def bar(self, total: int, initial: int, desc: str):
        return tqdm(total=total, initial=initial, desc=desc, leave=False, disable=not self.progress,
                    dynamic_ncols=True)


class StopRequest:
    """First Ctrl-C asks the loop to stop after the current step; a second one stops at once."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        if dist.is_main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The run folder's most recently written resumable checkpoint (an epoch's or Ctrl-C's), if any."""
    found = [p for pattern in ("ckpt-epoch*.pt", "ckpt-interrupt.pt") for p in Path(run_dir).glob(pattern)
             if p.is_file()]
    return max(found, key=lambda p: (p.stat().st_mtime_ns, p.name), default=None)


def read_run_events(run_dir: str | os.PathLike) -> list[dict]:
    """The events a training run wrote to its metrics.jsonl (one JSON object a line), in order."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise MnistlabError(f"{run_dir}: no metrics.jsonl here; is it a folder written by mnistlab train?")
    try:
        text = path.read_text()
        if not text.endswith("\n"):  # a process killed in mid-write: its last, unfinished line is dropped
            text = text[:text.rfind("\n") + 1]
        events = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (ValueError, UnicodeDecodeError):
        raise MnistlabError(f"{path}: not one JSON event a line (damaged?).") from None
    if not all(isinstance(e, dict) and isinstance(e.get("event"), str) for e in events):
        raise MnistlabError(f"{path}: a line is not an event (a JSON object with an \"event\"); damaged?")
    return events
