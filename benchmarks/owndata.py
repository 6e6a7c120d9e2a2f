"""Loading Kaggle's 42,000-row train.csv (issue 22): first read (parsed) and from the cache.

    python benchmarks/owndata.py [--data-dir ../shared/data] [--runs 5] [--rows 42000]

Kaggle's file cannot be downloaded here, so one is built in its exact layout (label,pixel0..pixel783)
from the first 42,000 of MNIST's training images (76 MB, like Kaggle's). Each first read runs in a
fresh cache folder; each cached read after it, with the same file, in this process's memory cleared.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

from common import machine, summary, write_kaggle_csv
from mnistlab.data import own as owndata
from mnistlab.data.own import load_split


def timed_open(path: Path) -> float:
    owndata._open.cache_clear()
    t0 = time.perf_counter()
    ds = owndata.open_dataset(path)
    seconds = time.perf_counter() - t0
    assert len(ds.train[1]) > 0
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--rows", type=int, default=42_000)
    args = p.parse_args()
    print(f"machine: {machine()}", flush=True)
    x, y = load_split("mnist", "train", args.data_dir, download=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.csv"
        write_kaggle_csv(path, x[:args.rows].numpy(), y[:args.rows].numpy())
        print(f"{path.name}: {args.rows} rows, {path.stat().st_size / 1e6:.1f} MB")
        first, cached = [], []
        for run in range(args.runs):
            os.environ["MNISTLAB_CACHE"] = str(Path(tmp) / f"cache{run}")
            first.append(timed_open(path))
            cached.append(timed_open(path))
    print(f"first read (parse, check, write the cache): {summary(first)} s, median [min-max] of {args.runs} "
          f"(goal <= 3 s)\nfrom the cache: {summary(cached, '{:.3f}')} s (goal <= 0.5 s)")


if __name__ == "__main__":
    main()
