"""Draw docs/augmentation.png: a batch of training digits before and after the `accurate`
preset's augmentation (and with elastic distortion added).

    python scripts/augmentation_figure.py [--data-dir DIR]
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mnistlab import PRESETS, load_split  # noqa: E402
from mnistlab.data.augment import Augment  # noqa: E402
from mnistlab.data.mnist import DATASETS, Loader  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir")
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "augmentation.png"))
    args = p.parse_args()
    images, labels = load_split("mnist", "train", data_dir=args.data_dir)
    spec = DATASETS["mnist"]
    loader = Loader(images[:12], labels[:12], 12, spec.mean, spec.std)
    x, _ = next(loader.batches())
    rows = [("original", x),
            ("accurate preset", Augment(**PRESETS["accurate"]["augment"])(x, seed=1, background=loader.background)),
            ("+ elastic 2 px", Augment(**PRESETS["accurate"]["augment"], elastic=2.0)(x, seed=2,
                                                                                       background=loader.background))]
    fig, axes = plt.subplots(len(rows), 12, figsize=(12, 3.3))
    for r, (name, batch) in enumerate(rows):
        for c in range(12):
            axes[r, c].imshow(batch[c, 0], cmap="gray")
            axes[r, c].axis("off")
        axes[r, 0].set_title(name, fontsize=9, loc="left")
    fig.savefig(args.out, dpi=90, bbox_inches="tight")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
