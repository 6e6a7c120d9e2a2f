"""Training: `train(config)`, and the few functions over a run's state that it is made of.

The whole dataset sits on the device as uint8; each epoch's order is a pure function of
(seed, epoch), so a checkpoint taken anywhere resumes to the same final weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch

from .. import distributed as dist
from ..card import ModelCard
from ..checkpoints import save_checkpoint, save_weights
from ..data.mnist import Loader, epoch_permutation, refuse_mirrors
from ..data.outliers import OutlierBatches, outlier_set
from ..data.own import carve, get_dataset_spec, load_split
from ..device import CoreShare, amp_dtype, keep_freed_memory, resolve_device
from ..errors import CheckpointError, MnistlabError
from ..evaluation import (
    evaluation_from_logits,
    fit_temperature,
    format_accuracy,
    predict_logits,
    shard_logits,
)
from ..heads import head_of
from ..models import build_model
from ..ood import ood_score, reject_threshold
from .config import RunConfig, resumed
from .optim import ForeachAdam, ForeachSGD, adamw
from .report import COMPLETE, build_report, discard_report, launch_report
from .resume import check_steps_left, read_resume_state, restore, resume_command, saved_config
from .runs import RunLog, StopRequest, latest_checkpoint, prepare_run_dir
from .steps import EagerStep, GraphedStep
from .tensorboard_log import require_tensorboard, tensorboard_logged

if TYPE_CHECKING:  # imported where a run uses them: a plain run's start-up leaves them out
    from ..data.augment import Augment
    from ..data.synthetic import SyntheticBatches

OUTLIER_POOL = 12_000  # outlier exposure's made-up non-digits, rendered once per run (about 30 s on 2 cores)
ONECYCLE_MIN_STEPS = 3  # its rise and its fall each at least a step long
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
    epoch: int = 1  # the epoch under way or next to start: last_epoch + 1 once every epoch is trained
    step_in_epoch: int = 0
    global_step: int = 0
    train_seconds: float = 0.0
    cores: CoreShare | None = None  # this run's share of the CPU's cores, beside other trainings
    stats_state: dict | None = None  # the running figures of an epoch interrupted part-way, to carry on from
    test_logits: tuple | None = None  # (epoch, logits, labels) of the last test pass, to re-score, not re-run
    outliers: OutlierBatches | None = None  # outlier exposure's share of each batch (--outlier-exposure)
    synthetic: SyntheticBatches | None = None  # font digits in place of part of each batch (--synthetic-digits)
    clock: Stopwatch = field(default_factory=lambda: Stopwatch())  # seconds spent in each part, for --timings
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
          tensorboard: str | os.PathLike | bool | None = None, wait_for_report: bool = False) -> TrainResult:
    """Train `cfg.model` on `cfg.dataset`, evaluate on the test set, save into a run folder.

    With `resume` (a checkpoint), the run continues under its own config, with `changes` (field ->
    value, as the flags given) applied where config.RESUME_MAY_CHANGE allows. With `tensorboard`
    (True for the run folder's tensorboard/, or a folder) the events also go to TensorBoard.

    With `report`, the report (training.report) is drawn once model.pt is saved: in a process of its
    own that this one does not wait for (report.complete says when it is whole), or here with
    `wait_for_report`. The seconds spent in each part are recorded as a "timings" event."""
    if tensorboard is not None and tensorboard is not False:
        require_tensorboard()
    run = start(cfg, out, resume, data_dir, progress, changes or {})
    shared = contextlib.closing(run.cores) if run.cores else contextlib.nullcontext()
    logged = tensorboard_logged(run.log, run.run_dir, tensorboard)
    with StopRequest() as stop, peers_watched(run, data_dir), shared, logged:
        while run.epoch <= run.last_epoch:
            with run.clock.part("steps"):
                stats = train_epoch(run, stop)
            if stats is not None:
                finish_epoch(run, stats)
            if stop.requested:
                path = save(run, "ckpt-interrupt.pt")
                hint = resume_command(path, data_dir, dist.world_size())
                run.log.line(f"interrupted: saved {path}; continue with: {hint}")
                raise KeyboardInterrupt
        if run.data.val is not None and not any(e["event"] == "calibration" for e in run.log.history):
            with run.clock.part("evaluation"):
                calibrate(run)
        return finish(run, report, data_dir, wait_for_report)


TIMED_PARTS = {"startup": "start-up", "data": "data", "steps": "steps", "evaluation": "evaluation",
               "saving": "saving", "report": "report"}  # the "timings" event's keys, as --timings names them
_IMPORTED = time.perf_counter()


def process_age() -> float:
    """Seconds since this process started: from Linux's /proc (in 10 ms ticks), elsewhere since
    the training code was imported."""
    try:
        with open("/proc/self/stat") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")  # field 22
        with open("/proc/uptime") as f:
            return max(float(f.read().split()[0]) - started, 0.0)
    except (OSError, ValueError, IndexError, AttributeError):
        return time.perf_counter() - _IMPORTED


class Stopwatch:
    """The seconds a run spends in each of TIMED_PARTS, from the process's start on. A part timed
    within another counts once, in the outer one, so the parts never add up to more than the whole."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.parts = dict.fromkeys(TIMED_PARTS, 0.0) | {"startup": process_age()}
        self._depth = 0

    @contextlib.contextmanager
    def part(self, name: str):
        outer, t0 = self._depth == 0, time.perf_counter()
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if outer:
                self.parts[name] += time.perf_counter() - t0

    def seconds(self) -> dict[str, float]:
        """Each part and the total so far, the process's start up to now."""
        return self.parts | {"total": self.parts["startup"] + time.perf_counter() - self.t0}


def format_timings(event: dict) -> str:
    """A "timings" event as one line: each part, what the parts leave out, and the whole, which ends
    where the event was recorded: the line is printed at once after it, as the command's last."""
    shown = ", ".join(f"{label} {event[key]:.2f} s" for key, label in TIMED_PARTS.items())
    other = event["total"] - sum(event[key] for key in TIMED_PARTS)
    return f"timings: {shown}, other {other:.2f} s; total {event['total']:.2f} s, from the start to this line"


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
def peers_watched(run: Run, data_dir=None):
    """Under torchrun, a rank that died or failed breaks the others' collectives: say so once,
    with the command that resumes from the last checkpoint, if one was written."""
    try:
        yield
    except RuntimeError as e:
        if not dist.is_initialized():
            raise
        saved = latest_checkpoint(run.run_dir)
        command = resume_command(saved, data_dir, dist.world_size()) if saved else None
        hint = (f"its last checkpoint is intact: continue with {command}" if command
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
    with run.clock.part("evaluation"):
        if run.data.val is not None:
            evaluate(run, "validation", run.epoch)
        if run.epoch % run.cfg.eval_every == 0 or run.epoch == run.last_epoch:
            evaluate(run, "test", run.epoch)
    run.epoch, run.step_in_epoch = run.epoch + 1, 0
    run.stats = EpochStats(run.data.train.images.device)
    if (run.epoch - 1) % run.cfg.checkpoint_every == 0 or run.epoch > run.last_epoch:
        save(run, f"ckpt-epoch{run.epoch - 1:03d}.pt")


def evaluate(run: Run, split: str, epoch: int) -> None:
    """Score the shipped model on the validation or test split, exactly, and log it as `epoch`'s.

    Under torchrun each rank scores a share and the sums are added up. The test logits are
    kept: after the temperature is fitted they are re-scored, not recomputed."""
    if split == "test" and run.test_logits is not None and run.test_logits[0] == epoch:
        logits, labels = run.test_logits[1:]
    else:
        loader = run.data.test if split == "test" else run.data.val
        assert loader is not None, "evaluated on a validation split that the run does not hold"
        logits, labels = shard_logits(run.shipped, loader)
    if split == "test":
        run.test_logits = (epoch, logits, labels)
    t = run.card.temperature
    ev = evaluation_from_logits(logits, labels, run.card.classes, t, across_ranks=True, head=run.cfg.head)
    run.log.record(event=split, epoch=epoch, correct=ev.correct, total=ev.total, accuracy=ev.accuracy,
                   loss=ev.loss, ece=ev.ece, brier=ev.brier, temperature=t)
    run.log.line(f"epoch {epoch:>3} {split}: {format_accuracy(ev.correct, ev.total)}  loss {ev.loss:.4f}")


def calibrate(run: Run) -> None:
    """Temperature scaling, fitted on the validation split only (with `calibrate` "held-out", on it
    and its copies under each held-out corruption as well); the test set is then reported with it.

    One pass over the validation split: every rank holds all of it, so no sums are needed."""
    assert run.data.val is not None, "calibrated without a validation split"
    logits, labels = predict_logits(run.shipped, run.data.val)
    head = run.cfg.head
    score = head_of(head).reject_score(bool(run.cfg.outlier_exposure))  # "not a digit": keeps reject_keep of them
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
    copies = len(logits) // len(clean) - 1  # the held-out corruptions' copies of the split, if any
    on = f" and its {copies} held-out corruptions" if copies else ""
    run.log.line(f"temperature {temperature:.3f} fitted on the validation split{on}: ECE {100 * before.ece:.2f}% -> "
                 f"{100 * after.ece:.2f}%, NLL {before.loss:.4f} -> {after.loss:.4f}")
    run.log.record(event="reject_threshold", score=score, threshold=threshold, split="validation",
                   images=len(clean))
    run.log.line(f"'not a digit' below {score} {threshold:.4g}: the threshold that keeps "
                 f"{100 * run.cfg.reject_keep:g}% of the {len(clean)} validation digits")
    evaluate(run, "test", run.epoch - 1)  # the last epoch's test figures (the run stands before the next one)


def held_out_logits(run: Run, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The validation logits and labels, followed by those of the validation images under each
    held-out corruption (seeded by the run's seed; never MNIST-C's 15 test corruptions)."""
    from ..data.corruptions import HELD_OUT, corrupt  # imported only by a run that calibrates on them

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
    with run.clock.part("saving"):
        return _save(run, run.run_dir / name, final)


def _save(run: Run, path: Path, final: bool) -> Path:
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


def finish(run: Run, report: bool, data_dir, wait_for_report: bool) -> TrainResult:
    """Save model.pt, print the final test figure, start the report, and record the timings.

    An earlier report of the folder (a resumed run's) described the earlier weights: it goes, its
    marker first, before model.pt is written; and a Ctrl-C checkpoint the run has trained past goes
    after, so that only the epoch checkpoints of a finished run are left to resume from."""
    final = next(e for e in reversed(run.log.history) if e["event"] == "test")
    if dist.is_main():
        discard_report(run.run_dir)
    model_path = save(run, "model.pt", final=True)
    if dist.is_main():
        (run.run_dir / "ckpt-interrupt.pt").unlink(missing_ok=True)
    run.log.line(f"test accuracy: {format_accuracy(final['correct'], final['total'])}; "
                 f"{run.train_seconds:.2f} s of training; saved {model_path}")
    if report:
        with run.clock.part("report"):
            write_report(run, data_dir, wait_for_report)
    run.log.record(event="timings", **run.clock.seconds())
    return TrainResult(run.run_dir, model_path, final["correct"], final["total"], run.train_seconds,
                       run.log.history)


def write_report(run: Run, data_dir, wait: bool) -> None:
    """The run's pictures and HTML page, where matplotlib is installed (mnistlab[report]), from the
    final test logits or else from model.pt: drawn here with `wait`, else in a process of their own
    that this one does not wait for. Every rank calls it: rank 0 draws the logits of all."""
    scored = _scored(run)
    if not dist.is_main():
        return
    if importlib.util.find_spec("matplotlib") is None:
        run.log.line("(no report: matplotlib is not installed; pip install 'mnistlab[report]')")
        return
    if wait:
        run.log.line(f"report: {build_report(run.run_dir, data_dir=data_dir, scored=scored)}")
        return
    try:
        launch_report(run.run_dir, data_dir, scored)
    except MnistlabError as e:  # a full disk, say: model.pt is saved all the same, so the run succeeded
        run.log.line(f"note: the report could not be started: {e}")
        return
    run.log.line(f"report: {run.run_dir / 'report.html'}, being drawn in the background: it is complete when "
                 f"{run.run_dir / COMPLETE} exists")


def _scored(run: Run) -> tuple | None:
    """(test images, calibrated probabilities, labels) from the last test pass, when it holds the whole test set;
    under torchrun, the ranks' shares gathered (a collective: every rank calls it)."""
    if run.test_logits is None:
        return None
    logits, labels = (dist.gather_shards(t) for t in run.test_logits[1:])
    if len(logits) != len(run.data.test.images):
        return None
    probs = head_of(run.card.head).log_probabilities_torch(logits.cpu(), run.card.temperature).exp()
    return run.data.test.images.cpu(), probs, labels.cpu()


# ---- setting a run up ----

def start(cfg: RunConfig | None, out, resume, data_dir, progress, changes: dict) -> Run:
    """A run ready for its first step: a fresh one, or one restored from a checkpoint. Everything
    is built and checked before the run folder is touched: a damaged checkpoint writes nothing."""
    clock = Stopwatch()
    state = None
    if resume:
        if cfg is not None:
            raise MnistlabError("a resumed run keeps its own config: give train() changes, not a config.")
        resume, state = read_resume_state(resume)
        cfg = resumed(saved_config(state["config"], resume), changes)
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
    with clock.part("data"):
        splits = read_splits(cfg, data_dir)
        asked, cfg = cfg.batch_size, fit_batch(cfg, len(splits[0][1]))
        data = load_data(cfg, splits, device, channels_last, data_dir)
    total_steps = run_steps(cfg.epochs, len(data.train))  # the Run's own, needed before it is built
    wants_graph = cfg.cuda_graph and device.type == "cuda"
    not_graphed = uncapturable(cfg) if wants_graph else None
    graphed = wants_graph and not_graphed is None
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
        check_steps_left(resume, cfg, counters["global_step"], total_steps, Path(out))

    run_dir = prepare_run_dir(out, cfg, resuming_from=resume.parent if resume else None)
    log = RunLog(run_dir / "metrics.jsonl", progress, state["history"] if state else None)
    ddp_model = dist.wrap(model)
    if cfg.compile:
        ddp_model = cast(torch.nn.Module, torch.compile(ddp_model, mode=cfg.compile))  # a module compiles to one
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    step = (GraphedStep if graphed else EagerStep)(ddp_model, opt, amp_dtype(cfg.precision, device),
                                                   cfg.label_smoothing, head_of(cfg.head), cfg.outlier_exposure,
                                                   cfg.outlier_loss)
    with clock.part("data"):  # the rendered outliers and font digits are data too
        outliers, synthetic = outlier_batches(cfg, data, data_dir), synthetic_batches(cfg, data, log)
    run = Run(cfg=cfg, card=card, model=model, ema=ema, opt=opt, sched=sched, step=step,
              augment=augmenter(cfg.augment), data=data, log=log, run_dir=run_dir,
              cores=cores, outliers=outliers, synthetic=synthetic, clock=clock, **counters)
    if cfg.batch_size != asked:
        log.line(f"note: {len(data.train.images)} training images are too few steps for one-cycle at --batch-size "
                 f"{asked}: this run takes batch {cfg.batch_size}")
    if not_graphed:
        log.line(f"note: the step is not captured as a CUDA graph: {not_graphed}")
    if state is not None:
        log.line(f"resuming {resume} at epoch {run.epoch}, step {run.step_in_epoch}/{len(data.train)}")
    log.line(f"training {cfg.model} on {cfg.dataset} ({len(data.train.images)} images, {len(data.train)} "
             f"steps/epoch, {run.total_steps} steps, {device.type}{', CUDA graph' if graphed else ''}, "
             f"{'bf16 autocast' if step.amp else 'fp32'}{dist.describe()}) -> {run_dir}")
    return run


Split = tuple[torch.Tensor, torch.Tensor]  # images (uint8) and labels


def read_splits(cfg: RunConfig, data_dir) -> tuple[Split, Split | None]:
    """The training images and labels (the first --train-limit of them), and the validation split if any."""
    # the same validation split as `eval --split validation` reads: stratified for a dataset from a path
    if cfg.val_size:
        (images, labels), val = carve(cfg.dataset, cfg.val_size, data_dir)
    else:
        (images, labels), val = load_split(cfg.dataset, "train", data_dir), None
    if cfg.train_limit:
        images, labels = images[:cfg.train_limit], labels[:cfg.train_limit]
    return (images, labels), val


def load_data(cfg: RunConfig, splits: tuple[Split, Split | None], device: torch.device, channels_last: bool,
              data_dir) -> Data:
    """Keep each split on the device, the test split decoded here; the training order is (seed, epoch)-derived."""
    spec = get_dataset_spec(cfg.dataset)
    (images, labels), val = splits
    if cfg.batch_size % dist.world_size():
        raise MnistlabError(f"--batch-size {cfg.batch_size} must be a multiple of the {dist.world_size()} processes.")
    order = dist.shard(lambda epoch: epoch_permutation(len(images), cfg.seed, epoch))

    def loader(split: Split, batch_size: int, order=None) -> Loader:
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
    return OutlierBatches(pool, max(1, data.train.batch_size // 2), data.train.normalize, cfg.seed,
                          data.train.images.device)


def augmenter(fields: dict) -> Augment | None:
    """The run's batch augmentation (--augment's fields), if it has one."""
    if not fields:
        return None
    from ..data.augment import Augment

    return Augment(**fields)


def synthetic_batches(cfg: RunConfig, data: Data, log) -> SyntheticBatches | None:
    """The font digits' pool: a third as many as training images, at most SYNTHETIC_POOL; each
    process draws its own from it. The fonts at hand decide the digits: a missing family is said."""
    if not cfg.synthetic_digits:
        return None
    from ..data.synthetic import SyntheticBatches, digit_set, missing_packages

    missing = missing_packages()
    if missing:
        log.line(f"note: the font digits are drawn without {', '.join(missing)} (not installed): this run's weights "
                 "differ from a run with them (apt-get install them for the shipped recipe's digits)")
    images, labels = digit_set(min(SYNTHETIC_POOL, max(1_000, len(data.train.images) // 3)), cfg.seed)
    return SyntheticBatches(images, labels, cfg.synthetic_digits, data.train, cfg.seed, stream=dist.rank())


def uncapturable(cfg: RunConfig) -> str | None:
    """Why a run's step cannot be one CUDA graph, or None where it can: one process, and a learning rate and
    momentum that the graph can follow (Adam and AdamW read theirs from device tensors; SGD's are floats,
    fixed in the graph, so its rate must stay constant)."""
    if dist.world_size() > 1:
        return "each of torchrun's processes runs it eagerly"
    if cfg.optimizer == "sgd" and cfg.schedule != "constant":
        return f"SGD's learning rate is fixed in a graph, and --schedule {cfg.schedule} changes it"
    return None


def make_optimizer(cfg: RunConfig, model: torch.nn.Module, capturable: bool = False) -> torch.optim.Optimizer:
    params = model.parameters()
    if capturable and cfg.optimizer != "sgd":  # torch's foreach kernels read lr and betas from device tensors
        cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
        return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True, capturable=True)
    # torch.optim's arithmetic bit for bit, without its import of torch._dynamo (mnistlab.training.optim)
    if cfg.optimizer == "sgd":
        return ForeachSGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return ForeachAdam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return adamw(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def fit_batch(cfg: RunConfig, images: int) -> RunConfig:
    """`cfg`, or for a one-cycle run too short for its schedule at its batch (a small dataset of one's own with
    a preset), `cfg` with the largest smaller batch (a multiple of the processes) that gives it enough steps."""
    w, batch = dist.world_size(), cfg.batch_size
    while (cfg.schedule == "onecycle" and batch > w
           and run_steps(cfg.epochs, -(-images // batch)) < ONECYCLE_MIN_STEPS):
        batch -= w
    return dataclasses.replace(cfg, batch_size=batch) if batch != cfg.batch_size else cfg


def make_scheduler(cfg: RunConfig, opt: torch.optim.Optimizer, total_steps: int, cycle_momentum: bool = True):
    if cfg.schedule != "onecycle":
        return None
    if total_steps < ONECYCLE_MIN_STEPS:
        raise MnistlabError(f"the one-cycle schedule needs at least {ONECYCLE_MIN_STEPS} steps, and this run has "
                            f"{total_steps} (--epochs {cfg.epochs:g} at batch {cfg.batch_size}): give more --epochs "
                            "or a smaller --batch-size.")
    # each of its two phases at least a step long: a short run (a small dataset of one's own) would divide by zero
    warmup = min(max(cfg.warmup, 2 / total_steps), (total_steps - 1) / total_steps)
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total_steps, pct_start=warmup,
                                               cycle_momentum=cycle_momentum)


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in state.items()}
