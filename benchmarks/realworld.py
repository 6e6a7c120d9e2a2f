"""Real-world inputs, as a gate: does a model read digits the way people give them?

    python benchmarks/realworld.py [--model robust-real] [--n 500] [--seed 0] [--sets printed,edge,...]
                                   [--data-dir ../shared/data] [--json PATH] [--save-images DIR]

Thirteen sets of `--n` images each, made here from a seed, as PNG files. Each file takes the path of
`mnistlab predict FILE`: preprocessing of the file's bytes, then the model with its reject threshold.
Each image ends in one of four outcomes: accepted and right, accepted and wrong, rejected ("not a
digit") or unreadable ("no digit found": preprocessing raised NoDigitError).

- printed: digits in the suite's printed fonts, 8 to 200 px tall, on canvases of varied size and
  margin; black on white, some on grey or coloured paper in coloured ink.
- handwriting-fonts: digits in the suite's handwriting-like fonts, slightly turned; a fifth of them
  cropped to the ink, with no margin at all.
- mnist-tight: MNIST validation digits cropped to their ink and scaled up to 64-200 px, dark on
  white, as a person's scan.
- mnist-small: MNIST validation digits shrunk to 8-16 px tall and scaled back up (low resolution),
  some of them blurred.
- mnist-pens: MNIST validation digits at 280x280, written with a very thick or a hairline pen.
- drawings: the ten digits drawn with a mouse on a white 280x280 page, black round-capped strokes of
  6, 18 or 40 px, from small in a corner to filling the page; continental forms among them.
- photos: printed and drawn digits as a phone photographs them: blur, sensor noise, low JPEG quality,
  faint pencil, uneven light or a shadow, a tilted or turned page, grey paper.
- edge: ink on the image's edge: 7s whose bar is 0-12 px from the top, digits filling the image,
  digits cut off by 1-3 px at one side.
- lined: handwritten (MNIST validation) and printed digits on ruled or squared paper, as in an
  exercise book: light blue, grey or dark lines, spaced about a digit's height, half of the pages
  then photographed.
- fine-pens: the drawings' digits written with a pen of 1-3 px on pages 150-800 px tall (a drawing
  program's finest brush, a fine pen scanned): strokes under a tenth of a pixel at 20 px.
- dust: MNIST validation digits on a page with 1-3 specks of dust or dots of the pen, as dark as the ink,
  away from the digit (more than a third of its height), as a scanner or a pen leaves them.
- mnist-8px: MNIST validation digits as old low-resolution scans of handwriting keep them: 8x8 pixels of 17
  grey levels (the ink counted in 4x4 blocks of a 32x32 black-and-white image), dark on white or light on
  black, a fifth with the 17 levels as they are (0-16 apart, not scaled to 0-255), enlarged to 16-256 px by
  repeating pixels (half of them), bilinear or bicubic; a third with paper added around after.
- non-digits: letters (not O, o, I, l, i), symbols, scribbles and shapes, in the suite's fonts and
  drawn: the share rejected is the score.

Only this project's own sources are used. MNIST digits come from the validation split that every
shipped model holds out of the training file (the first VAL_SIZE of its fixed permutation); the
test file is never read. The fonts are PRINTED_FONTS and HANDWRITING_FONTS, none of which the
training outliers or augmentations use; fonts reserved for judging mnistlab (NEVER_READ) are
refused even if a glob should find them. A missing font package is skipped with a note.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import string
import sys
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont, features

from mnistlab.data.own import load_split
from mnistlab.data.preprocess import NoDigitError
from mnistlab.inference import Classifier, load_model
from mnistlab_testkit.hard_inputs import low_resolution_scan

REPO = Path(__file__).resolve().parents[1]
FONT_ROOT = Path("/usr/share/fonts")
# Debian package -> a glob under FONT_ROOT. Fonts of neither list train any model (those are Noto,
# Roboto, Open Sans, Klee, Kristi, Rufscript, sjfonts, Purisa and yozfont).
PRINTED_FONTS = {
    "fonts-freefont-ttf": "truetype/freefont/Free*.ttf",
    "fonts-cantarell": "opentype/cantarell/Cantarell-*.otf",
    "fonts-hack": "truetype/hack/Hack-*.ttf",
    "fonts-jetbrains-mono": "truetype/jetbrains-mono/JetBrainsMono-*.ttf",
    "fonts-opendin": "truetype/opendin/*.ttf",
    "fonts-sil-charis": "truetype/charis/Charis*.ttf",
    "fonts-ebgaramond": "opentype/ebgaramond/EBGaramond*.otf",
    "fonts-lato": "truetype/lato/Lato-*.ttf",
}
HANDWRITING_FONTS = {
    "fonts-kaushanscript": "opentype/kaushanscript/*.otf",
    "fonts-tomsontalks": "truetype/tomsontalks/*.ttf",
    "fonts-yusei-magic": "truetype/yusei-magic/*.ttf",
    "fonts-seto": "truetype/seto/*.ttf",
    "fonts-kiloji": "truetype/kiloji/*.ttf",
    "fonts-leckerli-one": "truetype/leckerli-one/*.ttf",
    "fonts-joscelyn": "opentype/joscelyn/*.otf",
}
# hairline weights all but vanish at the small sizes: nobody sets digits to be read in them
TOO_LIGHT = ("hairline", "thin", "extralight")
# calligraphic old-style digits that, standing alone, read as letters (an o, a dotless i): left out
READ_AS_LETTERS = {"Joscelyn-Regular": "01"}
# lining figures where a font has both (EB Garamond's default old-style 1 is a small capital I);
# Pillow needs libraqm to choose them
LINING = ["lnum"] if features.check("raqm") else None
# reserved for judging mnistlab, or used in training: a path holding any of these is never opened
NEVER_READ = ("dejavu", "liberation", "urw", "nimbus", "base35", "gsfonts", "texgyre", "dkg-handwriting", "breip",
              "bwht", "femkeklaver", "humor", "comic", "dancing", "ecolier", "cabin",
              "noto", "roboto", "opensans", "open-sans", "plex", "klee", "kristi", "rufscript", "sjfonts", "purisa",
              "tlwg", "yozvox", "yozfont")
SETS = ("printed", "handwriting-fonts", "mnist-tight", "mnist-small", "mnist-pens", "drawings", "photos", "edge",
        "lined", "fine-pens", "dust", "mnist-8px", "non-digits")
NON_DIGIT_SETS = ("non-digits",)
OUTCOMES = ("right", "wrong", "rejected", "unreadable")
VAL_SIZE = 5000  # the validation split of every shipped model and of the benchmarks
CANVAS = 280  # the drawing page's side, as on mnistlab's own page
BRUSHES = (6, 18, 40)
LETTERS = "".join(c for c in string.ascii_letters if c not in "OoIli")  # the five left out are read as 0 and 1
SYMBOLS = "@#%&*+=?!<>{}[]~^$€£¥§¶©®µß"
NO_SUCH_CHAR = "\U000f0000"  # private use: a font draws its "missing" box (or nothing) for it


def arc(cx: float, cy: float, rx: float, ry: float, start: float, stop: float) -> list[tuple[float, float]]:
    """Points along an ellipse from angle `start` to `stop` in degrees (0 right, 90 down: y grows downwards)."""
    t = np.deg2rad(np.linspace(start, stop, max(3, int(abs(stop - start) / 20) + 1)))
    return [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in t]


# Each digit's forms, each a list of pen strokes through points in a unit box (y down). A corner is
# where one stroke ends and the next begins; smoothing rounds everything else.
DIGITS: dict[int, list[list[list[tuple[float, float]]]]] = {
    0: [[arc(0.5, 0.5, 0.4, 0.5, -90, 285)],
        [arc(0.5, 0.5, 0.4, 0.5, -90, 285), [(0.8, 0.1), (0.2, 0.9)]],  # slashed
        [arc(0.5, 0.5, 0.4, 0.5, -100, 275), [(0.5, 0.5)]]],  # dotted
    1: [[[(0.5, 0.0), (0.48, 1.0)]],
        [[(0.1, 0.42), (0.55, 0.0)], [(0.55, 0.0), (0.5, 1.0)]],  # a long flag
        [[(0.2, 0.3), (0.55, 0.0)], [(0.55, 0.0), (0.52, 1.0)], [(0.2, 1.0), (0.85, 1.0)]]],  # flag and foot
    2: [[arc(0.5, 0.3, 0.38, 0.3, 200, 370) + [(0.08, 1.0)], [(0.08, 1.0), (0.92, 1.0)]],
        [arc(0.5, 0.28, 0.38, 0.28, 190, 380) + [(0.3, 0.8), (0.1, 1.0), (0.5, 0.95), (0.95, 1.0)]]],
    3: [[arc(0.48, 0.25, 0.34, 0.25, 200, 450) + arc(0.48, 0.74, 0.4, 0.26, 270, 520)],
        [[(0.12, 0.0), (0.85, 0.0)], [(0.85, 0.0), (0.42, 0.4)], arc(0.48, 0.69, 0.4, 0.31, 250, 520)]],  # flat top
    4: [[[(0.62, 0.0), (0.06, 0.66)], [(0.06, 0.66), (0.95, 0.66)], [(0.68, 0.0), (0.68, 1.0)]],
        [[(0.2, 0.0), (0.1, 0.6)], [(0.1, 0.6), (0.92, 0.6)], [(0.7, 0.18), (0.7, 1.0)]]],  # open top
    5: [[[(0.85, 0.0), (0.22, 0.0)], [(0.22, 0.0), (0.18, 0.45)], arc(0.47, 0.7, 0.4, 0.3, 235, 520)],
        [[(0.22, 0.02), (0.18, 0.45)], arc(0.47, 0.7, 0.4, 0.3, 235, 520), [(0.22, 0.0), (0.85, 0.03)]]],
    6: [[[(0.8, 0.0), (0.45, 0.15), (0.22, 0.5)] + arc(0.5, 0.76, 0.29, 0.24, 180, -160)]],
    7: [[[(0.08, 0.0), (0.92, 0.0)], [(0.92, 0.0), (0.35, 1.0)]],
        [[(0.08, 0.0), (0.92, 0.0)], [(0.92, 0.0), (0.35, 1.0)], [(0.35, 0.52), (0.88, 0.5)]],  # crossed
        [[(0.05, 0.12), (0.1, 0.0), (0.92, 0.02)], [(0.92, 0.02), (0.6, 0.45), (0.45, 1.0)]]],
    8: [[[(0.75, 0.15), (0.5, 0.0), (0.25, 0.16), (0.35, 0.38), (0.5, 0.5), (0.76, 0.66), (0.8, 0.86),
          (0.5, 1.0), (0.2, 0.86), (0.25, 0.66), (0.5, 0.5), (0.68, 0.35), (0.75, 0.15)]],
        [arc(0.5, 0.24, 0.27, 0.24, -90, 275), arc(0.5, 0.74, 0.34, 0.26, -90, 275)]],
    9: [[arc(0.45, 0.28, 0.32, 0.28, 0, -360) + [(0.74, 1.0)]],
        [arc(0.45, 0.28, 0.32, 0.28, 10, -350), [(0.77, 0.28), (0.75, 0.75), (0.6, 0.98), (0.3, 0.95)]]],
}
# Letters and shapes for the non-digit set, drawn the same way.
DRAWN_OTHERS: list[list[list[tuple[float, float]]]] = [
    [[(0.0, 1.0), (0.5, 0.0)], [(0.5, 0.0), (1.0, 1.0)], [(0.22, 0.6), (0.78, 0.6)]],  # A
    [[(0.9, 0.0), (0.1, 0.0)], [(0.1, 0.0), (0.1, 1.0)], [(0.1, 1.0), (0.9, 1.0)], [(0.1, 0.5), (0.7, 0.5)]],  # E
    [[(0.1, 0.0), (0.1, 1.0)], [(0.9, 0.0), (0.9, 1.0)], [(0.1, 0.5), (0.9, 0.5)]],  # H
    [[(0.1, 0.0), (0.1, 1.0)], [(0.9, 0.0), (0.12, 0.55)], [(0.35, 0.4), (0.95, 1.0)]],  # K
    [[(0.0, 1.0), (0.1, 0.0)], [(0.1, 0.0), (0.5, 0.7)], [(0.5, 0.7), (0.9, 0.0)], [(0.9, 0.0), (1.0, 1.0)]],  # M
    [[(0.1, 1.0), (0.1, 0.0)], [(0.1, 0.0), (0.9, 1.0)], [(0.9, 1.0), (0.9, 0.0)]],  # N
    [[(0.0, 0.0), (0.25, 1.0)], [(0.25, 1.0), (0.5, 0.3)], [(0.5, 0.3), (0.75, 1.0)], [(0.75, 1.0), (1.0, 0.0)]],  # W
    [[(0.0, 0.0), (1.0, 1.0)], [(1.0, 0.0), (0.0, 1.0)]],  # X
    [[(0.0, 0.0), (0.5, 0.5)], [(1.0, 0.0), (0.5, 0.5)], [(0.5, 0.5), (0.5, 1.0)]],  # Y
    [[(0.0, 0.0), (1.0, 0.0)], [(1.0, 0.0), (1.0, 1.0)], [(1.0, 1.0), (0.0, 1.0)], [(0.0, 1.0), (0.0, 0.0)]],  # square
    [[(0.5, 0.0), (1.0, 1.0)], [(1.0, 1.0), (0.0, 1.0)], [(0.0, 1.0), (0.5, 0.0)]],  # triangle
    [[(0.5, 0.0), (0.8, 1.0)], [(0.8, 1.0), (0.0, 0.38)], [(0.0, 0.38), (1.0, 0.38)], [(1.0, 0.38), (0.2, 1.0)],
     [(0.2, 1.0), (0.5, 0.0)]],  # star
    [[(0.0, 0.5), (1.0, 0.5)], [(0.65, 0.15), (1.0, 0.5)], [(1.0, 0.5), (0.65, 0.85)]],  # arrow
    [[(0.3, 0.0), (0.3, 1.0)], [(0.7, 0.0), (0.7, 1.0)], [(0.0, 0.3), (1.0, 0.3)], [(0.0, 0.7), (1.0, 0.7)]],  # #
    [[(0.0, 0.55), (0.35, 1.0)], [(0.35, 1.0), (1.0, 0.0)]],  # a tick
    [[(0.0, 0.3), (0.2, 0.7), (0.4, 0.3), (0.6, 0.7), (0.8, 0.3), (1.0, 0.7)]],  # zigzag
    [arc(0.5, 0.5, 0.5, 0.5, 0, 365), [(0.33, 0.35)], [(0.67, 0.35)], arc(0.5, 0.55, 0.25, 0.22, 20, 160)],  # smiley
    [[(0.5, 0.3), (0.3, 0.0), (0.0, 0.25), (0.5, 1.0)], [(0.5, 0.3), (0.7, 0.0), (1.0, 0.25), (0.5, 1.0)]],  # heart
]


def find_fonts(table: dict[str, str]) -> tuple[list[Path], list[str]]:
    """(the font files that a table's globs find, a note for each package that has none installed)."""
    found, notes = [], []
    for package, pattern in table.items():
        paths = sorted(p for p in FONT_ROOT.glob(pattern) if not any(w in p.stem.lower() for w in TOO_LIGHT))
        if not paths:
            notes.append(f"{package} is not installed (apt-get install {package}): its fonts are skipped")
        found += paths
    refused = [str(p) for p in found if any(w in str(p).lower() for w in NEVER_READ)]
    if refused:
        raise RuntimeError(f"refusing fonts kept out of this suite: {', '.join(refused)}")
    return found, notes


class Fonts:
    """Font files opened once per size, and which characters each really draws."""

    def __init__(self) -> None:
        self._open: dict[tuple[Path, int], ImageFont.FreeTypeFont] = {}
        self._draws: dict[tuple[Path, str], bool] = {}
        self._height: dict[tuple[Path, str], int] = {}

    def font(self, path: Path, size: int) -> ImageFont.FreeTypeFont:
        if (path, size) not in self._open:
            self._open[path, size] = ImageFont.truetype(str(path), size)
        return self._open[path, size]

    def draws(self, path: Path, char: str) -> bool:
        """Whether the font has a glyph for `char`: it draws ink, and not the box it draws for a missing one."""
        if (path, char) not in self._draws:
            font = self.font(path, 64)
            ink, missing = text_ink(font, char), text_ink(font, NO_SUCH_CHAR)
            self._draws[path, char] = ink is not None and not (
                missing is not None and ink.size == missing.size and ink.tobytes() == missing.tobytes())
        return self._draws[path, char]

    def usable(self, char: str, paths: list[Path]) -> list[Path]:
        return [p for p in paths if self.draws(p, char) and char not in READ_AS_LETTERS.get(p.stem, "")]

    def pick(self, rng: np.random.Generator, char: str, paths: list[Path]) -> Path | None:
        usable = self.usable(char, paths)
        return usable[rng.integers(len(usable))] if usable else None

    def ink(self, path: Path, char: str, height: int) -> Image.Image:
        """`char` in the font at the size that makes its ink about `height` pixels tall: a tight mask."""
        if (path, char) not in self._height:
            ink = text_ink(self.font(path, 100), char)
            self._height[path, char] = ink.height if ink else 100
        size = max(4, round(height * 100 / self._height[path, char]))
        return text_ink(self.font(path, size), char) or Image.new("L", (1, 1), 0)


def text_ink(font: ImageFont.FreeTypeFont, char: str) -> Image.Image | None:
    """A character's ink as a mask cropped to it (255 = full ink), or None where it draws nothing."""
    left, top, right, bottom = (int(v) for v in font.getbbox(char, features=LINING))
    if right <= left or bottom <= top:
        return None
    img = Image.new("L", (right - left + 4, bottom - top + 4), 0)
    ImageDraw.Draw(img).text((2 - left, 2 - top), char, font=font, fill=255, features=LINING)
    box = img.getbbox()
    return img.crop(box) if box else None


def tight(mask: Image.Image) -> Image.Image:
    box = mask.getbbox()
    return mask.crop(box) if box else mask


def turned(mask: Image.Image, degrees: float) -> Image.Image:
    return tight(mask.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True))


def log_uniform(rng: np.random.Generator, low: float, high: float) -> int:
    return int(round(np.exp(rng.uniform(np.log(low), np.log(high)))))


def paper_and_pen(rng: np.random.Generator, plain: float = 0.7) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Paper and ink colours: mostly black on white; else grey paper, or tinted paper in coloured ink."""
    r = rng.random()
    if r < plain:
        return (int(rng.integers(238, 256)),) * 3, (int(rng.integers(0, 50)),) * 3
    if r < (1 + plain) / 2:
        return (int(rng.integers(165, 216)),) * 3, (int(rng.integers(0, 40)),) * 3
    return tuple(int(v) for v in rng.integers(195, 256, 3)), tuple(int(v) for v in rng.integers(0, 111, 3))


def margins(rng: np.random.Generator, ink: Image.Image, low: float, high: float) -> tuple[int, ...]:
    """Left, top, right, bottom margins, each a random share of the ink's height."""
    return tuple(int(v) for v in rng.uniform(low, high, 4) * max(ink.height, 8) + 1)


def on_paper(ink: Image.Image, around: tuple[int, ...], paper=(255, 255, 255), pen=(0, 0, 0)) -> Image.Image:
    """The ink mask in `pen` on a sheet of `paper` with margins `around` (left, top, right, bottom); a
    negative margin cuts that many pixels of the ink off."""
    left, top, right, bottom = around
    img = Image.new("RGB", (max(1, left + ink.width + right), max(1, top + ink.height + bottom)), paper)
    img.paste(Image.new("RGB", ink.size, pen), (left, top), ink)
    return img


def chaikin(points: np.ndarray, rounds: int = 3) -> np.ndarray:
    """Corner cutting: the smooth curve a hand draws through a polyline's points, its ends kept."""
    for _ in range(rounds):
        q, r = 0.75 * points[:-1] + 0.25 * points[1:], 0.25 * points[:-1] + 0.75 * points[1:]
        points = np.concatenate([points[:1], np.stack([q, r], 1).reshape(-1, 2), points[-1:]])
    return points


def pen_strokes(shape: list, rng: np.random.Generator, wobble: float = 0.025) -> list[np.ndarray]:
    """A form's strokes as one hand draws them once: every point a little off, the whole slanted (mostly
    forwards, as most hands lean), narrowed and turned, then smoothed."""
    slant, width, angle = rng.uniform(-0.1, 0.3), rng.uniform(0.7, 1.05), np.deg2rad(rng.normal(0, 5))
    turn = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    out = []
    for stroke in shape:
        p = np.asarray(stroke, float) + rng.normal(0, wobble, (len(stroke), 2))
        p = np.stack([(p[:, 0] - 0.5) * width + slant * (0.5 - p[:, 1]), p[:, 1] - 0.5], 1) @ turn
        out.append(chaikin(p))
    return out


def scribble(rng: np.random.Generator) -> list[np.ndarray]:
    return [chaikin(rng.uniform(0, 1, (int(rng.integers(5, 13)), 2)))]


def aspect(strokes: list[np.ndarray]) -> float:
    span = np.ptp(np.concatenate(strokes), axis=0)
    return float(span[0] / max(span[1], 1e-6))


def stroke_ink(strokes: list[np.ndarray], width: int, height: int, brush: int) -> Image.Image:
    """The strokes drawn with a round brush so that their ink just fills a width x height box (a mask);
    drawn at twice the size and reduced, for the smooth edges of a canvas's anti-aliasing."""
    pts = np.concatenate(strokes)
    low, span = pts.min(0), np.maximum(np.ptp(pts, axis=0), 1e-6)
    inner = np.maximum(np.array([width, height], float) - brush, 0)
    img = Image.new("L", (2 * width, 2 * height), 0)
    d, r = ImageDraw.Draw(img), brush  # r: the brush's radius at twice the size
    for s in strokes:
        xy = [(float(x), float(y)) for x, y in 2 * ((s - low) / span * inner + brush / 2)]
        d.line(xy, fill=255, width=2 * brush, joint="curve")
        for x, y in (xy[0], xy[-1]):  # round caps
            d.ellipse((x - r, y - r, x + r, y + r), fill=255)
    return img.reduce(2)


def drawn_ink(strokes: list[np.ndarray], height: int, brush: int, limit: int = CANVAS,
              stretch: bool = False) -> Image.Image:
    """A drawing's ink `height` px tall (less where it would be wider than `limit`), at its natural
    width, or `limit` wide with `stretch`."""
    width = limit if stretch else round(brush + aspect(strokes) * (height - brush))
    if width > limit:
        height, width = max(brush + 1, round(brush + (limit - brush) / aspect(strokes))), limit
    return stroke_ink(strokes, max(width, brush), height, brush)


def page(ink: Image.Image, rng: np.random.Generator, where: str) -> Image.Image:
    """A drawing's ink (at most the page's size) on the white page: near a corner, or anywhere."""
    room = (CANVAS - ink.width, CANVAS - ink.height)
    if where == "corner":
        gap = rng.integers(4, 25, 2)
        x, y = (int(min(g, r) if rng.random() < 0.5 else max(0, r - g)) for g, r in zip(gap, room))
    else:
        x, y = int(rng.integers(0, room[0] + 1)), int(rng.integers(0, room[1] + 1))
    return on_paper(ink, (x, y, room[0] - x, room[1] - y))


def drawing(rng: np.random.Generator, shape: list, tall: bool = True) -> Image.Image:
    """A form drawn with the mouse on the white 280x280 page: a brush of 6, 18 or 40 px, small in a
    corner, anywhere, or filling the page (ink touching the top and bottom, and the sides for wide forms)."""
    strokes, brush = pen_strokes(shape, rng), int(rng.choice(BRUSHES))
    where = str(rng.choice(["corner", "middle", "fill"], p=[0.25, 0.5, 0.25]))
    smallest = max(5 * brush, 40)  # five brush widths: the loops of a 0, 6 or 8 stay open
    if where == "fill":
        ink = drawn_ink(strokes, CANVAS, brush, stretch=tall and aspect(strokes) > 0.7 and rng.random() < 0.5)
    else:
        height = int(rng.integers(smallest, max(smallest, 120 if where == "corner" else 250) + 1))
        ink = drawn_ink(strokes, height, brush)
    return page(ink, rng, where)


def photographed(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A sheet as a phone sees it: at least two of a tilted page, grey paper, faint pencil, uneven light
    or a shadow, blur, sensor noise and JPEG, in the order a camera adds them."""
    effects = rng.random(7) < (0.5, 0.4, 0.35, 0.55, 0.5, 0.6, 0.45)
    while effects.sum() < 2:
        effects[rng.integers(7)] = True
    tilt, grey, faint, light, blur, noise, jpeg = effects
    img = img.convert("RGB")
    paper = img.getpixel((0, 0))
    side = min(img.size)
    if tilt:
        img = tilted(img, rng, paper)
    a = np.asarray(img, np.float32)
    if grey:  # grey paper, or white paper in dim light
        a = a * rng.uniform(0.62, 0.85)
    if faint:  # a pencil: the ink lies only a little below the paper
        top = a.max((0, 1))
        a = top - (top - a) * rng.uniform(0.3, 0.55)
    if light:
        a = a * uneven_light(a.shape[:2], rng)[..., None]
    img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    if blur:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.004, 0.015) * side + 0.4))
    if noise:
        noisy = np.asarray(img, np.float32) + rng.normal(0, rng.uniform(2, 9), (img.height, img.width, 3))
        img = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    if jpeg:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=int(rng.integers(10, 36)))
        img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return img


def ruled(sheet: Image.Image, rng: np.random.Generator, height: int) -> Image.Image:
    """The sheet's paper ruled (lines about 1-1.6 digits apart) or squared (0.45-1 digit), in light blue, grey or
    dark lines of 1-3 px, under the ink (a line is drawn only where it is darker than the page)."""
    squared = rng.random() < 0.5
    step = max(6, round(height * (rng.uniform(0.45, 1.0) if squared else rng.uniform(1.0, 1.6))))
    width = int(np.clip(round(height / 60 * rng.uniform(0.6, 1.6)), 1, 3))
    r = rng.random()
    colour = (tuple(int(v) for v in (rng.integers(140, 201), rng.integers(170, 221), rng.integers(225, 256)))
              if r < 0.6 else (int(rng.integers(120, 201)),) * 3 if r < 0.9 else (int(rng.integers(40, 111)),) * 3)
    lines = Image.new("RGB", sheet.size, (255, 255, 255))
    draw = ImageDraw.Draw(lines)
    w, h = sheet.size
    for y in range(int(rng.integers(0, step)), h, step):
        draw.line([(0, y), (w, y)], fill=colour, width=width)
    for x in range(int(rng.integers(0, step)), w, step) if squared else ():
        draw.line([(x, 0), (x, h)], fill=colour, width=width)
    if not squared and rng.random() < 0.3:  # the margin's red line
        x = int(rng.integers(0, w))
        draw.line([(x, 0), (x, h)], fill=(230, 80, 80), width=width)
    a = np.asarray(sheet, np.float32) * np.asarray(lines, np.float32) / 255  # printed lines darken paper and ink alike
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def tilted(img: Image.Image, rng: np.random.Generator, paper) -> Image.Image:
    """The page turned a little, or seen at a slant (its corners moved by up to 7% of its size)."""
    if rng.random() < 0.5:
        return img.rotate(rng.uniform(-10, 10), resample=Image.Resampling.BICUBIC, fillcolor=paper)
    w, h = img.size
    out = np.array([(0, 0), (w, 0), (w, h), (0, h)], float)
    src = out + rng.uniform(-0.07, 0.07, (4, 2)) * (w, h)
    rows = []
    for (x, y), (u, v) in zip(out, src):  # the perspective that maps each output corner to a moved one
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
    coeffs = np.linalg.solve(np.array(rows), src.ravel())
    return img.transform(img.size, Image.Transform.PERSPECTIVE, tuple(coeffs), Image.Resampling.BICUBIC,
                         fillcolor=paper)


def uneven_light(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Light across the page: falling off towards one side (a lamp), or a soft-edged shadow over part of it."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]] / max(shape)
    a = rng.uniform(0, 2 * np.pi)
    d = np.cos(a) * xx + np.sin(a) * yy
    d = (d - d.min()) / max(np.ptp(d), 1e-6)
    if rng.random() < 0.5:
        return 1 - rng.uniform(0.2, 0.45) * d
    edge, soft = rng.uniform(0.3, 0.8), rng.uniform(0.02, 0.1)
    return 1 - rng.uniform(0.25, 0.45) / (1 + np.exp(-(d - edge) / soft))


def thinning_tables() -> tuple[np.ndarray, np.ndarray]:
    """Zhang and Suen's two rules for removing a pixel, as tables over the 256 neighbourhoods it can have."""
    bits = (np.arange(256)[:, None] >> np.arange(8)) & 1  # neighbours N, NE, E, SE, S, SW, W, NW
    n, s = bits.sum(1), ((bits == 0) & (np.roll(bits, -1, 1) == 1)).sum(1)
    p2, _, p4, _, p6, _, p8, _ = bits.T
    removable = (n >= 2) & (n <= 6) & (s == 1)
    return (removable & (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0),
            removable & (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0))


THINNING = thinning_tables()


def thinned(mask: np.ndarray) -> np.ndarray:
    """Zhang and Suen's thinning: the one-pixel skeleton of a boolean mask."""
    m = mask.astype(np.uint8)
    h, w = m.shape
    steps = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))
    changed = True
    while changed:
        changed = False
        for table in THINNING:
            p = np.pad(m, 1)
            code = sum(p[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] << k for k, (dy, dx) in enumerate(steps))
            gone = table[code] & (m == 1)
            if gone.any():
                m[gone], changed = 0, True
    return m.astype(bool)


class Builder:
    """What the sets are made from: the fonts, and the MNIST validation digits where a set needs them."""

    def __init__(self, data_dir, sets: tuple[str, ...]) -> None:
        self.fonts = Fonts()
        self.print_fonts, printed_notes = find_fonts(PRINTED_FONTS)
        self.hand_fonts, handwriting_notes = find_fonts(HANDWRITING_FONTS)
        self.notes = printed_notes + handwriting_notes
        self.digits = self.labels = np.zeros(0)
        if any(s.startswith("mnist-") or s in ("lined", "dust") for s in sets):
            root = data_dir or os.environ.get("MNISTLAB_DATA") or REPO.parent / "shared" / "data"
            images, labels = load_split("mnist", "validation", root, val_size=VAL_SIZE, download=False)
            self.digits, self.labels = images.numpy(), labels.numpy()
        self.order = np.zeros(0, int)

    def makes(self, name: str) -> str | None:
        """Why a set cannot be made here (None if it can)."""
        fonts = {"printed": self.print_fonts, "handwriting-fonts": self.hand_fonts}.get(name)
        if fonts is None:
            return None
        lacking = [d for d in string.digits if not self.fonts.usable(d, fonts)]
        return f"no installed font draws {', '.join(lacking)}" if lacking else None

    def build(self, name: str, n: int, seed: int) -> list[tuple[bytes, int | None]]:
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        # drawn for every set, MNIST's or not, so that a set's images are the same whichever others are built
        self.order = rng.permutation(VAL_SIZE)
        make = getattr(self, name.replace("-", "_"))
        return [(png(img), label) for img, label in (make(rng, i) for i in range(n))]

    def font_digit(self, rng: np.random.Generator, label: int, fonts: list[Path], low: int,
                   high: int) -> Image.Image | None:
        """The digit in one of `fonts`, its ink `low` to `high` px tall (None where none of them draws it)."""
        path = self.fonts.pick(rng, str(label), fonts)
        return None if path is None else self.fonts.ink(path, str(label), log_uniform(rng, low, high))

    def printed(self, rng: np.random.Generator, i: int):
        ink = self.font_digit(rng, i % 10, self.print_fonts, 8, 200)
        assert ink is not None, "makes() found a font for every digit"
        return on_paper(ink, margins(rng, ink, 0.1, 1.5), *paper_and_pen(rng)), i % 10

    def handwriting_fonts(self, rng: np.random.Generator, i: int):
        ink = self.font_digit(rng, i % 10, self.hand_fonts, 24, 160)
        assert ink is not None, "makes() found a font for every digit"
        ink = turned(ink, rng.normal(0, 3))
        around = (0, 0, 0, 0) if i % 5 == 0 else margins(rng, ink, 0.1, 1.0)
        return on_paper(ink, around, *paper_and_pen(rng, plain=0.8)), i % 10

    def mnist_ink(self, i: int) -> tuple[Image.Image, int]:
        """The i-th validation digit of this set's order, cropped to its ink."""
        k = self.order[i % len(self.order)]
        return tight(Image.fromarray(self.digits[k])), int(self.labels[k])

    def mnist_tight(self, rng: np.random.Generator, i: int):
        ink, label = self.mnist_ink(i)
        height = int(rng.integers(64, 201))
        ink = ink.resize((max(1, round(ink.width * height / ink.height)), height), Image.Resampling.LANCZOS)
        ink = ink.point(lambda v: min(255, int(v * 1.4)))  # a scanned pen's core is solid
        return on_paper(ink, (0, 0, 0, 0), *paper_and_pen(rng, plain=0.9)), label

    def mnist_small(self, rng: np.random.Generator, i: int):
        ink, label = self.mnist_ink(i)
        small = int(rng.integers(8, 17))
        ink = ink.resize((max(1, round(ink.width * small / ink.height)), small), Image.Resampling.BOX)
        height = int(rng.integers(64, 201))
        resample = Image.Resampling.NEAREST if rng.random() < 0.5 else Image.Resampling.BILINEAR
        ink = ink.resize((max(1, round(ink.width * height / small)), height), resample)
        if rng.random() < 0.4:
            ink = ink.filter(ImageFilter.GaussianBlur(rng.uniform(0.25, 0.55) * height / small))
        return on_paper(ink, margins(rng, ink, 0.1, 0.6), *paper_and_pen(rng, plain=0.9)), label

    def mnist_pens(self, rng: np.random.Generator, i: int):
        """A thick marker (the ink dilated) or a hairline pen (the digit's skeleton, 2-4 px wide) at 280x280."""
        k = self.order[i % len(self.order)]
        digit = Image.fromarray(self.digits[k])
        if i % 2:
            shape = np.asarray(digit.resize((140, 140), Image.Resampling.BICUBIC)) > 110
            skeleton = Image.fromarray(thinned(shape).astype(np.uint8) * 255)
            line = skeleton.resize((CANVAS, CANVAS), Image.Resampling.NEAREST)
            ink = line.filter(ImageFilter.MaxFilter(int(rng.choice([1, 3])))).filter(ImageFilter.GaussianBlur(0.6))
        else:
            big = digit.resize((CANVAS, CANVAS), Image.Resampling.BICUBIC).point(lambda v: 255 * (v > 100))
            pen = int(rng.choice([9, 13, 17]))
            ink = big.filter(ImageFilter.MaxFilter(pen)).filter(ImageFilter.GaussianBlur(1))
        return on_paper(ink, (0, 0, 0, 0)), int(self.labels[k])

    def drawings(self, rng: np.random.Generator, i: int):
        forms = DIGITS[i % 10]
        return drawing(rng, forms[rng.integers(len(forms))], tall=i % 10 != 1), i % 10

    def fine_pens(self, rng: np.random.Generator, i: int):
        forms = DIGITS[i % 10]
        strokes, pen = pen_strokes(forms[rng.integers(len(forms))], rng), int(rng.integers(1, 4))
        height = int(rng.integers(150, 801))
        width = max(pen, round(pen + aspect(strokes) * (height - pen)))
        ink = stroke_ink(strokes, width, height, pen)
        return on_paper(ink, margins(rng, ink, 0.05, 0.5), *paper_and_pen(rng, plain=0.8)), i % 10

    def dust(self, rng: np.random.Generator, i: int):
        ink, label = self.mnist_ink(i)
        height = int(rng.integers(40, 151))
        ink = ink.resize((max(1, round(ink.width * height / ink.height)), height), Image.Resampling.LANCZOS)
        paper, pen = paper_and_pen(rng, plain=0.8)
        around = margins(rng, ink, 0.6, 2.0)
        sheet = on_paper(ink, around, paper, pen)
        draw, away = ImageDraw.Draw(sheet), height // 3
        for _ in range(int(rng.integers(1, 4))):
            r = int(rng.integers(1, max(2, max(sheet.size) // 100) + 1))
            x, y = int(rng.integers(r, sheet.width - r)), int(rng.integers(r, sheet.height - r))
            if not (around[0] - away < x < around[0] + ink.width + away and
                    around[1] - away < y < around[1] + ink.height + away):
                draw.ellipse([x - r, y - r, x + r, y + r], fill=pen)
        return sheet, label

    def photos(self, rng: np.random.Generator, i: int):
        label = i % 10
        ink = self.font_digit(rng, label, self.print_fonts, 30, 200) if i % 2 else None
        if ink:
            sheet = on_paper(ink, margins(rng, ink, 0.2, 1.0), *paper_and_pen(rng, plain=0.85))
        else:
            sheet = self.drawings(rng, label)[0]
        return photographed(sheet, rng), label

    def edge(self, rng: np.random.Generator, i: int):
        """A 7 whose bar is 0-12 px from the top; a digit filling its image; a digit cut off at one side."""
        kind, label = i % 3, 7 if i % 3 == 0 else i % 10
        ink = self.font_digit(rng, label, self.print_fonts + self.hand_fonts, 40, 200) if rng.random() < 0.5 else None
        if ink is None:
            forms = DIGITS[label]
            brush = int(rng.choice(BRUSHES[:2]))
            ink = drawn_ink(pen_strokes(forms[rng.integers(len(forms))], rng), int(rng.integers(5 * brush, 241)), brush)
        around = list(margins(rng, ink, 0.1, 0.6))
        if kind == 0:
            around[1] = int(rng.integers(0, 13))
        elif kind == 1:
            around = [int(v) for v in rng.integers(0, 3, 4)]
        else:
            around[rng.integers(4)] = -int(rng.integers(1, 4))
        return on_paper(ink, tuple(around), *paper_and_pen(rng, plain=0.9)), label

    def lined(self, rng: np.random.Generator, i: int):
        """A digit, handwritten (3 in 5) or printed, on ruled or squared paper, several lines showing; half
        of the pages photographed."""
        if i % 5 < 3:
            ink, label = self.mnist_ink(i)
            height = int(rng.integers(40, 161))
            ink = ink.resize((max(1, round(ink.width * height / ink.height)), height), Image.Resampling.LANCZOS)
            ink = ink.point(lambda v: min(255, int(v * 1.4)))
        else:
            label = i % 10
            ink = self.font_digit(rng, label, self.print_fonts, 30, 160)
            assert ink is not None, "makes() found a font for every digit"
        paper, pen = paper_and_pen(rng, plain=0.8)
        sheet = on_paper(ink, margins(rng, ink, 0.6, 2.0), paper, pen)
        return (photographed(ruled(sheet, rng, ink.height), rng) if i % 2 else ruled(sheet, rng, ink.height)), label

    def mnist_8px(self, rng: np.random.Generator, i: int):
        k = self.order[i % len(self.order)]
        light = rng.random() < 0.5
        depth = 16 if rng.random() < 0.2 else 255  # a fifth: the scan's 17 levels as they are, not scaled to 0-255
        small = low_resolution_scan(self.digits[k], depth=depth)
        small, paper = (255 - small, 0) if light else (small, 255)
        side = log_uniform(rng, 16, 256)
        r = rng.random()
        resample = (Image.Resampling.NEAREST if r < 0.5 else
                    Image.Resampling.BILINEAR if r < 0.75 else Image.Resampling.BICUBIC)
        img = Image.fromarray(small).resize((side, side), resample)
        if rng.random() < 1 / 3:
            margin = int(rng.integers(1, side // 2 + 1))
            sheet = Image.new("L", (side + 2 * margin,) * 2, paper)
            sheet.paste(img, (margin, margin))
            img = sheet
        return img, int(self.labels[k])

    def non_digits(self, rng: np.random.Generator, i: int):
        """A letter or symbol in the suite's fonts, or a drawn letter, shape or scribble."""
        r = rng.random()
        chars = LETTERS if r < 0.35 else SYMBOLS
        char = chars[rng.integers(len(chars))]
        path = self.fonts.pick(rng, char, self.print_fonts + self.hand_fonts) if r < 0.5 else None
        if path:
            ink = turned(self.fonts.ink(path, char, log_uniform(rng, 20, 180)), rng.normal(0, 3))
            return on_paper(ink, margins(rng, ink, 0.1, 1.0), *paper_and_pen(rng)), None
        if r < 0.8:
            return drawing(rng, DRAWN_OTHERS[rng.integers(len(DRAWN_OTHERS))]), None
        strokes, brush = scribble(rng), int(rng.choice(BRUSHES))
        return page(drawn_ink(strokes, int(rng.integers(max(4 * brush, 60), 261)), brush), rng, "middle"), None


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def build_suite(n: int = 500, seed: int = 0, data_dir: str | os.PathLike | None = None,
                sets: tuple[str, ...] | list[str] = SETS) -> dict[str, list[tuple[bytes, int | None]]]:
    """Each set's `n` images as (PNG bytes, digit or None for a non-digit), the same for the same seed.
    A set whose fonts are not installed is left out, with a note on stderr."""
    unknown = [s for s in sets if s not in SETS]
    if unknown:
        raise ValueError(f"unknown set {', '.join(unknown)}; choose from {', '.join(SETS)}")
    builder = Builder(data_dir, tuple(sets))
    for note in builder.notes:
        print(f"note: {note}", file=sys.stderr)
    suite = {}
    for name in sets:
        why = builder.makes(name)
        if why:
            print(f"note: set {name} skipped: {why}", file=sys.stderr)
            continue
        suite[name] = builder.build(name, n, seed)
    return suite


def score(model: Classifier, suite: dict[str, list[tuple[bytes, int | None]]]) -> dict:
    """Per set: n, each outcome's count and share, the five commonest misreads as [true, read, count]
    (true None: a non-digit accepted as that digit), and the outcomes per true digit."""
    results = {}
    for name, items in suite.items():
        counts: Counter = Counter()
        misreads: Counter = Counter()
        per_digit: dict[int, Counter] = {}
        for k, (data, label) in enumerate(items):
            try:
                pred = model.predict(data, name=f"{name}[{k}]")
            except NoDigitError:
                outcome = "unreadable"
            else:
                if pred.rejected:
                    outcome = "rejected"
                elif label is not None and pred.label == str(label):
                    outcome = "right"
                else:
                    outcome = "wrong"
                    misreads[label, pred.label] += 1
            counts[outcome] += 1
            if label is not None:
                per_digit.setdefault(label, Counter())[outcome] += 1
        n = len(items)
        results[name] = {"n": n, **{o: counts[o] for o in OUTCOMES},
                         "shares": {o: counts[o] / n if n else 0.0 for o in OUTCOMES},
                         "misreads": [[t, p, c] for (t, p), c in misreads.most_common(5)],
                         "per_digit": {str(d): {o: c[o] for o in OUTCOMES} for d, c in sorted(per_digit.items())}}
    return results


def share(count: int, n: int) -> str:
    return f"{count}/{n} = {100 * count / n:.2f}%" if n else "–"


def table(results: dict) -> str:
    lines = ['| set | n | accepted and right | accepted, wrong | rejected ("not a digit") | '
             'unreadable ("no digit found") |', "|---|---|---|---|---|---|"]
    for name, r in results.items():
        right = "–" if name in NON_DIGIT_SETS else share(r["right"], r["n"])
        lines.append(f"| {name} | {r['n']} | {right} | {share(r['wrong'], r['n'])} | "
                     f"{share(r['rejected'], r['n'])} | {share(r['unreadable'], r['n'])} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="robust-real", help="a pretrained name or a model file")
    p.add_argument("--n", type=int, default=500, help="images per set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sets", default=",".join(SETS), help="a comma list of: " + ", ".join(SETS))
    p.add_argument("--data-dir", help="MNIST's folder (else $MNISTLAB_DATA, else ../shared/data)")
    p.add_argument("--json", metavar="PATH", help="write every figure here")
    p.add_argument("--save-images", metavar="DIR", help="write each set's PNGs to DIR/SET/")
    args = p.parse_args()
    sets = [s for s in args.sets.split(",") if s]
    if any(s not in SETS for s in sets):
        p.error(f"--sets: choose from {', '.join(SETS)}")
    from common import machine

    print(f"machine: {machine()}")
    suite = build_suite(args.n, args.seed, args.data_dir, sets)
    if args.save_images:
        for name, items in suite.items():
            folder = Path(args.save_images) / name
            folder.mkdir(parents=True, exist_ok=True)
            for k, (data, label) in enumerate(items):
                (folder / f"{k:04d}-{'x' if label is None else label}.png").write_bytes(data)
    model = load_model(args.model)
    card = model.card
    print(f"model: {model.name}; reject: {card.reject_score or 'none'} below {card.reject_threshold}; "
          f"{args.n} images per set, seed {args.seed}\n")
    results = score(model, suite)
    print(table(results))
    for name in NON_DIGIT_SETS:
        if name in results:
            print(f"\n{name}: {100 * results[name]['shares']['rejected']:.2f}% rejected as not a digit "
                  f"(the score: higher is better), {100 * results[name]['shares']['wrong']:.2f}% read as a digit")
    if args.json:
        fonts = {"printed": [str(f) for f in find_fonts(PRINTED_FONTS)[0]],
                 "handwriting": [str(f) for f in find_fonts(HANDWRITING_FONTS)[0]],
                 "notes": find_fonts(PRINTED_FONTS)[1] + find_fonts(HANDWRITING_FONTS)[1]}
        out = {"model": args.model, "name": model.name, "reject_score": card.reject_score,
               "reject_threshold": card.reject_threshold, "n": args.n, "seed": args.seed, "fonts": fonts,
               "sets": results}
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
