"""A --resume checkpoint read and checked against the run it is to continue: each key of its
training state checked before it is loaded (one sentence naming the key), and the run's steps
left checked against the config and flags, before anything is written."""

from __future__ import annotations

import math
import os
import shlex
from pathlib import Path
from typing import Any

import torch

from ..card import ModelCard
from ..checkpoints import check_weights, load_checkpoint
from ..errors import CheckpointError, MnistlabError, first_line
from .config import RunConfig
from .runs import latest_checkpoint


def resume_command(checkpoint: str | os.PathLike, data_dir: str | os.PathLike | None, processes: int = 1) -> str:
    """The command that continues a run from `checkpoint`, as it can be run: with the run's --data-dir and
    --processes, since the checkpoint says neither where its data was nor how many processes trained it."""
    data = f" --data-dir {shlex.quote(str(data_dir))}" if data_dir else ""
    ranks = f" --processes {processes}" if processes > 1 else ""
    return f"mnistlab train --resume {shlex.quote(str(checkpoint))}{data}{ranks}"


def read_resume_state(resume: str | os.PathLike) -> tuple[Path, dict]:
    """The checkpoint to resume (a run folder means its latest) and its whole state."""
    if Path(resume).is_dir():
        found = latest_checkpoint(resume)
        if found is None:
            raise MnistlabError(f"{resume}: no checkpoint here to resume from (ckpt-epochNNN.pt or "
                                "ckpt-interrupt.pt); is it a folder written by mnistlab train?")
        resume = found
    _, state = load_checkpoint(resume)
    if "optimizer_state" not in state:
        raise CheckpointError(f"{resume}: holds only final weights, not a resumable training state.")
    return Path(resume), state


def saved_config(saved, path: Path) -> RunConfig:
    """The checkpoint's own config, checked as a new run's would be."""
    if not isinstance(saved, dict):
        raise damaged(path, "config", "is not a dictionary")
    try:
        return RunConfig.from_dict(saved).validate()
    except (MnistlabError, TypeError) as e:
        raise damaged(path, "config", f"does not hold a valid run ({str(e).rstrip('.')})") from None


def check_steps_left(path: Path, cfg: RunConfig, done: int, total_steps: int, run_dir: Path) -> None:
    """A resumed run must have steps left to train: --epochs may not end before the checkpoint, and a
    finished run (the model.pt in `run_dir`, the folder it writes to, records the whole schedule trained)
    is not trained or saved again, from whichever of its checkpoints: an earlier one would train the
    same steps again and overwrite model.pt. Nor is its last checkpoint "resumed" into another folder (the
    model.pt beside it records the whole schedule too): no step would be trained."""
    if done > total_steps:
        raise MnistlabError(f"--epochs {cfg.epochs:g} ends before {path}, which has trained {done} of the run's steps.")
    saved = [run_dir / "model.pt"]
    if done == total_steps:  # a last checkpoint, whose own run saved its weights: nothing is left to train
        saved.append((path if path.is_dir() else path.parent) / "model.pt")
    model = next((m for m in dict.fromkeys(saved) if _steps_saved(m) >= total_steps), None)  # each read once
    if model is not None:
        further = ("a one-cycle run cannot be lengthened, so start a new run with more --epochs"
                   if cfg.schedule == "onecycle" else f"to train it further, resume with --epochs above {cfg.epochs:g}")
        raise MnistlabError(f"{path}: this run is finished (its --epochs {cfg.epochs:g} trained, its weights saved in "
                            f"{model}); {further}.")


def _steps_saved(model: Path) -> int:
    """The steps the run folder's model.pt was trained for: -1 where there is none, or none readable
    (the run then finishes again and writes it)."""
    if not model.is_file():
        return -1
    try:
        steps = load_checkpoint(model)[1].get("global_step")
    except MnistlabError:
        return -1
    return steps if isinstance(steps, int) and not isinstance(steps, bool) else -1


def damaged(path: Path, key: str, what: str) -> CheckpointError:
    return CheckpointError(f"{path}: its training state is damaged: '{key}' {what}.")


def restore(state: dict, path: Path, card: ModelCard, model, ema, opt, sched, steps_per_epoch: int) -> dict:
    """Load a checkpoint's training state into the freshly built parts, each key checked first
    (one sentence naming the key); returns the Run's counters (epoch, step_in_epoch, ...)."""
    counters = _counters(state, path, steps_per_epoch)
    history = state.get("history")
    if not isinstance(history, list) or not all(isinstance(e, dict) and isinstance(e.get("event"), str)
                                                for e in history):
        raise damaged(path, "history", "is not a list of events")
    rng = state.get("rng_state")
    if not (torch.is_tensor(rng) and rng.dtype == torch.uint8 and rng.dim() == 1):
        raise damaged(path, "rng_state", "is missing or not a random generator's state")
    parts = [("model_state" if ema is None else "train_model_state", model.load_state_dict),
             ("optimizer_state", opt.load_state_dict)]
    if ema is not None:
        parts.append(("ema_state", ema.load_state_dict))
    if sched is not None:
        parts.append(("scheduler_state", sched.load_state_dict))
    check_weights(card, state["model_state"], path)
    for key, load in parts:
        _load_part(state, key, load, path)
    _check_param_groups(opt, path)
    torch.set_rng_state(rng)
    stats = state.get("epoch_stats")  # an interrupted epoch's running figures, so its event matches an unbroken one
    if stats is not None and not (isinstance(stats, dict) and counters["step_in_epoch"]):
        raise damaged(path, "epoch_stats", "does not belong to an epoch under way")
    return counters | {"stats_state": stats}


def _counters(state: dict, path: Path, steps_per_epoch: int) -> dict:
    """epoch, step_in_epoch, global_step and train_seconds, checked against each other: a checkpoint
    with epoch -5 or step_in_epoch 1e9 would train silently wrong, or loop without end."""
    out = {}
    for key in ("epoch", "step_in_epoch", "global_step", "train_seconds"):
        value: Any = state.get(key)
        ok = (isinstance(value, (int, float)) if key == "train_seconds" else isinstance(value, int))
        if not ok or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise damaged(path, key, f"is {value!r}, not a number of zero or more")
        out[key] = value
    epoch, step, done = out["epoch"], out["step_in_epoch"], out["global_step"]
    # where an epoch is under way, the steps so far are exact; the checkpoint after a fractional last
    # epoch (--epochs 1.5) has moved to the next epoch having done only part of the one before
    agree = (done == (epoch - 1) * steps_per_epoch + step if step else
             (epoch - 2) * steps_per_epoch < done <= (epoch - 1) * steps_per_epoch)
    if epoch < 1 or step >= steps_per_epoch or not agree:
        raise damaged(path, "epoch", f"{epoch}, step {step} and global_step {done} do not agree "
                      f"with the run's {steps_per_epoch} steps an epoch")
    return out


def _load_part(state: dict, key: str, load, path: Path) -> None:
    value = state.get(key)
    if not isinstance(value, dict):
        raise damaged(path, key, "is missing")
    try:
        load(value)
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError, AttributeError) as e:
        raise damaged(path, key, f"does not fit this run ({first_line(e, 120)})") from None


def _check_param_groups(opt: torch.optim.Optimizer, path: Path) -> None:
    """The optimiser's settings as loaded: finite numbers (a string lr failed at the first step)."""
    for group in opt.param_groups:
        for key in ("lr", "momentum", "weight_decay", "betas", "eps"):
            values = group.get(key, 0.0)
            for v in values if isinstance(values, (tuple, list)) else [values]:
                v = v.item() if torch.is_tensor(v) and v.numel() == 1 else v
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise damaged(path, f"optimizer_state.param_groups.{key}", f"is {v!r}, not a finite number")
