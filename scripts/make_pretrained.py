"""Make the pretrained models that ship in the package, and their manifest.

    python scripts/make_pretrained.py [--data-dir ../shared/data] [--only NAME ...] [--convert | --record]

Each model is trained with a fixed seed by the command listed below, its model.safetensors
(the weights, the model card in the metadata) copied to src/mnistlab/weights/NAME.safetensors,
scored once on the test set, clean and under MNIST-C's 15 corruptions (seed 0), and recorded in
src/mnistlab/weights/manifest.json with its sha256, exact test accuracy, ECE, "not a digit"
threshold and MNIST-C figures; its ONNX copy, NAME.onnx (what `mnistlab predict` runs without
torch), is exported beside it and recorded with its own sha256. The same command on the same kind
of machine gives the same bits (training is deterministic for a seed, device and thread count);
another CPU's kernels can round differently. Every model holds out 5,000 validation images, so its temperature is
fitted there and its probabilities are calibrated. The default's recipe draws digits from fonts: install
Debian's fonts-noto-core fonts-roboto-unhinted fonts-open-sans fonts-klee fonts-kristi fonts-rufscript
fonts-sjfonts fonts-tlwg-purisa-ttf fonts-yozvox-yozfont first (the script refuses without them).

--convert rewrites the NAME.pt files of earlier versions as NAME.safetensors, the same tensors
and card, without training (checked tensor by tensor), and records them again. --record scores
the files as they are and records them again.
"""

import argparse
import hashlib
import json
import shlex
import shutil
import tempfile
from pathlib import Path

import torch

from mnistlab import format_accuracy, load_model, train
from mnistlab.checkpoints import load_weights, save_weights
from mnistlab.cli import build_parser
from mnistlab.data.synthetic import missing_packages
from mnistlab.export import export
from mnistlab.robustness import evaluate_corruptions

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "src" / "mnistlab" / "weights"

MODELS = {  # name -> (description, the train command's flags)
    "robust-real": ("a VGG-style CNN (48/96/192), 15 epochs of robust augmentation, digits from fonts, and outlier "
                    "exposure with letters in those fonts: it reads people's digits and says 'not a digit'",
                    "--preset robust-real --val-size 5000 --seed 1"),
    "classic-cnn": ("the tutorial's CNN and recipe: SGD, 10 epochs",
                    "--preset classic --model cnn --val-size 5000 --seed 1"),
}


def make(name: str, data_dir: str) -> dict:
    _, flags = MODELS[name]
    args = build_parser("train").parse_args(["train", *shlex.split(flags)])
    from mnistlab.training.config import RunConfig, from_preset

    given = {f: getattr(args, f) for f in RunConfig.__dataclass_fields__ if getattr(args, f, None) is not None}
    if from_preset(args.preset, **given).synthetic_digits and missing_packages():  # the weights depend on the fonts
        raise SystemExit(f"install Debian's {' '.join(missing_packages())} first: {name}'s font digits are drawn "
                         "from them")
    with tempfile.TemporaryDirectory() as tmp:
        result = train(from_preset(args.preset, **given), out=Path(tmp) / "run", data_dir=data_dir, progress=False)
        WEIGHTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result.model_path.with_suffix(".safetensors"), WEIGHTS / f"{name}.safetensors")
    return record(name, data_dir)


def convert(name: str, data_dir: str) -> dict:
    """NAME.pt as NAME.safetensors: the same card and tensors, checked, and the .pt removed."""
    old, new = WEIGHTS / f"{name}.pt", WEIGHTS / f"{name}.safetensors"
    card, weights = load_weights(old)
    save_weights(card, weights, new)
    card2, weights2 = load_weights(new)
    assert card2 == card and weights2.keys() == weights.keys()
    assert all(torch.equal(weights[k], weights2[k]) and weights[k].dtype == weights2[k].dtype for k in weights)
    old.unlink()
    return record(name, data_dir)


def record(name: str, data_dir: str) -> dict:
    """The manifest's entry for weights/NAME.safetensors, scored once on the test set, clean and under
    MNIST-C's 15 corruptions (seed 0)."""
    description, flags = MODELS[name]
    path = WEIGHTS / f"{name}.safetensors"
    report = evaluate_corruptions([str(path)], data_dir=data_dir)
    ev, card = report.clean, load_model(path).card
    print(f"{name}: {format_accuracy(ev.correct, ev.total)}, ECE {100 * ev.ece:.2f}%, MNIST-C mean "
          f"{100 * report.mean_accuracy:.2f}%, {path.stat().st_size:,} bytes", flush=True)
    corruptions = {n: {"correct": e.correct, "total": e.total, "ece": round(e.ece, 6),
                       "rejected": report.rejected.get(n)} for n, e in report.results.items()}
    onnx = export(path, "onnx", path.with_suffix(".onnx"))  # what `mnistlab predict` runs where it can
    return {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "onnx": {"file": onnx.name, "sha256": hashlib.sha256(onnx.read_bytes()).hexdigest()},
            "test_correct": ev.correct, "test_total": ev.total, "dataset": "mnist", "description": description,
            "command": f"mnistlab train {flags}", "test_ece": round(ev.ece, 6),
            "reject": None if card.reject_threshold is None else {
                "score": card.reject_score, "threshold": card.reject_threshold,
                "test_rejected": report.rejected.get("clean")},
            "mnist_c": {"seed": 0, "mean_accuracy": round(report.mean_accuracy, 6),
                        "mean_ece": round(report.mean_ece, 6), "mean_rejected": _rounded(report.mean_rejected),
                        "corruptions": corruptions}}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--only", nargs="+", choices=list(MODELS), help="remake only these (default: all)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--convert", action="store_true", help="rewrite the .pt files of earlier versions, untrained")
    how.add_argument("--record", action="store_true",
                   help="score the files as they are and record them again, untrained")
    args = p.parse_args()
    manifest_path = WEIGHTS / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    for name in args.only or MODELS:
        manifest[name] = (convert if args.convert else record if args.record else make)(name, args.data_dir)
    manifest = {name: manifest[name] for name in MODELS if name in manifest}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {manifest_path}")


if __name__ == "__main__":
    main()
