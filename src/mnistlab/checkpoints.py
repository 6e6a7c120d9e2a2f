"""Checkpoints: written atomically, read with weights_only=True, checked before use."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .fileio import atomic_write

FORMAT = "mnistlab-checkpoint"
_UNREADABLE = "{path}: not a readable checkpoint (corrupt, truncated or another format)."
VERSION = 1


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    state = {"format": FORMAT, "version": VERSION, **state}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load and check a checkpoint. Never unpickles code: weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" not in str(e):  # only a pickle naming a class or function is "code"; the rest is garbage
            raise CheckpointError(_UNREADABLE.format(path=path)) from None
        raise CheckpointError(
            f"{path}: refused: it holds pickled objects other than tensors and plain data "
            "(not an mnistlab checkpoint, or possibly unsafe)."
        ) from None
    except Exception:  # garbage bytes make the unpickler fail in many ways (KeyError, EOFError, ...)
        raise CheckpointError(_UNREADABLE.format(path=path)) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: a PyTorch file, but not an mnistlab checkpoint.")
    if state.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: written by a newer mnistlab (format {state['version']}); upgrade to read it.")
    for key in ("model", "model_state", "dataset", "normalization", "classes"):
        if key not in state:
            raise CheckpointError(f"{path}: checkpoint lacks '{key}'.")
    return state
