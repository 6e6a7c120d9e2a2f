"""The `mnistlab` command: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from .errors import MnistlabError

# augment.TTA_VIEWS' names, spelled out so that `--help` does not import torch (a test keeps them equal)
TTA_NAMES = ("none", "shift", "rotate", "zoom")


def _positive_int(s: str) -> int:
    v = int(s)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {s}")
    return v


def _nonneg_int(s: str) -> int:
    v = int(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {s}")
    return v


def _positive_float(s: str) -> float:
    v = float(s)
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


def _add_train(sub) -> None:
    from .config import OPTIMIZERS, PRECISIONS, PRESETS, SCHEDULES
    from .data import DATASETS
    from .models import MODELS

    p = sub.add_parser("train", help="train a model, evaluate it on the test set, save it",
                       description="Train a model. Defaults are the seed's recipe: SGD lr 0.1, "
                       "momentum 0.5, batch 64, 10 epochs; precision 'auto' is bf16 autocast where "
                       "the hardware supports it natively, else fp32.")
    p.add_argument("--model", choices=list(MODELS), help="model to train (default: cnn)")
    p.add_argument("--dataset", choices=list(DATASETS), help="dataset (default: mnist)")
    p.add_argument("--preset", choices=list(PRESETS), help="a named recipe; other flags override it")
    p.add_argument("--model-config", type=_json_object, help="model settings as JSON, e.g. '{\"hidden\": 128}'")
    p.add_argument("--augment", type=_json_object,
                   help="batch augmentation as JSON: degrees, scale, translate, elastic, elastic_sigma")
    p.add_argument("--epochs", type=_positive_float,
                   help="number of epochs; a fraction ends the last one early (default: 10)")
    p.add_argument("--batch-size", type=_positive_int, help="training batch size (default: 64)")
    p.add_argument("--test-batch-size", type=_positive_int, help="evaluation batch size (default: 1000)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="optimiser (default: sgd)")
    p.add_argument("--lr", type=_positive_float, help="learning rate (default: 0.1)")
    p.add_argument("--momentum", type=float, help="SGD momentum (default: 0.5)")
    p.add_argument("--weight-decay", type=float, help="weight decay (default: 0)")
    p.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule (default: constant)")
    p.add_argument("--warmup", type=float, help="onecycle: fraction of steps warming up (default: 0.25)")
    p.add_argument("--label-smoothing", type=float, help="cross-entropy label smoothing (default: 0)")
    p.add_argument("--ema", type=float, help="EMA decay of the weights, e.g. 0.999 (default: 0, off)")
    p.add_argument("--seed", type=int, help="random seed; same seed and device give the same weights (default: 1)")
    p.add_argument("--device", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", choices=PRECISIONS, help="auto (default), bf16 autocast or fp32")
    p.add_argument("--compile", nargs="?", const="default", choices=("default", "reduce-overhead", "max-autotune"),
                   help="torch.compile the model, in this mode (reduce-overhead: CUDA graphs; GPUs only)")
    p.add_argument("--cuda-graph", action="store_true", default=None,
                   help="replay the training step as a CUDA graph (one GPU, Adam/AdamW; on in the fast preset)")
    p.add_argument("--threads", type=_nonneg_int, help="CPU threads for torch (default: torch's own)")
    p.add_argument("--val-size", type=_nonneg_int, help="images held out of training for validation (default: 0)")
    p.add_argument("--train-limit", type=_nonneg_int, help="train on only the first N images (default: all)")
    p.add_argument("--log-interval", type=_positive_int, help="print the running loss every N steps (default: 300)")
    p.add_argument("--eval-every", type=_positive_int, help="test every N epochs, and at the end (default: 2)")
    p.add_argument("--checkpoint-every", type=_positive_int,
                   help="checkpoint every N epochs, and at the end (default: 5)")
    p.add_argument("--data-dir", help="dataset folder (default: $MNISTLAB_DATA, else ./data)")
    p.add_argument("--out", help="run folder (default: a new folder under runs/)")
    p.add_argument("--resume", metavar="CHECKPOINT", help="continue a run from one of its checkpoints")
    p.add_argument("--dry-run", action="store_true", help="a quick smoke run: 1 epoch on 640 images")
    p.add_argument("--no-progress", action="store_true", help="plain lines even on a terminal")
    p.add_argument("--no-report", action="store_true", help="skip the PNG plots and HTML report at the end")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from .config import RunConfig, from_preset
    from .training import train

    # every RunConfig field with a flag of the same name; None means "not given"
    overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(RunConfig)}
    if args.dry_run:
        overrides.update(epochs=1, train_limit=640, log_interval=5)
    cfg = from_preset(args.preset, **overrides)
    train(cfg, out=args.out, resume=args.resume, data_dir=args.data_dir, report=not args.no_report,
          progress=False if args.no_progress else None)
    return 0


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a saved model, or an ensemble of several, on a whole split")
    p.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT",
                   help="model.pt, checkpoint or .onnx files; several are averaged as an ensemble")
    p.add_argument("--data-dir", help="dataset folder (default: $MNISTLAB_DATA, else ./data)")
    p.add_argument("--split", choices=("test", "train", "validation"), default="test",
                   help="which split (default: test); validation: the images the run held out of training "
                        "(--val-size), for choosing models without looking at the test set")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or mps")
    p.add_argument("--tta", choices=TTA_NAMES, default="none",
                   help="test-time augmentation: average each model's probabilities over fixed views "
                        "(shift: 1 pixel 4 ways; rotate: +-6 degrees; zoom: 0.92, 1.08); default none")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a report")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from .classifier import evaluate_files
    from .evaluation import format_accuracy

    infos, members, ev = evaluate_files(args.checkpoints, args.data_dir, args.split, args.device, args.tta)
    if args.json:
        print(json.dumps({"checkpoints": args.checkpoints, "models": [i["model"] for i in infos],
                          "dataset": infos[0]["dataset"], "split": args.split, "tta": args.tta,
                          "members": [{"checkpoint": c, "correct": m.correct, "total": m.total, "ece": m.ece}
                                      for c, m in zip(args.checkpoints, members)] if len(members) > 1 else [],
                          **ev.to_dict()}))
        return 0
    views = "" if args.tta == "none" else f", test-time augmentation '{args.tta}'"
    if len(members) > 1:
        print(f"ensemble of {len(members)} models (mean of their probabilities), {args.split} split{views}:")
        for path, info, m in zip(args.checkpoints, infos, members):
            print(f"  {path} ({info['model']}): {format_accuracy(m.correct, m.total)}")
    else:
        print(f"{args.checkpoints[0]}: {infos[0]['model']} on {infos[0]['dataset']} ({args.split} split{views})")
    print(ev.report())
    return 0


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="classify your own images (PNG, JPEG, BMP, GIF, WebP; files or folders)")
    p.add_argument("checkpoint", help="a model.pt, checkpoint or exported .onnx file")
    p.add_argument("images", nargs="+", help="image files, or folders of them")
    p.add_argument("--top", type=_positive_int, default=3, help="how many classes to show (default: 3)")
    p.add_argument("--json", action="store_true", help="one JSON object per line, with all probabilities")
    p.add_argument("--save-preprocessed", metavar="DIR", help="write the 28x28 image the model saw, as PNG")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or mps")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    from pathlib import Path

    from .fileio import atomic_write
    from .prediction import Predictor
    from .preprocessing import image_files

    predictor = Predictor.from_checkpoint(args.checkpoint, args.device)
    failed = 0
    for path in image_files(args.images):
        try:
            pred = predictor.predict(path)
        except MnistlabError as e:
            failed += 1
            if args.json:
                print(json.dumps({"source": str(path), "error": str(e)}))
            print(f"mnistlab: {e}", file=sys.stderr)
            continue
        if args.save_preprocessed:
            from PIL import Image

            out = Path(args.save_preprocessed) / f"{path.stem}.png"
            atomic_write(out, lambda tmp, px=pred.preprocessed: Image.fromarray(px).save(tmp, format="PNG"))
        if args.json:
            print(json.dumps(pred.to_dict(args.top)))
        else:
            top = ", ".join(f"{c} {100 * p:.1f}%" for c, p in pred.top(args.top))
            print(f"{path}: {pred.label} ({100 * pred.confidence:.1f}%)   top: {top}")
    return 1 if failed else 0


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="a local web page to draw a digit on, and a JSON API")
    p.add_argument("checkpoint", help="a model.pt, checkpoint or exported .onnx file")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--max-upload", type=_positive_int, default=2_000_000, help="largest request body, bytes (2 MB)")
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="server processes, each with its own copy of the model (default: 1)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from .serving import serve

    if not 0 < args.port < 65536:
        raise MnistlabError(f"--port must lie between 1 and 65535, not {args.port}.")
    serve(args.checkpoint, host=args.host, port=args.port, max_bytes=args.max_upload, workers=args.workers)
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write an ONNX or TorchScript file that runs without mnistlab")
    p.add_argument("checkpoint", help="a model.pt or checkpoint written by mnistlab train")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx", help="file format (default: onnx)")
    p.add_argument("--out", help="output file (default: beside the checkpoint)")
    p.add_argument("--probs", action="store_true", help="output probabilities (softmax inside the graph), not logits")
    p.add_argument("--int8", action="store_true", help="ONNX only: static int8 quantisation, calibrated on "
                   "training images (needs the dataset: --data-dir)")
    p.add_argument("--data-dir", help="dataset folder for --int8 calibration (default: $MNISTLAB_DATA, else ./data)")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from .export import export

    try:
        import onnx  # noqa: F401
    except ImportError:
        if args.format == "onnx":
            raise MnistlabError("ONNX export needs onnx and onnxruntime: pip install 'mnistlab[onnx]'.") from None
    path = export(args.checkpoint, args.format, args.out, probs=args.probs, int8=args.int8, data_dir=args.data_dir)
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="rebuild a run's plots and its self-contained HTML report")
    p.add_argument("run_dir", help="a run folder written by mnistlab train")
    p.add_argument("--data-dir", help="dataset folder (default: $MNISTLAB_DATA, else ./data)")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    try:
        from .report import build_report
    except ImportError:
        raise MnistlabError("reports need matplotlib: pip install 'mnistlab[report]'.") from None
    print(f"wrote {build_report(args.run_dir, data_dir=args.data_dir)}")
    return 0


def cmd_losses(args) -> int:
    from .losses import lesson

    print(lesson())
    return 0


def cmd_models(args) -> int:
    from .models import MODELS

    for name, cls in MODELS.items():
        print(f"{name:8} {(cls.__doc__ or '').strip().splitlines()[0]}")
    return 0


def cmd_datasets(args) -> int:
    from .data import DATASETS

    for spec in DATASETS.values():
        print(f"{spec.name:14} folder {spec.folder}/raw/, mean {spec.mean}, std {spec.std}, "
              f"classes: {', '.join(spec.classes)}")
    return 0


def _add_lists(sub) -> None:
    sub.add_parser("losses", help="walk through softmax, NLL and cross-entropy with the seed's numbers"
                   ).set_defaults(func=cmd_losses)
    sub.add_parser("models", help="list the registered models").set_defaults(func=cmd_models)
    sub.add_parser("datasets", help="list the registered datasets").set_defaults(func=cmd_datasets)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="mnistlab", description="Train, evaluate and use MNIST-family classifiers.")
    parser.add_argument("--version", action="version", version=f"mnistlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_train, _add_eval, _add_predict, _add_serve, _add_export, _add_report, _add_lists):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    finally:
        from . import distributed

        distributed.shutdown()


def _run(args) -> int:
    try:
        return args.func(args)
    except MnistlabError as e:
        print(f"mnistlab: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mnistlab: interrupted.", file=sys.stderr)
        return 130
    except RuntimeError as e:
        from . import distributed as dist

        if not dist.is_initialized():
            raise
        # a peer process died or failed: say so once, without gloo's or NCCL's traceback
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"mnistlab: error: rank {dist.rank()}: the distributed job broke ({first[:200]}); checkpoints "
              "already written are intact: continue with mnistlab train --resume CHECKPOINT.", file=sys.stderr)
        return 1
    except OSError as e:  # e.g. a full disk while appending metrics
        where = f"{e.filename}: " if e.filename else ""
        print(f"mnistlab: error: {where}{e.strerror or e}.", file=sys.stderr)
        return 1
