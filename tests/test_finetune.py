"""Fine-tuning a trained model on a small set of one's own: synthetic handwriting, or new classes."""

import json

import pytest

from fakes import run_cli as run
from handwriting import make_handwriting
from mnistlab import owndata
from mnistlab.checkpoints import load_checkpoint
from mnistlab.errors import MnistlabError
from mnistlab.finetune import RECIPES, finetune, head_keys
from owndatasets import make_folder


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MNISTLAB_CACHE", str(tmp_path / "cache"))
    owndata._open.cache_clear()


def test_few_shot_handwriting_raises_held_out_accuracy_and_keeps_mnist(data_dir, tmp_path, monkeypatch):
    # writer 0 draws in forms the shipped model misreads (83% on 500 of them); a shorter run than the recipe's
    monkeypatch.setitem(RECIPES, "few-shot", {**RECIPES["few-shot"], "steps": 80})
    make_handwriting(tmp_path / "mine" / "train", 10, writer=0, seed=0)
    make_handwriting(tmp_path / "mine" / "test", 15, writer=0, seed=1)
    lines = []
    r = finetune("fast", str(tmp_path / "mine"), out=tmp_path / "ft", data_dir=data_dir, say=lines.append)
    assert r.recipe == "few-shot" and r.head == "kept"
    before, after = r.held_out_before[0], r.held_out_after[0]
    assert r.held_out_after[1] == 150 and before < 140 and after >= 145 and after > before
    assert r.base_after[0] >= r.base_before[0] - 50  # MNIST's test set: what it knew is kept
    assert any(line.startswith("held-out images of") and "before" in line for line in lines)
    card, state = load_checkpoint(tmp_path / "ft" / "model.pt")
    assert card.classes == tuple("0123456789") and state["finetune"]["held_out_after"] == list(r.held_out_after)
    assert json.loads((tmp_path / "ft" / "finetune.json").read_text())["recipe"] == "few-shot"


def test_new_classes_get_a_new_head(tmp_path):
    root = make_folder(tmp_path / "shapes", {"ring": 12, "bar": 12, "seven": 12})
    r = finetune("classic-cnn", str(root), out=tmp_path / "ft", say=lambda s: None)
    assert r.head == "new" and r.held_out_before is None and r.base_after is None
    assert r.held_out_after[0] >= r.held_out_after[1] - 1
    card, _ = load_checkpoint(tmp_path / "ft" / "model.pt")
    assert card.classes == ("bar", "ring", "seven") and card.model == "cnn"


def test_a_kept_head_needs_the_same_classes(tmp_path):
    root = make_folder(tmp_path / "shapes", {"ring": 3, "bar": 3})
    with pytest.raises(MnistlabError, match=r"--init-head keep: .*\(bar, ring\) are not among fast.s \(0, 1, 2"):
        finetune("fast", str(root), out=tmp_path / "ft", head="keep", say=lambda s: None)
    assert not (tmp_path / "ft").exists()


@pytest.mark.parametrize("model, config, keys", [
    ("bn-cnn", {}, {"classifier.2.weight", "classifier.2.bias"}),
    ("simple", {"kernel": 7}, {"classifier.0.weight", "classifier.1.weight", "classifier.1.bias",
                               "classifier.1.running_mean", "classifier.1.running_var"}),
    ("mlp", {}, {"net.9.weight", "net.9.bias"}),
])
def test_head_keys(model, config, keys):
    assert head_keys(model, config, 10) == keys


def test_cli_fine_tune_and_its_refusals(tmp_path):
    root = make_folder(tmp_path / "shapes", {"ring": 12, "bar": 12, "seven": 12})
    env = {"MNISTLAB_CACHE": str(tmp_path / "c")}
    proc = run("train", "--init", "classic-cnn", "--dataset", root, "--out", tmp_path / "ft", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "a new head for 3 classes" in proc.stdout and "before - (new head), after" in proc.stdout
    assert (tmp_path / "ft" / "model.pt").is_file()
    proc = run("train", "--init", "fast", "--dataset", root, "--lr", "0.1", "--out", tmp_path / "x", env=env)
    assert proc.returncode == 1 and "--lr does not apply to --init" in proc.stderr
    proc = run("train", "--init", "fast", "--out", tmp_path / "x")
    assert proc.returncode == 1 and "give --dataset PATH too" in proc.stderr
    proc = run("train", "--init-head", "new", "--dataset", root, "--out", tmp_path / "x")
    assert proc.returncode == 1 and "give --init MODEL too" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_blend_moves_every_float_weight_back_towards_the_start_and_leaves_counters():
    import torch

    from mnistlab.finetune import _blend

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    start = {k: v.detach().clone() for k, v in module.state_dict().items()}
    with torch.no_grad():
        for v in module.state_dict().values():
            v.add_(1.0 if v.is_floating_point() else 5)
    _blend(module, start, 0.7)
    for k, v in module.state_dict().items():
        want = start[k] + 0.7 if v.is_floating_point() else start[k] + 5  # the counter stays as learnt
        torch.testing.assert_close(v, want)
