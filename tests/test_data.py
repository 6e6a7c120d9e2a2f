import gzip
import http.server
import threading

import numpy as np
import pytest
import torch

from mnistlab import DataError
from mnistlab.data import mnist as data
from mnistlab.data.mnist import Loader, epoch_permutation, read_idx
from mnistlab.data.own import get_dataset_spec, load_split
from mnistlab_testkit.fakes import make_fake_mnist, write_idx


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip(tmp_path, gz):
    a = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    path = write_idx(tmp_path / ("x.gz" if gz else "x"), a, gz=gz)
    np.testing.assert_array_equal(read_idx(path), a)


def test_truncated_file_names_file_and_problem(tmp_path):
    path = write_idx(tmp_path / "x", np.zeros((3, 28, 28)), gz=False)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"x: truncated.*\(3, 28, 28\)"):
        read_idx(path)


def test_longer_than_header_is_refused(tmp_path):
    path = write_idx(tmp_path / "x", np.zeros((3, 28, 28)), gz=False)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(DataError, match="longer than its header"):
        read_idx(path)


def test_bad_magic_is_refused(tmp_path):
    path = tmp_path / "x.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(DataError, match="bad magic number"):
        read_idx(path)


def test_corrupt_gzip_is_refused(tmp_path):
    path = write_idx(tmp_path / "x.gz", np.zeros((3, 28, 28)))
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2:] = b"\xff" * (len(raw) - len(raw) // 2)
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="x.gz"):
        read_idx(path)


def test_real_mnist_loads_whole_and_in_range(data_dir):
    x, y = load_split("mnist", "train", data_dir=data_dir, download=False)
    assert x.shape == (60000, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (60000,) and set(y.unique().tolist()) == set(range(10))
    xt, yt = load_split("mnist", "test", data_dir=data_dir, download=False)
    assert xt.shape == (10000, 28, 28)
    assert yt[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the official test set's first labels
    mean = x.float().mean().item() / 255
    assert mean == pytest.approx(0.1307, abs=1e-4)


def test_flat_folder_and_uncompressed_files_are_accepted(tmp_path):
    root = make_fake_mnist(tmp_path / "flat", flat=True)
    p = root / "t10k-labels-idx1-ubyte.gz"
    (root / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress(p.read_bytes()))
    p.unlink()
    x, y = load_split("mnist", "test", data_dir=root, download=False)
    assert x.shape == (50, 28, 28) and y.shape == (50,)


def test_env_variable_is_used(tmp_path, monkeypatch):
    root = make_fake_mnist(tmp_path / "env")
    monkeypatch.setenv("MNISTLAB_DATA", str(root))
    assert load_split("mnist", "test", download=False)[0].shape == (50, 28, 28)


def test_mislabelled_file_is_refused(tmp_path):
    root = make_fake_mnist(tmp_path / "d")
    write_idx(root / "MNIST/raw/t10k-labels-idx1-ubyte.gz", np.full(50, 12))
    with pytest.raises(DataError, match="label 12 is out of range"):
        load_split("mnist", "test", data_dir=root, download=False)


def test_count_mismatch_is_refused(tmp_path):
    root = make_fake_mnist(tmp_path / "d")
    write_idx(root / "MNIST/raw/t10k-labels-idx1-ubyte.gz", np.zeros(49))
    with pytest.raises(DataError, match="49 labels for 50 images"):
        load_split("mnist", "test", data_dir=root, download=False)


def test_missing_files_offline_says_what_and_where(tmp_path):
    with pytest.raises(DataError, match=r"missing .*t10k-images-idx3-ubyte.gz.*put them in"):
        load_split("kmnist", "test", data_dir=tmp_path, download=False)


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'cifar'"):
        load_split("cifar", "test")


@pytest.fixture
def file_server(tmp_path):
    """Serve a folder on loopback, as a dataset mirror would."""
    served = tmp_path / "mirror"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(served), **k)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


def test_download_checks_md5_and_renames_into_place(tmp_path, file_server):
    served, url = file_server
    src = make_fake_mnist(tmp_path / "src", flat=True)
    name = "t10k-labels-idx1-ubyte.gz"
    (served / name).write_bytes((src / name).read_bytes())
    dest = tmp_path / "dl" / name
    data.download_file([url + "missing.gz", url + name], dest, data.file_digest(src / name))
    assert dest.read_bytes() == (src / name).read_bytes()
    with pytest.raises(DataError, match="md5"):
        data.download_file([url + name], tmp_path / "dl2" / name, "0" * 32)
    assert not (tmp_path / "dl2").exists()  # no partial file left behind, nor the folder it made for it
    (tmp_path / "kept").mkdir()  # a folder that was there stays
    with pytest.raises(DataError, match="md5"):
        data.download_file([url + name], tmp_path / "kept" / "a" / "b" / name, "0" * 32)
    assert (tmp_path / "kept").is_dir() and not list((tmp_path / "kept").iterdir())


def test_epoch_order_is_seeded_and_reshuffled():
    a, b = epoch_permutation(1000, 1, 1), epoch_permutation(1000, 1, 2)
    assert torch.equal(a, epoch_permutation(1000, 1, 1))
    assert not torch.equal(a, b)
    assert torch.equal(a.sort().values, torch.arange(1000))


def test_loader_covers_every_image_once_per_epoch_and_normalises():
    images = torch.arange(130, dtype=torch.uint8).view(130, 1, 1).expand(130, 28, 28).contiguous()
    labels = torch.arange(130) % 10
    loader = Loader(images, labels, 32, mean=0.5, std=0.25, order=lambda e: epoch_permutation(130, 3, e))
    batches = list(loader.batches(epoch=1))
    assert [len(y) for _, y in batches] == [32, 32, 32, 32, 2] and len(loader) == 5
    firsts = torch.cat([x[:, 0, 0, 0] for x, _ in batches])
    ids = torch.round((firsts * 0.25 + 0.5) * 255).long()
    assert sorted(ids.tolist()) == list(range(130))
    assert torch.equal(torch.cat([y for _, y in batches]), ids % 10)  # labels travel with images
    assert list(loader.batches(epoch=1, start=4))[0][1].tolist() == batches[4][1].tolist()


def test_test_loader_keeps_file_order():
    images = torch.zeros(25, 28, 28, dtype=torch.uint8)
    labels = torch.arange(25) % 10
    loader = Loader(images, labels, 10, 0.0, 1.0)
    assert torch.equal(torch.cat([y for _, y in loader]), labels)


def test_fashion_mnist_from_debian_package(tmp_path):
    from pathlib import Path

    if not Path("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz").is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (scripts/test.sh installs it as root)")
    x, y = load_split("fashion-mnist", "test", data_dir=tmp_path, download=False)
    assert x.shape == (10000, 28, 28) and torch.bincount(y).tolist() == [1000] * 10


def _emnist_like(root, split: str, n_classes: int, offset: int, n: int = 30):
    """Files in EMNIST's exact layout: EMNIST/raw/emnist-SPLIT-..., images stored transposed,
    labels from `offset`. Each image has an "L" of ink: a tall bar on the left, a foot at the bottom."""
    folder = root / "EMNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    upright = np.zeros((n, 28, 28), np.uint8)
    upright[:, 4:24, 6:9] = 255  # the bar, rows 4-23 in columns 6-8
    upright[:, 21:24, 6:20] = 255  # the foot
    labels = (np.arange(n) % n_classes + offset).astype(np.uint8)
    for prefix in ("train", "test"):
        write_idx(folder / f"emnist-{split}-{prefix}-images-idx3-ubyte.gz", upright.transpose(0, 2, 1))
        write_idx(folder / f"emnist-{split}-{prefix}-labels-idx1-ubyte.gz", labels)
    return upright, labels


@pytest.mark.parametrize("split, n_classes, offset, first, last", [
    ("letters", 26, 1, "a", "z"), ("digits", 10, 0, "0", "9"), ("balanced", 47, 0, "0", "t"),
    ("byclass", 62, 0, "0", "z")])
def test_emnist_is_turned_upright_and_labelled_from_zero(tmp_path, split, n_classes, offset, first, last):
    upright, labels = _emnist_like(tmp_path, split, n_classes, offset)
    x, y = load_split(f"emnist-{split}", "train", data_dir=tmp_path, download=False)
    assert torch.equal(x, torch.from_numpy(upright))  # the bar stands on the left, not across the top
    assert torch.equal(y, torch.from_numpy(labels.astype(np.int64) - offset)) and int(y.min()) == 0
    spec = get_dataset_spec(f"emnist-{split}")
    assert len(spec.classes) == n_classes and (spec.classes[0], spec.classes[-1]) == (first, last)


def test_emnist_letters_refuses_a_label_outside_1_to_26(tmp_path):
    _emnist_like(tmp_path, "letters", 26, 1)
    write_idx(tmp_path / "EMNIST/raw/emnist-letters-test-labels-idx1-ubyte.gz", np.zeros(30, np.uint8))
    with pytest.raises(DataError, match="label 0 is out of range 1-26"):
        load_split("emnist-letters", "test", data_dir=tmp_path, download=False)


def test_emnist_comes_from_its_zip_md5_checked(tmp_path, monkeypatch):
    import dataclasses
    import hashlib
    import zipfile

    source = tmp_path / "made"
    _emnist_like(source, "digits", 10, 0)
    archive = tmp_path / "gzip.zip"
    with zipfile.ZipFile(archive, "w") as z:  # as NIST packs it: every split's files under gzip/
        for f in (source / "EMNIST/raw").iterdir():
            z.write(f, f"gzip/{f.name}")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    spec = dataclasses.replace(data.DATASETS["emnist-digits"], archive=(archive.as_uri(), md5))
    monkeypatch.setitem(data.DATASETS, "emnist-digits", spec)
    monkeypatch.delenv("MNISTLAB_OFFLINE", raising=False)
    x, y = load_split("emnist-digits", "test", data_dir=tmp_path / "data")
    assert x.shape == (30, 28, 28) and (tmp_path / "data/EMNIST/raw/gzip.zip").is_file()
    monkeypatch.setitem(data.DATASETS, "emnist-digits", dataclasses.replace(spec, archive=(archive.as_uri(), "0" * 32)))
    with pytest.raises(DataError, match="md5"):
        load_split("emnist-digits", "test", data_dir=tmp_path / "other")
    monkeypatch.setenv("MNISTLAB_OFFLINE", "1")
    with pytest.raises(DataError, match="they come in https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip"):
        load_split("emnist-letters", "test", data_dir=tmp_path / "none")


def test_kmnist_reads_files_in_its_layout(tmp_path):
    folder = tmp_path / "KMNIST" / "raw"
    folder.mkdir(parents=True)
    images = np.random.default_rng(0).integers(0, 256, (20, 28, 28)).astype(np.uint8)
    for prefix in ("train", "t10k"):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(20) % 10)
    x, y = load_split("kmnist", "test", data_dir=tmp_path, download=False)
    assert torch.equal(x, torch.from_numpy(images)) and y.tolist() == [i % 10 for i in range(20)]
    assert get_dataset_spec("kmnist").classes[:3] == ("o", "ki", "su")


def test_a_gzip_idx_file_is_decompressed_once_and_a_changed_file_again(tmp_path, monkeypatch):
    import struct

    monkeypatch.setenv("MNISTLAB_CACHE", str(tmp_path / "cache"))

    def write(path, labels):
        with gzip.open(path, "wb") as f:
            f.write(struct.pack(">HBBI", 0, 0x08, 1, len(labels)) + bytes(labels))

    f = tmp_path / "labels-idx1-ubyte.gz"
    write(f, [1, 2, 3])
    assert data.read_idx(f).tolist() == [1, 2, 3]
    assert len(list((tmp_path / "cache" / "idx").iterdir())) == 1
    opened = []
    real_open = gzip.open
    monkeypatch.setattr(gzip, "open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    assert data.read_idx(f).tolist() == [1, 2, 3] and not opened  # from the cache
    write(f, [4, 5, 6, 7])  # another size and time: read afresh
    monkeypatch.setattr(gzip, "open", real_open)
    assert data.read_idx(f).tolist() == [4, 5, 6, 7]
    monkeypatch.setenv("MNISTLAB_CACHE", str(tmp_path / "cache" / "idx" / next(
        (tmp_path / "cache" / "idx").iterdir()).name))  # a cache path that is a file: unusable, and harmless
    assert data.read_idx(f).tolist() == [4, 5, 6, 7]
