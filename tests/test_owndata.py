"""Datasets from a path: each layout made here, small, and each kind of bad input refused in one sentence."""

import json

import numpy as np
import pytest
from PIL import Image

from mnistlab import DataError
from mnistlab.checkpoints import load_checkpoint
from mnistlab.data import own as owndata
from mnistlab_testkit.fakes import make_fake_mnist
from mnistlab_testkit.fakes import run_cli as run
from mnistlab_testkit.owndatasets import drawing, make_folder, square_images, write_kaggle


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MNISTLAB_CACHE", str(tmp_path / "cache"))
    owndata._open.cache_clear()
    return tmp_path / "cache"


def test_folder_of_classes_is_preprocessed_and_a_test_split_carved(tmp_path, capsys):
    root = make_folder(tmp_path / "shapes", {"ring": 10, "bar": 10, "seven": 20})
    (root / "bar" / "notes.txt").write_text("not a picture")
    Image.new("L", (40, 40), 255).save(root / "ring" / "blank.png")  # no ink: skipped like predict skips it
    ds = owndata.open_dataset(root)
    assert ds.format == "folder" and ds.classes == ("bar", "ring", "seven")
    assert ds.counts() == [10, 10, 20]
    assert any("notes.txt: skipped: not an image" in n for n in ds.notes)
    assert any("blank.png: no digit found" in n for n in ds.notes)
    # predict's preprocessing: light ink on black, 20 px box, centred
    img = ds.train[0][0]
    assert img.shape == (28, 28) and img[0].max() == 0 and img.max() == 255
    train, test, carved = ds.splits()
    assert carved and np.bincount(test[1]).tolist() == [1, 1, 2]  # 10% of each class
    assert len(train[1]) + len(test[1]) == 40
    assert not owndata.duplicates(train[0], test[0])


def test_train_and_test_folders_and_a_foreign_test_class(tmp_path):
    make_folder(tmp_path / "d" / "train", {"0": 4, "1": 4})
    make_folder(tmp_path / "d" / "test", {"0": 2, "1": 3}, seed=1)
    ds = owndata.open_dataset(tmp_path / "d")
    train, test, carved = ds.splits()
    assert not carved and ds.counts(0) == [4, 4] and ds.counts(1) == [2, 3]
    make_folder(tmp_path / "e" / "train", {"0": 4, "1": 4})
    make_folder(tmp_path / "e" / "test", {"0": 2, "x": 2}, seed=1)
    with pytest.raises(DataError, match=r"test/x: class 'x' is not among the training classes \(0, 1\)"):
        owndata.open_dataset(tmp_path / "e")


def test_duplicates_across_train_and_test_are_refused_and_reported(tmp_path):
    make_folder(tmp_path / "d" / "train", {"0": 4, "1": 4})
    make_folder(tmp_path / "d" / "test", {"0": 2, "1": 2}, seed=1)
    (tmp_path / "d/test/1/001.png").write_bytes((tmp_path / "d/train/1/002.png").read_bytes())
    with pytest.raises(DataError, match=r"1 test images also appear in the training split \(first: .*train/1/002.png "
                                        r"and .*test/1/001.png\)"):
        owndata.get_dataset_spec(str(tmp_path / "d"))
    assert "1 test images also appear" in owndata.describe(owndata.open_dataset(tmp_path / "d"))


def test_a_folder_of_copies_leaves_no_test_split_and_says_so(tmp_path):
    make_folder(tmp_path / "d", {"0": 1, "1": 1})
    for folder in (tmp_path / "d" / "0", tmp_path / "d" / "1"):  # each class: one image and 19 copies of it
        first = next(folder.iterdir())
        for i in range(19):
            (folder / f"copy{i}.png").write_bytes(first.read_bytes())
    with pytest.raises(DataError, match=r"no test split can be carved from it: .* \(38 of its 40 images are copies\)"):
        owndata.open_dataset(tmp_path / "d").splits()
    described = owndata.describe(owndata.open_dataset(tmp_path / "d"))
    assert "test split: none given, and none can be carved from it" in described and "problems: 2" in described
    proc = run("train", "--dataset", tmp_path / "d", "--epochs", "1", "--out", tmp_path / "run")
    assert proc.returncode == 1 and "no test split can be carved" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("layout, message", [
    ({}, "no dataset here"),
    ({"0": 3, "1": 1}, "class '1' has only 1 image"),
    ({"0": 3, "1": 0}, "class '1' has no images"),
])
def test_too_few_images(tmp_path, layout, message):
    make_folder(tmp_path / "d", layout).mkdir(exist_ok=True)
    with pytest.raises(DataError, match=message):
        owndata.open_dataset(tmp_path / "d")


def test_folder_cache_is_keyed_by_content(tmp_path, cache, monkeypatch):
    root = make_folder(tmp_path / "d", {"0": 3, "1": 3})
    first = owndata.open_dataset(root).train[0]
    assert len(list(cache.glob("images-*.npz"))) == 1
    owndata._open.cache_clear()
    calls = []
    real = owndata.preprocess_many
    monkeypatch.setattr(owndata, "preprocess_many", lambda items: calls.append(len(items)) or real(items))
    np.testing.assert_array_equal(owndata.open_dataset(root).train[0], first)
    assert calls == []  # all from the cache
    drawing("ring", np.random.default_rng(9)).save(root / "0" / "001.png")  # new content, same name
    owndata._open.cache_clear()
    again = owndata.open_dataset(root).train[0]
    assert calls == [1] and not np.array_equal(again[1], first[1]) and np.array_equal(again[0], first[0])


def test_parallel_preprocessing_matches_serial(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "d", {"0": 40, "1": 40})
    files = sorted(root.glob("*/*.png"))
    parallel = owndata.preprocess_files(files, [], key="a")
    monkeypatch.setattr(owndata, "PARALLEL_FROM", 10 ** 9)
    monkeypatch.setenv("MNISTLAB_CACHE", str(tmp_path / "other"))
    serial = owndata.preprocess_files(files, [], key="a")
    assert len(parallel) == 80 and all(np.array_equal(parallel[f], serial[f]) for f in files)


def test_kaggle_csv_reads_and_caches(tmp_path, cache, monkeypatch):
    images, labels = square_images(60, classes=3)
    path = write_kaggle(tmp_path / "kaggle", images, labels, test_images=images[:7])
    ds = owndata.open_dataset(tmp_path / "kaggle")
    assert ds.format == "kaggle-csv" and ds.classes == ("0", "1", "2") and ds.unlabelled == 7
    np.testing.assert_array_equal(ds.train[0], images)
    np.testing.assert_array_equal(ds.train[1], labels)
    owndata._open.cache_clear()
    monkeypatch.setattr(owndata, "_parse_csv", lambda *a: pytest.fail("parsed again"))
    np.testing.assert_array_equal(owndata.open_dataset(path).train[0], images)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("\n", "\n1,2,3\n", 1), "not a CSV in Kaggle's layout"),
    (lambda t: t.replace(",0,", ",x,", 1), "holds 'x' on line 2, not a whole number"),
    (lambda t: t.replace(",0,", ",256,", 1), "pixel values must lie between 0 and 255; found 256"),
    (lambda t: t.replace(",0,", ",,", 1), "holds an empty cell on line 2, not a whole number"),
    (lambda t: "", "the file is empty"),
    (lambda t: t.split("\n", 1)[1], "has no header"),
    (lambda t: "".join(line.split(",", 1)[1] + "\n" for line in t.splitlines()),
     r"has 784 columns \(pixel0, pixel1, pixel2, ...\); train.csv \(label,pixel0..pixel783\) has 785"),
    (lambda t: t.replace("\n0,", "\n-1,", 1), "labels must lie between 0 and 10000; found -1"),
    (lambda t: t.replace("\n0,", "\n0.5,", 1), "holds '0.5' on line 2, not a whole number"),
])
def test_bad_csv_is_one_sentence(tmp_path, edit, message):
    images, labels = square_images(12, classes=3)
    path = write_kaggle(tmp_path / "k", images, labels)
    path.write_text(edit(path.read_text()))
    with pytest.raises(DataError, match=message) as e:
        owndata.open_dataset(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_npz_in_keras_layout_and_polarity(tmp_path):
    x, y = square_images(30, classes=3)
    np.savez(tmp_path / "mnist.npz", x_train=255 - x, y_train=y, x_test=x[:6], y_test=y[:6])
    ds = owndata.open_dataset(tmp_path / "mnist.npz")
    assert ds.format == "npz" and ds.test is not None
    np.testing.assert_array_equal(ds.train[0], x)  # dark on light turned light on dark
    assert any("30 of 30 images were dark on light" in n for n in ds.notes)
    # the test split repeats training images: refused
    with pytest.raises(DataError, match="6 test images also appear in the training split"):
        ds.splits()
    np.savez(tmp_path / "bad.npz", x_train=x, y_train=y, x_test=x[:2], y_test=np.array([0, 7]))
    with pytest.raises(DataError, match=r"label 7 is outside the training classes \(0-2\)"):
        owndata.open_dataset(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", images=x)
    with pytest.raises(DataError, match="Keras's layout is x_train, y_train"):
        owndata.open_dataset(tmp_path / "other.npz")


def test_idx_folder(tmp_path):
    make_fake_mnist(tmp_path / "idx", n_train=60, n_test=20, flat=True)
    ds = owndata.open_dataset(tmp_path / "idx")
    assert ds.format == "idx" and len(ds.classes) == 10 and len(ds.test[1]) == 20


def test_registry_names_still_work_and_unknown_names_say_paths():
    assert owndata.get_dataset_spec("mnist").folder == "MNIST"
    with pytest.raises(DataError, match="or give a path"):
        owndata.get_dataset_spec("cifar")


def test_the_public_lookup_takes_a_folder_and_a_registry_name_alike(tmp_path, fake_data):
    import mnistlab

    root = make_folder(tmp_path / "shapes", {"ring": 10, "bar": 10, "seven": 10})
    train, test, _ = owndata.open_dataset(root).splits()
    for split, (images, labels) in (("train", train), ("test", test)):
        got_images, got_labels = mnistlab.load_split(str(root), split)
        assert got_images.shape[1:] == (28, 28) and len(got_images) == len(images) > 0
        assert np.array_equal(got_images.numpy(), images) and np.array_equal(got_labels.numpy(), labels)
    assert owndata.get_dataset_spec(str(root)).classes == ("bar", "ring", "seven")  # the folders, sorted
    registry_images, registry_labels = mnistlab.load_split("mnist", "test", fake_data, download=False)
    stored = owndata.read_idx(fake_data / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz")
    assert registry_images.shape == (len(stored), 28, 28) and np.array_equal(registry_labels.numpy(), stored)
    with pytest.raises(DataError, match="unknown split 'tset'"):
        mnistlab.load_split(str(root), "tset")


def test_cli_datasets_describes_and_draws(tmp_path):
    root = make_folder(tmp_path / "shapes", {"ring": 5, "bar": 5, "seven": 5})
    (root / "bar" / "x.txt").write_text("x")
    proc = run("datasets", root, "--sample", tmp_path / "s.png", env={"MNISTLAB_CACHE": str(tmp_path / "c")})
    assert proc.returncode == 0, proc.stderr
    assert "class-per-folder images, 3 classes, 12 training images" in proc.stdout
    assert "3 images carved from it (10% of each class, stratified" in proc.stdout
    assert "x.txt: skipped" in proc.stdout and "problems: 1" in proc.stdout
    assert Image.open(tmp_path / "s.png").size == (560, 168)


def test_cli_trains_and_evaluates_on_a_folder(tmp_path):
    root = make_folder(tmp_path / "shapes", {"ring": 20, "bar": 20, "seven": 20})
    env = {"MNISTLAB_CACHE": str(tmp_path / "c")}
    proc = run("train", "--dataset", root, "--model", "mlp", "--epochs", "3", "--batch-size", "16", "--no-report",
               "--out", tmp_path / "run", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "test split: none given: 6 images carved" in proc.stdout
    card, _ = load_checkpoint(tmp_path / "run" / "model.pt")
    assert card.classes == ("bar", "ring", "seven") and card.dataset == str(root)
    report = json.loads(run("eval", tmp_path / "run" / "model.pt", "--json", env=env).stdout)
    assert report["total"] == 6
    other = json.loads(run("eval", tmp_path / "run" / "model.pt", "--json", "--dataset", root, env=env).stdout)
    assert other["dataset"] == str(root) and other["correct"] == report["correct"]
    final = [ln for ln in proc.stdout.splitlines() if ln.startswith("test accuracy:")][0]
    assert f"{report['correct']}/6" in final


def test_cli_bad_csv_writes_nothing(tmp_path):
    images, labels = square_images(12, classes=3)
    path = write_kaggle(tmp_path / "k", images, labels)
    path.write_text(path.read_text().replace(",0,", ",300,", 1))
    proc = run("train", "--dataset", path, "--out", tmp_path / "run", env={"MNISTLAB_CACHE": str(tmp_path / "c")})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "found 300" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_labels_are_matched_to_a_models_classes_by_name():
    import torch

    from mnistlab.errors import MnistlabError
    from mnistlab.evaluation import labels_by_name

    digits = tuple("0123456789")
    assert labels_by_name(torch.tensor([0, 1, 1]), ("3", "8"), digits, "d").tolist() == [3, 8, 8]
    with pytest.raises(MnistlabError, match=r"d: class 'x' is not among the model's classes"):
        labels_by_name(torch.tensor([0]), ("3", "x"), digits, "d")


def test_a_skipped_file_is_judged_once_and_named_again_from_the_cache(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "d", {"0": 3, "1": 3})
    Image.new("L", (40, 40), 255).save(root / "0" / "blank.png")  # no ink
    assert any(n.startswith(f"{root / '0' / 'blank.png'}: no digit found") for n in owndata.open_dataset(root).notes)
    calls = []
    real = owndata.preprocess_many
    monkeypatch.setattr(owndata, "preprocess_many", lambda items: calls.append(len(items)) or real(items))
    owndata._open.cache_clear()
    (root / "1" / "copy.png").write_bytes((root / "0" / "blank.png").read_bytes())  # the same bytes, another name
    notes = owndata.open_dataset(root).notes
    assert calls == []  # neither decoded again: the verdict is cached by content
    assert [n for n in notes if "no digit found" in n] == [
        f"{root / '0' / 'blank.png'}: no digit found (the image has no ink): skipped.",
        f"{root / '1' / 'copy.png'}: no digit found (the image has no ink): skipped."]


def test_a_validation_split_of_ones_own_data_is_stratified_and_the_same_for_train_and_eval(tmp_path):
    # 6 images of a small class among 60: a random draw of 10 misses it one time in three
    root = make_folder(tmp_path / "d", {"a": 30, "b": 30, "c": 7})
    train, val = owndata.carve(str(root), 10)
    ds_train = owndata.open_dataset(root).splits()[0]
    n = len(ds_train[1])
    assert len(train[1]) + len(val[1]) == n
    share = np.bincount(val[1].numpy(), minlength=3) / np.bincount(ds_train[1], minlength=3)
    assert (share > 0).all() and share.max() - share.min() < 0.1
    for split, part in (("train", train), ("validation", val)):
        got = owndata.load_split(str(root), split, val_size=10)
        assert np.array_equal(got[0].numpy(), part[0].numpy()) and np.array_equal(got[1].numpy(), part[1].numpy())
    with pytest.raises(DataError, match="leaves no training images"):
        owndata.carve(str(root), n)
