"""Kaggle's Digit Recognizer, in its exact file layout, built from MNIST arrays (Kaggle's files cannot be fetched)."""

import numpy as np
import pytest

from mnistlab.data.own import load_split
from mnistlab_testkit.fakes import run_cli as run
from mnistlab_testkit.owndatasets import write_kaggle


@pytest.fixture
def kaggle(data_dir, tmp_path):
    x, y = load_split("mnist", "train", data_dir, download=False)
    xt, yt = load_split("mnist", "test", data_dir, download=False)
    write_kaggle(tmp_path / "kaggle", x[:1500].numpy(), y[:1500].numpy(), test_images=xt[:300].numpy())
    return tmp_path / "kaggle", yt[:300].numpy()


def read_submission(path):
    lines = path.read_text().splitlines()
    assert lines[0] == "ImageId,Label"
    rows = [tuple(map(int, line.split(","))) for line in lines[1:]]
    return np.array([i for i, _ in rows]), np.array([k for _, k in rows])


def test_pretrained_submission_is_written_with_a_warning(kaggle, tmp_path):
    folder, truth = kaggle
    env = {"MNISTLAB_CACHE": str(tmp_path / "c")}
    proc = run("predict", "robust-real", folder / "test.csv", "--submission", tmp_path / "sub.csv", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "not an honest Kaggle score" in proc.stderr and "wrote" in proc.stdout
    ids, labels = read_submission(tmp_path / "sub.csv")
    assert ids.tolist() == list(range(1, 301))  # Kaggle's ImageId counts from 1
    assert (labels == truth).mean() > 0.97


def test_documented_kaggle_run_trains_on_train_csv_alone(kaggle, tmp_path):
    folder, truth = kaggle
    env = {"MNISTLAB_CACHE": str(tmp_path / "c")}
    proc = run("train", "--dataset", folder / "train.csv", "--preset", "fast", "--epochs", "2", "--no-report",
               "--out", tmp_path / "run", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "test split: none given: 149 images carved" in proc.stdout  # 10% of each class, rounded
    proc = run("predict", tmp_path / "run" / "model.pt", folder / "test.csv", "--submission", tmp_path / "s.csv",
               env=env)
    assert proc.returncode == 0 and "honest" not in proc.stderr, proc.stderr
    ids, labels = read_submission(tmp_path / "s.csv")
    assert len(ids) == 300 and (labels == truth).mean() > 0.8


def test_submission_refuses_a_labelled_csv_and_other_files(kaggle, tmp_path):
    folder, _ = kaggle
    proc = run("predict", "robust-real", folder / "train.csv", "--submission", tmp_path / "s.csv",
               env={"MNISTLAB_CACHE": str(tmp_path / "c")})
    assert proc.returncode == 1 and "test.csv (pixel0..pixel783) has 784" in proc.stderr
    assert not (tmp_path / "s.csv").exists()
    proc = run("predict", "robust-real", "digit.png", "--submission", tmp_path / "s.csv")
    assert proc.returncode == 1 and "give one .csv file" in proc.stderr


def test_a_submission_never_overwrites_its_test_csv_and_test_csv_is_no_training_set(kaggle, tmp_path):
    folder, _ = kaggle
    env = {"MNISTLAB_CACHE": str(tmp_path / "c")}
    before = (folder / "test.csv").read_bytes()
    proc = run("predict", "robust-real", folder / "test.csv", "--submission", folder / "test.csv", env=env)
    assert proc.returncode == 1 and "that is the test.csv being classified" in proc.stderr
    assert (folder / "test.csv").read_bytes() == before
    # read once without labels (the submission), the same file read as a training set is refused in one sentence
    proc = run("predict", "robust-real", folder / "test.csv", "--submission", tmp_path / "s.csv", env=env)
    assert proc.returncode == 0, proc.stderr
    proc = run("datasets", folder / "test.csv", env=env)
    assert proc.returncode == 1 and "train.csv (label,pixel0..pixel783) has 785" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
