"""Trainings that share the CPU (issue 20, item 8): one `fast` run alone, two started together, and
the page answering while one trains.

    python benchmarks/shared_cpu.py [--data-dir DIR] [--repeats 3]

Each training is the whole command `mnistlab train --preset fast --no-report` in a process of its
own; its time is the wall time of that command. Three ways, in turn, `--repeats` times:
  alone       one run, threads left to mnistlab (a share of the free cores: all of them alone);
  two, share  two runs started together, threads left to mnistlab (each takes half the cores);
  two, fixed  two runs started together with --threads N each, N the number of cores: what every
              run did before, when each took all the cores and their waiting threads spun.
Then `mnistlab serve classic-cnn` answers one client posting a drawn digit, sequentially, for
20 s idle and again while a `fast` training runs: p50 and p99 of each.
Run it with nothing else running on the machine.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import machine, summary

HERE = Path(__file__).resolve().parent


def train_command(out: Path, data_dir, threads: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "mnistlab", "train", "--preset", "fast", "--no-report", "--no-progress",
           "--out", str(out)]
    if data_dir:
        cmd += ["--data-dir", str(data_dir)]
    return cmd + (["--threads", str(threads)] if threads else [])


def timed_runs(commands: list[list[str]]) -> list[float]:
    """Start the commands together; the wall time of each, in seconds."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for c in commands]
    times = []
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            sys.exit(f"a training failed: {err.strip()}")
        times.append(time.perf_counter() - t0)
    return times


def latencies(url: str, body: bytes, seconds: float) -> list[float]:
    out = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "image/png"})
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


def serving_under_training(data_dir, tmp: Path) -> None:
    from serving import digit_png

    port = 8791
    server = subprocess.Popen([sys.executable, "-m", "mnistlab", "serve", "classic-cnn", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        server.stdout.readline()
        url, body = f"http://127.0.0.1:{port}/api/predict", digit_png(data_dir)
        latencies(url, body, 2)  # warm-up
        idle = latencies(url, body, 20)
        trainer = subprocess.Popen(train_command(tmp / "beside-server", data_dir, None), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        time.sleep(3)  # past the training's start-up, into its steps
        busy = latencies(url, body, 20)
        trainer.wait()
    finally:
        server.terminate()
        server.wait()
    for name, values in (("idle", idle), ("while a fast training runs", busy)):
        print(f"serve, one client, {name}: {len(values)} requests, p50 {statistics.median(values):.1f} ms, "
              f"p99 {percentile(values, 99):.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("MNISTLAB_DATA"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(machine())
    cores = len(os.sched_getaffinity(0))
    results: dict[str, list[float]] = {"alone": [], "two, share": [], "two, fixed": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for r in range(args.repeats):
            results["alone"] += timed_runs([train_command(tmp / f"a{r}", args.data_dir, None)])
            results["two, share"] += timed_runs([train_command(tmp / f"s{r}{i}", args.data_dir, None)
                                                 for i in range(2)])
            results["two, fixed"] += timed_runs([train_command(tmp / f"f{r}{i}", args.data_dir, cores)
                                                 for i in range(2)])
        alone = statistics.median(results["alone"])
        for name, values in results.items():
            print(f"{name:11} whole command {summary(values)} s; {statistics.median(values) / alone:.2f}x alone")
        serving_under_training(args.data_dir, tmp)


if __name__ == "__main__":
    main()
