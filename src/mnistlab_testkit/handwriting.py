"""Synthetic "handwriting": digits drawn as pen strokes, in one writer's consistent style.

Each digit is a few strokes through control points in a unit box, in the forms MNIST's writers
use least (a 1 with a flag and a foot, a crossed 7, an open 4, a 9 with a straight stem).
A writer (a seed) fixes a slant, a width, a pen and a personal offset of every control point;
each sample then adds a little tremor and tilt. Dark ink on white paper, 64x64 PNG, as a
phone photo of a digit would be once cropped: predict's preprocessing makes it MNIST-like.
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

STROKES = {
    "0": [[(0.5 + 0.32 * np.sin(t), 0.5 - 0.45 * np.cos(t)) for t in np.linspace(0, 2 * np.pi, 13)]],
    "1": [[(0.3, 0.28), (0.55, 0.05), (0.55, 0.95)], [(0.3, 0.95), (0.8, 0.95)]],
    "2": [[(0.2, 0.25), (0.35, 0.05), (0.7, 0.05), (0.8, 0.3), (0.6, 0.6), (0.15, 0.95), (0.85, 0.95)]],
    "3": [[(0.2, 0.1), (0.7, 0.05), (0.75, 0.3), (0.4, 0.45), (0.8, 0.6), (0.75, 0.9), (0.2, 0.92)]],
    "4": [[(0.5, 0.05), (0.15, 0.65), (0.85, 0.65)], [(0.65, 0.35), (0.65, 0.98)]],
    "5": [[(0.8, 0.05), (0.3, 0.05), (0.25, 0.45), (0.7, 0.4), (0.8, 0.7), (0.6, 0.95), (0.2, 0.9)]],
    "6": [[(0.7, 0.05), (0.35, 0.35), (0.22, 0.7), (0.4, 0.95), (0.7, 0.9), (0.75, 0.65), (0.5, 0.5), (0.25, 0.65)]],
    "7": [[(0.15, 0.08), (0.85, 0.08), (0.4, 0.98)], [(0.3, 0.52), (0.75, 0.52)]],
    "8": [[(0.5, 0.5), (0.25, 0.3), (0.5, 0.05), (0.75, 0.3), (0.5, 0.5), (0.2, 0.75), (0.5, 0.97), (0.8, 0.75),
           (0.5, 0.5)]],
    "9": [[(0.75, 0.3), (0.5, 0.05), (0.25, 0.25), (0.45, 0.5), (0.75, 0.35)], [(0.75, 0.3), (0.7, 0.98)]],
}


def _smooth(points: np.ndarray, rounds: int = 3) -> np.ndarray:
    """Chaikin's corner cutting: a pen's curve through a polyline's corners."""
    for _ in range(rounds):
        q = 0.75 * points[:-1] + 0.25 * points[1:]
        r = 0.25 * points[:-1] + 0.75 * points[1:]
        points = np.concatenate([points[:1], np.stack([q, r], 1).reshape(-1, 2), points[-1:]])
    return points


class Writer:
    def __init__(self, seed: int, quirk: float = 0.1):
        rng = np.random.default_rng(seed)
        self.slant, self.width = rng.uniform(-0.35, 0.2), rng.uniform(0.65, 1.0)
        self.pen = rng.uniform(3.5, 6.0)
        self.quirk = quirk  # how far this writer strays from the model forms
        self.offsets = {d: [rng.normal(0, self.quirk, (len(s), 2)) for s in strokes] for d, strokes in STROKES.items()}

    def draw(self, digit: str, rng: np.random.Generator, side: int = 64) -> Image.Image:
        img = Image.new("L", (side, side), 255)
        d = ImageDraw.Draw(img)
        tilt = np.deg2rad(rng.normal(0, 4))
        rot = np.array([[np.cos(tilt), -np.sin(tilt)], [np.sin(tilt), np.cos(tilt)]])
        pen = max(2.0, self.pen + rng.normal(0, 0.6))
        for stroke, offset in zip(STROKES[digit], self.offsets[digit]):
            p = np.array(stroke) + offset + rng.normal(0, 0.02, offset.shape)
            p = _smooth(p) - 0.5
            p[:, 0] = p[:, 0] * self.width + self.slant * (0.5 - (p[:, 1] + 0.5))
            p = p @ rot.T
            xy = [(float(x), float(y)) for x, y in (p * 0.7 * side + side / 2)]
            d.line(xy, fill=0, width=int(round(pen)), joint="curve")
            for x, y in (xy[0], xy[-1]):
                d.ellipse((x - pen / 2, y - pen / 2, x + pen / 2, y + pen / 2), fill=0)
        return img.filter(ImageFilter.GaussianBlur(0.6))


def make_handwriting(root: Path, per_class: int, writer: int = 7, seed: int = 0) -> Path:
    """root/<digit>/NNN.png: `per_class` drawings of each digit by one writer."""
    w, rng = Writer(writer), np.random.default_rng(seed)
    for digit in STROKES:
        (root / digit).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w.draw(digit, rng).save(root / digit / f"{seed:02d}-{i:03d}.png")
    return root
