"""`mnistlab serve --collect DIR`: corrections saved from the drawing page, and fine-tuning on them.

    DIR/<label>/<name>.png        the drawing as the page sent it (what `train --dataset DIR` reads)
    DIR/<label>/seen/<name>.png   the 28x28 image the model saw (a class folder's subfolders are not read)
    DIR/.models/finetuned-<stamp>/model.pt   each fine-tune's model (hidden: not a class folder)

A fine-tune runs `mnistlab train --init MODEL --dataset DIR --init-head keep` in a child process, so
that a crash of it (or a kill -9) cannot take the server down, and the server's own threads keep
answering; the new model is swapped in only once the child has finished and the model loads.
No torch here: the ONNX path of the server does not have it.
"""

from __future__ import annotations

import atexit
import io
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np

from ..data.preprocess import image_suffixes
from ..errors import MnistlabError
from ..fileio import atomic_write
from ..launch import PARENT_ENV

MODELS = ".models"  # under DIR; hidden, so that the folder reader does not take it for a class


class FineTuneBusy(MnistlabError):
    """A fine-tune was asked for while one runs."""


def writable_folder(path: str | os.PathLike) -> Path:
    """The --collect folder, made if needed, once a file could be written in it; else one sentence."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".probe-")  # os.access says yes to root on a read-only mount
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise MnistlabError(f"--collect {folder}: cannot write there ({e.strerror or e}); choose a folder you can "
                            "write to.") from None
    return folder


def save_correction(folder: Path, label: str, classes: tuple[str, ...], body: bytes, seen: np.ndarray) -> Path:
    """Write the drawing (its bytes as sent) to folder/label/ and the 28x28 image the model saw to
    folder/label/seen/, under one new name; returns the drawing's path."""
    from PIL import Image

    if label not in classes:
        raise MnistlabError(f"label '{label[:40]}' is not one of the model's classes ({', '.join(classes)}).")
    fmt = (Image.open(io.BytesIO(body)).format or "").lower()  # decoded already: predict's preprocessing read it
    suffix = {"jpeg": ".jpg", "tiff": ".tif"}.get(fmt, f".{fmt}")
    if suffix not in image_suffixes():  # a format the folder reader would skip: kept as PNG instead
        buf = io.BytesIO()
        Image.open(io.BytesIO(body)).save(buf, format="PNG")
        body, suffix = buf.getvalue(), ".png"
    for kept in (folder / label).glob(f"*{suffix}"):  # the same drawing sent twice (a double-click) is kept once
        if kept.read_bytes() == body:
            return kept
    name = f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"
    seen_png = io.BytesIO()
    Image.fromarray(np.asarray(seen, dtype=np.uint8)).save(seen_png, format="PNG")
    _write(folder / label / "seen" / f"{name}.png", seen_png.getvalue())  # first: the drawing is what training reads
    path = folder / label / f"{name}{suffix}"
    _write(path, body)
    return path


def _write(path: Path, data: bytes) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)
    atomic_write(path, write)


def counts(folder: Path) -> dict[str, int]:
    """Drawings collected in each class folder."""
    found = {}
    for d in sorted(folder.iterdir()):
        if d.is_dir() and not d.name.startswith("."):
            found[d.name] = sum(1 for f in d.iterdir() if f.is_file() and f.suffix.lower() in image_suffixes())
    return {k: n for k, n in found.items() if n}


def check_enough(folder: Path) -> None:
    """Two classes of two drawings each at least (one to learn from, one to hold out), said in one sentence."""
    have = counts(folder)
    few = [k for k, n in have.items() if n < 2]
    if len(have) < 2 or few:
        shown = ", ".join(f"{n} of {k}" for k, n in have.items()) or "none yet"
        raise MnistlabError(f"too few corrections to fine-tune on ({shown}): correct at least two drawings of each "
                            "of two digits or more.")


# The child that prepares a fine-tune: it ends with the server, and yields the cores to the server and to the user.
PREPARE = ("import os, sys; os.nice(10) if hasattr(os, 'nice') else None; "
           "from mnistlab.launch import exit_with_parent; exit_with_parent(); "
           "from mnistlab.training.finetune import prepare; prepare(sys.argv[1])")


class FineTune:
    """One fine-tune at a time, in a child process; `swap(model_path)` is called with its model once it has
    finished well (the server loads it and puts it in place)."""

    def __init__(self, folder: Path, swap: Callable[[str], None]):
        self.folder, self.swap = folder, swap
        self._lock = threading.Lock()
        self.status: dict = {"state": "idle"}
        self.process: subprocess.Popen | None = None
        self.preparing: subprocess.Popen | None = None
        atexit.register(self.stop)  # a server stopped (Ctrl-C, SIGTERM) does not leave a fine-tune running on

    def prepare(self, init: str) -> None:
        """Start computing, in a child process at a low priority, what every fine-tune of `init` reads
        (training.finetune.prepare), while corrections are collected; a fine-tune started meanwhile stops it and
        computes the rest itself. Only time depends on it: where it cannot start or fails, nothing else changes."""
        try:
            self.preparing = subprocess.Popen(
                [sys.executable, "-c", PREPARE, init], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, env={**os.environ, PARENT_ENV: str(os.getpid())})
        except OSError:
            self.preparing = None

    def stop(self) -> None:
        for process in (self.process, self.preparing):
            if process is not None and process.poll() is None:
                process.terminate()

    def start(self, init: str) -> dict:
        with self._lock:
            if self.status["state"] == "running":
                raise FineTuneBusy("a fine-tune is already running; wait for it to finish.")
            check_enough(self.folder)
            if self.preparing is not None and self.preparing.poll() is None:
                self.preparing.terminate()  # what it has cached stays: each set is written whole
            if self.process is not None and self.process.poll() is None:
                # the last one, its model served, still at its figures on the test set: they are not worth a wait
                if os.name == "posix":
                    self.process.send_signal(signal.SIGINT)  # Ctrl-C: it leaves no half-written file
                else:
                    self.process.terminate()
            out = self.folder / MODELS / f"finetuned-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
            self.status = {"state": "running", "lines": [], "step": 0, "steps": 0, "started": time.time(),
                           "model_path": str(out / "model.pt")}
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mnistlab", "train", "--init", init, "--dataset", str(self.folder),
                 "--out", str(out), "--init-head", "keep"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1", PARENT_ENV: str(os.getpid())})
            threading.Thread(target=self._follow, args=(self.process, out), daemon=True).start()
            return self.status

    def _follow(self, process: subprocess.Popen, out: Path) -> None:
        status, swapped = self.status, False
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip()
            if line.startswith("step ") and "/" in line:
                step, steps = line.split()[1].split("/")
                status.update(step=int(step), steps=int(steps))
            elif line.startswith("saved ") and not swapped:
                # the model is written: served at once, while the child goes on to its figures on the test set
                swapped = True
                self._finish(status, self._swapped(out))
            else:
                status["lines"].append(line)
        code = process.wait()
        if not swapped:
            errors = [ln.removeprefix("mnistlab: error: ") for ln in status["lines"] if "error:" in ln]
            how = "it was stopped from outside" if code < 0 else "it gave no reason"
            self._finish(status, {"state": "failed", "error": errors[-1] if errors else
                                  f"the fine-tune ended before it saved a model ({how})."})

    def _swapped(self, out: Path) -> dict:
        """Serve the model the child saved in `out`; its status, done or failed."""
        try:
            summary = json.loads((out / "finetune.json").read_text())
            self.swap(str(out / "model.pt"))
            return {"state": "done", "before": summary["held_out_before"], "after": summary["held_out_after"],
                    "seconds": summary["seconds"]}
        except (MnistlabError, OSError, ValueError, KeyError) as e:
            return {"state": "failed", "error": str(e)}

    def _finish(self, status: dict, final: dict) -> None:
        with self._lock:
            self.status = {**status, **final, "finished": time.time()}
