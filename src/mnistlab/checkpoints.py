"""Checkpoints: written atomically, read with weights_only=True, checked before use."""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError, MnistlabError

FORMAT = "mnistlab-checkpoint"
VERSION = 1


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call write(tmp_path) on a temp file beside `path`, then rename it into place.

    A crash, Ctrl-C or full disk leaves the old file untouched and no temp file behind.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as e:
        raise MnistlabError(f"cannot write {path}: {e.strerror or e}.") from None
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp, path)
    except OSError as e:
        raise MnistlabError(f"cannot write {path}: {e.strerror or e}.") from None
    except RuntimeError as e:  # torch.save reports a full disk as a RuntimeError
        raise MnistlabError(f"cannot write {path}: {e}.") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    state = {"format": FORMAT, "version": VERSION, **state}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def write_json(obj: Any, path: str | os.PathLike) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
    atomic_write(path, write)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load and check a checkpoint. Never unpickles code: weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: refused: it holds pickled objects other than tensors and plain data "
            "(not an mnistlab checkpoint, or possibly unsafe)."
        ) from None
    except Exception:  # garbage bytes make the unpickler fail in many ways (KeyError, EOFError, ...)
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt, truncated or another format).") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: a PyTorch file, but not an mnistlab checkpoint.")
    if state.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: written by a newer mnistlab (format {state['version']}); upgrade to read it.")
    for key in ("model", "model_state", "dataset", "normalization", "classes"):
        if key not in state:
            raise CheckpointError(f"{path}: checkpoint lacks '{key}'.")
    return state
