"""Digits rendered from fonts, mixed into MNIST training (`--synthetic-digits`): how people print,
write and photograph digits beyond MNIST's hands.

Each digit is drawn in a training font (`TRAIN_FONTS`) at a random size, weight (thickened with
Pillow's stroke, thinned by erosion, from hairline to very heavy), slant and slight turn; some
hollow (an outline drawn, the fill removed), some 7s crossed and 0s slashed as continental hands
write them (the 1 with a long flag comes with fonts such as Noto and Open Sans), some 1s one plain
stroke of any pen, as most people write a 1 and few fonts draw it, and some
rendered 8-16 pixels tall and enlarged, blocky or blurred. Each then goes through
`preprocessing.preprocess`, as an image given to `mnistlab predict` does, so the model trains on
what it will be shown.

`digit_set(n, seed, part)`: the "validation" part draws from about one in four of each family's
font files (`_validation_file`: by a checksum of the name; a family's files never all go), the
"train" part from the others, each part from its own random stream: the two never share a font
file, and so never an image. Sets are cached as .npz files in mnistlab's cache folder.
"""

from __future__ import annotations

import functools
import hashlib
import multiprocessing
import os
import warnings
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from ..errors import MnistlabError
from ..fileio import cache_dir, read_cache, write_cache
from . import preprocess as preprocessing
from .preprocess import NoDigitError, preprocess

FONT_ROOT = Path("/usr/share/fonts")
# The fonts the synthetic digits are drawn in, by family (globs under FONT_ROOT; a package not
# installed is skipped): the ones allowed for training. Every other font is held for judging
# mnistlab (its validation and test suites), and those of RESERVED_FONTS are checked never to be read.
TRAIN_FONTS: dict[str, tuple[str, ...]] = {
    "noto sans": ("truetype/noto/NotoSans-*.ttf", "truetype/noto/NotoSansDisplay-*.ttf"),
    "noto serif": ("truetype/noto/NotoSerif-*.ttf", "truetype/noto/NotoSerifDisplay-*.ttf"),
    "noto mono": ("truetype/noto/NotoSansMono-*.ttf", "truetype/noto/NotoMono-*.ttf"),
    "roboto": ("**/Roboto*.ttf",),
    "open sans": ("**/OpenSans*.ttf",),
    "klee": ("**/Klee*.ttf", "**/Klee*.otf"),
    "kristi": ("**/Kristi*.ttf",),
    "rufscript": ("**/Rufscript*.ttf",),
    "sjfonts": ("**/sjfonts/*.ttf",),
    "purisa": ("**/Purisa*.ttf", "**/Purisa*.otf"),
    "yozfont": ("**/*yozfont*/*.ttf", "**/*yozfont*/*.TTF", "**/yozvox*/*.ttf", "**/yozvox*/*.TTF"),
}
# The Debian package of each family, for a note that names what to install: the digits a run draws, and so its
# weights, depend on the families at hand.
TRAIN_FONT_PACKAGES = {"noto sans": "fonts-noto-core", "noto serif": "fonts-noto-core", "noto mono": "fonts-noto-core",
                       "roboto": "fonts-roboto-unhinted", "open sans": "fonts-open-sans",
                       "klee": "fonts-klee", "kristi": "fonts-kristi", "rufscript": "fonts-rufscript",
                       "sjfonts": "fonts-sjfonts", "purisa": "fonts-tlwg-purisa-ttf", "yozfont": "fonts-yozvox-yozfont"}
# Held for judging mnistlab (its validation and test suites), matched in a path lowercased without
# separators: never opened here.
RESERVED_FONTS = ("dejavu", "liberation", "urw", "nimbus", "texgyre", "freefont", "dkghandwriting", "breip",
                  "bwht", "femkeklaver", "humorsans", "comicneue", "dancingscript", "ecolier", "cabinsketch",
                  "cantarell", "hack", "jetbrains", "opendin", "charis", "garamond", "lato", "kaushan", "tomson",
                  "yusei", "seto", "kiloji", "leckerli", "joscelyn")
PARTS = ("train", "validation")
CANVAS = 80  # the large renderings' page: digits 34-50 pixels tall, room for slant and stroke
SMALL_SHARE = 0.2  # rendered 8-16 pixels tall, then enlarged
PLAIN_ONES = 0.3  # the share of 1s drawn as one straight stroke rather than in a font
CHUNK = 1000  # digits drawn by one worker at a time, from a random stream of their own
CACHE_VERSION = "1"  # part of the cache key, with this module's and preprocessing's source: bump for other changes


def digit_set(n: int, seed: int = 0, part: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """`n` font digits, uint8 [n, 28, 28] (ink high, as MNIST) and int64 labels 0-9 in equal shares;
    the same (n, seed, part) gives the same set, read from the cache after the first time."""

    path = cache_dir() / f"synthetic-{_key(n, seed, part)}.npz"
    cached = read_cache(path, {"images": (n, 28, 28), "labels": (n,)})
    if cached:
        return cached["images"], cached["labels"]
    images, labels = render_digits(n, seed, part)
    write_cache(path, {"images": images, "labels": labels})
    return images, labels


def render_digits(n: int, seed: int = 0, part: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """`digit_set` without the cache: every digit drawn now, in chunks of CHUNK, each from a random
    stream of its own (so the set is the same whatever the number of processes drawing it)."""
    part_fonts(part)  # the part checked, and the fonts found, before any worker starts
    stream = [seed, 0x5E7, PARTS.index(part)]  # a stream of its own for each part
    labels = np.random.default_rng(stream).permutation(np.arange(n) % 10).astype(np.int64)
    chunks = [(part, [*stream, i], labels[i:i + CHUNK]) for i in range(0, n, CHUNK)]
    workers = min(os.cpu_count() or 1, len(chunks))
    if workers < 2:
        parts = [_render_chunk(c) for c in chunks]
    else:
        # fork, as owndata's preprocessing does: the workers run NumPy and Pillow only
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
                parts = list(pool.map(_render_chunk, chunks))
    return (np.concatenate(parts) if parts else np.zeros((0, 28, 28), np.uint8)), labels


def _render_chunk(chunk: tuple[str, list[int], np.ndarray]) -> np.ndarray:
    part, stream, labels = chunk
    fonts, rng = part_fonts(part), np.random.default_rng(stream)
    return np.stack([_digit(str(label), fonts, rng) for label in labels])


def missing_packages() -> list[str]:
    """The Debian packages of the training font families that have no font file installed."""
    return sorted({TRAIN_FONT_PACKAGES[family] for family, globs in TRAIN_FONTS.items() if not _files(globs)})


def _files(globs: tuple[str, ...]) -> list[Path]:
    """A family's font files under FONT_ROOT, by name."""
    return sorted({p for g in globs for p in FONT_ROOT.glob(g) if p.is_file()}, key=lambda p: p.name)


@functools.cache
def part_fonts(part: str) -> dict[str, tuple[Path, ...]]:
    """The font files of a part, by family: those with all ten digits; each family's files split
    between the parts by `_validation_file`."""
    if part not in PARTS:
        raise MnistlabError(f"synthetic digits come in 'train' and 'validation' parts, not '{part}'.")
    found = {}
    for family, globs in TRAIN_FONTS.items():
        files = [p for p in _files(globs) if not _reserved(p) and _has_digits(p)]
        held = [p for p in files if _validation_file(p)]
        if len(held) == len(files):  # every family trains: a lone file stays on the training side
            held = []
        chosen = held if part == "validation" else [p for p in files if p not in held]
        if chosen:
            found[family] = tuple(chosen)
    if not found:
        raise MnistlabError(f"no fonts for the synthetic digits' {part} part: install Debian's fonts-noto-core "
                            f"(looked in {FONT_ROOT}).")
    return found


def _validation_file(path: Path) -> bool:
    """One font file in four, by a checksum of its name: the same split whatever else is installed."""
    return zlib.crc32(path.name.encode()) % 4 == 0


def _reserved(path: Path) -> bool:
    flat = str(path).lower().replace("-", "").replace("_", "").replace(" ", "")
    return any(name in flat for name in RESERVED_FONTS)


@functools.lru_cache(maxsize=256)
def _font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    assert not _reserved(path), path
    return ImageFont.truetype(str(path), size)


def _drawn(path: Path, char: str) -> np.ndarray:
    img = Image.new("L", (64, 64))
    ImageDraw.Draw(img).text((8, 8), char, font=_font(path, 40), fill=255)
    return np.asarray(img)


@functools.cache
def _missing(path: Path) -> np.ndarray:
    return _drawn(path, "\U0010fffd")  # a private-use code point: no font has a glyph for it


@functools.cache
def draws(path: Path, char: str) -> bool:
    """Whether the font draws `char` as a glyph of its own, not as its 'missing' box."""
    return not np.array_equal(_drawn(path, char), _missing(path))


@functools.cache
def _has_digits(path: Path) -> bool:
    return all(draws(path, d) for d in "0123456789")


@functools.cache
def _height_per_size(path: Path) -> float:
    """A digit's height in pixels per point of font size."""
    top, bottom = zip(*(_font(path, 100).getbbox(d)[1::2] for d in "0123456789"))
    return (np.median(bottom) - np.median(top)) / 100


def pick_font(fonts: dict[str, tuple[Path, ...]], rng: np.random.Generator) -> Path:
    """A family first, then one of its files: a family of many files weighs as much as one of a single file."""
    files = fonts[list(fonts)[rng.integers(len(fonts))]]
    return files[rng.integers(len(files))]


def _digit(digit: str, fonts: dict[str, tuple[Path, ...]], rng: np.random.Generator) -> np.ndarray:
    """One digit as preprocess makes it, drawn again until it has ink."""
    while True:
        path = pick_font(fonts, rng)
        if digit == "1" and rng.random() < PLAIN_ONES:
            img = _stroke(rng)
        else:
            img = _small(digit, path, rng) if rng.random() < SMALL_SHARE else _large(digit, path, rng)
        try:
            return preprocess(_slanted(img, rng))
        except NoDigitError:
            continue


def _text(digit: str, path: Path, height: float, canvas: int, stroke: int = 0, hollow: bool = False
          ) -> Image.Image:
    """The digit `height` pixels tall, dark on white in the middle of a square page; with `stroke`,
    thickened by that many pixels each side, or only that outline where `hollow`."""
    font = _font(path, max(4, round(height / _height_per_size(path))))
    img = Image.new("L", (canvas, canvas), 255)
    ImageDraw.Draw(img).text((canvas / 2, canvas / 2), digit, font=font, fill=255 if hollow else 0, anchor="mm",
                             stroke_width=stroke, stroke_fill=0)
    return img


def _small(digit: str, path: Path, rng: np.random.Generator) -> Image.Image:
    """Rendered 8-16 pixels tall, then enlarged 3-6 times: blocky, or blurred."""
    height = int(rng.integers(8, 17))
    img = _text(digit, path, height, canvas=2 * height + 8)
    resample = (Image.Resampling.NEAREST, Image.Resampling.BILINEAR, Image.Resampling.BICUBIC)[rng.integers(3)]
    return img.resize((img.width * int(rng.integers(3, 7)),) * 2, resample)


def _large(digit: str, path: Path, rng: np.random.Generator) -> Image.Image:
    """34-50 pixels tall, of a drawn weight: as the font has it, thicker, thinner, or hollow; 7s
    crossed and 0s slashed at times."""
    height = float(rng.uniform(34, 50))
    weight = rng.choice(["plain", "thick", "thin", "hollow"], p=[0.4, 0.25, 0.25, 0.1])
    if weight == "hollow":
        # outlines thick enough to stay lines when the digit is shrunk to 20 pixels: 1-3.5 pixels here
        return _text(digit, path, height, CANVAS, stroke=max(1, round(height * rng.uniform(0.03, 0.07))), hollow=True)
    stroke = int(rng.integers(1, max(2, round(0.14 * height)) + 1)) if weight == "thick" else 0
    mark = ("bar" if digit == "7" and rng.random() < 0.3 else
            "slash" if digit == "0" and rng.random() < 0.15 else None)
    passes = int(rng.integers(1, 4)) if weight == "thin" else 0
    plain = _marked(_text(digit, path, height, CANVAS), mark)
    if weight == "plain":
        return plain
    img = _marked(_text(digit, path, height, CANVAS, stroke=stroke), mark)
    for _ in range(passes):  # erosion of the dark ink: a 3x3 maximum on the light page
        img = img.filter(ImageFilter.MaxFilter(3))
    # a weight that closed a loop, broke a stroke or wore one away is not the same digit: the font's own then
    return img if _euler(_ink(img)) == _euler(_ink(plain)) and _ink(img).sum() > 0.25 * _ink(plain).sum() else plain


def _stroke(rng: np.random.Generator) -> Image.Image:
    """A 1 as one straight stroke, 34-50 pixels tall, of a pen from a hairline to a third of its height, its ends
    round (a pen's) or square (a font's)."""
    height = float(rng.uniform(34, 50))
    pen = max(1, round(height * rng.uniform(0.03, 0.33)))
    top, bottom = (CANVAS - height) / 2, (CANVAS + height) / 2
    img = Image.new("L", (CANVAS, CANVAS), 255)
    draw = ImageDraw.Draw(img)
    if rng.random() < 0.5:
        r = pen / 2
        top, bottom = top + r, bottom - r
        for y in (top, bottom):
            draw.ellipse((CANVAS / 2 - r, y - r, CANVAS / 2 + r, y + r), fill=0)
    draw.line([(CANVAS / 2, top), (CANVAS / 2, bottom)], fill=0, width=pen)
    return img


def _ink(img: Image.Image) -> np.ndarray:
    return np.asarray(img) < 128


def _euler(mask: np.ndarray) -> int:
    """Pieces minus holes of a binary image (8-connected), from its 2x2 windows (Gray's bit quads)."""
    p = np.pad(mask, 1).astype(np.int8)
    a, b, c, d = p[:-1, :-1], p[:-1, 1:], p[1:, :-1], p[1:, 1:]
    q = a + b + c + d
    diagonal = (q == 2) & (a == d)
    return int((np.sum(q == 1) - np.sum(q == 3) - 2 * np.sum(diagonal)) // 4)


def _marked(img: Image.Image, mark: str | None) -> Image.Image:
    """A continental mark drawn on: a 7's bar across the middle of its stem, or a 0's slash, as
    thick as the strokes."""
    ink = _ink(img)
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    if mark is None or not len(rows):
        return img
    top, bottom, left, right = rows[0], rows[-1], cols[0], cols[-1]
    middle = (top + bottom) // 2
    across = np.flatnonzero(ink[middle])
    if not len(across):
        return img
    width = max(2, int(0.8 * (across[-1] - across[0] + 1)) if mark == "bar" else _stroke_width(ink[middle]))
    draw = ImageDraw.Draw(img)
    if mark == "bar":  # the stem is the ink across the middle row
        centre, half = (across[0] + across[-1]) / 2, 0.3 * (right - left)
        draw.line([(centre - half, middle), (centre + half, middle)], fill=0, width=width)
    else:
        w, h = right - left, bottom - top
        draw.line([(left + 0.22 * w, bottom - 0.12 * h), (right - 0.22 * w, top + 0.12 * h)], fill=0, width=width)
    return img


def _stroke_width(row: np.ndarray) -> int:
    """The first run of ink along a row: across a 0's middle, the width of its left stroke."""
    run = np.flatnonzero(row)
    breaks = np.flatnonzero(np.diff(run) > 1)
    return int(breaks[0] + 1 if len(breaks) else len(run))


def _slanted(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Slanted (a shear of up to 0.35, on three in five digits) and turned by up to 8 degrees, about the middle."""
    shear = float(rng.uniform(-0.35, 0.35)) if rng.random() < 0.6 else 0.0
    angle = np.radians(rng.uniform(-8, 8))
    cos, sin = np.cos(angle), np.sin(angle)
    # the page position each output pixel reads: a turn, then the shear (x' = x + shear * y)
    m = np.array([[1, shear], [0, 1]]) @ np.array([[cos, -sin], [sin, cos]])
    cx, cy = img.width / 2, img.height / 2
    data = (m[0, 0], m[0, 1], cx - m[0, 0] * cx - m[0, 1] * cy, m[1, 0], m[1, 1], cy - m[1, 0] * cx - m[1, 1] * cy)
    return img.transform(img.size, Image.Transform.AFFINE, data, Image.Resampling.BILINEAR, fillcolor=255)


def _key(n: int, seed: int, part: str) -> str:
    """What the set is made of: a change to the fonts, this module or the preprocessing makes it anew."""
    h = hashlib.blake2b(f"{CACHE_VERSION} {n} {seed} {part} {Image.__version__}".encode(), digest_size=12)
    h.update(font_digest())
    for module in (__file__, preprocessing.__file__):
        h.update(Path(module).read_bytes())
    return h.hexdigest()


def font_digest() -> bytes:
    """The font files that any part may draw from, by path and size, before their digits are checked (part_fonts,
    which takes a while): part of the key of a cache of drawings in them, so that a font installed or removed makes
    the drawings anew."""
    h = hashlib.blake2b(digest_size=16)
    for path in sorted(p for globs in TRAIN_FONTS.values() for p in _files(globs) if not _reserved(p)):
        h.update(f"{path} {path.stat().st_size}".encode())
    return h.digest()


class SyntheticBatches:
    """`--synthetic-digits`: that share of each training batch replaced by font digits with their
    labels, drawn from a pool held on the device; the draw a pure function of (seed, step, stream),
    as the epoch order is: resuming is exact."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, share: float, loader, seed: int, stream: int = 0):
        import torch

        self.images = torch.from_numpy(images).to(loader.images.device)
        self.labels = torch.from_numpy(labels).to(loader.labels.device)
        self.share, self.loader, self.seed, self.stream = share, loader, seed, stream

    def mix(self, x, y, step: int):
        """(x, y) with the last `share` of the batch swapped for synthetic digits."""
        import torch

        k = round(self.share * len(y))
        if not k:
            return x, y
        # its own stream: the augmentation's and the outliers' generators are seeded by seed and step alone
        state = int(np.random.SeedSequence([self.seed, step, self.stream, 0x5E7]).generate_state(1, np.uint64)[0])
        g = torch.Generator().manual_seed(state)
        pick = torch.randint(len(self.images), (k,), generator=g).to(self.images.device)
        keep = len(y) - k
        return (torch.cat([x[:keep], self.loader.normalize(self.images[pick])]),
                torch.cat([y[:keep], self.labels[pick].to(y.dtype)]))
