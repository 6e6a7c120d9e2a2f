"""Where and how tensors are computed: the device, bf16 autocast, and the CPU allocator."""

from __future__ import annotations

import contextlib
import ctypes
import os
import tempfile
import time
from pathlib import Path

import torch

from .errors import MnistlabError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; a device that is not there is one sentence."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise MnistlabError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MnistlabError(f"--device {name} was asked for, but this PyTorch sees no CUDA GPU.")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise MnistlabError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s).")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise MnistlabError("--device mps was asked for, but this PyTorch sees no Apple GPU.")
    if device.type not in ("cpu", "cuda", "mps"):
        raise MnistlabError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps.")
    return device


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast, or None for plain fp32. 'auto' uses bf16 where the hardware does it natively."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """bf16 autocast when dtype is given, else a no-op context."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def keep_freed_memory() -> None:
    """Ask glibc to keep freed memory instead of returning it to the OS.

    By default each large activation is a fresh mmap whose pages fault in on first touch,
    every step, a large share of a CNN step on the CPU.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, Windows, musl): nothing to tune
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, (1 << 31) - 1)
    libc.mallopt(m_top_pad, 1 << 27)


class CoreShare:
    """Threads for this training from the cores that other mnistlab trainings leave free.

    Each process runs as many threads as it has cores by default, and threads that wait spin:
    two trainings started together on two cores ran 4x slower each, not 2x. So every CPU
    training that was not given --threads (nor OMP_NUM_THREADS, as torchrun sets) holds a
    locked file in a folder of its user's, counts the live holders every few seconds, and
    takes its share of the cores it may run on (at least one thread). A process that dies
    loses its lock with it; the next count removes its file.
    """

    INTERVAL = 2.0  # seconds between counts: a few dozen file locks, far below a step's cost

    def __init__(self, folder: str | os.PathLike | None = None):
        import fcntl

        self._fcntl = fcntl
        default = Path(tempfile.gettempdir()) / f"mnistlab-{os.getuid()}-trainings"
        self.folder = Path(folder or os.environ.get("MNISTLAB_TRAININGS_DIR") or default)
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self.folder.mkdir(parents=True, exist_ok=True)
        self.own = self.folder / f"{os.getpid()}-{id(self):x}"
        # locked under a hidden name, then renamed: a counter never sees this file unlocked
        hidden = self.folder / f".{self.own.name}"
        self._file = open(hidden, "w")
        fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(hidden, self.own)
        self.threads, self._next = 0, 0.0
        self.adjust()

    @classmethod
    def for_run(cls, device: torch.device, threads: int) -> CoreShare | None:
        """A share for a CPU run with threads left to mnistlab; None where the user chose, or on
        a system without file locks."""
        if device.type != "cpu" or threads or "OMP_NUM_THREADS" in os.environ:
            return None
        try:
            return cls()
        except (ImportError, OSError):
            return None

    def sharers(self) -> int:
        """Trainings alive now, this one included."""
        count = 0
        for path in self.folder.iterdir():
            if path.name.startswith("."):
                continue
            if path == self.own:
                count += 1
                continue
            try:
                with open(path) as f:
                    self._fcntl.flock(f, self._fcntl.LOCK_SH | self._fcntl.LOCK_NB)
                path.unlink(missing_ok=True)  # we got the lock: its holder is gone
            except BlockingIOError:
                count += 1
            except OSError:
                pass
        return max(count, 1)

    def adjust(self) -> None:
        """Take this process's share now, if a count is due and the share changed."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.INTERVAL
        threads = max(1, self.cores // self.sharers())
        if threads != self.threads:
            torch.set_num_threads(threads)
            self.threads = threads

    def close(self) -> None:
        self.own.unlink(missing_ok=True)
        self._file.close()
