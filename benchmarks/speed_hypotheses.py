"""Issue 24's hypotheses, each on against off, and the whole commands against the tutorial's own script.

    cd benchmarks && PYTHONPATH=../src python speed_hypotheses.py [--data-dir ../../shared/data] [--quick]
                                                                  [--rounds 3] [--accuracy]

Run it once, on a quiet machine (nothing else running: every figure is wall time). Two parts:

1. Whole commands, interleaved round after round: the tutorial's script (../shared/seed/run_tutorial.sh,
   MODEL=cnn and MODEL=mlp), then `mnistlab train --model cnn`, `--preset fast` (report included) and
   `--model mlp`, each as today and with the speed-ups (the variants below). A ratio is the tutorial's
   median over mnistlab's; `fast` is set against the tutorial's CNN, as in issue 24.
2. Each hypothesis alone, off against on, interleaved (pairs in turn):
   foreach-sgd        fresh processes: the first SGD step's wall and CPU time, torch.optim.SGD(fused) or ForeachSGD
   inference-mode     the test pass (10,000 images, batch 1,000) of the tutorial CNN and the fast model, in-process
   background-report  the whole `train --preset fast` command, the report drawn beside the last checkpoints or after
   2 ranks            `train --model cnn --epochs 1 --no-report`: training ms a step, one process with its
                      default threads against --processes 2 (one thread each), and one process with one thread
                      (all three with foreach-sgd, so that no torch._dynamo import falls inside the timed steps)
   fused-conv         ms a step of the tutorial CNN, in-process, as training runs it (channels-last, bf16
                      autocast where the CPU has it, fused SGD, batch 64, the default threads)

--quick: one round of part 1, today against `exact, 2 ranks` only, and fewer pairs in part 2 (about 10-12
minutes on a 2-core machine, most of it the tutorial's two runs). --accuracy adds the recipe's test
accuracy with 2 ranks (the order of the arithmetic changes) for seeds 0, 1, 2 (3 whole runs). --smoke:
everything tiny (the tutorial with EPOCHS=0, mnistlab on 640 images), to check that the script runs;
its figures mean nothing.
"""

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import machine, summary
from tutorial import timed

REPO = Path(__file__).resolve().parents[1]
EXACT = "foreach-sgd,inference-mode,background-report"  # the bit-for-bit speed-ups
# variant -> ($MNISTLAB_SPEED, extra flags)
VARIANTS = {"today": ("", []), "exact": (EXACT, []), "exact, 2 ranks": (EXACT, ["--processes", "2"]),
            "all": ("all", ["--processes", "2"])}
COMMANDS = {"cnn": ["--model", "cnn"], "fast": ["--preset", "fast"], "mlp": ["--model", "mlp"]}
# fused-conv changes only the tutorial CNN, so `all` is measured on it alone
FULL = {"cnn": ["today", "exact", "exact, 2 ranks", "all"], "fast": ["today", "exact", "exact, 2 ranks"],
        "mlp": ["today", "exact", "exact, 2 ranks"]}
SMOKE = ["--train-limit", "640", "--epochs", "1"]  # appended last: overrides the commands' own
# fused-conv, measured 3.7x the CPU time of a step while building (one thread, on a loaded machine), only in part 2
QUICK = {"cnn": ["today", "exact, 2 ranks"], "fast": ["today", "exact, 2 ranks"], "mlp": ["today", "exact, 2 ranks"]}


def run(cmd: list[str], speed: str = "", **env) -> tuple[float, str]:
    """Wall time and stdout of a whole command, offline, with these speed-ups."""
    return timed(cmd, {**os.environ, "MNISTLAB_OFFLINE": "1", "MNISTLAB_SPEED": speed, **env})


def mnistlab_train(args, flags: list[str], speed: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "mnistlab", "train", *flags, "--data-dir", args.data_dir, "--no-progress",
               "--out", str(Path(out) / "run"), *(SMOKE if args.smoke else [])]
        wall, text = run(cmd, speed)
    train_s = float(re.search(r"; ([\d.]+) s of training", text).group(1))
    steps = int(re.search(r", (\d+) steps, ", text).group(1))
    return {"wall": wall, "train": train_s, "steps": steps,
            "accuracy": re.search(r"test accuracy: (\d+/\d+ = [\d.]+%)", text).group(1)}


def tutorial(args, model: str) -> dict:
    script = REPO.parent / "shared" / "seed" / "run_tutorial.sh"
    wall, text = run(["bash", str(script), args.data_dir], MODEL=model, **({"EPOCHS": "0"} if args.smoke else {}))
    return {"wall": wall, "accuracy": re.findall(r"\(([\d.]+%)\)", text)[-1]}


def whole_commands(args, variants: dict[str, list[str]]) -> dict:
    """Part 1: {(command, variant): [runs]} and {("tutorial", model): [runs]}."""
    runs: dict = {}
    for r in range(args.rounds):
        for model, commands in (("cnn", ["cnn", "fast"]), ("mlp", ["mlp"])):
            t = tutorial(args, model)
            runs.setdefault(("tutorial", model), []).append(t)
            print(f"round {r + 1}: the tutorial's script, {model}: {t['wall']:.1f} s ({t['accuracy']})", flush=True)
            for command in commands:
                names = variants[command] if r % 2 == 0 else variants[command][::-1]  # alternate the order
                for name in names:
                    speed, extra = VARIANTS[name]
                    m = mnistlab_train(args, COMMANDS[command] + extra, speed)
                    runs.setdefault((command, name), []).append(m)
                    print(f"round {r + 1}: train {' '.join(COMMANDS[command])}, {name}: {m['wall']:.1f} s "
                          f"({m['accuracy']}; {m['train']:.1f} s of training)", flush=True)
    return runs


def first_step_cost(pairs: int) -> dict[str, list[tuple[float, float]]]:
    """foreach-sgd: (wall, CPU) seconds of building the optimiser and its first step, in fresh processes."""
    code = """
import sys, time
import torch
from mnistlab.models import build_model
from mnistlab.training.optim import ForeachSGD
model = build_model("cnn")
model(torch.zeros(2, 1, 28, 28)).sum().backward()
w, c = time.perf_counter(), time.process_time()
opt = (ForeachSGD(model.parameters(), lr=0.1, momentum=0.5) if sys.argv[1] == "foreach" else
       torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5, fused=True))
opt.zero_grad(set_to_none=False)
opt.step()
print(time.perf_counter() - w, time.process_time() - c)
"""
    out: dict[str, list] = {"off": [], "on": []}
    for i in range(pairs):
        for key in (("off", "on") if i % 2 == 0 else ("on", "off")):
            _, text = run([sys.executable, "-c", code, "foreach" if key == "on" else "fused"])
            out[key].append(tuple(map(float, text.split())))
    return out


def test_pass_cost(args, pairs: int) -> dict[str, dict[str, list[float]]]:
    """inference-mode: seconds of one whole test pass, as training runs it, no_grad against inference_mode."""
    import torch

    from mnistlab.data.mnist import Loader, get_dataset_spec, load_split
    from mnistlab.device import amp_dtype
    from mnistlab.evaluation import predict_logits
    from mnistlab.models import build_model
    from mnistlab.training.config import PRESETS

    spec = get_dataset_spec("mnist")
    test = Loader(*load_split("mnist", "test", args.data_dir), 1000, spec.mean, spec.std, "cpu", True)
    out: dict = {}
    amp = amp_dtype("auto", torch.device("cpu"))
    fast = build_model("bn-cnn", **PRESETS["fast"]["model_config"])
    for name, model in (("cnn", build_model("cnn")), ("fast", fast)):
        model = model.to(memory_format=torch.channels_last)
        predict_logits(model, test, amp)  # warm-up
        for i in range(pairs):
            for key in (("off", "on") if i % 2 == 0 else ("on", "off")):
                os.environ["MNISTLAB_SPEED"] = "inference-mode" if key == "on" else ""
                t0 = time.perf_counter()
                predict_logits(model, test, amp)
                out.setdefault(name, {"off": [], "on": []})[key].append(time.perf_counter() - t0)
    os.environ.pop("MNISTLAB_SPEED")
    return out


def report_cost(args, pairs: int) -> dict[str, list[float]]:
    """background-report: the whole `train --preset fast` command, report included."""
    out: dict = {"off": [], "on": []}
    for i in range(pairs):
        for key in (("off", "on") if i % 2 == 0 else ("on", "off")):
            m = mnistlab_train(args, COMMANDS["fast"], "background-report" if key == "on" else "")
            out[key].append(m["wall"])
    return out


def ranks_cost(args, pairs: int) -> dict[str, list[float]]:
    """2 ranks: training ms a step of one epoch of the tutorial's recipe. With foreach-sgd in all three: torch.optim's
    first step imports torch._dynamo (about 1 s of CPU) inside the timed training, which would blur the steps."""
    flags = {"1 process, default threads": [], "2 ranks, 1 thread each": ["--processes", "2"],
             "1 process, 1 thread": ["--threads", "1"]}
    out: dict = {k: [] for k in flags}
    for i in range(pairs):
        for name in (list(flags) if i % 2 == 0 else list(flags)[::-1]):
            m = mnistlab_train(args, ["--model", "cnn", "--epochs", "1", "--no-report", *flags[name]], "foreach-sgd")
            out[name].append(1000 * m["train"] / m["steps"])
    return out


def step_cost(args, blocks: int, steps: int = 100) -> dict[str, list[float]]:
    """fused-conv: ms a step of the tutorial CNN as training runs it, in blocks of `steps`, in turn."""
    import torch

    from mnistlab.data.mnist import Loader, get_dataset_spec, load_split
    from mnistlab.device import amp_dtype, keep_freed_memory
    from mnistlab.models import build_model
    from mnistlab.training.config import RunConfig
    from mnistlab.training.loop import make_optimizer
    from mnistlab.training.steps import EagerStep

    keep_freed_memory()
    spec = get_dataset_spec("mnist")
    images, labels = load_split("mnist", "train", args.data_dir)
    data = list(Loader(images[:64 * steps], labels[:64 * steps], 64, spec.mean, spec.std, "cpu", True))
    amp = amp_dtype("auto", torch.device("cpu"))
    runners = {}
    for key in ("off", "on"):
        os.environ["MNISTLAB_SPEED"] = "fused-conv" if key == "on" else ""
        torch.manual_seed(0)
        model = build_model("cnn").to(memory_format=torch.channels_last)
        runners[key] = EagerStep(model, make_optimizer(RunConfig(model="cnn"), model), amp, 0.0)
        for x, y in data[:20]:  # warm-up
            runners[key](x, y)
    os.environ.pop("MNISTLAB_SPEED")
    out: dict = {"off": [], "on": []}
    for i in range(blocks):
        for key in (("off", "on") if i % 2 == 0 else ("on", "off")):
            t0 = time.perf_counter()
            for x, y in data:
                loss, _ = runners[key](x, y)
            loss.item()
            out[key].append(1000 * (time.perf_counter() - t0) / len(data))
    return out


def accuracy(args) -> list[str]:
    speed, extra = VARIANTS["exact, 2 ranks"]  # the candidates that change the order of the arithmetic: 2 ranks
    return [mnistlab_train(args, ["--model", "cnn", "--seed", str(s), "--no-report", *extra], speed)["accuracy"]
            for s in (0, 1, 2)]


def med(runs: list[dict], key: str = "wall") -> float:
    return statistics.median(r[key] for r in runs)


def print_tables(runs: dict, variants: dict[str, list[str]]) -> None:
    print("\n| command | variant | whole command, median [range] | of which training steps | outside them "
          "| the tutorial's script | ratio |")
    print("|---|---|---|---|---|---|---|")
    for command, names in variants.items():
        theirs = runs[("tutorial", "mlp" if command == "mlp" else "cnn")]
        for name in names:
            ours = runs[(command, name)]
            outside = statistics.median(r["wall"] - r["train"] for r in ours)
            print(f"| train {' '.join(COMMANDS[command])} | {name} | {summary([r['wall'] for r in ours], '{:.1f}')} s "
                  f"| {med(ours, 'train'):.1f} s | {outside:.1f} s | {med(theirs):.1f} s "
                  f"| **{med(theirs) / med(ours):.2f}x** |")


def print_targets(runs: dict | None, variants: dict[str, list[str]], ranks: dict, steps: dict,
                  seeds: list[str] | None) -> None:
    """Issue 24's table of targets: today, the fastest variant measured, the goal."""
    print("\n| measure | today | with the speed-ups (the fastest variant) | goal |")
    print("|---|---|---|---|")
    for command, goal in (("cnn", "≥ 4x, then 5x"), ("fast", "≥ 15x"), ("mlp", "≥ 6x")):
        if runs is None:
            break
        theirs = med(runs[("tutorial", "mlp" if command == "mlp" else "cnn")])
        best = min((n for n in variants[command] if n != "today"), key=lambda n: med(runs[(command, n)]))
        today, fastest = med(runs[(command, "today")]), med(runs[(command, best)])
        print(f"| `train {' '.join(COMMANDS[command])}`, whole command | {theirs / today:.2f}x ({today:.1f} s) "
              f"| {theirs / fastest:.2f}x ({fastest:.1f} s; {best}) | {goal} |")
    one, two = (statistics.median(ranks[k]) for k in ("1 process, default threads", "2 ranks, 1 thread each"))
    fused, plain = statistics.median(steps["on"]), statistics.median(steps["off"])
    print(f"| training steps, tutorial CNN (ms a step, `--epochs 1`) | {one:.2f} | {two:.2f} (2 ranks); "
          f"{fused:.2f} in-process with fused-conv against {plain:.2f} | ≤ 2 |")
    if seeds:
        print(f"| accuracy, `train --model cnn --processes 2`, seeds 0, 1, 2 | 98.95% (seed 0) | {', '.join(seeds)} "
              f"| 98.6-99.1% |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--quick", action="store_true", help="one round, the two main variants, fewer pairs")
    p.add_argument("--rounds", type=int, help="rounds of part 1 (default 3, or 1 with --quick)")
    p.add_argument("--accuracy", action="store_true", help="also the recipe's accuracy with 2 ranks, 3 seeds")
    p.add_argument("--skip-commands", action="store_true", help="part 2 only")
    p.add_argument("--smoke", action="store_true", help="everything tiny, to check that the script runs")
    args = p.parse_args()
    args.quick = args.quick or args.smoke
    args.rounds = args.rounds or (1 if args.quick else 3)
    pairs = 2 if args.quick else 5
    variants = QUICK if args.quick else FULL
    print(f"machine: {machine()}")
    print(f"command: python speed_hypotheses.py {' '.join(sys.argv[1:])}\n", flush=True)

    runs = None
    if not args.skip_commands:
        runs = whole_commands(args, variants)
        print_tables(runs, variants)

    print("\n| hypothesis | what is timed | off, median [range] | on, median [range] | on / off |")
    print("|---|---|---|---|---|")

    def row(name: str, what: str, off: list[float], on: list[float], unit: str, fmt: str = "{:.2f}") -> None:
        print(f"| {name} | {what} | {summary(off, fmt)} {unit} | {summary(on, fmt)} {unit} "
              f"| {statistics.median(on) / statistics.median(off):.3f} |", flush=True)

    sgd = first_step_cost(3 if args.quick else 5)
    row("foreach-sgd", "first SGD step, wall (fresh process)", [w for w, _ in sgd["off"]], [w for w, _ in sgd["on"]],
        "s", "{:.3f}")
    row("foreach-sgd", "first SGD step, CPU time", [c for _, c in sgd["off"]], [c for _, c in sgd["on"]], "s",
        "{:.3f}")
    for model, t in test_pass_cost(args, 5 if args.quick else 10).items():
        row("inference-mode", f"a test pass, {model} (10,000 images, batch 1,000)", t["off"], t["on"], "s", "{:.3f}")
    rep = report_cost(args, pairs)
    row("background-report", "whole `train --preset fast`", rep["off"], rep["on"], "s")
    ranks = ranks_cost(args, 1 if args.quick else 3)
    base = ranks["1 process, default threads"]
    for name in ("2 ranks, 1 thread each", "1 process, 1 thread"):
        row(name, "training ms a step, `train --model cnn --epochs 1`, against 1 process with its default threads",
            base, ranks[name], "ms")
    steps = step_cost(args, 6 if args.quick else 12, 20 if args.smoke else 100)
    row("fused-conv", "ms a step, tutorial CNN, in-process", steps["off"], steps["on"], "ms")
    seeds = accuracy(args) if args.accuracy else None
    print_targets(runs, variants, ranks, steps, seeds)


if __name__ == "__main__":
    main()
