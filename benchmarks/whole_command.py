"""Whole commands as a user types them, timed from outside: process start to exit, start-up included.

    cd benchmarks && python whole_command.py --data-dir ../../shared/data [--runs 5] [--dry-run]

Rows (each a median [min-max] of --runs runs, after one warm-up run that is not counted):

- `mnistlab train --preset fast` (report included: the command, then when report.complete appeared)
  against the tutorial's own script (../shared/seed/run_tutorial.sh, MODEL=cnn), run in turn,
  A B A B ..., the ratio taken pair by pair (the machine's speed drifts; a pair shares it);
- the time of `train --preset fast` outside its training steps (its "timings" event: total - steps);
- `mnistlab predict one.png` with the default (pretrained) model;
- `mnistlab train --preset classic --model cnn`;
- `--device cuda` fast and classic, where torch sees a GPU ("not measured: no device" where not).

Wall seconds from a monotonic clock around the child; CPU seconds and peak memory from the
operating system's accounting of the reaped child (os.wait4), as /usr/bin/time reports them.
Run it on a quiet machine: on a shared one every figure wanders.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from common import machine, summary

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MNISTLAB = [sys.executable, "-m", "mnistlab"]
TUTORIAL = ROOT.parent / "shared" / "seed" / "run_tutorial.sh"


@dataclass
class Runs:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    peak_mib: list[float] = field(default_factory=list)
    after: list[float] = field(default_factory=list)  # seconds from start to report.complete, where asked


def timed(cmd: list[str], env: dict | None = None, marker: Path | None = None, timeout: float = 1800) -> tuple:
    """(wall s, cpu s, peak MiB, s to `marker` or None) of one whole run; its output thrown away."""
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: a chatty child never blocks on it
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                env={**os.environ, "MNISTLAB_OFFLINE": "1", **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t0
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        if code:
            err.seek(0)
            sys.exit(f"failed ({code}): {shlex.join(cmd)}\n{err.read().decode(errors='replace')[-2000:]}")
    after = None
    if marker is not None:
        while not marker.exists():
            if time.monotonic() - t0 > timeout:
                sys.exit(f"{marker} did not appear within {timeout:g} s")
            time.sleep(0.01)
        after = time.monotonic() - t0
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, after


def measure(make_cmd, runs: int, warmup: int = 1, **kw) -> Runs:
    """`make_cmd(i)` gives run i's command and its report marker (or None): a fresh run folder each time."""
    out = Runs()
    for i in range(warmup + runs):
        cmd, marker = make_cmd(i)
        wall, cpu, peak, after = timed(cmd, marker=marker, **kw)
        if i >= warmup:
            out.wall.append(wall), out.cpu.append(cpu), out.peak_mib.append(peak)
            if after is not None:
                out.after.append(after)
    return out


def paired(make_a, make_b, runs: int, env_b: dict) -> tuple[Runs, Runs, list[float]]:
    """A and B in turn after a warm-up of each; the ratios B/A pair by pair (B, the yardstick: how many
    times as fast A is)."""
    a, b, ratios = Runs(), Runs(), []
    for i in range(1 + runs):
        cmd, marker = make_a(i)
        ra = timed(cmd, marker=marker)
        rb = timed(make_b(i), env=env_b)
        if i:
            a.wall.append(ra[0]), a.cpu.append(ra[1]), a.peak_mib.append(ra[2]), a.after.append(ra[3])
            b.wall.append(rb[0]), b.cpu.append(rb[1]), b.peak_mib.append(rb[2])
            ratios.append(rb[0] / ra[0])
    return a, b, ratios


def train_cmd(work: Path, name: str, data_dir: str, *flags: str, report: bool = True):
    def make(i: int):
        out = work / f"{name}-{i}"
        cmd = [*MNISTLAB, "train", *flags, "--data-dir", data_dir, "--out", str(out), "--no-progress"]
        return (cmd, out / "report.complete") if report else ([*cmd, "--no-report"], None)
    return make


def outside_steps(work: Path, name: str, runs: int) -> list[float]:
    """total - steps of each counted run's "timings" event."""
    seconds = []
    for i in range(1, 1 + runs):
        events = [json.loads(line) for line in (work / f"{name}-{i}" / "metrics.jsonl").read_text().splitlines()]
        t = next(e for e in reversed(events) if e["event"] == "timings")
        seconds.append(t["total"] - t["steps"])
    return seconds


def one_png(work: Path, data_dir: str) -> Path:
    """The first MNIST test digit as a PNG, as a user would hand it to predict."""
    from PIL import Image

    from mnistlab.data.own import load_split

    images, _ = load_split("mnist", "test", data_dir)
    path = work / "one.png"
    Image.fromarray(images[0].numpy()).save(path)
    return path


def row(what: str, r: Runs, extra: str = "") -> str:
    return (f"| {what} | {summary(r.wall)} | {summary(r.cpu)} | {summary(r.peak_mib, '{:.0f}')} | "
            f"{summary(r.after) if r.after else ''} | {extra} |")


def cuda_row(name: str) -> str:
    return f"`mnistlab train --preset {name}{' --model cnn' if name == 'classic' else ''} --device cuda`"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--runs", type=int, default=5, help="counted runs of each command (after one warm-up)")
    p.add_argument("--dry-run", action="store_true", help="print the commands and the table's head; run nothing")
    p.add_argument("--only-cuda", action="store_true", help="the --device cuda rows alone (a lent GPU's short session)")
    args = p.parse_args()
    gpu = torch.cuda.is_available()
    work = Path(tempfile.mkdtemp(prefix="whole-command-"))
    fast = train_cmd(work, "fast", args.data_dir, "--preset", "fast", "--timings")
    tutorial = ["bash", str(TUTORIAL), args.data_dir]
    classic = train_cmd(work, "classic", args.data_dir, "--preset", "classic", "--model", "cnn")
    cuda = {name: train_cmd(work, f"cuda-{name}", args.data_dir, *flags, "--device", "cuda")
            for name, flags in (("fast", ("--preset", "fast")), ("classic", ("--preset", "classic", "--model", "cnn")))}
    print(f"machine: {machine()}")
    print(f"command: cd benchmarks && python whole_command.py {shlex.join(sys.argv[1:])}")
    print(f"CPU: {machine().split(',')[0]}\n")
    if args.dry_run:
        for cmd in (fast(0)[0], tutorial, classic(0)[0], [*MNISTLAB, "predict", "one.png"],
                    *(c(0)[0] for c in cuda.values())):
            print(shlex.join(cmd))
        return
    head = ("| command | wall s | cpu s | peak MiB (largest process) | report complete after s "
            "| against the tutorial |\n|---|---|---|---|---|---|")
    lines = [head]
    if args.only_cuda:
        if not gpu:
            sys.exit("--only-cuda: torch sees no CUDA device here.")
        lines += [row(cuda_row(name), measure(make, args.runs)) for name, make in cuda.items()]
        print("\n".join(lines))
        return
    a, b, ratios = paired(fast, lambda i: tutorial, args.runs, {"MODEL": "cnn"})
    lines.append(row("`mnistlab train --preset fast` (report included)", a,
                     f"{summary(ratios)}x faster (tutorial script {summary(b.wall)} s, paired)"))
    lines.append(row("the tutorial's script, MODEL=cnn (`run_tutorial.sh`)", b))
    outside = outside_steps(work, "fast", args.runs)
    lines.append(f"| `train --preset fast`: time outside the training steps (its --timings) | {summary(outside)} "
                 "| | | | |")
    png = one_png(work, args.data_dir)
    lines.append(row("`mnistlab predict one.png` (the default model)",
                     measure(lambda i: ([*MNISTLAB, "predict", str(png)], None), args.runs)))
    lines.append(row("`mnistlab train --preset classic --model cnn`", measure(classic, args.runs)))
    for name, make in cuda.items():
        what = cuda_row(name)
        lines.append(row(what, measure(make, args.runs)) if gpu else f"| {what} | not measured: no device | | | | |")
    print("\n".join(lines))
    print(f"\n(medians [min-max] of {args.runs} runs; median of the paired ratios: "
          f"{statistics.median(ratios):.2f}x; run folders in {work})")


if __name__ == "__main__":
    main()
