"""`mnistlab train --processes N`: N data-parallel processes on this machine, started without torchrun.

Each process is `python -m mnistlab` with the same arguments and the environment torchrun
would give it (RANK, WORLD_SIZE, MASTER_ADDR, ...), so the training runs on mnistlab's torchrun
path (mnistlab.distributed): gloo on a CPU, each rank a share of every batch, the gradients
averaged. On a CPU each process runs one thread (or --threads): small convolutions split badly
across threads, and two single-threaded processes may beat one process with two threads.

This module imports no torch: the parent only starts and watches its children.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

GRACE_S = 5.0  # after one rank failed, how long the others get to say so before they are stopped
PARENT_ENV = "MNISTLAB_EXIT_WITH_PARENT"  # a parent's pid: its child `mnistlab` ends when that parent is gone


def exit_with_parent(parent: int | None = None) -> None:
    """End this process once its parent is gone, even by kill -9, which no handler of the parent's sees: the
    parent `parent`, or by default the one named by PARENT_ENV (a child `mnistlab` started by serve's fine-tune).
    Polled, not PR_SET_PDEATHSIG: that fires when the *thread* that started the child ends, and a server starts
    its children from a pool thread that may retire; and it is Linux only."""
    if parent is None:
        given = os.environ.pop(PARENT_ENV, "")
        if not given.isdigit():
            return
        parent = int(given)
    if os.getppid() != parent:  # gone already
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)  # what the child writes goes through temp files and renames: nothing is left half-written

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def launched() -> bool:
    """Whether this process is one rank of several, started by torchrun or by run_ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in os.environ


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_environments(processes: int, threads: int, port: int) -> list[dict[str, str]]:
    """What torchrun --standalone would set for each of `processes` ranks on this machine."""
    base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(processes),
            "LOCAL_WORLD_SIZE": str(processes), "GROUP_RANK": "0", "OMP_NUM_THREADS": str(threads or 1)}
    return [base | {"RANK": str(r), "LOCAL_RANK": str(r)} for r in range(processes)]


def run_ranks(processes: int, argv: list[str], threads: int = 0) -> int:
    """Run `mnistlab ARGV` as `processes` ranks and wait for them: 0 when all succeeded, else the
    exit status of the first that failed (the others are stopped after GRACE_S)."""
    cmd = [sys.executable, "-m", "mnistlab", *argv]
    children = [subprocess.Popen(cmd, env=env) for env in rank_environments(processes, threads, free_port())]
    # Ctrl-C reaches the children from the terminal: each stops at its next step and saves; the parent waits.
    # A SIGTERM for the parent alone (a job scheduler's) is passed on to them.
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
                signal.SIGTERM: signal.signal(signal.SIGTERM, lambda *_: _terminate(children))}
    try:
        return _wait(children)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _terminate(children: list[subprocess.Popen]) -> None:
    for c in children:
        if c.poll() is None:
            c.terminate()


def _wait(children: list[subprocess.Popen]) -> int:
    failed_at, status = None, 0
    while any(c.poll() is None for c in children):
        bad = [c.returncode for c in children if c.returncode not in (None, 0)]
        if bad and failed_at is None:
            failed_at, status = time.monotonic(), _status(bad[0])
        if failed_at is not None and time.monotonic() - failed_at > GRACE_S:
            _terminate(children)
        time.sleep(0.05)
    if status == 0:
        status = next((_status(c.returncode) for c in children if c.returncode), 0)
    return status


def _status(returncode: int) -> int:
    """A shell's exit status: 128 + N for a child killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode
