"""Fine-tuning: start from a trained model (a pretrained name or a .pt file) and teach it a dataset of one's own.

    mnistlab train --init robust-real --dataset my_digits/

The classes are matched by name: where the dataset's are the model's (your handwriting of the
ten digits), the model keeps its head and learns the new images beside replayed images of its
own training set, so that what it knew is kept; where they differ, it gets a new head (`--init-head
new`, or auto). Two recipes, fixed beforehand (BENCHMARKS.md says on which writers they were
chosen), never on the held-out images they are judged on:

    few-shot  at most FEW_SHOT images a class: the classifier alone learns, on the features of the rest
              of the model (frozen, batch norm too), which are computed once: 16 augmented copies of
              each of your images, REPLAY_POOL replayed images and the outliers (these two cached on
              disk, so that a fine-tune after the first is a matter of seconds for a large model too).
              Adam at 3e-2, 300 steps of 64 of yours beside 64 replayed and 128 outliers, label
              smoothing 0.1; then the classifier is moved 30% of the way back to where it started
              (WiSE-FT), which keeps what the model knew
    many      more: 3 epochs over your images (200 steps at least), a quarter of each batch replayed
              (not tuned yet)

The model keeps its head's kind (softmax, sigmoid or none-class) and learns with the loss training
uses for it (heads.Head.loss). Where it learnt to say "not a digit" from made-up non-digits (outlier
exposure: its card's reject score is energy or not-none), both recipes replay those too: OUTLIERS of
outliers.outlier_set("train"), made once for the run, half as many in each batch as its digits, as
training mixes them, with the same objective.

A kept head keeps its reject score, and its threshold is refitted on the fine-tuned model by the
project's rule (ood.reject_threshold: the largest that keeps the share of the validation digits that
the init model's own threshold kept, 99% for most recipes) applied to one pool of
in-distribution scores: the V validation digits of the model's dataset (the split its first
threshold was fitted on, held out of the replay), and your H held-out images, each counted
round(V / max(H, FULL_WEIGHT)) times (at least once). From FULL_WEIGHT (100) images on, your
writing weighs as much as the validation digits; with fewer, each image of yours is about
1 / (100 + H) of the pool, under the 1% it may reject, so that one odd drawing among a few dozen
cannot pull the threshold down on its own; without held-out images, the validation digits alone.
Without validation digits (the model's dataset is not at hand, or the init model is itself
fine-tuned: its card names your folder), your held-out images may lower the init model's threshold,
to keep 99% of them, but cannot raise it: a few images cannot vouch for rejecting more. Either way,
where the model learnt from outliers, your writing may lower the threshold only so far that it still
rejects OUTLIER_FLOOR (95%) of the ones the fine-tune replayed (or down to the init model's own
threshold, where that is lower). The
threshold and the shares of your held-out images and of validation outliers
(outlier_set("validation")) below it are printed and kept in finetune.json. A new head has no
threshold: the fine-tuned model never rejects.

The figures before and after, on your held-out images and on the model's own test set (MNIST's
for the pretrained models), are printed and kept in finetune.json beside model.pt; the test set's
once model.pt is saved, which the drawing page serves from then on.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .. import pretrained
from ..card import ModelCard
from ..checkpoints import check_weights, load_weights, save_checkpoint
from ..data.augment import Augment
from ..data.mnist import normalize
from ..data.outliers import OutlierBatches, family_names, outlier_set
from ..data.own import carve, get_dataset_spec, load_split
from ..device import amp_dtype, autocast, keep_freed_memory
from ..errors import DataError, MnistlabError
from ..evaluation import format_accuracy, labels_by_name
from ..fileio import cache_dir, read_cache, write_cache, write_json
from ..heads import head_of
from ..models import build_model
from ..ood import KEEP, ood_score, reject_threshold, rejected_share
from .config import PRESETS, flag
from .optim import ForeachAdam

PROGRESS_EVERY = 50  # steps between progress lines
FEW_SHOT = 10  # images a class at most for the few-shot recipe
INIT_HEADS = ("auto", "keep", "new")  # --init-head: where the head's weights start
# Label smoothing as the shipped models were trained: without it, MNIST accuracy fell 0.3-0.5 points per fine-tune.
# few-shot's settings were chosen on validation writers (benchmarks/finetune_choose.py, BENCHMARKS.md): as many
# outliers as digits a step keep 90% of the validation outliers rejected for every writer, half as many did not.
RECIPES = {
    "few-shot": dict(steps=300, lr=3e-2, batch=64, replay=64, outliers=1.0, augment=16, label_smoothing=0.1,
                     blend=0.7),
    "many": dict(epochs=3, min_steps=200, lr=1e-3, batch=96, replay=32, label_smoothing=0.1),
}
REPLAY_POOL = 3_000  # few-shot's replayed digits: the same ones every run, so that their features are cached
AUGMENT = Augment(degrees=10, scale=0.1, translate=0.08)  # each of your images a little differently every step
# Made-up non-digits: a small pool (made once, then read from the cache), so that fine-tuning stays a matter of seconds.
OUTLIERS, VALIDATION_OUTLIERS = 2_000, 1_000
# Held-out images of yours from which, together, they weigh as much as the validation digits in the threshold's
# pool; fewer weigh less, each under the 1% of the pool that may be rejected (the module docstring).
FULL_WEIGHT = 100
# However your writing pulls it down, the threshold stays above this share of the scores of the outliers that the
# fine-tune learnt from (or at the init model's own threshold, where that is lower): a writer whose few digits look
# like non-digits to the model (a 0 like a ring) keeps most of them without letting half of the non-digits through.
# Chosen on validation writers (benchmarks/finetune_threshold.py, BENCHMARKS.md).
OUTLIER_FLOOR = 0.95
# A card does not say how its model learnt from outliers: the weight and families the shipped default was trained with.
OUTLIER_WEIGHT = PRESETS["robust-real"]["outlier_exposure"]
OUTLIER_FAMILIES = family_names(PRESETS["robust-real"]["outlier_families"])


@dataclass
class Reject:
    """"Not a digit" after the fine-tune: the refitted threshold and what it rejects."""
    score: str
    threshold: float
    held_out_rejected: float  # the share of your held-out images below it
    outliers_rejected: float | None  # of validation outliers; None: the model learnt no outliers
    validation_digits: int  # of the model's dataset, in the pool it was fitted on (0: none)
    keep: float  # the share of the pool it keeps: what the init model's threshold kept of the validation digits
    floored: bool = False  # raised to the floor from the outliers it learnt from (OUTLIER_FLOOR)


@dataclass
class FinetuneResult:
    model_path: Path
    recipe: str
    init_head: str  # "kept" or "new"
    held_out_before: tuple[int, int] | None  # (correct, total) on your held-out images; None with a new head
    held_out_after: tuple[int, int]
    base_before: tuple[int, int] | None  # on the model's own test set (None: a new head, or its data missing)
    base_after: tuple[int, int] | None
    seconds: float
    reject: Reject | None = None  # None: the model never rejects (a new head, or an init without a threshold)


class Base(NamedTuple):
    """The model's own dataset: images and labels to replay, to test on, and to fit the threshold on."""
    train: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    validation: tuple[torch.Tensor, torch.Tensor] | None  # the split the card's val_size held out (None: none)


def finetune(init: str, dataset: str, out: str | os.PathLike | None = None, recipe: str = "auto",
             init_head: str = "auto", data_dir: str | os.PathLike | None = None, seed: int = 1,
             say=print, settings: dict | None = None) -> FinetuneResult:
    """Fine-tune the model `init` on `dataset` (a path or a registry name), on the CPU (a few seconds for the
    few-shot recipe); model.pt and finetune.json in `out`. `settings` (name -> value, as the flags given) are
    training settings asked for with it: fine-tuning has its own recipes, so any is refused."""
    if not dataset:
        raise MnistlabError("--init fine-tunes a model on a dataset of your own: give --dataset PATH too.")
    if settings:
        raise MnistlabError(f"{flag(next(iter(settings)))} does not apply to --init: fine-tuning has its own "
                            "recipes (--recipe few-shot or many; --seed may be given).")
    if init_head not in INIT_HEADS:
        raise MnistlabError(f"--init-head must be one of {', '.join(INIT_HEADS)}, not '{init_head}'.")
    if recipe not in ("auto", *RECIPES):
        raise MnistlabError(f"--recipe must be one of auto, {', '.join(RECIPES)}, not '{recipe}'.")
    out = Path(out) if out else _new_dir(init, dataset)
    if (out / "model.pt").exists():
        raise MnistlabError(f"{out} already holds a model.pt; choose another folder.")
    card, state = _load_init(init)
    classes = get_dataset_spec(dataset).classes
    new_head = init_head == "new" or (init_head == "auto" and set(classes) != set(card.classes))
    # a kept head has an output for each of the model's classes: the dataset may have fewer (the digits you corrected)
    if init_head == "keep" and not set(classes) <= set(card.classes):
        raise MnistlabError(f"--init-head keep: {dataset}'s classes ({', '.join(classes)}) are not among {init}'s "
                            f"({', '.join(card.classes)}); a kept head has no output for some of them: use "
                            "--init-head new.")
    out_classes = classes if new_head else card.classes
    (x, y), (xt, yt) = load_split(dataset, "train"), load_split(dataset, "test")
    if not new_head:
        y, yt = labels_by_name(y, classes, card.classes, dataset), labels_by_name(yt, classes, card.classes, dataset)
    torch.manual_seed(seed)
    outputs = head_of(card.head).outputs(len(out_classes))  # the kind of head is kept, new or not
    module = _module(card, state, outputs, new_head)
    base = None if new_head else _base_data(card, data_dir, say)
    counts = torch.bincount(y, minlength=len(out_classes))
    chosen = recipe if recipe != "auto" else ("few-shot" if counts.max() <= FEW_SHOT else "many")
    say(f"fine-tuning {init} ({card.model}) on {dataset}: {len(y)} images, {'a new head for ' if new_head else ''}"
        f"{len(out_classes)} classes, the {chosen} recipe"
        f"{'' if base is None or new_head else f', replaying {card.dataset} training images'}")
    if new_head and card.reject_score:
        say(f"note: a new head has no 'not a digit' threshold from {init}: the fine-tuned model never rejects.")
    # the outliers are digits' non-digits (letters among them): for the model's own classes only
    exposed = not new_head and head_of(card.head).learnt_outliers(card.reject_score)
    outliers = _outlier_sets(seed, data_dir, say) if exposed else None

    # few-shot trains the classifier alone: the rest of the model, frozen, computes features once
    features = Features(module, card) if chosen == "few-shot" else None

    def logits(images, cache=False):
        return _logits(module, card, images, features, cache)

    def score(images, labels, cache=False):
        return _correct(logits(images, cache), labels, len(out_classes))

    before = None if new_head else score(xt, yt)
    keep = _kept(card, logits, base.validation if base else None) if card.reject_score and not new_head else KEEP
    t0 = time.perf_counter()
    if features is not None:
        _train_classifier(module, card, features, (x, y), base.train if base else None,
                          outliers[0] if outliers else None, RECIPES[chosen], seed, say)
    else:
        _train(module, card, (x, y), base.train if base else None, outliers[0] if outliers else None,
               RECIPES[chosen], seed, say)
    seconds = time.perf_counter() - t0
    held_out = logits(xt)
    reject = None if new_head or not card.reject_score else _refit(
        card, logits, held_out, base.validation if base else None, outliers, keep)
    result = FinetuneResult(out / "model.pt", chosen, "new" if new_head else "kept", before,
                            _correct(held_out, yt, len(out_classes)), None, None, seconds, reject)
    _report(result, dataset, card.dataset, say)
    new_card = ModelCard(model=card.model, model_config=card.model_config, dataset=dataset, classes=out_classes,
                         mean=card.mean, std=card.std, temperature=1.0 if new_head else card.temperature,
                         head=card.head, reject_score=reject.score if reject else "",
                         reject_threshold=reject.threshold if reject else None)
    weights = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    _save(result, new_card, weights, init, dataset)
    say(f"saved {result.model_path}")
    if base:  # after the model is saved: the drawing page serves it from this line on (serve/collect.py)
        result.base_after = score(*base.test, cache=True)
        init_module = _module(card, state, outputs, new_head)  # as it started: its frozen part shares the features
        init_logits = _logits(init_module, card, base.test[0], features, True)
        result.base_before = _correct(init_logits, base.test[1], len(out_classes))
        say(f"{card.dataset} test set: before {format_accuracy(*result.base_before)}, "
            f"after {format_accuracy(*result.base_after)}")
        _save(result, new_card, weights, init, dataset)
    return result


def _save(result: FinetuneResult, card: ModelCard, weights: dict, init: str, dataset: str) -> None:
    """model.pt, with what is known of the fine-tune so far, and finetune.json beside it."""
    summary = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(result).items()} | {
        "model_path": str(result.model_path), "init": init, "dataset": dataset}
    save_checkpoint(card, {"model_state": weights, "finetune": summary}, result.model_path)
    write_json(summary, result.model_path.parent / "finetune.json")


def prepare(init: str, data_dir: str | os.PathLike | None = None, seed: int = 1) -> None:
    """Compute and cache what every few-shot fine-tune of `init` reads, whatever the images: the features of the
    model's replayed, validation and test digits and of the outliers. The drawing page runs it, at a low priority,
    while corrections are collected, so that its first fine-tune is as quick as the next."""
    card, state = _load_init(init)
    module = _module(card, state, head_of(card.head).outputs(len(card.classes)), False)
    features, base = Features(module, card), _base_data(card, data_dir, say=lambda s: None)
    # what the new model waits for first; the test digits, which only its figures read, last
    if head_of(card.head).learnt_outliers(card.reject_score):
        for outliers in _outlier_sets(seed, data_dir, say=lambda s: None):
            features(torch.from_numpy(outliers), cache=True)
    if base is not None:
        for images in (_replay_pool(base.train)[0], *([base.validation[0]] if base.validation else []), base.test[0]):
            features(images, cache=True)


def _load_init(init: str):
    if Path(init).suffix.lower() == ".onnx":
        raise MnistlabError(f"--init {init}: an ONNX file cannot be trained; give the .pt it was exported from, or a "
                            "pretrained model's name.")
    path = pretrained.resolve(init) if pretrained.is_name(init) else init
    card, weights = load_weights(path)  # a checkpoint, .safetensors file or Hugging Face folder
    check_weights(card, weights, path)
    return card, {"model_state": weights}


def head_keys(model: str, config: dict, num_classes: int) -> set[str]:
    """The parameters whose shapes follow the number of classes: the head that a new set of classes replaces."""
    a = build_model(model, num_classes, **config).state_dict()
    b = build_model(model, num_classes + 1, **config).state_dict()
    return {k for k in a if a[k].shape != b[k].shape}


def _module(card: ModelCard, state: dict, outputs: int, new_head: bool) -> torch.nn.Module:
    module = build_model(card.model, outputs, **card.model_config)
    if getattr(module, "channels_last", False):  # as training runs it: faster on CPU
        module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # (torch's stubs)
    weights = state["model_state"]
    if new_head:  # everything but the head, which starts afresh
        skip = head_keys(card.model, card.model_config, outputs)
        weights = {k: v for k, v in weights.items() if k not in skip}
    missing, unexpected = module.load_state_dict(weights, strict=False)
    if unexpected or (set(missing) - head_keys(card.model, card.model_config, outputs) if new_head else missing):
        raise MnistlabError(f"the init model's weights do not fit its model '{card.model}' (a damaged file?).")
    return module


def _base_data(card: ModelCard, data_dir, say) -> Base | None:
    """The model's own dataset, for replay, the second figure and the threshold; None, said, where it cannot be
    had. The validation split is held out of the replay: the threshold is fitted on it."""
    try:
        if card.val_size:
            train, validation = carve(card.dataset, card.val_size, data_dir)
        else:
            train, validation = load_split(card.dataset, "train", data_dir), None
        return Base(train, load_split(card.dataset, "test", data_dir), validation)
    except MnistlabError as e:
        say(f"note: no replay of {card.dataset} and no figure on its test set ({e}); what the model knew may fade.")
        return None


def _outlier_sets(seed: int, data_dir, say) -> tuple[np.ndarray, np.ndarray]:
    """(outliers to replay, validation outliers to judge the threshold by): the default's families, less those that
    cannot be made here (no copy of Fashion-MNIST, no fonts for the lettering), said."""
    families = OUTLIER_FAMILIES
    while True:
        try:
            return (outlier_set("train", OUTLIERS, seed, data_dir, families),
                    outlier_set("validation", VALIDATION_OUTLIERS, seed, data_dir, families))
        except MnistlabError as e:
            missing = "fashion" if isinstance(e, DataError) else "lettering"
            if missing not in families:
                raise
            families = tuple(f for f in families if f != missing)
            say(f"note: no {missing} among the made-up non-digits ({e}); replaying {', '.join(families)} only.")


def _logits(module: torch.nn.Module, card: ModelCard, images: torch.Tensor, features: Features | None = None,
            cache: bool = False) -> torch.Tensor:
    """The model's logits on uint8 images; through `features` (cached where `cache`) where only its classifier
    has learnt."""
    module.eval()
    with torch.no_grad():
        if features is not None:
            return module.classifier(features(images, cache)).float()  # type: ignore[operator]  # every model has one (models.py)
        return torch.cat([module(_normalize(module, card, part)).float() for part in images.split(1000)])


class Features:
    """The frozen part of a model (all but its classifier) on images. The sets that every fine-tune of a model
    meets (its replayed, validation and test digits, the outliers) are cached on disk, keyed by the model's
    weights and the images' content, so that each fine-tune after the first computes the features of yours
    alone."""

    def __init__(self, module: torch.nn.Module, card: ModelCard):
        self.module, self.card = module, card
        # keyed by the frozen part's weights alone: a model fine-tuned by this recipe shares its init's features
        prefix = next(name for name, m in module.named_modules() if m is module.classifier) + "."
        h = hashlib.blake2b(f"{card.model} {card.mean} {card.std}".encode(), digest_size=16)
        for k, v in sorted(module.state_dict().items()):
            if not k.startswith(prefix):
                h.update(k.encode() + v.detach().cpu().numpy().tobytes())
        self.model_key = h.digest()
        self.width = self.of(torch.zeros(1, 1, 28, 28)).shape[1]
        self.cached: dict[str, torch.Tensor] = {}  # read once a run: the validation and test digits serve twice

    def of(self, x: torch.Tensor) -> torch.Tensor:
        """The features of normalised images."""
        self.module.eval()
        with torch.no_grad():
            return torch.cat([self.module.features(part).float() for part in x.split(1000)])  # type: ignore[operator]

    def __call__(self, images: torch.Tensor, cache: bool = False) -> torch.Tensor:
        """The features of uint8 images [N, 28, 28]; read from the cache or written to it, where `cache`."""
        if not cache:
            return self.of(_normalize(self.module, self.card, images))
        key = hashlib.blake2b(images.numpy().tobytes(), key=self.model_key, digest_size=16).hexdigest()
        if key not in self.cached:
            path = cache_dir() / f"features-{key}.npz"
            read = read_cache(path, {"features": (len(images), self.width)})
            if read:
                self.cached[key] = torch.from_numpy(read["features"])
            else:
                self.cached[key] = self.of(_normalize(self.module, self.card, images))
                write_cache(path, {"features": self.cached[key].numpy()})
        return self.cached[key]


def _correct(logits: torch.Tensor, labels: torch.Tensor, classes: int) -> tuple[int, int]:
    """(correct, total): a none-class head's answer is the likeliest of the classes, as inference reads it."""
    return int((logits[:, :classes].argmax(1) == labels).sum()), len(labels)


def _normalize(module, card: ModelCard, images: torch.Tensor) -> torch.Tensor:
    return normalize(images, card.mean, card.std, getattr(module, "channels_last", False))


def pooled_threshold(held_out: np.ndarray, validation: np.ndarray, keep: float = KEEP) -> float:
    """The threshold that keeps `keep` of one pool: the V validation scores, and the H held-out ones each counted
    round(V / max(H, FULL_WEIGHT)) times (at least once); either alone where the other is empty."""
    copies = max(1, round(len(validation) / max(len(held_out), FULL_WEIGHT)))
    return reject_threshold(np.concatenate([validation, np.repeat(held_out, copies)]), keep)


def _scores(card: ModelCard, logits: torch.Tensor) -> np.ndarray:
    return ood_score(logits.numpy(), card.reject_score, card.temperature, card.head)


def _kept(card: ModelCard, logits, validation) -> float:
    """The share of the validation digits that the init model's own threshold keeps (its recipe's reject_keep,
    which the card does not record); KEEP where there are none. `logits(images, cache)`: the model's."""
    if validation is None or card.reject_threshold is None:
        return KEEP
    return float((_scores(card, logits(validation[0], True)) >= card.reject_threshold).mean())


def _refit(card: ModelCard, logits, held_out: torch.Tensor, validation,
           outliers: tuple[np.ndarray, np.ndarray] | None, keep: float) -> Reject:
    """The kept reject score's threshold, refitted on the fine-tuned model (the module docstring's rule);
    `outliers`: (those it learnt from, validation outliers)."""
    assert card.reject_threshold is not None, "a card with a reject score has a threshold"
    mine = _scores(card, held_out)
    val = _scores(card, logits(validation[0], True)) if validation is not None else np.zeros(0)
    if len(val):
        threshold = pooled_threshold(mine, val, keep)
    else:  # a few images of yours may lower it, to keep your writing, but cannot vouch for raising it
        threshold = min(card.reject_threshold, reject_threshold(mine) if len(mine) else np.inf)
    out, floored = None, False
    if outliers is not None:
        learnt = _scores(card, logits(torch.from_numpy(outliers[0]), True))
        floor = min(float(np.quantile(learnt, OUTLIER_FLOOR)), card.reject_threshold)
        threshold, floored = max(threshold, floor), floor > threshold
        out = rejected_share(_scores(card, logits(torch.from_numpy(outliers[1]), True)), threshold)
    return Reject(card.reject_score, threshold, rejected_share(mine, threshold) if len(mine) else 0.0, out, len(val),
                  keep if len(val) else KEEP, floored)


def _train(module, card: ModelCard, user, replay, outliers: np.ndarray | None, recipe: dict, seed: int,
           say=print) -> None:
    """The many recipe: the whole model learns, `epochs` over your images (`min_steps` at least), a share of each
    batch replayed, and half as many outliers as digits, as training mixes them."""
    x, y = user
    g = torch.Generator().manual_seed(seed)
    steps = max(recipe["min_steps"], round(recipe["epochs"] * len(x) / recipe["batch"]))
    opt = ForeachAdam(module.parameters(), lr=recipe["lr"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe["lr"], total_steps=steps, pct_start=0.1)
    background = -card.mean / card.std
    mixer = None
    if outliers is not None:  # half as many outliers as digits in each batch, as training mixes them
        digits = min(recipe["batch"], len(x)) + (recipe["replay"] if replay is not None else 0)
        mixer = OutlierBatches(outliers, digits // 2, lambda images: _normalize(module, card, images), seed)
    keep_freed_memory()
    amp = amp_dtype("auto", torch.device("cpu"))  # bf16 where the CPU has it natively, as training does
    module.train()
    for step in range(steps):
        pick = torch.randperm(len(x), generator=g)[:recipe["batch"]]
        xb = AUGMENT(_normalize(module, card, x[pick]), seed=seed * 1_000_003 + step, background=background)
        yb = y[pick]
        if replay is not None:
            r = torch.randint(len(replay[0]), (recipe["replay"],), generator=g)
            xb = torch.cat([xb, _normalize(module, card, replay[0][r])])
            yb = torch.cat([yb, replay[1][r]])
        if mixer is not None:
            xb, yb = mixer.mix(xb, yb, step)
        with autocast(torch.device("cpu"), amp):
            loss = head_of(card.head).loss(module(xb), yb, recipe.get("label_smoothing", 0.0),
                             OUTLIER_WEIGHT if mixer is not None else 0.0)
        _step(loss, opt, sched, step, steps, say)


def _train_classifier(module, card: ModelCard, features: Features, user, replay, outliers: np.ndarray | None,
                      recipe: dict, seed: int, say=print) -> None:
    """The few-shot recipe: the classifier alone learns, on features. Each of your images is augmented `augment`
    times, once; the replayed digits (REPLAY_POOL of the model's training images) and the outliers are the same
    in every run, their features cached. Each step draws `batch` of yours, `replay` replayed digits and `outliers`
    times as many outliers as digits; then the classifier is moved back towards where it started (`blend`)."""
    x, y = user
    background = -card.mean / card.std
    mine = torch.cat([features.of(AUGMENT(_normalize(module, card, x), seed=seed * 1_000_003 + a,
                                          background=background)) for a in range(recipe["augment"])])
    pools = [(mine, y.repeat(recipe["augment"]), recipe["batch"])]
    if replay is not None:
        images, labels = _replay_pool(replay)
        pools.append((features(images, cache=True), labels, recipe["replay"]))
    if outliers is not None:
        digits = sum(k for _, _, k in pools)
        pools.append((features(torch.from_numpy(outliers), cache=True), torch.full((len(outliers),), -1),
                      round(recipe["outliers"] * digits)))
    classifier, steps = module.classifier, recipe["steps"]
    start = {k: v.detach().clone() for k, v in classifier.state_dict().items()}
    opt = ForeachAdam(classifier.parameters(), lr=recipe["lr"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe["lr"], total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    module.eval()  # batch norm as it was, where the classifier has one: a few images say little about a population
    for step in range(steps):
        picks = [torch.randint(len(f), (k,), generator=g) for f, _, k in pools]
        fb = torch.cat([f[i] for (f, _, _), i in zip(pools, picks)])
        yb = torch.cat([labels[i] for (_, labels, _), i in zip(pools, picks)])
        loss = head_of(card.head).loss(classifier(fb), yb, recipe["label_smoothing"],
                                       OUTLIER_WEIGHT if outliers is not None else 0.0)
        _step(loss, opt, sched, step, steps, say)
    _blend(classifier, start, recipe["blend"])


def _step(loss: torch.Tensor, opt: torch.optim.Optimizer, sched, step: int, steps: int, say) -> None:
    """One optimiser step, and now and then the progress line that the page's progress bar reads."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    if (step + 1) % PROGRESS_EVERY == 0 or step + 1 == steps:
        say(f"step {step + 1}/{steps}")


def _replay_pool(replay: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """REPLAY_POOL of the model's training images and their labels: the same ones every run."""
    pick = torch.randperm(len(replay[0]), generator=torch.Generator().manual_seed(0))[:REPLAY_POOL]
    return replay[0][pick], replay[1][pick]


def _blend(module: torch.nn.Module, start: dict, share: float) -> None:
    """Move the weights back towards where they started: start + share * (learned - start), as Wortsman et al.
    (2022, WiSE-FT) do to keep what the model knew; batch norm's running statistics too (frozen in few-shot)."""
    with torch.no_grad():
        for k, v in module.state_dict().items():
            if v.is_floating_point():
                v.copy_(start[k] + share * (v - start[k]))


def _report(r: FinetuneResult, dataset: str, base: str, say) -> None:
    def shown(figure):
        return format_accuracy(*figure) if figure else "-"

    say(f"held-out images of {dataset}: before {shown(r.held_out_before) if r.held_out_before else '- (new head)'}, "
        f"after {shown(r.held_out_after)}")
    if r.reject:
        how = (f"refitted to keep {r.reject.keep:.1%} of {r.reject.validation_digits} {base} validation digits and "
               "your held-out images" if r.reject.validation_digits else
               f"no validation digits of {base} to refit on: the init model's, or lower to keep {KEEP:.0%} of your "
               "held-out images")
        if r.reject.floored:
            how += f"; raised to reject {OUTLIER_FLOOR:.0%} of the made-up non-digits it learnt from"
        outliers = "" if r.reject.outliers_rejected is None else (
            f" and {r.reject.outliers_rejected:.1%} of {VALIDATION_OUTLIERS} validation outliers")
        say(f"'not a digit' below {r.reject.score} {r.reject.threshold:.4g} ({how}): it rejects "
            f"{r.reject.held_out_rejected:.1%} of your held-out images{outliers}")
    say(f"{r.seconds:.2f} s of fine-tuning")


def _new_dir(init: str, dataset: str, root: str = "runs") -> Path:
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", f"{Path(init).stem}-{Path(dataset).stem}").strip("-")
    path = Path(root) / f"finetune-{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    return path
