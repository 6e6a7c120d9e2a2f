"""Training: `train(config)`, and the few functions over a run's state that it is made of.

The whole dataset sits on the device as uint8; each epoch's order is a pure function of
(seed, epoch), so a checkpoint taken anywhere resumes to the same final weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from ..card import ModelCard
from ..checkpoints import check_weights, load_checkpoint, save_checkpoint, save_weights
from ..data.augment import Augment
from ..data.corruptions import HELD_OUT, corrupt
from ..data.mnist import Loader, epoch_permutation, refuse_mirrors
from ..data.outliers import OutlierBatches, outlier_set
from ..data.own import carve, get_dataset_spec, load_split  # registry names and paths (--dataset PATH) alike
from ..data.synthetic import SyntheticBatches, digit_set, missing_packages
from ..device import CoreShare, amp_dtype, keep_freed_memory, resolve_device
from ..errors import CheckpointError, MnistlabError, first_line
from ..evaluation import (
    evaluation_from_logits,
    fit_temperature,
    format_accuracy,
    head_log_probabilities,
    predict_logits,
    shard_logits,
)
from ..models import build_model
from ..ood import REJECT_SCORE_FOR, ood_score, reject_threshold
from ..speedups import enabled
from . import distributed as dist
from .config import RunConfig, resumed
from .optim import ForeachSGD
from .runs import RunLog, StopRequest, latest_checkpoint, prepare_run_dir
from .steps import EagerStep, GraphedStep
from .tensorboard_log import require_tensorboard, tensorboard_logged

OUTLIER_POOL = 12_000  # outlier exposure's made-up non-digits, rendered once per run (about 30 s on 2 cores)
SYNTHETIC_POOL = 20_000  # --synthetic-digits' font digits, rendered once per seed and cached


@dataclass
class TrainResult:
    run_dir: Path
    model_path: Path
    test_correct: int
    test_total: int
    train_seconds: float
    history: list[dict] = field(default_factory=list)

    @property
    def test_accuracy(self) -> float:
        return self.test_correct / self.test_total


@dataclass
class Data:
    train: Loader
    test: Loader
    val: Loader | None


@dataclass
class Run:
    """Everything a run is and has done: what a checkpoint saves, and what the loop moves forward."""

    cfg: RunConfig
    card: ModelCard  # what model.pt will say; the temperature is fitted at the end
    model: torch.nn.Module  # the weights being trained
    ema: torch.optim.swa_utils.AveragedModel | None  # their moving average: what is evaluated and shipped
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler | None
    step: EagerStep
    augment: Augment | None
    data: Data
    log: RunLog
    run_dir: Path
    epoch: int = 1
    step_in_epoch: int = 0
    global_step: int = 0
    train_seconds: float = 0.0
    cores: CoreShare | None = None  # this run's share of the CPU's cores, beside other trainings
    stats_state: dict | None = None  # the running figures of an epoch interrupted part-way, to carry on from
    test_logits: tuple | None = None  # (epoch, logits, labels) of the last test pass, to re-score, not re-run
    outliers: OutlierBatches | None = None  # outlier exposure's share of each batch (--outlier-exposure)
    synthetic: SyntheticBatches | None = None  # font digits in place of part of each batch (--synthetic-digits)
    report: BackgroundReport | None = None  # drawn beside the last checkpoints (speed-up background-report)
    stats: EpochStats = field(init=False)  # the current epoch's running figures

    def __post_init__(self):
        self.stats = EpochStats(self.data.train.images.device, self.stats_state)

    @property
    def shipped(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else self.model

    @property
    def total_steps(self) -> int:
        return run_steps(self.cfg.epochs, len(self.data.train))

    @property
    def last_epoch(self) -> int:
        return math.ceil(self.total_steps / len(self.data.train))

    def epoch_steps(self) -> int:
        """Steps in the current epoch: a fractional --epochs ends the last one early."""
        return min(len(self.data.train), self.total_steps - (self.epoch - 1) * len(self.data.train))


def run_steps(epochs: float, steps_per_epoch: int) -> int:
    """The steps of a whole run: a fractional --epochs ends the last epoch early."""
    return max(1, round(epochs * steps_per_epoch))


def train(cfg: RunConfig | None = None, out: str | os.PathLike | None = None,
          resume: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
          progress: bool | None = None, report: bool = False, changes: dict | None = None,
          tensorboard: str | os.PathLike | bool | None = None) -> TrainResult:
    """Train `cfg.model` on `cfg.dataset`, evaluate on the test set, save into a run folder.

    With `resume` (a checkpoint), the run continues under its own config, with `changes` (field ->
    value, as the flags given) applied where config.RESUME_MAY_CHANGE allows. With `tensorboard`
    (True for the run folder's tensorboard/, or a folder) the events also go to TensorBoard."""
    if tensorboard is not None and tensorboard is not False:
        require_tensorboard()
    run = start(cfg, out, resume, data_dir, progress, changes or {})
    if report and dist.world_size() == 1 and enabled("background-report"):
        run.report = BackgroundReport(run, data_dir)
    shared = contextlib.closing(run.cores) if run.cores else contextlib.nullcontext()
    with StopRequest() as stop, peers_watched(run), shared, tensorboard_logged(run.log, run.run_dir, tensorboard):
        while run.epoch <= run.last_epoch:
            stats = train_epoch(run, stop)
            if stats is not None:
                finish_epoch(run, stats)
            if stop.requested:
                path = save(run, "ckpt-interrupt.pt")
                run.log.line(f"interrupted: saved {path}; continue with: mnistlab train --resume {path}")
                raise KeyboardInterrupt
        run.epoch = run.last_epoch
        if run.data.val is not None and not any(e["event"] == "calibration" for e in run.log.history):
            calibrate(run)
        return finish(run, report, data_dir)


class EpochStats:
    """An epoch's running figures, summed on the device and read only at log lines (.item() waits for it).

    A Ctrl-C checkpoint keeps them (state_dict), so that the resumed epoch's event counts the whole epoch."""

    def __init__(self, device: torch.device, state: dict | None = None):
        self.device, self.loss_sum, self.steps, self.images = device, 0.0, 0, 0
        self.correct = torch.zeros((), device=device)
        self._running, self._seen = torch.zeros((), device=device), 0
        if state:
            self.load_state_dict(state)

    def state_dict(self) -> dict:
        """The figures so far; `correct` summed over the ranks (rank 0 alone takes it back on resume)."""
        return {"loss_sum": self.loss_sum, "steps": self.steps, "images": self.images,
                "correct": dist.all_reduce_sum(self.correct.float()).cpu(), "running": self._running.cpu(),
                "seen": self._seen}

    def load_state_dict(self, state: dict) -> None:
        try:
            self.loss_sum, self.steps, self.images = float(state["loss_sum"]), int(state["steps"]), int(state["images"])
            correct, running, self._seen = state["correct"], state["running"], int(state["seen"])
            self.correct = correct.to(self.device) if dist.is_main() else torch.zeros((), device=self.device)
            self._running = running.to(self.device, torch.zeros((), device=self.device).dtype)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise CheckpointError("the checkpoint's 'epoch_stats' are damaged.") from None

    def add(self, loss: torch.Tensor, correct: torch.Tensor, images: int) -> None:
        self._running += loss
        self.correct += correct
        self._seen, self.images = self._seen + 1, self.images + images

    def running_loss(self) -> float:
        """The mean loss of the steps since the last call."""
        mean = self._running.item() / self._seen
        self.loss_sum, self.steps = self.loss_sum + mean * self._seen, self.steps + self._seen
        self._running, self._seen = torch.zeros((), device=self.device), 0
        return mean


def train_epoch(run: Run, stop: StopRequest) -> EpochStats | None:
    """Train from where the run stands to the end of its epoch: the epoch's figures, or None if Ctrl-C came first."""
    cfg, n, stats = run.cfg, run.epoch_steps(), run.stats
    bar = run.log.bar(n, run.step_in_epoch, f"epoch {run.epoch}/{run.last_epoch}")
    t0 = time.perf_counter()
    for x, y in run.data.train.batches(run.epoch, run.step_in_epoch):
        if run.cores is not None:
            run.cores.adjust()
        images = len(y)
        if run.synthetic is not None:  # before the outliers: they take the place of digits, not of outliers
            x, y = run.synthetic.mix(x, y, run.global_step)
        if run.outliers is not None:
            x, y = run.outliers.mix(x, y, run.global_step)
        if run.augment is not None:  # outliers and font digits too: a look is then a cue for no side
            x = run.augment(x, seed=cfg.seed * 1_000_003 + run.global_step, background=run.data.train.background,
                            ink=run.data.train.ink)
        loss, correct = run.step(x, y)
        if run.sched is not None:
            run.sched.step()
            run.step.after_schedule()
        if run.ema is not None:
            run.ema.update_parameters(run.model)
        stats.add(loss, correct, images)
        run.step_in_epoch, run.global_step = run.step_in_epoch + 1, run.global_step + 1
        bar.update()
        if run.step_in_epoch % cfg.log_interval == 0 or run.step_in_epoch == n:
            log_running_loss(run, stats)
        if run.step_in_epoch == n or dist.any_rank(stop.requested, run.global_step):
            break
    run.train_seconds += time.perf_counter() - t0
    bar.close()
    return stats if run.step_in_epoch == n else None


@contextlib.contextmanager
def peers_watched(run: Run):
    """Under torchrun, a rank that died or failed breaks the others' collectives: say so once,
    with the checkpoint to resume from, if one was written."""
    try:
        yield
    except RuntimeError as e:
        if not dist.is_initialized():
            raise
        saved = latest_checkpoint(run.run_dir)
        hint = (f"its last checkpoint is intact: continue with mnistlab train --resume {saved}" if saved
                else "no checkpoint had been written yet: start the run again")
        raise MnistlabError(f"{dist.broke(e)}; {hint}.") from None


def log_running_loss(run: Run, stats: EpochStats) -> None:
    mean = stats.running_loss()
    if not math.isfinite(mean):
        raise MnistlabError(
            f"the training loss became {mean} at epoch {run.epoch}, step {run.step_in_epoch}; the run stopped. "
            f"The learning rate ({run.cfg.lr}) is probably too high: try a lower --lr.")
    run.log.record(event="train", epoch=run.epoch, step=run.step_in_epoch, loss=mean, global_step=run.global_step,
                   lr=float(run.opt.param_groups[0]["lr"]))
    if run.step_in_epoch % run.cfg.log_interval == 0:
        run.log.line(f"epoch {run.epoch:>3} [{run.step_in_epoch:>5}/{run.epoch_steps()}] loss {mean:.4f}")


def finish_epoch(run: Run, stats: EpochStats) -> None:
    """Record the epoch, evaluate and checkpoint where due, and move to the next epoch."""
    count, index_sum, index_sq_sum = dist.all_reduce_sum(run.data.train.served_checksum()).tolist()
    correct = dist.all_reduce_sum(stats.correct.float()).item()
    run.log.record(event="epoch", epoch=run.epoch, train_seconds=run.train_seconds, steps=run.global_step,
                   samples=int(count), index_sum=int(index_sum), index_sq_sum=int(index_sq_sum),
                   train_loss=stats.loss_sum / max(stats.steps, 1),
                   train_accuracy=correct / max(dist.world_size() * stats.images, 1))
    if run.data.val is not None:
        evaluate(run, "validation")
    if run.epoch % run.cfg.eval_every == 0 or run.epoch == run.last_epoch:
        evaluate(run, "test")
    run.epoch, run.step_in_epoch = run.epoch + 1, 0
    run.stats = EpochStats(run.data.train.images.device)
    if run.report is not None and run.epoch > run.last_epoch and run.data.val is None:
        run.report.start()  # the final test figures are in: draw them while the checkpoints are written
    if (run.epoch - 1) % run.cfg.checkpoint_every == 0 or run.epoch > run.last_epoch:
        save(run, f"ckpt-epoch{run.epoch - 1:03d}.pt")


def evaluate(run: Run, split: str) -> None:
    """Score the shipped model on the validation or test split, exactly, and log it.

    Under torchrun each rank scores a share and the sums are added up. The test logits are
    kept: after the temperature is fitted they are re-scored, not recomputed."""
    if split == "test" and run.test_logits is not None and run.test_logits[0] == run.epoch:
        logits, labels = run.test_logits[1:]
    else:
        loader = run.data.test if split == "test" else run.data.val
        assert loader is not None, "evaluated on a validation split that the run does not hold"
        logits, labels = shard_logits(run.shipped, loader)
    if split == "test":
        run.test_logits = (run.epoch, logits, labels)
    t = run.card.temperature
    ev = evaluation_from_logits(logits, labels, run.card.classes, t, across_ranks=True, head=run.cfg.head)
    run.log.record(event=split, epoch=run.epoch, correct=ev.correct, total=ev.total, accuracy=ev.accuracy,
                   loss=ev.loss, ece=ev.ece, brier=ev.brier, temperature=t)
    run.log.line(f"epoch {run.epoch:>3} {split}: {format_accuracy(ev.correct, ev.total)}  loss {ev.loss:.4f}")


def calibrate(run: Run) -> None:
    """Temperature scaling, fitted on the validation split only (with `calibrate` "held-out", on it
    and its copies under each held-out corruption as well); the test set is then reported with it.

    One pass over the validation split: every rank holds all of it, so no sums are needed."""
    assert run.data.val is not None, "calibrated without a validation split"
    logits, labels = predict_logits(run.shipped, run.data.val)
    head = run.cfg.head
    score = REJECT_SCORE_FOR[head, bool(run.cfg.outlier_exposure)]  # "not a digit": keeps reject_keep of them
    clean = logits  # the threshold is the clean validation digits' own, whatever the temperature is fitted on
    if run.cfg.calibrate == "held-out":
        logits, labels = held_out_logits(run, logits, labels)
    temperature = fit_temperature(logits, labels, head)
    before = evaluation_from_logits(logits, labels, run.card.classes, head=head)
    after = evaluation_from_logits(logits, labels, run.card.classes, temperature, head=head)
    threshold = reject_threshold(ood_score(clean.cpu().numpy(), score, temperature, head), run.cfg.reject_keep)
    run.card = dataclasses.replace(run.card, temperature=temperature, reject_score=score, reject_threshold=threshold)
    run.log.record(event="calibration", on=run.cfg.calibrate, temperature=temperature, val_ece_before=before.ece,
                   val_ece_after=after.ece, val_nll_before=before.loss, val_nll_after=after.loss)
    on = "" if run.cfg.calibrate == "clean" else f" and its {len(HELD_OUT)} held-out corruptions"
    run.log.line(f"temperature {temperature:.3f} fitted on the validation split{on}: ECE {100 * before.ece:.2f}% -> "
                 f"{100 * after.ece:.2f}%, NLL {before.loss:.4f} -> {after.loss:.4f}")
    run.log.record(event="reject_threshold", score=score, threshold=threshold, split="validation",
                   images=len(clean))
    run.log.line(f"'not a digit' below {score} {threshold:.4g}: the threshold that keeps "
                 f"{100 * run.cfg.reject_keep:g}% of the {len(clean)} validation digits")
    evaluate(run, "test")


def held_out_logits(run: Run, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The validation logits and labels, followed by those of the validation images under each
    held-out corruption (seeded by the run's seed; never MNIST-C's 15 test corruptions)."""
    val = run.data.val
    assert val is not None, "calibrated without a validation split"
    images, parts = val.images.cpu().numpy(), [(logits, labels)]
    for name in HELD_OUT:
        corrupted = torch.from_numpy(corrupt(images, name, seed=run.cfg.seed))
        parts.append(predict_logits(run.shipped, Loader(corrupted, val.labels, val.batch_size, val.mean, val.std,
                                                        val.images.device, val.channels_last)))
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def save(run: Run, name: str, final: bool = False) -> Path:
    """Write a checkpoint into the run folder (rank 0 only): the whole training state, or with
    `final` the shipped weights alone (model.pt, and the same as model.safetensors)."""
    path = run.run_dir / name
    # Ctrl-C part-way through an epoch: its running figures too (summed over the ranks, so every rank asks)
    stats = run.stats.state_dict() if run.step_in_epoch and not final else None
    if not dist.is_main():
        return path
    weights = _cpu(run.shipped.state_dict())
    state = {"config": run.cfg.to_dict(), "epoch": run.epoch, "step_in_epoch": run.step_in_epoch,
             "global_step": run.global_step, "train_seconds": run.train_seconds, "history": run.log.history,
             "model_state": weights}
    if not final:
        state |= {"optimizer_state": run.opt.state_dict(), "rng_state": torch.get_rng_state(),
                  "scheduler_state": run.sched.state_dict() if run.sched is not None else None}
        if stats is not None:
            state["epoch_stats"] = stats
        if run.ema is not None:
            state |= {"train_model_state": _cpu(run.model.state_dict()), "ema_state": _cpu(run.ema.state_dict())}
    save_checkpoint(run.card, state, path)
    if final:  # the weights in the ecosystem's format too; resumable checkpoints stay .pt (optimiser state)
        save_weights(run.card, weights, path.with_suffix(".safetensors"))
    return path


def finish(run: Run, report: bool, data_dir) -> TrainResult:
    """Save model.pt, print the final test figure, and write the report."""
    final = next(e for e in reversed(run.log.history) if e["event"] == "test")
    if run.report is not None:
        run.report.start()  # if the last epoch did not (a validation split: the temperature came after it)
    model_path = save(run, "model.pt", final=True)
    run.log.line(f"test accuracy: {format_accuracy(final['correct'], final['total'])}; "
                 f"{run.train_seconds:.2f} s of training; saved {model_path}")
    if report and dist.world_size() > 1 and run.test_logits is not None:  # every rank: rank 0 draws all of them
        run.test_logits = (run.test_logits[0], *map(dist.gather_shards, run.test_logits[1:]))
    if run.report is not None:
        run.log.line(run.report.join())
    elif report and dist.is_main():
        write_report(run, data_dir)
    return TrainResult(run.run_dir, model_path, final["correct"], final["total"], run.train_seconds,
                       run.log.history)


def write_report(run: Run, data_dir) -> None:
    """The run's pictures and HTML page, where matplotlib is installed (mnistlab[report]), from the
    final test logits (one process holds all of them) or else from model.pt."""
    try:
        from .report import build_report
    except ImportError:
        run.log.line("(no report: matplotlib is not installed; pip install 'mnistlab[report]')")
        return
    run.log.line(f"report: {build_report(run.run_dir, data_dir=data_dir, scored=_scored(run))}")


def _scored(run: Run) -> tuple | None:
    """(test images, calibrated probabilities, labels) from the last test pass, when it holds the whole test set."""
    if run.test_logits is None or len(run.test_logits[1]) != len(run.data.test.images):
        return None
    _, logits, labels = run.test_logits
    probs = head_log_probabilities(logits.cpu(), run.card.temperature, run.card.head).exp()
    return run.data.test.images.cpu(), probs, labels.cpu()


class BackgroundReport:
    """The report drawn in a thread while the last checkpoints are written (speed-up background-report):
    started once the final test figures are in, joined for the line that write_report would print."""

    def __init__(self, run: Run, data_dir):
        self.run, self.data_dir = run, data_dir
        self.thread: threading.Thread | None = None
        self.result: str | BaseException = ""

    def start(self) -> None:
        if self.thread is None:  # the figures and card as they are now: the main thread moves on
            args = (self.run.run_dir, _scored(self.run), self.run.card)
            self.thread = threading.Thread(target=self._draw, args=args, name="mnistlab-report", daemon=True)
            self.thread.start()

    def _draw(self, run_dir: Path, scored: tuple | None, card: ModelCard) -> None:
        try:
            from .report import build_report
        except ImportError:
            self.result = "(no report: matplotlib is not installed; pip install 'mnistlab[report]')"
            return
        try:
            self.result = f"report: {build_report(run_dir, data_dir=self.data_dir, scored=scored, card=card)}"
        except BaseException as e:  # raised again in the main thread, by join
            self.result = e

    def join(self) -> str:
        """The line to print, once the report is drawn; its error, raised here."""
        self.start()
        assert self.thread is not None
        self.thread.join()
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


# ---- setting a run up ----

def start(cfg: RunConfig | None, out, resume, data_dir, progress, changes: dict) -> Run:
    """A run ready for its first step: a fresh one, or one restored from a checkpoint. Everything
    is built and checked before the run folder is touched: a damaged checkpoint writes nothing."""
    state = None
    if resume:
        if cfg is not None:
            raise MnistlabError("a resumed run keeps its own config: give train() changes, not a config.")
        resume, state = read_resume_state(resume)
        cfg = resumed(_saved_config(state["config"], resume), changes)
        out = out or resume.parent
    elif cfg is None:
        raise MnistlabError("train() needs a RunConfig, or a checkpoint to resume.")
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = dist.join_process_group(resolve_device(cfg.device))
    cores = CoreShare.for_run(device, cfg.threads)
    if device.type == "cpu":
        keep_freed_memory()
    spec = get_dataset_spec(cfg.dataset)
    if (cfg.augment or {}).get("flip"):
        refuse_mirrors(cfg.dataset, "augment flip")
    card = ModelCard(model=cfg.model, model_config=cfg.model_config, dataset=cfg.dataset, classes=spec.classes,
                     mean=spec.mean, std=spec.std, val_size=cfg.val_size, head=cfg.head)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, card.outputs, **cfg.model_config)
    channels_last = getattr(model, "channels_last", False)
    model = model.to(device, memory_format=torch.channels_last if channels_last  # type: ignore[call-overload]
                     else torch.contiguous_format)  # (torch's stubs lack Module.to's memory_format)
    data = load_data(cfg, device, channels_last, data_dir)
    total_steps = run_steps(cfg.epochs, len(data.train))  # the Run's own, needed before it is built
    graphed = (cfg.cuda_graph and device.type == "cuda" and dist.world_size() == 1 and cfg.optimizer != "sgd")
    opt = make_optimizer(cfg, model, capturable=graphed)
    # in a CUDA graph beta1 stays fixed: Adam's foreach kernels read a tensor beta1 on the host (PyTorch 2.11)
    sched = make_scheduler(cfg, opt, total_steps, cycle_momentum=not graphed)
    ema = None
    if cfg.ema:  # the average includes the batch-norm statistics
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
    counters = {}
    if state is not None:
        counters = restore(state, resume, card, model, ema, opt, sched, len(data.train))
        if counters["global_step"] > total_steps:
            raise MnistlabError(f"--epochs {cfg.epochs} ends before {resume}, which has trained "
                                f"{counters['global_step']} of the run's steps.")

    run_dir = prepare_run_dir(out, cfg, resuming_from=resume.parent if resume else None)
    log = RunLog(run_dir / "metrics.jsonl", progress, state["history"] if state else None)
    ddp_model = dist.wrap(model)
    if cfg.compile:
        ddp_model = cast(torch.nn.Module, torch.compile(ddp_model, mode=cfg.compile))  # a module compiles to one
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    step = (GraphedStep if graphed else EagerStep)(ddp_model, opt, amp_dtype(cfg.precision, device),
                                                   cfg.label_smoothing, cfg.head, cfg.outlier_exposure)
    run = Run(cfg=cfg, card=card, model=model, ema=ema, opt=opt, sched=sched, step=step,
              augment=Augment(**cfg.augment) if cfg.augment else None, data=data, log=log, run_dir=run_dir,
              cores=cores, outliers=outlier_batches(cfg, data, data_dir), synthetic=synthetic_batches(cfg, data, log),
              **counters)
    if state is not None:
        log.line(f"resuming {resume} at epoch {run.epoch}, step {run.step_in_epoch}/{len(data.train)}")
    log.line(f"training {cfg.model} on {cfg.dataset} ({len(data.train.images)} images, {len(data.train)} "
             f"steps/epoch, {run.total_steps} steps, {device.type}{', CUDA graph' if graphed else ''}, "
             f"{'bf16 autocast' if step.amp else 'fp32'}{dist.describe()}) -> {run_dir}")
    return run


def read_resume_state(resume: str | os.PathLike) -> tuple[Path, dict]:
    """The checkpoint to resume (a run folder means its latest) and its whole state."""
    if Path(resume).is_dir():
        found = latest_checkpoint(resume)
        if found is None:
            raise MnistlabError(f"{resume}: no checkpoint here to resume from (ckpt-epochNNN.pt or "
                                "ckpt-interrupt.pt); is it a folder written by mnistlab train?")
        resume = found
    _, state = load_checkpoint(resume)
    if "optimizer_state" not in state:
        raise CheckpointError(f"{resume}: holds only final weights, not a resumable training state.")
    return Path(resume), state


def _saved_config(saved, path: Path) -> RunConfig:
    if not isinstance(saved, dict):
        raise damaged(path, "config", "is not a dictionary")
    try:
        return RunConfig.from_dict(saved).validate()
    except (MnistlabError, TypeError) as e:
        raise damaged(path, "config", f"does not hold a valid run ({str(e).rstrip('.')})") from None


def damaged(path: Path, key: str, what: str) -> CheckpointError:
    return CheckpointError(f"{path}: its training state is damaged: '{key}' {what}.")


def restore(state: dict, path: Path, card: ModelCard, model, ema, opt, sched, steps_per_epoch: int) -> dict:
    """Load a checkpoint's training state into the freshly built parts, each key checked first
    (one sentence naming the key); returns the Run's counters (epoch, step_in_epoch, ...)."""
    counters = _counters(state, path, steps_per_epoch)
    history = state.get("history")
    if not isinstance(history, list) or not all(isinstance(e, dict) and isinstance(e.get("event"), str)
                                                for e in history):
        raise damaged(path, "history", "is not a list of events")
    rng = state.get("rng_state")
    if not (torch.is_tensor(rng) and rng.dtype == torch.uint8 and rng.dim() == 1):
        raise damaged(path, "rng_state", "is missing or not a random generator's state")
    parts = [("model_state" if ema is None else "train_model_state", model.load_state_dict),
             ("optimizer_state", opt.load_state_dict)]
    if ema is not None:
        parts.append(("ema_state", ema.load_state_dict))
    if sched is not None:
        parts.append(("scheduler_state", sched.load_state_dict))
    check_weights(card, state["model_state"], path)
    for key, load in parts:
        _load_part(state, key, load, path)
    _check_param_groups(opt, path)
    torch.set_rng_state(rng)
    stats = state.get("epoch_stats")  # an interrupted epoch's running figures, so its event matches an unbroken one
    if stats is not None and not (isinstance(stats, dict) and counters["step_in_epoch"]):
        raise damaged(path, "epoch_stats", "does not belong to an epoch under way")
    return counters | {"stats_state": stats}


def _counters(state: dict, path: Path, steps_per_epoch: int) -> dict:
    """epoch, step_in_epoch, global_step and train_seconds, checked against each other: a checkpoint
    with epoch -5 or step_in_epoch 1e9 would train silently wrong, or loop without end."""
    out = {}
    for key in ("epoch", "step_in_epoch", "global_step", "train_seconds"):
        value: Any = state.get(key)
        ok = (isinstance(value, (int, float)) if key == "train_seconds" else isinstance(value, int))
        if not ok or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise damaged(path, key, f"is {value!r}, not a number of zero or more")
        out[key] = value
    epoch, step, done = out["epoch"], out["step_in_epoch"], out["global_step"]
    # where an epoch is under way, the steps so far are exact; the checkpoint after a fractional last
    # epoch (--epochs 1.5) has moved to the next epoch having done only part of the one before
    agree = (done == (epoch - 1) * steps_per_epoch + step if step else
             (epoch - 2) * steps_per_epoch < done <= (epoch - 1) * steps_per_epoch)
    if epoch < 1 or step >= steps_per_epoch or not agree:
        raise damaged(path, "epoch", f"{epoch}, step {step} and global_step {done} do not agree "
                      f"with the run's {steps_per_epoch} steps an epoch")
    return out


def _load_part(state: dict, key: str, load, path: Path) -> None:
    value = state.get(key)
    if not isinstance(value, dict):
        raise damaged(path, key, "is missing")
    try:
        load(value)
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError, AttributeError) as e:
        raise damaged(path, key, f"does not fit this run ({first_line(e, 120)})") from None


def _check_param_groups(opt: torch.optim.Optimizer, path: Path) -> None:
    """The optimiser's settings as loaded: finite numbers (a string lr failed at the first step)."""
    for group in opt.param_groups:
        for key in ("lr", "momentum", "weight_decay", "betas", "eps"):
            values = group.get(key, 0.0)
            for v in values if isinstance(values, (tuple, list)) else [values]:
                v = v.item() if torch.is_tensor(v) and v.numel() == 1 else v
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise damaged(path, f"optimizer_state.param_groups.{key}", f"is {v!r}, not a finite number")


def load_data(cfg: RunConfig, device: torch.device, channels_last: bool, data_dir) -> Data:
    """Decode each split once, keep it on the device; the training order is (seed, epoch)-derived."""
    spec = get_dataset_spec(cfg.dataset)
    # the same validation split as `eval --split validation` reads: stratified for a dataset from a path
    if cfg.val_size:
        (images, labels), val = carve(cfg.dataset, cfg.val_size, data_dir)
    else:
        (images, labels), val = load_split(cfg.dataset, "train", data_dir), None
    if cfg.train_limit:
        images, labels = images[:cfg.train_limit], labels[:cfg.train_limit]
    if cfg.batch_size % dist.world_size():
        raise MnistlabError(f"--batch-size {cfg.batch_size} must be a multiple of the {dist.world_size()} processes.")
    order = dist.shard(lambda epoch: epoch_permutation(len(images), cfg.seed, epoch))

    def loader(split: tuple[torch.Tensor, torch.Tensor], batch_size: int, order=None) -> Loader:
        return Loader(*split, batch_size, spec.mean, spec.std, device, channels_last, order=order)

    return Data(train=loader((images, labels), cfg.batch_size // dist.world_size(), order),
                test=loader(load_split(cfg.dataset, "test", data_dir), cfg.test_batch_size),
                val=loader(val, cfg.test_batch_size) if val is not None else None)


def outlier_batches(cfg: RunConfig, data: Data, data_dir) -> OutlierBatches | None:
    """Outlier exposure's pool: a quarter as many made-up non-digits as training images, at most
    OUTLIER_POOL (their order is seeded, their share half a batch)."""
    if not cfg.outlier_exposure:
        return None
    pool = outlier_set("train", min(OUTLIER_POOL, max(256, len(data.train.images) // 4)), cfg.seed, data_dir,
                       cfg.outlier_family_names)
    return OutlierBatches(pool, max(1, data.train.batch_size // 2), data.train, cfg.seed)


def synthetic_batches(cfg: RunConfig, data: Data, log) -> SyntheticBatches | None:
    """The font digits' pool: a third as many as training images, at most SYNTHETIC_POOL; each
    process draws its own from it. The fonts at hand decide the digits: a missing family is said."""
    if not cfg.synthetic_digits:
        return None
    missing = missing_packages()
    if missing:
        log.line(f"note: the font digits are drawn without {', '.join(missing)} (not installed): this run's weights "
                 "differ from a run with them (apt-get install them for the shipped recipe's digits)")
    images, labels = digit_set(min(SYNTHETIC_POOL, max(1_000, len(data.train.images) // 3)), cfg.seed)
    return SyntheticBatches(images, labels, cfg.synthetic_digits, data.train, cfg.seed, stream=dist.rank())


def make_optimizer(cfg: RunConfig, model: torch.nn.Module, capturable: bool = False) -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.optimizer == "sgd" and cfg.schedule == "constant" and enabled("foreach-sgd"):
        # the same arithmetic bit for bit, without torch.optim's import of torch._dynamo (a scheduler needs torch.optim)
        return cast(torch.optim.Optimizer, ForeachSGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                                      weight_decay=cfg.weight_decay))
    # fused kernels: one pass over the parameters instead of several small ops per tensor
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, fused=True)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    if capturable:  # for a CUDA graph: foreach kernels read lr and betas from device tensors (fused ones sync)
        return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True, capturable=True)
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)


def make_scheduler(cfg: RunConfig, opt: torch.optim.Optimizer, total_steps: int, cycle_momentum: bool = True):
    if cfg.schedule != "onecycle":
        return None
    if total_steps < 3:
        raise MnistlabError(f"the one-cycle schedule needs at least 3 steps, and this run has {total_steps} "
                            f"(--epochs {cfg.epochs:g} at batch {cfg.batch_size}): give more --epochs or a smaller "
                            "--batch-size.")
    # each of its two phases at least a step long: a short run (a small dataset of one's own) would divide by zero
    warmup = min(max(cfg.warmup, 2 / total_steps), (total_steps - 1) / total_steps)
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total_steps, pct_start=warmup,
                                               cycle_momentum=cycle_momentum)


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in state.items()}
