"""Does preprocessing make a person's images look like MNIST? The 10,000 test digits, disguised.

    python benchmarks/robustness.py CHECKPOINT [--data-dir DIR] [--limit N] [--seed 0]

Each test digit is scaled by a random factor in [0.5, 4], placed at a random position in a
larger canvas, given a random polarity, and saved as grayscale PNG, as RGB JPEG at quality
75, or as dark ink on a light, noisy background. Every image then goes through
`mnistlab.data.preprocess` and the model; the accuracy is compared with the model's own on the
clean test set (exact counts, full test set).
"""

import argparse
import io
import sys

import numpy as np
from PIL import Image

from common import machine
from mnistlab import evaluate, format_accuracy, load_model, load_split
from mnistlab.data.preprocess import NoDigitError, preprocess

KINDS = ("grayscale PNG", "RGB JPEG q75", "light noisy background")


def disguise(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, int]:
    size = max(8, round(28 * rng.uniform(0.5, 4.0)))
    img = np.asarray(Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    h, w = (round(size * rng.uniform(1.0, 2.5)) for _ in range(2))
    canvas = np.zeros((h, w), np.float32)
    top, left = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
    canvas[top:top + size, left:left + size] = img
    kind = int(rng.integers(0, 3))
    if kind == 2:  # dark ink on light paper with noise
        paper = rng.uniform(170, 235)
        canvas = paper - canvas * (paper - rng.uniform(0, 60)) / 255 + rng.normal(0, 8, canvas.shape)
    elif rng.random() < 0.5:
        canvas = 255 - canvas
    pixels = np.clip(canvas, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    if kind == 1:
        tint = rng.uniform(0.7, 1.0, 3)
        rgb = np.clip(pixels[..., None] * tint, 0, 255).astype(np.uint8)
        Image.fromarray(rgb, "RGB").save(buf, format="JPEG", quality=75)
    else:
        Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue(), kind


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--data-dir")
    p.add_argument("--limit", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    clean = evaluate(load_model(args.checkpoint), args.data_dir)
    images, labels = load_split("mnist", "test", data_dir=args.data_dir)
    images, labels = images[:args.limit].numpy(), labels[:args.limit].numpy()
    predictor = load_model(args.checkpoint)
    rng = np.random.default_rng(args.seed)
    right, seen = np.zeros(3, int), np.zeros(3, int)
    batch, no_digit = [], 0
    for digit, label in zip(images, labels):
        data, kind = disguise(digit, rng)
        try:
            batch.append((preprocess(data), label, kind))
        except NoDigitError:  # counted as wrong
            no_digit += 1
            seen[kind] += 1
    pixels = np.stack([b[0] for b in batch])
    probs = predictor.predict_proba(pixels)
    for (_, label, kind), pr in zip(batch, probs):
        seen[kind] += 1
        right[kind] += int(pr.argmax() == label)
    print(f"machine: {machine()}")
    print(f"command: python benchmarks/robustness.py {' '.join(sys.argv[1:])}\n")
    print("| test images | accuracy |\n|---|---|")
    print(f"| clean, as stored (`mnistlab eval`) | {format_accuracy(clean.correct, clean.total)} |")
    for k, name in enumerate(KINDS):
        print(f"| disguised: {name} | {format_accuracy(int(right[k]), int(seen[k]))} |")
    total = format_accuracy(int(right.sum()), int(seen.sum()))
    print(f"| disguised, all, after preprocessing | {total} |")
    drop = 100 * (clean.correct / clean.total - right.sum() / seen.sum())
    print(f"\ndrop: {drop:.2f} points (goal: at most 0.50); 'no digit found' (counted wrong): {no_digit}")


if __name__ == "__main__":
    main()
