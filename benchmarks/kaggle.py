"""Kaggle's Digit Recognizer, end to end from train.csv alone (issue 22): the README's two commands, and their figures.

    python benchmarks/kaggle.py WORK_DIR [--data-dir ../shared/data]

Kaggle's files cannot be downloaded here, so both are built in their exact layout from MNIST:
train.csv from MNIST's first 42,000 training images (label,pixel0..pixel783), and test.csv from
the 28,000 others (training images 42,000-59,999, then the 10,000 test images), pixels only.
Then, as the README says:

    mnistlab train --dataset WORK_DIR/train.csv --preset accurate --out WORK_DIR/run
    mnistlab predict WORK_DIR/run/model.pt WORK_DIR/test.csv --submission WORK_DIR/submission.csv

The training carves 10% of train.csv's rows, stratified, as its held-out split and reports its
accuracy there; nothing is chosen on them (the preset is fixed). The submission is then scored
against the 28,000 true labels, as Kaggle would score it.
"""

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

from common import write_kaggle_csv
from mnistlab.data.own import load_split
from mnistlab.evaluation import format_accuracy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("work", type=Path)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    x, y = (a.numpy() for a in load_split("mnist", "train", args.data_dir, download=False))
    xt, yt = (a.numpy() for a in load_split("mnist", "test", args.data_dir, download=False))
    args.work.mkdir(parents=True, exist_ok=True)
    write_kaggle_csv(args.work / "train.csv", x[:42_000], y[:42_000])
    write_kaggle_csv(args.work / "test.csv", np.concatenate([x[42_000:], xt]))
    truth = np.concatenate([y[42_000:], yt])
    mnistlab = [sys.executable, "-m", "mnistlab"]
    subprocess.run([*mnistlab, "train", "--dataset", str(args.work / "train.csv"), "--preset", "accurate",
                    "--out", str(args.work / "run")], check=True)
    subprocess.run([*mnistlab, "predict", str(args.work / "run" / "model.pt"), str(args.work / "test.csv"),
                    "--submission", str(args.work / "submission.csv")], check=True)
    answers = np.loadtxt(args.work / "submission.csv", delimiter=",", skiprows=1, dtype=np.int64)
    assert (answers[:, 0] == np.arange(1, 28_001)).all()
    right = answers[:, 1] == truth
    print(f"submission, scored as Kaggle would: {format_accuracy(int(right.sum()), len(right))} "
          f"(of which MNIST's test images: {format_accuracy(int(right[18_000:].sum()), 10_000)})")


if __name__ == "__main__":
    main()
