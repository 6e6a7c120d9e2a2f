"""Training: one function, `train(config)`, readable top to bottom.

The whole dataset sits on the device as uint8; each epoch's order is a pure function of
(seed, epoch), so a checkpoint taken anywhere resumes to the same final weights.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch
from tqdm import tqdm

from . import distributed as dist
from .augment import Augment
from .checkpoints import load_checkpoint, save_checkpoint
from .config import RunConfig
from .data import Loader, epoch_permutation, get_dataset_spec, load_split
from .errors import CheckpointError, MnistlabError
from .evaluation import evaluation_from_logits, fit_temperature, format_accuracy, predict_logits, shard_logits
from .fileio import write_json
from .models import build_model
from .steps import EagerStep, GraphedStep


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise MnistlabError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MnistlabError("--device cuda was asked for, but this PyTorch sees no CUDA GPU.")
    return device


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast, or None for plain fp32. 'auto' uses bf16 where the hardware does it natively."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None
    return None


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


def split_train_val(images: torch.Tensor, labels: torch.Tensor, val_size: int):
    """Carve a fixed validation split from the training set (same for every seed)."""
    if val_size >= len(images):
        raise MnistlabError(f"--val-size {val_size} leaves no training images (the set has {len(images)}).")
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(20240601))
    val, train = perm[:val_size], perm[val_size:].sort().values
    return (images[train], labels[train]), (images[val], labels[val])


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


class _StopRequest:
    """First Ctrl-C asks the loop to stop after the current step; a second one stops at once."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        if dist.is_main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def new_run_dir(cfg: RunConfig, root: str = "runs") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{cfg.model}-{cfg.dataset}-{stamp}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


def _prepare_run_dir(out: str | os.PathLike | None, cfg: RunConfig, resuming: bool) -> Path:
    run_dir = Path(dist.broadcast_str(str(out) if out else str(new_run_dir(cfg))))
    if run_dir.exists() and not run_dir.is_dir():
        raise MnistlabError(f"--out {run_dir} is a file, not a folder.")
    if not resuming and run_dir.is_dir() and any(run_dir.glob("*.pt")):
        raise MnistlabError(f"--out {run_dir} already holds a run; choose another folder or use --resume.")
    if dist.is_main():
        write_json(cfg.to_dict(), run_dir / "config.json")  # fails early if the folder is unwritable
    return run_dir


class _Log:
    """Plain lines, or a tqdm bar on a terminal; only rank 0 speaks and writes metrics."""

    def __init__(self, metrics_path: Path, progress: bool | None):
        self.speak = dist.is_main()
        self.progress = self.speak and (sys.stderr.isatty() if progress is None else progress)
        self.metrics_path = metrics_path
        self.history: list[dict] = []

    def line(self, text: str) -> None:
        if self.speak:
            tqdm.write(text, file=sys.stdout)

    def record(self, **event) -> None:
        self.history.append(event)
        if self.speak:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(event) + "\n")

    def bar(self, total: int, initial: int, desc: str):
        return tqdm(total=total, initial=initial, desc=desc, leave=False, disable=not self.progress,
                    dynamic_ncols=True)


@dataclass
class _Data:
    train: Loader
    test: Loader
    val: Loader | None


def _loaders(cfg: RunConfig, device: torch.device, channels_last: bool, data_dir) -> _Data:
    """Decode each split once, keep it on the device; the training order is (seed, epoch)-derived."""
    spec = get_dataset_spec(cfg.dataset)
    images, labels = load_split(cfg.dataset, train=True, data_dir=data_dir)
    (images, labels), (val_images, val_labels) = split_train_val(images, labels, cfg.val_size)
    if cfg.train_limit:
        images, labels = images[:cfg.train_limit], labels[:cfg.train_limit]
    n_train = len(images)
    if cfg.batch_size % dist.world_size():
        raise MnistlabError(f"--batch-size {cfg.batch_size} must be a multiple of the {dist.world_size()} processes.")
    order = dist.shard(lambda epoch: epoch_permutation(n_train, cfg.seed, epoch))

    def loader(x, y, batch_size, order=None):
        return Loader(x, y, batch_size, spec.mean, spec.std, device, channels_last, order=order)

    test_images, test_labels = load_split(cfg.dataset, train=False, data_dir=data_dir)
    return _Data(train=loader(images, labels, cfg.batch_size // dist.world_size(), order),
                 test=loader(test_images, test_labels, cfg.test_batch_size),
                 val=loader(val_images, val_labels, cfg.test_batch_size) if cfg.val_size else None)


def train(cfg: RunConfig, out: str | os.PathLike | None = None, resume: str | os.PathLike | None = None,
          data_dir: str | os.PathLike | None = None, progress: bool | None = None,
          report: bool = False) -> TrainResult:
    """Train `cfg.model` on `cfg.dataset`, evaluate on the test set, save into a run folder."""
    state = None
    if resume:
        state = load_checkpoint(resume)
        if "optimizer_state" not in state:
            raise CheckpointError(f"{resume}: holds only final weights, not a resumable training state.")
        cfg = RunConfig.from_dict(state["config"])
        out = out or Path(resume).parent
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = dist.device_for_rank(resolve_device(cfg.device))
    if device.type == "cpu":
        keep_freed_memory()
    amp = amp_dtype(cfg.precision, device)
    spec = get_dataset_spec(cfg.dataset)
    run_dir = _prepare_run_dir(out, cfg, resuming=state is not None)
    log = _Log(run_dir / "metrics.jsonl", progress)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, **cfg.model_config)
    channels_last = getattr(model, "channels_last", False)
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    data = _loaders(cfg, device, channels_last, data_dir)
    steps_per_epoch = len(data.train)
    total_steps = max(1, round(cfg.epochs * steps_per_epoch))
    last_epoch = math.ceil(total_steps / steps_per_epoch)
    graphed = (cfg.cuda_graph and device.type == "cuda" and dist.world_size() == 1 and not cfg.compile
               and cfg.optimizer != "sgd")
    opt = make_optimizer(cfg, model, capturable=graphed)
    # in a CUDA graph beta1 stays fixed: Adam's foreach kernels read a tensor beta1 on the host (PyTorch 2.11)
    sched = make_scheduler(cfg, opt, total_steps, cycle_momentum=not graphed)
    augment = Augment(**cfg.augment) if cfg.augment else None
    ddp_model = dist.wrap(model)
    # an exponential moving average of the weights (and BN statistics) is what gets evaluated and shipped
    ema = (torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(
        cfg.ema), use_buffers=True) if cfg.ema else None)
    shipped = ema.module if ema is not None else model
    temperature = 1.0
    if cfg.compile:
        ddp_model = torch.compile(ddp_model, mode=cfg.compile)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    epoch, step_in_epoch, global_step, train_seconds = 1, 0, 0, 0.0
    if state is not None:
        model.load_state_dict(state["train_model_state"] if ema is not None else state["model_state"])
        if ema is not None:
            ema.load_state_dict(state["ema_state"])
        opt.load_state_dict(state["optimizer_state"])
        if sched is not None and state.get("scheduler_state"):
            sched.load_state_dict(state["scheduler_state"])
        torch.set_rng_state(state["rng_state"])
        epoch, step_in_epoch = state["epoch"], state["step_in_epoch"]
        global_step, train_seconds = state["global_step"], state["train_seconds"]
        log.history = list(state.get("history", []))
        log.line(f"resuming {resume} at epoch {epoch}, step {step_in_epoch}/{steps_per_epoch}")
    step = (GraphedStep if graphed else EagerStep)(ddp_model, opt, amp, cfg.label_smoothing)

    def checkpoint(path: Path, final: bool = False) -> None:
        if not dist.is_main():
            return
        ckpt = {
            "model": cfg.model, "model_config": cfg.model_config, "dataset": cfg.dataset,
            "normalization": [spec.mean, spec.std], "classes": list(spec.classes),
            "config": cfg.to_dict(), "epoch": epoch, "step_in_epoch": step_in_epoch,
            "global_step": global_step, "train_seconds": train_seconds, "history": log.history,
            "model_state": _cpu(shipped.state_dict()), "temperature": temperature,
        }
        if not final:  # model.pt carries weights only; checkpoints carry the whole training state
            ckpt |= {"optimizer_state": opt.state_dict(), "rng_state": torch.get_rng_state(),
                     "scheduler_state": sched.state_dict() if sched is not None else None}
            if ema is not None:
                ckpt |= {"train_model_state": _cpu(model.state_dict()), "ema_state": _cpu(ema.state_dict())}
        save_checkpoint(ckpt, path)

    scored: dict = {}  # the last test pass's logits, re-scored with the temperature rather than re-run

    def test(split: str, loader: Loader) -> None:
        if split == "test" and scored.get("epoch") == epoch:
            logits, labels = scored["logits"]
        else:
            logits, labels = shard_logits(shipped, loader)
        if split == "test":
            scored.update(epoch=epoch, logits=(logits, labels))
        ev = evaluation_from_logits(logits, labels, spec.classes, temperature, across_ranks=True)
        log.record(event=split, epoch=epoch, correct=ev.correct, total=ev.total, accuracy=ev.accuracy,
                   loss=ev.loss, ece=ev.ece, brier=ev.brier, temperature=temperature)
        log.line(f"epoch {epoch:>3} {split}: {format_accuracy(ev.correct, ev.total)}  loss {ev.loss:.4f}")

    log.line(f"training {cfg.model} on {cfg.dataset} ({len(data.train.images)} images, {steps_per_epoch} "
             f"steps/epoch, {total_steps} steps, {device.type}{', CUDA graph' if graphed else ''}, "
             f"{'bf16 autocast' if amp else 'fp32'}"
             f"{dist.describe()}) -> {run_dir}")
    model.train()
    with _StopRequest() as stop:
        while epoch <= last_epoch:
            epoch_steps = min(steps_per_epoch, total_steps - (epoch - 1) * steps_per_epoch)
            running, seen = torch.zeros((), device=device), 0
            # the epoch's training figures: loss summed at each log line, correct answers counted per step
            epoch_loss, epoch_steps_seen, epoch_correct, epoch_images = 0.0, 0, torch.zeros((), device=device), 0
            bar = log.bar(epoch_steps, step_in_epoch, f"epoch {epoch}/{last_epoch}")
            t0 = time.perf_counter()
            for x, y in data.train.batches(epoch, step_in_epoch):
                if augment is not None:
                    x = augment(x, seed=cfg.seed * 1_000_003 + global_step, background=data.train.background)
                loss, correct = step(x, y)
                if sched is not None:
                    sched.step()
                    step.after_schedule()
                if ema is not None:
                    ema.update_parameters(model)
                running += loss
                epoch_correct += correct
                epoch_images += len(y)
                seen, step_in_epoch, global_step = seen + 1, step_in_epoch + 1, global_step + 1
                bar.update()
                if step_in_epoch % cfg.log_interval == 0 or step_in_epoch == epoch_steps:
                    mean = _check_finite(running.item() / seen, epoch, step_in_epoch, cfg.lr)
                    epoch_loss, epoch_steps_seen = epoch_loss + mean * seen, epoch_steps_seen + seen
                    log.record(event="train", epoch=epoch, step=step_in_epoch, loss=mean)
                    if step_in_epoch % cfg.log_interval == 0:
                        log.line(f"epoch {epoch:>3} [{step_in_epoch:>5}/{epoch_steps}] loss {mean:.4f}")
                    running, seen = torch.zeros((), device=device), 0
                if step_in_epoch == epoch_steps or dist.any_rank(stop.requested, global_step):
                    break
            train_seconds += time.perf_counter() - t0
            bar.close()
            if step_in_epoch == epoch_steps:  # the epoch is complete
                count, index_sum, index_sq_sum = dist.all_reduce_sum(data.train.served_checksum()).tolist()
                correct = dist.all_reduce_sum(epoch_correct.float()).item()
                images_seen = dist.world_size() * epoch_images
                log.record(event="epoch", epoch=epoch, train_seconds=train_seconds, steps=global_step,
                           samples=int(count), index_sum=int(index_sum), index_sq_sum=int(index_sq_sum),
                           train_loss=epoch_loss / max(epoch_steps_seen, 1),
                           train_accuracy=correct / max(images_seen, 1))
                if data.val is not None:
                    test("validation", data.val)
                if epoch % cfg.eval_every == 0 or epoch == last_epoch:
                    test("test", data.test)
                epoch, step_in_epoch = epoch + 1, 0
                if (epoch - 1) % cfg.checkpoint_every == 0 or epoch > last_epoch:
                    checkpoint(run_dir / f"ckpt-epoch{epoch - 1:03d}.pt")
            if stop.requested:
                path = run_dir / "ckpt-interrupt.pt"
                checkpoint(path)
                log.line(f"interrupted: saved {path}; continue with: mnistlab train --resume {path}")
                raise KeyboardInterrupt

    epoch = last_epoch
    if data.val is not None and not any(e["event"] == "calibration" for e in log.history):
        # temperature scaling, fitted on the validation split only; the test set is then reported with it
        # one pass over the validation split; every rank holds all of it, so no sums are needed
        logits, labels = predict_logits(shipped, data.val)
        temperature = fit_temperature(logits, labels)
        before = evaluation_from_logits(logits, labels, spec.classes)
        after = evaluation_from_logits(logits, labels, spec.classes, temperature)
        log.record(event="calibration", temperature=temperature, val_ece_before=before.ece, val_ece_after=after.ece,
                   val_nll_before=before.loss, val_nll_after=after.loss)
        log.line(f"temperature {temperature:.3f} fitted on the validation split: ECE {100 * before.ece:.2f}% -> "
                 f"{100 * after.ece:.2f}%, NLL {before.loss:.4f} -> {after.loss:.4f}")
        test("test", data.test)
    final = next(e for e in reversed(log.history) if e["event"] == "test")
    model_path = run_dir / "model.pt"
    checkpoint(model_path, final=True)
    log.line(f"test accuracy: {format_accuracy(final['correct'], final['total'])}; "
             f"{train_seconds:.2f} s of training; saved {model_path}")
    if dist.is_main() and report:
        _write_report(run_dir, log, data_dir)
    return TrainResult(run_dir, model_path, final["correct"], final["total"], train_seconds, log.history)


def _write_report(run_dir: Path, log: _Log, data_dir) -> None:
    """The run's pictures and HTML page, where matplotlib is installed (mnistlab[report])."""
    try:
        from .report import build_report
    except ImportError:
        log.line("(no report: matplotlib is not installed; pip install 'mnistlab[report]')")
        return
    page = build_report(run_dir, data_dir=data_dir)
    log.line(f"report: {page}")


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in state.items()}


def keep_freed_memory() -> None:
    """Ask glibc to keep freed memory instead of returning it to the OS.

    By default each large activation is a fresh mmap whose pages fault in on first touch,
    every step; measured here, that was a third of a batch-256 CNN step on the CPU.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, Windows, musl): nothing to tune
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, (1 << 31) - 1)
    libc.mallopt(m_top_pad, 1 << 27)


def _check_finite(value: float, epoch: int, step: int, lr: float) -> float:
    if not math.isfinite(value):
        raise MnistlabError(
            f"the training loss became {value} at epoch {epoch}, step {step}; the run stopped. "
            f"The learning rate ({lr}) is probably too high: try a lower --lr.")
    return value
