"""Checkpoints and weights files: written atomically, read without unpickling code, checked before use.

A checkpoint is a dict: the model card under "card", the weights under "model_state",
and for a resumable training state also the run config, optimiser, scheduler and RNG state.
It is read with weights_only=True. The weights alone also travel as safetensors (plain
tensors and a string table: nothing to unpickle), with the model card, as JSON, in the
metadata: the pretrained models, a finished run's model.safetensors, and a folder in the
Hugging Face layout, whose config.json is its card.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import torch

from .card import HF_CONFIG, HF_WEIGHTS, ModelCard, embedded_card, is_hf_folder
from .errors import CheckpointError, MnistlabError
from .fileio import atomic_write
from .models import build_skeleton

FORMAT = "mnistlab-checkpoint"
# 2: the model card under "card". 1 (before 0.2): the card's fields at the top level, val_size in "config".
VERSION = 2
_UNREADABLE = "{path}: not a readable checkpoint (corrupt, truncated or another format)."
SAFETENSORS_SUFFIX = ".safetensors"
CARD_KEY = "mnistlab"  # the safetensors metadata entry that holds the model card, as JSON (as in ONNX files)


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
    if _is_torchscript(path):
        raise CheckpointError(f"{path}: a TorchScript program (torch.jit.save, or mnistlab export --format "
                              "torchscript), which mnistlab writes for other tools but does not read back.")
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
        config = state["config"] if isinstance(state.get("config"), dict) else {}
        card = ModelCard.from_dict({**state, "val_size": config.get("val_size", 0)}, str(path))
    return card, state


def _is_torchscript(path: Path) -> bool:
    """Whether the file is an archive that torch.jit.save wrote: its program's constants.pkl lies beside the data."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.split("/", 1)[-1] == "constants.pkl" for name in archive.namelist())
    except Exception:  # a damaged archive fails in many ways (BadZipFile, NotImplementedError, ...): torch.load says
        return False


def check_weights(card: ModelCard, weights: dict, path: str | os.PathLike) -> None:
    """The weights fit the model the card names, and are finite numbers. The model is first built
    on the meta device, which allocates nothing: a crafted card asking for widths of 30,000 is
    refused in milliseconds, not after gigabytes."""
    try:
        with torch.device("meta"):
            skeleton = build_skeleton(card.model, card.outputs, card.model_config)
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


def weights_bytes(card: ModelCard, weights: dict[str, torch.Tensor]) -> bytes:
    """The weights as a safetensors file, with the model card in its metadata."""
    from safetensors.torch import save

    # safetensors stores each tensor's bytes in row-major order: a channels-last weight is made contiguous
    tensors = {name: t.detach().cpu().contiguous() for name, t in weights.items()}
    return save(tensors, metadata={"format": "pt", CARD_KEY: json.dumps(card.to_dict())})


def save_weights(card: ModelCard, weights: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    data = weights_bytes(card, weights)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def load_weights(path: str | os.PathLike) -> tuple[ModelCard, dict[str, torch.Tensor]]:
    """The model card and the weights of a model.pt or checkpoint, a .safetensors file, or a folder
    in the Hugging Face layout; anything amiss is one sentence."""
    path = Path(path)
    if path.is_dir():
        return _load_hf_folder(path)
    if not is_safetensors(path):
        card, state = load_checkpoint(path)
        return card, state["model_state"]
    metadata, weights = _read_safetensors(path)
    if CARD_KEY not in metadata:
        raise CheckpointError(f"{path}: a safetensors file, but without mnistlab's model card in its metadata "
                              "(not written by mnistlab).")
    return embedded_card(metadata[CARD_KEY], f"{path}: the model card in its metadata", str(path))[0], weights


def is_safetensors(path: Path) -> bool:
    """A .safetensors file by its name, or by its first bytes: a header length, then a JSON object."""
    if path.suffix.lower() == SAFETENSORS_SUFFIX:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
        return len(head) == 9 and head[8:] == b"{" and struct.unpack("<Q", head[:8])[0] < path.stat().st_size
    except OSError:
        return False


def _read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"{path}: no such safetensors file.")
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}, {name: f.get_tensor(name) for name in f.keys()}
    except Exception:  # SafetensorError for a bad header, and more for bytes that only look like one
        raise CheckpointError(f"{path}: not a readable safetensors file (corrupt, truncated or another "
                              "format).") from None


def _load_hf_folder(path: Path) -> tuple[ModelCard, dict[str, torch.Tensor]]:
    """A folder in the Hugging Face layout: its config.json is the card (tools that rewrite
    model.safetensors may drop its metadata)."""
    if not is_hf_folder(path):
        raise CheckpointError(f"{path}: a folder, but not a model in the Hugging Face layout "
                              f"({HF_CONFIG} and {HF_WEIGHTS}).")
    try:
        text = (path / HF_CONFIG).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise CheckpointError(f"{path / HF_CONFIG}: not readable as text.") from None
    card = embedded_card(text, str(path / HF_CONFIG), str(path / HF_CONFIG))[0]
    return card, _read_safetensors(path / HF_WEIGHTS)[1]
