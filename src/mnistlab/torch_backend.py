"""The PyTorch backends of a loaded model, uint8 images in, logits out: a module rebuilt from a
checkpoint's or a weights file's card and weights, or a program exported with torch.export (.pt2)."""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from .card import ModelCard, embedded_card
from .checkpoints import check_weights, load_weights
from .data.mnist import normalize
from .errors import CheckpointError, MnistlabError
from .models import build_model

PT2_SUFFIX = ".pt2"
PT2_CARD = "mnistlab.json"  # the .pt2 archive's extra file that holds the model card and what it outputs, as JSON
# Archive parts that torch.export.load would run as native code; mnistlab's own .pt2 files hold none.
_PT2_CODE = ("data/aotinductor/", "data/executorch/", "data/mtia/")
_UNREADABLE_PT2 = "{path}: not a readable .pt2 program (corrupt, truncated or another format)."


class TorchBackend:
    runtime = "PyTorch"
    outputs = "logits"

    def __init__(self, module: torch.nn.Module, card: ModelCard, device: torch.device):
        self.module, self.card, self.device = module.eval(), card, device
        self.channels_last = getattr(module, "channels_last", False)

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        """float32 logits [N, K] of uint8 images [N, 28, 28]."""
        x = normalize(torch.from_numpy(images).to(self.device), self.card.mean, self.card.std, self.channels_last)
        return self.module(x).float().cpu().numpy()


class ProgramBackend:
    """A .pt2 file from `mnistlab export --format pt2`: the exported graph, with batch norm folded."""

    runtime = "PyTorch (torch.export)"

    def __init__(self, program: torch.export.ExportedProgram, card: ModelCard, outputs: str, device: torch.device):
        self.program, self.card, self.outputs, self.device = program, card, outputs, device
        self.module = program.module()

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        """float32 logits (or the file's own probabilities) [N, K] of uint8 images [N, 28, 28]."""
        x = normalize(torch.from_numpy(images).to(self.device), self.card.mean, self.card.std)
        return self.module(x).float().cpu().numpy()


def load(path: str | os.PathLike, device: torch.device) -> TorchBackend | ProgramBackend:
    """Rebuild a model from its card and weights (a model.pt or checkpoint, a .safetensors file or a
    Hugging Face folder; a model with one output per class name), or load a .pt2 program; anything
    that does not fit is one sentence."""
    if Path(path).suffix.lower() == PT2_SUFFIX:
        return load_program(path, device)
    card, weights = load_weights(path)
    check_weights(card, weights, path)
    try:  # the skeleton above is not run: a setting that fails only on a real batch fails here
        module = build_model(card.model, card.outputs, **card.model_config)
    except MnistlabError as e:
        raise CheckpointError(f"{path}: cannot rebuild its model: {e}") from None
    module.load_state_dict(weights)
    if getattr(module, "channels_last", False):
        module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # (torch's stubs)
    return TorchBackend(module.to(device), card, device)


def load_program(path: str | os.PathLike, device: torch.device) -> ProgramBackend:
    """A .pt2 file written by `mnistlab export --format pt2`, checked first to hold nothing that
    torch.export.load would unpickle or run (it unpickles some parts with weights_only=False)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such .pt2 file.")
    _check_plain_archive(path)
    extra = {PT2_CARD: ""}
    try:
        with quiet_loggers("torch.export", "torch._export"):  # they log a traceback before raising on a damaged file
            program = torch.export.load(path, extra_files=extra)
    except Exception:  # the deserialiser fails on damaged archives in many ways
        raise CheckpointError(_UNREADABLE_PT2.format(path=path)) from None
    if not extra[PT2_CARD]:
        raise CheckpointError(f"{path}: a .pt2 program, but not one exported by mnistlab export (no model card).")
    card, outputs = embedded_card(extra[PT2_CARD], f"{path}: its model card ({PT2_CARD})", str(path))
    if device.type != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    backend = ProgramBackend(program, card, outputs, device)
    try:
        shape = tuple(backend(np.zeros((2, 28, 28), np.uint8)).shape)
    except Exception:  # a program for other inputs fails in its own way (a guard, a shape mismatch)
        shape = None
    if shape != (2, len(card.classes)):
        raise CheckpointError(f"{path}: its program does not map images [N, 1, 28, 28] to [N, {len(card.classes)}].")
    return backend


def _check_plain_archive(path: Path) -> None:
    """Refuse a .pt2 archive with pickled objects (anything torch.load with weights_only=True
    refuses) or compiled code: mnistlab's own hold a graph (JSON) and plain tensors."""
    def refuse(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: refused: the archive holds {what} (not an mnistlab export, or possibly "
                               "unsafe).")

    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                part = name.split("/", 1)[-1]  # below the archive's root folder
                if part.startswith(_PT2_CODE):
                    raise refuse("compiled code")
                if part.endswith(".pt"):  # sample inputs; the weights of older archives
                    torch.load(io.BytesIO(archive.read(name)), map_location="cpu", weights_only=True)
                elif part.endswith("_config.json") and part.startswith(("data/weights/", "data/constants/")):
                    entries = json.loads(archive.read(name))["config"].values()
                    if any(e["use_pickle"] or not e["path_name"].startswith(("weight_", "tensor_")) for e in entries):
                        raise refuse("pickled objects")
    except CheckpointError:
        raise
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e):  # weights_only=True met a pickle that names a class or function
            raise refuse("pickled objects other than tensors and plain data") from None
        raise CheckpointError(_UNREADABLE_PT2.format(path=path)) from None
    except Exception:  # not a zip file, a damaged member, a config of another shape
        raise CheckpointError(_UNREADABLE_PT2.format(path=path)) from None


@contextmanager
def quiet_loggers(*names: str):
    """Silence these loggers and their children for a while: torch's remarks that are no news to a user."""
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in names]
    for logger, _ in saved:
        logger.setLevel(logging.CRITICAL)  # children without a level of their own inherit it
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)
