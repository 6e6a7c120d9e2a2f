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
    import mnistlab.training.loop as training

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


def test_resume_extends_a_constant_schedule_run_bit_for_bit(fake_data, tmp_path):
    flags = dict(model="mlp", batch_size=20, log_interval=1)
    one = train(RunConfig(**flags, epochs=1), out=tmp_path / "one", data_dir=fake_data, progress=False)
    two = train(RunConfig(**flags, epochs=2), out=tmp_path / "two", data_dir=fake_data, progress=False)
    extended = train(resume=tmp_path / "one" / "ckpt-epoch001.pt", changes={"epochs": 2}, out=tmp_path / "ext",
                     data_dir=fake_data, progress=False)
    a, b = _weights(two.model_path), _weights(extended.model_path)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(_weights(one.model_path)["net.1.weight"], a["net.1.weight"])  # it did train on
    steps = [e["steps"] for e in extended.history if e["event"] == "epoch"]
    assert steps == [10, 20]


@pytest.mark.parametrize("changes, message", [
    ({"lr": 0.01}, "--lr 0.01 differs from the resumed run's 0.1"),
    ({"model": "cnn"}, "--model cnn differs"),
    ({"augment": {"degrees": 5}}, "--augment {\"degrees\": 5} differs"),
    ({"epochs": 0.5}, "--epochs 0.5 ends before"),
])
def test_resume_refuses_changes_to_what_the_run_learns(fake_data, tmp_path, changes, message):
    train(RunConfig(model="mlp", batch_size=20, epochs=1), out=tmp_path / "run", data_dir=fake_data,
          progress=False)
    with pytest.raises(MnistlabError, match=message.replace("{", "\\{").replace("}", "\\}")):
        train(resume=tmp_path / "run" / "ckpt-epoch001.pt", changes=changes, out=tmp_path / "other",
              data_dir=fake_data, progress=False)
    # what may change on resume changes: a different --eval-every is taken, not ignored
    done = train(resume=tmp_path / "run" / "ckpt-epoch001.pt", changes={"eval_every": 3, "lr": 0.1},
                 out=tmp_path / "ok", data_dir=fake_data, progress=False)
    assert RunConfig.from_dict(load_checkpoint(done.model_path)[1]["config"]).eval_every == 3


def test_flips_are_refused_for_digits_before_anything_is_written(fake_data, tmp_path):
    with pytest.raises(MnistlabError, match="augment flip mirrors each image, which turns some mnist symbols"):
        train(RunConfig(model="mlp", epochs=1, augment={"flip": 0.5}), out=tmp_path / "run", data_dir=fake_data,
              progress=False)
    assert not (tmp_path / "run").exists()


def test_resume_refuses_a_onecycle_run_longer_and_a_folder_of_another_run(fake_data, tmp_path):
    cfg = RunConfig(model="mlp", batch_size=20, epochs=1, optimizer="adam", lr=0.01, schedule="onecycle")
    train(cfg, out=tmp_path / "a", data_dir=fake_data, progress=False)
    with pytest.raises(MnistlabError, match="--epochs cannot change when resuming a onecycle run"):
        train(resume=tmp_path / "a" / "ckpt-epoch001.pt", changes={"epochs": 2}, data_dir=fake_data,
              progress=False)
    train(RunConfig(model="mlp", epochs=1), out=tmp_path / "b", data_dir=fake_data, progress=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()}
    with pytest.raises(MnistlabError, match="already holds a run"):
        train(resume=tmp_path / "a" / "ckpt-epoch001.pt", out=tmp_path / "b", data_dir=fake_data, progress=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()} == before


def test_metrics_restart_from_the_checkpoint_history(fake_data, tmp_path):
    from mnistlab.training.runs import read_run_events

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"event": "train", "epoch": 7, "step": 1, "loss": 9.0}\n')  # a killed run
    train(RunConfig(model="mlp", epochs=1, batch_size=20), out=run, data_dir=fake_data, progress=False)
    assert all(e.get("epoch") != 7 for e in read_run_events(run))
    cfg = RunConfig(model="mlp", epochs=2, batch_size=20, checkpoint_every=1)
    first = train(cfg, out=tmp_path / "two", data_dir=fake_data, progress=False).history
    # resuming from epoch 1's checkpoint drops epoch 2's events, then writes them once
    resumed = train(resume=tmp_path / "two" / "ckpt-epoch001.pt", data_dir=fake_data, progress=False)
    events = read_run_events(tmp_path / "two")
    assert [e["event"] for e in events] == [e["event"] for e in first] == [e["event"] for e in resumed.history]


@pytest.mark.parametrize("checkpoints, message", [
    ([], "no checkpoint had been written yet"),
    (["ckpt-epoch001.pt", "ckpt-epoch002.pt"], "its last checkpoint is intact: continue with mnistlab train "
                                                "--resume .*ckpt-epoch002.pt"),
])
def test_a_broken_distributed_job_names_the_checkpoint_to_resume_only_if_there_is_one(
        tmp_path, monkeypatch, checkpoints, message):
    from types import SimpleNamespace

    import mnistlab.training.loop as training

    for name in checkpoints:
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setattr(training.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(training.dist, "rank", lambda: 0)
    broke = "rank 0: the distributed job broke \\(Connection reset by peer\\); "
    with pytest.raises(MnistlabError, match=broke + message):
        with training.peers_watched(SimpleNamespace(run_dir=tmp_path)):
            raise RuntimeError("Connection reset by peer\n(gloo's details)")
    monkeypatch.setattr(training.dist, "is_initialized", lambda: False)
    with pytest.raises(RuntimeError):  # alone, a RuntimeError is not a broken job
        with training.peers_watched(SimpleNamespace(run_dir=tmp_path)):
            raise RuntimeError("something else")


def test_pixel_augmentation_resumes_exactly_and_the_temperature_can_be_fitted_under_held_out_corruptions(
        fake_data, tmp_path):
    cfg = dict(model="mlp", epochs=2, batch_size=20, val_size=40, checkpoint_every=1,
               augment={"noise": 0.3, "invert": 0.3, "stroke": 0.5, "blur": 1.0, "lines": 0.3, "level": 0.4})
    clean = train(RunConfig(**cfg), out=tmp_path / "clean", data_dir=fake_data, progress=False)
    shifted = train(RunConfig(**cfg, calibrate="held-out"), out=tmp_path / "held-out", data_dir=fake_data,
                    progress=False)
    resumed = train(resume=tmp_path / "held-out" / "ckpt-epoch001.pt", out=tmp_path / "resumed",
                    data_dir=fake_data, progress=False)
    a, b, c = (_weights(r.model_path) for r in (clean, shifted, resumed))
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)  # calibration changes no weight
    fits = [next(e for e in r.history if e["event"] == "calibration") for r in (clean, shifted)]
    assert [f["on"] for f in fits] == ["clean", "held-out"]
    assert fits[0]["temperature"] != fits[1]["temperature"]
    assert load_model(shifted.model_path).card.temperature == fits[1]["temperature"]


@pytest.mark.parametrize("steps", [3, 4, 5, 7])
def test_a_short_one_cycle_run_has_two_phases(steps):
    """A small dataset of one's own with the fast preset gave OneCycleLR 4 steps and a division by zero."""
    from mnistlab.training.loop import make_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = make_scheduler(from_preset("fast"), opt, steps)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(steps - 1):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    peak = lrs.index(max(lrs))
    assert 0 < peak < steps - 1 and max(lrs) == pytest.approx(from_preset("fast").lr) and lrs[-1] < lrs[0]  # up, down


def test_a_run_too_short_for_one_cycle_is_one_sentence():
    from mnistlab.training.loop import make_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(MnistlabError, match="needs at least 3 steps, and this run has 2"):
        make_scheduler(from_preset("fast"), opt, 2)


@pytest.mark.parametrize("keep", [0.9, 0.99])
def test_the_reject_threshold_keeps_reject_keep_of_the_validation_digits(fake_data, tmp_path, keep):
    cfg = RunConfig(model="mlp", epochs=1, batch_size=20, optimizer="adam", lr=0.003, val_size=100, reject_keep=keep)
    result = train(cfg, out=tmp_path / "run", data_dir=fake_data, progress=False)
    model = load_model(result.model_path)
    scores = model.ood_scores(model.load_split("validation", fake_data)[0].numpy())
    # at least keep, ties and all; training scored the digits through its own forward pass, which may round a
    # near-tie the other way
    assert keep - 0.01 <= (scores >= model.card.reject_threshold).mean() <= keep + 0.02  # ties kept too
    with pytest.raises(MnistlabError, match="give --val-size"):
        RunConfig(model="mlp", reject_keep=0.995).validate()
    with pytest.raises(MnistlabError, match="0.5 to 1"):
        RunConfig(model="mlp", val_size=100, reject_keep=1.5).validate()
