import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnistlab import CheckpointError, MnistlabError, load_model, load_split
from mnistlab.data.augment import tta_views
from mnistlab.evaluation import evaluate, evaluate_files, split_probabilities
from mnistlab.inference import Classifier, as_pixels
from mnistlab_testkit.fakes import run_cli

V1 = Path(__file__).parent / "data" / "v1"  # written by mnistlab 0.1 (format 1; the model was then called "fast")


def test_one_interface_uint8_in_probabilities_out(trained_cnn, data_dir):
    model = load_model(trained_cnn)
    images = load_split("mnist", "test", data_dir)[0][:300]
    probs = model.predict_proba(images.numpy())
    assert probs.shape == (300, 10) and probs.dtype == np.float64
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-12)
    # a torch tensor gives the same numbers as the uint8 array; a list of lists of floats too
    np.testing.assert_array_equal(model.predict_proba(images), probs)
    np.testing.assert_array_equal(model.predict_proba(images.float().tolist()), probs)
    # a strided view (a mirror) is taken as the copy it equals
    np.testing.assert_array_equal(model.predict_proba(images.numpy()[:, :, ::-1]),
                                  model.predict_proba(images.flip(-1)))
    # one image at a time (a list, a 28x28 array): batching changes nothing but rounding
    np.testing.assert_allclose(model.predict_proba(images[0].tolist())[0], probs[0], rtol=0, atol=1e-6)
    one_by_one = np.stack([model.predict_pixels(x).probabilities for x in images[:20].numpy()])
    np.testing.assert_allclose(one_by_one, probs[:20], rtol=0, atol=1e-6)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 27, 28)), "shape \\[N, 28, 28\\]"),
    (np.full((28, 28), 300.0), "between 0 and 255"),
    (np.full((28, 28), np.nan), "between 0 and 255"),
    (np.array([["a"] * 28] * 28), "numbers"),
])
def test_bad_pixels_are_one_sentence(bad, message):
    with pytest.raises(MnistlabError, match=message):
        as_pixels(bad)


def test_tta_averages_the_probabilities_of_the_views(trained_cnn, data_dir):
    clf = load_model(trained_cnn)
    images = load_split("mnist", "test", data_dir)[0][:200].numpy()
    for name in ("shift", "rotate"):
        by_hand = np.mean([clf.predict_proba(v) for v in tta_views(images, name)], axis=0)
        np.testing.assert_allclose(clf.predict_proba(images, tta=name), by_hand, rtol=0, atol=1e-15)
    assert not np.allclose(clf.predict_proba(images, tta="zoom"), clf.predict_proba(images))


def test_tta_evaluation_on_the_whole_test_set(trained_cnn, data_dir):
    clf = load_model(trained_cnn)
    plain, shifted = evaluate(clf, data_dir), evaluate(clf, data_dir, tta="shift")
    assert shifted.total == 10000 and shifted.loss != plain.loss
    # a one-pixel shift barely changes a digit: accuracy stays within half a point
    assert abs(shifted.correct - plain.correct) < 50, (plain.correct, shifted.correct)
    _, _, ensemble_of_one = evaluate_files([trained_cnn], data_dir, tta="shift")
    assert torch.equal(ensemble_of_one.confusion, shifted.confusion)
    with pytest.raises(MnistlabError, match="unknown test-time augmentation"):
        evaluate(clf, data_dir, tta="mirror")


def test_eval_command_takes_tta(trained_cnn, data_dir):
    report = json.loads(run_cli("eval", trained_cnn, "--tta", "rotate", "--json", "--data-dir", data_dir).stdout)
    assert report["tta"] == "rotate" and report["total"] == 10000
    expected = evaluate(load_model(trained_cnn), data_dir, tta="rotate")
    assert report["correct"] == expected.correct
    proc = run_cli("eval", trained_cnn, "--tta", "mirror", "--data-dir", data_dir)
    assert proc.returncode == 2 and "invalid choice: 'mirror'" in proc.stderr
    proc = run_cli("eval", trained_cnn, "--tta", "flip", "--data-dir", data_dir)  # a mirrored 2 is no digit
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "--tta flip mirrors each image, which turns some mnist symbols into others" in proc.stderr


def test_tta_flip_averages_an_image_and_its_mirror_for_clothes(trained_cnn, data_dir):
    clf = load_model(trained_cnn)
    clf.card = dataclasses.replace(clf.card, dataset="fashion-mnist")  # as if it had learnt clothes
    images = load_split("mnist", "test", data_dir)[0][:100].numpy()
    by_hand = (clf.predict_proba(images) + clf.predict_proba(images[:, :, ::-1])) / 2
    np.testing.assert_allclose(clf.predict_proba(images, tta="flip"), by_hand, rtol=0, atol=1e-15)


def test_an_onnx_file_is_the_same_classifier(trained_cnn, data_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    from mnistlab.export import export

    onnx_model = load_model(export(trained_cnn, "onnx", tmp_path / "m.onnx"))
    torch_model = load_model(trained_cnn)
    assert isinstance(onnx_model, Classifier) and onnx_model.card == torch_model.card
    assert "ONNX Runtime" in onnx_model.name and "PyTorch" in torch_model.name
    _, ref, labels = split_probabilities(torch_model, data_dir, "test", tta="shift")
    _, got, _ = split_probabilities(onnx_model, data_dir, "test", tta="shift")
    assert (ref - got).abs().max() < 1e-5
    _, plain, _ = split_probabilities(onnx_model, data_dir, "test")
    assert (plain - got).abs().max() > 1e-3  # the views were applied, not just the image


def test_files_of_the_first_format_still_load_and_give_the_same_numbers(data_dir, tmp_path):
    expected = json.loads((V1 / "expected.json").read_text())
    images = load_split("mnist", "test", data_dir)[0][:20]
    for name in ("model.pt", "ckpt-epoch001.pt", "model.onnx"):
        if name.endswith(".onnx"):
            pytest.importorskip("onnxruntime")
        model = load_model(V1 / name)
        assert model.card.model == "bn-cnn" and model.card.val_size == 500, name  # renamed from "fast"
        if name != "ckpt-epoch001.pt":  # the checkpoint was taken before the temperature was fitted
            assert model.card.temperature == pytest.approx(0.849, abs=1e-3)
            np.testing.assert_allclose(model.predict_proba(images), expected["probabilities"], atol=1e-6)
    assert evaluate(load_model(V1 / "model.pt"), data_dir).correct == expected["test_correct"]
    # an old run resumes under the new model name (the run was 1 epoch: extend it by one)
    shutil.copy(V1 / "ckpt-epoch001.pt", tmp_path / "old.pt")
    proc = run_cli("train", "--resume", tmp_path / "old.pt", "--epochs", "2", "--data-dir", data_dir,
                   "--no-report", "--out", tmp_path / "resumed")
    assert proc.returncode == 0, proc.stderr
    assert load_model(tmp_path / "resumed" / "model.pt").card.model == "bn-cnn"


@pytest.mark.parametrize("card, message", [
    ({"classes": ["0", "1"]}, "weights do not fit"),  # a 2-class model: not these weights
    ({"normalization": ["a", 1]}, "normalisation is not two numbers"),
    ({"normalization": [0.1, 0.0]}, "normalisation std is 0.0, outside"),
    ({"temperature": 0.0}, "temperature is 0.0, outside"),
    ({"model_config": {"widths": [-3]}}, "cannot rebuild its model"),
    ({"model_config": {"nosuch": 1}}, "cannot rebuild its model"),
])
def test_checkpoints_that_load_but_are_wrong_inside(tmp_path, card, message):
    from mnistlab.card import ModelCard
    from mnistlab.checkpoints import save_checkpoint
    from mnistlab.models import build_model

    good = ModelCard(model="mlp", dataset="mnist", classes=tuple("0123456789"), mean=0.1307, std=0.3081)
    state = {"model_state": build_model("mlp").state_dict()}
    save_checkpoint(good, state, tmp_path / "c.pt")
    torch.save({**torch.load(tmp_path / "c.pt"), "card": {**good.to_dict(), **card}}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=message):
        load_model(tmp_path / "c.pt")


@pytest.fixture(scope="module")
def digit_files(data_dir, tmp_path_factory):
    """Ten test digits as a person might send them: big, dark ink on white, various formats."""
    x, y = load_split("mnist", "test", data_dir=data_dir, download=False)
    folder = tmp_path_factory.mktemp("digits")
    for i in range(10):
        img = Image.fromarray(255 - x[i].numpy()).resize((168, 168), Image.Resampling.BICUBIC)
        img.save(folder / f"{i}_label{int(y[i])}.{['png', 'jpg', 'bmp', 'webp', 'gif'][i % 5]}")
    return folder


def test_predictor_returns_the_whole_distribution(trained_cnn, digit_files):
    predictor = load_model(trained_cnn)
    right = 0
    for f in sorted(digit_files.iterdir()):
        pred = predictor.predict(f)
        assert pred.probabilities.shape == (10,) and abs(pred.probabilities.sum() - 1) < 1e-5
        assert pred.top(3)[0] == (pred.label, pred.confidence)
        assert pred.preprocessed.shape == (28, 28)
        right += pred.label == f.stem.split("label")[1]
    assert right >= 9


def test_predict_pixels_checks_its_input(trained_cnn):
    predictor = load_model(trained_cnn)
    with pytest.raises(MnistlabError, match="28x28"):
        predictor.predict_pixels(np.zeros((27, 28)))
    with pytest.raises(MnistlabError, match="between 0 and 255"):
        predictor.predict_pixels(np.full((28, 28), 300.0))


def test_predict_cli_folder_json_and_saved_inputs(trained_cnn, digit_files, tmp_path):
    proc = run_cli("predict", trained_cnn, digit_files, "--json", "--save-preprocessed", tmp_path / "seen")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 10 and all(len(r["probabilities"]) == 10 for r in rows)
    saved = sorted((tmp_path / "seen").iterdir())
    assert len(saved) == 10 and Image.open(saved[0]).size == (28, 28)


def test_saved_inputs_of_the_same_name_in_two_folders_are_both_kept(trained_cnn, digit_files, tmp_path):
    one, two = sorted(digit_files.glob("*.png"))[:2]
    for folder, image in (("a", one), ("b", two)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.png").write_bytes(image.read_bytes())
    proc = run_cli("predict", trained_cnn, tmp_path / "a" / "x.png", tmp_path / "b" / "x.png",
                   "--save-preprocessed", tmp_path / "seen")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "seen").iterdir()) == ["a-x.png", "b-x.png"]
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "seen" / "a-x.png")),
                              np.asarray(Image.open(tmp_path / "seen" / "b-x.png")))
    proc = run_cli("predict", trained_cnn, one, "--save-preprocessed", one)
    assert proc.returncode == 1 and "is a file; --save-preprocessed takes a folder" in proc.stderr


def test_predict_cli_errors_per_image(trained_cnn, digit_files, tmp_path):
    (tmp_path / "blank.png").write_bytes(b"")
    Image.new("L", (50, 50), 255).save(tmp_path / "white.png")
    one = next(digit_files.glob("*.png"))
    proc = run_cli("predict", trained_cnn, one, tmp_path / "blank.png", tmp_path / "white.png", tmp_path / "gone.png")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "blank.png: the file is empty" in proc.stderr
    assert "white.png: no digit found" in proc.stderr
    assert "gone.png: no such file" in proc.stderr
    assert proc.stdout.count("top:") == 1  # the good image still got its answer


def test_predict_on_damaged_files_says_one_sentence_each(trained_cnn, tmp_path):
    import io

    from mnistlab_testkit.fuzzing import digit

    buf = io.BytesIO()
    digit(200).save(buf, format="TIFF", compression="tiff_lzw")  # the LZW strip sits at bytes 8 to 457
    raw = bytearray(buf.getvalue())
    raw[200:240] = bytes(40)  # libtiff itself complains of this one on stderr, before our sentence
    (tmp_path / "damaged.tif").write_bytes(bytes(raw))
    (tmp_path / "cut.tif").write_bytes(buf.getvalue()[:-300])
    digit(200).save(tmp_path / "good.png")
    proc = run_cli("predict", trained_cnn, tmp_path)
    assert proc.returncode == 1 and proc.stdout.count("top:") == 1
    lines = proc.stderr.strip().splitlines()
    assert all(line.startswith("mnistlab: ") for line in lines), proc.stderr
    assert any("cut.tif" in line for line in lines) and lines[-1] == "mnistlab: 2 of 3 images could not be classified."


def test_saliency_is_faithful_by_the_deletion_test(data_dir):
    from mnistlab_testkit.explaining import deletion_test

    model = load_model("classic-cnn")
    images = load_split("mnist", "test", data_dir)[0][:200].numpy()
    salient, random_ = deletion_test(model, images)
    assert salient > 0.1 and salient > 4 * random_, (salient, random_)


def test_explain_gives_logits_that_make_the_probabilities(data_dir):
    from mnistlab.lesson import softmax

    model = load_model("robust-real")
    img = load_split("mnist", "test", data_dir)[0][0].numpy()
    plain, why = model.predict_pixels(img), model.predict_pixels(img, explain=True)
    assert plain.logits is None and "saliency" not in plain.to_dict()
    np.testing.assert_allclose(softmax(why.logits / why.temperature), why.probabilities, rtol=1e-9)
    np.testing.assert_allclose(why.probabilities, plain.probabilities, atol=1e-5)
    d = why.to_dict()
    assert d["runner_up"]["class"] == why.top(2)[1][0] != d["prediction"]
    assert np.asarray(d["saliency"]).shape == (28, 28) and len(d["logits"]) == 10


def test_a_close_call_names_the_two_digits_and_a_rejection_does_not():
    from mnistlab.inference import UNSURE_BELOW, Prediction

    def said(probs, score=2.0):
        return Prediction(np.array(probs), tuple("0123456789"), np.zeros((28, 28), np.uint8), ood_score=score,
                          reject_score="energy", reject_threshold=1.0)

    def probs(first, seventh):  # the rest on 0
        return [1 - first - seventh, first, 0, 0, 0, 0, 0, seventh, 0, 0]

    torn = said(probs(UNSURE_BELOW - 0.01, 1 - UNSURE_BELOW))
    assert torn.unsure and torn.answer == "1 or 7?" and torn.to_dict()["answer"] == "1 or 7?"
    sure = said(probs(UNSURE_BELOW + 0.01, 1 - UNSURE_BELOW - 0.01))
    assert not sure.unsure and sure.answer == "1"
    rejected = said(torn.probabilities, score=0.5)
    assert not rejected.unsure and rejected.answer == "not a digit"


def test_predict_says_a_close_call_as_the_two_digits(close_call_png):
    path, pred = close_call_png
    out = run_cli("predict", path).stdout
    (first, p), (second, q) = pred.top(2)
    assert f"{path}: {first} or {second}? ({first} {100 * p:.1f}%, {second} {100 * q:.1f}%)" in out
    assert json.loads(run_cli("predict", path, "--json").stdout)["answer"] == f"{first} or {second}?"
