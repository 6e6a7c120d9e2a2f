"""Run reports: PNG plots next to the checkpoint and one self-contained HTML page.

    build_report(run_dir)   # what `mnistlab report RUN_DIR` calls, and the end of training with wait_for_report
    launch_report(run_dir)  # what the end of `mnistlab train` calls: the same, in a process it does not wait for

curves.png (loss and error rate per epoch on log scales, training and validation/test), confusion.png (the
test confusion matrix as a heat-map), errors.png (test digits the model got wrong, with the
true label, the prediction and its probability), reliability.png (confidence against
accuracy, 15 bins) and report.html holding them all. matplotlib's Agg backend: no display.

Each file is written to a temp name and renamed, and report.complete last: the report is whole
exactly when report.complete exists (a report drawn in the background that failed, or was
killed, leaves none; its report.log says why). A report that completes leaves nothing else
behind: no report.log, no temp file of a report killed before it, no test pass handed to one.
"""

from __future__ import annotations

import argparse
import base64
import functools
import html
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

import numpy as np
import torch

from ..card import ModelCard
from ..checkpoints import load_checkpoint
from ..errors import MnistlabError
from ..evaluation import ECE_BINS, evaluation_from_probs, format_accuracy, split_probabilities
from ..fileio import atomic_write, write_error
from .runs import read_run_events

PICTURES = ("curves.png", "confusion.png", "errors.png", "reliability.png")
OUTPUTS = (*PICTURES, "report.html")
COMPLETE = "report.complete"  # written after every other file of the report
LOG = "report.log"  # a background report's output: why it failed, if it did
SCORED = ".report-scored.pt"  # the final test pass, handed to the background report (deleted by it)


@functools.cache
def _pyplot():
    # imported on first use: the training command that only launches the report never pays for it
    try:
        import matplotlib
    except ImportError:
        raise MnistlabError("reports need matplotlib: pip install 'mnistlab[report]'.") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    _pyplot().close(fig)
    return path


def plot_curves(events: list[dict], path: Path) -> Path:
    plt = _pyplot()
    # log scales: near 99.7% accuracy a linear axis shows a flat line; the error rate shows the race
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")

    def error(accuracy: float) -> float:
        return max(100 * (1 - accuracy), 0.01)  # 0 errors drawn at 0.01% (one in 10,000)

    epochs = [e for e in events if e["event"] == "epoch" and "train_loss" in e]
    if epochs:
        xs = [e["epoch"] for e in epochs]
        ax_loss.plot(xs, [e["train_loss"] for e in epochs], "o-", label="training (the objective)")
        ax_err.plot(xs, [error(e["train_accuracy"]) for e in epochs], "o-", label="training")
    for split in ("validation", "test"):
        rows = [e for e in events if e["event"] == split]
        if rows:
            ax_loss.plot([e["epoch"] for e in rows], [e["loss"] for e in rows], "s-", label=split)
            ax_err.plot([e["epoch"] for e in rows], [error(e["accuracy"]) for e in rows], "s-", label=split)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss", yscale="log")
    ax_err.set(xlabel="epoch", ylabel="error (%)", title="error rate (100% - accuracy)", yscale="log")
    for ax in (ax_loss, ax_err):
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    return _save(fig, path)


def plot_confusion(confusion: torch.Tensor, classes, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5.2), layout="constrained")
    off = confusion.clone().float()
    off.fill_diagonal_(0)
    im = ax.imshow(off, cmap="Reds")
    for i in range(len(classes)):
        for j in range(len(classes)):
            v = int(confusion[i, j])
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="black" if i != j else "#1a6")
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted", ylabel="true",
           title="test confusion matrix (colour: errors only)")
    ax.set_xticklabels(classes, rotation=90 if max(map(len, classes)) > 2 else 0)
    ax.set_yticklabels(classes)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)


def plot_errors(images, labels, probs, classes, path: Path, limit: int = 40) -> Path:
    plt = _pyplot()
    wrong = (probs.argmax(1) != labels).nonzero().flatten()
    wrong = wrong[probs[wrong].max(1).values.argsort(descending=True)][:limit].tolist()  # most confident first
    cols, tile = 10, 40  # one image of 28x28 digits on 40x40 tiles: one axes draws far faster than 40
    rows = max(1, -(-len(wrong) // cols))
    mosaic = np.zeros((rows * tile, cols * tile), np.uint8)
    fig, ax = plt.subplots(figsize=(cols * 1.1, rows * 1.25 + 0.4), layout="constrained")
    for k, i in enumerate(wrong):
        r, c = divmod(k, cols)
        mosaic[r * tile + 11:r * tile + 39, c * tile + 6:c * tile + 34] = np.asarray(images[i])
        p = int(probs[i].argmax())
        ax.text(c * tile + 20, r * tile + 5, f"{classes[int(labels[i])]}→{classes[p]} {100 * float(probs[i, p]):.0f}%",
                ha="center", va="center", fontsize=7)
    ax.imshow(mosaic, cmap="gray_r", interpolation="nearest")
    ax.axis("off")
    ax.set_title(f"{len(wrong)} most confident mistakes (true→predicted, probability)", fontsize=9)
    return _save(fig, path)


def plot_reliability(bins: torch.Tensor, ece: float, path: Path) -> Path:
    plt = _pyplot()
    count, conf, correct = bins.T
    keep = count > 0
    centers = (torch.arange(ECE_BINS) + 0.5) / ECE_BINS
    fig, ax = plt.subplots(figsize=(4.6, 4.4), layout="constrained")
    ax.bar(centers[keep], (correct[keep] / count[keep]), width=1 / ECE_BINS, edgecolor="k", alpha=0.7,
           label="accuracy in bin")
    ax.plot(conf[keep] / count[keep], correct[keep] / count[keep], "o", color="C3", ms=4, label="mean confidence")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy",
           title=f"reliability (test), ECE {100 * ece:.2f}%")
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def build_report(run_dir: str | os.PathLike, data_dir=None, scored=None, card: ModelCard | None = None) -> Path:
    """Rebuild every picture of a run folder from its metrics and model.pt; return report.html.

    `scored`, (test images, calibrated probabilities, labels), saves scoring the test set again
    when the caller (the end of training) already has them; with them, `card` (model.pt's) lets
    the report be drawn while model.pt is still being written."""
    run_dir = Path(run_dir)
    events = read_run_events(run_dir)
    (run_dir / COMPLETE).unlink(missing_ok=True)  # an earlier report's: this one is not whole yet
    model_path = run_dir / "model.pt"
    if card is None or scored is None:
        if not model_path.is_file():
            raise MnistlabError(f"{run_dir}: no model.pt here (the run did not finish).")
        card, _ = load_checkpoint(model_path)
    if scored is None:
        from ..inference import load_model

        scored = split_probabilities(load_model(model_path), data_dir)
    images, probs, labels = scored
    ev = evaluation_from_probs(probs, labels, card.classes)
    pictures = [
        ("Loss and error rate per epoch", plot_curves(events, run_dir / "curves.png")),
        ("Confusion matrix", plot_confusion(ev.confusion, card.classes, run_dir / "confusion.png")),
        ("Mistakes", plot_errors(images.numpy(), labels, probs, card.classes, run_dir / "errors.png")),
        ("Reliability diagram", plot_reliability(cast(torch.Tensor, ev.bins), ev.ece, run_dir / "reliability.png")),
    ]
    config = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").is_file() else {}
    calib = next((e for e in events if e["event"] == "calibration"), None)
    rows = [("model", card.model), ("dataset", card.dataset),
            ("test accuracy", format_accuracy(ev.correct, ev.total)),
            ("calibration (test)", f"ECE {100 * ev.ece:.2f}%, NLL {ev.loss:.4f}, Brier {ev.brier:.4f}, "
                                   f"temperature {card.temperature:.3f}")]
    if calib:
        rows.append(("temperature fit (validation)", f"ECE {100 * calib['val_ece_before']:.2f}% → "
                                                     f"{100 * calib['val_ece_after']:.2f}%"))
    epochs = [e for e in events if e["event"] == "epoch"]
    if epochs:
        rows.append(("training time", f"{epochs[-1]['train_seconds']:.1f} s"))
    page = _html(run_dir.name, rows, config, pictures)
    atomic_write(run_dir / "report.html", lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    atomic_write(run_dir / COMPLETE, lambda tmp: Path(tmp).write_text(json.dumps({"files": list(OUTPUTS)}) + "\n"))
    _clear_leftovers(run_dir)
    (run_dir / LOG).unlink(missing_ok=True)  # kept only to say why a report failed
    return run_dir / "report.html"


def discard_report(run_dir: str | os.PathLike) -> None:
    """Remove a run folder's report, its marker first (for a new model.pt, which it does not describe)."""
    run_dir = Path(run_dir)
    (run_dir / COMPLETE).unlink(missing_ok=True)
    for name in (*OUTPUTS, LOG):
        (run_dir / name).unlink(missing_ok=True)
    _clear_leftovers(run_dir)


def _clear_leftovers(run_dir: Path) -> None:
    """What a report killed part-way leaves: the temp files of its outputs (atomic_write's
    .NAME.XXXX.tmp), and the test pass it was handed."""
    for name in (*OUTPUTS, COMPLETE, SCORED):
        for tmp in run_dir.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)
    (run_dir / SCORED).unlink(missing_ok=True)


def launch_report(run_dir: str | os.PathLike, data_dir=None, scored=None) -> subprocess.Popen:
    """Draw the report (build_report) in a process of its own, in a session of its own: the caller
    does not wait for it, and it outlives the caller (and a Ctrl-C in its terminal).

    `scored` goes to it in a file it deletes; its output goes to report.log."""
    run_dir = Path(run_dir)
    (run_dir / COMPLETE).unlink(missing_ok=True)
    args = [sys.executable, "-m", "mnistlab.training.report", str(run_dir)]
    if data_dir is not None:
        args += ["--data-dir", str(data_dir)]
    if scored is not None:
        buffer = io.BytesIO()  # serialised first: a full disk then fails in a plain write, said as such
        torch.save(tuple(scored), buffer)
        atomic_write(run_dir / SCORED, lambda tmp: Path(tmp).write_bytes(buffer.getbuffer()))
        args += ["--scored", str(run_dir / SCORED)]
    try:
        log = open(run_dir / LOG, "wb")
    except OSError as e:
        (run_dir / SCORED).unlink(missing_ok=True)
        raise write_error(run_dir / LOG, e) from None
    with log:
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def wait_for_report(run_dir: str | os.PathLike, timeout: float) -> Path:
    """report.html once report.complete exists; one sentence if it does not within `timeout` seconds."""
    run_dir = Path(run_dir)
    deadline = time.monotonic() + timeout
    while not (run_dir / COMPLETE).exists():
        if time.monotonic() > deadline:
            log = run_dir / LOG
            lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
            said = lines[-1][:300] if lines else ""
            raise MnistlabError(f"{run_dir}: the report was not complete after {timeout:g} s"
                                + (f" ({LOG}: {said})." if said else "."))
        time.sleep(0.05)
    return run_dir / "report.html"


def main(argv: list[str] | None = None) -> int:
    """The background report of launch_report: one line on success, one sentence on failure."""
    p = argparse.ArgumentParser(prog="python -m mnistlab.training.report")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--data-dir")
    p.add_argument("--scored", type=Path, help="the final test pass (images, probabilities, labels), then deleted")
    args = p.parse_args(argv)
    try:
        scored = None
        if args.scored is not None:
            scored = torch.load(args.scored, weights_only=True)
            args.scored.unlink()
        print(f"report: {build_report(args.run_dir, data_dir=args.data_dir, scored=scored)}")
        return 0
    except MnistlabError as e:
        print(f"mnistlab report: {e}", file=sys.stderr)
        return 1


def _html(title: str, rows, config: dict, pictures) -> str:
    esc = html.escape
    table = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in rows)
    figs = "".join(
        f"<h2>{esc(name)}</h2><img alt='{esc(name)}' src='data:image/png;base64,"
        f"{base64.b64encode(path.read_bytes()).decode()}'>" for name, path in pictures)
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>mnistlab run {esc(title)}</title>"
            "<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;color:#222}"
            "th{text-align:left;padding-right:1rem}img{max-width:100%}pre{background:#f6f6f6;padding:.6rem}</style>"
            f"</head><body><h1>Run {esc(title)}</h1><table>{table}</table>{figs}"
            f"<h2>Configuration</h2><pre>{esc(json.dumps(config, indent=2))}</pre></body></html>")


if __name__ == "__main__":
    sys.exit(main())
