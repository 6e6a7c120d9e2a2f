"""MNIST-C's corruptions (mnistlab.data.corruptions) and `mnistlab eval --corruptions`."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnistlab.data import corruptions as C
from mnistlab.data.own import load_split
from mnistlab.errors import DataError, MnistlabError
from mnistlab_testkit.fakes import run_cli

BENCHMARK_15 = ["shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear", "scale", "rotate", "brightness",
                "translate", "stripe", "fog", "spatter", "dotted_line", "zigzag", "canny_edges"]
NO_RANDOMNESS = {"scale", "brightness", "stripe", "canny_edges", "gaussian_blur", "defocus_blur", "zoom_blur",
                 "contrast", "saturate", "jpeg_compression", "pixelate", "quantize", "inverse"}


@pytest.fixture(scope="module")
def digits(data_dir) -> np.ndarray:
    return load_split("mnist", "test", data_dir)[0][:40].numpy()


def test_the_families_are_the_benchmark_15_and_a_disjoint_held_out_one():
    assert list(C.TEST) == BENCHMARK_15
    assert not set(C.TEST) & set(C.HELD_OUT)
    assert {"gaussian_noise", "speckle_noise", "gaussian_blur", "defocus_blur", "zoom_blur", "contrast", "pixelate",
            "jpeg_compression", "elastic_transform", "quantize", "line", "inverse"} <= set(C.HELD_OUT)
    assert C.resolve_names(None) == BENCHMARK_15
    assert C.resolve_names(["held-out"]) == list(C.HELD_OUT)
    assert C.resolve_names(["fog", "mnist-c"])[:2] == ["fog", "shot_noise"]
    assert len(C.resolve_names(["fog", "mnist-c"])) == 15


@pytest.mark.parametrize("name", list(C.ALL))
def test_each_corruption_is_deterministic_under_its_seed_and_changes_the_image(digits, name):
    a, b = C.corrupt(digits, name, seed=1), C.corrupt(digits, name, seed=1)
    assert a.dtype == np.uint8 and a.shape == digits.shape
    assert np.array_equal(a, b)
    assert (a != digits).any((1, 2)).all(), "some image came through unchanged"
    if name not in NO_RANDOMNESS:
        assert not np.array_equal(a, C.corrupt(digits, name, seed=2))


def test_stripe_inverts_exactly_its_columns(digits):
    out = C.corrupt(digits, "stripe").astype(int)
    cols = [0, 1, 2, 3, 4, 5, 6, 21, 22, 23, 24, 25, 26, 27]
    assert np.array_equal(out[:, :, cols], 255 - digits[:, :, cols])
    assert np.array_equal(out[:, :, 7:21], digits[:, :, 7:21])


def _centre_of_mass(images: np.ndarray) -> np.ndarray:
    w = images.astype(np.float64)
    rows, cols = np.mgrid[0:28, 0:28]
    total = w.sum((1, 2))
    return np.stack([(w * rows).sum((1, 2)) / total, (w * cols).sum((1, 2)) / total], 1)


def test_translate_moves_the_centre_of_mass_by_its_shift(digits):
    clear = digits[[not (d[:3].any() or d[-3:].any() or d[:, :3].any() or d[:, -3:].any()) for d in digits]]
    assert len(clear) > 25  # digits 3 pixels clear of every edge: a shift of 3 loses none of their ink
    moved = _centre_of_mass(C.corrupt(clear, "translate")) - _centre_of_mass(clear)
    assert np.allclose(np.abs(moved), 3, atol=1e-9)
    assert len({tuple(np.sign(m)) for m in moved}) == 4  # each axis, each way


def _orientation(images: np.ndarray) -> np.ndarray:
    """The angle of each image's main axis (radians, rows down), from its second moments."""
    w = images.astype(np.float64)
    rows, cols = np.mgrid[0:28, 0:28]
    total = w.sum((1, 2))
    r = (w * rows).sum((1, 2)) / total
    c = (w * cols).sum((1, 2)) / total
    var_r = (w * (rows - r[:, None, None]) ** 2).sum((1, 2))
    var_c = (w * (cols - c[:, None, None]) ** 2).sum((1, 2))
    cov = (w * (rows - r[:, None, None]) * (cols - c[:, None, None])).sum((1, 2))
    return 0.5 * np.arctan2(2 * cov, var_c - var_r)


def test_rotate_turns_by_0_4_radians_either_way_and_keeps_the_mass(digits):
    bars = np.zeros((40, 28, 28), np.uint8)
    bars[:, 13:15, 3:25] = 255
    turned = _orientation(C.corrupt(bars, "rotate"))
    assert np.allclose(np.abs(turned), 0.4, atol=0.02)
    assert (turned > 0).any() and (turned < 0).any()
    out = C.corrupt(digits, "rotate")
    assert out.astype(float).sum() / digits.astype(float).sum() == pytest.approx(1, abs=0.03)


def test_shear_and_scale_change_the_mass_as_their_maps_say(digits):
    mass = digits.astype(float).sum()
    # the benchmark's shear reads rows at cos(0.4) of their spacing: the ink grows by 1 / cos(0.4)
    assert C.corrupt(digits, "shear").astype(float).sum() / mass == pytest.approx(1 / np.cos(0.4), rel=0.03)
    assert C.corrupt(digits, "scale").astype(float).sum() / mass == pytest.approx(0.7 ** 2, rel=0.05)


def test_brightness_adds_half_and_canny_draws_an_outline():
    assert np.all(C.corrupt(np.zeros((2, 28, 28), np.uint8), "brightness") == 128)
    square = np.zeros((1, 28, 28), np.uint8)
    square[0, 8:20, 8:20] = 255
    edges = C.corrupt(square, "canny_edges")[0] > 0
    assert edges[7:21, 7:21].sum() > 40 and not edges[11:17, 11:17].any()  # a ring, not a fill
    assert not edges[:5].any() and not edges[23:].any()


def test_an_unknown_name_is_one_sentence_that_lists_the_known_ones(digits):
    with pytest.raises(MnistlabError) as e:
        C.corrupt(digits, "foggy")
    message = str(e.value)
    assert message.startswith("unknown corruption 'foggy'") and message.count(".") == 1
    assert all(name in message for name in C.ALL)


def _write_mnist_c(root, name, images, labels, split="test"):
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{split}_images.npy", images[..., None])
    np.save(folder / f"{split}_labels.npy", labels)


def test_the_mnist_c_loader_reads_the_published_layout_and_names_bad_files(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8), rng.integers(0, 10, 7)
    _write_mnist_c(tmp_path, "fog", images, labels)
    x, y = C.load_mnist_c(tmp_path, "fog")
    assert x.shape == (7, 28, 28) and np.array_equal(x, images) and np.array_equal(y, labels)
    assert C.mnist_c_names(tmp_path) == ["fog"]
    with pytest.raises(DataError, match="zigzag: no such folder of MNIST-C files .it holds fog"):
        C.load_mnist_c(tmp_path, "zigzag")
    np.save(tmp_path / "fog" / "test_labels.npy", labels[:5])
    with pytest.raises(DataError, match="test_labels.npy: holds 5 labels for 7 images"):
        C.load_mnist_c(tmp_path, "fog")
    np.save(tmp_path / "fog" / "test_images.npy", images[..., None].astype(np.float32))
    with pytest.raises(DataError, match=r"test_images.npy: expected uint8 images .*found float32 \[7, 28, 28, 1\]"):
        C.load_mnist_c(tmp_path, "fog")
    _write_mnist_c(tmp_path, "fog", images[:0], labels[:0])
    with pytest.raises(DataError, match="test_images.npy: holds no images"):
        C.load_mnist_c(tmp_path, "fog")
    (tmp_path / "fog" / "test_images.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="test_images.npy: not a NumPy .npy array") as e:
        C.load_mnist_c(tmp_path, "fog")
    assert "pickle" not in str(e.value)  # NumPy's own advice (load pickles) is never passed on


def test_eval_corruptions_json_report_and_picture(fake_data, tmp_path):
    out = tmp_path / "report"
    proc = run_cli("eval", "robust-real", "--corruptions", "stripe", "translate", "--data-dir", fake_data,
                   "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [c["name"] for c in data["corruptions"]] == ["stripe", "translate"]
    for entry in [data["clean"], *data["corruptions"]]:
        assert entry["total"] == 50 and entry["accuracy"] == entry["correct"] / 50
        assert 0 <= entry["ece"] <= 1 and entry["nll"] >= 0
    assert data["mean"]["accuracy"] == pytest.approx(np.mean([c["accuracy"] for c in data["corruptions"]]))
    assert (data["split"], data["source"], data["seed"], data["dataset"]) == ("test", "generated", 0, "mnist")
    assert data["corruptions"][0]["family"] == "test"
    assert json.loads((out / "report.json").read_text()) == data
    assert "mean of 2" in (out / "report.txt").read_text()
    with Image.open(out / "examples.png") as picture:  # clean, stripe, translate: three rows of 84 + 2 pixels
        assert picture.size[1] == 3 * 86


def test_eval_corruptions_unknown_name_and_mnist_c_files(fake_data, tmp_path):
    proc = run_cli("eval", "robust-real", "--corruptions", "foggy", "--data-dir", fake_data, "--out", tmp_path / "x")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "unknown corruption 'foggy'" in proc.stderr and "canny_edges" in proc.stderr
    assert not (tmp_path / "x").exists()
    digits = load_split("mnist", "test", fake_data)
    images, labels = digits[0].numpy(), digits[1].numpy()
    _write_mnist_c(tmp_path / "mnist_c", "fog", images[:30], labels[:30])
    _write_mnist_c(tmp_path / "mnist_c", "stripe", 255 - images[:20], labels[:20])
    proc = run_cli("eval", "robust-real", "--mnist-c", tmp_path / "mnist_c", "--data-dir", fake_data, "--out",
                   tmp_path / "files", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["source"] == "files" and data["seed"] is None
    assert [(c["name"], c["total"], c["family"]) for c in data["corruptions"]] == [("stripe", 20, "files"),
                                                                                    ("fog", 30, "files")]
    for extra, said in ((["--corruptions", "held-out"], "mnistlab makes the held-out ones"),
                        ([], "no such folder")):
        root = tmp_path / ("mnist_c" if extra else "missing")
        proc = run_cli("eval", "robust-real", "--mnist-c", root, *extra, "--data-dir", fake_data,
                       "--out", tmp_path / "y")
        assert proc.returncode == 1 and said in proc.stderr and "Traceback" not in proc.stderr


def test_an_ensemble_of_models_with_different_validation_splits_is_judged_on_the_test_split(data_dir):
    from mnistlab.inference import load_model
    from mnistlab.robustness import evaluate_corruptions

    v1 = str(Path(__file__).parent / "data" / "v1" / "model.pt")
    assert load_model("robust-real").card.val_size == 5000 != load_model(v1).card.val_size
    report = evaluate_corruptions(["robust-real", v1], ["stripe"], data_dir)
    assert report.results["stripe"].total == 10000
    with pytest.raises(MnistlabError, match="a different validation split"):
        evaluate_corruptions(["robust-real", v1], ["stripe"], data_dir, split="validation")
