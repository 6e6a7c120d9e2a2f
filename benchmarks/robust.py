"""Choosing a robust recipe honestly (issue 21, part 2): candidates trained with a 5,000-image
validation split, each scored on that split clean and under the held-out corruptions
(`mnistlab.data.corruptions.HELD_OUT`), never under MNIST-C's 15 test corruptions.

    python benchmarks/robust.py train NAME [--preset robust] [--augment JSON] [--epochs E] [--data-dir DIR]
    python benchmarks/robust.py score RUN_DIR_OR_MODEL ... [--data-dir DIR]

`train` trains one candidate (seed 1, --val-size 5000) into runs/robust/NAME and scores it;
`score` scores models already trained. Each gets: the per-epoch clean validation curve of its
run, then per held-out corruption the exact counts, accuracy and ECE at the model's own
temperature, and the ECE that two ways of fitting the temperature would give:

- "clean": fitted on the clean validation images only;
- "mix, one left out": fitted on the clean validation images and all the held-out corruptions
  but the one scored (seed 1, as training's calibrate "held-out" does; scored on seed 0),
  which says how a temperature fitted on a mix carries over to a corruption it has not seen.

The figures go to runs/robust/NAME/validation.json as well. Run trainings one at a time.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from common import machine
from mnistlab import load_model, train
from mnistlab.data.corruptions import HELD_OUT, corrupt
from mnistlab.evaluation import evaluation_from_logits, fit_temperature, model_split
from mnistlab.training.config import from_preset

OUT = Path("runs") / "robust"


def logits_of(model, images: np.ndarray) -> torch.Tensor:
    """Logits up to a constant per image: the log of the model's probabilities times its temperature."""
    probs = model.predict_proba(images)
    return torch.from_numpy(np.log(np.clip(probs, 1e-300, None)) * model.card.temperature)


def score(path: Path, data_dir) -> dict:
    model = load_model(path)
    images, labels = (t.numpy() for t in model_split(model, "validation", data_dir))
    y = torch.from_numpy(labels)
    classes = model.classes
    sets = {"clean": logits_of(model, images)}
    fitting = {}  # seed 1: the images training's calibrate "held-out" fits on
    for name in HELD_OUT:
        sets[name] = logits_of(model, corrupt(images, name, seed=0))
        fitting[name] = logits_of(model, corrupt(images, name, seed=1))
    t_clean = fit_temperature(sets["clean"], y)
    rows = {}
    for name, z in sets.items():
        ev = evaluation_from_logits(z, y, classes, model.card.temperature)
        row = {"correct": ev.correct, "total": ev.total, "accuracy": ev.accuracy, "ece": ev.ece, "nll": ev.loss,
               "ece_clean_fit": evaluation_from_logits(z, y, classes, t_clean).ece}
        if name != "clean":
            others = [sets["clean"], *(fitting[n] for n in HELD_OUT if n != name)]
            t_loo = fit_temperature(torch.cat(others), y.repeat(len(others)))
            row |= {"t_leave_one_out": t_loo, "ece_mix_loo": evaluation_from_logits(z, y, classes, t_loo).ece}
        rows[name] = row
    corrupted = [rows[n] for n in HELD_OUT]
    history = []
    metrics = path.parent / "metrics.jsonl"
    if metrics.is_file():  # the run's clean validation curve, epoch by epoch
        events = [json.loads(line) for line in metrics.read_text().splitlines()]
        history = [{"epoch": e["epoch"], "correct": e["correct"], "accuracy": e["accuracy"]}
                   for e in events if e.get("event") == "validation"]
    return {"model": str(path), "temperature": model.card.temperature, "t_clean_fit": t_clean, "curve": history,
            "rows": rows, "held_out_mean": float(np.mean([r["accuracy"] for r in corrupted])),
            "held_out_worst": min(r["accuracy"] for r in corrupted),
            "held_out_mean_ece": float(np.mean([r["ece"] for r in corrupted])),
            "held_out_max_ece": max(r["ece"] for r in corrupted)}


def show(name: str, s: dict) -> None:
    print(f"\n{name} ({s['model']}): temperature {s['temperature']:.3f} (clean fit {s['t_clean_fit']:.3f})")
    print("clean validation curve: " + ", ".join(f"epoch {h['epoch']} {h['correct']}" for h in s["curve"]))
    print("| validation | accuracy | ECE (own T) | ECE (clean fit) | ECE (mix, one left out) |")
    print("|---|---|---|---|---|")
    for n, r in s["rows"].items():
        loo = f"{100 * r['ece_mix_loo']:.1f}%" if "ece_mix_loo" in r else "–"
        print(f"| {n} | {r['correct']}/{r['total']} = {100 * r['accuracy']:.2f}% | {100 * r['ece']:.1f}% | "
              f"{100 * r['ece_clean_fit']:.1f}% | {loo} |")
    print(f"held-out mean {100 * s['held_out_mean']:.2f}%, worst {100 * s['held_out_worst']:.2f}%, "
          f"mean ECE {100 * s['held_out_mean_ece']:.1f}%, max ECE {100 * s['held_out_max_ece']:.1f}%")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=["train", "score"])
    p.add_argument("names", nargs="+", help="train: the candidate's name; score: run folders or model files")
    p.add_argument("--preset", default="robust")
    p.add_argument("--augment", type=json.loads, help="the candidate's augmentation, replacing the preset's")
    p.add_argument("--epochs", type=float)
    p.add_argument("--calibrate", choices=["clean", "held-out"])
    p.add_argument("--data-dir")
    args = p.parse_args()
    print(f"machine: {machine()}")
    if args.action == "train":
        name = args.names[0]
        cfg = from_preset(args.preset, augment=args.augment, epochs=args.epochs, calibrate=args.calibrate,
                          val_size=5000, seed=1)
        print(f"{name}: {json.dumps(cfg.to_dict())}")
        start = time.perf_counter()
        result = train(cfg, out=OUT / name, data_dir=args.data_dir, progress=False)
        print(f"{name}: trained in {time.perf_counter() - start:.0f} s wall ({result.train_seconds:.0f} s training)")
        paths = {name: result.model_path}
    else:
        paths = {Path(n).name if Path(n).is_dir() else n: Path(n) / "model.pt" if Path(n).is_dir() else Path(n)
                 for n in args.names}
    for name, path in paths.items():
        s = score(path, args.data_dir)
        show(name, s)
        (path.parent / "validation.json").write_text(json.dumps(s, indent=1) + "\n")


if __name__ == "__main__":
    main()
