"""Shared fixtures. Real MNIST comes from $MNISTLAB_DATA, else ../shared/data beside the repo."""

import os
import subprocess
from pathlib import Path

import pytest

from mnistlab import RunConfig, train
from mnistlab_testkit.fakes import make_fake_mnist

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def own_core_share(tmp_path_factory):
    """Trainings in this test session share cores among themselves only: another test session on
    the machine must not change their thread counts (runs are compared bit for bit)."""
    os.environ["MNISTLAB_TRAININGS_DIR"] = str(tmp_path_factory.mktemp("trainings"))


def _data_dir() -> Path | None:
    for cand in (os.environ.get("MNISTLAB_DATA"), REPO.parent / "shared" / "data"):
        if cand and (Path(cand) / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").is_file():
            return Path(cand)
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = _data_dir()
    if d is None:
        if os.environ.get("CI"):
            pytest.fail("MNIST not found: set MNISTLAB_DATA or put ../shared/data beside the repo")
        pytest.skip("MNIST not found (set MNISTLAB_DATA)")
    return d


@pytest.fixture
def fake_data(tmp_path) -> Path:
    return make_fake_mnist(tmp_path / "data")


@pytest.fixture(scope="session")
def trained_cnn(data_dir, tmp_path_factory):
    """The seed CNN after one epoch (about 98%): a real model for the prediction tests."""
    out = tmp_path_factory.mktemp("cnn")
    return train(RunConfig(model="cnn", epochs=1), out=out, data_dir=data_dir, progress=False).model_path


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs, mounted for the test (root on Linux, as CI runs)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root on Linux)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


@pytest.fixture(scope="session")
def close_call_png(data_dir, tmp_path_factory):
    """A blend of two training digits that the default model cannot decide, as a file, and its prediction."""
    from mnistlab import load_model, load_split
    from mnistlab_testkit.hard_inputs import close_call

    x, y = load_split("mnist", "train", data_dir=data_dir, download=False)
    img, pred = close_call(load_model("robust-real"), x[:60].numpy() / 255, y[:60].numpy())
    path = tmp_path_factory.mktemp("close") / "close.png"
    img.save(path)
    return path, pred
