"""Issue 5's figures: the `best` preset over several seeds, then an ensemble chosen on validation.

    python benchmarks/accuracy.py --runs-dir runs/best [--seeds 1 2 3 4 5] [--extra RUN_DIR ...]
                                  [--data-dir DIR] [--device cpu] [--tta none]

Seed S trains `mnistlab train --preset best --seed S` into RUNS_DIR/seedS, skipped when its
model.pt is already there (an interrupted benchmark resumes; runs made by hand with the same
command can be reused). The single-model figure is the test accuracy at the final epoch, mean
of the first three seeds. Ensemble members (the seeds, plus any --extra run folders trained
with the same --val-size) are chosen greedily on the validation split, by the negative
log-likelihood of their averaged probabilities, at most --max-members of them; only the chosen
ensemble is then evaluated on the test set.
"""

import argparse
import statistics
from pathlib import Path

from common import machine
from mnistlab import from_preset, train
from mnistlab.evaluation import evaluate_files, evaluation_from_probs, format_accuracy, split_probabilities
from mnistlab.inference import load_model
from mnistlab.training.runs import read_run_events


def train_seed(seed: int, out: Path, data_dir) -> None:
    if not (out / "model.pt").is_file():
        train(from_preset("best", seed=seed), out=out, data_dir=data_dir, progress=False)


def run_summary(run: Path) -> dict:
    events = read_run_events(run)
    tests = [e for e in events if e["event"] == "test"]
    calib = next(e for e in events if e["event"] == "calibration")
    return dict(run=str(run), correct=tests[-1]["correct"], total=tests[-1]["total"],
                train_s=[e for e in events if e["event"] == "epoch"][-1]["train_seconds"],
                temperature=calib["temperature"], val_ece=(calib["val_ece_before"], calib["val_ece_after"]),
                test_ece=(tests[-2]["ece"], tests[-1]["ece"]), test_nll=tests[-1]["loss"],
                test_brier=tests[-1]["brier"])


def validation_probabilities(runs: list[Path], data_dir, device: str = "cpu", tta: str = "none"):
    """(each run's calibrated probabilities on the validation split, labels, classes)."""
    probs = []
    for run in runs:
        model = load_model(run / "model.pt", device)
        _, p, labels = split_probabilities(model, data_dir, "validation", tta)
        probs.append(p)
    return probs, labels, model.classes


def choose_ensemble(runs: list[Path], data_dir, max_members: int, device: str = "cpu",
                    tta: str = "none") -> tuple[list[int], list]:
    """Greedy forward selection on the validation split; returns member indices and the steps taken."""
    return greedy_ensemble(*validation_probabilities(runs, data_dir, device, tta), max_members)


def greedy_ensemble(probs: list, labels, classes: tuple, max_members: int) -> tuple[list[int], list]:
    """Add, one at a time, the member whose averaged probabilities have the lowest NLL; stop at the
    cap or when no member lowers it. Returns member indices and (index, correct, total, NLL) per step."""
    chosen, steps, best_nll = [], [], float("inf")
    while len(chosen) < max_members:
        trials = {i: evaluation_from_probs(sum(probs[j] for j in chosen + [i]) / (len(chosen) + 1), labels, classes)
                  for i in range(len(probs)) if i not in chosen}
        if not trials:
            break
        i, ev = min(trials.items(), key=lambda kv: kv[1].loss)
        if ev.loss >= best_nll:
            break
        chosen.append(i)
        best_nll = ev.loss
        steps.append((i, ev.correct, ev.total, ev.loss))
    return chosen, steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs-dir", required=True, help="folder for the seeds' run folders")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--extra", nargs="*", default=[], help="more run folders to offer the ensemble")
    p.add_argument("--max-members", type=int, default=5)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="cpu", help="where the ensemble is chosen and evaluated (training: auto)")
    p.add_argument("--tta", default="none", help="test-time augmentation for choosing and evaluating the ensemble "
                   "(choose it on validation first: benchmarks/tta.py)")
    args = p.parse_args()
    print(f"machine: {machine()}")
    runs = [Path(args.runs_dir) / f"seed{s}" for s in args.seeds]
    for seed, run in zip(args.seeds, runs):
        train_seed(seed, run, args.data_dir)
    print("\n| run | test accuracy (final epoch) | training s | temperature | validation ECE before → after "
          "| test ECE before → after | test NLL / Brier (calibrated) |\n|---|---|---|---|---|---|---|")
    rows = [run_summary(r) for r in runs + [Path(e) for e in args.extra]]
    for r in rows:
        print(f"| {Path(r['run']).name} | {format_accuracy(r['correct'], r['total'])} | {r['train_s']:.0f} "
              f"| {r['temperature']:.3f} | {100 * r['val_ece'][0]:.2f}% → {100 * r['val_ece'][1]:.2f}% "
              f"| {100 * r['test_ece'][0]:.2f}% → {100 * r['test_ece'][1]:.2f}% "
              f"| {r['test_nll']:.4f} / {r['test_brier']:.4f} |")
    first3 = [100 * r["correct"] / r["total"] for r in rows[:3]]
    print(f"\nsingle model, mean of the first 3 seeds: {statistics.mean(first3):.2f}%  "
          f"(all {len(runs)} seeds: {statistics.mean(100 * r['correct'] / r['total'] for r in rows[:len(runs)]):.2f}%)")
    candidates = runs + [Path(e) for e in args.extra]
    chosen, steps = choose_ensemble(candidates, args.data_dir, args.max_members, args.device, args.tta)
    print("\nensemble chosen on the validation split (greedy, by NLL of the mean probabilities):")
    for i, correct, total, nll in steps:
        print(f"  + {candidates[i].name}: validation {format_accuracy(correct, total)}, NLL {nll:.4f}")
    _, _, ev = evaluate_files([candidates[i] / "model.pt" for i in chosen], args.data_dir, "test", args.device,
                             args.tta)
    print(f"ensemble of {len(chosen)} on the test set: {format_accuracy(ev.correct, ev.total)}; "
          f"ECE {100 * ev.ece:.2f}%, NLL {ev.loss:.4f}, Brier {ev.brier:.4f}")


if __name__ == "__main__":
    main()
