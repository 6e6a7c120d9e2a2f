"""Writing files so that a crash, Ctrl-C or a full disk never leaves a damaged one behind."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import MnistlabError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call write(tmp_path) on a temp file beside `path`, then rename it into place.

    A crash, Ctrl-C or full disk leaves the old file untouched and no temp file behind.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as e:
        raise MnistlabError(f"cannot write {path}: {e.strerror or e}.") from None
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp, path)
    except OSError as e:
        raise MnistlabError(f"cannot write {path}: {e.strerror or e}.") from None
    except RuntimeError as e:  # torch.save reports a full disk as a RuntimeError
        raise MnistlabError(f"cannot write {path}: {e}.") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(obj: Any, path: str | os.PathLike) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
    atomic_write(path, write)
