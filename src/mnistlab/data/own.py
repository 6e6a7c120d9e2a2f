"""Datasets from a path: your own images in class folders, Kaggle's CSVs, Keras's mnist.npz, IDX files.

`--dataset PATH` (a value with a slash or a dot, or an existing path) is read here; a registry
name (mnist, fashion-mnist, ...) is read by data.mnist. `get_dataset_spec` and `load_split` are
the one lookup for both, so training, evaluation and export need not tell them apart.

    digits/0/*.png, digits/1/*.png, ...          class-per-folder (ImageFolder's layout)
    digits/train/<class>/..., digits/test/...    the same, with its own test split
    kaggle/train.csv (label,pixel0..pixel783)    Kaggle's Digit Recognizer; test.csv is unlabelled
    mnist.npz (x_train, y_train[, x_test, y_test])  Keras's layout
    a folder with *-images-idx3-ubyte[.gz] and *-labels-idx1-ubyte[.gz]

Folder images go through predict's preprocessing, in parallel, cached by their content; 28x28
arrays are used as they are, each turned light-on-dark if it is not (MNIST's polarity). A set
without a test split has one carved from it, stratified by class and seeded, so that the
held-out figure of every run and `eval` is on the same images.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import multiprocessing
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, first_line
from ..fileio import atomic_write, cache_dir, code_digest, write_cache
from .mnist import (
    DATASETS,
    SPLITS,
    VALIDATION_SEED,
    DatasetSpec,
    _read_registry_split,
    file_digest,
    holdout,
    read_idx,
)
from .preprocess import COMMON_SUFFIXES, image_suffixes, preprocess_many

FORMATS = {"folder": "class-per-folder images", "kaggle-csv": "Kaggle CSV", "npz": "NumPy .npz (Keras's layout)",
           "idx": "IDX files"}
HELD_OUT = 0.1  # the share of each class carved as the test split of a set that has none
PIXELS = [f"pixel{i}" for i in range(784)]
PARALLEL_FROM = 64  # fewer images than this are preprocessed in this process: a pool costs more to start

LOOKED_FOR = f"{', '.join(COMMON_SUFFIXES)} and the other formats Pillow reads"


def is_path(name: str) -> bool:
    """A dataset given as a path (a slash or a dot, or something that exists) rather than a registry name."""
    return name not in DATASETS and (any(c in name for c in "./\\") or Path(name).exists())


@dataclass
class OwnDataset:
    """What was read from a path: images uint8 [N, 28, 28] light on dark, labels int64 [N] indexing `classes`."""

    source: Path
    format: str
    classes: tuple[str, ...]
    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray] | None  # the set's own test split, if it has one
    names: tuple[list[str], list[str]] = ([], [])  # where each train and test image came from, for messages
    notes: list[str] = field(default_factory=list)  # files skipped, images inverted: a line each
    unlabelled: int = 0  # rows of Kaggle's test.csv beside train.csv (for predict --submission)
    _splits: tuple | None = field(default=None, repr=False)

    def splits(self) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], bool]:
        """(train, test, carved): the set's own test split, checked for duplicates of training images,
        or one carved from it (stratified), in which case carved is True."""
        if self._splits is None:
            self._splits = self._make_splits()
        return self._splits

    def _make_splits(self):
        if self.test is not None:
            dups = duplicates(self.train[0], self.test[0])
            if dups:
                i, j = dups[0]
                raise DataError(f"{self.source}: {len(dups)} test images also appear in the training split (first: "
                                f"{self._name(0, i)} and {self._name(1, j)}); remove them so that the held-out "
                                "figures are honest.")
            return self.train, self.test, False
        train, test = stratified_split(*self.train, HELD_OUT)
        if not len(test[1]):
            raise DataError(f"{self.source}: no test split can be carved from it: every image that would be held out "
                            f"is an exact copy of one left to train on ({_copies(self.train[0])} of its "
                            f"{len(self.train[1])} images are copies); add distinct images, or give a test split.")
        return train, test, True

    def _name(self, part: int, i: int) -> str:
        names = self.names[part]
        return names[i] if i < len(names) else f"{('training', 'test')[part]} image {i}"

    def counts(self, part: int = 0) -> list[int]:
        split = (self.train, self.test)[part]
        assert split is not None, "no test split to count"
        labels = split[1]
        return np.bincount(labels, minlength=len(self.classes)).tolist()


# ---- one lookup, for registry names and paths alike ----

def get_dataset_spec(name: str) -> DatasetSpec:
    """The registry's spec of a dataset name; for a path, a spec with the set's classes and MNIST's
    normalisation (what the images were made to look like)."""
    if not is_path(name):
        if name not in DATASETS:
            raise DataError(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}; or give a path (class "
                            "folders, a Kaggle CSV, a .npz or IDX files: a path has a slash or a dot).")
        return DATASETS[name]
    ds, mnist = open_dataset(name), DATASETS["mnist"]
    ds.splits()  # duplicates across the splits are refused here, before a run writes anything
    return DatasetSpec(name=name, folder="", files={}, mirrors=(), classes=ds.classes, mean=mnist.mean, std=mnist.std)


def load_split(name: str, split: str = "test", data_dir: str | os.PathLike | None = None, val_size: int = 0,
               download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """A split of a registry dataset or of the dataset at a path, read once: images as uint8 [N, 28, 28],
    labels as int64 [N].

    "test" is the set's test split (for a path without one, the one carved from it). With `val_size`,
    "validation" is that many images held out of the training split (the same every run) and "train"
    is the rest; without, "train" is the whole training split.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'; choose one of: {', '.join(SPLITS)}.")
    if split == "validation" and not val_size:
        raise DataError("a validation split needs val_size, the number of training images held out.")
    if split == "test" or not val_size:
        return _whole(name, split, data_dir, download)
    train, val = carve(name, val_size, data_dir, download)
    return val if split == "validation" else train


def carve(name: str, val_size: int, data_dir: str | os.PathLike | None = None, download: bool = True):
    """((train images, labels), (validation images, labels)) from one read of the training split: `val_size`
    images held out, the same every run; for a dataset from a path stratified, as its carved test split is
    (a random draw can leave a small class out of validation)."""
    images, labels = _whole(name, "train", data_dir, download)
    if not is_path(name):
        return holdout(images, labels, val_size)
    if val_size >= len(labels):
        raise DataError(f"--val-size {val_size} leaves no training images ({name} has {len(labels)}).")
    rest, val = stratified_split(images.numpy(), labels.numpy(), val_size / len(labels))
    return tuple(map(torch.from_numpy, rest)), tuple(map(torch.from_numpy, val))


def _whole(name: str, split: str, data_dir, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if not is_path(name):
        return _read_registry_split(get_dataset_spec(name), "test" if split == "test" else "train", data_dir,
                                    download)
    train, test, _ = open_dataset(name).splits()
    images, labels = test if split == "test" else train
    return torch.from_numpy(images), torch.from_numpy(labels)


def open_dataset(path: str | os.PathLike) -> OwnDataset:
    """Read (or take from this process's memory) the dataset at `path`, whatever its format."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder (a dataset is a registry name: {', '.join(DATASETS)}; "
                        "or a path to class folders, a Kaggle CSV, a .npz or IDX files).")
    return _open(str(p.resolve()), p.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _open(path: str, mtime: int) -> OwnDataset:
    p = Path(path)
    if p.is_file():
        if p.suffix.lower() == ".csv":
            return read_kaggle(p)
        if p.suffix.lower() == ".npz":
            return read_npz(p)
        raise DataError(f"{p}: not a dataset file mnistlab reads (a .csv in Kaggle's layout or a .npz in Keras's); "
                        "for IDX files give their folder.")
    entries = [e for e in p.iterdir() if not e.name.startswith(".")]
    if (p / "train.csv").is_file():
        return read_kaggle(p / "train.csv")
    if any(_idx_part(e.name) for e in entries):
        return read_idx_folder(p)
    npz = [e for e in entries if e.suffix.lower() == ".npz" and e.is_file()]
    if len(npz) == 1 and not any(e.is_dir() for e in entries):
        return read_npz(npz[0])
    return read_folder(p)


# ---- arrays: polarity, labels, splits, duplicates ----

def light_on_dark(images: np.ndarray, source: Path, notes: list[str]) -> np.ndarray:
    """Each image whose border is mostly light (dark ink on paper) inverted to MNIST's light ink on black."""
    if not len(images):
        return images
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1)
    dark_ink = np.median(border, axis=1) > 127
    if dark_ink.any():
        images = images.copy()
        images[dark_ink] = 255 - images[dark_ink]
        notes.append(f"{source}: {int(dark_ink.sum())} of {len(images)} images were dark on light: inverted to "
                     "MNIST's light on dark.")
    return images


def as_images(a: np.ndarray, what: str) -> np.ndarray:
    """uint8 [N, 28, 28] from an array of whole numbers 0-255 (a flat [N, 784] too), or one sentence naming `what`."""
    if a.ndim == 2 and a.shape[1] == 784:
        a = a.reshape(-1, 28, 28)
    if a.ndim != 3 or a.shape[1:] != (28, 28):
        raise DataError(f"{what}: expected images of 28x28 (an array [N, 28, 28] or [N, 784]), found shape "
                        f"{list(a.shape)}.")
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind not in "iuf":
        raise DataError(f"{what}: the pixels are {a.dtype}, not numbers.")
    _check_range(a, what, "pixel values")
    return a.astype(np.uint8)


def _check_range(a: np.ndarray, what: str, name: str, low: int = 0, high: int = 255) -> None:
    if not a.size:
        return
    if a.dtype.kind == "f" and not (np.isfinite(a).all() and (a == np.round(a)).all()):
        raise DataError(f"{what}: {name} must be whole numbers ({low}-{high}); found fractions or NaN.")
    if a.min() < low or a.max() > high:
        bad = a.min() if a.min() < low else a.max()
        raise DataError(f"{what}: {name} must lie between {low} and {high}; found {bad:g}.")


def number_classes(train_labels: np.ndarray, test_labels: np.ndarray | None, what: str, test_what: str = ""):
    """Class names "0".."K-1" from whole-number labels; (classes, train labels, test labels) as int64.
    A test label beyond the training classes, or a class with fewer than two images, is one sentence."""
    if train_labels.ndim != 1:
        raise DataError(f"{what}: the labels must be one number per image, found shape {list(train_labels.shape)}.")
    _check_range(train_labels, what, "labels", 0, 10_000)
    train_labels = train_labels.astype(np.int64)
    classes = tuple(str(i) for i in range(int(train_labels.max()) + 1 if train_labels.size else 0))
    if test_labels is not None:
        _check_range(test_labels, test_what or what, "labels", 0, 10_000)
        test_labels = test_labels.astype(np.int64)
        if test_labels.size and test_labels.max() >= len(classes):
            raise DataError(f"{test_what or what}: label {int(test_labels.max())} is outside the training "
                            f"classes (0-{len(classes) - 1}).")
    check_counts(classes, np.bincount(train_labels, minlength=len(classes)), what)
    return classes, train_labels, test_labels


def check_counts(classes: tuple[str, ...], counts, what: str) -> None:
    if len(classes) < 2:
        raise DataError(f"{what}: a classifier needs at least two classes; found {len(classes)}.")
    for name, n in zip(classes, counts):
        if n < 2:
            raise DataError(f"{what}: class '{name}' has {'only 1 image' if n == 1 else 'no images'}; each class "
                            "needs at least 2 (one to learn from, one to hold out).")


def stratified_split(images: np.ndarray, labels: np.ndarray, share: float):
    """((train images, labels), (held-out images, labels)): `share` of each class (at least one image, never
    its last) held out, seeded; images identical to a training image stay on the training side."""
    rng = np.random.default_rng(VALIDATION_SEED)
    held = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = min(len(members) - 1, max(1, round(share * len(members))))
        held.append(rng.permutation(members)[:k])
    mask = np.zeros(len(labels), bool)
    mask[np.concatenate(held)] = True
    kept = {_digest(img) for img in images[~mask]}
    for i in np.flatnonzero(mask):  # a duplicate of a training image would be a leak
        if _digest(images[i]) in kept:
            mask[i] = False
    return (images[~mask], labels[~mask]), (images[mask], labels[mask])


def _copies(images: np.ndarray) -> int:
    """How many of the images are exact copies of another one of them."""
    return len(images) - len({_digest(img) for img in images})


def _digest(img: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(img).tobytes(), digest_size=16).digest()


def duplicates(a: np.ndarray, b: np.ndarray) -> list[tuple[int, int]]:
    """(index in a, index in b) of every image of b that is identical to one of a."""
    seen: dict[bytes, int] = {}
    for i, img in enumerate(a):
        seen.setdefault(_digest(img), i)
    return [(seen[d], j) for j, d in enumerate(map(_digest, b)) if d in seen]


# ---- Kaggle's CSVs ----

def read_csv_images(path: Path, labelled: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Kaggle's train.csv (label,pixel0..pixel783) or test.csv (pixel0..pixel783): uint8 images and the
    labels (None for test.csv), as they are (no polarity check); cached by the file's content."""
    key = _file_digest(path)
    cached = cache_dir() / f"csv-{key}{'' if labelled else '-unlabelled'}.npz"  # a file is read either way
    if cached.is_file():
        with np.load(cached) as z:
            return z["images"], (z["labels"] if "labels" in z else None)
    images, labels = _parse_csv(path, labelled)
    arrays = {"images": images} | ({"labels": labels} if labels is not None else {})
    write_cache(cached, arrays)
    return images, labels


def _parse_csv(path: Path, labelled: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Parsed with the pixels' type given (uint8): faster than letting pyarrow infer int64,
    and the columns then copy faster. A file that does not parse so is read again, slowly, for
    the sentence that says what is wrong with it."""
    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv
    except ImportError:
        raise DataError(f"{path}: reading CSV files needs pyarrow: pip install 'mnistlab[data]'.") from None
    expected = (["label"] if labelled else []) + PIXELS
    _check_header(path, _header(path), expected, labelled)
    types = {name: pa.uint8() for name in PIXELS} | {"label": pa.int64()}
    try:
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))
    except pa.ArrowInvalid as e:
        if "conversion error" in str(e):  # a cell that is not a number, or not 0-255: find which
            _explain_cells(path, pacsv, pa)
        raise DataError(f"{path}: not a CSV in Kaggle's layout ({first_line(e)}).") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e}).") from None
    if not table.num_rows:
        raise DataError(f"{path}: holds no rows.")
    if any(column.null_count for column in table.columns):
        _explain_cells(path, pacsv, pa)
    pixels = np.empty((784, table.num_rows), np.uint8)  # a column a row: contiguous copies, one transpose after
    for i, name in enumerate(PIXELS):
        pixels[i] = table.column(name).to_numpy()
    images = np.ascontiguousarray(pixels.T).reshape(-1, 28, 28)
    return images, table.column("label").to_numpy() if labelled else None


def _header(path: Path) -> list[str]:
    try:
        with open(path, "rb") as f:
            first = f.readline(1 << 20).decode("utf-8", "replace")
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e}).") from None
    return [name.strip().strip('"') for name in first.strip().split(",")] if first.strip() else []


def _check_header(path: Path, names: list[str], expected: list[str], labelled: bool) -> None:
    if not names:
        raise DataError(f"{path}: the file is empty.")
    if all(re.fullmatch(r"-?[0-9.]+", n) for n in names):
        raise DataError(f"{path}: has no header; Kaggle's CSV starts with the line "
                        f"{','.join(expected[:3])},...,pixel783.")
    if names != expected:
        what = "train.csv (label,pixel0..pixel783)" if labelled else "test.csv (pixel0..pixel783)"
        raise DataError(f"{path}: has {len(names)} columns ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
                        f"; {what} has {len(expected)}.")


def _explain_cells(path: Path, pacsv, pa) -> None:
    """Raise the sentence naming the first cell that is not a whole number, or not 0-255 in a pixel column."""
    table = pacsv.read_csv(path)
    for name, column in zip(table.column_names, table.columns):
        if not pa.types.is_integer(column.type) or column.null_count:
            raise DataError(f"{path}: column {name} holds {_not_a_whole_number(column)}.")
    for name in PIXELS:
        _check_range(table.column(name).to_numpy(), str(path), "pixel values")
    raise DataError(f"{path}: not a CSV in Kaggle's layout (a cell pyarrow cannot read as a number).")


def _not_a_whole_number(column) -> str:
    for row, value in enumerate(column.to_pylist(), start=2):  # row 1 is the header
        try:
            int(str(value))
        except ValueError:
            shown = "an empty cell" if value is None else repr(str(value))
            return f"{shown} on line {row}, not a whole number"
    return "values that are not whole numbers"


def read_kaggle(path: Path) -> OwnDataset:
    """train.csv (and, beside it, the unlabelled test.csv, counted for predict --submission)."""
    images, given = read_csv_images(path, labelled=True)
    assert given is not None  # labelled=True reads the label column
    classes, labels, _ = number_classes(given, None, str(path))
    notes: list[str] = []
    images = light_on_dark(images, path, notes)
    test_csv = path.with_name("test.csv")
    unlabelled = 0
    if test_csv.is_file() and test_csv != path:
        unlabelled = len(read_csv_images(test_csv, labelled=False)[0])
    return OwnDataset(path, "kaggle-csv", classes, (images, labels), None, notes=notes, unlabelled=unlabelled)


# ---- NumPy and IDX ----

def read_npz(path: Path) -> OwnDataset:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz file ({first_line(e)}).") from None
    missing = [k for k in ("x_train", "y_train") if k not in arrays]
    if missing or (("x_test" in arrays) != ("y_test" in arrays)):
        raise DataError(f"{path}: holds {', '.join(arrays) or 'nothing'}; Keras's layout is x_train, y_train and "
                        "optionally x_test, y_test.")
    test = ("x_test" in arrays)
    return _from_arrays(path, "npz", arrays["x_train"], arrays["y_train"],
                        arrays.get("x_test"), arrays.get("y_test"), test)


def _idx_part(name: str) -> str | None:
    """'train_images', 'test_labels', ... for an IDX file's name in MNIST's naming, else None."""
    m = re.search(r"(train|t10k|test)-(images|labels)-idx[13]-ubyte(\.gz)?$", name)
    return m and f"{'train' if m[1] == 'train' else 'test'}_{m[2]}"


def read_idx_folder(path: Path) -> OwnDataset:
    found: dict[str, Path] = {}
    for f in sorted(path.iterdir()):
        part = _idx_part(f.name)
        if part:
            found.setdefault(part, f)
    for part in ("train_images", "train_labels"):
        if part not in found:
            raise DataError(f"{path}: holds IDX files but no {part.replace('_', '-')} file "
                            "(named like train-images-idx3-ubyte.gz).")
    test = "test_images" in found and "test_labels" in found
    return _from_arrays(path, "idx", read_idx(found["train_images"]), read_idx(found["train_labels"]),
                        read_idx(found["test_images"]) if test else None,
                        read_idx(found["test_labels"]) if test else None, test)


def _from_arrays(path: Path, fmt: str, x, y, xt, yt, test: bool) -> OwnDataset:
    x = as_images(np.asarray(x), f"{path} (training images)")
    if len(y) != len(x):
        raise DataError(f"{path}: {len(y)} training labels for {len(x)} images.")
    if test:
        xt = as_images(np.asarray(xt), f"{path} (test images)")
        if len(yt) != len(xt):
            raise DataError(f"{path}: {len(yt)} test labels for {len(xt)} images.")
    classes, y, yt = number_classes(np.asarray(y), np.asarray(yt) if test else None, str(path))
    notes: list[str] = []
    x = light_on_dark(x, path, notes)
    return OwnDataset(path, fmt, classes, (x, y), (light_on_dark(xt, path, notes), yt) if test else None, notes=notes)


# ---- class-per-folder images ----

def read_folder(root: Path) -> OwnDataset:
    """root/<class>/images, or root/train/<class>/... with root/test/ (or validation/) beside it."""
    split_root = root / "train"
    held_root = next((root / n for n in ("test", "validation", "val") if (root / n).is_dir()), None)
    train_root = split_root if split_root.is_dir() and _class_dirs(split_root) else root
    classes = tuple(d.name for d in _class_dirs(train_root))
    if not classes:
        raise DataError(f"{root}: no dataset here: expected class folders (root/<class>/*.png), train.csv, a .npz "
                        "or IDX files.")
    notes: list[str] = []
    train_files = _labelled_files(train_root, classes)
    test_files = []
    if train_root == split_root and held_root is not None:
        for d in _class_dirs(held_root):
            if d.name not in classes:
                raise DataError(f"{d}: class '{d.name}' is not among the training classes ({', '.join(classes)}).")
        test_files = _labelled_files(held_root, classes)
    pixels = preprocess_files([f for f, _ in train_files + test_files], notes, key=str(root))

    def part(files):
        ok = [(f, y) for f, y in files if f in pixels]
        images = np.stack([pixels[f] for f, _ in ok]) if ok else np.zeros((0, 28, 28), np.uint8)
        return (images, np.array([y for _, y in ok], np.int64)), [str(f) for f, _ in ok]

    (train, train_names), (test, test_names) = part(train_files), part(test_files)
    if not len(train[0]):
        raise DataError(f"{train_root}: no image could be read (looked for {LOOKED_FOR}).")
    check_counts(classes, np.bincount(train[1], minlength=len(classes)), str(train_root))
    return OwnDataset(root, "folder", classes, train, test if test_files else None,
                      names=(train_names, test_names), notes=notes)


def _class_dirs(root: Path) -> list[Path]:
    """The class folders, in natural order (2 before 10)."""
    return sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")
                   and d.name not in ("train", "test", "validation", "val")),
                  key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name))


def _labelled_files(root: Path, classes: tuple[str, ...]) -> list[tuple[Path, int]]:
    files = []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        files += [(f, label) for f in sorted(folder.iterdir()) if f.is_file() and not f.name.startswith(".")]
    return files


def preprocess_files(files: list[Path], notes: list[str], key: str) -> dict[Path, np.ndarray]:
    """Each readable image file -> its 28x28 MNIST-like image (predict's preprocessing), made in parallel and
    cached by content (one cache file per `key`, the dataset's folder); a file that is not an image, or
    holds no digit, is skipped with a line in `notes` (and the verdict cached too: not decoded again)."""
    if not files:
        return {}
    images = [f for f in files if f.suffix.lower() in image_suffixes()]
    notes += [f"{f}: skipped: not an image file (looked for {LOOKED_FOR})." for f in files
              if f.suffix.lower() not in image_suffixes()]
    keys = {}
    for f, digest in zip(images, _digests(images)):
        if isinstance(digest, OSError):
            notes.append(f"{f}: skipped: cannot be read ({digest.strerror or digest}).")
        else:
            keys[f] = digest
    cache_path = cache_dir() / f"images-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    cache = _read_image_cache(cache_path)
    todo = [f for f in keys if keys[f] not in cache]
    for f, result in zip(todo, _preprocess_parallel([(str(f), str(f)) for f in todo])):  # (source, name)
        # a verdict is kept without the file's name, which another copy of the same bytes does not share
        cache[keys[f]] = result.removeprefix(f"{f}: ") if isinstance(result, str) else result
    if todo:
        _write_image_cache(cache_path, cache, set(keys.values()))
    made = {}
    for f, k in keys.items():
        result = cache[k]
        if isinstance(result, str):
            notes.append(f"{f}: {result.rstrip('.')}: skipped.")
        else:
            made[f] = result
    return made


def _digests(files: list[Path]) -> list[str | OSError]:
    """Each file's content key (or why it cannot be read), the files split between threads in whole runs:
    hashlib lets go of the GIL (a thread a file is slower than one thread; two runs of files are faster)."""
    def run(part: list[Path]) -> list[str | OSError]:
        out: list[str | OSError] = []
        for f in part:
            try:
                out.append(_file_digest(f))
            except OSError as e:
                out.append(e)
        return out

    workers = min(os.cpu_count() or 1, 8)
    size = -(-len(files) // workers) or 1
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return [d for part in pool.map(run, [files[i:i + size] for i in range(0, len(files), size)]) for d in part]


def _preprocess_parallel(items: list[tuple[bytes | str, str]]) -> list[np.ndarray | str]:
    workers = min(os.cpu_count() or 1, 8)
    if not items:
        return []
    if len(items) < PARALLEL_FROM or workers < 2:
        return preprocess_many(items)
    chunk = min(64, -(-len(items) // workers))  # small chunks: the cores finish together
    chunks = [items[i:i + chunk] for i in range(0, len(items), chunk)]
    # fork where there is one: spawn and forkserver re-run the caller's script in every worker (a script without
    # `if __name__ == "__main__"` breaks the pool) and start slower. The workers run NumPy and Pillow only, never
    # the torch threads the fork copies no state of, so Python 3.12's warning about forking threads does not apply.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
            return [r for results in pool.map(preprocess_many, chunks) for r in results]


def _read_image_cache(path: Path) -> dict[str, np.ndarray | str]:
    """content key -> the 28x28 image, or the sentence that says why the file was skipped."""
    try:
        with np.load(path) as z:
            return dict(zip(z["keys"].tolist(), z["images"])) | dict(zip(z["skip_keys"].tolist(),
                                                                         z["skip_reasons"].tolist()))
    except (OSError, ValueError, KeyError, EOFError):  # none yet, damaged, or an older layout: made again
        return {}


def _write_image_cache(path: Path, cache: dict[str, np.ndarray | str], wanted: set[str]) -> None:
    """What `cache` holds for the keys in `wanted`: files gone since the last run are dropped."""
    kept = sorted(k for k in cache if k in wanted and not isinstance(cache[k], str))
    skipped = sorted(k for k in cache if k in wanted and isinstance(cache[k], str))
    write_cache(path, {"keys": np.array(kept, dtype=str),
                        "images": np.stack([cache[k] for k in kept]) if kept else np.zeros((0, 28, 28), np.uint8),
                        "skip_keys": np.array(skipped, dtype=str), "skip_reasons": np.array([cache[k] for k in skipped],
                                                                                             dtype=str)})


def _file_digest(path: Path) -> str:
    """A file's cache key: its content and the code that reads and preprocesses it."""
    return file_digest(path, lambda: hashlib.blake2b(code_digest(Path(__file__).parent), digest_size=16))


# ---- describing a set ----

def describe(ds: OwnDataset) -> str:
    """What `mnistlab datasets PATH` prints: format, classes, counts per class, problems."""
    problems = list(ds.notes)
    try:
        train, test, carved = ds.splits()
    except DataError as e:  # duplicates across the given splits, or none to carve: shown, the counts still given
        problems.append(str(e))
        train, test, carved = ds.train, ds.test, ds.test is None  # type: ignore[assignment]  # (test may be None)
    repeated = _copies(train[0])
    if repeated:
        problems.append(f"{repeated} training images are exact copies of others (harmless, but they count twice).")
    held = ("its own test split" if not carved else "none given, and none can be carved from it" if test is None else
            f"none given: {len(test[1])} images carved from it ({HELD_OUT:.0%} of each class, stratified, the same "
            "every run) are its test split")
    lines = [f"{ds.source}: {FORMATS[ds.format]}, {len(ds.classes)} classes, {len(train[1])} training images; "
             f"test split: {held}"]
    width = max(5, *map(len, ds.classes))
    lines.append(f"  {'class':<{width}}  {'train':>6}  {'test':>6}")
    train_counts = np.bincount(train[1], minlength=len(ds.classes))
    test_counts = np.bincount(test[1] if test is not None else [], minlength=len(ds.classes))
    for name, a, b in zip(ds.classes, train_counts, test_counts):
        lines.append(f"  {name:<{width}}  {a:>6}  {b:>6}")
    if ds.unlabelled:
        lines.append(f"  {ds.unlabelled} unlabelled rows in {ds.source.with_name('test.csv')}: classify them with "
                     f"mnistlab predict MODEL {ds.source.with_name('test.csv')} --submission submission.csv")
    lines.append("problems: " + ("none found" if not problems else f"{len(problems)}"))
    lines += [f"  - {p}" for p in problems]
    return "\n".join(lines)


def summary(ds: OwnDataset) -> list[str]:
    """The lines `mnistlab train --dataset PATH` says first: what was found and where its test split comes from,
    then each file skipped."""
    return [describe(ds).splitlines()[0], *ds.notes]


def write_sample(ds: OwnDataset, path: str | os.PathLike, per_class: int = 10, scale: int = 2) -> Path:
    """A PNG grid: a row per class (up to 20), its first `per_class` training images, as the model will see them."""
    from PIL import Image

    rows = ds.classes[:20]
    grid = np.zeros((len(rows) * 28, per_class * 28), np.uint8)
    images, labels = ds.train
    for r in range(len(rows)):
        for c, i in enumerate(np.flatnonzero(labels == r)[:per_class]):
            grid[r * 28:(r + 1) * 28, c * 28:(c + 1) * 28] = images[i]
    picture = Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.Resampling.NEAREST)
    atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))
    return Path(path)
