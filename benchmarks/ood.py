""""Not a digit", measured (issue 21): softmax and sigmoid heads, with and without outlier exposure,
and an 11th output "none" (--head none-class), each judged by every reject score that applies; the
choice made on validation only, then judged.

    python benchmarks/ood.py [--data-dir DIR] [--out runs/ood] [--epochs 1.25] [--mnist-c-images 2000]
    python benchmarks/ood.py --recipe robust --out runs/ood-robust --variants softmax "softmax + outlier exposure" ...
    python benchmarks/ood.py --model robust-real          # judge a model as it is (a name or a file), untrained

Every model is the `fast` recipe (bn-cnn 16-32, Adam onecycle, label smoothing 0.1), or the one
--recipe names, seed 1, with a 5,000-image validation split. Trained once into --out; a model.pt
already there is reused.

Choice (validation only): the 5,000 validation digits against 5,000 validation outliers
(outliers.outlier_set("validation"): font characters, scribbles, smooth noise, the last 5,000
Fashion-MNIST training images), by AUROC. Judging: the 10,000 test digits against Fashion-MNIST's
test set, letters in held-out fonts (FreeFont), uniform and Gaussian noise (AUROC, FPR at 95% TPR);
MNIST-C's 15 test corruptions of the test digits, wrongly rejected at the validation threshold.
Beside the choice, on validation too: the validation digits under the held-out corruption family
(corruptions.HELD_OUT, never MNIST-C's 15), wrongly rejected at the same threshold.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from common import machine
from mnistlab import RunConfig, load_model, train
from mnistlab.data.corruptions import HELD_OUT, TEST, corrupt
from mnistlab.data.outliers import evaluation_sets, outlier_set
from mnistlab.data.own import load_split
from mnistlab.evaluation import evaluation_from_logits, model_split
from mnistlab.heads import head_of
from mnistlab.ood import REJECT_SCORES, auroc, fpr_at_tpr, ood_score, reject_threshold, rejected_share
from mnistlab.training.config import recipe

VARIANTS = {"softmax": dict(head="softmax"), "sigmoid": dict(head="sigmoid"),
            "softmax + outlier exposure": dict(head="softmax", outlier_exposure=0.5),
            "sigmoid + outlier exposure": dict(head="sigmoid", outlier_exposure=0.5),
            "11th class 'none' + outlier exposure": dict(head="none-class", outlier_exposure=0.5)}


def trained(name: str, changes: dict, out: Path, data_dir, epochs: float | None, base: str = "fast") -> Path:
    folder = out / name.replace(" + ", "-").replace(" ", "-").replace("'", "")
    if not (folder / "model.pt").is_file():
        cfg = RunConfig(**{**recipe(base), "val_size": 5000, "seed": 1, "cuda_graph": False, **changes,
                           **({"epochs": epochs} if epochs else {})}).validate()
        start = time.perf_counter()
        train(cfg, out=folder, data_dir=data_dir, progress=False, report=False)
        print(f"  trained {name} in {time.perf_counter() - start:.0f} s")
    return folder / "model.pt"


def logits(model, images: np.ndarray) -> np.ndarray:
    return np.concatenate([model.backend(images[i:i + 1000]) for i in range(0, len(images), 1000)]).astype(np.float64)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir")
    p.add_argument("--out", default="runs/ood")
    p.add_argument("--epochs", type=float, default=None, help="default: 1.25 for fast, else the recipe's own")
    p.add_argument("--recipe", default="fast", help="the preset every variant starts from")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--mnist-c-images", type=int, default=2000, help="test digits per MNIST-C corruption")
    p.add_argument("--model", help="judge this model (a pretrained name or a file) instead of training variants")
    args = p.parse_args()
    epochs = args.epochs or (1.25 if args.recipe == "fast" else None)
    print(f"machine: {machine()}")
    val_out = outlier_set("validation", 5000, seed=1, data_dir=args.data_dir)
    judges = evaluation_sets(seed=0, data_dir=args.data_dir)
    test_x, test_y = load_split("mnist", "test", args.data_dir)
    test_x = test_x.numpy()
    mnist_c = {name: corrupt(test_x[:args.mnist_c_images], name, seed=0) for name in TEST}
    results = {}
    for name in [args.model] if args.model else args.variants:
        changes = {} if args.model else VARIANTS[name]
        start = time.perf_counter()
        model = load_model(args.model or str(trained(name, changes, Path(args.out), args.data_dir, epochs,
                                                      args.recipe)))
        card = model.card
        val_x, _ = model_split(model, "validation", args.data_dir)
        val_x = val_x.numpy()
        held_out = {k: corrupt(val_x[:args.mnist_c_images], k, seed=0) for k in HELD_OUT}
        z_val, z_out, z_test = logits(model, val_x), logits(model, val_out), logits(model, test_x)
        z_held = {k: logits(model, v) for k, v in held_out.items()}
        ev = evaluation_from_logits(torch.from_numpy(z_test), test_y, card.classes, card.temperature, head=card.head)
        sums = head_of(card.head).probabilities_and_raw(z_test, card.temperature)[1].sum(1)
        r = {"head": card.head, "outlier_exposure": None if args.model else changes.get("outlier_exposure", 0.0),
             "temperature": card.temperature, "correct": ev.correct, "total": ev.total, "ece": ev.ece,
             "nll": ev.loss, "sum_minus_1_mean_abs": float(np.abs(sums - 1).mean()),
             "sum_range": [float(sums.min()), float(sums.max())], "scores": {}}
        z_judges = {k: logits(model, v) for k, v in judges.items()}
        r["sum_on_outliers"] = {k: float(head_of(card.head).probabilities_and_raw(v, card.temperature)[1].sum(1).mean())
                                for k, v in z_judges.items()}
        z_c = {k: logits(model, v) for k, v in mnist_c.items()}
        for score in [s for s in REJECT_SCORES if s != "not-none" or card.head == "none-class"]:
            def scored(z, score=score, card=card):
                return ood_score(z, score, card.temperature, card.head)

            s_val, s_test = scored(z_val), scored(z_test)
            thr = reject_threshold(s_val)
            r["scores"][score] = {
                "validation_auroc": auroc(s_val, scored(z_out)),
                "threshold": thr, "test_digits_rejected": rejected_share(s_test, thr),
                "held_out_rejected": {k: rejected_share(scored(v), thr) for k, v in z_held.items()},
                "judged": {k: {"auroc": auroc(s_test, scored(v)), "fpr95": fpr_at_tpr(s_test, scored(v)),
                               "kept_at_threshold": float((scored(v) >= thr).mean())} for k, v in z_judges.items()},
                "mnist_c_rejected": {k: rejected_share(scored(v), thr) for k, v in z_c.items()}}
        results[name] = r
        best = max(r["scores"], key=lambda s: r["scores"][s]["validation_auroc"])
        print(f"{name}: {ev.correct}/{ev.total}, ECE {100 * ev.ece:.2f}%; validation AUROC "
              + ", ".join(f"{s} {v['validation_auroc']:.4f}" for s, v in r["scores"].items()) + f" (best: {best})")
        print(f"  ({time.perf_counter() - start:.0f} s with the training)", flush=True)
    if not args.model and args.recipe == "fast" and "softmax + outlier exposure" in args.variants:
        results["latency"] = latency(Path(args.out), args.data_dir)
    print(json.dumps(results))
    tables({k: v for k, v in results.items() if k != "latency"})
    if "latency" in results:
        print(f"\nlatency: {results['latency']}")


def latency(out: Path, data_dir, reps: int = 300) -> dict:
    """`predict` of one PNG by the chosen model, with and without its reject score (its card with and
    without a threshold), interleaved; and the score alone. Medians, in microseconds."""
    import dataclasses
    import io

    from PIL import Image

    model = load_model(str(trained("softmax + outlier exposure", VARIANTS["softmax + outlier exposure"], out,
                                   data_dir, 1.25)))
    png = io.BytesIO()
    Image.fromarray(255 - load_split("mnist", "test", data_dir)[0][0].numpy()).resize((200, 200)).save(png, "PNG")
    with_card, without = model.card, dataclasses.replace(model.card, reject_score="", reject_threshold=None)
    times = {"with": [], "without": []}
    for _ in range(reps):
        for name, card in (("with", with_card), ("without", without)):
            model.card = card
            start = time.perf_counter()
            model.predict(png.getvalue())
            times[name].append(time.perf_counter() - start)
    model.card = with_card
    z = model.backend(load_split("mnist", "test", data_dir)[0][:1].numpy())
    score = []
    for _ in range(reps):
        start = time.perf_counter()
        model.ood_scores_of(z)
        score.append(time.perf_counter() - start)
    med = {k: 1e6 * float(np.median(v)) for k, v in times.items()}
    return {"predict_with_us": med["with"], "predict_without_us": med["without"],
            "score_alone_us": 1e6 * float(np.median(score)),
            "added_percent": 100 * float(np.median(score)) / (med["without"] / 1e6)}


def tables(results: dict) -> None:
    print("\n| model | score | validation AUROC | held-out corruptions rejected, validation (mean, worst) | "
          "Fashion test AUROC / FPR95 | letters AUROC / FPR95 | "
          "uniform noise AUROC | Gaussian noise AUROC | test digits rejected | MNIST-C rejected (mean, worst) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        for score, s in r["scores"].items():
            j, c, h = s["judged"], s["mnist_c_rejected"], s["held_out_rejected"]
            worst, worst_h = max(c, key=c.get), max(h, key=h.get)
            print(f"| {name} | {score} | {s['validation_auroc']:.4f} | "
                  f"{100 * np.mean(list(h.values())):.2f}%, {worst_h} {100 * h[worst_h]:.1f}% | "
                  f"{j['fashion-mnist test']['auroc']:.4f} / {100 * j['fashion-mnist test']['fpr95']:.1f}% | "
                  f"{j['letters, held-out fonts']['auroc']:.4f} / {100 * j['letters, held-out fonts']['fpr95']:.1f}% | "
                  f"{j['uniform noise']['auroc']:.4f} | {j['gaussian noise']['auroc']:.4f} | "
                  f"{100 * s['test_digits_rejected']:.2f}% | {100 * np.mean(list(c.values())):.2f}%, "
                  f"{worst} {100 * c[worst]:.1f}% |")


if __name__ == "__main__":
    main()
