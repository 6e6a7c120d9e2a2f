"""Made-up non-digits: what outlier exposure trains on, what validation chooses the "not a digit"
score with, and the separate sets that judge it.

Training and validation outliers (`outlier_set`), four families in equal shares:
  letters and symbols rendered from fonts of Debian's fonts-noto-core (Noto Sans, Serif, Mono) and
  fonts-droid-fallback (CJK characters), with Pillow's own font where none is installed; random
  scribbles; smooth noise (blurred random fields, sparse dots); Fashion-MNIST's training images
  (Debian's dataset-fashion-mnist), the first 55,000 for training, the last 5,000 for validation.
  A fifth is drawn when a run names it: `lettering`, letters and symbols in the fonts that the font
  digits use (handwriting-like ones among them).
Judging (`evaluation_sets`), nothing of which the outliers use: Fashion-MNIST's test images;
letters in fonts-freefont-ttf's fonts (held out); uniform and Gaussian noise, pixel by pixel.
The DejaVu, URW base35 and Liberation fonts are never read: they are kept for judging mnistlab.

Rendered characters go through `preprocessing.preprocess`, as an image given to `mnistlab predict`
does. Letters that are digits in many hands (O, o, I, l) are left out; so are | and /. So is any drawn
outlier that comes out as one lone stroke (`is_stroke`: an apostrophe, a "!", a "]" or a "\\" in many fonts),
which is how most people write a 1.
"""

from __future__ import annotations

import functools
import hashlib
import string
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from ..errors import MnistlabError
from ..fileio import cache_dir, code_digest, read_cache, write_cache
from .preprocess import NoDigitError, preprocess

FONT_DIR = Path("/usr/share/fonts/truetype")
RESERVED_FONTS = ("dejavu", "liberation", "urw", "nimbus", "base35")  # for judging mnistlab: never read
TRAIN_FONTS = ("noto/NotoSans-Regular.ttf", "noto/NotoSans-Bold.ttf", "noto/NotoSans-Italic.ttf",
               "noto/NotoSans-BoldItalic.ttf", "noto/NotoSerif-Regular.ttf", "noto/NotoSerif-Bold.ttf",
               "noto/NotoSerif-Italic.ttf", "noto/NotoSerif-BoldItalic.ttf", "noto/NotoSansMono-Regular.ttf",
               "noto/NotoSansMono-Bold.ttf")
CJK_FONT = "droid/DroidSansFallbackFull.ttf"
EVAL_FONTS = tuple(f"freefont/Free{family}{style}.ttf" for family, styles in
                   (("Sans", ("", "Bold", "Oblique", "BoldOblique")), ("Serif", ("", "Bold", "Italic", "BoldItalic")),
                    ("Mono", ("", "Bold", "Oblique", "BoldOblique"))) for style in styles)
LETTERS = "".join(c for c in string.ascii_letters if c not in "OoIl")
SYMBOLS = "@#$%&*+=?!<>{}[]()~^\\;:\"'§¶€£¥©®µß"
CJK = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可"
# The ratio of the ink's principal axes from which an image is a lone stroke: 92% of MNIST's training 1s reach it,
# and at most 0.3% of any other digit's images.
STROKE_ELONGATION = 4.0
FASHION_TRAIN = 55_000  # Fashion-MNIST's training images before this are training outliers, after it validation
CANVAS = 112
# The families of made-up non-digits that outlier exposure draws, in drawing order; a run draws the first four
# unless it names others (--outlier-families).
FAMILIES = ("characters", "scribbles", "noise", "fashion", "lettering")
DEFAULT_FAMILIES = FAMILIES[:4]


def family_names(text: str) -> tuple[str, ...]:
    """The outlier families of a comma-separated list."""
    return tuple(f.strip() for f in text.split(",") if f.strip())


def check_families(families: tuple[str, ...] | list[str]) -> None:
    """One sentence for an outlier family that does not exist, or none at all."""
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise MnistlabError(f"--outlier-families takes some of {', '.join(FAMILIES)}, "
                            f"not {', '.join(unknown) if unknown else 'none'}.")


def outlier_set(part: str, n: int, seed: int = 0, data_dir=None,
                families: str | tuple[str, ...] = DEFAULT_FAMILIES) -> np.ndarray:
    """`n` outliers, uint8 [n, 28, 28] (ink high), for "train" (outlier exposure) or "validation"
    (choosing the score, fitting nothing else): equal shares of the `families` (by default font
    characters, scribbles, smooth noise and Fashion-MNIST training images). Seeded; the two parts
    never share an image. Read from the cache after the first time."""
    if part not in ("train", "validation"):
        raise MnistlabError(f"outliers come in 'train' and 'validation' parts, not '{part}'.")
    families = family_names(families) if isinstance(families, str) else families
    check_families(families)
    chosen = [f for f in FAMILIES if f in families]
    path = cache_dir() / f"outliers-{_key(part, n, seed, chosen)}.npz"
    cached = read_cache(path, {"images": (n, 28, 28)})
    if cached:
        return cached["images"]
    images = _make(part, n, seed, data_dir, chosen)
    write_cache(path, {"images": images})
    return images


def _make(part: str, n: int, seed: int, data_dir, chosen: list[str]) -> np.ndarray:
    rng = np.random.default_rng([seed, 0 if part == "train" else 1])
    shares = dict(zip(chosen, (n // len(chosen) + (i < n % len(chosen)) for i in range(len(chosen)))))
    makers = {"characters": characters, "scribbles": scribbles, "noise": smooth_noise,
              "fashion": lambda k, rng: _fashion_part(part, k, rng, data_dir),
              "lettering": lambda k, rng: lettering(k, rng, part)}
    out = np.concatenate([makers[f](shares[f], rng) for f in chosen])
    return out[rng.permutation(len(out))]


def _key(part: str, n: int, seed: int, families: list[str]) -> str:
    """What the set is made of: a change to the fonts, to Pillow or to the code that draws and preprocesses it
    makes it anew (Fashion-MNIST's images are the same in every copy)."""
    from .synthetic import font_digest

    h = hashlib.blake2b(f"{part} {n} {seed} {','.join(families)} {Image.__version__} {STROKE_ELONGATION}".encode(),
                        digest_size=12)
    h.update(code_digest(Path(__file__).parent))
    for path in sorted([*_fonts(TRAIN_FONTS), *_fonts((CJK_FONT,))]):
        h.update(f"{path} {path.stat().st_size}".encode())
    if "lettering" in families:  # in the font digits' fonts
        h.update(font_digest())
    return h.hexdigest()


def _fashion_part(part: str, n: int, rng: np.random.Generator, data_dir) -> np.ndarray:
    """n Fashion-MNIST training images: the first FASHION_TRAIN for training, the rest for validation."""
    fashion = _fashion(data_dir)
    pool = np.arange(FASHION_TRAIN) if part == "train" else np.arange(FASHION_TRAIN, len(fashion))
    return fashion[rng.choice(pool, n, replace=len(pool) < n)]


def evaluation_sets(seed: int = 0, n: int = 2000, data_dir=None) -> dict[str, np.ndarray]:
    """The sets that judge a reject score, none of them used by `outlier_set`: name -> uint8 [N, 28, 28]."""
    from .own import load_split

    rng = np.random.default_rng([seed, 2])
    fashion_test, _ = load_split("fashion-mnist", "test", data_dir)
    fonts = _fonts(EVAL_FONTS)
    if not fonts:
        raise MnistlabError(f"no held-out fonts: install Debian's fonts-freefont-ttf (looked in {FONT_DIR}/freefont).")
    letters = np.stack([img for font in fonts for c in LETTERS for img in [_render(c, font, rng)] if img is not None])
    gauss = np.clip(rng.normal(128, 64, (n, 28, 28)), 0, 255)
    return {"fashion-mnist test": fashion_test.numpy(), "letters, held-out fonts": letters,
            "uniform noise": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
            "gaussian noise": np.round(gauss).astype(np.uint8)}


def characters(n: int, rng: np.random.Generator) -> np.ndarray:
    """Letters and symbols in the training fonts (CJK characters in the Droid fallback font), each
    at a random size, slant, rotation and stroke weight."""
    fonts: list = _fonts(TRAIN_FONTS) or [None]  # None: Pillow's own font, where no Debian font is installed
    cjk = _fonts((CJK_FONT,))
    out: list[np.ndarray] = []
    while len(out) < n:
        if cjk and rng.random() < 0.15:
            img = _render(CJK[rng.integers(len(CJK))], cjk[0], rng, jitter=True)
        else:
            chars = LETTERS + SYMBOLS
            img = _render(chars[rng.integers(len(chars))], fonts[rng.integers(len(fonts))], rng, jitter=True)
        if img is not None:
            out.append(img)
    return np.stack(out) if out else np.zeros((0, 28, 28), np.uint8)


def lettering(n: int, rng: np.random.Generator, part: str = "train") -> np.ndarray:
    """Letters and symbols in the fonts that the font digits are drawn in (synthetic.part_fonts: the same
    part's files), handwriting-like ones among them, so that a hand's style is no cue for "digit". The font is
    picked as the font digits' are; a character the font lacks is drawn again."""
    from .synthetic import draws, part_fonts, pick_font

    fonts, chars = part_fonts(part), LETTERS + SYMBOLS
    out: list[np.ndarray] = []
    while len(out) < n:
        path = pick_font(fonts, rng)
        char = chars[rng.integers(len(chars))]
        img = _render(char, path, rng, jitter=True) if draws(path, char) else None
        if img is not None:
            out.append(img)
    return np.stack(out) if out else np.zeros((0, 28, 28), np.uint8)


def scribbles(n: int, rng: np.random.Generator) -> np.ndarray:
    """Random pen strokes through 6 to 12 points spread over the page, of random width."""
    out: list[np.ndarray] = []
    while len(out) < n:
        img = Image.new("L", (CANVAS, CANVAS), 255)
        points = rng.uniform(8, CANVAS - 8, (rng.integers(6, 13), 2))
        ImageDraw.Draw(img).line([tuple(p) for p in _smooth(points)], fill=0, width=int(rng.integers(4, 14)),
                                 joint="curve")
        px = _mnist(img)
        if px is not None:
            out.append(px)
    return np.stack(out) if out else np.zeros((0, 28, 28), np.uint8)


def smooth_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Blurred random fields (blobs of ink) and sparse dots: noise unlike the pixel-by-pixel uniform
    and Gaussian noise that judges."""
    half = n // 2
    coarse = rng.uniform(0, 1, (half, 1, 6, 6))
    blobs = np.stack([np.asarray(Image.fromarray(c[0].astype(np.float32)).resize((28, 28), Image.Resampling.BICUBIC))
                      for c in coarse]) if half else np.zeros((0, 28, 28))
    blobs = np.clip((blobs - rng.uniform(0.3, 0.7, (half, 1, 1))) * 4, 0, 1) * 255
    dots: np.ndarray = (rng.random((n - half, 28, 28)) < rng.uniform(0.02, 0.15, (n - half, 1, 1))) * rng.integers(
        128, 256, (n - half, 28, 28))
    dots = np.stack([np.asarray(Image.fromarray(d.astype(np.uint8)).filter(ImageFilter.MaxFilter(3))) for d in dots]
                    ) if n - half else np.zeros((0, 28, 28))
    return np.concatenate([blobs, dots]).round().astype(np.uint8)


def _render(char: str, font_path, rng: np.random.Generator, jitter: bool = False) -> np.ndarray | None:
    """One character, dark on white as a person would give it, through mnistlab's preprocessing
    (None where the font has no visible glyph for it)."""
    size = int(rng.integers(56, 80)) if jitter else 68
    font = _font(font_path, size)
    img = Image.new("L", (CANVAS, CANVAS), 255)
    stroke = int(rng.integers(0, 4)) if jitter else 0
    ImageDraw.Draw(img).text((CANVAS / 2, CANVAS / 2), char, font=font, fill=0, anchor="mm",
                             stroke_width=stroke, stroke_fill=0)
    if jitter:
        img = img.rotate(float(rng.uniform(-20, 20)), resample=Image.Resampling.BILINEAR, fillcolor=255)
    return _mnist(img)


def is_stroke(image: np.ndarray) -> bool:
    """Whether an image's ink [H, W] is one lone stroke: the ratio of its principal axes (the square root of
    the ratio of its second moments' eigenvalues) at least STROKE_ELONGATION."""
    ink = image.astype(np.float64)
    mass = ink.sum()
    if not mass:
        return False
    ys, xs = np.mgrid[: ink.shape[0], : ink.shape[1]]
    dy, dx = ys - (ink * ys).sum() / mass, xs - (ink * xs).sum() / mass
    a, b, c = ((ink * u * v).sum() / mass for u, v in ((dy, dy), (dy, dx), (dx, dx)))
    spread = np.hypot((a - c) / 2, b)
    long, short = (a + c) / 2 + spread, (a + c) / 2 - spread
    return bool(long >= STROKE_ELONGATION ** 2 * max(short, 1e-9))


def _mnist(img: Image.Image) -> np.ndarray | None:
    """The drawn outlier as preprocessing gives it to a model, or None where there is no ink or it is a stroke."""
    try:
        image = preprocess(img)
    except NoDigitError:
        return None
    return None if is_stroke(image) else image


@functools.lru_cache(maxsize=64)
def _font(path, size: int):
    return ImageFont.load_default(size) if path is None else ImageFont.truetype(str(path), size)


def _fonts(names) -> list[Path]:
    found = [FONT_DIR / name for name in names if (FONT_DIR / name).is_file()]
    assert not any(r in str(p).lower() for p in found for r in RESERVED_FONTS)
    return found


@functools.lru_cache(maxsize=2)
def _fashion_cached(data_dir) -> np.ndarray:
    from .own import load_split

    images, _ = load_split("fashion-mnist", "train", data_dir)
    return images.numpy()


def _fashion(data_dir) -> np.ndarray:
    return _fashion_cached(None if data_dir is None else str(data_dir))


def _smooth(points: np.ndarray, steps: int = 8) -> np.ndarray:
    """A Chaikin-like smoothing of a polyline: quadratic curves through the midpoints."""
    mids = (points[1:] + points[:-1]) / 2
    t = np.linspace(0, 1, steps)[:, None]
    curve = [points[:1]]
    for a, b, c in zip(mids[:-1], points[1:-1], mids[1:]):
        curve.append((1 - t) ** 2 * a + 2 * (1 - t) * t * b + t ** 2 * c)
    curve.append(points[-1:])
    return np.concatenate(curve)


class OutlierBatches:
    """Outlier exposure's share of each training batch: `per_batch` outliers drawn from a pool held on
    the device, the draw a pure function of (seed, step), as the epoch order is: resuming is exact."""

    def __init__(self, images: np.ndarray, per_batch: int, normalize, seed: int, device="cpu"):
        """`normalize`: uint8 images [N, 28, 28] -> the model's input, as its digits are normalised."""
        import torch

        self.images = torch.from_numpy(images).to(device)
        self.per_batch, self.normalize, self.seed = per_batch, normalize, seed

    def mix(self, x, y, step: int):
        """(x, y) with the outliers appended, labelled -1 (heads.Head.loss reads -1 as 'not a digit')."""
        import torch

        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step + 1)
        pick = torch.randint(len(self.images), (self.per_batch,), generator=g).to(self.images.device)
        return (torch.cat([x, self.normalize(self.images[pick])]),
                torch.cat([y, torch.full((self.per_batch,), -1, dtype=y.dtype, device=y.device)]))
