import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from mnistlab import CheckpointError, MnistlabError, ModelCard, RunConfig, train
from mnistlab.checkpoints import load_checkpoint, load_weights, save_checkpoint
from mnistlab.fileio import append_line, atomic_write
from mnistlab.inference import load_model
from mnistlab.pretrained import resolve
from mnistlab.training.runs import read_run_events
from mnistlab_testkit.fakes import assert_one_sentence, run_cli
from mnistlab_testkit.hard_inputs import scanned_page


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _card(model="cnn"):
    return ModelCard(model=model, dataset="mnist", classes=tuple(str(i) for i in range(10)), mean=0.1307,
                     std=0.3081, temperature=0.5, val_size=100, model_config={})


def _state(model="cnn"):
    from mnistlab.models import build_model

    return {"model_state": build_model(model).state_dict()}


def test_round_trip(tmp_path):
    save_checkpoint(_card(), _state(), tmp_path / "c.pt")
    card, state = load_checkpoint(tmp_path / "c.pt")
    assert card == _card() and state["version"] == 2
    clf = load_model(tmp_path / "c.pt")
    assert clf.card.model == "cnn" and clf.classes[3] == "3"
    assert clf.predict_proba(torch.zeros(2, 28, 28, dtype=torch.uint8)).sum(1).tolist() == pytest.approx([1, 1])


def test_pickled_code_is_refused(tmp_path):
    torch.save({"format": "mnistlab-checkpoint", "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(tmp_path / "evil.pt")


@pytest.mark.parametrize("content", [b"", b"hello", b"PK\x03\x04garbage"])
def test_not_a_checkpoint(tmp_path, content):
    (tmp_path / "x.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match="x.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "x.pt")


def test_an_archive_of_an_unknown_zip_version_is_read_as_torch_reads_it(tmp_path):
    """zipfile raises NotImplementedError for an entry whose version to extract it does not know; torch reads it."""
    save_checkpoint(_card(), _state(), tmp_path / "c.pt")
    raw = bytearray((tmp_path / "c.pt").read_bytes())
    entry = raw.find(b"PK\x01\x02")  # the central directory's first entry
    raw[entry + 6] = 0xFF  # the version needed to extract it
    (tmp_path / "c.pt").write_bytes(bytes(raw))
    assert load_checkpoint(tmp_path / "c.pt")[0] == _card()


def test_foreign_torch_file(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "f.pt")
    with pytest.raises(CheckpointError, match="not an mnistlab checkpoint"):
        load_checkpoint(tmp_path / "f.pt")


def test_truncated_checkpoint(tmp_path):
    save_checkpoint(_card(), _state(), tmp_path / "c.pt")
    raw = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "c.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "c.pt")


def test_weights_of_another_model(tmp_path):
    save_checkpoint(_card("cnn"), _state("mlp"), tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="do not fit the model 'cnn'"):
        load_model(tmp_path / "c.pt")


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "keep.pt"
    target.write_bytes(b"old")

    def full_disk(tmp):
        with open(tmp, "wb") as f:
            f.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(MnistlabError, match="no space left on the device to write .*keep.pt"):
        atomic_write(target, full_disk)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.pt"]


def _torch_failure(tmp):
    """What torch's zip writer raises when a write fails: no errno, its own words."""
    Path(tmp).write_bytes(b"part")
    raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 7872 vs 7800")


def test_a_torch_writer_failing_on_a_full_disk_says_no_space_and_names_the_file(tmp_path, monkeypatch):
    import shutil

    target = tmp_path / "scored.pt"
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: shutil._ntuple_diskusage(1 << 30, 1 << 30, 0))
    with pytest.raises(MnistlabError, match=f"^no space left on the device to write {target}; "):
        atomic_write(target, _torch_failure)
    monkeypatch.undo()  # room to spare: then torch's own words, still naming the file
    with pytest.raises(MnistlabError, match=f"^cannot write {target}: .*unexpected pos"):
        atomic_write(target, _torch_failure)
    assert list(tmp_path.iterdir()) == []


def test_torch_save_onto_a_full_disk_says_no_space(tiny_disk):
    _fill(tiny_disk)
    with pytest.raises(MnistlabError, match="no space left on the device to write .*big.pt"):
        atomic_write(tiny_disk / "big.pt", lambda tmp: torch.save(torch.zeros(100_000), tmp))
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler"]


def _crafted(tmp_path, name="crafted.pt", weights=None, **card_changes) -> Path:
    """classic-cnn's checkpoint with its card changed, or its weights mapped by `weights`."""
    card, model_state = load_weights(resolve("classic-cnn"))
    if weights is not None:
        model_state = {k: weights(v) for k, v in model_state.items()}
    path = tmp_path / name
    torch.save({"format": "mnistlab-checkpoint", "version": 2, "card": card.to_dict() | card_changes,
                "model_state": model_state}, path)
    return path


@pytest.mark.parametrize("changes, message", [
    (dict(normalization=[0.13, 1e-300]), "normalisation std is 1e-300"),
    (dict(normalization=[1e308, 0.3]), "normalisation mean is 1e.308"),
    (dict(temperature=1e-200), "temperature"),
    (dict(classes=[""] * 10), "class names"),
    (dict(classes=["a"] * 10), "not all different"),
    (dict(model="mlp"), "do not fit"),
])
def test_crafted_cards_are_refused_in_one_sentence(tmp_path, changes, message):
    path = _crafted(tmp_path, **changes)
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


def test_a_huge_model_card_is_refused_before_anything_is_allocated(tmp_path):
    path = _crafted(tmp_path, model="bn-cnn", model_config={"channels": [30000, 30000], "hidden": 30000})
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(path)
    assert time.perf_counter() - t0 < 5  # built on the meta device, not allocated (gigabytes)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_by_predict_eval_and_serve(tmp_path, value):
    path = _crafted(tmp_path, weights=lambda t: t.fill_(value) if t.is_floating_point() else t)
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load_model(path)
    image = tmp_path / "seven.png"
    scanned_page("L", (200, 260)).save(image)
    for command in (["predict", path, image, "--json"], ["eval", path], ["serve", path, "--port", "1"]):
        result = run_cli(*command)
        assert_one_sentence(result, "NaN or infinite")
        assert "NaN" not in result.stdout, command


def test_a_text_format_version_is_called_damaged_not_newer(tmp_path):
    path = _crafted(tmp_path)
    state = torch.load(path, weights_only=True) | {"version": "2"}
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="format version '2' is not a whole number"):
        load_model(path)


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory, data_dir):
    """A run stopped by Ctrl-C part-way through its second epoch, and an unbroken twin."""
    root = tmp_path_factory.mktemp("interrupt")
    cfg = dict(model="mlp", epochs=2, train_limit=2000, batch_size=50, log_interval=7, eval_every=1,
               checkpoint_every=1, threads=1)
    unbroken = train(RunConfig(**cfg), out=root / "unbroken", data_dir=data_dir, progress=False, report=False)
    import mnistlab.training.loop as training

    real = training.EagerStep.__call__

    calls = []

    def step(self, x, y):  # Ctrl-C arrives at step 53 of 80
        calls.append(1)
        if len(calls) == 53:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, x, y)

    training.EagerStep.__call__ = step
    try:
        with pytest.raises(KeyboardInterrupt):
            train(RunConfig(**cfg), out=root / "broken", data_dir=data_dir, progress=False, report=False)
    finally:
        training.EagerStep.__call__ = real
    return root, unbroken


def _untimed(events):
    return [{k: v for k, v in e.items() if k != "train_seconds"} for e in events if e["event"] != "timings"]


def test_a_resumed_epoch_records_what_an_unbroken_one_does(interrupted_run, data_dir):
    root, unbroken = interrupted_run
    ckpt = root / "broken" / "ckpt-interrupt.pt"
    assert load_checkpoint(ckpt)[1]["step_in_epoch"] == 13
    resumed = train(resume=ckpt, data_dir=data_dir, progress=False, report=False)
    assert _untimed(read_run_events(root / "broken")) == _untimed(read_run_events(root / "unbroken"))
    a, b = load_checkpoint(unbroken.model_path)[1]["model_state"], load_checkpoint(resumed.model_path)[1]["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("damage, field", [
    (lambda s: s.pop("rng_state"), "rng_state"),
    (lambda s: s.pop("global_step"), "global_step"),
    (lambda s: s["optimizer_state"].pop("param_groups"), "optimizer_state"),
    (lambda s: s["optimizer_state"]["param_groups"][0].update(lr="0.1"), "param_groups.lr"),
    (lambda s: s.update(epoch="2"), "epoch"),
    (lambda s: s.update(epoch=-5), "epoch"),
    (lambda s: s.update(step_in_epoch=10 ** 9), "epoch"),
    (lambda s: s.update(history="x"), "history"),
    (lambda s: s["config"].update(lr="fast"), "config"),
    (lambda s: s.update(epoch_stats={"loss_sum": "x"}), "epoch_stats"),
])
def test_a_damaged_training_state_is_one_sentence_and_writes_nothing(interrupted_run, data_dir, tmp_path, damage,
                                                                     field):
    root, _ = interrupted_run
    run = tmp_path / "run"
    run.mkdir()
    state = torch.load(root / "broken" / "ckpt-epoch001.pt", weights_only=True)
    state["epoch_stats"] = None
    damage(state)
    torch.save(state, run / "ckpt-epoch001.pt")
    (run / "metrics.jsonl").write_text('{"event": "train"}\n')
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert_one_sentence(run_cli("train", "--resume", run, "--data-dir", data_dir), field)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_the_checkpoint_after_a_fractional_last_epoch_is_not_called_damaged(fake_data, tmp_path):
    """It has moved on to epoch 3 having done 1.5 epochs of steps: extending it stays possible."""
    cfg = RunConfig(model="mlp", epochs=1.5, batch_size=20, checkpoint_every=1, eval_every=1)
    train(cfg, out=tmp_path / "run", data_dir=fake_data, progress=False)
    state = load_checkpoint(tmp_path / "run" / "ckpt-epoch002.pt")[1]
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (3, 0, 15)
    longer = train(resume=tmp_path / "run" / "ckpt-epoch002.pt", changes={"epochs": 3}, data_dir=fake_data,
                   progress=False)
    assert [e["event"] for e in longer.history[-2:]] == ["test", "timings"]


def _fill(folder: Path) -> None:
    with open(folder / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass


def test_a_full_disk_leaves_whole_lines_and_intact_checkpoints(tiny_disk):
    log = tiny_disk / "metrics.jsonl"
    append_line(log, json.dumps({"event": "train", "loss": 1.0}))
    card = ModelCard("mlp", "mnist", tuple("0123456789"), 0.1307, 0.3081)
    save_checkpoint(card, {"model_state": {"w": torch.zeros(10)}}, tiny_disk / "ckpt.pt")
    kept = (tiny_disk / "ckpt.pt").read_bytes()
    _fill(tiny_disk)
    with pytest.raises(MnistlabError, match="no space left on the device to write .*metrics.jsonl"):
        append_line(log, json.dumps({"event": "train", "loss": 2.0, "pad": "x" * 8192}))
    assert log.read_text() == '{"event": "train", "loss": 1.0}\n'
    with pytest.raises(MnistlabError, match="no space left on the device to write .*ckpt.pt"):
        save_checkpoint(card, {"model_state": {"w": torch.zeros(100_000)}}, tiny_disk / "ckpt.pt")
    assert (tiny_disk / "ckpt.pt").read_bytes() == kept
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["ckpt.pt", "filler", "metrics.jsonl"]
