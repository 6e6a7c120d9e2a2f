"""Augmentation on whole batches, on the training device: one affine_grid / grid_sample
call per batch instead of a PIL transform per image.

Randomness comes from a generator seeded per step, so a resumed run draws the same
distortions as an unbroken one. The same warp gives the fixed views of test-time
augmentation (`TTA_VIEWS`, `tta_views`): a model's probabilities averaged over them.

The pixel-level augmentations (what people's pictures do) work in ink units, 0 for
the background and 1 for full ink, on the whole batch: lines and occluding blocks, stroke
thickness, blur, background level, gradient and contrast, noise, inverted polarity. They are
written here, not taken from `corruptions.py`, and each differs in kind from MNIST-C's 15 test
corruptions and from the held-out family that validation uses, so that neither is trained on:

- noise: uniform (not Gaussian, Poisson or salt-and-pepper), of an amplitude drawn per image,
  half the images at the pixel's grain and half in 2x2 blocks; the held-out gaussian_noise adds
  N(0, 0.38) to every pixel, speckle multiplies, the test shot and impulse noise are Poisson
  counts and 17% of pixels at 0 or 1;
- blur: a round Gaussian of a sigma drawn per image from [0, blur]; the held-out gaussian_blur
  is sigma 2 down the columns only, defocus a disk of radius 3, zoom blur radial, the test
  glass and motion blurs pixel swaps and a one-sided line;
- stroke: grey-level dilation or erosion (3x3 max-pool), blended in by a drawn strength; no
  corruption changes stroke width;
- level, gradient, contrast: the ink mapped onto [lo, hi] with the background lo drawn per
  image plus a linear ramp of random direction; the test brightness adds a fixed 0.5 and fog a
  fractal cloud, the held-out contrast cuts to a fixed tenth about the mean;
- lines: anti-aliased segments of random ends, width 1-3 and grey level, anywhere; the test
  dotted_line and zigzag and the held-out line cross the whole image, 1 pixel wide, in full ink;
- occlude: a rectangle of random grey level (2-25% of the image); no corruption blanks a block;
- invert: polarity turned after the levels are drawn, so dark ink on a light background of a
  random grey; the held-out inverse is exactly 1 - x on clean digits (the nearest pair: its
  validation figure is of a kind trained on, and reads so).

Four kinds go further: each is of the kind of one or two of MNIST-C's test corruptions
(`MNIST_C_KIN` names them), so a model trained with any of them has seen MNIST-C's kinds, and its
MNIST-C figures are reported as seen (BENCHMARKS.md). Each is still written here in its own way, in
other parameters and shapes; MNIST-C's own 15 are never trained on:

- specks: full-contrast salt and pepper on 1-12% of the pixels (the share and the salt's part of it
  drawn per image), half the images at the pixel's grain and half in 2x2 specks; the test
  impulse_noise sets 17% of single pixels, half and half;
- outline: the strokes made hollow by a grey-level morphological gradient (3x3 dilation minus
  erosion, or minus the ink itself: a ring outside the strokes), scaled to full ink; the test
  canny_edges keeps the thin, smoothed, thresholded edges of a Canny detector;
- invert_region: polarity turned inside one rectangle (10-50% of the image) or one half-plane (the
  side of a line of random direction through the image's middle), after the levels; the test
  stripe turns the two fixed side bands, columns 0-6 and 21-27, and the held-out inverse all of it;
- scratch: a line across the whole image in any direction through a point near the middle, straight
  or a zigzag of legs about 10 pixels long turning 2-6 pixels aside, anti-aliased, 1-2 pixels wide,
  at full ink or a grey; the test dotted_line and zigzag run from side to side in dashes or in
  teeth 2 pixels high every 4 columns, 1 pixel wide at full ink. Its straight, full-ink, thin
  draws include the held-out line's kind: that validation figure reads as seen too.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import MnistlabError


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
    # pixel-level, in ink units (0 background, 1 full ink); see the module's notes:
    lines: float = 0.0  # probability of a line segment drawn across the image (random ends, width, grey)
    occlude: float = 0.0  # probability of a block of random grey covering 2-25% of the image
    stroke: float = 0.0  # strokes thickened or thinned by up to this share of a 3x3 dilation / erosion
    blur: float = 0.0  # Gaussian blur of a sigma drawn from [0, blur] pixels
    level: float = 0.0  # background raised to a grey drawn from [0, level]
    gradient: float = 0.0  # plus a linear ramp of random direction rising by up to this much
    contrast: float = 0.0  # ink's contrast over the background cut to a share drawn from [1 - contrast, 1]
    noise: float = 0.0  # uniform noise of an amplitude drawn from [0, noise]
    invert: float = 0.0  # probability of inverted polarity (dark ink on a light ground)
    specks: float = 0.0  # probability of salt-and-pepper specks at 0 or full ink on 1-12% of the pixels
    outline: float = 0.0  # probability of the strokes turned into their outline (hollow strokes)
    invert_region: float = 0.0  # probability of polarity turned inside a rectangle or half-plane
    scratch: float = 0.0  # probability of a straight or zigzag line across the whole image, 1-2 px wide
    pixel_share: float = 1.0  # share of the images that get the pixel-level steps (the rest stay clean)

    def __post_init__(self):
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise MnistlabError(f"--augment {name} must be a number, not {json.dumps(value)}.")
        limits = {"degrees": (0, 180), "scale": (0, 0.9), "translate": (0, 0.5), "elastic": (0, 14),
                  "elastic_sigma": (0.5, 14), "flip": (0, 1), "crop": (0, 8), "erase": (0, 1),
                  "lines": (0, 1), "occlude": (0, 1), "stroke": (0, 1), "blur": (0, 3), "level": (0, 0.9),
                  "gradient": (0, 0.9), "contrast": (0, 0.9), "noise": (0, 1), "invert": (0, 1),
                  "specks": (0, 1), "outline": (0, 1), "invert_region": (0, 1), "scratch": (0, 1),
                  "pixel_share": (0, 1)}
        for name, (low, high) in limits.items():
            if not low <= getattr(self, name) <= high:
                raise MnistlabError(f"--augment {name} must lie between {low} and {high}, not {getattr(self, name)}.")
        if self.crop != int(self.crop):
            raise MnistlabError(f"--augment crop is a whole number of pixels, not {self.crop}.")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def pixels(self) -> bool:
        """Whether any pixel-level augmentation is on."""
        return any(getattr(self, name) for name in PIXEL_FIELDS)

    def __call__(self, x: torch.Tensor, seed: int, background: float = 0.0, ink: float = 1.0) -> torch.Tensor:
        """Distort a batch [N, C, H, W]; pixels that come from outside get `background`, and
        full ink is `ink` (the normalised value of a 255 pixel: the pixel-level steps need it)."""
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
        out = self._erase(out, g, background) if self.erase else out
        # drawn after all the above, and only when asked for: earlier recipes keep their exact draws
        return self._pixels(out, g, background, ink) if self.pixels else out

    def _pixels(self, x: torch.Tensor, g: torch.Generator, background: float, ink: float) -> torch.Tensor:
        """The pixel-level steps, in ink units: outline, shapes added, strokes, blur, levels, noise,
        specks, polarity. A step draws only when it is on, so recipes without it keep their draws."""
        n, _, h, w = x.shape

        def rand(*shape):
            return torch.rand(*shape, generator=g, device=x.device)

        chosen = rand(n, 1, 1, 1) < self.pixel_share
        u = (x.float() - background) / (ink - background)
        if self.outline:  # first: the digit's own strokes, before anything is drawn over them
            u = torch.where(rand(n, 1, 1, 1) < self.outline, _outline(u, rand(n, 1, 1, 1) < 0.5), u)
        if self.lines:
            u = torch.maximum(u, _segments(n, h, w, rand, x.device) * (rand(n, 1, 1, 1) < self.lines))
        if self.scratch:
            u = torch.maximum(u, _scratches(n, h, w, rand, x.device) * (rand(n, 1, 1, 1) < self.scratch))
        if self.occlude:
            block = _rectangles(n, h, w, rand, 0.02, 0.25, x.device) & (rand(n, 1, 1, 1) < self.occlude)
            u = torch.where(block, rand(n, 1, 1, 1), u)
        if self.stroke:
            u = _thickness(u, (2 * rand(n, 1, 1, 1) - 1) * self.stroke)
        if self.blur:
            u = gaussian_blur(u, rand(n) * self.blur, radius=math.ceil(3 * self.blur))
        if self.level or self.gradient or self.contrast:
            low = rand(n, 1, 1, 1) * self.level + _ramps(n, h, w, rand, x.device) * self.gradient * rand(n, 1, 1, 1)
            low = low.clamp(max=0.95)
            span = (1 - low) * (1 - rand(n, 1, 1, 1) * self.contrast)
            u = low + span * u.clamp(0, 1)
        if self.noise:
            amplitude = rand(n, 1, 1, 1) * self.noise
            fine, coarse = 2 * rand(n, 1, h, w) - 1, 2 * rand(n, 1, (h + 1) // 2, (w + 1) // 2) - 1
            coarse = coarse.repeat_interleave(2, 2).repeat_interleave(2, 3)[:, :, :h, :w]
            u = u + amplitude * torch.where(rand(n, 1, 1, 1) < 0.5, fine, coarse)
        if self.specks:  # after the levels and noise: full contrast whatever the background
            u = torch.where(rand(n, 1, 1, 1) < self.specks, _specks(u, rand), u)
        if self.invert_region:
            region = _regions(n, h, w, rand, x.device) & (rand(n, 1, 1, 1) < self.invert_region)
            u = torch.where(region, 1 - u.clamp(0, 1), u)
        if self.invert:
            u = torch.where(rand(n, 1, 1, 1) < self.invert, 1 - u, u)
        out = torch.where(chosen, background + u.clamp(0, 1) * (ink - background), x.float())
        return out.contiguous(memory_format=torch.channels_last) if x.is_contiguous(
            memory_format=torch.channels_last) and x.shape[1] > 1 else out

    def _erase(self, x: torch.Tensor, g: torch.Generator, background: float) -> torch.Tensor:
        # random erasing (Zhong et al. 2020): a rectangle of 2-33% of the image, aspect 0.3-3.3
        n, _, h, w = x.shape

        def rand(*shape):
            return torch.rand(*shape, generator=g, device=x.device)

        chosen = rand(n) < self.erase
        return x.masked_fill(_rectangles(n, h, w, rand, 0.02, 0.33, x.device) & chosen.view(n, 1, 1, 1), background)

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


PIXEL_FIELDS = ("lines", "occlude", "stroke", "blur", "level", "gradient", "contrast", "noise", "invert",
                "specks", "outline", "invert_region", "scratch")

# The pixel steps of the kind of MNIST-C test corruptions: a model trained with one has these figures seen.
MNIST_C_KIN: dict[str, tuple[str, ...]] = {"specks": ("impulse_noise",), "outline": ("canny_edges",),
                                           "invert_region": ("stripe",), "scratch": ("dotted_line", "zigzag")}


def _thickness(u: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
    """Strokes made thicker (strength > 0: toward a 3x3 grey-level dilation) or thinner (< 0:
    toward the erosion), by |strength| of the way, per image."""
    dilated = F.max_pool2d(u, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(-u, 3, stride=1, padding=1)
    return u + strength.clamp(min=0) * (dilated - u) + (-strength).clamp(min=0) * (eroded - u)


def _outline(u: torch.Tensor, outer: torch.Tensor) -> torch.Tensor:
    """Hollow strokes: a 3x3 grey-level dilation minus the erosion (or, where `outer`, minus the ink
    itself: a ring just outside the strokes), scaled so that each image's strongest edge is full ink."""
    inside = torch.where(outer, u, -F.max_pool2d(-u, 3, stride=1, padding=1))
    edge = F.max_pool2d(u, 3, stride=1, padding=1) - inside
    # a floor on the scale: an image with next to no ink is not blown up to full ink
    return (edge / edge.amax((1, 2, 3), keepdim=True).clamp(min=0.1)).clamp(0, 1)


def _specks(u: torch.Tensor, rand) -> torch.Tensor:
    """u with salt (full ink) and pepper (0) on 1-12% of its pixels, the salt's part of them drawn per
    image; half the images at the pixel's grain, half in 2x2 specks."""
    n, _, h, w = u.shape
    coarse = rand(n, 1, 1, 1) < 0.5

    def grain() -> torch.Tensor:
        fine, blocks = rand(n, 1, h, w), rand(n, 1, (h + 1) // 2, (w + 1) // 2)
        return torch.where(coarse, blocks.repeat_interleave(2, 2).repeat_interleave(2, 3)[:, :, :h, :w], fine)

    share, salt = 0.01 + 0.11 * rand(n, 1, 1, 1), rand(n, 1, 1, 1)
    hit, white = grain() < share, grain() < salt
    return torch.where(hit, white.float(), u)


def _regions(n: int, h: int, w: int, rand, device) -> torch.Tensor:
    """[N, 1, H, W] bool: half the images a rectangle of 10-50% of the image, half a half-plane: the
    side of a line of random direction through a point of the image's middle half."""
    box = _rectangles(n, h, w, rand, 0.1, 0.5, device)
    rows, cols = _grid(h, w, device)
    angle = rand(n, 1, 1, 1) * 2 * math.pi
    r0, c0 = (0.25 + 0.5 * rand(n, 1, 1, 1)) * (h - 1), (0.25 + 0.5 * rand(n, 1, 1, 1)) * (w - 1)
    side = (cols - c0) * torch.cos(angle) + (rows - r0) * torch.sin(angle) > 0
    return torch.where(rand(n, 1, 1, 1) < 0.5, box, side)


SCRATCH_LEGS = 8  # a scratch's polyline, long enough to cross the image: legs of about 10 pixels


def _scratches(n: int, h: int, w: int, rand, device) -> torch.Tensor:
    """[N, 1, H, W] in 0-1: one scratch per image across the whole image, in a random direction
    through a point near the middle: straight (half of them) or a zigzag whose corners stand 2-6
    pixels to either side in turn; anti-aliased, 1-2 pixels wide, at full ink or a grey of 0.4-1."""
    rows, cols = _grid(h, w, device)
    angle = rand(n, 1) * math.pi
    along, across = torch.cat([torch.cos(angle), torch.sin(angle)], 1), torch.cat(
        [-torch.sin(angle), torch.cos(angle)], 1)  # [N, 2] as (col, row)
    centre = (torch.tensor([w - 1, h - 1], device=device) * (0.3 + 0.4 * rand(n, 2)))
    reach = math.hypot(h, w)  # from a point inside, this far each way leaves the image
    t = torch.linspace(-reach, reach, SCRATCH_LEGS + 1, device=device).view(1, -1, 1)
    turns = torch.tensor([(-1.0) ** k for k in range(SCRATCH_LEGS + 1)], device=device).view(1, -1, 1)
    aside = turns * (2 + 4 * rand(n, SCRATCH_LEGS + 1, 1)) * (rand(n, 1, 1) < 0.5)  # 0: a straight scratch
    points = centre.view(n, 1, 2) + t * along.view(n, 1, 2) + aside * across.view(n, 1, 2)  # [N, K + 1, 2]
    a, b = points[:, :-1].view(n, -1, 1, 1, 2), points[:, 1:].view(n, -1, 1, 1, 2)
    pc, pr = cols.view(1, 1, 1, w), rows.view(1, 1, h, 1)
    dc, dr = b[..., 0] - a[..., 0], b[..., 1] - a[..., 1]
    s = (((pc - a[..., 0]) * dc + (pr - a[..., 1]) * dr) / (dc ** 2 + dr ** 2).clamp(min=1e-6)).clamp(0, 1)
    distance = ((pc - a[..., 0] - s * dc) ** 2 + (pr - a[..., 1] - s * dr) ** 2).sqrt().amin(1, keepdim=True)
    width = 1 + rand(n, 1, 1, 1)
    grey = torch.where(rand(n, 1, 1, 1) < 0.5, 1.0, 0.4 + 0.6 * rand(n, 1, 1, 1))
    return (width / 2 + 0.5 - distance).clamp(0, 1) * grey


def gaussian_blur(u: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Each image of [N, 1, H, W] blurred by a round Gaussian of its own sigma (pixels; 0 keeps
    it), zeros beyond the edges: two 1-D convolutions, the images as groups."""
    n, _, h, w = u.shape
    t = torch.arange(-radius, radius + 1, device=u.device, dtype=torch.float32)
    kernel = torch.exp(-t ** 2 / (2 * sigma.clamp(min=1e-3).view(n, 1) ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).view(n, 1, 1, -1)
    out = F.conv2d(u.reshape(1, n, h, w), kernel, padding=(0, radius), groups=n)
    out = F.conv2d(out, kernel.transpose(2, 3), padding=(radius, 0), groups=n)
    return out.view(n, 1, h, w)


def _grid(h: int, w: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.arange(h, device=device, dtype=torch.float32).view(1, 1, h, 1)
    return rows, torch.arange(w, device=device, dtype=torch.float32).view(1, 1, 1, w)


def _segments(n: int, h: int, w: int, rand, device) -> torch.Tensor:
    """[N, 1, H, W] in 0-1: one anti-aliased segment per image, its ends anywhere in the image,
    1-3 pixels wide, of a grey level from 0.5 to 1."""
    rows, cols = _grid(h, w, device)
    r0, c0, r1, c1 = (rand(4, n, 1, 1, 1) * torch.tensor([h - 1, w - 1, h - 1, w - 1], device=device).view(
        4, 1, 1, 1, 1)).unbind(0)
    width, grey = 1 + 2 * rand(n, 1, 1, 1), 0.5 + 0.5 * rand(n, 1, 1, 1)
    dr, dc = r1 - r0, c1 - c0
    along = (((rows - r0) * dr + (cols - c0) * dc) / (dr ** 2 + dc ** 2).clamp(min=1e-6)).clamp(0, 1)
    distance = ((rows - r0 - along * dr) ** 2 + (cols - c0 - along * dc) ** 2).sqrt()
    return (width / 2 + 0.5 - distance).clamp(0, 1) * grey


def _rectangles(n: int, h: int, w: int, rand, low: float, high: float, device) -> torch.Tensor:
    """[N, 1, H, W] bool: one rectangle per image covering `low` to `high` of it, aspect 0.3-3.3."""
    area = (low + (high - low) * rand(n)) * h * w
    aspect = torch.exp((2 * rand(n) - 1) * math.log(1 / 0.3))
    eh = (area * aspect).sqrt().round().clamp(1, h)
    ew = (area / aspect).sqrt().round().clamp(1, w)
    top, left = (rand(n) * (h - eh + 1)).floor(), (rand(n) * (w - ew + 1)).floor()
    rows, cols = _grid(h, w, device)
    v = lambda t: t.view(n, 1, 1, 1)  # noqa: E731
    return (rows >= v(top)) & (rows < v(top + eh)) & (cols >= v(left)) & (cols < v(left + ew))


def _ramps(n: int, h: int, w: int, rand, device) -> torch.Tensor:
    """[N, 1, H, W]: a linear ramp from 0 to 1 across each image, in a random direction."""
    rows, cols = _grid(h, w, device)
    angle = rand(n, 1, 1, 1) * 2 * math.pi
    cos, sin = torch.cos(angle), torch.sin(angle)
    reach = (cos.abs() * (w - 1) + sin.abs() * (h - 1)) / 2
    return ((cos * (cols - (w - 1) / 2) + sin * (rows - (h - 1) / 2)) / reach + 1) / 2


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
