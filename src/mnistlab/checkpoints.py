"""Checkpoints: written atomically, read with weights_only=True, checked before use.

A checkpoint is a dict: the model card under "card", the weights under "model_state",
and for a resumable training state also the run config, optimiser, scheduler and RNG state.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from .card import ModelCard
from .errors import CheckpointError, MnistlabError
from .fileio import atomic_write
from .models import build_model

FORMAT = "mnistlab-checkpoint"
# 2: the model card under "card". 1 (before 0.2): the card's fields at the top level, val_size in "config".
VERSION = 2
_UNREADABLE = "{path}: not a readable checkpoint (corrupt, truncated or another format)."


def save_checkpoint(card: ModelCard, state: dict[str, Any], path: str | os.PathLike) -> None:
    state = {"format": FORMAT, "version": VERSION, "card": card.to_dict(), **state}
    # serialised in memory first (a few MB): a full disk then fails in a plain write, as an OSError
    # that names the problem, not inside torch's zip writer ("unexpected pos 7872 vs 7800")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getbuffer()))


def load_checkpoint(path: str | os.PathLike) -> tuple[ModelCard, dict[str, Any]]:
    """The model card and the whole state of a checkpoint. Never unpickles code: weights_only=True."""
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
    version = state.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise CheckpointError(f"{path}: its format version {version!r} is not a whole number; the file is damaged "
                              "or was not written by mnistlab.")
    if version > VERSION:
        raise CheckpointError(f"{path}: written by a newer mnistlab (format {version}); upgrade to read it.")
    if not isinstance(state.get("model_state"), dict):
        raise CheckpointError(f"{path}: checkpoint lacks 'model_state'.")
    if version >= 2:
        card = ModelCard.from_dict(state.get("card"), str(path))
    else:
        config = state.get("config") if isinstance(state.get("config"), dict) else {}
        card = ModelCard.from_dict({**state, "val_size": config.get("val_size", 0)}, str(path))
    return card, state


def check_weights(card: ModelCard, weights: dict, path: str | os.PathLike) -> None:
    """The weights fit the model the card names, and are finite numbers. The model is first built
    on the meta device, which allocates nothing: a crafted card asking for widths of 30,000 is
    refused in milliseconds, not after gigabytes."""
    try:
        with torch.device("meta"):
            skeleton = build_model(card.model, card.outputs, **card.model_config)
    except MnistlabError as e:
        raise CheckpointError(f"{path}: cannot rebuild its model: {e}") from None
    expected = skeleton.state_dict()
    misfit = sorted(set(expected) ^ set(weights)) or [
        k for k in expected if not torch.is_tensor(weights[k]) or weights[k].shape != expected[k].shape]
    if misfit:
        raise CheckpointError(f"{path}: its weights do not fit the model '{card.model}' it names ('{misfit[0]}' "
                              "differs: a checkpoint of another model or a damaged file).")
    for name, tensor in weights.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: its weights hold NaN or infinite values ('{name}'); the file is damaged "
                                  "or its training diverged.")
