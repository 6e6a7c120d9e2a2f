"""Test helpers: tiny IDX files, fake datasets in MNIST's layout, running the CLI and judging its refusals."""

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> Path:
    """Write an IDX file (uint8) the way the MNIST files are laid out."""
    array = np.asarray(array, dtype=np.uint8)
    data = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(data)
    return path


def make_fake_mnist(root: Path, n_train: int = 200, n_test: int = 50, flat: bool = False, seed: int = 0) -> Path:
    """A tiny dataset in MNIST's file layout: labels learnable from a bright square's position."""
    rng = np.random.default_rng(seed)
    folder = root if flat else root / "MNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 30, (n, 28, 28)).astype(np.uint8)
        for i, y in enumerate(labels):
            r, c = divmod(int(y), 5)
            images[i, 4 + 10 * r:12 + 10 * r, 2 + 5 * c:6 + 5 * c] = 255
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


def run_cli(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    """`python -m mnistlab ARGS` offline, output captured."""
    env = {**os.environ, "MNISTLAB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "mnistlab", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def assert_one_sentence(proc: subprocess.CompletedProcess, message: str, code: int = 1) -> None:
    """The command failed with `code` and said `message` on stderr, without a traceback; a refusal of mnistlab's
    own (code 1) is one line, where argparse's (code 2) comes after the usage."""
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and message in proc.stderr, proc.stderr
    if code == 1:
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def children(pid: int) -> list[int]:
    """The process ids whose parent is `pid` (Linux /proc)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def alive(pid: int) -> bool:
    """Whether the process runs: not gone, and not a zombie left for its parent to reap (Linux /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
