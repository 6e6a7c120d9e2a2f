import json
import os
import signal
import time

import pytest
import torch
from PIL import Image

from mnistlab import MnistlabError, RunConfig, from_preset, load_model, train
from mnistlab.checkpoints import load_checkpoint
from mnistlab.evaluation import evaluate, model_split
from mnistlab.training.loop import TIMED_PARTS
from mnistlab.training.report import COMPLETE, LOG, PICTURES, SCORED, launch_report, wait_for_report
from mnistlab.training.runs import read_run_events
from mnistlab_testkit.fakes import run_cli


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
    assert evaluate(load_model(result.model_path), data_dir).correct == result.test_correct


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
    result = train(cfg, out=tmp_path / "run", data_dir=fake_data, progress=False, report=True, wait_for_report=True)
    assert (tmp_path / "run" / COMPLETE).exists()  # drawn before train() returned
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
    done = train(resume=tmp_path / "run" / "ckpt-epoch001.pt", changes={"eval_every": 3, "lr": 0.1, "epochs": 2},
                 out=tmp_path / "ok", data_dir=fake_data, progress=False)
    assert RunConfig.from_dict(load_checkpoint(done.model_path)[1]["config"]).eval_every == 3


def test_flips_are_refused_for_digits_before_anything_is_written(fake_data, tmp_path):
    with pytest.raises(MnistlabError, match="augment flip mirrors each image, which turns some mnist symbols"):
        train(RunConfig(model="mlp", epochs=1, augment={"flip": 0.5}), out=tmp_path / "run", data_dir=fake_data,
              progress=False)
    assert not (tmp_path / "run").exists()


def test_resume_refuses_a_onecycle_run_longer_and_a_folder_of_another_run(fake_data, tmp_path):
    cfg = RunConfig(model="mlp", batch_size=20, epochs=2, optimizer="adam", lr=0.01, schedule="onecycle",
                    checkpoint_every=1)
    train(cfg, out=tmp_path / "a", data_dir=fake_data, progress=False)
    with pytest.raises(MnistlabError, match="--epochs cannot change when resuming a onecycle run"):
        train(resume=tmp_path / "a" / "ckpt-epoch001.pt", changes={"epochs": 3}, data_dir=fake_data,
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
    (tmp_path / "two" / "model.pt").unlink()  # as if killed after epoch 2's events, before the run finished
    # resuming from epoch 1's checkpoint drops epoch 2's events, then writes them once
    resumed = train(resume=tmp_path / "two" / "ckpt-epoch001.pt", data_dir=fake_data, progress=False)
    events = read_run_events(tmp_path / "two")
    assert [e["event"] for e in events] == [e["event"] for e in first] == [e["event"] for e in resumed.history]


@pytest.mark.parametrize("checkpoints, message", [
    ([], "no checkpoint had been written yet"),
    (["ckpt-epoch001.pt", "ckpt-epoch002.pt"], "its last checkpoint is intact: continue with mnistlab train "
                                                "--resume .*ckpt-epoch002.pt --data-dir 'my data' --processes 2\\.$"),
])
def test_a_broken_distributed_job_names_the_checkpoint_to_resume_only_if_there_is_one(
        tmp_path, monkeypatch, checkpoints, message):
    from types import SimpleNamespace

    import mnistlab.training.loop as training

    for name in checkpoints:
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setattr(training.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(training.dist, "rank", lambda: 0)
    monkeypatch.setattr(training.dist, "world_size", lambda: 2)  # the hint trains as many processes again
    broke = "rank 0: the distributed job broke \\(Connection reset by peer\\); "
    with pytest.raises(MnistlabError, match=broke + message):
        with training.peers_watched(SimpleNamespace(run_dir=tmp_path), "my data"):
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
    scores = model.ood_scores(model_split(model, "validation", fake_data)[0].numpy())
    # at least keep, ties and all; training scored the digits through its own forward pass, which may round a
    # near-tie the other way
    assert keep - 0.01 <= (scores >= model.card.reject_threshold).mean() <= keep + 0.02  # ties kept too
    with pytest.raises(MnistlabError, match="give --val-size"):
        RunConfig(model="mlp", reject_keep=0.995).validate()
    with pytest.raises(MnistlabError, match="0.5 to 1"):
        RunConfig(model="mlp", val_size=100, reject_keep=1.5).validate()


def test_training_onto_a_full_disk_is_one_sentence(tiny_disk, fake_data):
    from mnistlab.training.runs import read_run_events
    from mnistlab_testkit.fakes import assert_one_sentence, run_cli

    result = run_cli("train", "--model", "cnn", "--data-dir", fake_data, "--out", tiny_disk / "run", "--epochs", "3",
                     "--checkpoint-every", "1", "--no-report")
    assert_one_sentence(result, "no space left on the device")
    events = read_run_events(tiny_disk / "run")  # whatever was written reads back whole
    assert events and events[0]["event"] == "train"


def test_a_half_written_last_line_is_dropped_on_read(tmp_path):
    from mnistlab.training.runs import read_run_events

    (tmp_path / "metrics.jsonl").write_text('{"event": "train", "loss": 1}\n{"eve')
    assert read_run_events(tmp_path) == [{"event": "train", "loss": 1}]
    (tmp_path / "metrics.jsonl").write_text('"x"\n')
    with pytest.raises(MnistlabError, match="not an event"):
        read_run_events(tmp_path)


def test_the_ctrl_c_hint_resumes_as_printed_without_mnistlab_data(fake_data, tmp_path):
    import os
    import shlex
    import signal
    import subprocess
    import sys
    from pathlib import Path

    # run where ./data does not exist and $MNISTLAB_DATA is not set: only the hint can say where the data is
    env = {k: v for k, v in os.environ.items() if k != "MNISTLAB_DATA"} | {"MNISTLAB_OFFLINE": "1",
                                                                            "PYTHONUNBUFFERED": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the mnistlab command
    job = subprocess.Popen([sys.executable, "-m", "mnistlab", "train", "--model", "mlp", "--epochs", "3",
                            "--batch-size", "2", "--lr", "0.01", "--log-interval", "1", "--no-progress", "--no-report",
                            "--data-dir", str(fake_data), "--out", "run"],
                           cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in job.stdout:  # training is under way: 300 steps
        if "loss" in line:
            break
    job.send_signal(signal.SIGINT)
    out, err = job.communicate(timeout=120)
    assert job.returncode == 130, err
    hint = out.split("continue with: ", 1)[1].splitlines()[0]
    assert shlex.split(hint)[:4] == ["mnistlab", "train", "--resume", "run/ckpt-interrupt.pt"]
    resumed = subprocess.run(hint, shell=True, cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming run/ckpt-interrupt.pt" in resumed.stdout and (tmp_path / "run" / "model.pt").is_file()


@pytest.mark.parametrize("schedule, further", [("constant", "resume with --epochs above 1"),
                                               ("onecycle", "start a new run with more --epochs")])
def test_a_finished_run_is_not_trained_again(fake_data, tmp_path, schedule, further):
    from mnistlab_testkit.fakes import assert_one_sentence, run_cli

    cfg = RunConfig(model="mlp", epochs=1, batch_size=20, optimizer="adam", lr=0.01, schedule=schedule)
    train(cfg, out=tmp_path / "run", data_dir=fake_data, progress=False)
    files = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (tmp_path / "run").iterdir()}
    for given in (tmp_path / "run", tmp_path / "run" / "ckpt-epoch001.pt"):
        with pytest.raises(MnistlabError, match=f"this run is finished .*model.pt\\); .*{further}"):
            train(resume=given, data_dir=fake_data, progress=False)
    result = run_cli("train", "--resume", tmp_path / "run", "--data-dir", fake_data)
    assert_one_sentence(result, "this run is finished")
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (tmp_path / "run").iterdir()} == files
    if schedule == "constant":  # the way on that the sentence names
        longer = train(resume=tmp_path / "run", changes={"epochs": 2}, data_dir=fake_data, progress=False)
        assert [e["epoch"] for e in longer.history if e["event"] == "epoch"] == [1, 2]


def test_a_run_killed_before_its_model_pt_finishes_on_resume(fake_data, tmp_path):
    train(RunConfig(model="mlp", epochs=1, batch_size=20), out=tmp_path / "run", data_dir=fake_data, progress=False)
    (tmp_path / "run" / "model.pt").unlink()
    done = train(resume=tmp_path / "run", data_dir=fake_data, progress=False)
    assert done.model_path.is_file() and [e["event"] for e in done.history].count("epoch") == 1


def test_the_fast_preset_trains_a_folder_of_120_images(tmp_path):
    from mnistlab_testkit.owndatasets import make_folder

    folder = make_folder(tmp_path / "digits", {"ring": 40, "bar": 40, "seven": 40})
    cfg = from_preset("fast", dataset=str(folder))
    result = train(cfg, out=tmp_path / "run", progress=False)
    saved = RunConfig.from_dict(load_checkpoint(result.model_path)[1]["config"])
    steps = [e for e in result.history if e["event"] == "train"]
    assert saved.batch_size < cfg.batch_size and steps[-1]["global_step"] >= 3  # one-cycle's least
    assert result.test_total == 12 and set(load_model(result.model_path).card.classes) == {"ring", "bar", "seven"}


TINY = ["--model", "mlp", "--epochs", "1", "--train-limit", "200", "--batch-size", "20", "--threads", "1",
        "--no-progress"]


def _whole(run_dir) -> list[str]:
    """The report's final-named files that are there, each checked whole (a PNG decodes, the page ends)."""
    there = []
    for name in PICTURES:
        if (run_dir / name).exists():
            with Image.open(run_dir / name) as image:
                image.load()  # a cut-off PNG raises here
            there.append(name)
    if (run_dir / "report.html").exists():
        assert (run_dir / "report.html").read_text().endswith("</html>")
        there.append("report.html")
    return there


def test_train_does_not_wait_for_the_report_and_its_marker_comes_last(fake_data, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("train", *TINY, "--data-dir", fake_data, "--out", run_dir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the command has exited; the report, in a session of its own, carries on (importing matplotlib alone
    # takes it longer than the command's last lines)
    assert not (run_dir / COMPLETE).exists()
    assert f"report: {run_dir / 'report.html'}, being drawn in the background" in proc.stdout
    assert wait_for_report(run_dir, timeout=240) == run_dir / "report.html"
    assert json.loads((run_dir / COMPLETE).read_text())["files"] == _whole(run_dir) == [*PICTURES, "report.html"]
    assert (run_dir / "report.html").read_text().count("data:image/png;base64,") == 4
    assert not (run_dir / SCORED).exists()  # the test pass handed over, then deleted
    deadline = time.monotonic() + 30  # report.log goes just after the marker: kept only to say why a report failed
    while (run_dir / LOG).exists():
        assert time.monotonic() < deadline, (run_dir / LOG).read_text()
        time.sleep(0.05)


def test_no_report_launches_none(fake_data, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("train", *TINY, "--no-report", "--data-dir", fake_data, "--out", run_dir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "report:" not in proc.stdout and not (run_dir / LOG).exists() and not (run_dir / SCORED).exists()


def test_a_report_killed_midway_leaves_no_marker_and_no_half_file(fake_data, tmp_path):
    run_dir = tmp_path / "run"
    train(RunConfig(model="mlp", epochs=1, train_limit=200, batch_size=20), out=run_dir, data_dir=fake_data,
          progress=False, report=True, wait_for_report=True)  # an earlier report, whole
    assert (run_dir / COMPLETE).exists()
    for name in (*PICTURES, "report.html"):
        (run_dir / name).unlink()
    child = launch_report(run_dir, fake_data)
    assert not (run_dir / COMPLETE).exists()  # the earlier report's marker goes before anything is drawn
    deadline = time.monotonic() + 240
    while not (run_dir / PICTURES[0]).exists():  # the first picture written: the child is part-way
        assert child.poll() is None and time.monotonic() < deadline, (run_dir / LOG).read_text()
        time.sleep(0.002)
    os.killpg(child.pid, signal.SIGKILL)  # its own session: its group is itself alone
    child.wait(timeout=30)
    assert not (run_dir / COMPLETE).exists()
    assert PICTURES[0] in _whole(run_dir) and "report.html" not in _whole(run_dir)
    with pytest.raises(MnistlabError, match="not complete after 0.1 s"):
        wait_for_report(run_dir, timeout=0.1)


def test_timings_add_up_and_are_recorded(fake_data, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("train", *TINY, "--timings", "--no-report", "--data-dir", fake_data, "--out", run_dir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    timings = [e for e in read_run_events(run_dir) if e["event"] == "timings"]
    assert len(timings) == 1
    event = timings[0]
    assert set(event) == {"event", "total", *TIMED_PARTS}
    parts = [event[k] for k in TIMED_PARTS]
    assert all(v >= 0 for v in parts) and sum(parts) <= event["total"]
    assert event["steps"] > 0 and event["data"] > 0 and event["startup"] > 0 and event["saving"] > 0
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith("timings: start-up ")
    assert line.endswith(f"total {event['total']:.2f} s, from the start to this line")  # what "total" covers
    quiet = run_cli("train", *TINY, "--no-report", "--data-dir", fake_data, "--out", tmp_path / "quiet")
    assert "timings:" not in quiet.stdout
    assert [e["event"] for e in read_run_events(tmp_path / "quiet")][-1] == "timings"  # recorded all the same


@pytest.mark.parametrize("slow", ["read_splits", "outlier_set"])
def test_timings_count_reading_and_rendering_data_as_data(fake_data, tmp_path, monkeypatch, slow):
    import mnistlab.training.loop as training

    original = getattr(training, slow)

    def slowly(*args, **kwargs):  # a slow disk, or a slow rendering: it must land in "data", not in "other"
        time.sleep(0.5)
        return original(*args, **kwargs)

    monkeypatch.setattr(training, slow, slowly)
    result = train(RunConfig(model="mlp", epochs=1, train_limit=100, batch_size=20, outlier_exposure=0.5,
                             outlier_families="scribbles,noise"), out=tmp_path / "run", data_dir=fake_data,
                   progress=False)
    assert result.history[-1]["event"] == "timings" and result.history[-1]["data"] >= 0.5


def test_timings_with_init_is_refused_not_ignored(tmp_path, capsys):
    from mnistlab.cli import main

    assert main(["train", "--init", "robust-real", "--dataset", str(tmp_path / "mine"), "--timings"]) == 1
    err = capsys.readouterr().err
    assert "--timings" in err and "--init" in err and len(err.strip().splitlines()) == 1, err


def _files(run_dir) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.iterdir()}


def test_a_finished_run_refuses_its_leftover_ctrl_c_checkpoint_and_a_finishing_run_removes_it(fake_data, tmp_path):
    import shutil

    from mnistlab_testkit.fakes import assert_one_sentence

    run_dir = tmp_path / "run"
    cfg = RunConfig(model="mlp", epochs=2, train_limit=100, batch_size=20, checkpoint_every=1)
    train(cfg, out=run_dir, data_dir=fake_data, progress=False)
    # a Ctrl-C in epoch 2 and a resume that finished: its checkpoint, as "continue with:" names it, left behind
    shutil.copy(run_dir / "ckpt-epoch001.pt", run_dir / "ckpt-interrupt.pt")
    files = _files(run_dir)
    for given in (run_dir, run_dir / "ckpt-interrupt.pt", run_dir / "ckpt-epoch001.pt"):
        with pytest.raises(MnistlabError, match="this run is finished"):
            train(resume=given, data_dir=fake_data, progress=False)
    result = run_cli("train", "--resume", run_dir / "ckpt-interrupt.pt", "--data-dir", fake_data)
    assert_one_sentence(result, "this run is finished")
    assert _files(run_dir) == files  # nothing retrained, nothing rewritten
    branch = train(resume=run_dir / "ckpt-epoch001.pt", out=tmp_path / "branch", data_dir=fake_data, progress=False)
    assert branch.model_path == tmp_path / "branch" / "model.pt" and _files(run_dir) == files  # a folder of its own
    longer = train(resume=run_dir / "ckpt-interrupt.pt", changes={"epochs": 3}, data_dir=fake_data, progress=False)
    assert [e["epoch"] for e in longer.history if e["event"] == "epoch"] == [1, 2, 3]
    assert not (run_dir / "ckpt-interrupt.pt").exists()  # trained past: the finished run leaves none to resume


def test_a_new_model_pt_takes_the_old_report_away(fake_data, tmp_path):
    run_dir = tmp_path / "run"
    train(RunConfig(model="mlp", epochs=1, train_limit=100, batch_size=20), out=run_dir, data_dir=fake_data,
          progress=False, report=True, wait_for_report=True)
    assert set(json.loads((run_dir / COMPLETE).read_text())["files"]) <= {p.name for p in run_dir.iterdir()}
    train(resume=run_dir, changes={"epochs": 2}, data_dir=fake_data, progress=False, report=False)  # --no-report
    left = {p.name for p in run_dir.iterdir()}
    assert COMPLETE not in left and not left & {*PICTURES, "report.html"}, left  # none describes the new weights
    assert "model.pt" in left


def test_a_full_disk_after_model_pt_says_the_report_was_not_started_and_succeeds(fake_data, tmp_path, monkeypatch,
                                                                                   capsys):
    import errno

    import mnistlab.training.report as report
    from mnistlab.cli import main

    write = report.atomic_write

    def full_disk(path, writer):
        if path.name != SCORED:
            return write(path, writer)

        def partial(tmp):  # as a full disk fails: part written, then ENOSPC
            writer(tmp)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(path, partial)

    monkeypatch.setattr(report, "atomic_write", full_disk)
    run_dir = tmp_path / "run"
    code = main(["train", *TINY[:-3], "--no-progress", "--data-dir", str(fake_data), "--out", str(run_dir)])
    out, err = capsys.readouterr()
    assert code == 0, err
    said = [line for line in out.splitlines() if line.startswith(("note:", "report:"))]
    assert said == [f"note: the report could not be started: no space left on the device to write {run_dir / SCORED}; "
                    "nothing already written was damaged."], out
    assert (run_dir / "model.pt").is_file() and not [p.name for p in run_dir.iterdir() if p.name.startswith(".")]


def test_mnistlab_report_clears_what_a_killed_or_failed_report_left(fake_data, tmp_path):
    run_dir = tmp_path / "run"
    train(RunConfig(model="mlp", epochs=1, train_limit=100, batch_size=20), out=run_dir, data_dir=fake_data,
          progress=False)
    expected = {p.name for p in run_dir.iterdir()} | {*PICTURES, "report.html", COMPLETE, "notes.tmp"}
    torch.save((torch.zeros(1),), run_dir / SCORED)  # handed to a report killed before it read it
    for name in (*PICTURES, "report.html", COMPLETE, SCORED):  # a report (or its launch) killed mid-write
        (run_dir / f".{name}.k2x9q_ab.tmp").write_bytes(b"half")
    (run_dir / LOG).write_text("mnistlab report: an earlier failure\n")
    (run_dir / "notes.tmp").write_text("the user's own")
    proc = run_cli("report", run_dir, "--data-dir", fake_data)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {p.name for p in run_dir.iterdir()} == expected  # no temp file, test pass or stale failure left
