"""The PyTorch backend of a loaded model: a checkpoint's module on a device, uint8 images in, logits out."""

from __future__ import annotations

import os

import numpy as np
import torch

from .card import ModelCard
from .checkpoints import check_weights, load_checkpoint
from .data import normalize
from .models import build_model


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


def load(path: str | os.PathLike, device: torch.device) -> TorchBackend:
    """Rebuild a checkpoint's model from its card and weights (a model with one output per class
    name); anything that does not fit is one sentence."""
    card, state = load_checkpoint(path)
    weights = state["model_state"]
    check_weights(card, weights, path)
    module = build_model(card.model, card.outputs, **card.model_config)
    module.load_state_dict(weights)
    if getattr(module, "channels_last", False):
        module = module.to(memory_format=torch.channels_last)
    return TorchBackend(module.to(device), card, device)
