"""Fine-tuning a trained model on a small set of one's own: synthetic handwriting, or new classes."""

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

import mnistlab.training.finetune
from mnistlab import load_model
from mnistlab.card import ModelCard
from mnistlab.checkpoints import load_checkpoint, save_checkpoint
from mnistlab.data import own as owndata
from mnistlab.data.outliers import EVAL_FONTS, FONT_DIR, evaluation_sets
from mnistlab.errors import MnistlabError
from mnistlab.heads import head_of
from mnistlab.models import build_model
from mnistlab.ood import reject_threshold, rejected_share
from mnistlab.pretrained import catalogue
from mnistlab.training.finetune import (
    RECIPES,
    REPLAY_POOL,
    Features,
    finetune,
    head_keys,
    pooled_threshold,
    prepare,
)
from mnistlab_testkit.fakes import run_cli as run
from mnistlab_testkit.handwriting import make_handwriting
from mnistlab_testkit.owndatasets import make_folder


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MNISTLAB_CACHE", str(tmp_path / "cache"))
    owndata._open.cache_clear()


@pytest.fixture(scope="module")
def handwriting_finetune(data_dir, tmp_path_factory):
    """(result, folder, lines said) of `robust-real` fine-tuned on 100 drawings of writer 0, who draws in forms the
    shipped model misreads most, 150 more held out; a shorter run than the recipe's."""
    root = tmp_path_factory.mktemp("handwriting")
    make_handwriting(root / "mine" / "train", 10, writer=0, seed=0)
    make_handwriting(root / "mine" / "test", 15, writer=0, seed=1)
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MNISTLAB_CACHE", str(root / "cache"))
        mp.setitem(RECIPES, "few-shot", {**RECIPES["few-shot"], "steps": 80})
        owndata._open.cache_clear()
        r = finetune("robust-real", str(root / "mine"), out=root / "ft", data_dir=data_dir, say=lines.append)
    return r, root, lines


def test_few_shot_handwriting_raises_held_out_accuracy_and_keeps_mnist(handwriting_finetune):
    r, root, lines = handwriting_finetune
    assert r.recipe == "few-shot" and r.init_head == "kept"
    before, after = r.held_out_before[0], r.held_out_after[0]
    assert r.held_out_after[1] == 150 and before < 140 and after >= 145 and after > before
    shipped = catalogue()["robust-real"]
    assert r.base_before == (shipped.test_correct, shipped.test_total)  # the init model's own, from the features
    assert r.base_after[0] >= r.base_before[0] - 50  # MNIST's test set: what it knew is kept
    assert any(line.startswith("held-out images of") and "before" in line for line in lines)
    # the model is saved before its figures on the test set, which the drawing page does not wait for
    saved = next(i for i, line in enumerate(lines) if line.startswith("saved "))
    assert lines[saved + 1].startswith("mnist test set: before")
    card, state = load_checkpoint(root / "ft" / "model.pt")
    assert card.classes == tuple("0123456789") and state["finetune"]["held_out_after"] == list(r.held_out_after)
    summary = json.loads((root / "ft" / "finetune.json").read_text())
    assert summary["recipe"] == "few-shot" and summary["base_before"] == list(r.base_before)
    assert summary["base_after"] == state["finetune"]["base_after"] == list(r.base_after)


def letter_png(char: str, path):
    """A letter, black on white, in FreeSans: a font the outliers never train on (fonts-freefont-ttf)."""
    font = FONT_DIR / EVAL_FONTS[0]
    if not font.is_file():
        pytest.skip("no held-out font: install Debian's fonts-freefont-ttf")
    img = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(img).text((100, 100), char, font=ImageFont.truetype(str(font), 150), fill=0, anchor="mm")
    img.save(path)
    return path


def test_a_fine_tuned_model_still_says_not_a_digit(handwriting_finetune, data_dir, tmp_path):
    r, root, lines = handwriting_finetune
    card, _ = load_checkpoint(root / "ft" / "model.pt")
    assert (card.head, card.reject_score) == ("softmax", "energy") and card.reject_threshold == r.reject.threshold
    kept = json.loads((root / "ft" / "finetune.json").read_text())["reject"]
    assert kept["threshold"] == card.reject_threshold and kept["validation_digits"] == 5000
    assert kept["held_out_rejected"] <= 0.02 and kept["outliers_rejected"] >= 0.9
    assert any(line.startswith("'not a digit' below energy") and "validation outliers" in line for line in lines)
    model, shipped = load_model(root / "ft" / "model.pt"), load_model("robust-real")
    h = model.predict(letter_png("H", tmp_path / "H.png"))
    assert h.rejected and h.why.startswith("not a digit"), h.ood_score
    # 576 letters in FreeFont's 12 fonts: the fine-tuned model still rejects 90% of them (issue 29's goal for a
    # fine-tuned model), and nearly as many as the shipped one
    letters = evaluation_sets(data_dir=data_dir)["letters, held-out fonts"]
    assert len(letters) >= 500
    share = {m: rejected_share(m.ood_scores(letters), m.card.reject_threshold) for m in (model, shipped)}
    assert share[model] >= max(0.9, share[shipped] - 0.03), share
    images, labels = owndata.load_split(str(root / "mine"), "test")  # and it still reads your writing, loaded
    assert (model.predict_proba(images).argmax(1) == labels.numpy()).sum() >= 145
    assert rejected_share(model.ood_scores(images), card.reject_threshold) <= 0.02


def test_the_threshold_pool_weighs_your_writing_by_how_much_of_it_there_is():
    validation = np.linspace(1, 10, 5000)
    few = np.full(30, 8.0)
    few[0] = -50.0  # one odd drawing among a few dozen is rejected; it does not pull the threshold down
    assert pooled_threshold(few, validation) > 1
    many = np.linspace(-10, 0, 200)  # 100 or more weigh as much as the validation digits: 98% of them kept
    t = pooled_threshold(many, validation)
    assert t < validation.min() and rejected_share(many, t) <= 0.02
    assert pooled_threshold(few, np.zeros(0)) == reject_threshold(few) == -50  # either alone
    assert pooled_threshold(np.zeros(0), validation) == reject_threshold(validation)


def test_a_writer_whose_digits_look_like_non_digits_cannot_drag_the_threshold_below_the_outliers():
    from mnistlab.training.finetune import OUTLIER_FLOOR, _refit, _scores

    card = ModelCard(model="mlp", dataset="mnist", classes=tuple("0123456789"), mean=0.1307, std=0.3081,
                     val_size=5000, head="softmax", reject_score="energy", reject_threshold=6.0)

    def logits_of(v):  # one logit raised by v: the energy score grows with v
        out = torch.zeros(len(v), 10)
        out[:, 0] = torch.as_tensor(v, dtype=torch.float32)
        return out

    sets = {5000: np.full(5000, 5.0), 2000: np.linspace(-5, 1, 2000), 100: np.full(100, -5.0)}
    images = {n: torch.zeros(n, 28, 28, dtype=torch.uint8) for n in sets}
    outliers = (images[2000].numpy(), images[100].numpy())
    learnt = _scores(card, logits_of(sets[2000]))
    for mine, floor_binds in ((np.full(500, 0.0), True), (np.full(500, 5.0), False)):
        r = _refit(card, lambda x, cache=False: logits_of(sets[len(x)]), logits_of(mine), (images[5000], None),
                   outliers, keep=0.984)
        assert r.floored == floor_binds
        if floor_binds:  # 500 drawings weigh as much as the validation digits and would pull it to theirs
            assert r.threshold == pytest.approx(np.quantile(learnt, OUTLIER_FLOOR)) and r.held_out_rejected == 1.0
        else:
            assert r.threshold > np.quantile(learnt, OUTLIER_FLOOR) and r.held_out_rejected <= 0.02
        assert r.outliers_rejected == 1.0


def test_a_new_head_has_no_threshold_from_before(tmp_path, monkeypatch):
    monkeypatch.setitem(RECIPES, "many", {**RECIPES["many"], "min_steps": 20})
    root = make_folder(tmp_path / "shapes", {"ring": 12, "bar": 12, "seven": 12})
    lines: list[str] = []
    r = finetune("robust-real", str(root), out=tmp_path / "ft", say=lines.append)
    card, _ = load_checkpoint(tmp_path / "ft" / "model.pt")
    assert r.init_head == "new" and r.reject is None
    assert (card.head, card.reject_score, card.reject_threshold) == ("softmax", "", None)
    assert any(line.startswith("note: a new head has no 'not a digit' threshold from robust-real") for line in lines)


# without a validation split, the threshold is fitted on your held-out images alone: it may fall, not rise
@pytest.mark.parametrize("head, score, val_size", [("sigmoid", "energy", 5000), ("none-class", "not-none", 0)])
def test_the_head_and_its_outlier_exposure_are_kept(head, score, val_size, data_dir, tmp_path, monkeypatch):
    card = ModelCard(model="mlp", dataset="mnist", classes=tuple("0123456789"), mean=0.1307, std=0.3081,
                     val_size=val_size, head=head, reject_score=score, reject_threshold=0.5)
    torch.manual_seed(0)
    save_checkpoint(card, {"model_state": build_model("mlp", card.outputs).state_dict()}, tmp_path / "init.pt")
    make_handwriting(tmp_path / "mine" / "train", 3, seed=0)
    make_handwriting(tmp_path / "mine" / "test", 1, seed=1)
    monkeypatch.setitem(RECIPES, "few-shot", {**RECIPES["few-shot"], "steps": 20})
    monkeypatch.setattr(mnistlab.training.finetune, "OUTLIERS", 200)
    monkeypatch.setattr(mnistlab.training.finetune, "VALIDATION_OUTLIERS", 100)
    kind = type(head_of(head))
    losses, loss = [], kind.loss

    def spy(self, logits, y, label_smoothing=0.0, outlier_weight=0.0):
        losses.append((self.name, outlier_weight, int((y < 0).sum()), len(y), logits.shape[1]))
        return loss(self, logits, y, label_smoothing, outlier_weight)

    monkeypatch.setattr(kind, "loss", spy)
    r = finetune(str(tmp_path / "init.pt"), str(tmp_path / "mine"), out=tmp_path / "ft", data_dir=data_dir,
                 say=lambda s: None)
    # 64 of your 30 drawings' augmented copies, 64 replayed, and as many outliers; a none-class head's 11th output kept
    assert losses == [(head, 0.5, 128, 256, 10 + (head == "none-class"))] * 20
    assert r.init_head == "kept" and r.model_path == tmp_path / "ft" / "model.pt"
    saved, state = load_checkpoint(tmp_path / "ft" / "model.pt")
    assert (saved.head, saved.reject_score) == (head, score) and saved.reject_threshold == r.reject.threshold
    assert saved.outputs == card.outputs and state["finetune"]["init_head"] == "kept"
    assert r.reject.validation_digits == val_size and r.reject.outliers_rejected is not None
    assert val_size or r.reject.threshold <= card.reject_threshold
    assert load_model(tmp_path / "ft" / "model.pt").predict_proba(np.zeros((2, 28, 28), np.uint8)).shape == (2, 10)


@pytest.fixture
def small_init(data_dir, tmp_path, monkeypatch):
    """(init.pt, its weights, features computed: a list of sizes) for short fine-tunes of a bn-cnn with outliers."""
    card = ModelCard(model="bn-cnn", dataset="mnist", classes=tuple("0123456789"), mean=0.1307, std=0.3081,
                     val_size=5000, head="softmax", reject_score="energy", reject_threshold=-5.0)
    torch.manual_seed(0)
    init = build_model("bn-cnn", 10).state_dict()
    save_checkpoint(card, {"model_state": init}, tmp_path / "init.pt")
    make_handwriting(tmp_path / "mine" / "train", 3, seed=0)
    make_handwriting(tmp_path / "mine" / "test", 1, seed=1)
    monkeypatch.setenv("MNISTLAB_DATA", str(data_dir))
    monkeypatch.setitem(RECIPES, "few-shot", {**RECIPES["few-shot"], "steps": 20})
    monkeypatch.setattr(mnistlab.training.finetune, "OUTLIERS", 200)
    monkeypatch.setattr(mnistlab.training.finetune, "VALIDATION_OUTLIERS", 100)
    sizes, of = [], Features.of
    monkeypatch.setattr(Features, "of", lambda self, x: sizes.append(len(x)) or of(self, x))
    return tmp_path / "init.pt", init, sizes


def test_few_shot_trains_the_classifier_alone_and_the_next_run_reads_the_features_from_the_cache(small_init,
                                                                                                   tmp_path):
    path, init, sizes = small_init
    runs = [finetune(str(path), str(tmp_path / "mine"), out=tmp_path / f"ft{i}", say=lambda s: None) for i in range(2)]
    first, second = sizes[:sizes.index(1, 1)], sizes[sizes.index(1, 1):]  # each run probes its width with one image
    # the first run computes the features of MNIST's test and validation digits, the replay pool and the outliers
    assert {10_000, 5000, REPLAY_POOL, 200, 100} <= set(first)
    assert max(second) <= 16 * 30  # the next, those of your drawings alone: 16 augmented copies of your 30
    assert runs[0].held_out_after == runs[1].held_out_after and runs[0].reject == runs[1].reject
    _, state = load_checkpoint(tmp_path / "ft0" / "model.pt")
    learnt = {k for k in init if not torch.equal(init[k], state["model_state"][k])}
    assert learnt and all(k.startswith("classifier.") for k in learnt)  # the rest of the model is as it was
    sizes.clear()  # a fine-tune of the fine-tuned model (the page's next click) shares its features: no new ones
    finetune(str(tmp_path / "ft0" / "model.pt"), str(tmp_path / "mine"), out=tmp_path / "ft2", say=lambda s: None)
    assert max(sizes) <= 16 * 30


def test_prepare_leaves_a_fine_tune_only_your_images_to_compute(small_init, tmp_path):
    path, _, sizes = small_init
    prepare(str(path))
    assert {10_000, 5000, REPLAY_POOL, 200, 100} <= set(sizes)
    sizes.clear()
    finetune(str(path), str(tmp_path / "mine"), out=tmp_path / "ft", say=lambda s: None)
    assert max(sizes) <= 16 * 30


def test_new_classes_get_a_new_head(tmp_path):
    root = make_folder(tmp_path / "shapes", {"ring": 12, "bar": 12, "seven": 12})
    r = finetune("classic-cnn", str(root), out=tmp_path / "ft", say=lambda s: None)
    assert r.init_head == "new" and r.held_out_before is None and r.base_after is None
    assert r.held_out_after[0] >= r.held_out_after[1] - 1
    card, _ = load_checkpoint(tmp_path / "ft" / "model.pt")
    assert card.classes == ("bar", "ring", "seven") and card.model == "cnn"


def test_a_kept_head_needs_the_same_classes(tmp_path):
    root = make_folder(tmp_path / "shapes", {"ring": 3, "bar": 3})
    with pytest.raises(MnistlabError, match=r"--init-head keep: .*\(bar, ring\) are not among robust-real.s \(0, 1, 2"):
        finetune("robust-real", str(root), out=tmp_path / "ft", init_head="keep", say=lambda s: None)
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
    proc = run("train", "--init", "robust-real", "--dataset", root, "--lr", "0.1", "--out", tmp_path / "x", env=env)
    assert proc.returncode == 1 and "--lr does not apply to --init" in proc.stderr
    proc = run("train", "--init", "robust-real", "--out", tmp_path / "x")
    assert proc.returncode == 1 and "give --dataset PATH too" in proc.stderr
    proc = run("train", "--init-head", "new", "--dataset", root, "--out", tmp_path / "x")
    assert proc.returncode == 1 and "give --init MODEL too" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_blend_moves_every_float_weight_back_towards_the_start_and_leaves_counters():
    import torch

    from mnistlab.training.finetune import _blend

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
