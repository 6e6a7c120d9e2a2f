"""Preprocessing a folder of 10,000 photos of digits (issue 22): make the folder, then time `mnistlab datasets` on it.

    python benchmarks/photos.py make DIR [--count 10000] [--data-dir ../shared/data]
    python benchmarks/photos.py time DIR [--runs 3]    # in process: the folder read, each first run in a fresh cache
    sh -c 'MNISTLAB_CACHE=$(mktemp -d) exec mnistlab datasets DIR'  (whole process, 5 runs)   # first run: every photo
    mnistlab datasets DIR  (whole process, 5 runs)                                             # from the cache

No folder of real photos can be downloaded here, so each "photo" is one of MNIST's training
digits as a phone would see it once cropped: RGB, 128 to 320 pixels a side (not square), dark
ink of a random colour on paper with uneven light, a little blur and sensor noise, saved as PNG
in DIR/<digit>/.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from common import machine, summary
from mnistlab.data import own as owndata
from mnistlab.data.own import load_split


def photo(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    w, h = (int(v) for v in rng.integers(128, 321, 2))
    side = min(w, h) * 2 // 3  # the digit keeps its shape; the photo around it need not be square
    ink = Image.fromarray(digit).resize((side, side), Image.BICUBIC)
    mask = np.zeros((h, w), np.float32)
    top, left = rng.integers(0, h - ink.height + 1), rng.integers(0, w - ink.width + 1)
    mask[top:top + ink.height, left:left + ink.width] = np.asarray(ink, np.float32) / 255
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    light = 200 + 40 * (rng.uniform(-1, 1) * xx + rng.uniform(-1, 1) * yy)  # uneven light on the paper
    paper = light[..., None] * rng.uniform(0.9, 1.0, 3)  # a slightly coloured sheet
    colour = rng.uniform(10, 90, 3)  # pen: black, blue or dark grey
    rgb = paper * (1 - mask[..., None]) + colour * mask[..., None] + rng.normal(0, 4, (h, w, 3))
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(0, 1)))


def make(root: Path, count: int, data_dir) -> None:
    x, y = load_split("mnist", "train", data_dir, download=False)
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / str(int(y[i]))
        folder.mkdir(parents=True, exist_ok=True)
        photo(x[i].numpy(), rng).save(folder / f"{i:05d}.png")
    sizes = sum(f.stat().st_size for f in root.rglob("*.png"))
    print(f"{count} photos in {root}: {sizes / 1e6:.1f} MB")


def timed_open(root: Path) -> tuple[float, int]:
    owndata._open.cache_clear()
    t0 = time.perf_counter()
    ds = owndata.open_dataset(root)
    return time.perf_counter() - t0, len(ds.notes)


def time_reads(root: Path, runs: int) -> None:
    print(f"machine: {machine()}", flush=True)
    count = sum(1 for _ in root.rglob("*.png"))
    first, cached = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(runs):
            os.environ["MNISTLAB_CACHE"] = str(Path(tmp) / f"cache{run}")
            seconds, skipped = timed_open(root)
            first.append(seconds)
            cached.append(timed_open(root)[0])
    rate = [count / s for s in first]
    print(f"{count} photos, {skipped} skipped (no digit found)\nfirst read (hash, preprocess on every core, write the "
          f"cache): {summary(first)} s = {summary(rate, '{:.0f}')} images/s, median [min-max] of {runs} "
          f"(goal >= 1000)\nfrom the cache: {summary(cached, '{:.3f}')} s (goal <= 1 s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("action", choices=["make", "time"])
    p.add_argument("dir", type=Path)
    p.add_argument("--count", type=int, default=10_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    if args.action == "make":
        make(args.dir, args.count, args.data_dir)
    else:
        time_reads(args.dir, args.runs)

if __name__ == "__main__":
    main()
