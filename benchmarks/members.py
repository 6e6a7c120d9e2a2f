"""Ensemble candidates for issue 5, trained side by side: each one a `mnistlab train` process.

    python benchmarks/members.py --out runs/members [--only NAME ...] [--parallel 8] [--deadline 360]
                                 [--device cuda] [--data-dir DIR]

Every member starts from the `best` preset, so it holds out the same 5,000 validation images
and can be offered to the ensemble by `benchmarks/accuracy.py --extra`, which chooses on that
split. A member whose model.pt exists is skipped; one still running at the deadline is stopped
and left out. Meant for one GPU: small models leave it mostly idle, so several processes share it.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import machine
from mnistlab.training.runs import read_run_events


def simple(kernel: int, seed: int) -> list[str]:
    # An et al. 2020's three kernel sizes see digits at different scales: different mistakes
    return ["--model", "simple", "--model-config", json.dumps({"kernel": kernel}), "--epochs", "30",
            "--eval-every", "30", "--seed", str(seed)]


AUGMENT = {"degrees": 12, "scale": 0.12, "translate": 0.12}
MEMBERS: dict[str, list[str]] = {
    "best-s1": ["--seed", "1"],
    **{f"m{k}-s{s}": simple(k, s) for s in (1, 2) for k in (3, 5, 7)},
    "deep-elastic-s1": ["--augment", json.dumps(AUGMENT | {"elastic": 2.0})],
    "deep-adamw-s1": ["--optimizer", "adamw", "--weight-decay", "0.05"],
}


def command(name: str, out: Path, device: str, data_dir) -> list[str]:
    cmd = [sys.executable, "-m", "mnistlab", "train", "--preset", "best", *MEMBERS[name], "--device", device,
           "--threads", "1", "--out", str(out / name), "--no-report", "--no-progress", "--log-interval", "100000"]
    return cmd + (["--data-dir", str(data_dir)] if data_dir else [])


def final_counts(run: Path) -> str:
    events = read_run_events(run)
    val = [e for e in events if e["event"] == "validation"][-1]
    test = [e for e in events if e["event"] == "test"][-1]
    seconds = [e for e in events if e["event"] == "epoch"][-1]["train_seconds"]
    return (f"validation {val['correct']}/{val['total']}, test {test['correct']}/{test['total']}, "
            f"{seconds:.0f} s training")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder for the members' run folders")
    p.add_argument("--only", nargs="+", choices=list(MEMBERS), help="train only these members")
    p.add_argument("--parallel", type=int, default=8, help="processes at a time")
    p.add_argument("--deadline", type=float, default=360, help="seconds; members still running are stopped")
    p.add_argument("--device", default="cuda")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    print(f"machine: {machine()}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    queue = [n for n in (args.only or MEMBERS) if not (out / n / "model.pt").is_file()]
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    start = time.perf_counter()
    while queue or running:
        while queue and len(running) < args.parallel:
            name = queue.pop(0)
            with open(out / f"{name}.log", "w") as log:  # the child keeps its own handle
                running[name] = (subprocess.Popen(command(name, out, args.device, args.data_dir), stdout=log,
                                                  stderr=subprocess.STDOUT), time.perf_counter())
        time.sleep(1)
        late = time.perf_counter() - start > args.deadline
        for name, (proc, t0) in list(running.items()):
            if proc.poll() is None and not late:
                continue
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            del running[name]
            wall = time.perf_counter() - t0
            done = proc.returncode == 0 and (out / name / "model.pt").is_file()
            print(f"{name}: {final_counts(out / name) if done else 'failed or stopped, left out'} "
                  f"({wall:.0f} s wall)", flush=True)
        if late:
            queue.clear()
    print(f"all members: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
