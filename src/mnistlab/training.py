"""Training: `train(config)`, and the few functions over a run's state that it is made of.

The whole dataset sits on the device as uint8; each epoch's order is a pure function of
(seed, epoch), so a checkpoint taken anywhere resumes to the same final weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import distributed as dist
from .augment import Augment
from .card import ModelCard
from .checkpoints import load_checkpoint, save_checkpoint
from .config import RunConfig, resumed
from .data import Loader, epoch_permutation, holdout, refuse_mirrors
from .device import amp_dtype, keep_freed_memory, resolve_device
from .errors import CheckpointError, MnistlabError
from .evaluation import evaluation_from_logits, fit_temperature, format_accuracy, predict_logits, shard_logits
from .models import build_model
from .owndata import get_dataset_spec, load_split  # registry names and paths (--dataset PATH) alike
from .runs import RunLog, StopRequest, latest_checkpoint, prepare_run_dir
from .steps import EagerStep, GraphedStep


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
    test_logits: tuple | None = None  # (epoch, logits, labels) of the last test pass, to re-score, not re-run

    @property
    def shipped(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else self.model

    @property
    def total_steps(self) -> int:
        return max(1, round(self.cfg.epochs * len(self.data.train)))

    @property
    def last_epoch(self) -> int:
        return math.ceil(self.total_steps / len(self.data.train))

    def epoch_steps(self) -> int:
        """Steps in the current epoch: a fractional --epochs ends the last one early."""
        return min(len(self.data.train), self.total_steps - (self.epoch - 1) * len(self.data.train))


def train(cfg: RunConfig | None = None, out: str | os.PathLike | None = None,
          resume: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
          progress: bool | None = None, report: bool = False, changes: dict | None = None) -> TrainResult:
    """Train `cfg.model` on `cfg.dataset`, evaluate on the test set, save into a run folder.

    With `resume` (a checkpoint), the run continues under its own config, with `changes` (field ->
    value, as the flags given) applied where config.RESUME_MAY_CHANGE allows."""
    run = start(cfg, out, resume, data_dir, progress, changes or {})
    with StopRequest() as stop, peers_watched(run):
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
    """An epoch's running figures, summed on the device and read only at log lines (.item() waits for it)."""

    def __init__(self, device: torch.device):
        self.device, self.loss_sum, self.steps, self.images = device, 0.0, 0, 0
        self.correct = torch.zeros((), device=device)
        self._running, self._seen = torch.zeros((), device=device), 0

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
    cfg, n = run.cfg, run.epoch_steps()
    stats = EpochStats(run.data.train.images.device)
    bar = run.log.bar(n, run.step_in_epoch, f"epoch {run.epoch}/{run.last_epoch}")
    t0 = time.perf_counter()
    for x, y in run.data.train.batches(run.epoch, run.step_in_epoch):
        if run.augment is not None:
            x = run.augment(x, seed=cfg.seed * 1_000_003 + run.global_step, background=run.data.train.background)
        loss, correct = run.step(x, y)
        if run.sched is not None:
            run.sched.step()
            run.step.after_schedule()
        if run.ema is not None:
            run.ema.update_parameters(run.model)
        stats.add(loss, correct, len(y))
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
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        saved = latest_checkpoint(run.run_dir)
        hint = (f"its last checkpoint is intact: continue with mnistlab train --resume {saved}" if saved
                else "no checkpoint had been written yet: start the run again")
        raise MnistlabError(f"rank {dist.rank()}: the distributed job broke ({first}); {hint}.") from None


def log_running_loss(run: Run, stats: EpochStats) -> None:
    mean = stats.running_loss()
    if not math.isfinite(mean):
        raise MnistlabError(
            f"the training loss became {mean} at epoch {run.epoch}, step {run.step_in_epoch}; the run stopped. "
            f"The learning rate ({run.cfg.lr}) is probably too high: try a lower --lr.")
    run.log.record(event="train", epoch=run.epoch, step=run.step_in_epoch, loss=mean)
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
    if (run.epoch - 1) % run.cfg.checkpoint_every == 0 or run.epoch > run.last_epoch:
        save(run, f"ckpt-epoch{run.epoch - 1:03d}.pt")


def evaluate(run: Run, split: str) -> None:
    """Score the shipped model on the validation or test split, exactly, and log it.

    Under torchrun each rank scores a share and the sums are added up. The test logits are
    kept: after the temperature is fitted they are re-scored, not recomputed."""
    if split == "test" and run.test_logits is not None and run.test_logits[0] == run.epoch:
        logits, labels = run.test_logits[1:]
    else:
        logits, labels = shard_logits(run.shipped, run.data.test if split == "test" else run.data.val)
    if split == "test":
        run.test_logits = (run.epoch, logits, labels)
    t = run.card.temperature
    ev = evaluation_from_logits(logits, labels, run.card.classes, t, across_ranks=True)
    run.log.record(event=split, epoch=run.epoch, correct=ev.correct, total=ev.total, accuracy=ev.accuracy,
                   loss=ev.loss, ece=ev.ece, brier=ev.brier, temperature=t)
    run.log.line(f"epoch {run.epoch:>3} {split}: {format_accuracy(ev.correct, ev.total)}  loss {ev.loss:.4f}")


def calibrate(run: Run) -> None:
    """Temperature scaling, fitted on the validation split only; the test set is then reported with it.

    One pass over the validation split: every rank holds all of it, so no sums are needed."""
    logits, labels = predict_logits(run.shipped, run.data.val)
    temperature = fit_temperature(logits, labels)
    before = evaluation_from_logits(logits, labels, run.card.classes)
    after = evaluation_from_logits(logits, labels, run.card.classes, temperature)
    run.card = dataclasses.replace(run.card, temperature=temperature)
    run.log.record(event="calibration", temperature=temperature, val_ece_before=before.ece,
                   val_ece_after=after.ece, val_nll_before=before.loss, val_nll_after=after.loss)
    run.log.line(f"temperature {temperature:.3f} fitted on the validation split: ECE {100 * before.ece:.2f}% -> "
                 f"{100 * after.ece:.2f}%, NLL {before.loss:.4f} -> {after.loss:.4f}")
    evaluate(run, "test")


def save(run: Run, name: str, final: bool = False) -> Path:
    """Write a checkpoint into the run folder (rank 0 only): the whole training state, or with
    `final` the shipped weights alone (model.pt)."""
    path = run.run_dir / name
    if not dist.is_main():
        return path
    state = {"config": run.cfg.to_dict(), "epoch": run.epoch, "step_in_epoch": run.step_in_epoch,
             "global_step": run.global_step, "train_seconds": run.train_seconds, "history": run.log.history,
             "model_state": _cpu(run.shipped.state_dict())}
    if not final:
        state |= {"optimizer_state": run.opt.state_dict(), "rng_state": torch.get_rng_state(),
                  "scheduler_state": run.sched.state_dict() if run.sched is not None else None}
        if run.ema is not None:
            state |= {"train_model_state": _cpu(run.model.state_dict()), "ema_state": _cpu(run.ema.state_dict())}
    save_checkpoint(run.card, state, path)
    return path


def finish(run: Run, report: bool, data_dir) -> TrainResult:
    """Save model.pt, print the final test figure, and write the report."""
    final = next(e for e in reversed(run.log.history) if e["event"] == "test")
    model_path = save(run, "model.pt", final=True)
    run.log.line(f"test accuracy: {format_accuracy(final['correct'], final['total'])}; "
                 f"{run.train_seconds:.2f} s of training; saved {model_path}")
    if report and dist.is_main():
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
    scored = None
    if dist.world_size() == 1 and run.test_logits is not None:
        _, logits, labels = run.test_logits
        probs = torch.softmax(logits.double().cpu() / run.card.temperature, 1)
        scored = (run.data.test.images.cpu(), probs, labels.cpu())
    run.log.line(f"report: {build_report(run.run_dir, data_dir=data_dir, scored=scored)}")


# ---- setting a run up ----

def start(cfg: RunConfig | None, out, resume, data_dir, progress, changes: dict) -> Run:
    """A run ready for its first step: a fresh one, or one restored from a checkpoint."""
    state = None
    if resume:
        if cfg is not None:
            raise MnistlabError("a resumed run keeps its own config: give train() changes, not a config.")
        if Path(resume).is_dir():  # a run folder: its latest checkpoint
            found = latest_checkpoint(resume)
            if found is None:
                raise MnistlabError(f"{resume}: no checkpoint here to resume from (ckpt-epochNNN.pt or "
                                    "ckpt-interrupt.pt); is it a folder written by mnistlab train?")
            resume = found
        _, state = load_checkpoint(resume)
        if "optimizer_state" not in state or not isinstance(state.get("config"), dict):
            raise CheckpointError(f"{resume}: holds only final weights, not a resumable training state.")
        cfg = resumed(RunConfig.from_dict(state["config"]), changes)
        out = out or Path(resume).parent
    elif cfg is None:
        raise MnistlabError("train() needs a RunConfig, or a checkpoint to resume.")
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = dist.join_process_group(resolve_device(cfg.device))
    if device.type == "cpu":
        keep_freed_memory()
    amp = amp_dtype(cfg.precision, device)
    spec = get_dataset_spec(cfg.dataset)
    if (cfg.augment or {}).get("flip"):
        refuse_mirrors(cfg.dataset, "augment flip")
    card = ModelCard(model=cfg.model, model_config=cfg.model_config, dataset=cfg.dataset, classes=spec.classes,
                     mean=spec.mean, std=spec.std, val_size=cfg.val_size)
    run_dir = prepare_run_dir(out, cfg, resuming_from=Path(resume).parent if resume else None)
    log = RunLog(run_dir / "metrics.jsonl", progress, state["history"] if state else None)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, len(spec.classes), **cfg.model_config)
    channels_last = getattr(model, "channels_last", False)
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    data = load_data(cfg, device, channels_last, data_dir)
    graphed = (cfg.cuda_graph and device.type == "cuda" and dist.world_size() == 1 and cfg.optimizer != "sgd")
    run = Run(cfg=cfg, card=card, model=model, ema=None, opt=make_optimizer(cfg, model, capturable=graphed),
              sched=None, step=None, augment=Augment(**cfg.augment) if cfg.augment else None, data=data,
              log=log, run_dir=run_dir)
    # in a CUDA graph beta1 stays fixed: Adam's foreach kernels read a tensor beta1 on the host (PyTorch 2.11)
    run.sched = make_scheduler(cfg, run.opt, run.total_steps, cycle_momentum=not graphed)
    if cfg.ema:  # the average includes the batch-norm statistics
        run.ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
    ddp_model = dist.wrap(model)
    if cfg.compile:
        ddp_model = torch.compile(ddp_model, mode=cfg.compile)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    if state is not None:
        if run.total_steps < state["global_step"]:
            raise MnistlabError(f"--epochs {cfg.epochs} ends before {resume}, which has trained "
                                f"{state['global_step']} of the run's steps.")
        restore(run, state)
        log.line(f"resuming {resume} at epoch {run.epoch}, step {run.step_in_epoch}/{len(data.train)}")
    run.step = (GraphedStep if graphed else EagerStep)(ddp_model, run.opt, amp, cfg.label_smoothing)
    log.line(f"training {cfg.model} on {cfg.dataset} ({len(data.train.images)} images, {len(data.train)} "
             f"steps/epoch, {run.total_steps} steps, {device.type}{', CUDA graph' if graphed else ''}, "
             f"{'bf16 autocast' if amp else 'fp32'}{dist.describe()}) -> {run_dir}")
    return run


def restore(run: Run, state: dict) -> None:
    run.model.load_state_dict(state["train_model_state"] if run.ema is not None else state["model_state"])
    if run.ema is not None:
        run.ema.load_state_dict(state["ema_state"])
    run.opt.load_state_dict(state["optimizer_state"])
    if run.sched is not None and state.get("scheduler_state"):
        run.sched.load_state_dict(state["scheduler_state"])
    torch.set_rng_state(state["rng_state"])
    run.epoch, run.step_in_epoch = state["epoch"], state["step_in_epoch"]
    run.global_step, run.train_seconds = state["global_step"], state["train_seconds"]


def load_data(cfg: RunConfig, device: torch.device, channels_last: bool, data_dir) -> Data:
    """Decode each split once, keep it on the device; the training order is (seed, epoch)-derived."""
    spec = get_dataset_spec(cfg.dataset)
    images, labels = load_split(cfg.dataset, "train", data_dir)
    val = None
    if cfg.val_size:
        (images, labels), val = holdout(images, labels, cfg.val_size)
    if cfg.train_limit:
        images, labels = images[:cfg.train_limit], labels[:cfg.train_limit]
    if cfg.batch_size % dist.world_size():
        raise MnistlabError(f"--batch-size {cfg.batch_size} must be a multiple of the {dist.world_size()} processes.")
    order = dist.shard(lambda epoch: epoch_permutation(len(images), cfg.seed, epoch))

    def loader(split, batch_size, order=None):
        return Loader(*split, batch_size, spec.mean, spec.std, device, channels_last, order=order)

    return Data(train=loader((images, labels), cfg.batch_size // dist.world_size(), order),
                test=loader(load_split(cfg.dataset, "test", data_dir), cfg.test_batch_size),
                val=loader(val, cfg.test_batch_size) if val is not None else None)


def make_optimizer(cfg: RunConfig, model: torch.nn.Module, capturable: bool = False) -> torch.optim.Optimizer:
    params = model.parameters()
    # fused kernels: one pass over the parameters instead of several small ops per tensor
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, fused=True)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    if capturable:  # for a CUDA graph: foreach kernels read lr and betas from device tensors (fused ones sync)
        return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True, capturable=True)
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)


def make_scheduler(cfg: RunConfig, opt: torch.optim.Optimizer, total_steps: int, cycle_momentum: bool = True):
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total_steps,
                                                   pct_start=cfg.warmup, cycle_momentum=cycle_momentum)
    return None


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in state.items()}
