"""Augmentation on whole batches, on the training device: one affine_grid / grid_sample
call per batch instead of a PIL transform per image.

Randomness comes from a generator seeded per step, so a resumed run draws the same
distortions as an unbroken one. The same warp gives the fixed views of test-time
augmentation (`TTA_VIEWS`, `tta_views`): a model's probabilities averaged over them.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .errors import MnistlabError


@dataclass(frozen=True)
class Augment:
    degrees: float = 0.0  # rotation drawn from [-degrees, degrees]
    scale: float = 0.0  # zoom factor drawn from [1 - scale, 1 + scale]
    translate: float = 0.0  # shift drawn from [-translate, translate] x image size, each axis
    elastic: float = 0.0  # elastic displacement strength in pixels (0: off)
    elastic_sigma: float = 4.0  # smoothness of the elastic field, in pixels
    # for clothes, not digits or kana, whose mirror images are other symbols or none:
    flip: float = 0.0  # probability of a horizontal flip
    crop: int = 0  # pad-and-crop: a whole-pixel shift of up to this many pixels, each axis
    erase: float = 0.0  # probability of random erasing: a rectangle of 2-33% of the image set to background

    def __post_init__(self):
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise MnistlabError(f"--augment {name} must be a number, not {json.dumps(value)}.")
        limits = {"degrees": (0, 180), "scale": (0, 0.9), "translate": (0, 0.5), "elastic": (0, 14),
                  "elastic_sigma": (0.5, 14), "flip": (0, 1), "crop": (0, 8), "erase": (0, 1)}
        for name, (low, high) in limits.items():
            if not low <= getattr(self, name) <= high:
                raise MnistlabError(f"--augment {name} must lie between {low} and {high}, not {getattr(self, name)}.")
        if self.crop != int(self.crop):
            raise MnistlabError(f"--augment crop is a whole number of pixels, not {self.crop}.")

    def to_dict(self) -> dict:
        return asdict(self)

    def __call__(self, x: torch.Tensor, seed: int, background: float = 0.0) -> torch.Tensor:
        """Distort a batch [N, C, H, W]; pixels that come from outside get `background`."""
        n, _, h, w = x.shape
        g = torch.Generator(device=x.device).manual_seed(seed)

        def uniform(*shape):
            return torch.rand(*shape, generator=g, device=x.device) * 2 - 1

        angle = uniform(n) * math.radians(self.degrees)
        zoom = 1 + uniform(n) * self.scale
        shift = uniform(n, 2) * self.translate * 2  # grid coordinates span [-1, 1]
        field = self._elastic_field(n, h, w, uniform, x.device) if self.elastic else None
        # drawn after the others, and only when asked for: the digits' recipes keep their exact draws
        mirror = torch.where(torch.rand(n, generator=g, device=x.device) < self.flip, -1.0, 1.0) if self.flip else None
        if self.crop:
            pixels = torch.randint(-int(self.crop), int(self.crop) + 1, (n, 2), generator=g, device=x.device)
            shift = shift + pixels * 2 / torch.tensor([w, h], device=x.device)
        out = warp(x, angle, zoom, shift, background, field, mirror)
        return self._erase(out, g, background) if self.erase else out

    def _erase(self, x: torch.Tensor, g: torch.Generator, background: float) -> torch.Tensor:
        # random erasing (Zhong et al. 2020): a rectangle of 2-33% of the image, aspect 0.3-3.3
        n, _, h, w = x.shape

        def rand(*shape):
            return torch.rand(*shape, generator=g, device=x.device)

        chosen = rand(n) < self.erase
        area = (0.02 + 0.31 * rand(n)) * h * w
        aspect = torch.exp((2 * rand(n) - 1) * math.log(1 / 0.3))
        eh = (area * aspect).sqrt().round().clamp(1, h)
        ew = (area / aspect).sqrt().round().clamp(1, w)
        top, left = (rand(n) * (h - eh + 1)).floor(), (rand(n) * (w - ew + 1)).floor()
        rows = torch.arange(h, device=x.device).view(1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w)
        inside = ((rows >= top.view(n, 1, 1)) & (rows < (top + eh).view(n, 1, 1)) & (cols >= left.view(n, 1, 1))
                  & (cols < (left + ew).view(n, 1, 1)) & chosen.view(n, 1, 1))
        return x.masked_fill(inside.unsqueeze(1), background)

    def _elastic_field(self, n, h, w, uniform, device) -> torch.Tensor:
        # smooth random displacements (Simard et al. 2003), in grid units
        radius = int(3 * self.elastic_sigma)
        t = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
        kernel = torch.exp(-t ** 2 / (2 * self.elastic_sigma ** 2))
        kernel = kernel / kernel.sum()
        field = uniform(n, 2, h, w)
        field = F.conv2d(field, kernel.view(1, 1, 1, -1).expand(2, 1, 1, -1), padding=(0, radius), groups=2)
        field = F.conv2d(field, kernel.view(1, 1, -1, 1).expand(2, 1, -1, 1), padding=(radius, 0), groups=2)
        field = field / field.abs().amax(dim=(2, 3), keepdim=True).clamp(min=1e-6)
        return (field * self.elastic * 2 / torch.tensor([w, h], device=device).view(1, 2, 1, 1)).permute(0, 2, 3, 1)


def warp(x: torch.Tensor, angle: torch.Tensor, zoom: torch.Tensor, shift: torch.Tensor,
         background: float = 0.0, field: torch.Tensor | None = None,
         mirror: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate (radians), zoom and shift (grid units: 2 / width a pixel) each image of [N, C, H, W],
    mirror it left to right where `mirror` is -1, plus an optional displacement field
    [N, H, W, 2]; pixels from outside get `background`."""
    n, _, h, w = x.shape
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    m = mirror if mirror is not None else 1.0  # the input's x coordinate, negated: a horizontal flip
    theta = torch.stack([torch.stack([cos * m, -sin, shift[:, 0]], 1), torch.stack([sin * m, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    if field is not None:
        grid = grid + field
    out = F.grid_sample(x.float() - background, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = out + background
    return out.contiguous(memory_format=torch.channels_last) if x.is_contiguous(
        memory_format=torch.channels_last) and x.shape[1] > 1 else out


class View(NamedTuple):
    """One fixed view for test-time augmentation: the ink turned by `degrees`, scaled by `zoom`,
    moved right and down by (dx, dy) pixels, and with `mirror` flipped left to right."""

    degrees: float = 0
    zoom: float = 1
    dx: float = 0
    dy: float = 0
    mirror: bool = False


# Test-time augmentation's views; the first is the image itself. "flip" is for datasets whose
# classes survive a mirror (DatasetSpec.flips): clothes, not digits or kana.
TTA_VIEWS: dict[str, tuple[View, ...]] = {
    "none": (View(),),
    "shift": (View(), View(dx=1), View(dx=-1), View(dy=1), View(dy=-1)),
    "rotate": (View(), View(degrees=6), View(degrees=-6)),
    "zoom": (View(), View(zoom=0.92), View(zoom=1.08)),
    "flip": (View(), View(mirror=True)),
}


def tta_views(images: np.ndarray, name: str) -> list[np.ndarray]:
    """The views of uint8 images [N, H, W] that test-time augmentation `name` averages over,
    each uint8 again, so any model (PyTorch or ONNX) takes them as it takes the images."""
    if name not in TTA_VIEWS:
        raise MnistlabError(f"unknown test-time augmentation '{name}'; choose one of: {', '.join(TTA_VIEWS)}.")
    n, h, w = images.shape
    x, views = torch.from_numpy(images).unsqueeze(1).float(), []
    for view in TTA_VIEWS[name]:
        if view.mirror:  # exact: no resampling
            views.append(np.ascontiguousarray(images[:, :, ::-1]))
        elif view == View():
            views.append(images)
        else:
            shift = torch.tensor([-2 * view.dx / w, -2 * view.dy / h]).expand(n, 2)  # the grid samples from -shift
            out = warp(x, torch.full((n,), math.radians(view.degrees)), torch.full((n,), float(view.zoom)), shift)
            views.append(out.squeeze(1).round().clamp(0, 255).to(torch.uint8).numpy())
    return views
