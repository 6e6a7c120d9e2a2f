import pytest
import torch

from mnistlab import MnistlabError, RunConfig, from_preset, load_model, train
from mnistlab.checkpoints import load_checkpoint


def _weights(path):
    return load_checkpoint(path)[1]["model_state"]


def test_one_epoch_of_the_seed_cnn_reaches_97_percent(data_dir, tmp_path):
    cfg = RunConfig(model="cnn", epochs=1)
    result = train(cfg, out=tmp_path / "run", data_dir=data_dir, progress=False)
    assert result.test_total == 10000
    assert result.test_accuracy >= 0.97
    # the run folder holds what it promises, and model.pt evaluates to the same count
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"model.pt", "ckpt-epoch001.pt", "metrics.jsonl", "config.json"} <= names
    assert load_model(result.model_path).evaluate(data_dir).correct == result.test_correct


def test_same_seed_same_weights_and_resume_matches_unbroken_run(data_dir, tmp_path):
    cfg = dict(model="mlp", epochs=2, train_limit=3000, checkpoint_every=1, eval_every=1)
    a = train(RunConfig(**cfg), out=tmp_path / "a", data_dir=data_dir, progress=False)
    b = train(RunConfig(**cfg), out=tmp_path / "b", data_dir=data_dir, progress=False)
    resumed = train(resume=tmp_path / "a" / "ckpt-epoch001.pt", out=tmp_path / "c",
                    data_dir=data_dir, progress=False)
    wa, wb, wc = _weights(a.model_path), _weights(b.model_path), _weights(resumed.model_path)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
        assert torch.equal(wa[k], wc[k]), k
    other = train(RunConfig(**cfg, seed=2), out=tmp_path / "d", data_dir=data_dir, progress=False)
    assert not torch.equal(_weights(other.model_path)["net.1.weight"], wa["net.1.weight"])


def test_nan_loss_stops_with_advice(fake_data, tmp_path):
    cfg = RunConfig(model="mlp", epochs=1, lr=1e12, log_interval=1)
    with pytest.raises(MnistlabError, match="try a lower --lr"):
        train(cfg, out=tmp_path / "run", data_dir=fake_data, progress=False)
    assert not (tmp_path / "run" / "model.pt").exists()


def test_validation_split_is_carved_from_training(fake_data, tmp_path):
    cfg = RunConfig(model="mlp", epochs=1, val_size=50, batch_size=10)
    result = train(cfg, out=tmp_path / "run", data_dir=fake_data, progress=False)
    val = [e for e in result.history if e["event"] == "validation"]
    train_steps = [e for e in result.history if e["event"] == "train"]
    assert val and val[0]["total"] == 50
    assert train_steps[-1]["step"] == 15  # 150 training images left, batch 10


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(batch_size=-1), dict(lr=0.0), dict(lr=float("nan")),
                                 dict(optimizer="lbfgs"), dict(val_size=-5)])
def test_absurd_settings_are_refused(bad):
    with pytest.raises(MnistlabError):
        RunConfig(**bad).validate()


def test_presets_and_overrides():
    assert from_preset(None).lr == 0.1 and from_preset(None).batch_size == 64
    assert from_preset("classic", epochs=3, lr=None).epochs == 3
    with pytest.raises(MnistlabError, match="unknown preset"):
        from_preset("nope")


def test_existing_run_folder_is_not_overwritten(fake_data, tmp_path):
    cfg = RunConfig(model="mlp", epochs=1)
    train(cfg, out=tmp_path / "run", data_dir=fake_data, progress=False)
    before = (tmp_path / "run" / "model.pt").read_bytes()
    with pytest.raises(MnistlabError, match="already holds a run"):
        train(cfg, out=tmp_path / "run", data_dir=fake_data, progress=False)
    assert (tmp_path / "run" / "model.pt").read_bytes() == before


def test_fractional_epochs_stop_early_and_schedule_ends(fake_data, tmp_path):
    cfg = RunConfig(model="mlp", epochs=1.5, batch_size=20, optimizer="adam", lr=0.01, schedule="onecycle",
                    log_interval=1)
    result = train(cfg, out=tmp_path / "run", data_dir=fake_data, progress=False)
    steps = [(e["epoch"], e["step"]) for e in result.history if e["event"] == "train"]
    assert steps[-1] == (2, 5)  # 10 steps per epoch, then half of the second
    assert len(steps) == 15


def test_fast_preset_with_augmentation_learns_the_fake_task(fake_data, tmp_path):
    cfg = from_preset("fast", epochs=3, batch_size=20, augment={"degrees": 5, "translate": 0.05})
    result = train(cfg, out=tmp_path / "run", data_dir=fake_data, progress=False)
    assert result.test_accuracy >= 0.9  # squares at 10 positions: easy, but not without learning


def test_unknown_augmentation_is_refused():
    with pytest.raises(MnistlabError, match="--augment takes degrees"):
        RunConfig(augment={"rotate": 3}).validate()


def test_ema_temperature_and_report(fake_data, tmp_path):
    cfg = RunConfig(model="mlp", epochs=2, batch_size=20, optimizer="adam", lr=0.003, ema=0.9, val_size=40,
                    checkpoint_every=1)
    result = train(cfg, out=tmp_path / "run", data_dir=fake_data, progress=False, report=True)
    calib = [e for e in result.history if e["event"] == "calibration"]
    assert len(calib) == 1 and calib[0]["temperature"] > 0
    card, _ = load_checkpoint(result.model_path)
    assert card.temperature == calib[0]["temperature"]
    epochs = [e for e in result.history if e["event"] == "epoch"]
    assert 0 <= epochs[-1]["train_accuracy"] <= 1 and epochs[-1]["train_loss"] > 0
    for name in ("curves.png", "confusion.png", "errors.png", "reliability.png", "report.html"):
        assert (tmp_path / "run" / name).stat().st_size > 1000, name
    page = (tmp_path / "run" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4  # self-contained
    # resuming an EMA run continues the average too: same final weights as unbroken
    again = train(resume=tmp_path / "run" / "ckpt-epoch001.pt", out=tmp_path / "again",
                  data_dir=fake_data, progress=False)
    a, b = _weights(result.model_path), _weights(again.model_path)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_best_recipe_on_a_small_deep_model_learns_real_mnist(data_dir, tmp_path):
    # the best preset's recipe (deep model, augmentation, one-cycle, validation split and
    # temperature) shrunk to seconds; EMA off, as 0.999 needs thousands of steps to forget the start
    cfg = from_preset("best", model_config={"channels": [16, 32, 64]}, epochs=1, train_limit=12000, ema=0.0)
    result = train(cfg, out=tmp_path / "run", data_dir=data_dir, progress=False)
    val = [e for e in result.history if e["event"] == "validation"][-1]
    assert val["total"] == 5000 and val["accuracy"] >= 0.965  # 97.6% when written
    assert result.test_accuracy >= 0.965  # 97.9% when written
    assert 0.2 < load_model(result.model_path).card.temperature < 1  # label smoothing: sharpened after training


def test_the_final_test_pass_is_rescored_with_the_temperature_not_rerun(fake_data, tmp_path, monkeypatch):
    import mnistlab.training as training

    passes = []

    def counting(model, loader, *args):
        passes.append(len(loader.images))
        return shard_logits(model, loader, *args)

    shard_logits = training.shard_logits
    monkeypatch.setattr(training, "shard_logits", counting)
    cfg = RunConfig(model="mlp", epochs=2, batch_size=20, optimizer="adam", lr=0.003, val_size=40)
    result = train(cfg, out=tmp_path / "run", data_dir=fake_data, progress=False)
    tests = [e for e in result.history if e["event"] == "test"]
    assert [e["epoch"] for e in tests] == [2, 2] and tests[0]["temperature"] == 1.0 != tests[1]["temperature"]
    assert tests[0]["correct"] == tests[1]["correct"] and tests[0]["loss"] != tests[1]["loss"]
    assert passes.count(tests[0]["total"]) == 1  # one pass over the test images, scored twice
