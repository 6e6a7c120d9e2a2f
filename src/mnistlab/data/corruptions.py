"""MNIST-C's corruptions (Mu & Gilmer 2019, github.com/google-research/mnist-c), written anew
on NumPy and Pillow, each over a whole batch at once.

Two families that never meet:

- `TEST`: the benchmark's 15, at its default severities. Figures on them are reported, as on a
  test set: they are never trained on and never used to choose anything.
- `HELD_OUT`: further corruptions from the same paper's code, for choosing recipes on the
  validation split. Two of its corruptions are left out: `frost` and `pessimal_noise` need the
  benchmark's own image and noise files.

Each corruption maps float images [N, 28, 28] in 0-1 (ink high, as MNIST) and a NumPy
generator to float images in 0-1; `corrupt(images, name, seed)` takes and gives uint8 and
rounds as the benchmark's files were rounded. The same seed gives the same images. Where
the benchmark's code has a quirk, the quirk is kept and said (e.g. `glass_blur` blurs
along columns only), so that figures stay comparable with the published ones.

`load_mnist_c(root, name)` reads the published files: one folder per corruption holding
test_images.npy ([N, 28, 28, 1] uint8) and test_labels.npy, and train_*.npy beside them.
"""

from __future__ import annotations

import colorsys
import io
import os
import zlib
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError, MnistlabError

SIZE = 28
CENTRE = (SIZE - 1) / 2  # 13.5: the benchmark turns, shears and scales about the image's centre
CHUNK = 1000  # images corrupted at once: bounds the memory of a whole split
_ROWS, _COLS = (a.astype(np.float32) for a in np.mgrid[0:SIZE, 0:SIZE])

Corruption = Callable[[np.ndarray, np.random.Generator], np.ndarray]


# ---------------------------------------------------------------- linear filters as matrices

def _gaussian_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """SciPy's 1-D Gaussian weights: radius int(truncate * sigma + 0.5), summing to 1."""
    radius = int(truncate * sigma + 0.5)
    w = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return w / w.sum()


def _filter_matrix(kernel: np.ndarray, mode) -> np.ndarray:  # mode: one of np.pad's names
    """The [28, 28] matrix of a 1-D correlation with `kernel` under NumPy's pad `mode` ('edge' is
    SciPy's 'nearest', 'symmetric' its 'reflect', 'reflect' OpenCV's default). F @ x filters the
    columns of x, x @ F.T its rows: a separable filter is two small matrix products per image."""
    r = len(kernel) // 2
    shifted = np.pad(np.eye(SIZE), ((r, r), (0, 0)), mode=mode)
    return sum(k * shifted[i:i + SIZE] for i, k in enumerate(kernel)).astype(np.float32)


def _blur(x: np.ndarray, sigma: float, mode: str = "edge", truncate: float = 4.0, rows_only: bool = False):
    g = _filter_matrix(_gaussian_kernel(sigma, truncate), mode)
    return g @ x if rows_only else g @ x @ g.T


def _zoom_matrix(factor: float) -> np.ndarray:
    """The benchmark's clipped zoom as a [28, 28] matrix Z (zoomed = Z @ x @ Z.T): the centre
    ceil(28 / factor) pixels, enlarged by SciPy's linear zoom (corner pixels kept in place), the
    middle 28 kept."""
    crop = int(np.ceil(SIZE / factor))
    top = (SIZE - crop) // 2
    out = round(crop * factor)
    pos = np.arange(out) * (crop - 1) / (out - 1)  # output pixel -> input coordinate
    left = np.minimum(np.floor(pos).astype(int), crop - 2)
    frac = pos - left
    z = np.zeros((out, SIZE))
    z[np.arange(out), top + left] = 1 - frac
    z[np.arange(out), top + left + 1] += frac
    trim = (out - SIZE) // 2
    return z[trim:trim + SIZE].astype(np.float32)


# ---------------------------------------------------------------- sampling and warping

def _sample(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """x [N, 28, 28] read at (rows, cols), [28, 28] for all or [N, 28, 28] each, bilinearly, with
    0 outside the image: scikit-image's warp (order 1, mode 'constant')."""
    n = len(x)
    flat = np.pad(x, ((0, 0), (1, 1), (1, 1))).reshape(n, -1)
    r0, c0 = np.floor(rows), np.floor(cols)
    fr, fc = rows - r0, cols - c0
    out = np.zeros(x.shape, np.float32)
    for dr, dc, weight in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
        # -1 and 28 land on the zero border; anything further out is clipped onto it
        idx = ((np.clip(r0 + dr, -1, SIZE) + 1) * (SIZE + 2) + np.clip(c0 + dc, -1, SIZE) + 1).astype(np.intp)
        vals = flat[:, idx] if idx.ndim == 2 else np.take_along_axis(flat, idx.reshape(n, -1), 1).reshape(x.shape)
        out += weight * vals
    return out


def _warp(x: np.ndarray, matrix: np.ndarray | list) -> np.ndarray:
    """Each output pixel (col, row) reads the input at matrix @ (col, row, 1): the inverse map,
    in scikit-image's (x, y) order; matrix [2, 3], or [N, 2, 3] for one per image."""
    m = np.asarray(matrix, np.float32)[..., None, None]  # [(N,) 2, 3, 1, 1]: broadcast over the pixels
    cols = m[..., 0, 0, :, :] * _COLS + m[..., 0, 1, :, :] * _ROWS + m[..., 0, 2, :, :]
    rows = m[..., 1, 0, :, :] * _COLS + m[..., 1, 1, :, :] * _ROWS + m[..., 1, 2, :, :]
    return _sample(x, rows, cols)


def _about_centre(linear: np.ndarray | list) -> np.ndarray:
    """[2, 3]: the linear map [2, 2] with the translation that keeps the image's centre in place."""
    linear = np.asarray(linear, np.float64)
    return np.hstack([linear, (CENTRE * (1 - linear.sum(1)))[:, None]])


def _by_choice(x: np.ndarray, choice: np.ndarray, apply: Callable[[np.ndarray, tuple], np.ndarray]) -> np.ndarray:
    """apply(images, option) to each group of images that drew the same option (rows of `choice`)."""
    choice = choice.reshape(len(x), -1)
    out = np.empty_like(x)
    for option in np.unique(choice, axis=0):
        same = (choice == option).all(1)
        out[same] = apply(x[same], tuple(option.tolist()))
    return out


def _signs(rng: np.random.Generator, n: int, k: int = 1) -> np.ndarray:
    return rng.choice(np.array([-1, 1]), size=(n, k))


def _motion_blur(x: np.ndarray, radius: float, sigma: float, angles: np.ndarray) -> np.ndarray:
    """ImageMagick's -motion-blur, one angle (degrees) per image: each pixel becomes a mean of
    the 2 * ceil(radius) + 1 pixels along the angle from it, weighted by a one-sided Gaussian,
    the image's edge repeated beyond it; rounded to 8 bits, as the PNG it came back in."""
    width = 2 * int(np.ceil(radius)) + 1
    steps = np.arange(width)
    weights = np.exp(-steps ** 2 / (2 * sigma ** 2))
    weights /= weights.sum()
    a = np.radians(np.asarray(angles, np.float64))[:, None]
    d_col = np.ceil(steps * np.cos(a) - 0.5).astype(np.intp)  # [N, width]: ImageMagick's rounding
    d_row = np.ceil(steps * np.sin(a) - 0.5).astype(np.intp)
    pad = width
    side = SIZE + 2 * pad
    flat = np.pad(x, ((0, 0), (pad, pad), (pad, pad)), mode="edge").reshape(len(x), -1)
    grid = ((_ROWS + pad) * side + _COLS + pad).astype(np.intp).ravel()
    out = np.zeros((len(x), SIZE * SIZE), np.float32)
    for i, w in enumerate(weights):
        idx = grid[None] + (d_row[:, i] * side + d_col[:, i])[:, None]
        out += np.float32(w) * np.take_along_axis(flat, idx, 1)
    return np.round(out.reshape(x.shape) * 255) / 255


# ---------------------------------------------------------------- drawn lines

def _lines(c0, r0, c1, r1) -> np.ndarray:
    """[N, 28, 28]: the benchmark's lines, one per row of the arguments: ink 1 + log(1 - d / 2.3)
    at vertical distance d from the line through (c0, r0) and (c1, r1), between columns
    floor(c0) and ceil(c1); nothing where c0 == c1."""
    c0, r0, c1, r1 = (np.asarray(v, np.float64).reshape(-1, 1, 1) for v in (c0, r0, c1, r1))
    with np.errstate(divide="ignore", invalid="ignore"):
        centre = (r1 - r0) / (c1 - c0) * (_COLS - c0) + r0
        dist = np.clip(np.abs(_ROWS - centre), 0, 2.3 - 1e-10)
        ink = np.clip(np.log1p(-dist / 2.3) + 1, 0, 1)
    inside = (_COLS >= np.floor(c0)) & (_COLS < np.ceil(c1)) & (c1 != c0)
    return np.where(inside, ink, 0).astype(np.float32)


def _zigzag_points(r0: int, r1: int) -> np.ndarray:
    """[K, 2] (col, row) corners of the benchmark's zigzag from column 2 to 25: peaks of height 2
    every 4 columns along the tilted line, and its (odd) last corner, kept as it is."""
    tilt = np.arctan((r1 - r0) / 23)
    length = 23 / np.cos(tilt)
    peaks = int((length - 2) // 4) + 1
    along = np.concatenate([[0.0], 2.0 + 4.0 * np.arange(peaks)])
    across = np.concatenate([[0.0], 2.0 * (-1.0) ** np.arange(peaks)])
    whole = 4 * (length // 4)
    if length != whole:
        along = np.append(along, length)
        across = np.append(across, across[-1] / (2 * (length - whole)))
    cos, sin = np.cos(tilt), np.sin(tilt)
    return np.stack([along * cos - across * sin + 2, along * sin + across * cos + r0], 1)


@cache
def _zigzags() -> np.ndarray:
    """[27, 10, 28, 28]: every zigzag the benchmark draws, by its first row and its rise (-5 to 4)."""
    table = np.zeros((27, 10, SIZE, SIZE), np.float32)
    for r0 in range(27):
        for rise in range(-5, 5):
            p = _zigzag_points(r0, r0 + rise)
            table[r0, rise + 5] = _lines(p[:-1, 0], p[:-1, 1], p[1:, 0], p[1:, 1]).sum(0)
    return table


# ---------------------------------------------------------------- fog's height map

def _plasma(n: int, rng: np.random.Generator, decay: float, size: int = 256) -> np.ndarray:
    """[n, 28, 28]: the top-left corner of n diamond-square height maps of `size` squared, each
    scaled to 0-1 over its whole map, as the benchmark does (so the whole map is made; its last,
    largest level only as far as its minimum, maximum and corner)."""
    out = np.empty((n, SIZE, SIZE), np.float32)
    for start in range(0, n, 64):
        out[start:start + 64] = _diamond_square(min(64, n - start), rng, decay, size)
    return out


def _diamond_square(n: int, rng: np.random.Generator, decay: float, size: int) -> np.ndarray:
    """Toroidal diamond-square, a level at a time on a dense grid that doubles: each new point is
    the mean of its four neighbours plus wibble * U(-wibble, wibble), wibble starting at 100 and
    divided by `decay` each level. Returns the scaled top-left corner."""
    g = np.zeros((n, 1, 1), np.float32)
    wibble = 100.0
    while True:
        k = g.shape[1]
        noise = rng.random((3, n, k, k), dtype=np.float32)
        noise -= np.float32(0.5)
        noise *= np.float32(2 * wibble * wibble)  # U(-wibble^2, wibble^2)
        right, below = np.roll(g, -1, 2), np.roll(g, -1, 1)
        centre = g + right
        centre += np.roll(centre, -1, 1)
        centre /= 4
        centre += noise[0]
        across = centre + np.roll(centre, 1, 1)  # the points between two corners of a row
        across += g
        across += right
        across /= 4
        across += noise[1]
        down = centre + np.roll(centre, 1, 2)  # between two corners of a column
        down += g
        down += below
        down /= 4
        down += noise[2]
        parts = ((0, 0, g), (1, 1, centre), (0, 1, across), (1, 0, down))
        if 2 * k == size:
            break
        g = np.empty((n, 2 * k, 2 * k), np.float32)
        for r, c, part in parts:
            g[:, r::2, c::2] = part
        wibble /= decay
    low = np.min([p.min((1, 2)) for _, _, p in parts], 0)[:, None, None]
    high = np.max([p.max((1, 2)) for _, _, p in parts], 0)[:, None, None]
    corner = np.empty((n, SIZE, SIZE), np.float32)
    for r, c, part in parts:
        corner[:, r::2, c::2] = part[:, :SIZE // 2, :SIZE // 2]
    return (corner - low) / (high - low)


# ---------------------------------------------------------------- Canny's edges

def _canny(x: np.ndarray, sigma: float = 1.0, low: float = 0.1, high: float = 0.2) -> np.ndarray:
    """scikit-image's canny with its defaults: Gaussian smoothing (zero outside, renormalised at
    the border), Sobel gradients, non-maximum suppression interpolated between the two
    neighbours nearest the gradient's direction, and hysteresis between `low` and `high`
    over 8-connected edge pixels. The image's outer ring is never an edge."""
    x = x.astype(np.float64)
    g = _filter_matrix(_gaussian_kernel(sigma), "constant").astype(np.float64)
    smoothed = g @ x @ g.T / (g @ np.ones((SIZE, SIZE)) @ g.T + np.finfo(float).eps)
    deriv = _filter_matrix(np.array([-1.0, 0.0, 1.0]), "symmetric").astype(np.float64)
    smooth = _filter_matrix(np.array([1.0, 2.0, 1.0]), "symmetric").astype(np.float64)
    gr, gc = deriv @ smoothed @ smooth.T, smooth @ smoothed @ deriv.T  # along rows, along columns
    mag = np.hypot(gr, gc)
    ar, ac = np.abs(gr), np.abs(gc)
    same = gr * gc >= 0  # the diagonal neighbour is (1, 1) when the signs agree, else (-1, 1)
    padded = np.pad(mag, ((0, 0), (1, 1), (1, 1)))

    def at(dr, dc):
        return padded[:, 1 + dr:1 + dr + SIZE, 1 + dc:1 + dc + SIZE]

    rows_lead = ar >= ac  # the axis neighbour lies along the larger gradient component
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.minimum(ar, ac) / np.maximum(ar, ac)  # NaN where there is no gradient: never a maximum
    maxima = np.ones(mag.shape, bool)
    for s in (1, -1):
        diag = np.where(same, at(s, s), at(-s, s))
        axis = np.where(rows_lead, np.where(same, at(s, 0), at(-s, 0)), at(0, s))
        maxima &= w * diag + (1 - w) * axis <= mag
    maxima[:, [0, -1], :] = maxima[:, :, [0, -1]] = False
    weak = maxima & (mag >= low)
    edges = maxima & (mag >= high)
    active = np.arange(len(x))
    while len(active):  # grow the strong edges through the weak ones, 8-connected, until nothing changes
        e = np.pad(edges[active], ((0, 0), (1, 1), (1, 1)))
        grown = np.zeros_like(edges[active])
        for dr in range(3):
            for dc in range(3):
                grown |= e[:, dr:dr + SIZE, dc:dc + SIZE]
        grown &= weak[active]
        changed = (grown != edges[active]).any((1, 2))
        edges[active] = grown
        active = active[changed]
    return edges.astype(np.float32)


# ---------------------------------------------------------------- the 15 test corruptions

def shot_noise(x, rng):
    """Poisson noise, severity 5: pixel counts at 3 photons for full ink."""
    return rng.poisson(x * 3.0) / 3.0


def impulse_noise(x, rng):
    """Salt and pepper, severity 4: 17% of pixels set to 0 or 1, evenly."""
    hit, salt = rng.random(x.shape) < 0.17, rng.random(x.shape) < 0.5
    return np.where(hit, salt, x)


def glass_blur(x, rng):
    """Severity 1: blur (sigma 0.7), truncate to 8 bits, swap each inner pixel (rows and columns
    27 down to 2, twice over) with probability 1/2 with itself or its upper, left or upper-left
    neighbour, blur again. The benchmark's blur treats the image's last axis as colour channels, so
    it blurs down the columns only; kept so."""
    y = np.floor(_blur(x.astype(np.float64), 0.7, rows_only=True) * 255)
    n = len(y)
    span = range(SIZE - 1, 1, -1)
    for _ in range(2):
        for h in span:
            move = rng.random((len(span), n)) < 0.5
            d_row, d_col = rng.integers(-1, 1, size=(2, len(span), n))
            for j, w in enumerate(span):
                s = np.flatnonzero(move[j])
                h2, w2 = h + d_row[j, s], w + d_col[j, s]
                here, there = y[s, h, w], y[s, h2, w2]
                y[s, h, w] = there
                y[s, h2, w2] = here
    return _blur(y / 255, 0.7, rows_only=True)


def motion_blur(x, rng):
    """Severity 1: ImageMagick's motion blur, radius 10, sigma 3, at an angle drawn from -45 to 45 degrees."""
    return _motion_blur(x, 10, 3, rng.uniform(-45, 45, len(x)))


def shear(x, rng):
    """Severity 2: a shear of 0.4 radians (scikit-image's AffineTransform), either way, about the centre."""
    def apply(part, option):
        c = 0.4 * option[0]
        return _warp(part, _about_centre([[1, -np.sin(c)], [0, np.cos(c)]]))
    return _by_choice(x, _signs(rng, len(x)), apply)


def scale(x, rng):
    """Severity 3: shrunk to 0.7 of its size about the centre."""
    return _warp(x, _about_centre(np.eye(2) / 0.7))


def rotate(x, rng):
    """Severity 2: turned by 0.4 radians (23 degrees), either way, about the centre."""
    def apply(part, option):
        c = 0.4 * option[0]
        return _warp(part, _about_centre([[np.cos(c), -np.sin(c)], [np.sin(c), np.cos(c)]]))
    return _by_choice(x, _signs(rng, len(x)), apply)


def brightness(x, rng):
    """Severity 5: +0.5 on HSV's value, which for a grey image is the pixel itself."""
    return x + 0.5


def translate(x, rng):
    """Severity 3: moved 3 pixels along each axis, each either way, zeros coming in."""
    return _by_choice(x, 3 * _signs(rng, len(x), 2), lambda part, d: _warp(part, [[1, 0, d[0]], [0, 1, d[1]]]))


STRIPE_COLUMNS = (*range(7), *range(21, SIZE))


def stripe(x, rng):
    """Columns 0-6 and 21-27 inverted."""
    y = x.copy()
    y[:, :, STRIPE_COLUMNS] = 1 - y[:, :, STRIPE_COLUMNS]
    return y


def fog(x, rng):
    """Severity 5: 3 x a diamond-square height map (decay 1.4) added, then scaled back by the image's maximum."""
    peak = x.max((1, 2), keepdims=True)
    return (x + 3.0 * _plasma(len(x), rng, 1.4)) * peak / (peak + 3.0)


def spatter(x, rng):
    """Severity 4: blobs of mud: Gaussian noise (0.65, 0.3) blurred (sigma 1), kept above 0.65,
    blurred again (sigma 1.5), kept above 0.8; where it lies the image turns toward grey 63/255."""
    liquid = _blur(rng.normal(0.65, 0.3, x.shape).astype(np.float32), 1.0)
    mud = _blur((liquid > 0.65).astype(np.float32), 1.5)
    mud[mud < 0.8] = 0
    return x * (1 - mud) + 63 / 255 * mud


def dotted_line(x, rng):
    """A line across the whole image between two random rows, drawn in dashes two columns long."""
    r0, r1 = rng.integers(0, 27, size=(2, len(x)))
    dashes = _lines(0, r0, 27, r1) * ((np.arange(SIZE) // 2) % 2 == 1)
    return x + dashes


def zigzag(x, rng):
    """A zigzag from column 2 to 25, starting at a random row and rising -5 to 4 rows."""
    r0 = rng.integers(0, 27, len(x))
    rise = rng.integers(-5, 5, len(x))
    return x + _zigzags()[r0, rise + 5]


def canny_edges(x, rng):
    """The outline that scikit-image's Canny detector finds (sigma 1, thresholds 0.1 and 0.2)."""
    return _canny(x)


TEST: dict[str, Corruption] = {f.__name__: f for f in (
    shot_noise, impulse_noise, glass_blur, motion_blur, shear, scale, rotate, brightness, translate,
    stripe, fog, spatter, dotted_line, zigzag, canny_edges)}


# ---------------------------------------------------------------- the held-out family, for validation

def gaussian_noise(x, rng):
    """Severity 5: additive Gaussian noise, sigma 0.38."""
    return x + rng.normal(0, 0.38, x.shape)


def speckle_noise(x, rng):
    """Severity 5: multiplicative Gaussian noise, sigma 0.6."""
    return x + x * rng.normal(0, 0.6, x.shape)


def gaussian_blur(x, rng):
    """Severity 2: Gaussian blur, sigma 2; down the columns only, as glass_blur (the benchmark's quirk)."""
    return _blur(x, 2.0, rows_only=True)


def defocus_blur(x, rng):
    """Severity 1: a disk of radius 3 (OpenCV's filter2D, mirrored border); its anti-aliasing
    blur of sigma 0.1 changes the disk by less than 1e-20, and is left out."""
    offsets = [(dr, dc) for dr in range(-3, 4) for dc in range(-3, 4) if dr * dr + dc * dc <= 9]
    padded = np.pad(x, ((0, 0), (3, 3), (3, 3)), mode="reflect")
    return sum(padded[:, 3 + dr:3 + dr + SIZE, 3 + dc:3 + dc + SIZE] for dr, dc in offsets) / len(offsets)


def zoom_blur(x, rng):
    """Severity 5: the mean of the image and its centre zoomed by 1.00, 1.03, ..., 1.30."""
    out = x.copy()
    for factor in 1 + 0.03 * np.arange(11):
        z = _zoom_matrix(factor)
        out += z @ x @ z.T
    return out / 12


def snow(x, rng):
    """Severity 5: Gaussian flakes (0.55, 0.3) zoomed 2.5x, kept above 0.85, motion-blurred
    (radius 12, sigma 12, -135 to -45 degrees) and added twice (the second turned 180 degrees)
    to the image brightened toward max(x, 1.5x + 0.5)."""
    z = _zoom_matrix(2.5)
    flakes = z @ rng.normal(0.55, 0.3, x.shape).astype(np.float32) @ z.T
    flakes = np.floor(np.clip(np.where(flakes < 0.85, 0, flakes), 0, 1) * 255) / 255  # to 8 bits, truncated
    flakes = _motion_blur(flakes, 12, 12, rng.uniform(-135, -45, len(x)))
    x = 0.55 * x + 0.45 * np.maximum(x, 1.5 * x + 0.5)
    return x + flakes + flakes[:, ::-1, ::-1]


def contrast(x, rng):
    """Severity 4: contrast cut to a tenth about the image's mean."""
    mean = x.mean((1, 2), keepdims=True)
    return (x - mean) * 0.1 + mean


def saturate(x, rng):
    """Severity 5: HSV x 20 + 0.2; a grey image gains hue and saturation 0.2, and back in grey
    (scikit-image's weights) each pixel is min(20x + 0.2, 1) times a constant just under 1."""
    grey = np.dot([0.2125, 0.7154, 0.0721], colorsys.hsv_to_rgb(0.2, 0.2, 1.0))
    return np.clip(20 * x + 0.2, 0, 1) * np.float32(grey)


def jpeg_compression(x, rng):
    """Severity 5: saved as JPEG at quality 7 (Pillow) and read back."""
    out = np.empty_like(x)
    for i, image in enumerate(_to_uint8(x)):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=7)
        out[i] = np.asarray(Image.open(buf)) / 255
    return out


@cache
def _box_matrix(src: int, dst: int) -> np.ndarray:
    """[dst, src]: Pillow's BOX resampling weights, read off by resizing the identity."""
    eye = Image.fromarray(np.eye(src, dtype=np.float32))  # mode F
    return np.asarray(eye.resize((dst, src), Image.Resampling.BOX)).T.copy()


def pixelate(x, rng):
    """Severity 3: down to 11x11 and back up with Pillow's BOX filter, 8-bit after each pass."""
    y = x * 255
    for a, b in ((SIZE, 11), (11, SIZE)):
        m = _box_matrix(a, b)
        y = np.round(y @ m.T)  # Pillow resizes rows first, then columns, rounding each pass
        y = np.round(m @ y)
    return y / 255


def elastic_transform(x, rng):
    """Severity 1: a random affine map (the corners of a square of side 18 moved by up to 2.8
    pixels, OpenCV's warpAffine), then each pixel displaced by a field of uniform noise blurred
    with sigma 19.6 (mirrored edges, truncated at 3 sigma) times 56: nearly a shift of a pixel or two."""
    n = len(x)
    square = np.array([[23.0, 23.0], [23.0, 5.0], [5.0, 5.0]])
    moved = square + rng.uniform(-2.8, 2.8, (n, 3, 2))
    # the inverse map: moved corners -> original ones, solved per image
    inverse = np.linalg.solve(np.concatenate([moved, np.ones((n, 3, 1))], 2), np.broadcast_to(square, (n, 3, 2)))
    y = _warp(x, inverse.transpose(0, 2, 1))
    g = _filter_matrix(_gaussian_kernel(19.6, truncate=3), "symmetric")
    d_col, d_row = (56 * (g @ rng.uniform(-1, 1, x.shape).astype(np.float32) @ g.T) for _ in range(2))
    return _sample(y, _ROWS + d_row, _COLS + d_col)


def quantize(x, rng):
    """Severity 5: one bit per pixel."""
    return np.round(x)


def line(x, rng):
    """A line from columns 0-4 to 22-26, between two random rows."""
    n = len(x)
    return x + _lines(rng.integers(0, 5, n), rng.integers(0, 27, n), rng.integers(22, 27, n), rng.integers(0, 27, n))


def inverse(x, rng):
    """White on black becomes black on white."""
    return 1 - x


HELD_OUT: dict[str, Corruption] = {f.__name__: f for f in (
    gaussian_noise, speckle_noise, gaussian_blur, defocus_blur, zoom_blur, snow, contrast, saturate,
    jpeg_compression, pixelate, elastic_transform, quantize, line, inverse)}

ALL: dict[str, Corruption] = TEST | HELD_OUT
GROUPS = {"mnist-c": tuple(TEST), "held-out": tuple(HELD_OUT)}  # names that stand for a family


def resolve_names(names: Iterable[str] | None) -> list[str]:
    """The corruptions asked for, in order, each once: no names gives MNIST-C's 15 test
    corruptions; 'mnist-c' and 'held-out' stand for their families. An unknown name is one sentence."""
    out: list[str] = []
    for name in names or ["mnist-c"]:
        if name not in ALL and name not in GROUPS:
            raise MnistlabError(
                f"unknown corruption '{name}'; MNIST-C's test corruptions are {', '.join(TEST)} ('mnist-c': all "
                f"of them), and the held-out ones, for validation, are {', '.join(HELD_OUT)} ('held-out': all).")
        out += [n for n in GROUPS.get(name, (name,)) if n not in out]
    return out


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def corrupt(images: np.ndarray, name: str, seed: int = 0) -> np.ndarray:
    """uint8 images [N, 28, 28] -> the same images under corruption `name` (see resolve_names),
    uint8, rounded as the benchmark's files were. The same (images, name, seed) always gives
    the same result; each corruption draws from its own stream of the seed."""
    if name not in ALL:
        resolve_names([name])  # an unknown name: the sentence that lists the known ones
        raise MnistlabError(f"corrupt() takes one corruption, not the family '{name}'.")
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (SIZE, SIZE) or images.dtype != np.uint8:
        raise MnistlabError(f"corrupt() takes uint8 images [N, 28, 28], not {images.dtype} {list(images.shape)}.")
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    out = np.empty_like(images)
    for start in range(0, len(images), CHUNK):  # the chunks draw in turn from one stream: same seed, same images
        x = images[start:start + CHUNK].astype(np.float32) / 255
        out[start:start + CHUNK] = _to_uint8(ALL[name](x, rng))
    return out


# ---------------------------------------------------------------- the published files

def load_mnist_c(root: str | os.PathLike, name: str, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """MNIST-C's published images and labels of one corruption: root/name/{split}_images.npy
    ([N, 28, 28, 1] or [N, 28, 28] uint8) and {split}_labels.npy (N labels 0-9); split is
    'test' or 'train'. Any problem is one sentence naming the file."""
    folder = Path(root) / name
    if not folder.is_dir():
        found = sorted(p.name for p in Path(root).iterdir() if p.is_dir()) if Path(root).is_dir() else []
        where = f"it holds {', '.join(found)}" if found else "it holds no corruption folders"
        raise DataError(f"{folder}: no such folder of MNIST-C files ({where}).")
    images = _read_npy(folder / f"{split}_images.npy")
    labels = _read_npy(folder / f"{split}_labels.npy")
    shape = f"{images.dtype} {list(images.shape)}"
    if images.ndim == 4 and images.shape[3] == 1:
        images = images[..., 0]
    if images.dtype != np.uint8 or images.shape[1:] != (SIZE, SIZE) or images.ndim != 3:
        raise DataError(f"{folder / f'{split}_images.npy'}: expected uint8 images [N, 28, 28, 1], found {shape}.")
    if not len(images):
        raise DataError(f"{folder / f'{split}_images.npy'}: holds no images.")
    path = folder / f"{split}_labels.npy"
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{path}: expected a 1-D array of whole-number labels, found {labels.dtype} "
                        f"{list(labels.shape)}.")
    if len(labels) != len(images):
        raise DataError(f"{path}: holds {len(labels)} labels for {len(images)} images.")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: label {labels.min() if labels.min() < 0 else labels.max()} is out of range 0-9.")
    return np.ascontiguousarray(images), labels.astype(np.int64)


def mnist_c_names(root: str | os.PathLike) -> list[str]:
    """The test corruptions whose folders `root` holds, in the benchmark's order."""
    return [n for n in TEST if (Path(root) / n).is_dir()]


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found.") from None
    except (OSError, ValueError, EOFError):  # NumPy's own words suggest loading pickles: never
        raise DataError(f"{path}: not a NumPy .npy array of numbers.") from None
