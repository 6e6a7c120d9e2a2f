"""Test helpers: small datasets of one's own in each layout mnistlab reads (class folders, Kaggle CSV, npz)."""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("ring", "bar", "seven")


def drawing(shape: str, rng: np.random.Generator, side: int = 64) -> Image.Image:
    """Dark strokes on white paper, jittered so that no two drawings are the same."""
    img = Image.new("L", (side, side), 255)
    d = ImageDraw.Draw(img)
    x0, y0 = rng.integers(6, 16, 2)
    x1, y1 = side - rng.integers(6, 16, 2)
    w = int(rng.integers(3, 7))
    if shape == "ring":
        d.ellipse((x0, y0, x1, y1), outline=0, width=w)
    elif shape == "bar":
        x = int(rng.integers(side // 2 - 6, side // 2 + 6))
        d.line((x, y0, x + int(rng.integers(-6, 7)), y1), fill=0, width=w)
    else:
        d.line((x0, y0, x1, y0, x0 + int(rng.integers(0, 10)), y1), fill=0, width=w)
    return img


def make_folder(root: Path, counts: dict[str, int], seed: int = 0, suffix: str = ".png") -> Path:
    """root/<class>/NNN.png for each class (a shape of SHAPES each, in order) and count."""
    rng = np.random.default_rng(seed)
    for shape, (name, n) in zip(SHAPES, counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            drawing(shape, rng).save(root / name / f"{i:03d}{suffix}")
    return root


def kaggle_rows(images: np.ndarray, labels: np.ndarray | None) -> str:
    """The text of Kaggle's train.csv (with labels) or test.csv (without), in its exact layout."""
    header = (["label"] if labels is not None else []) + [f"pixel{i}" for i in range(784)]
    flat = images.reshape(len(images), 784).astype(int)
    rows = [",".join(map(str, ([int(labels[i])] if labels is not None else []) + flat[i].tolist()))
            for i in range(len(images))]
    return "\n".join([",".join(header), *rows]) + "\n"


def write_kaggle(folder: Path, images, labels, test_images=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.csv").write_text(kaggle_rows(images, labels))
    if test_images is not None:
        (folder / "test.csv").write_text(kaggle_rows(test_images, None))
    return folder / "train.csv"


def square_images(n: int, seed: int = 0, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """28x28 light-on-dark images, the label given by where a bright square sits (as in fakes.make_fake_mnist)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    images = rng.integers(0, 30, (n, 28, 28)).astype(np.uint8)
    for i, y in enumerate(labels):
        images[i, 4:12, 2 + 8 * y:8 + 8 * y] = 255
    return images, labels
