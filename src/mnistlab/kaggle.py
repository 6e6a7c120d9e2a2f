"""Kaggle's Digit Recognizer: classify test.csv and write a submission (ImageId,Label, ImageId from 1).

Kaggle's 28,000 test images come from MNIST, most of them from MNIST's 60,000 training
images. A model that learnt from those (the shipped pretrained models, any model trained on
`--dataset mnist`) has seen most of the answers: its score there is not an honest one.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .data.own import light_on_dark, read_csv_images
from .errors import MnistlabError
from .fileio import atomic_write
from .inference import Classifier


def dishonesty(model: Classifier) -> str | None:
    """Why this model's Kaggle score would not be honest, or None."""
    if model.card.dataset != "mnist":
        return None
    return (f"{model.source or 'this model'} learnt from MNIST's 60,000 training images, which make up most of "
            "Kaggle's test set: its score there is not an honest Kaggle score. For one, train on Kaggle's train.csv "
            "alone: mnistlab train --dataset train.csv (README: Kaggle).")


def predict_csv(model: Classifier, path: str | os.PathLike) -> np.ndarray:
    """The class index the model gives each row of Kaggle's test.csv (pixel0..pixel783, no label)."""
    images, _ = read_csv_images(Path(path), labelled=False)
    return model.predict_proba(light_on_dark(images, Path(path), [])).argmax(1)


def write_submission(model: Classifier, test_csv: str | os.PathLike, out: str | os.PathLike) -> int:
    """Write Kaggle's submission format for test.csv into `out`; the number of rows written."""
    if Path(out).exists() and Path(out).resolve() == Path(test_csv).resolve():
        raise MnistlabError(f"{out}: that is the test.csv being classified; name another file for the submission.")
    predicted = predict_csv(model, test_csv)
    lines = ["ImageId,Label", *(f"{i},{model.classes[k]}" for i, k in enumerate(predicted, start=1))]
    atomic_write(out, lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))
    return len(predicted)
