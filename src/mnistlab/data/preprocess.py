"""Turn any common image into an MNIST-like 28x28 digit, the way the original set was made.

MNIST digits are light ink on black, cropped to their ink, scaled so the longer side is
20 px with anti-aliasing, and placed in 28x28 with their centre of mass at the centre.
A model trained on them fails on a photo that skips these steps. NumPy and Pillow only:
no torch, so the ONNX Runtime path can use it too.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import struct
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from ..errors import MnistlabError, first_line

MAX_PIXELS = 4096 * 4096  # a digit needs far fewer; larger images are refused before they are decoded
JPEG_START = b"\xff\xd8\xff"  # a JPEG's first bytes: such a file is sized after its reduced-scale decoding
MAX_ASPECT = 20  # longer side over shorter: a strip this thin holds no digit, only decoding cost
LIGHT_TILT = 8  # grey levels the paper's light varies by: less is left as it is; a tile further above is ink
LIGHT_TILES = 8  # the paper's light is fitted to this many tiles a side
LIGHT_ROUNDS = 10  # refits at most, leaving out the tiles far above the paper (ink)
SHADOW_SIDE = 128  # a shadow is looked for in a sample of the image about this many pixels a side
SHADOW_STEPS = 12  # directions per eighth of a turn, even in slope (in a sample half as fine), then SHADOW_FINER
SHADOW_FINER = 8  # times finer around the best
SHADOW_LIGHT = (0.35, 0.88)  # the light in a shadow, as a share of the paper's: darker is ink, lighter is no shadow
SHADOW_TILES = 3  # of the sample's LIGHT_TILES ** 2 tiles, at least this many in a shadow's light to look for one
# _near_the_digit: ink this far from the paper to the ink's top is strong; faint ink within this share of the
# strong ink's side of the square about it stays; ink is joined on cells of at most this many a side; nothing
# leaves where more than this share of the ink that stays would
BOX_STRONG, BOX_REACH, BOX_CELLS, BOX_LEAVE = 0.3, 0.25, 128, 0.25
BOX_SPECKS = 0.1  # of the strong ink, what may lie far from the rest at each side (dust, a dot of the pen)
FRAME_SIDES = 0.75  # of each side of a frame's box, the share its ink runs along, at least
OUTSIDE = 256  # above any level: a running median's place beyond the full bins (_light_along)
MIN_SIDE = 4  # pixels a digit's ink spans at least, unless the image is smaller: less is dust
MIN_INK = 8  # grey levels above the paper's noise that ink stands out by, at least
THIN_PEAK = 0.5  # a digit whose brightest pixel at 20 px is fainter was drawn with a pen finer than a pixel there
RULING_CELLS = 128  # ruling lines are looked for among cells of about this many a side, any ink making a cell ink
RULING_SLANT = 24  # slopes up to this many cells over RULING_CELLS (10.6 degrees), in steps of one
RULING_FULL = 0.75  # the share of its length inside the image that a ruling line's cells hold ink in, at least
RULING_LEAST = 48  # cells on the shorter side, at least: in a smaller image a digit's strokes are as thin as lines
RULING_END = 8  # cells from the image's edge that a ruling line reaches, at both of its ends: a page seen at a
# slant leaves paper beyond its lines' ends
RULING_FAINTER = 0.85  # a page's lines are this much of the ink's height above the paper, at most
RULING_LONE = 0.6  # a page's lone line is this much of the median height above the paper off it, at most
RULING_DIGIT = 12  # cells of ink left once the lines are out, at least: a digit, not specks
RULING_ENDS_LEFT = 0.05  # of the ink left once the lines are out, what may lie at their ends: the lines' noise
RULING_THICK = 3  # the bands of two cells that a ruling line fills, at most, one beside the next
WORKING_SIDE = 1024  # larger images are decoded (JPEG) or reduced to about this before anything else
BLOCK_CHANGES = 5  # rows and columns where an image of blocks changes, at least, for them to be a small image's
LATTICE_SLACK = 1.0  # pixels a block's boundary may lie off its lattice: libraries round an enlargement their ways
LATTICE_LEAST = 4  # changes along an axis, at least, to fit blocks of a length no whole number from them alone
FAINT_RANGE = 32  # levels between an image's darkest and lightest pixels under which it may be stretched to 0-255
FAINT_LEAST = 12  # and over which: a mark a few levels off the paper is nobody's ink
FAINT_INK = 16  # levels that the ink found without the stretch stands above the floor, under which it is stretched
FAINT_PAPER = 0.1  # of the pixels, at least, at the one level of flat paper at either end of that range
FAINT_FLAT = 0.8  # of the paper's pixels, at least, whose next pixel across or down is paper too: flat
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow's own decompression-bomb guard, at the same size


def quiet_decoder_warnings() -> None:
    """Silence Pillow's warnings about damaged files (and its bomb warning, which _check_size
    turns into an error): the command line and the server report each bad image in one
    sentence. Called by those entry points, not on import: a library leaves filters alone."""
    warnings.filterwarnings("ignore", module="PIL")
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


@contextlib.contextmanager
def native_stderr_silenced():
    """Send file descriptor 2 to /dev/null for a while: libtiff, inside Pillow, prints its own
    remarks on a damaged file there, line after line, before the one sentence that says it.
    Not thread-safe (it is the process's stderr): for the command line's loop over files."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@functools.cache
def image_suffixes() -> frozenset[str]:
    """The file suffixes of every format this Pillow decodes (AVIF, QOI, PNM... where built in):
    a folder scan finds exactly what `predict FILE` reads. Stubs that only identify a format
    (they need a handler installed by another library) are left out. Asked only when a folder is
    read: loading every Pillow plugin is a large share of a one-image predict's start."""
    Image.init()
    stubs = {"BUFR", "GRIB", "HDF5", "MPEG", "WMF"}
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN
                     and fmt not in stubs)


COMMON_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tiff", ".avif")  # named in messages


class NoDigitError(MnistlabError):
    """The image holds no ink to classify."""


def open_image(source: str | os.PathLike | bytes | Image.Image, name: str | None = None) -> Image.Image:
    """Open and fully decode an image, with one clear error for every way that can fail.

    The size is checked from the header, before any pixel is decoded; a large JPEG is decoded
    at a fraction of its size (so a photo of any size is read), and any other large image reduced,
    to about WORKING_SIDE."""
    if isinstance(source, Image.Image):
        return source
    label = name or ("uploaded image" if isinstance(source, bytes) else str(source))
    if isinstance(source, bytes) and not source:
        raise MnistlabError(f"{label}: the file is empty.")
    if not isinstance(source, bytes):
        path = Path(source)
        if not path.exists():
            raise MnistlabError(f"{label}: no such file.")
        if not path.is_file():
            raise MnistlabError(f"{label}: not a file.")
        if path.stat().st_size == 0:
            raise MnistlabError(f"{label}: the file is empty.")
    try:
        img = _open(source)
        if isinstance(img, JpegImagePlugin.JpegImageFile) and max(img.size) > 2 * WORKING_SIDE:
            step = max(img.size) // WORKING_SIDE  # the longer side brought to about WORKING_SIDE
            img.draft(img.mode, (max(1, img.width // step), max(1, img.height // step)))  # 1/2, 1/4 or 1/8 scale
        _check_size(img, label)
        img.load()
    except Image.DecompressionBombError:
        raise MnistlabError(f"{label}: the image is too large (over {MAX_PIXELS:,} pixels).") from None
    except UnidentifiedImageError:
        raise MnistlabError(f"{label}: not an image (or a format Pillow cannot read).") from None
    except FileNotFoundError:  # removed after the checks above
        raise MnistlabError(f"{label}: no such file (it was removed while being read).") from None
    except OSError as e:
        if e.errno is None:  # Pillow's own: truncated or corrupt data
            raise MnistlabError(f"{label}: the image is damaged or truncated ({first_line(e)}).") from None
        raise MnistlabError(f"{label}: the file could not be read ({e.strerror or first_line(e)}).") from None
    except (SyntaxError, ValueError, EOFError) as e:  # truncated or corrupt data
        raise MnistlabError(f"{label}: the image is damaged or truncated ({first_line(e)}).") from None
    if max(img.size) > 2 * WORKING_SIDE:
        img = _reducible(img).reduce(max(img.size) // WORKING_SIDE)  # box-filtered: no digit stroke is lost
    return img


def _open(source: str | os.PathLike | bytes) -> Image.Image:
    """Image.open, except for a JPEG, which is opened past Pillow's pixel guard: open_image decodes
    a large one at reduced scale and checks the size of that instead."""
    if not isinstance(source, bytes):
        with open(source, "rb") as f:
            is_jpeg = f.read(len(JPEG_START)) == JPEG_START
        if not is_jpeg:
            return Image.open(source)
        source = Path(source).read_bytes()
    if source.startswith(JPEG_START):
        try:
            return JpegImagePlugin.jpeg_factory(io.BytesIO(source))  # what Image.open calls, less the guard
        except (SyntaxError, IndexError, TypeError, struct.error):  # not a JPEG after all: Image.open says so
            pass
    return Image.open(io.BytesIO(source))


def _reducible(img: Image.Image) -> Image.Image:
    """The image in a mode that Image.reduce averages correctly: 1-bit scans as gray, 16-bit as
    32-bit integers, and palette images as colours (averaging palette indices mixes unrelated colours)."""
    if img.mode == "1":
        return img.convert("L")
    if img.mode.startswith("I;16"):
        return img.convert("I")
    if img.mode in ("P", "PA"):
        return img.convert("RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB")
    return img


def _check_size(img: Image.Image, label: str) -> None:
    w, h = img.size
    if w < 1 or h < 1:
        raise MnistlabError(f"{label}: the image has no pixels ({w}x{h}).")
    if w * h > MAX_PIXELS:
        raise MnistlabError(f"{label}: the image is too large ({w}x{h}; at most {MAX_PIXELS:,} pixels).")
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise MnistlabError(f"{label}: the image is {w}x{h}, too thin to hold a digit "
                            f"(at most {MAX_ASPECT} times longer than wide).")


def to_gray(img: Image.Image) -> np.ndarray:
    """uint8 gray levels; transparency composited onto a background that contrasts with the ink;
    16-bit and floating-point images scaled to their own range rather than clipped."""
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a damaged EXIF block: the pixels are still good, unrotated
        pass
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        a = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = _range(a)
        with np.errstate(all="ignore"):  # a range too wide for float64 gives NaN, cleared below
            scaled = np.nan_to_num(np.clip((a - lo) / (hi - lo) * 255, 0, 255)) if hi > lo else np.zeros(a.shape)
        return np.round(scaled).astype(np.uint8)
    if img.mode == "LAB":
        return np.asarray(img.getchannel("L"))
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode in ("RGB", "L") and "transparency" in img.info):
        rgba = img.convert("RGBA")
        gray = np.asarray(rgba.convert("L"), dtype=np.float32)
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255
        opaque = alpha > 0.5
        # dark strokes on a transparent canvas go onto white, light strokes onto black
        bg = 255.0 if not opaque.any() or gray[opaque].mean() < 127.5 else 0.0
        return np.round(gray * alpha + bg * (1 - alpha)).astype(np.uint8)
    return np.asarray(img.convert("L"))


def stretched(gray: np.ndarray) -> np.ndarray:
    """gray, or, where it is a faint image on flat paper, gray stretched to 0-255: its darkest and lightest pixels
    lie FAINT_LEAST to FAINT_RANGE levels apart, and its commonest level is one end of them, held by FAINT_PAPER of
    the pixels, in runs across and down (FAINT_FLAT): paper, with ink toward the other end, as a scan's 17 grey
    levels saved as they are (0-16).

    _preprocess asks for it only where the ink found without it stands less than FAINT_INK above the floor, or none
    is: ink is told from paper in steps of whole levels (MIN_INK, LIGHT_TILT), too coarse for ink 16 levels above
    its paper, and the paper's light, fitted to the tiles, took such ink for light and levelled it away. A clearer
    pen keeps its image as it is, and a flaw of its paper stays below those steps. A mark a few levels off the
    paper stays as it is, and so does noise whose commonest level lies inside its range, or, cut off at black or
    white over most of the page, is scattered."""
    lo, hi = int(gray.min()), int(gray.max())
    if not FAINT_LEAST <= hi - lo < FAINT_RANGE:
        return gray
    counts = np.bincount(gray.ravel(), minlength=256)
    paper, span = int(np.argmax(counts)), hi - lo
    if paper not in (lo, hi) or counts[paper] < FAINT_PAPER * gray.size:
        return gray
    on = gray == paper
    pairs = np.count_nonzero(on[:, 1:] & on[:, :-1]) + np.count_nonzero(on[1:] & on[:-1])
    if pairs < FAINT_FLAT * (np.count_nonzero(on[:, :-1]) + np.count_nonzero(on[:-1])) or not pairs:
        return gray  # scattered: noise cut off at black or white, not flat paper
    return (((gray.astype(np.int32) - lo) * 510 + span) // (2 * span)).astype(np.uint8)  # rounded, in whole numbers


def unblocked(gray: np.ndarray) -> np.ndarray:
    """gray, or, where it is a smaller image enlarged by repeating its pixels (nearest neighbour), that smaller
    image enlarged again smoothly (Pillow's Lanczos), to the same size.

    A digit of 8 x 8 pixels enlarged into blocks keeps its staircase edges through the shrink to 20 px, and the
    model, which has seen anti-aliased strokes, takes it for no digit. The blocks are found where the rows at
    which the image changes, and the columns, lie on a lattice of blocks at least 2 pixels long (_lattice), with
    BLOCK_CHANGES changes at least and never two side by side: a photo's noise or a drawn curve changes from one
    row to the next. Each block's middle pixel is taken for the smaller image's."""
    rows, cols = _changes(gray, 0), _changes(gray, 1)
    if (not len(rows) or not len(cols) or len(rows) + len(cols) < BLOCK_CHANGES
            or min(np.diff(rows).min(initial=2), np.diff(cols).min(initial=2)) < 2):
        return gray
    down, across = math.gcd(*np.diff(rows).tolist()), math.gcd(*np.diff(cols).tolist())  # 0 for one change
    # square blocks where the other axis's divide this one's; the axis with more changes shows the lattice
    # better, and the other tries its block first
    down, across = (across if across >= 2 and down % across == 0 else down,
                    down if down >= 2 and across % down == 0 else across)
    rows_first = len(rows) >= len(cols)
    (more, more_side, more_step), (fewer, fewer_side, fewer_step) = (
        ((rows, gray.shape[0], down), (cols, gray.shape[1], across)) if rows_first else
        ((cols, gray.shape[1], across), (rows, gray.shape[0], down)))
    first = _lattice(more, more_side, more_step)
    second = None if first is None else _lattice(fewer, fewer_side, fewer_step, first[3])
    if first is None or second is None:
        return gray
    (row_at, top, bottom, _), (col_at, left, right, _) = (first, second) if rows_first else (second, first)
    small = Image.fromarray(np.ascontiguousarray(gray[row_at][:, col_at], dtype=np.float32))
    big = small.resize(gray.shape[::-1], Image.Resampling.LANCZOS, box=(left, top, right, bottom))
    return np.round(np.clip(np.asarray(big), 0, 255)).astype(np.uint8)


def _changes(gray: np.ndarray, axis: int) -> np.ndarray:
    """The rows (axis 0) or columns (1) that differ from the one before."""
    return np.flatnonzero((np.diff(gray, axis=axis) != 0).any(axis=1 - axis)) + 1


def _lattice(changes: np.ndarray, side: int, step: int, like: float = 0.0
             ) -> tuple[np.ndarray, float, float, float] | None:
    """Along one axis of `side` pixels: (the middle pixel of each block, the span of the blocks that the image
    covers, in blocks, and the block's length), or None where the changes lie on no lattice of blocks.

    A change must lie at half of the lattice's boundaries between the first change and the last, at least: a
    drawing of a few crisp rectangles changes at few rows, whose gaps any coarse lattice would fit. The lattice is
    blocks of `step` whole pixels (the gaps' greatest common divisor), from the offset of the first change (paper
    added after the enlarging), where step is 2 or more and the changes fill it. Else (blocks no whole number of
    pixels long, whose gaps' divisor is 1 or 2) blocks of `like` (the other axis's) if the changes fit it;
    else, with LATTICE_LEAST changes at least, the longest of the first and last change's distance over k blocks
    that they fit. Libraries round a boundary in their own ways, so a change fits within LATTICE_SLACK pixels;
    the lattice is then fitted to the changes by least squares, whose sums are whole numbers, exact in any order,
    or taken as the image's side over a whole number of blocks where that fits as well (the rounding would shift
    it a little). Pillow's resize of the span puts the image's pixel p at (p + 0.5 - start) / block in the
    smaller image, as the lattice does."""
    span = int(changes[-1] - changes[0])
    if step >= 2 and 2 * len(changes) >= span // step + 1:
        start: float = int(changes[0]) % step - (step if int(changes[0]) % step else 0)
        block: float = step
    else:
        fits = None
        own = range(len(changes) - 1, 2 * len(changes)) if len(changes) >= LATTICE_LEAST else ()
        for block in [like, *(span / k for k in own if k)]:
            j = np.floor((changes - changes[0]) / block + 0.5) if block >= 2 else None
            if j is not None and np.abs(changes - changes[0] - j * block).max() <= LATTICE_SLACK:
                fits = j
                break
        if fits is None:
            return None
        n, sj, sp, sjj, sjp = len(changes), fits.sum(), changes.sum(), (fits * fits).sum(), (fits * changes).sum()
        if n * sjj - sj * sj > 0:  # two blocks at least: the least-squares line
            block = (n * sjp - sj * sp) / (n * sjj - sj * sj)
        start = (sp - block * sj) / n
        whole = math.floor(side / block + 0.5)  # the blocks, if the lattice spans the image: no paper added after
        if whole and np.abs(changes - np.floor(changes * whole / side + 0.5) * side / whole).max() <= LATTICE_SLACK:
            start, block = 0.0, side / whole
        if block < 2:
            return None
    first, last = math.floor(-start / block), math.ceil((side - start) / block) - 1
    middle = np.floor(start + (np.arange(first, last + 1) + 0.5) * block).astype(int)
    return np.clip(middle, 0, side - 1), -start / block - first, (side - start) / block - first, block


def _range(a: np.ndarray) -> tuple[float, float]:
    """The values' range less the few most extreme pixels at each end (two, and one in 100,000 more):
    a dead or hot pixel of a 16- or 32-bit sensor must not squeeze the picture into a few grey levels,
    while a digit always has far more pixels than that, so its ink still reaches the end of the range."""
    flat = a.ravel()
    k = min(2 + flat.size // 100_000, (flat.size - 1) // 2)
    part = np.partition(flat, (k, flat.size - 1 - k))
    return float(part[k]), float(part[flat.size - 1 - k])


def _quantile(a: np.ndarray, q: float) -> int:
    """A quantile of uint8 values from Pillow's histogram: O(n) in C, unlike a selection on
    images full of equal values, where numpy's partition is far slower."""
    counts = Image.fromarray(np.ascontiguousarray(a.reshape(1, -1) if a.ndim == 1 else a)).histogram()
    return int(np.searchsorted(np.cumsum(counts), q * a.size))


def _border(a: np.ndarray) -> np.ndarray:
    w = max(1, min(a.shape) // 20)
    return np.concatenate([a[:w].ravel(), a[-w:].ravel(), a[:, :w].ravel(), a[:, -w:].ravel()])


def _tile_medians(gray: np.ndarray) -> np.ndarray:
    """[LIGHT_TILES ** 2, 3]: (u, v, median) of each tile, row by row; u and v are the tile's column and row
    counted in odd numbers from the centre (-7, -5, ..., 7 for 8 tiles): half-tile units. The medians as
    _quantile takes them, from one histogram a tile, all in one bincount."""
    h, w = gray.shape
    n = LIGHT_TILES
    # tile i holds the rows from i*h//n up to (i+1)*h//n, and the columns likewise
    tile_rows = np.searchsorted(np.arange(1, n) * h // n, np.arange(h), side="right")
    tile_cols = np.searchsorted(np.arange(1, n) * w // n, np.arange(w), side="right")
    index = (tile_rows[:, None] * n + tile_cols[None, :]) * 256 + gray
    counts = np.bincount(index.ravel(), minlength=n * n * 256).reshape(n * n, 256).cumsum(axis=1)
    medians = (counts < 0.5 * counts[:, -1:]).sum(axis=1)  # the first level whose count reaches half the tile's
    v, u = np.divmod(np.arange(n * n), n)
    return np.stack([2 * u + 1 - n, 2 * v + 1 - n, medians], axis=1).astype(np.float64)


def _surface(c: Sequence[float], u, v):
    """The quadratic at (u, v), scalars or arrays: elementwise in the same order as preprocess.js."""
    return c[0] + c[1] * u + c[2] * v + c[3] * u * u + c[4] * u * v + c[5] * v * v


def paper_surface(gray: np.ndarray) -> list[float] | None:
    """The paper's light, as the six coefficients of a quadratic surface over half-tile units (_tile_medians),
    or None where it cannot be had: a tilt (a lamp to one side) and a bowl (a lens's vignette, a lamp above).

    The image is cut into tiles, each summed up by its median; the surface is fitted to the tiles by least
    squares, tiles far above it are left out and the surface fitted again, until the set stands still. Ink is
    light here (ink_levels turned the polarity), so a tile that is mostly ink lies above the paper: however much
    ink runs along a side, it never bends the fit. The first fit takes the darker half of the tiles, which is
    paper wherever ink covers less than half of them. Where half the tiles or more are nearer the ink than the
    border's paper, as in a crop as tight as the digit, the tiles cannot show the paper: None."""
    if min(gray.shape) < 2 * LIGHT_TILES:
        return None
    tiles = _tile_medians(gray)
    u, v, m = tiles.T
    levels = _unlevelled(gray)
    if levels is not None and 2 * np.count_nonzero(m > (levels[1] + levels[2]) / 2) >= len(m):
        return None
    kept = m <= np.sort(m)[len(m) // 2 - 1]
    for _ in range(LIGHT_ROUNDS):
        coef = _least_squares(tiles[kept])
        if coef is None:
            return None
        again = m - _surface(coef, u, v) <= LIGHT_TILT
        if (again == kept).all():
            break
        kept = again
    return coef


def _least_squares(tiles: np.ndarray) -> list[float] | None:
    """The quadratic surface through (u, v, median) tiles by least squares: the normal equations solved by
    Gaussian elimination. Every sum is of whole numbers, exact as floats in any order, and the elimination is
    a fixed order of float64 operations, which preprocess.js repeats for the same result to the last bit."""
    u, v, m = tiles.T
    rows = np.stack([np.ones_like(u), u, v, u * u, u * v, v * v, m], axis=1)
    k = rows.shape[1] - 1
    if len(rows) < 2 * k:
        return None
    a = (rows[:, :k].T @ rows).tolist()  # whole numbers all: exact in any order of summing
    for p in range(k):
        if a[p][p] <= 1e-9 * a[0][0]:  # the kept tiles leave the surface undetermined
            return None
        for i in range(p + 1, k):
            f = a[i][p] / a[p][p]
            for j in range(p, k + 1):
                a[i][j] -= f * a[p][j]
    coef = [0.0] * k
    for i in reversed(range(k)):
        done = 0.0
        for j in range(i + 1, k):  # added one by one, as JavaScript does: sum() compensates from Python 3.12
            done += a[i][j] * coef[j]
        coef[i] = (a[i][k] - done) / a[i][i]
    return coef


def _direction(i: int, m: int) -> tuple[int, int]:
    """The i-th of 4m directions (a, b) across half a turn, with max(|a|, |b|) = m: whole numbers, so that a
    pixel's distance along one, (a * x + b * y) // m, is the same in preprocess.js."""
    i %= 4 * m
    return (m, i - m) if i < 2 * m else (3 * m - i, m)


def _light_along(sample: np.ndarray, a: int, b: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """The paper's light as a function of distance along (a, b): (each pixel's bin, the light of each bin, the pixels
    in each bin, the first and last bin of the full ones). A bin's light is the median over its window of the bins'
    medians (each bin a line across the image, its median the paper's wherever ink covers less than half of it):
    a running median keeps a shadow's edge, however sharp, and drops a stroke that runs along the line."""
    h, w = sample.shape
    d = (a * np.arange(w)[None, :] + b * np.arange(h)[:, None]) // m
    d -= d.min()
    n = int(d.max()) + 1
    counts = np.bincount((d * 256 + sample).ravel(), minlength=n * 256).reshape(n, 256)
    pixels = counts.sum(axis=1)
    medians = (2 * counts.cumsum(axis=1) < pixels[:, None]).sum(axis=1)
    full = np.flatnonzero(4 * pixels >= pixels.max())
    lo, hi = int(full[0]), int(full[-1])
    half = max(2, (hi - lo + 1) // 10)
    # bin k's window is the medians of bins k - half to k + half within lo..hi: each window sorted, with the bins
    # outside lo..hi padded by a value above any level, so that its lower median is at (count - 1) // 2
    padded = np.full(n + 2 * half, OUTSIDE, np.int64)
    padded[half + lo:half + hi + 1] = medians[lo:hi + 1]
    window = np.sort(np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1), axis=1)
    count = (window < OUTSIDE).sum(axis=1)
    light = window[np.arange(n), np.maximum(count - 1, 0) // 2]
    light[:lo], light[hi + 1:] = light[lo], light[hi]
    return d, light, pixels, lo, hi


def find_shadow(gray: np.ndarray) -> tuple[int, int, int, int] | None:
    """A shadow with a straight edge over part of the paper, as a hand or a phone casts it: its direction (a, b, m)
    and the lit paper's level, for level_shadow, or None. Ink is light here, so a shadow is a raised part of the floor.

    The image, sampled every k-th pixel, is summed up along each direction by its light (_light_along); the
    direction whose light leaves the least behind (the sum of |pixel - light|) is the shadow's, as a straight edge
    lies along one direction only. It is a shadow if the light steps up once along it, covers a tenth to nine
    tenths of the image, and keeps SHADOW_LIGHT of the paper's light (_lit_side)."""
    h, w = gray.shape
    if min(h, w) < 2 * LIGHT_TILES:
        return None
    k = -(-max(h, w) // SHADOW_SIDE)
    sample = gray[::k, ::k]
    if min(sample.shape) < 2 * LIGHT_TILES:
        return None
    dark, bright = SHADOW_LIGHT
    tiles = 255 - _tile_medians(sample)[:, 2]  # the light of each tile, as a share of the lightest below
    if ((dark * tiles.max() <= tiles) & (tiles <= bright * tiles.max())).sum() < SHADOW_TILES:
        return None  # too few tiles lie in shadow's light (ink lies below it, paper above): most images, at once

    def fitted(image: np.ndarray, i: int, m: int):
        a, b = _direction(i, m)
        d, light, pixels, lo, hi = _light_along(image, a, b, m)
        return int(np.abs(image.astype(np.int64) - light[d]).sum()), (a, b, m, d, light, pixels, lo, hi)

    small = sample[::2, ::2]
    best, coarse = min(((fitted(small, i, SHADOW_STEPS), i) for i in range(4 * SHADOW_STEPS)), key=lambda f: f[0][0])
    light, pixels, lo, hi = best[1][4:]
    # the coarse direction's light, held to the test with twice the slack, spares most pictures the finer search
    if _lit_side(light, pixels, lo, hi, slack=2) is None:
        return None
    _, (a, b, m, d, light, pixels, lo, hi) = min(
        (fitted(sample, SHADOW_FINER * coarse + j, SHADOW_FINER * SHADOW_STEPS)
         for j in range(-SHADOW_FINER, SHADOW_FINER + 1)), key=lambda f: f[0])
    lit = _lit_side(light, pixels, lo, hi)
    return None if lit is None else (a, b, m, lit)


def _lit_side(light: np.ndarray, pixels: np.ndarray, lo: int, hi: int, slack: int = 1) -> int | None:
    """The lit paper's level where the light along a direction (_light_along) steps up once, the shade covers a tenth
    to nine tenths of the image and keeps SHADOW_LIGHT of the paper's light; else None. With `slack` 2, each side
    may stray twice as far from its level and the shade cover a twentieth to nineteen twentieths."""
    dark, bright = SHADOW_LIGHT
    span = max(2, (hi - lo + 1) // 8)
    if hi - lo + 1 <= span:
        return None
    rise = light[lo + span:hi + 1] - light[lo:hi + 1 - span]
    j = int(np.argmax(np.abs(rise)))
    edge = lo + j + span // 2
    before, after = light[lo:max(lo, edge - span)], light[edge + span:hi + 1]  # each side, its edge left out
    lit, shade = (before, after) if rise[j] > 0 else (after, before)
    if not len(lit) or not len(shade):
        return None
    q_lit, q_shade = int(np.sort(lit)[(len(lit) - 1) // 2]), int(np.sort(shade)[(len(shade) - 1) // 2])
    shaded = int(pixels[edge:].sum() if rise[j] > 0 else pixels[:edge].sum())
    # a step, not a lamp's slope or a stroke: each side strays from its level by a tenth of the step, on average
    level = all(10 * int(np.abs(side - q).sum()) <= slack * (q_shade - q_lit) * len(side)
                for side, q in ((lit, q_lit), (shade, q_shade)))
    total = int(pixels.sum())
    if not (dark * (255 - q_lit) <= 255 - q_shade <= bright * (255 - q_lit)
            and total <= 10 * slack * shaded <= (10 * slack - 1) * total and level):
        return None
    return q_lit


def level_shadow(gray: np.ndarray) -> np.ndarray:
    """The paper's light made even across a straight-edged shadow (find_shadow): each pixel's darkening divided out,
    as a shadow dims ink and paper alike; elsewhere nothing changes. The light is taken again at full resolution
    along the shadow's direction, so that a sharp edge is followed to the pixel, not to the sample's step."""
    found = find_shadow(gray)
    if found is None:
        return gray
    a, b, m, lit = found
    d, light, _, _, _ = _light_along(gray, a, b, m)
    # each bin's output for each grey level, a table: the same float64 steps as preprocess.js takes per pixel
    paper = np.maximum(1, 255 - np.maximum(light, lit)).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    table = np.clip(255 - np.round((255 - levels[None, :]) * (255 - lit) / paper[:, None]), 0, 255).astype(np.uint8)
    return table[d, gray]


def level_light(gray: np.ndarray) -> np.ndarray:
    """The paper made level: uneven light (a lamp to one side, a hand's shadow, a vignette) lifts the floor above
    faint ink. The paper's surface (paper_surface) is taken out, less its value at the image's centre. Where it
    varies by under LIGHT_TILT levels over the tiles (drawings, scans), or by more than the whole grey scale (no
    paper was found), nothing changes."""
    h, w = gray.shape
    coef = paper_surface(gray)
    if coef is None:
        return gray
    grid = np.arange(-LIGHT_TILES + 1, LIGHT_TILES, 2, dtype=np.float64)
    values = _surface(coef, grid[None, :], grid[:, None])
    span = values.max() - values.min()
    if span < LIGHT_TILT or span > 255:  # level paper, or no paper found
        return gray
    # per pixel in float32, as preprocess.js computes it, in half-tile units from the centre
    u = (np.arange(w, dtype=np.float32) - np.float32((w - 1) / 2)) * np.float32(2 * LIGHT_TILES / w)
    v = (np.arange(h, dtype=np.float32) - np.float32((h - 1) / 2)) * np.float32(2 * LIGHT_TILES / h)
    c = [np.float32(x) for x in coef]
    across = c[1] * u + c[3] * (u * u)
    down = c[2] * v + c[5] * (v * v)
    levelled = gray - (across[None, :] + down[:, None] + (c[4] * v)[:, None] * u[None, :])
    np.round(levelled, out=levelled)
    return np.clip(levelled, 0, 255, out=levelled).astype(np.uint8)


def ink_levels(gray: np.ndarray) -> tuple[np.ndarray, float, float] | None:
    """(gray turned light-ink-on-dark, background floor, ink brightness), all in 0-255; None where no pixel
    stands out from the paper.

    Polarity comes from the border, which is mostly background: dark ink on light paper (MNIST's ink is light)
    unless three quarters of the border are dark, since a pen on paper is the common case and a thick stroke
    along the frame can cover half of it. Where that side holds no ink and the other does, before any
    levelling, the other is taken: paper photographed in dim light is darker than mid-grey, and chalk on a grey
    board lighter (levelling the wrong side would lift paper around the digit into false ink). Where the side
    taken holds no ink once levelled, the other is tried."""
    side, other = (255 - gray, gray) if _quantile(_border(gray), 0.75) > 127 else (gray, 255 - gray)
    raw = _unlevelled(side)
    if not _enough(raw) and _enough(other_raw := _unlevelled(other)):
        side, other, raw = other, side, other_raw
    levels = _levels(side, raw)
    if not _enough(levels):
        return _levels(other) or levels
    return levels


def _enough(levels: tuple[np.ndarray, float, float] | None) -> bool:
    """Whether ink_levels found ink at least MIN_INK above the floor."""
    return levels is not None and levels[2] - levels[1] >= MIN_INK


def _unlevelled(gray: np.ndarray) -> tuple[np.ndarray, float, float] | None:
    """ink_levels for gray already light-ink-on-dark, as it is."""
    floor = _floor(_border(gray))
    top = _ink_top(gray, floor)
    return None if top is None else (gray, floor, top)


def _levels(gray: np.ndarray, unlevelled: tuple[np.ndarray, float, float] | None = None
            ) -> tuple[np.ndarray, float, float] | None:
    """ink_levels for gray already light-ink-on-dark, its paper levelled (level_shadow, level_light); level paper
    (most images) keeps gray's own levels where they were found already (`unlevelled`), with no second pass."""
    levelled = level_light(level_shadow(gray))
    return unlevelled if levelled is gray and unlevelled is not None else _unlevelled(levelled)


def _floor(border: np.ndarray) -> float:
    """The level above which a pixel is ink: the paper's level and noise come from the darker quarter of the
    border, so that ink running along the frame, even on most of it, never counts as paper; the floor sits
    above the level by four times that noise (at least MIN_INK)."""
    low, quartile = _quantile(border, 0.01), _quantile(border, 0.25)
    spread = (quartile - low) / 1.65  # a normal's 1% and 25% quantiles lie 1.65 standard deviations apart
    return quartile + 0.67 * spread + max(MIN_INK, 4 * spread)  # the median of the paper, then the margin


def _ink_top(gray: np.ndarray, floor: float) -> float | None:
    """The ink's brightness, taken among the pixels above the floor (so that a small digit in a large photo is
    not lost among paper), the brightest 0.5% ignored; None where none is above it."""
    above = gray[gray > floor]
    return float(_quantile(above, 0.995)) if above.size else None


def box3(a: np.ndarray) -> np.ndarray:
    """Sum over each 3x3 neighbourhood (zero outside), as two separable passes."""
    p = np.pad(a, 1)
    rows = p[:-2] + p[1:-1] + p[2:]
    return rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]


def center_of_mass(a: np.ndarray) -> tuple[float, float]:
    """(row, column) of the ink's centre, summed in float64 as preprocess.js sums it: a float32 sum is off by a
    millionth, enough to round a centre at x.5 the other way and shift the digit a pixel from the page's."""
    total = a.sum(dtype=np.float64)
    rows, cols = np.indices(a.shape)
    return float((rows * a).sum() / total), float((cols * a).sum() / total)


def ruling_cells(mask: np.ndarray) -> tuple[np.ndarray, bool, bool, bool] | None:
    """(the cells [H, W] (of RULING_CELLS a side at most, each k x k pixels) that hold a ruled or squared
    page's lines, whether the rows are ruled, whether the columns are, whether those lines are lone ones), or None
    where the page has none: an exercise book's lines are ink to any threshold, and they stretch the digit's box to
    the whole page.

    A line is a thin straight band of ink, nearly along the rows (or the columns), with paper beside it
    (_lines). A page is ruled where one slope holds two lines that run from edge to edge, one of them away
    from the image's edge: a digit's own straight strokes stop short of the edge, or lie along it where the
    digit is cropped tight, and a 4's bar or a 1's stem is one line alone. Then every line of that direction
    is taken, at any slope (lines converge in a photo's perspective, and a turned page's corners hold short
    ones), with the lines of the other direction that run from edge to edge (a margin's line). Where no slope
    holds two, a line away from the image's edge that the image's first and last columns (or rows) both cut is
    taken alone, with the others that run from edge to edge: a page ruled wider than the crop shows one line.
    A digit's bar that runs as far is only cut so in a crop as tight as the digit, and without_ruling keeps it
    where it is as dark as the ink off it, or where the digit's ink reaches the same edges. Images under
    RULING_LEAST cells a side are left as they are."""
    if not _may_be_ruled(mask):
        return None
    k = -(-max(mask.shape) // RULING_CELLS)
    cells = _pooled(mask, k)
    ends, ends_down = _ends(cells), _ends(cells.T)
    if not (ends.any() or ends_down.any()):
        return None  # no band reaches both edges: most images, at a small cost
    across, ruled_rows, lone_across = _lines(cells, ends)
    down, ruled_columns, lone_down = _lines(cells.T, ends_down)
    lone = not (ruled_rows or ruled_columns)
    ruled, squared = (lone_across, lone_down) if lone else (ruled_rows, ruled_columns)
    if not (ruled or squared):
        return None
    across = across if ruled and not lone else [line for line in across if line[3]]
    down = down if squared and not lone else [line for line in down if line[3]]
    rows, cols = cells.shape
    return _cells_of(across, rows, cols) | _cells_of(down, cols, rows).T, ruled, squared, lone


def _may_be_ruled(mask: np.ndarray) -> bool:
    """ruling_cells' first test, at once for most images: the image is RULING_LEAST cells a side or more, and holds
    ink near its edge."""
    h, w = mask.shape
    k = -(-max(h, w) // RULING_CELLS)
    rows, cols = -(-h // k), -(-w // k)
    ring = (RULING_END + 1) * k  # pixels, about the cells in which a line reaching the edge holds ink
    return min(rows, cols) >= RULING_LEAST and bool(
        mask[:ring].any() or mask[(rows - RULING_END - 1) * k:].any() or mask[:, :ring].any()
        or mask[:, (cols - RULING_END - 1) * k:].any())


def _pooled(mask: np.ndarray, k: int) -> np.ndarray:
    """Cells of k x k pixels (the last ones partial), each True where any of its pixels is."""
    h, w = mask.shape
    padded = np.zeros((-(-h // k) * k, -(-w // k) * k), bool)
    padded[:h, :w] = mask
    return np.asarray(padded.reshape(padded.shape[0] // k, k, padded.shape[1] // k, k).any(axis=(1, 3)))


def _unpooled(cells: np.ndarray, k: int, shape: tuple[int, ...]) -> np.ndarray:
    """_pooled's cells back at pixels: each pixel of `shape` takes its k x k cell's value."""
    return np.repeat(np.repeat(cells, k, axis=0), k, axis=1)[:shape[0], :shape[1]]


def _sheared(rows: int, cols: int) -> tuple[np.ndarray, int]:
    """(the bin of row 0 in each column at each slope up to RULING_SLANT [slopes, cols], how many bins): cells
    sheared so that a line of that slope lies in one row of bins."""
    shifts = np.arange(-RULING_SLANT, RULING_SLANT + 1)[:, None] * np.arange(cols) // RULING_CELLS
    shifts -= shifts.min(axis=1, keepdims=True)
    return shifts, rows + int(shifts.max())


def _per_band(shifts: np.ndarray, n: int, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """How many of the cells (y, x) fall in each of the n bins, at each slope [slopes, n]."""
    slopes = len(shifts)
    bins = (np.arange(slopes)[:, None] * (n + 1) + y + shifts[:, x]).ravel()
    return np.bincount(bins, minlength=slopes * (n + 1)).reshape(slopes, n + 1)[:, :n]


def _inked(cells: np.ndarray) -> np.ndarray:
    """Where band d (bins d and d + 1) holds ink: where the cell, or the one below it, does."""
    return cells | np.pad(cells[1:], ((0, 1), (0, 0)))


def _ends(cells: np.ndarray) -> np.ndarray:
    """[slopes, bins]: the bands that hold ink within RULING_END cells of the image's edge both in the left half of
    the columns and in the right."""
    rows, cols = cells.shape
    shifts, n = _sheared(rows, cols)
    near = np.zeros_like(cells)
    near[:RULING_END], near[-RULING_END:], near[:, :RULING_END], near[:, -RULING_END:] = True, True, True, True
    left = np.arange(cols) < cols // 2
    inked = _inked(cells) & near
    return ((_per_band(shifts, n, *np.nonzero(inked & left)) > 0)
            & (_per_band(shifts, n, *np.nonzero(inked & ~left)) > 0))


def _lines(cells: np.ndarray, ends: np.ndarray) -> tuple[list[tuple[np.ndarray, int, int, bool]], bool, bool]:
    """(the lines along the rows of `cells`, at any slope, each as (the bin of row 0 in each column, its first
    bin, its last, whether it runs from edge to edge across half the image or more); whether the rows are
    ruled, as ruling_cells says; whether a line runs from edge to edge away from the image's edge, cut by the
    image's first and last columns as a crop cuts a page's line).

    At each slope the cells are sheared (_sheared). A band (bins d and d + 1) is full where RULING_FULL of the
    columns in which it lies inside the image hold ink; a line is a run of at most RULING_THICK full bands with
    paper beside it (under half of the band two bins away holds ink): a stroke is thicker. It runs from edge to
    edge where one of its bands does (`ends`, _ends of the same cells)."""
    rows, cols = cells.shape
    shifts, n = _sheared(rows, cols)
    every = np.arange(cols)
    # band d lies inside the image in the columns where bin d does
    span = (_per_band(shifts, n, np.zeros(cols, int), every) - _per_band(shifts, n, np.full(cols, rows), every))
    span = span.cumsum(axis=1)
    covered = _per_band(shifts, n, *np.nonzero(_inked(cells)))
    full = (span > 0) & (covered >= RULING_FULL * span)
    ends = np.pad((full & ends).cumsum(axis=1), ((0, 0), (1, 0)))
    # the runs of full bands, all slopes at once: (slope, first band, the band after the last)
    steps = np.diff(np.pad(full.astype(np.int8), ((0, 0), (1, 1))), axis=1)
    slope, start = np.nonzero(steps == 1)
    stop = np.nonzero(steps == -1)[1]
    line = stop - start <= RULING_THICK
    for d in (start - 2, stop + 1):  # paper beside (outside the image too)
        b = np.clip(d, 0, n - 1)
        line &= (d != b) | (2 * covered[slope, b] < span[slope, b]) | (span[slope, b] == 0)
    slope, start, stop = slope[line], start[line], stop[line]
    long = (2 * span[slope, start] >= cols) & (2 * span[slope, stop - 1] >= cols)  # across half the image
    reaches = long & (ends[slope, stop] > ends[slope, start])
    middle = (start + stop) / 2 - shifts[slope, cols // 2]  # the line's row at the middle column
    edge = max(1, rows // 8)
    inner = (edge <= middle) & (middle <= rows - 1 - edge)

    def count(which: np.ndarray) -> np.ndarray:
        return np.bincount(slope[which], minlength=len(shifts))

    ruled = (count(reaches) >= 2) & (count(reaches & inner) >= 1)
    lines = [(shifts[k], a, b, r) for k, a, b, r in zip(slope, start.tolist(), stop.tolist(), reaches.tolist())]
    alone = reaches & inner
    lone = any(_cut_at(cells, shifts[k], a, b, 0) and _cut_at(cells, shifts[k], a, b, cols - 1)
               for k, a, b in zip(slope[alone], start[alone], stop[alone]))
    return lines, bool(ruled.any()), lone


def _cut_at(cells: np.ndarray, shift: np.ndarray, first: int, last: int, x: int) -> bool:
    """Whether a line of _lines (the bins first to last, sheared by `shift`) holds ink in column x of `cells`."""
    return bool(cells[max(0, first - shift[x]):max(0, last - shift[x] + 1), x].any())


def _cells_of(lines: list[tuple[np.ndarray, int, int, bool]], rows: int, cols: int) -> np.ndarray:
    """The cells [rows, cols] of _lines' lines: the bins from each one's first to its last (the bin after its
    last band's first)."""
    out = np.zeros((rows, cols), bool)
    for shift, first, last, _ in lines:
        bins = np.arange(rows)[:, None] + shift
        out |= (bins >= first) & (bins <= last)
    return out


def without_ruling(gray: np.ndarray, floor: float, top: float) -> np.ndarray:
    """gray with a ruled or squared page's lines (ruling_cells, of the pixels above the floor; where none are
    found there, of the ink that makes the digit's box, which a photo's noise does not fill) taken out: in
    their cells, a pixel no brighter than halfway from the lines' median ink to the ink's top becomes paper,
    so that a digit's stroke brighter than the lines survives where it crosses one. gray itself where the
    page has no lines, where they are as bright as the ink (RULING_FAINTER: a boxy 8 drawn from edge to edge
    has two such lines, and its strokes are all there is to read; for a lone line, RULING_LONE of the median of
    the other pixels above the floor: the digit's ink, and a photo's noise, which makes the rule stricter there),
    or where what is left is no digit, or holds a digit's share of ink at the lines' ends."""
    above = gray > floor
    if not _may_be_ruled(above):  # the box's ink lies within the pixels above the floor: nothing to look for again
        return gray
    found = ruling_cells(above) or ruling_cells(_box_ink(gray, floor, top))
    if found is None:
        return gray
    cells, ruled, squared, lone = found
    h, w = gray.shape
    k = -(-max(h, w) // RULING_CELLS)
    on_lines = _unpooled(cells, k, gray.shape)
    level = _quantile(gray[on_lines & above], 0.5)  # never empty: the cells were found among those pixels
    if level - floor > RULING_FAINTER * (top - floor):
        return gray
    if lone:  # a lone line must be fainter than what lies off it: a fine pen's 7 has a bar as faint as its stem
        rest = gray[above & ~on_lines]
        if not rest.size or level - floor > RULING_LONE * (_quantile(rest, 0.5) - floor):
            return gray
    cleaned = np.where(on_lines & (gray <= (level + top) / 2), 0, gray).astype(np.uint8)
    # the digit is the ink left, as its box is taken (a line's noisy pixels brighter than the cut are specks): there
    # must be one, and under RULING_ENDS_LEFT of it in an eighth of the image at both ends of the lines (a digit
    # cropped tight across its bars, a Z-shaped 2 or a boxy 3 with a fine pen, runs to those edges; a page is seldom
    # cropped as close)
    left = _pooled(_box_ink(cleaned, floor, top), k)
    r8, c8 = cells.shape[0] // 8, cells.shape[1] // 8
    most = max(2, RULING_ENDS_LEFT * left.sum())  # cells at the lines' ends: as many is a digit, fewer their noise
    if (left.sum() < RULING_DIGIT or ruled and (left[:, :c8].sum() >= most or left[:, -c8:].sum() >= most)
            or squared and (left[:r8].sum() >= most or left[-r8:].sum() >= most)):
        return gray
    return cleaned


def _box_ink(gray: np.ndarray, floor: float, top: float) -> np.ndarray:
    """The ink that makes the digit's box: above a twentieth of the way from the paper to the ink's top, less
    isolated specks (no other ink in their 3x3 neighbourhood)."""
    mask = gray > floor + 0.05 * (top - floor)
    return mask & (box3(mask.astype(np.uint8)) >= 2)


def preprocess(source, name: str | None = None) -> np.ndarray:
    """Any image -> uint8 [28, 28], light ink on black, MNIST-normalised in size and position.

    Raises NoDigitError for an image with no ink, and MnistlabError, naming the image, for
    anything else: this is the one boundary between untrusted bytes and the model, and the
    image decoders behind it raise many more kinds of error than the ones named here.
    """
    label = name or (str(source) if isinstance(source, (str, os.PathLike)) else "image")
    try:
        return _preprocess(source, name, label)
    except MnistlabError:
        raise
    except MemoryError:
        raise MnistlabError(f"{label}: not enough memory to decode the image.") from None
    except Exception as e:  # a decoder's own failure on damaged or unusual data
        raise MnistlabError(f"{label}: the image cannot be read ({type(e).__name__}: {first_line(e)}).") from None


def _near_the_digit(mask: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """mask (the ink that makes the digit's box) less the faint ink far from the strong ink: a faint line's
    pieces in a photo of a ruled page, or dirt near its edge, would stretch the box and shrink the digit.

    Faint ink stays where a path of ink joins it to the strong ink (a pencil's lighter stroke, a blurred edge),
    joined on cells of k x k pixels, BOX_CELLS a side at most. It also stays where it lies within BOX_REACH of
    the square about the strong ink's box (a lighter stroke drawn apart: an open 4's, a 5's bar). And all of it
    stays where more than BOX_LEAVE of the ink that would stay would leave: then the strong ink is not the
    digit (a dark speck beside a faint pencil digit) or not all of it (a dry pen's dashes)."""
    strong = _without_specks(strong & mask)
    rows, cols = np.flatnonzero(strong.any(1)), np.flatnonzero(strong.any(0))
    if not len(rows):
        return mask
    side = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
    reach = int(BOX_REACH * side)
    top, left = (rows[0] + rows[-1] + 1 - side) // 2 - reach, (cols[0] + cols[-1] + 1 - side) // 2 - reach
    near = np.zeros_like(mask)
    near[max(0, top):top + side + 2 * reach, max(0, left):left + side + 2 * reach] = True
    if not (mask & ~near).any():
        return mask  # all the ink is near the strong ink (most images, at once)
    h, w = mask.shape
    k = -(-max(h, w) // BOX_CELLS)
    reached = _joined(_pooled(mask, k), _pooled(strong, k))
    kept = mask & (near | _unpooled(reached, k, mask.shape))
    return mask if int(mask.sum()) - int(kept.sum()) > BOX_LEAVE * int(kept.sum()) else kept


def _without_specks(strong: np.ndarray) -> np.ndarray:
    """The strong ink less what lies far from the rest, however dark: a speck of dust or a dot of the pen. The rest
    is the box that holds all but BOX_SPECKS of it at each side; what lies beyond BOX_REACH of that box's side
    from it leaves."""
    if not strong.any():
        return strong
    (r0, r1), (c0, c1) = _trimmed(strong.sum(1)), _trimmed(strong.sum(0))
    reach = int(BOX_REACH * (max(r1 - r0, c1 - c0) + 1))
    core = np.zeros_like(strong)
    core[max(0, r0 - reach):r1 + reach + 1, max(0, c0 - reach):c1 + reach + 1] = True
    return strong & core


def _trimmed(counts: np.ndarray) -> tuple[int, int]:
    """The first and the last index of `counts` (pixels in each row, or column) once BOX_SPECKS of their sum is
    left out at each end."""
    total = np.cumsum(counts)
    cut = BOX_SPECKS * float(total[-1])
    return int(np.searchsorted(total, cut, side="right")), int(np.searchsorted(total, total[-1] - cut, side="left"))


def _joined(cells: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """The cells joined to the seed's through cells (8 ways): grown a cell at a time until nothing more is reached."""
    reached = seed & cells
    while True:
        grown = (box3(reached.astype(np.uint8)) > 0) & cells
        if (grown == reached).all():
            return reached
        reached = grown


def _without_frame(mask: np.ndarray) -> np.ndarray:
    """mask less a frame drawn around the digit (a form's box, a border): the ink joined to the image's outer
    eighth, on cells of BOX_CELLS a side at most, where it is a thin rectangle's outline (every cell of it within a
    sixteenth of its box's side of the box's edge, and its ink along FRAME_SIDES of each side) and other ink, not
    joined to it, lies inside (RULING_DIGIT cells at least). A digit drawn as a box, a boxy 8 from edge to edge,
    or a ruled page's grid has no such outline with ink apart inside it, and keeps all its ink."""
    h, w = mask.shape
    k = -(-max(h, w) // BOX_CELLS)
    cells = _pooled(mask, k)
    band = max(1, min(cells.shape) // 8)
    edges = (np.s_[:band], np.s_[-band:], np.s_[:, :band], np.s_[:, -band:])
    if not all(cells[edge].any() for edge in edges):
        return mask  # a frame has ink along all four edges (most images have not: at once)
    ring = np.zeros_like(cells)
    for edge in edges:
        ring[edge] = True
    outer = _joined(cells, ring)
    if (cells & ~outer).sum() < RULING_DIGIT:
        return mask
    ys, xs = np.nonzero(outer)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    thick = max(2, min(y1 - y0, x1 - x0) // 16)
    if np.minimum(np.minimum(ys - y0, y1 - ys), np.minimum(xs - x0, x1 - xs)).max() > thick:
        return mask
    sides = (outer[y0:y0 + thick + 1, x0:x1 + 1].any(0), outer[max(0, y1 - thick):y1 + 1, x0:x1 + 1].any(0),
             outer[y0:y1 + 1, x0:x0 + thick + 1].any(1), outer[y0:y1 + 1, max(0, x1 - thick):x1 + 1].any(1))
    if min(side.mean() for side in sides) < FRAME_SIDES:
        return mask
    return mask & ~_unpooled(outer, k, mask.shape)


def _preprocess(source, name: str | None, label: str) -> np.ndarray:
    gray = unblocked(to_gray(open_image(source, name)))
    levels = ink_levels(gray)
    if (levels is None or levels[2] - levels[1] < FAINT_INK) and (faint := stretched(gray)) is not gray:
        levels = ink_levels(faint)
    if levels is None or not _enough(levels):
        raise NoDigitError(f"{label}: no digit found (the image has no ink).")
    gray, floor, top = levels
    gray = without_ruling(gray, floor, top)
    mask = _near_the_digit(_without_frame(_box_ink(gray, floor, top)), gray > floor + BOX_STRONG * (top - floor))
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows) or max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 < min(MIN_SIDE, *gray.shape):
        raise NoDigitError(f"{label}: no digit found (only specks).")
    crop = gray[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]  # the ink's box, at full resolution
    crop = np.clip((crop.astype(np.float32) - floor) / (top - floor), 0, 1)  # ink in [0, 1] on zero
    h, w = crop.shape
    scale = 20.0 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # Lanczos anti-aliasing; reducing_gap first shrinks large crops by whole factors (same look, far cheaper)
    small = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0),
                       dtype=np.float32)
    small = np.clip(small, 0, 1)
    peak = small.max()
    if 0 < peak < THIN_PEAK:  # a fine pen's strokes fade as the image shrinks: brought back to full ink
        small = small / peak
    if small.sum() <= 0:
        raise NoDigitError(f"{label}: no digit found (the ink vanishes at 20 pixels).")
    cy, cx = center_of_mass(small)
    top = int(np.clip(round(14 - cy), 0, 28 - small.shape[0]))
    left = int(np.clip(round(14 - cx), 0, 28 - small.shape[1]))
    out = np.zeros((28, 28), dtype=np.float32)
    out[top:top + small.shape[0], left:left + small.shape[1]] = small
    return np.round(out * 255).astype(np.uint8)


def image_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given, and the image files inside any folder given (sorted)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.iterdir() if f.suffix.lower() in image_suffixes() and f.is_file())
        else:
            found.append(p)
    return found


def preprocess_many(items: list[tuple[bytes | str, str]]) -> list[np.ndarray | str]:
    """preprocess() over (file bytes or path, name) pairs: each the 28x28 image, or the sentence saying why not.
    A worker's task when a folder is preprocessed in parallel: it lives here so that a worker
    process imports NumPy and Pillow alone, never torch."""
    quiet_decoder_warnings()
    out: list[np.ndarray | str] = []
    for data, name in items:
        try:
            out.append(preprocess(data, name))
        except MnistlabError as e:
            out.append(str(e))
    return out
