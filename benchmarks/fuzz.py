"""Hostile bytes against the preprocessing boundary and the HTTP API: a seeded mutation fuzzer.

    python benchmarks/fuzz.py [--mutations 100000] [--seed 0] [--http CHECKPOINT] [--http-requests N]

One digit is saved in every format and pixel mode Pillow writes here (tests/fuzzing.py), and
each file is mutated in turn (bit flips, random bytes, extreme integers, cuts, insertions,
duplicated chunks, truncation). Every mutation goes through `preprocess`, which must raise
nothing but MnistlabError. Counted: what it raised or returned, the decoder errors the
boundary translated (by type), and the slowest input. With --http, the same corpus (and
mutated JSON pixel bodies) is posted to `mnistlab serve CHECKPOINT`; counted: answers by
status, and 5xx (target 0).
"""

import argparse
import collections
import random
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from common import machine
from mnistlab import MnistlabError  # noqa: E402
from mnistlab.data.preprocess import (  # noqa: E402
    NoDigitError,
    _preprocess,
    native_stderr_silenced,
    preprocess,
    quiet_decoder_warnings,
)
from mnistlab_testkit.fuzzing import json_bodies, mutate, seed_files


def corpus(seed: int, total: int, with_json: bool = False):
    """(label, mutated bytes), round-robin over the seed files, reproducible from the seed."""
    files = {**seed_files(), **(json_bodies() if with_json else {})}
    rng = random.Random(seed)
    labels = list(files)
    for k in range(total):
        label = labels[k % len(labels)]
        yield label, mutate(files[label], rng)


def fuzz_preprocess(args) -> None:
    outcomes, translated, escaped = collections.Counter(), collections.Counter(), collections.Counter()
    times, t_start = [], time.perf_counter()
    quiet_decoder_warnings()
    with native_stderr_silenced():  # libtiff's own remarks on each damaged file
        for label, data in corpus(args.seed, args.mutations):
            t0 = time.perf_counter()
            try:
                _preprocess(data, "fuzz", "fuzz")
                outcomes["read as a digit"] += 1
            except NoDigitError:
                outcomes["no digit found"] += 1
            except MnistlabError:
                outcomes["one sentence (a named check)"] += 1
            except Exception as e:
                translated[type(e).__name__] += 1
                try:
                    preprocess(data, "fuzz")
                    escaped["no error the second time"] += 1
                except MnistlabError:
                    outcomes["one sentence (the boundary)"] += 1
                except BaseException as e2:
                    escaped[type(e2).__name__] += 1
            times.append((time.perf_counter() - t0, label))
    wall = time.perf_counter() - t_start
    formats = sorted(seed_files())
    print(f"{args.mutations} mutations of {len(formats)} seed files in {wall:.0f} s; formats and modes: "
          f"{', '.join(formats)}\n")
    print("| outcome of preprocess | count |\n|---|---|")
    for k, v in outcomes.most_common():
        print(f"| {k} | {v} |")
    print(f"\ndecoder errors the boundary turned into one sentence, by type: {dict(translated.most_common())}")
    print(f"unexpected exceptions (anything but MnistlabError out of preprocess): {sum(escaped.values())} "
          f"{dict(escaped) if escaped else ''}")
    seconds = sorted(t for t, _ in times)
    slowest = max(times)
    print(f"time per input: median {1e3 * seconds[len(seconds) // 2]:.2f} ms, p99.9 "
          f"{1e3 * seconds[int(len(seconds) * 0.999)]:.0f} ms, slowest {1e3 * slowest[0]:.0f} ms ({slowest[1]})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fuzz_http(args) -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mnistlab", "serve", args.http, "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    statuses, t0 = collections.Counter(), time.perf_counter()
    try:
        server.stdout.readline()
        for label, data in corpus(args.seed, args.http_requests, with_json=True):
            ctype = "application/json" if label.startswith("JSON") else "image/x-anything"
            req = urllib.request.Request(f"http://127.0.0.1:{port}/api/predict", data=data,
                                         headers={"Content-Type": ctype})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    statuses[r.status] += 1
            except urllib.error.HTTPError as e:
                statuses[e.code] += 1
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    wall = time.perf_counter() - t0
    print(f"\nHTTP: {sum(statuses.values())} requests (the same corpus, plus mutated JSON pixel bodies) in "
          f"{wall:.0f} s: {dict(sorted(statuses.items()))}; 5xx: {sum(v for k, v in statuses.items() if k >= 500)}; "
          f"tracebacks in the server's log: {err.count('Traceback')}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mutations", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--http", metavar="CHECKPOINT", help="also post the corpus to mnistlab serve CHECKPOINT")
    p.add_argument("--http-requests", type=int, default=100_000)
    args = p.parse_args()
    print(f"machine: {machine()}")
    print(f"command: python benchmarks/fuzz.py {' '.join(sys.argv[1:])}\n", flush=True)
    fuzz_preprocess(args)
    if args.http:
        fuzz_http(args)


if __name__ == "__main__":
    main()
