"""Writing files so that a crash, Ctrl-C or a full disk never leaves a damaged one behind."""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MnistlabError, first_line


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
        raise write_error(path, e) from None
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp, path)
    except OSError as e:
        raise write_error(path, e) from None
    except RuntimeError as e:  # torch's own writers (torch.save, torch.jit.save) fail so, with no errno
        if _full(path.parent):  # measured while the failed temp file still holds the space it took
            raise write_error(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))) from None
        raise MnistlabError(f"cannot write {path}: {first_line(e)}.") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


FULL_BELOW = 1 << 20  # bytes free under which a failed write is put down to a full disk


def _full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < FULL_BELOW
    except OSError:
        return False


def write_error(path: str | os.PathLike, e: OSError) -> MnistlabError:
    """One sentence for a failed write, naming the file; a full disk said as such."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return MnistlabError(f"no space left on the device to write {path}; nothing already written was damaged.")
    return MnistlabError(f"cannot write {path}: {e.strerror or e}.")


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one whole line to a log: on a failed write (a full disk), the file is cut back to
    where it was, so that no half line is ever left for a reader to trip on."""
    data = (line.rstrip("\n") + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as e:
        raise write_error(path, e) from None
    try:
        size = os.fstat(fd).st_size
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError as e:
        os.ftruncate(fd, size)
        raise write_error(path, e) from None
    finally:
        os.close(fd)


def write_json(obj: Any, path: str | os.PathLike) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
    atomic_write(path, write)


def write_folder(path: str | os.PathLike, files: dict[str, bytes], replaceable=lambda old: False) -> Path:
    """Write a folder of files all at once: built beside `path`, then renamed into place. An
    existing `path` must be empty, or one that `replaceable(path)` accepts (it is then replaced)."""
    path = Path(path)
    if path.exists() and not (path.is_dir() and (not any(path.iterdir()) or replaceable(path))):
        raise MnistlabError(f"{path} already exists and holds other files; choose a new or empty folder.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as e:
        raise write_error(path, e) from None
    old = path.with_name(f".{path.name}.old")
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    except OSError as e:
        if old.exists() and not path.exists():  # put the earlier folder back
            os.replace(old, path)
        raise write_error(path, e) from None
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
    return path


def cache_dir() -> Path:
    """$MNISTLAB_CACHE, else $XDG_CACHE_HOME/mnistlab, else ~/.cache/mnistlab: never the dataset's own folder,
    which may be read-only or shared."""
    if os.environ.get("MNISTLAB_CACHE"):
        return Path(os.environ["MNISTLAB_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mnistlab"


@functools.cache
def code_digest(folder: Path) -> bytes:
    """A digest of the Python sources in `folder`: part of the key of a cache whose content that code makes, so
    that a change to the code makes the content again."""
    h = hashlib.blake2b(digest_size=16)
    for source in sorted(folder.glob("*.py")):
        h.update(source.name.encode() + b"\0" + source.read_bytes())
    return h.digest()


def read_cache(path: Path, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file, name -> array of the shape given, or None where there is none yet, or it is
    damaged or of another shape: then it is made again."""
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in shapes}
    except (OSError, ValueError, KeyError, EOFError):
        return None
    return arrays if all(arrays[k].shape == shape for k, shape in shapes.items()) else None


def write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write a cache file whole or not at all; one that cannot be written costs time on the next run, nothing else."""
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]  # (NumPy's stubs take **kwds as its flag)
    try:
        atomic_write(path, write)
    except MnistlabError:
        pass
