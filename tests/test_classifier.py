import json

import pytest
import torch

from fakes import run_cli
from mnistlab import MnistlabError, load_model, load_split
from mnistlab.augment import TTA_VIEWS, tta_views
from mnistlab.classifier import evaluate_files
from mnistlab.cli import TTA_NAMES


def test_tta_averages_the_probabilities_of_the_views(trained_cnn, data_dir):
    clf = load_model(trained_cnn)
    images = load_split("mnist", train=False, data_dir=data_dir)[0][:200]
    for name in ("shift", "rotate"):
        by_hand = torch.stack([clf.predict_proba(v) for v in tta_views(images, name)]).mean(0)
        torch.testing.assert_close(clf.predict_proba(images, tta=name), by_hand)
    assert not torch.allclose(clf.predict_proba(images, tta="zoom"), clf.predict_proba(images))


def test_tta_evaluation_on_the_whole_test_set(trained_cnn, data_dir):
    clf = load_model(trained_cnn)
    plain, shifted = clf.evaluate(data_dir), clf.evaluate(data_dir, tta="shift")
    assert shifted.total == 10000 and shifted.loss != plain.loss
    # a one-pixel shift barely changes a digit: accuracy stays within half a point
    assert abs(shifted.correct - plain.correct) < 50, (plain.correct, shifted.correct)
    _, _, ensemble_of_one = evaluate_files([trained_cnn], data_dir, tta="shift")
    assert torch.equal(ensemble_of_one.confusion, shifted.confusion)
    with pytest.raises(MnistlabError, match="unknown test-time augmentation"):
        clf.evaluate(data_dir, tta="mirror")


def test_eval_command_takes_tta(trained_cnn, data_dir):
    assert TTA_NAMES == tuple(TTA_VIEWS)  # the CLI's choices spell out augment's names
    report = json.loads(run_cli("eval", trained_cnn, "--tta", "rotate", "--json", "--data-dir", data_dir).stdout)
    assert report["tta"] == "rotate" and report["total"] == 10000
    expected = load_model(trained_cnn).evaluate(data_dir, tta="rotate")
    assert report["correct"] == expected.correct
    proc = run_cli("eval", trained_cnn, "--tta", "mirror", "--data-dir", data_dir)
    assert proc.returncode == 2 and "invalid choice: 'mirror'" in proc.stderr


def test_tta_gives_an_onnx_file_the_same_views(trained_cnn, data_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    from mnistlab.classifier import split_probabilities
    from mnistlab.export import export

    onnx_path = export(trained_cnn, "onnx", tmp_path / "m.onnx")
    _, ref, labels = split_probabilities(trained_cnn, data_dir, "test", tta="shift")
    _, got, _ = split_probabilities(onnx_path, data_dir, "test", tta="shift")
    assert (ref - got).abs().max() < 1e-5
    _, plain, _ = split_probabilities(onnx_path, data_dir, "test")
    assert (plain - got).abs().max() > 1e-3  # the views were applied, not just the image
