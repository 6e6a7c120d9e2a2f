"""The drawing page's fine-tune (`mnistlab serve --collect DIR`, issue 22): its time on 100 images (10 a class),
and how the server answers /healthz meanwhile.

    python benchmarks/collect.py [--data-dir ../shared/data]

A server is started on a folder of 100 synthetic drawings (tests/handwriting.py, writer 0) as the page
would have collected them, with a fresh cache; /healthz is asked one request after another, first with nothing
running, then from the POST /api/finetune until the new model is served: a first fine-tune 3 s after the
server started (before its preparation in the background is done), and the next one. Then a second server, on
another fresh cache, is left to prepare (as while a user draws and corrects), and fine-tuned once; the time its
preparation took is given for what the new model waits for, and for all of it.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import machine
from mnistlab_testkit.browsing import free_port
from mnistlab_testkit.handwriting import make_handwriting

# feature files that serve --collect's preparation writes, in its order: the outliers (two sets), replayed and
# validation digits, which the new model waits for; then the test digits, which only its figures read
NEEDED, PREPARED = 4, 5


def get(url: str, data: bytes | None = None) -> dict:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST" if data is not None
                                                           else "GET"), timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read())


def latencies(url: str, until) -> list[float]:
    times = []
    while not until(len(times)):
        t0 = time.perf_counter()
        get(url + "healthz")
        times.append(time.perf_counter() - t0)
        time.sleep(0.01)  # a page polling, not a flood
    return times


def shown(times: list[float]) -> str:
    ms = sorted(1000 * t for t in times)
    return (f"{len(ms)} requests: p50 {statistics.median(ms):.1f} ms, p99 {ms[int(0.99 * (len(ms) - 1))]:.1f} ms, "
            f"max {ms[-1]:.1f} ms")


def fine_tune(url: str) -> str:
    """One click on "Fine-tune on my digits": the time until the new model is served, /healthz asked meanwhile."""
    t0 = time.perf_counter()
    get(url + "api/finetune", data=b"")
    during = latencies(url, lambda n: n % 20 == 0 and get(url + "api/finetune")["state"] != "running")
    wall = time.perf_counter() - t0
    status = get(url + "api/finetune")
    return (f"{status['state']}, **{wall:.1f} s** from the request to the new model served "
            f"({status.get('seconds', 0):.1f} s of fine-tuning in the child); held-out {status.get('before')} -> "
            f"{status.get('after')}; /healthz meanwhile: {shown(during)}")


def server(folder: Path, cache: Path, args):
    """A `serve --collect` server on a fresh cache: (its process, its URL), once it answers."""
    port = free_port()
    env = {**os.environ, "MNISTLAB_CACHE": str(cache), **({"MNISTLAB_DATA": args.data_dir} if args.data_dir else {})}
    process = subprocess.Popen([sys.executable, "-m", "mnistlab", "serve", args.init, "--port", str(port),
                                "--collect", str(folder)], env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(600):
        try:
            get(url + "healthz")
            break
        except OSError:
            time.sleep(0.1)
    return process, url


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--init", default="robust-real")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "mine"
        make_handwriting(folder, 10, writer=0, seed=0)
        process, url = server(folder, Path(tmp) / "cache-a", args)
        try:
            print("idle:", shown(latencies(url, lambda n: n >= 300)))
            print("the first fine-tune, clicked 3 s after the server started:", fine_tune(url))
            print("the next fine-tune:", fine_tune(url))
        finally:
            process.terminate()
            process.wait()
        process, url = server(folder, Path(tmp) / "cache-b", args)
        try:
            t0, done = time.perf_counter(), {}
            while len(done) < 2 and time.perf_counter() - t0 < 600:
                written = len(list((Path(tmp) / "cache-b").glob("features-*")))
                done.update({k: time.perf_counter() - t0 for k, n in (("needed", NEEDED), ("all", PREPARED))
                             if written >= n and k not in done})
                time.sleep(0.5)
            print(f"the server prepared what the new model waits for in {done.get('needed', 0):.0f} s, all in "
                  f"{done.get('all', 0):.0f} s (with /healthz unasked); the first fine-tune after it:", fine_tune(url))
        finally:
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()
