"""Datasets of the MNIST family: the IDX reader, the registry, finding or fetching files,
and a loader that keeps the whole set as one uint8 tensor and yields index slices.
A split is read by name or path through data.own's `load_split`."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import string
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError, MnistlabError
from ..fileio import atomic_write, cache_dir

# IDX type codes (third magic byte) -> numpy big-endian dtype.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_all(path: Path) -> bytearray:
    """A file's bytes, read into a writable buffer: the arrays made over it need no copy of their own."""
    with open(path, "rb") as f:
        buf = bytearray(os.fstat(f.fileno()).st_size)
        got = f.readinto(buf)
    if got != len(buf):  # the file changed size while being read
        del buf[got:]
    return buf


def _gunzipped(path: Path) -> bytearray:
    """A gzip file's content, decompressed once and kept in the cache (keyed by the file's path, size and
    time): decompressing MNIST's training images took most of a short run's data time. The cached bytes
    go through the same checks as the file's own."""
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:16]
    cached = cache_dir() / "idx" / f"{path.name.removesuffix('.gz')}-{key}"
    try:
        return _read_all(cached)
    except OSError:
        pass
    with gzip.open(path, "rb") as f:
        raw = bytearray(f.read())
    try:
        atomic_write(cached, lambda tmp: Path(tmp).write_bytes(raw))
    except MnistlabError:  # an unwritable cache costs time on the next run, nothing else
        pass
    return raw


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) and check its structure.

    The magic number, the number of dimensions, every size and the file's length
    are checked; any problem raises DataError naming the file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        raw = _gunzipped(path) if head == b"\x1f\x8b" else _read_all(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found.") from None
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise DataError(f"{path}: cannot be read as gzip or IDX data ({e}).") from None
    if len(raw) < 4:
        raise DataError(f"{path}: too short to be an IDX file ({len(raw)} bytes).")
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or code not in _IDX_DTYPES or not 1 <= ndim <= 4:
        raise DataError(f"{path}: not an IDX file (bad magic number 0x{raw[:4].hex()}).")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated inside the IDX header.")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _IDX_DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(
            f"{path}: {what}: header says shape {tuple(shape)} ({expected} bytes), "
            f"file holds {len(raw)} bytes."
        )
    # a view of the buffer where the bytes are already in this machine's order (uint8, MNIST's), else a copy
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="), copy=False)


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the toolkit knows about one dataset of the MNIST family."""

    name: str
    folder: str  # torchvision's folder name: <data_dir>/<folder>/raw/
    files: dict[str, tuple[str, str]]  # part -> (file name, official md5)
    mirrors: tuple[str, ...]
    classes: tuple[str, ...]
    mean: float
    std: float
    system_dirs: tuple[str, ...] = ()  # where an OS package installs the files
    archive: tuple[str, str] | None = None  # (url, md5) of a zip that holds the files, for EMNIST
    transposed: bool = False  # the images are stored transposed (EMNIST): turned back on load
    label_offset: int = 0  # the stored label of the first class (1 for EMNIST letters)
    flips: bool = False  # a mirrored image keeps its class (clothes; not digits, letters or kana)


_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
_PARTS = ("train_images", "train_labels", "test_images", "test_labels")


def _files(*md5s: str) -> dict[str, tuple[str, str]]:
    return {part: (name, md5) for part, name, md5 in zip(_PARTS, _MNIST_FILES, md5s)}


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist", folder="MNIST",
        files=_files("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
                     "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"),
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "http://yann.lecun.com/exdb/mnist/"),
        classes=tuple(str(d) for d in range(10)), mean=0.1307, std=0.3081,
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist", folder="FashionMNIST",
        files=_files("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                     "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        mean=0.2860, std=0.3530, flips=True,
        system_dirs=("/usr/share/datasets/fashion-mnist",),  # Debian's dataset-fashion-mnist
    ),
    "kmnist": DatasetSpec(
        name="kmnist", folder="KMNIST",
        files=_files("bdb82020997e1d708af4cf47b453dcf7", "e144d726b3acfaa3e44228e80efcd344",
                     "5c965bf0a639b31b8f53240b1b52f4d7", "7320c461ea6c1c855c0b718fb2a4b134"),
        mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        mean=0.1918, std=0.3483,
    ),
}


# EMNIST (Cohen et al. 2017): NIST's handwritten characters in MNIST's format, one zip for every
# split. Its images are stored transposed, and its letters labelled 1-26. Class names as torchvision
# gives them; the normalisation is MNIST's (EMNIST's own could not be computed here: its files are not available).
_EMNIST_ZIP = ("https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip", "58c8d27c78d21e728a6bc7b3cc06412e")
_DIGITS = tuple(string.digits)
_EMNIST_CLASSES = {
    "digits": _DIGITS,
    "letters": tuple(string.ascii_lowercase),
    "balanced": (*_DIGITS, *string.ascii_uppercase, *"abdefghnqrt"),
    "byclass": (*_DIGITS, *string.ascii_uppercase, *string.ascii_lowercase),
}
for _split, _classes in _EMNIST_CLASSES.items():
    DATASETS[f"emnist-{_split}"] = DatasetSpec(
        name=f"emnist-{_split}", folder="EMNIST",
        files={part: (f"emnist-{_split}-{name.replace('t10k', 'test')}", "") for part, name in
               zip(_PARTS, _MNIST_FILES)},
        mirrors=(), classes=_classes, mean=0.1307, std=0.3081, archive=_EMNIST_ZIP, transposed=True,
        label_offset=1 if _split == "letters" else 0)


def refuse_mirrors(dataset: str, what: str) -> None:
    """Refuse `what` (a flip of the images) for a dataset whose classes do not survive a mirror."""
    spec = DATASETS.get(dataset)
    if not (spec and spec.flips):
        fits = ", ".join(name for name, s in DATASETS.items() if s.flips)
        raise MnistlabError(f"{what} mirrors each image, which turns some {dataset} symbols into others; it is for "
                            f"datasets whose classes survive a mirror ({fits}).")


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """--data-dir, else $MNISTLAB_DATA, else ./data."""
    return Path(data_dir or os.environ.get("MNISTLAB_DATA") or "data")


def _candidate_dirs(spec: DatasetSpec, root: Path) -> list[Path]:
    dirs = [root / spec.folder / "raw", root / spec.folder, root]
    return dirs + [Path(d) for d in spec.system_dirs]


def _find(spec: DatasetSpec, root: Path, filename: str) -> Path | None:
    for d in _candidate_dirs(spec, root):
        for name in (filename, filename.removesuffix(".gz")):
            if (d / name).is_file():
                return d / name
    return None


def file_digest(path: str | os.PathLike, hasher: Callable[[], Any] = hashlib.md5) -> str:
    """The hex digest of a file's content by `hasher` (md5 by default: what the mirrors publish), read 4 MiB at
    a time."""
    h = hasher()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def download_file(urls: list[str], dest: Path, md5: str, timeout: float = 15.0) -> None:
    """Fetch the first mirror that answers into a temp file, check md5, rename into place."""
    import urllib.request  # here: most runs never download, and the import is not free

    made = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]  # deepest first
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                while block := resp.read(1 << 20):
                    out.write(block)
            got = file_digest(Path(tmp))
            if got != md5:
                errors.append(f"{url}: md5 {got} is not the official {md5}")
                continue
            os.replace(tmp, dest)
            return
        except OSError as e:  # URLError and socket timeouts are OSErrors
            errors.append(f"{url}: {getattr(e, 'reason', e)}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    for folder in made:  # a failed download leaves no empty folders behind
        with contextlib.suppress(OSError):
            folder.rmdir()
    raise DataError(f"could not download {dest.name} ({'; '.join(errors)}).")


def locate(spec: DatasetSpec, data_dir: str | os.PathLike | None = None,
           download: bool = True) -> dict[str, Path]:
    """Find the dataset's four files; download the missing ones unless MNISTLAB_OFFLINE=1."""
    root = resolve_data_dir(data_dir)
    download = download and os.environ.get("MNISTLAB_OFFLINE", "") in ("", "0")
    found = {part: _find(spec, root, name) for part, (name, _) in spec.files.items()}
    missing = [part for part, p in found.items() if p is None]
    if missing and download:
        target = root / spec.folder / "raw"
        try:
            if spec.archive:
                found.update(_from_archive(spec, target, missing))
            for part in missing:
                name, md5 = spec.files[part]
                if found[part] is None:
                    download_file([m + name for m in spec.mirrors], target / name, md5)
                    found[part] = target / name
        except (MnistlabError, OSError, zipfile.BadZipFile) as e:  # atomic_write's errors are MnistlabErrors
            names = ", ".join(spec.files[p][0] for p in missing)
            raise DataError(
                f"{spec.name}: missing {names}; put them in {target} (or a flat folder given by "
                f"--data-dir or MNISTLAB_DATA); downloading failed: {e}"
            ) from None
    elif missing:
        names = ", ".join(spec.files[p][0] for p in missing)
        source = f" (they come in {spec.archive[0]})" if spec.archive else ""
        raise DataError(f"{spec.name}: missing {names}; put them in {root / spec.folder / 'raw'}{source}.")
    return found  # type: ignore[return-value]


def _from_archive(spec: DatasetSpec, target: Path, parts: list[str]) -> dict[str, Path]:
    """Download the dataset's zip once (md5-checked, kept in `target`), and take out the files
    for `parts`, each through a temp file renamed into place."""
    assert spec.archive is not None, f"{spec.name} comes as separate files, not in an archive"
    url, md5 = spec.archive
    archive = target / Path(url).name
    if not archive.is_file() or file_digest(archive) != md5:
        download_file([url], archive, md5, timeout=60)
    out = {}
    with zipfile.ZipFile(archive) as z:
        members = {Path(m).name: m for m in z.namelist()}
        for part in parts:
            name = spec.files[part][0]
            if name not in members:
                raise DataError(f"{archive}: holds no {name}.")

            def write(tmp, member=members[name]):
                with z.open(member) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)

            atomic_write(target / name, write)
            out[part] = target / name
    return out


SPLITS = ("test", "train", "validation")
VALIDATION_SEED = 20240601  # the held-out images are the same for every run with the same val_size


def holdout(images: torch.Tensor, labels: torch.Tensor, val_size: int):
    """((train images, labels), (validation images, labels)): a fixed validation split carved from training."""
    if val_size >= len(images):
        raise DataError(f"--val-size {val_size} leaves no training images (the set has {len(images)}).")
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(VALIDATION_SEED))
    val, train = perm[:val_size], perm[val_size:].sort().values
    return (images[train], labels[train]), (images[val], labels[val])


def _read_registry_split(spec: DatasetSpec, split: str, data_dir: str | os.PathLike | None, download: bool
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """A registry dataset's whole "train" or "test" file pair, decoded and checked: images as uint8
    [N, 28, 28], labels as int64 [N]. Read through data.own.load_split, which also takes paths."""
    files = locate(spec, data_dir, download)
    img_path, lbl_path = files[f"{split}_images"], files[f"{split}_labels"]
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DataError(f"{img_path}: expected uint8 images of 28x28, found {images.dtype} {images.shape}.")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(f"{lbl_path}: expected a 1-D uint8 label file, found {labels.dtype} {labels.shape}.")
    if len(images) != len(labels):
        raise DataError(f"{lbl_path}: holds {len(labels)} labels for {len(images)} images in {img_path}.")
    low, high = spec.label_offset, spec.label_offset + len(spec.classes) - 1
    if labels.size and (labels.min() < low or labels.max() > high):
        bad = labels.min() if labels.min() < low else labels.max()
        raise DataError(f"{lbl_path}: label {bad} is out of range {low}-{high}.")
    if spec.transposed:
        images = images.transpose(0, 2, 1)
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels.astype(np.int64) - spec.label_offset)


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of one epoch, a pure function of (seed, epoch).

    Deriving it rather than carrying a generator makes resuming mid-run exact and lets
    every distributed rank compute the same order without talking.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def normalize(images: torch.Tensor, mean: float, std: float, channels_last: bool = False) -> torch.Tensor:
    """uint8 [N, 28, 28] -> float [N, 1, 28, 28], (pixel / 255 - mean) / std."""
    x = images.unsqueeze(1).float().sub_(mean * 255).div_(std * 255)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class Loader:
    """Batches from a uint8 image tensor held on the device; normalised on the fly.

    `order` is a callable epoch -> index tensor (None: in order, as for the test set).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 mean: float, std: float, device: torch.device | str = "cpu",
                 channels_last: bool = False, order=None):
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.batch_size = batch_size
        self.mean, self.std = mean, std
        self.channels_last = channels_last
        self.order = order
        self._served: list | None = None  # (order, first, end) of the epoch being served

    def shard(self, rank: int, world: int) -> Loader:
        """Every world-th image from `rank` on: a rank's share of an in-order split."""
        return Loader(self.images[rank::world], self.labels[rank::world], self.batch_size, self.mean, self.std,
                      self.images.device, self.channels_last)

    def __len__(self) -> int:
        n = len(self.order(0)) if self.order else len(self.images)
        return -(-n // self.batch_size)

    @property
    def background(self) -> float:
        """The normalised value of a blank (0) pixel."""
        return -self.mean / self.std

    @property
    def ink(self) -> float:
        """The normalised value of a full-ink (255) pixel."""
        return (1 - self.mean) / self.std

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return normalize(x, self.mean, self.std, self.channels_last)

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (images, labels) from batch number `start` of `epoch` on."""
        bs = self.batch_size
        if self.order is None:  # in order: plain slices, no gather
            for i in range(start * bs, len(self.images), bs):
                yield self.normalize(self.images[i:i + bs]), self.labels[i:i + bs]
            return
        order = self.order(epoch)
        idx = order.to(self.images.device)
        self._served = [order, 0, start * bs]  # a resumed epoch counts what the interrupted run served
        for i in range(start * bs, len(idx), bs):
            b = idx[i:i + bs]
            self._served[2] = i + len(b)
            yield self.normalize(self.images[b]), self.labels[b]

    def served_checksum(self) -> torch.Tensor:
        """Count, sum and sum of squares of the image indices served since the last call, so
        that runs (one process or several) can prove they saw the same data."""
        if self._served is None:
            return torch.zeros(3, dtype=torch.float64)
        order, first, end = self._served
        self._served = None
        served = order[first:end].double()
        return torch.stack([torch.tensor(float(len(served)), dtype=torch.float64), served.sum(), served.square().sum()])

    def __iter__(self):
        return self.batches()
