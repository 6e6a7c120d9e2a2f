"""The second hostile probe (issue 20): each case failed on the code before it, with a traceback,
a 500, a wrong figure or a silently ignored flag."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from fakes import children, run_cli
from mnistlab import MnistlabError, RunConfig, load_model, train
from mnistlab.checkpoints import load_checkpoint, load_weights, save_checkpoint
from mnistlab.device import CoreShare
from mnistlab.errors import CheckpointError, first_line
from mnistlab.fileio import append_line
from mnistlab.pretrained import resolve
from mnistlab.training.runs import read_run_events

# ---- 1. the README's command, options in any order ----


@pytest.mark.parametrize("order", [["fast", "--format", "onnx", "{out}"], ["--format", "onnx", "fast", "{out}"],
                                   ["fast", "{out}", "--format", "onnx"]])
def test_export_takes_its_options_before_between_or_after_the_paths(tmp_path, order):
    out = tmp_path / "x.onnx"
    result = run_cli("export", *[a.format(out=out) for a in order])
    assert result.returncode == 0, result.stderr
    assert out.is_file() and f"wrote {out}" in result.stdout


def test_export_without_a_path_says_where_it_wrote(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mnistlab", "export", "fast"], cwd=tmp_path, text=True,
                            capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "fast.onnx").is_file()
    assert str(tmp_path / "fast.onnx") in result.stdout and "no OUT was given" in result.stdout


# ---- 2. large images in every mode ----

def _scanned_page(mode: str, size=(2550, 3300)) -> Image.Image:
    """A big white page with one dark 7 in the middle, in `mode`."""
    img = Image.new("L", size, 255)
    draw = ImageDraw.Draw(img)
    w, h = size
    u = min(w, h) / 8  # a 7 about a third of the page's shorter side
    corners = [(-1.2, -1.6), (1.2, -1.6), (-0.4, 1.8)]
    draw.line([(w / 2 + a * u, h / 2 + b * u) for a, b in corners], fill=0, width=max(3, int(u / 3)))
    if mode == "1":
        return img.convert("1")
    if mode == "I;16":
        return Image.fromarray(np.asarray(img, dtype=np.uint16) * 257).convert("I;16")
    if mode in ("P", "PA"):
        pal = img.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
        return pal if mode == "P" else pal.convert("PA")
    return img.convert(mode)


@pytest.mark.parametrize("mode, fmt, options", [("1", "TIFF", {"compression": "group4"}), ("P", "PNG", {}),
                                                ("I;16", "PNG", {}), ("PA", "TIFF", {})])
def test_large_images_of_every_mode_are_classified(tmp_path, mode, fmt, options):
    path = tmp_path / f"page.{fmt.lower()}"
    _scanned_page(mode).save(path, format=fmt, **options)
    pred = load_model("fast").predict(path)
    assert pred.label == "7", (mode, pred.top(3))


def test_a_folder_scan_finds_every_format_predict_reads(tmp_path):
    from mnistlab.data.preprocess import IMAGE_SUFFIXES, image_files

    assert {".avif", ".png", ".jpg", ".tif", ".qoi", ".pgm"} <= IMAGE_SUFFIXES
    digit = _scanned_page("L", (200, 260))
    digit.save(tmp_path / "a.avif")
    digit.save(tmp_path / "b.pgm")
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.name for p in image_files([tmp_path])] == ["a.avif", "b.pgm"]
    result = run_cli("predict", tmp_path)
    assert result.returncode == 0 and result.stdout.count(": 7 (") == 2, result.stdout + result.stderr


# ---- 3. crafted model cards and weights ----

def _crafted(tmp_path, name="crafted.pt", weights=None, **card_changes) -> Path:
    card, model_state = load_weights(resolve("classic-cnn"))
    d = card.to_dict() | card_changes
    state = {"model_state": model_state}
    if weights is not None:
        state["model_state"] = {k: weights(v) for k, v in state["model_state"].items()}
    path = tmp_path / name
    torch.save({"format": "mnistlab-checkpoint", "version": 2, "card": d, **state}, path)
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
    assert time.perf_counter() - t0 < 5  # built on the meta device: before, 13-18 s and 3.9 GB


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_by_predict_eval_and_serve(tmp_path, value):
    path = _crafted(tmp_path, weights=lambda t: t.fill_(value) if t.is_floating_point() else t)
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load_model(path)
    image = tmp_path / "seven.png"
    _scanned_page("L", (200, 260)).save(image)
    for command in (["predict", path, image, "--json"], ["eval", path], ["serve", path, "--port", "1"]):
        result = run_cli(*command)
        assert result.returncode == 1 and "NaN" not in result.stdout, command
        assert result.stderr.count("\n") == 1 and "NaN or infinite" in result.stderr, result.stderr


def test_a_text_format_version_is_called_damaged_not_newer(tmp_path):
    path = _crafted(tmp_path)
    state = torch.load(path, weights_only=True) | {"version": "2"}
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="format version '2' is not a whole number"):
        load_model(path)


def test_a_model_that_answers_nan_gets_422_not_500():
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mnistlab.card import ModelCard
    from mnistlab.inference import Classifier
    from mnistlab.serve.server import create_app

    class NanBackend:  # finite on the load-time probe, NaN on a real drawing
        card = ModelCard("cnn", "mnist", tuple("0123456789"), 0.1307, 0.3081)
        runtime, outputs = "PyTorch", "logits"

        def __call__(self, images):
            return np.full((len(images), 10), np.nan if images.sum() > 30000 else 0.0, dtype=np.float32)

    model = Classifier(NanBackend(), "nan.pt")._check_outputs()
    with TestClient(create_app(model)) as client:
        pixels = np.zeros((28, 28))
        pixels[4:24, 10:18] = 255
        r = client.post("/api/predict", json={"pixels": pixels.tolist()})
        assert r.status_code == 422 and "NaN or infinite" in r.json()["error"]


# ---- 4. damaged training state ----

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
    return [{k: v for k, v in e.items() if k != "train_seconds"} for e in events]


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
    (run).mkdir()
    state = torch.load(root / "broken" / "ckpt-epoch001.pt", weights_only=True)
    state["epoch_stats"] = None
    damage(state)
    torch.save(state, run / "ckpt-epoch001.pt")
    (run / "metrics.jsonl").write_text('{"event": "train"}\n')
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    result = run_cli("train", "--resume", run, "--data-dir", data_dir)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert field in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_the_checkpoint_after_a_fractional_last_epoch_is_not_called_damaged(fake_data, tmp_path):
    """It has moved on to epoch 3 having done 1.5 epochs of steps: extending it stays possible."""
    cfg = RunConfig(model="mlp", epochs=1.5, batch_size=20, checkpoint_every=1, eval_every=1)
    train(cfg, out=tmp_path / "run", data_dir=fake_data, progress=False)
    state = load_checkpoint(tmp_path / "run" / "ckpt-epoch002.pt")[1]
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (3, 0, 15)
    longer = train(resume=tmp_path / "run" / "ckpt-epoch002.pt", changes={"epochs": 3}, data_dir=fake_data,
                   progress=False)
    assert longer.history[-1]["event"] == "test"


# ---- 5. flags ----

@pytest.mark.parametrize("flags, message", [
    (["--momentum", "nan"], "--momentum must be a finite number"),
    (["--momentum", "inf"], "--momentum must be a finite number"),
    (["--weight-decay", "nan"], "--weight-decay must be a finite number"),
    (["--weight-decay", "inf"], "--weight-decay must be a finite number"),
    (["--epochs", "1e300"], "--epochs 1e\\+300 is more than"),
])
def test_non_finite_and_absurd_flags_are_refused(fake_data, tmp_path, flags, message):
    import re

    result = run_cli("train", "--model", "mlp", "--data-dir", fake_data, "--out", tmp_path / "run", *flags)
    assert result.returncode == 1 and re.search(message, result.stderr), result.stderr
    assert not (tmp_path / "run").exists()


# ---- 6. interruption and a full disk ----

def test_ctrl_c_while_starting_is_one_line(fake_data, tmp_path):
    for delay in (0.3, 0.8, 1.5):
        proc = subprocess.Popen([sys.executable, "-m", "mnistlab", "train", "--model", "mlp", "--data-dir",
                                 str(fake_data), "--out", str(tmp_path / f"run{delay}")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert "Traceback" not in err, (delay, err)
        assert proc.returncode in (0, 130), (delay, err)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs, mounted for the test (root on Linux, as CI runs)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root on Linux)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def _fill(folder: Path) -> None:
    with open(folder / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass


def test_a_full_disk_leaves_whole_lines_and_intact_checkpoints(tiny_disk):
    from mnistlab.card import ModelCard

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


def test_training_onto_a_full_disk_is_one_sentence(tiny_disk, fake_data):
    result = run_cli("train", "--model", "cnn", "--data-dir", fake_data, "--out", tiny_disk / "run", "--epochs", "3",
                     "--checkpoint-every", "1", "--no-report")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "no space left on the device" in result.stderr and result.stderr.count("\n") == 1, result.stderr
    events = read_run_events(tiny_disk / "run")  # whatever was written reads back whole
    assert events and events[0]["event"] == "train"


def test_a_half_written_last_line_is_dropped_on_read(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"event": "train", "loss": 1}\n{"eve')
    assert read_run_events(tmp_path) == [{"event": "train", "loss": 1}]
    (tmp_path / "metrics.jsonl").write_text('"x"\n')
    with pytest.raises(MnistlabError, match="not an event"):
        read_run_events(tmp_path)


# ---- 7. serving ----

def test_every_error_has_one_format():
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mnistlab.serve.server import create_app

    with TestClient(create_app(load_model("classic-cnn"))) as client:
        for response in (client.get("/nothing/here"), client.get("/api/predict"), client.delete("/")):
            assert response.status_code in (404, 405)
            assert set(response.json()) == {"error"}, response.json()


def test_ipv6_addresses_are_bracketed_in_urls():
    from mnistlab.serve.server import url

    assert url("::1", 8783) == "http://[::1]:8783/"
    assert url("127.0.0.1", 80) == "http://127.0.0.1:80/"


@pytest.mark.parametrize("workers", [1, 2])
def test_sigint_stops_a_server_started_with_sigint_ignored(workers):
    pytest.importorskip("fastapi")
    from mnistlab_testkit.browsing import free_port

    proc = subprocess.Popen([sys.executable, "-m", "mnistlab", "serve", "classic-cnn", "--port", str(free_port()),
                             "--workers", str(workers)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # as `cmd &` does
    try:
        assert "serving" in proc.stdout.readline()
        deadline = time.time() + 60
        while len(children(proc.pid)) < (workers if workers > 1 else 0) and time.time() < deadline:
            time.sleep(0.1)
        kids = children(proc.pid)
        time.sleep(1)  # let the workers start their servers
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        for kid in kids:
            assert not Path(f"/proc/{kid}").exists() or "Z" in Path(f"/proc/{kid}/stat").read_text().split()[2]
    finally:
        if proc.poll() is None:
            proc.kill()


# ---- 8. a shared CPU ----

def test_trainings_share_the_cores_and_a_dead_ones_share_comes_back(tmp_path):
    a = CoreShare(tmp_path)
    assert a.sharers() == 1 and a.threads == a.cores
    b = CoreShare(tmp_path)
    a._next = 0
    a.adjust()
    assert b.sharers() == a.sharers() == 2 and a.threads == b.threads == max(1, a.cores // 2)
    b.close()
    (tmp_path / "99999999").write_text("")  # a training killed with -9: its file is left, unlocked
    a._next = 0
    a.adjust()
    assert a.threads == a.cores and not (tmp_path / "99999999").exists()
    a.close()


def test_the_first_line_helper_survives_empty_messages():
    assert first_line(RuntimeError("")) == "RuntimeError"
    assert first_line(ValueError("one\ntwo")) == "one"


def test_models_lists_a_registered_model_without_a_docstring(monkeypatch, capsys):
    from mnistlab import cli
    from mnistlab.models import MODELS

    monkeypatch.setitem(MODELS, "bare", type("Bare", (torch.nn.Module,), {}))
    assert cli.main(["models"]) == 0
    assert "bare     (no description)" in capsys.readouterr().out


def test_onnx_errors_without_a_message_are_one_sentence(tmp_path, monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    from mnistlab.onnx_backend import OnnxBackend

    def fail(*args, **kwargs):
        raise RuntimeError("")

    monkeypatch.setattr(ort, "InferenceSession", fail)
    with pytest.raises(MnistlabError, match=r"not a readable ONNX model \(RuntimeError\)"):
        OnnxBackend(tmp_path / "x.onnx")
