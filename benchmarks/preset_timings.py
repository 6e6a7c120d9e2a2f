"""Each preset's whole `mnistlab train` command, split as the run itself counts it (its "timings" event in
metrics.jsonl, which `--timings` prints): start-up, data, steps, evaluation, saving, launching the report.

    cd benchmarks && python preset_timings.py --data-dir ../../shared/data [--presets fast classic ...]

One run per preset, one at a time, each report finished before the next run starts; the wall seconds are
timed from outside (whole_command.timed). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path

from common import machine
from mnistlab.training.config import PRESETS
from mnistlab.training.loop import TIMED_PARTS
from whole_command import MNISTLAB, ROOT, timed


def breakdown(run_dir: Path) -> dict[str, float]:
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return next(e for e in reversed(events) if e["event"] == "timings")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="preset-timings-"))
    print(f"machine: {machine()}\ncommand: cd benchmarks && python preset_timings.py {shlex.join(sys.argv[1:])}\n")
    parts = list(TIMED_PARTS.values())
    print("| preset | whole command s | " + " | ".join(parts) + " | other | outside the steps |")
    print("|---" * (len(parts) + 4) + "|")
    for preset in args.presets:
        out = work / preset
        flags = ["--model", "cnn"] if preset == "classic" else []
        cmd = [*MNISTLAB, "train", "--preset", preset, *flags, "--timings", "--no-progress", "--data-dir",
               args.data_dir, "--out", str(out)]
        wall, _, _, _ = timed(cmd, marker=out / "report.complete")
        t = breakdown(out)
        other = t["total"] - sum(t[key] for key in TIMED_PARTS)
        cells = " | ".join(f"{t[key]:.2f}" for key in TIMED_PARTS)
        print(f"| `{preset}` | {wall:.2f} | {cells} | {other:.2f} | {t['total'] - t['steps']:.2f} |", flush=True)
    print(f"\n(seconds; one run each; run folders in {work})")


if __name__ == "__main__":
    main()
