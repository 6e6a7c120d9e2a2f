"""The `mnistlab` command: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import NoReturn

from .errors import MnistlabError
from .launch import exit_with_parent, launched


class _Parser(argparse.ArgumentParser):
    """Options may come before, between or after the positional arguments, in any order:
    `export robust-real --format web site/` as well as `export robust-real site/ --format web`. Plain argparse
    stops filling optional positionals at the first option (Python 3.11)."""

    _inside = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inside:  # parse_known_intermixed_args calls back here for its two passes
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def _number(kind, s: str, what: str):
    """s as int or float, or argparse's error in words (its own names the parsing function)."""
    try:
        return kind(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, not {s}") from None


def _positive_int(s: str) -> int:
    v = _number(int, s, "a positive whole number")
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {s}")
    return v


def _nonneg_int(s: str) -> int:
    v = _number(int, s, "a whole number, 0 or more")
    if v < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {s}")
    return v


def _positive_float(s: str) -> float:
    v = _number(float, s, "a positive finite number")
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, not {s}")
    return v


def _json_object(s: str) -> dict:
    try:
        value = json.loads(s)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e.msg})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, like '{\"degrees\": 10}'")
    return value


def _dataset(s: str) -> str:
    """A registered dataset's name, or a path (a slash or a dot, or an existing file or folder)."""
    from .data.mnist import DATASETS
    from .data.own import is_path

    if s not in DATASETS and not is_path(s):
        raise argparse.ArgumentTypeError(f"invalid choice: '{s}' (choose from {', '.join(DATASETS)}; or give a path "
                                         "to your own: it has a slash or a dot)")
    return s


MODEL_HELP = ("a pretrained model's name (mnistlab models lists them), or a model.pt, checkpoint, .safetensors, "
              ".pt2 or .onnx file, or a Hugging Face folder (a path has a dot or a slash: ./robust-real is a "
              "file, robust-real the pretrained model)")


DATA_DIR_HELP = "dataset folder (default: $MNISTLAB_DATA, else ./data)"
DEVICE_HELP = "cpu (default), cuda or mps"


def _default_model(args_models: list[str]) -> list[str]:
    """The models given, or the pretrained default, said on stderr so that nobody wonders which."""
    if args_models:
        return args_models
    from .pretrained import DEFAULT, catalogue

    entry = catalogue()[DEFAULT]
    print(f"mnistlab: no model given: using the pretrained '{DEFAULT}' ({entry.description}; "
          f"test accuracy {100 * entry.accuracy:.2f}%)", file=sys.stderr)
    return [DEFAULT]


def _add_train(sub, name: str, help: str) -> None:
    from .training.config import PRESETS, RunConfig

    d = RunConfig()  # the defaults the help states, from the one place that sets them
    p = sub.add_parser(name, help=help, formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train a model, evaluate it on the test set, save it. Defaults are the "
                       f"tutorial's recipe\n(the 'classic' preset): {d.optimizer.upper()} lr {d.lr:g}, momentum "
                       f"{d.momentum:g}, batch {d.batch_size}, {d.epochs:g} epochs; precision 'auto' is bf16\n"
                       "autocast where the hardware supports it natively, "
                       "else fp32.\n\npresets:\n" + _presets_help(PRESETS))
    _train_what_flags(p.add_argument_group("what", "what to train: the model, the data, a recipe"), d)
    _train_optimisation_flags(p.add_argument_group("optimisation", "a preset sets these; a flag overrides it"), d)
    _train_reject_flags(p.add_argument_group("not a digit", "saying 'not a digit'"), d)
    _train_hardware_flags(p.add_argument_group("hardware", "the hardware, and repeatable runs"), d)
    _train_run_flags(p.add_argument_group("the run", "the run: its data, folder, resume, fine-tuning"), d)
    _train_output_flags(p.add_argument_group("output", "what the command prints and writes"), d)
    p.set_defaults(func=cmd_train)


def _train_what_flags(g, d) -> None:
    from .data.mnist import DATASETS
    from .models import MODELS
    from .training.config import PRESETS

    g.add_argument("--model", choices=list(MODELS), help=f"model to train (default: {d.model})")
    g.add_argument("--dataset", type=_dataset, metavar="NAME|PATH",
                   help=f"a registered dataset ({', '.join(DATASETS)}; default: {d.dataset}), or your own: a folder "
                   "of class folders (with train/ and test/ above them or not), Kaggle's train.csv, a .npz in "
                   "Keras's layout or a folder of IDX files (a path has a slash or a dot)")
    g.add_argument("--preset", choices=list(PRESETS), help="a named recipe; other flags override it")
    g.add_argument("--model-config", type=_json_object, help="model settings as JSON, e.g. '{\"hidden\": 128}'")
    g.add_argument("--augment", type=_json_object,
                   help="batch augmentation as JSON: degrees, scale, translate, elastic, elastic_sigma, crop, erase, "
                        "flip (fashion-mnist only), and on the pixels lines, occlude, stroke, blur, level, gradient, "
                        "contrast, noise, invert, specks, outline, invert_region, scratch, pixel_share (see --preset "
                        "robust)")


def _train_optimisation_flags(g, d) -> None:
    from .training.config import OPTIMIZERS, SCHEDULES

    g.add_argument("--epochs", type=_positive_float,
                   help=f"number of epochs; a fraction ends the last one early (default: {d.epochs:g})")
    g.add_argument("--batch-size", type=_positive_int, help=f"training batch size (default: {d.batch_size})")
    g.add_argument("--test-batch-size", type=_positive_int,
                   help=f"evaluation batch size (default: {d.test_batch_size})")
    g.add_argument("--optimizer", choices=OPTIMIZERS, help=f"optimiser (default: {d.optimizer})")
    g.add_argument("--lr", type=_positive_float, help=f"learning rate (default: {d.lr:g})")
    g.add_argument("--momentum", type=float, help=f"SGD momentum (default: {d.momentum:g})")
    g.add_argument("--weight-decay", type=float, help=f"weight decay (default: {d.weight_decay:g})")
    g.add_argument("--schedule", choices=SCHEDULES, help=f"learning-rate schedule (default: {d.schedule})")
    g.add_argument("--warmup", type=float, help=f"onecycle: fraction of steps warming up (default: {d.warmup:g})")
    g.add_argument("--label-smoothing", type=float,
                   help=f"cross-entropy label smoothing (default: {d.label_smoothing:g})")
    g.add_argument("--ema", type=float, help="EMA decay of the weights, e.g. 0.999 (default: 0, off)")


def _train_reject_flags(g, d) -> None:
    g.add_argument("--head", choices=("softmax", "sigmoid", "none-class"),
                   help="softmax with cross-entropy (default); ten sigmoids with binary cross-entropy, one "
                        "against the rest (the tutorial's question; see mnistlab lesson); or none-class: an 11th "
                        "output, 'none', trained on the outliers of --outlier-exposure")
    g.add_argument("--outlier-exposure", type=float, metavar="WEIGHT",
                   help="outlier exposure: each batch gains half as many made-up non-digits (letters, symbols, "
                        "scribbles, noise, Fashion-MNIST), whose loss, times WEIGHT, says 'none of these' (default: "
                        "0, off). With --val-size, the card records a 'not a digit' threshold either way")
    g.add_argument("--outlier-families", metavar="NAMES",
                   help="the outlier families that --outlier-exposure draws, comma-separated, from characters, "
                        "scribbles, noise, fashion and lettering (default: the first four)")
    g.add_argument("--outlier-loss", choices=("uniform", "energy"),
                   help="how --outlier-exposure pulls its outliers from the digits: to the uniform distribution "
                        "(default), or energy: the digits' logsumexp up and the outliers' down, each past a margin, "
                        "leaving an outlier's class probabilities free (softmax only)")
    g.add_argument("--synthetic-digits", type=float, metavar="SHARE",
                   help="replace this share of each training batch by digits rendered from fonts, in many sizes, "
                        "weights and slants (mnist only; default: 0, off)")
    g.add_argument("--reject-keep", type=float, metavar="SHARE",
                   help=f"the share of the clean validation digits that the 'not a digit' threshold keeps "
                        f"(default: {d.reject_keep})")


def _train_hardware_flags(g, d) -> None:
    from .training.config import COMPILE_MODES, PRECISIONS

    g.add_argument("--seed", type=int,
                   help=f"random seed; the same seed, device and threads give the same weights (default: {d.seed})")
    g.add_argument("--device", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    g.add_argument("--precision", choices=PRECISIONS, help="auto (default), bf16 autocast or fp32")
    g.add_argument("--compile", nargs="?", const="default", choices=COMPILE_MODES,
                   help="torch.compile the model, in this mode (slower on a small CPU: see BENCHMARKS.md)")
    g.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=None,
                   help="replay the whole training step as a CUDA graph (one GPU; Adam, AdamW, or SGD at a "
                        "constant rate; on in the classic and fast presets, and the faster alternative to "
                        "--compile there)")
    g.add_argument("--threads", type=_nonneg_int,
                   help="CPU threads for torch (default: a share of the cores that other mnistlab trainings leave "
                        "free, counted again every few seconds; give N for bit-for-bit repeatable runs)")
    g.add_argument("--processes", type=_positive_int, metavar="N",
                   help="train as N data-parallel processes on this machine (gloo; on a CPU one thread each, or "
                        "--threads); the same seed and N give the same weights (default: 1)")


def _train_run_flags(g, d) -> None:
    g.add_argument("--val-size", type=_nonneg_int,
                   help=f"images held out of training for validation (default: {d.val_size})")
    g.add_argument("--train-limit", type=_nonneg_int, help="train on only the first N images (default, and 0: all)")
    g.add_argument("--log-interval", type=_positive_int,
                   help=f"print the running loss every N steps (default: {d.log_interval})")
    g.add_argument("--eval-every", type=_positive_int,
                   help=f"test every N epochs, and at the end (default: {d.eval_every})")
    g.add_argument("--checkpoint-every", type=_positive_int,
                   help=f"checkpoint every N epochs, and at the end (default: {d.checkpoint_every})")
    g.add_argument("--data-dir", help=DATA_DIR_HELP)
    g.add_argument("--out", help="run folder (default: a new folder under runs/)")
    g.add_argument("--resume", metavar="CHECKPOINT",
                   help="continue a run from one of its checkpoints, or from its folder's latest")
    g.add_argument("--init", metavar="MODEL",
                   help="fine-tune this model (a pretrained name or a .pt file) on --dataset instead of training "
                        "afresh; it prints your held-out accuracy and its own test accuracy before and after")
    g.add_argument("--init-head", choices=("auto", "keep", "new"),
                   help="with --init: keep the model's head (the dataset's classes must be its classes, matched by "
                        "name), give it a new one, or auto (default): keep it where the classes match")
    g.add_argument("--recipe", choices=("auto", "few-shot", "many"),
                   help="with --init: few-shot (at most 10 images a class), many, or auto (default) by the counts")


def _train_output_flags(g, d) -> None:
    g.add_argument("--dry-run", action="store_true",
                   help="a quick smoke run: 1 epoch on 640 images (unless --epochs or --train-limit say otherwise)")
    g.add_argument("--no-progress", action="store_true", help="plain lines even on a terminal")
    g.add_argument("--no-report", action="store_true",
                   help="skip the PNG plots and HTML report that are otherwise drawn in the background at the end "
                        "(the run folder's report.complete appears once they are whole)")
    g.add_argument("--timings", action="store_true",
                   help="print where the command's time went, from its start to the printed line: start-up, data, "
                        "steps, evaluation, saving, report (always recorded in metrics.jsonl as a 'timings' event; "
                        "not for --init)")
    g.add_argument("--tensorboard", nargs="?", const=True, metavar="DIR",
                   help="also log the loss, learning rate, accuracies and epoch times for TensorBoard: in the run "
                        "folder's tensorboard/, or in DIR/<run folder name> (needs mnistlab[tensorboard])")
    g.add_argument("--config", metavar="FILE",
                   help="read settings from a TOML file (keys as the flags, without dashes: batch_size = 128; "
                        "also preset, data_dir, out, tensorboard); flags given here override it")
    g.add_argument("--print-config", action="store_true",
                   help="print the resolved settings (preset included) as TOML, for --config, and exit")


def _presets_help(presets: dict) -> str:
    import textwrap

    from .training.config import DATASET_PRESETS

    width = max(map(len, presets)) + 2

    def lines(recipes: dict, indent: str) -> list[str]:
        out = []
        for name, values in recipes.items():
            shown = ", ".join(f"{k}={json.dumps(v)}" for k, v in values.items()
                              if k not in ("eval_every", "cuda_graph"))
            only = "(mnist only) " if values.get("outlier_exposure") else ""  # its outliers are letters and clothes
            out.append(textwrap.fill(only + (shown or "the tutorial's recipe"), 100,
                                     initial_indent=f"{indent}{name:{width}}",
                                     subsequent_indent=" " * (len(indent) + width)))
        return out

    text = ["  for digits (mnist, kmnist, emnist-*):", *lines(presets, "    ")]
    for dataset, recipes in DATASET_PRESETS.items():
        text += [f"  for {dataset} (with --dataset {dataset}; the others as above):", *lines(recipes, "    ")]
    return "\n".join(text)


def cmd_train(args) -> int:
    from .launch import run_ranks

    if (args.processes or 1) > 1 and args.init:
        raise MnistlabError("--processes trains a new run on several processes; fine-tuning (--init) runs in one.")
    if (args.processes or 1) > 1 and not launched() and not args.print_config:
        return run_ranks(args.processes, args.argv, args.threads or 0)  # each rank runs this command again
    from .training.config import RunConfig
    from .training.loop import train

    _started()
    # every RunConfig field with a flag of the same name; None means "not given"
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig)
             if getattr(args, f.name, None) is not None}
    options = {name: getattr(args, name) for name in ("preset", "data_dir", "out", "tensorboard")}
    if args.config:
        given, options = _with_config_file(args.config, given, options)
    common = dict(out=options["out"], data_dir=options["data_dir"], report=not args.no_report,
                  progress=False if args.no_progress else None, tensorboard=options["tensorboard"])
    if args.init:
        if args.timings:
            raise MnistlabError("--timings times a training run's parts, which fine-tuning (--init) does not "
                                "record: leave it out.")
        try:
            return _finetune(args, given, options)
        except KeyboardInterrupt:  # it writes its folder only once it is done
            print("mnistlab: interrupted: the fine-tune kept nothing.", file=sys.stderr)
            return 130
    if args.init_head or args.recipe:
        given_flag = "--init-head" if args.init_head else "--recipe"
        raise MnistlabError(f"{given_flag} is for fine-tuning: give --init MODEL too.")
    if args.resume:  # the run's own config, with the changes asked for (each checked)
        if args.print_config:
            raise MnistlabError("--print-config shows a new run's settings; a resumed run's are in its "
                                "folder's config.json.")
        if args.dry_run or options["preset"]:
            raise MnistlabError(f"{'--dry-run' if args.dry_run else '--preset'} starts a new run; it cannot be "
                                "combined with --resume (a resumed run keeps its recipe).")
        _print_timings(args, train(resume=args.resume, changes=given, **common))
        return 0
    if args.dry_run:  # what it sets, unless given
        given = dict(epochs=1, train_limit=640, log_interval=5) | given
    cfg = _new_config(options["preset"], given)
    if args.print_config:
        from .training.tomlconfig import config_toml

        shown = {k: options[k] for k in ("data_dir", "out", "tensorboard")}
        print(config_toml(cfg, shown, comment=_config_comment(options["preset"], args.config)), end="")
        return 0
    _say_dataset(cfg.dataset)
    _say_eager_step(given, cfg.device)
    _print_timings(args, train(cfg, **common))
    return 0


def _say_eager_step(given: dict, device: str) -> None:
    """--cuda-graph given for a run whose step no CUDA GPU runs: said, not silently ignored."""
    if given.get("cuda_graph"):
        from .device import resolve_device

        kind = resolve_device(device).type
        if kind != "cuda":
            print(f"mnistlab: note: --cuda-graph captures the step on a CUDA GPU; on this run's {kind} device "
                  "it runs eagerly.", file=sys.stderr)


def _print_timings(args, result) -> None:
    from . import distributed as dist
    from .training.loop import format_timings

    if args.timings and dist.is_main():
        print(format_timings(result.history[-1]))


def _new_config(preset: str | None, given: dict):
    from .training.config import from_preset

    cfg = from_preset(preset, **given)
    if cfg.outlier_exposure and not cfg.val_size:
        print("mnistlab: note: without --val-size there is no split to choose a 'not a digit' threshold on, so "
              "this model will learn from outliers but never reject.", file=sys.stderr)
    return cfg


def _with_config_file(path: str, given: dict, options: dict) -> tuple[dict, dict]:
    """(the settings in the config file under those given as flags, the run options with the file's
    preset, data_dir, out and tensorboard where no flag set them)."""
    from .training.tomlconfig import RUN_OPTIONS, read_config

    settings = read_config(path)
    from_file = {name: settings.pop(name, None) for name in RUN_OPTIONS}
    return settings | given, {name: value if value is not None else from_file.get(name)
                              for name, value in options.items()}


def _config_comment(preset: str | None, config: str | None) -> str:
    what = f"the '{preset}' preset" if preset else "the defaults (the tutorial's recipe)"
    source = f", {config}" if config else ""
    return (f"mnistlab train, resolved from {what}{source} and the flags given.\n"
            "Run it with: mnistlab train --config THIS_FILE")


def _finetune(args, given: dict, options: dict) -> int:
    from .training.finetune import finetune

    dataset = given.get("dataset", "")
    # the training settings given with --init, which finetune() refuses
    settings = {k: v for k, v in given.items() if k not in ("dataset", "seed")}
    settings |= {name: True for name, on in (("resume", args.resume), ("preset", options["preset"]),
                                             ("dry_run", args.dry_run)) if on}
    if dataset and not settings:
        _say_dataset(dataset)
    finetune(args.init, dataset, out=options["out"], recipe=args.recipe or "auto", init_head=args.init_head or "auto",
             data_dir=options["data_dir"], seed=given.get("seed", 1), settings=settings)
    return 0


def _say_dataset(dataset: str | None, out=None) -> None:
    """For --dataset PATH: what was found there, and each file skipped, before anything else."""
    from .data.own import is_path

    if dataset and is_path(dataset):
        from .data.own import open_dataset, summary

        for line in summary(open_dataset(dataset)):
            print(line, file=out or sys.stdout)


def _add_eval(sub, name: str, help: str) -> None:
    from .data.augment import TTA_VIEWS
    from .data.mnist import SPLITS

    p = sub.add_parser(name, help=help)
    p.add_argument("checkpoints", nargs="*", metavar="MODEL",
                   help=MODEL_HELP + "; several are averaged as an ensemble (default: the pretrained 'robust-real')")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--split", choices=SPLITS, default="test",
                   help="which split (default: test); validation: the images the run held out of training "
                        "(--val-size), for choosing models without looking at the test set; train: the rest")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    p.add_argument("--tta", choices=list(TTA_VIEWS), default="none",
                   help="test-time augmentation: average each model's probabilities over fixed views "
                        "(shift: 1 pixel 4 ways; rotate: +-6 degrees; zoom: 0.92, 1.08; flip: mirrored, "
                        "for fashion-mnist only); default none")
    p.add_argument("--dataset", type=_dataset, metavar="NAME|PATH",
                   help="evaluate on this dataset instead of the model's own: a registered name or a path as "
                        "train takes it; its classes are matched to the model's by name")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a report")
    c = p.add_argument_group("corruptions (MNIST-C: Mu & Gilmer 2019)")
    c.add_argument("--corruptions", nargs="*", metavar="NAME",
                   help="judge the split under corruptions, made by mnistlab and seeded: no names gives MNIST-C's 15 "
                        "test corruptions at their default severities; 'held-out' gives the further ones kept for "
                        "validation (choose recipes with those, on --split validation); or name them. Give the "
                        "models before this option. Writes report.txt, report.json and examples.png to --out")
    c.add_argument("--mnist-c", metavar="DIR",
                   help="use MNIST-C's published files instead: DIR/<corruption>/test_images.npy and "
                        "test_labels.npy (train_*.npy for --split validation or train); implies --corruptions")
    c.add_argument("--seed", type=_nonneg_int, help="the corruptions' random seed (default: 0)")
    c.add_argument("--out", metavar="DIR", help="where the corruption report and its picture go "
                   "(default: ./corruptions-<model>/)")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from .evaluation import evaluate_files, format_accuracy

    _started()
    models = _default_model(args.checkpoints)
    if args.corruptions is not None or args.mnist_c:
        return _eval_corruptions(args, models)
    if args.seed is not None or args.out:
        raise MnistlabError(f"{'--seed' if args.seed is not None else '--out'} goes with --corruptions.")
    _say_dataset(args.dataset, sys.stderr if args.json else sys.stdout)  # --json: one JSON object on stdout
    cards, members, ev = evaluate_files(models, args.data_dir, args.split, args.device, args.tta,
                                        args.dataset)
    if args.json:
        print(json.dumps({"checkpoints": models, "models": [c.model for c in cards],
                          "dataset": args.dataset or cards[0].dataset, "split": args.split, "tta": args.tta,
                          "members": [{"checkpoint": c, "correct": m.correct, "total": m.total, "ece": m.ece}
                                      for c, m in zip(models, members)] if len(members) > 1 else [],
                          **ev.to_dict()}))
        return 0
    views = "" if args.tta == "none" else f", test-time augmentation '{args.tta}'"
    if len(members) > 1:
        print(f"ensemble of {len(members)} models (mean of their probabilities), {args.split} split{views}:")
        for path, card, m in zip(models, cards, members):
            print(f"  {path} ({card.model}): {format_accuracy(m.correct, m.total)}")
    else:
        print(f"{models[0]}: {cards[0].model} on {args.dataset or cards[0].dataset} ({args.split} "
              f"split{views})")
    print(ev.report())
    return 0


def _eval_corruptions(args, models: list[str]) -> int:
    from .robustness import default_out, evaluate_corruptions, write_outputs

    seed = 0 if args.seed is None else args.seed
    if args.mnist_c and args.seed is not None:
        raise MnistlabError("--seed is for corruptions made by mnistlab; MNIST-C's files are made already.")
    report = evaluate_corruptions(models, args.corruptions, args.data_dir, args.split, args.device,
                                  seed, args.mnist_c, args.tta)
    out = args.out or default_out(models)
    data = write_outputs(report, out)
    if args.json:
        print(json.dumps(data))
    else:
        print(report.report())
        print(f"\nwrote {data['examples']} (examples of each corruption), report.txt and report.json beside it")
    return 0


def _add_predict(sub, name: str, help: str) -> None:
    p = sub.add_parser(name, help=help, usage="mnistlab predict [-h] [MODEL] IMAGE [IMAGE ...] [options]")
    p.add_argument("inputs", nargs="+", metavar="[MODEL] IMAGE",
                   help="image files, or folders of them, after an optional model: " + MODEL_HELP +
                        " (default: the pretrained 'robust-real')")
    p.add_argument("--top", type=_positive_int, default=3, help="how many classes to show (default: 3)")
    p.add_argument("--json", action="store_true", help="one JSON object per line, with all probabilities")
    p.add_argument("--save-preprocessed", metavar="DIR", help="write the 28x28 image the model saw, as PNG")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    p.add_argument("--submission", metavar="CSV",
                   help="Kaggle's Digit Recognizer: IMAGE is its test.csv; write this submission (ImageId,Label)")
    p.set_defaults(func=cmd_predict)


def cmd_submission(args) -> int:
    """predict MODEL test.csv --submission submission.csv"""
    from .inference import load_model
    from .kaggle import dishonesty, write_submission

    model, inputs = _model_and_images(args.inputs)
    if len(inputs) != 1 or not inputs[0].lower().endswith(".csv"):
        raise MnistlabError("--submission classifies Kaggle's test.csv: give one .csv file after the model.")
    classifier = load_model(_default_model(model)[0], args.device)
    if warning := dishonesty(classifier):
        print(f"mnistlab: warning: {warning}", file=sys.stderr)
    rows = write_submission(classifier, inputs[0], args.submission)
    print(f"wrote {args.submission} ({rows} rows: ImageId,Label)")
    return 0


def cmd_predict(args) -> int:
    from .data.preprocess import COMMON_SUFFIXES, image_files, image_suffixes, quiet_decoder_warnings

    if args.submission:
        return cmd_submission(args)
    quiet_decoder_warnings()
    model, images = _model_and_images(args.inputs)
    given = [(path, image_files([path])) for path in images]  # an image named twice is read twice
    files = [file for _, found in given for file in found]
    for path in [path for path, found in given if not found and Path(path).is_dir()] if files else []:
        print(f"mnistlab: note: {path}: no images in this folder.", file=sys.stderr)
    if not files:
        raise MnistlabError(f"no images found in {', '.join(images)} "
                            f"(looked for {', '.join(COMMON_SUFFIXES)} and the {len(image_suffixes())} suffixes in all "
                            "that Pillow reads).")
    if args.save_preprocessed and Path(args.save_preprocessed).exists() and not Path(args.save_preprocessed).is_dir():
        raise MnistlabError(f"{args.save_preprocessed}: is a file; --save-preprocessed takes a folder.")
    # every image is read before the model is loaded: a missing file or one that is not an image is said at once
    read = [(path, pixels) for path in files if (pixels := _preprocessed(path, args.json)) is not None]
    saved = _saved_names([path for path, _ in read]) if args.save_preprocessed else {}
    classified = 0
    if read:
        from .inference import load_model

        # torch_free: a pretrained model runs on its ONNX copy where onnxruntime is installed, the same answers
        predictor = load_model(_default_model(model)[0], args.device, torch_free=True)
        _started()
        classified = sum(_predicted(predictor, path, pixels, args, saved.get(path)) for path, pixels in read)
    failed = len(files) - classified
    if failed and len(files) > 1:  # one image: its own sentence says it all
        print(f"mnistlab: {failed} of {len(files)} images could not be classified.", file=sys.stderr)
    return 1 if failed else 0


def _preprocessed(path, as_json: bool):
    """The 28x28 image the model will see, or None after saying why there is none."""
    from .data.preprocess import native_stderr_silenced, preprocess

    try:
        with native_stderr_silenced():
            return preprocess(path)
    except MnistlabError as e:
        _failed(path, e, as_json)
        return None


def _saved_names(paths: list[Path]) -> dict[Path, str]:
    """The file each image's 28x28 picture is saved as: its name as a PNG, and where two images share a name (the
    same name in two folders), its folder's name before it, and then its place in the list."""
    stems = Counter(p.stem for p in paths)
    names = {p: p.stem if stems[p.stem] == 1 else f"{p.parent.name}-{p.stem}" for p in paths}
    twice = Counter(names.values())
    return {p: f"{name}-{i}.png" if twice[name] > 1 else f"{name}.png"
            for i, (p, name) in enumerate(names.items(), start=1)}


def _predicted(predictor, path, pixels, args, save_as: str | None = None) -> bool:
    """Print one image's prediction (or why there is none); whether there was one."""
    try:
        pred = predictor.predict_pixels(pixels, str(path))
    except MnistlabError as e:  # a model that gives no finite answer for this image
        _failed(path, e, args.json)
        return False
    if save_as:
        from PIL import Image

        from .fileio import atomic_write

        atomic_write(Path(args.save_preprocessed) / save_as, lambda tmp: Image.fromarray(pixels).save(tmp, "PNG"))
    if args.json:
        print(json.dumps(pred.to_dict(args.top)))
        return True
    top = ", ".join(f"{c} {100 * p:.1f}%" for c, p in pred.top(args.top))
    answer = f"{pred.label} ({100 * pred.confidence:.1f}%)"
    if pred.unsure:  # the two it is torn between, each with its probability
        answer = f"{pred.answer} ({pred.label} {100 * pred.confidence:.1f}%, {pred.runner_up[0]} " \
                 f"{100 * pred.runner_up[1]:.1f}%)"
    if pred.rejected:  # the nearest digit is still said, after what matters
        answer = f"not a digit ({pred.reject_score} {pred.ood_score:.4g} < {pred.reject_threshold:.4g}; " \
                 f"nearest: {answer})"
    print(f"{path}: {answer}   top: {top}")
    return True


def _failed(path, e: MnistlabError, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"source": str(path), "error": str(e)}))
    print(f"mnistlab: {e}", file=sys.stderr)


def _model_and_images(inputs: list[str]) -> tuple[list[str], list[str]]:
    """The first input is the model when it is a pretrained name, a model file (.pt, .pt2,
    .safetensors, .onnx) or a folder in the Hugging Face layout."""
    from .inference import is_model_path
    from .pretrained import catalogue, is_name

    first, names = inputs[0], catalogue()
    if first in names or is_model_path(first):
        if len(inputs) == 1:
            raise MnistlabError(f"{first} is a model: give the images to classify after it.")
        if later := next((i for i in inputs[1:] if i in names and not os.path.exists(i)), None):
            raise MnistlabError(f"{later} is a model too: predict takes one model, before the images.")
        return [first], inputs[1:]
    if is_name(first) and not os.path.exists(first):  # a word, not a file: a model's name mistyped
        raise MnistlabError(f"{first}: no such file, nor a pretrained model (those are: {', '.join(names)}).")
    return [], inputs


def _add_serve(sub, name: str, help: str) -> None:
    p = sub.add_parser(name, help=help)
    p.add_argument("checkpoint", nargs="?", metavar="MODEL",
                   help=MODEL_HELP + " (default: the pretrained 'robust-real')")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--max-upload", type=_positive_int, default=2_000_000, help="largest request body, bytes (2 MB)")
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="server processes, each with its own copy of the model (default: 1)")
    p.add_argument("--collect", metavar="DIR",
                   help="save the drawings you correct on the page in DIR/<label>/, and offer to fine-tune the "
                        "model on them (one server process only)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from .serve.server import serve

    _started()
    if not 0 < args.port < 65536:
        raise MnistlabError(f"--port must lie between 1 and 65535, not {args.port}.")
    model = _default_model([args.checkpoint] if args.checkpoint else [])[0]
    serve(model, host=args.host, port=args.port, max_bytes=args.max_upload, workers=args.workers, collect=args.collect)
    return 0


def _add_export(sub, name: str, help: str) -> None:
    from .export import FORMATS, ORT_WEB_VERSION

    p = sub.add_parser(name, help=help, description="Export a model: an ONNX or torch.export (.pt2) file that runs "
                       "without mnistlab, a static site that runs it in any browser (--format web), or a folder in "
                       "the Hugging Face layout for a model hub (--format hf).")
    p.add_argument("checkpoint", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("destination", nargs="?", metavar="OUT",
                   help="the file, or for web and hf the folder, to write (default: beside the model)")
    p.add_argument("--format", choices=FORMATS, default="onnx",
                   help="onnx (default); pt2: torch.export, the one to use from PyTorch; torchscript: deprecated "
                        "(torch.jit), kept while torch still builds it; web: index.html, its JavaScript and the model "
                        "in a folder; hf: config.json, model.safetensors and README.md in a folder")
    p.add_argument("--out", help="the same as OUT")
    p.add_argument("--probs", action="store_true", help="output probabilities (softmax inside the graph), not logits")
    p.add_argument("--int8", action="store_true", help="ONNX only: static int8 quantisation, calibrated on "
                   "training images (needs the dataset: --data-dir)")
    p.add_argument("--data-dir", help="dataset folder for --int8 calibration (default: $MNISTLAB_DATA, else ./data)")
    p.add_argument("--runtime", metavar="PATH",
                   help=f"web only: copy onnxruntime-web ({ORT_WEB_VERSION}) from this dist folder, e.g. "
                        "node_modules/onnxruntime-web/dist, for offline use or self-hosting (default: from a "
                        "public CDN, pinned, with a subresource-integrity hash)")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from .export import export

    _started()
    if args.destination and args.out and args.destination != args.out:
        raise MnistlabError(f"two destinations given: {args.destination} and --out {args.out}.")
    path = export(args.checkpoint, args.format, args.destination or args.out, probs=args.probs, int8=args.int8,
                  data_dir=args.data_dir, runtime=args.runtime,
                  note=lambda s: print(f"mnistlab: note: {s}", file=sys.stderr))
    size = sum(f.stat().st_size for f in path.iterdir()) if path.is_dir() else path.stat().st_size
    chosen = "" if args.destination or args.out else "; no OUT was given: named after the model"
    print(f"wrote {path.resolve() if chosen else path}{'/' if path.is_dir() else ''} ({size:,} bytes{chosen})")
    return 0


def _add_report(sub, name: str, help: str) -> None:
    p = sub.add_parser(name, help=help)
    p.add_argument("run_dir", help="a run folder written by mnistlab train")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    try:
        from .training.report import build_report
    except ImportError:
        raise MnistlabError("reports need matplotlib: pip install 'mnistlab[report]'.") from None
    _started()
    print(f"wrote {build_report(args.run_dir, data_dir=args.data_dir)}")
    return 0


def cmd_lesson(args) -> int:
    from .lesson import lesson

    print(lesson())
    return 0


def cmd_models(args) -> int:
    from .evaluation import format_accuracy
    from .models import MODELS
    from .pretrained import DEFAULT, catalogue

    print("pretrained (ready to use: mnistlab predict NAME image.png, load_model(NAME)):")
    for name, entry in catalogue().items():
        default = ", the default" if name == DEFAULT else ""
        c = entry.mnist_c or {}
        rejected = f" ({100 * c['mean_rejected']:.1f}% of them rejected)" if c.get("mean_rejected") else ""
        corrupted = f", MNIST-C mean {100 * c['mean_accuracy']:.2f}%{rejected}" if c else ""
        print(f"  {name:12} {entry.dataset}, test {format_accuracy(entry.test_correct, entry.test_total)}"
              f"{corrupted}, {entry.path.stat().st_size / 1024:,.0f} KiB{default}: {entry.description}")
    print("\narchitectures (mnistlab train --model NAME):")
    for name, cls in MODELS.items():
        summary = (cls.__doc__ or "").strip().splitlines()  # a model registered without a docstring has none
        print(f"  {name:8} {summary[0] if summary else '(no description)'}")
    return 0


def _add_datasets(sub, name: str, help: str) -> None:
    p = sub.add_parser(name, help=help, description="List the registered datasets, or describe your own (format, "
                       "classes, counts per class, problems) and write a sample picture of it.")
    p.add_argument("path", nargs="?", metavar="PATH",
                   help="a folder of class folders, Kaggle's train.csv, a .npz in Keras's layout or a folder of "
                        "IDX files")
    p.add_argument("--sample", metavar="PNG", help="where to write the sample picture (default: sample-NAME.png here)")
    p.set_defaults(func=cmd_datasets)


def cmd_datasets(args) -> int:
    from .data.mnist import DATASETS

    if args.path:
        from pathlib import Path

        from .data.own import describe, open_dataset, write_sample

        ds = open_dataset(args.path)
        print(describe(ds))
        sample = args.sample or f"sample-{Path(args.path).resolve().stem or 'data'}.png"
        print(f"sample: {write_sample(ds, sample)} (a row per class, as the model sees them)")
        return 0
    for spec in DATASETS.values():
        print(f"{spec.name:14} folder {spec.folder}/raw/, mean {spec.mean}, std {spec.std}, "
              f"classes: {', '.join(spec.classes)}")
    return 0


def _simple(func):
    def add(sub, name: str, help: str) -> None:
        sub.add_parser(name, help=help).set_defaults(func=func)
    return add


# name -> (function that adds the subcommand's parser, one-line help). Only the command being run
# gets its whole parser, so `mnistlab --help` and `mnistlab predict x.onnx` import no torch.
COMMANDS = {
    "train": (_add_train, "train a model, evaluate it on the test set, save it"),
    "eval": (_add_eval, "evaluate a saved model, or an ensemble of several, on a whole split"),
    "predict": (_add_predict, "classify your own images (PNG, JPEG, BMP, GIF, WebP, TIFF; files or folders)"),
    "serve": (_add_serve, "a local web page to draw a digit on, and a JSON API"),
    "export": (_add_export, "write an ONNX or .pt2 file that runs without mnistlab, a web page, a Hugging Face folder"),
    "report": (_add_report, "rebuild a run's plots and its self-contained HTML report"),
    "lesson": (_simple(cmd_lesson), "walk through softmax, NLL and cross-entropy with the tutorial's numbers"),
    "models": (_simple(cmd_models), "list the registered models"),
    "datasets": (_add_datasets, "list the registered datasets, or describe your own: mnistlab datasets PATH"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser for `command`; the other subcommands only as names with their help."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="mnistlab", description="Train, evaluate and use MNIST-family classifiers.")
    parser.add_argument("--version", action="version", version=f"mnistlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for name, (add, help) in COMMANDS.items():
        if name == command:
            add(sub, name, help)
        else:
            sub.add_parser(name, help=help)
    return parser


def entry() -> NoReturn:
    """The console script: main(), then out at once. Everything a command writes is closed before
    main() returns; what the interpreter's teardown would still do (freeing torch's memory and
    modules one by one) takes a large share of a short command, and a Ctrl-C during it killed the
    process without a word.

    Nothing is collected until the command's modules are imported (`_started`)."""
    gc.disable()
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away, or a stream already closed
            pass
    os._exit(code)


def _started() -> None:
    """Collect garbage from here on, among what is made from now: the console script collects
    nothing while a command imports its modules (entry). Importing torch makes about a million
    objects that live as long as the process; collecting among them as they appear costs a tenth
    of a second of every command. Called by each command that imports torch, after its imports."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    exit_with_parent()
    command = next((a for a in argv if not a.startswith("-")), None)  # the top level has no option with a value
    try:
        parser = build_parser(command)  # imports torch for some commands: a second or more
        parser.set_defaults(argv=argv)  # for a command that runs itself again (train --processes)
        args = parser.parse_args(argv)
        return _run(args)
    except KeyboardInterrupt:  # Ctrl-C before the command started, or a second one during it
        return _interrupted()
    finally:
        if "mnistlab.distributed" in sys.modules:  # a process group can exist only if it was imported
            sys.modules["mnistlab.distributed"].shutdown()


def _interrupted() -> int:
    """Ctrl-C, said once: a terminal's Ctrl-C reaches every rank of train --processes, and rank 0 speaks."""
    if not launched() or os.environ.get("RANK") == "0":
        print("mnistlab: interrupted.", file=sys.stderr)
    return 130


def _run(args) -> int:
    try:
        return args.func(args)
    except MnistlabError as e:
        print(f"mnistlab: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return _interrupted()
    except BrokenPipeError:  # the reader of our output went away (mnistlab models | head): nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except RuntimeError as e:
        dist = sys.modules.get("mnistlab.distributed")
        if dist is None or not dist.is_initialized():
            raise
        print(f"mnistlab: error: {dist.broke(e)}.", file=sys.stderr)  # a peer process died or failed
        return 1
    except OSError as e:  # e.g. a full disk while appending metrics
        where = f"{e.filename}: " if e.filename else ""
        print(f"mnistlab: error: {where}{e.strerror or e}.", file=sys.stderr)
        return 1
