"""What every benchmark prints: the machine, the software, the statistics."""

import contextlib
import platform
import statistics
from pathlib import Path

import torch


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    import os

    return (f"{cpu}, {os.cpu_count()} cores{gpu}; Python {platform.python_version()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def summary(values: list[float], fmt: str = "{:.2f}") -> str:
    """median [min-max] of several runs."""
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def write_kaggle_csv(path, images, labels=None) -> None:
    """Kaggle's Digit Recognizer layout: train.csv (label,pixel0..pixel783) with labels, test.csv without."""
    import numpy as np

    rows = images.reshape(len(images), 784).astype(np.int64)
    names = [f"pixel{i}" for i in range(784)]
    if labels is not None:
        rows, names = np.concatenate([labels[:, None], rows], axis=1), ["label", *names]
    np.savetxt(path, rows, fmt="%d", delimiter=",", header=",".join(names), comments="")


def trained_candidate(folder: Path, settings: dict, data_dir) -> tuple[Path, float | None]:
    """A model-choice candidate's model.pt, trained with these RunConfig settings if missing (seconds of training,
    or None if it was there); its training log, which ends with the test figure every run prints, goes to
    FOLDER.log, unread."""
    from mnistlab import RunConfig, train

    if (folder / "model.pt").is_file():
        return folder / "model.pt", None
    cfg = RunConfig(**settings).validate()
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_suffix(".log"), "w") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        result = train(cfg, out=folder, data_dir=data_dir, progress=False)
    return result.model_path, result.train_seconds
