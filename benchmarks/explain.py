"""The "why" views: the cost of ?explain=1, and the deletion test of its saliency maps.

    python benchmarks/explain.py [--data-dir DIR] [--models classic-cnn robust-real] [--images 200]

Cost: Classifier.predict(280x280 PNG) with and without explain=True, one thread, median of 500
calls after 50 warm-up ones. Deletion test: over the first --images test digits, the mean fall
of the predicted class's probability when the 10% most salient ink pixels are blanked, and when
as many random ink pixels are (seeded).
"""

import argparse
import io
import sys
import time

import numpy as np
import torch
from PIL import Image

from common import machine
from mnistlab import load_model, load_split
from mnistlab_testkit.explaining import deletion_test


def cost(model, png: bytes, explain: bool, n: int = 500) -> float:
    times = []
    for i in range(n + 50):
        t0 = time.perf_counter()
        model.predict(png, explain=explain)
        if i >= 50:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir")
    p.add_argument("--models", nargs="+", default=["classic-cnn", "robust-real"])
    p.add_argument("--images", type=int, default=200)
    args = p.parse_args()
    torch.set_num_threads(1)  # as each server worker runs
    images = load_split("mnist", "test", data_dir=args.data_dir)[0]
    buf = io.BytesIO()
    Image.fromarray(255 - images[0].numpy()).resize((280, 280), Image.Resampling.BICUBIC).save(buf, format="PNG")
    print(f"machine: {machine()}")
    print(f"command: python benchmarks/explain.py {' '.join(sys.argv[1:])}\n")
    print("| model | predict, p50 | with explain, p50 | cost of explain | deletion test: salient 10% of ink | "
          "random 10% of ink |\n|---|---|---|---|---|---|")
    for name in args.models:
        model = load_model(name)
        plain, why = cost(model, buf.getvalue(), False), cost(model, buf.getvalue(), True)
        salient, random_ = deletion_test(model, images[:args.images].numpy())
        print(f"| {name} | {1e3 * plain:.2f} ms | {1e3 * why:.2f} ms | {1e3 * (why - plain):.2f} ms "
              f"| probability falls by {salient:.3f} | by {random_:.3f} |", flush=True)


if __name__ == "__main__":
    main()
