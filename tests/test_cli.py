import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from fakes import run_cli as run
from mnistlab.checkpoints import load_checkpoint
from mnistlab.training.runs import read_run_events


def assert_clean_error(proc, pattern, code=1):
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    assert pattern in proc.stderr, proc.stderr


def test_lesson_command():
    proc = run("lesson")
    assert proc.returncode == 0
    assert "0.9729" in proc.stdout and "0.4966" in proc.stdout


def test_train_dry_run_then_eval_json(data_dir, tmp_path):
    proc = run("train", "--model", "cnn", "--dry-run", "--data-dir", data_dir, "--out", tmp_path / "run")
    assert proc.returncode == 0, proc.stderr
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("test accuracy:")][0]
    correct = int(line.split()[2].split("/")[0])
    proc = run("eval", tmp_path / "run" / "model.pt", "--json", "--data-dir", data_dir)
    report = json.loads(proc.stdout)
    assert report["total"] == 10000 and report["correct"] == correct
    assert sum(map(sum, report["confusion"])) == 10000
    text = run("eval", tmp_path / "run" / "model.pt", "--data-dir", data_dir).stdout
    assert f"{correct}/10000 = " in text and "most confused" in text


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "--epochs: must be a positive finite number"),
    (["--batch-size", "0"], "--batch-size: must be a positive whole number"),
    (["--augment", "[1]"], "--augment: must be a JSON object"),
    (["--lr", "-1"], "--lr: must be a positive finite number"),
    (["--batch-size", "abc"], "--batch-size: invalid"),
    (["--model", "resnet"], "invalid choice: 'resnet'"),
    (["--dataset", "cifar"], "invalid choice: 'cifar'"),
])
def test_absurd_flags(flags, message):
    assert_clean_error(run("train", *flags), message, code=2)


def test_missing_dataset_names_files_and_folder(tmp_path):
    proc = run("train", "--data-dir", tmp_path / "empty", "--out", tmp_path / "run")
    assert_clean_error(proc, "missing train-images-idx3-ubyte.gz")
    assert "put them in" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_corrupt_dataset_names_the_file(fake_data, tmp_path):
    img = fake_data / "MNIST/raw/train-images-idx3-ubyte.gz"
    img.write_bytes(img.read_bytes()[:300])
    assert_clean_error(run("train", "--data-dir", fake_data, "--out", tmp_path / "run"),
                       "train-images-idx3-ubyte.gz")


def test_unwritable_output_folder(fake_data, tmp_path):
    (tmp_path / "afile").write_text("x")
    assert_clean_error(run("train", "--data-dir", fake_data, "--out", tmp_path / "afile" / "run"),
                       "cannot write")


def test_eval_of_a_non_checkpoint(tmp_path):
    (tmp_path / "notes.pt").write_text("hello")
    assert_clean_error(run("eval", tmp_path / "notes.pt"), "notes.pt: not a readable checkpoint")
    assert_clean_error(run("eval", tmp_path / "missing.pt"), "missing.pt: no such checkpoint")
    (tmp_path / "ckpt-epoch001.pt").mkdir()  # a folder of that name is no checkpoint
    assert_clean_error(run("train", "--resume", tmp_path), "no checkpoint here to resume from")


def test_ctrl_c_saves_a_checkpoint_that_resumes_to_the_same_weights(data_dir, tmp_path):
    flags = ["--model", "mlp", "--epochs", "1", "--train-limit", "20000", "--log-interval", "20",
             "--data-dir", data_dir, "--no-progress"]
    env = {**os.environ, "MNISTLAB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mnistlab", "train", *map(str, flags), "--out", tmp_path / "a"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:  # wait for the first running-loss line: training is under way
        if "loss" in line:
            break
    time.sleep(0.05)  # well inside the epoch's 313 steps
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    ckpt = tmp_path / "a" / "ckpt-interrupt.pt"
    _, state = load_checkpoint(ckpt)
    assert 0 < state["step_in_epoch"] < 313
    assert not (tmp_path / "a" / "model.pt").exists()

    # the run's folder resumes from its latest checkpoint: the interrupt's, newer than epoch 0's
    (tmp_path / "a" / "ckpt-epoch000.pt").write_bytes(b"older")
    os.utime(tmp_path / "a" / "ckpt-epoch000.pt", ns=(0, 0))
    proc = run("train", "--resume", tmp_path / "a", "--data-dir", data_dir)
    assert proc.returncode == 0 and f"resuming {ckpt} at epoch 1" in proc.stdout, proc.stderr
    assert run("train", *flags, "--out", tmp_path / "b").returncode == 0
    resumed = load_checkpoint(tmp_path / "a" / "model.pt")[1]["model_state"]
    unbroken = load_checkpoint(tmp_path / "b" / "model.pt")[1]["model_state"]
    assert all(torch.equal(resumed[k], unbroken[k]) for k in unbroken)


def test_ensemble_eval_and_report_command(data_dir, tmp_path):
    runs = []
    for seed in (1, 2):
        out = tmp_path / f"r{seed}"
        proc = run("train", "--model", "mlp", "--epochs", "1", "--train-limit", "3000", "--seed", seed,
                   "--data-dir", data_dir, "--out", out, "--no-report")
        assert proc.returncode == 0, proc.stderr
        runs.append(out / "model.pt")
    proc = run("eval", *runs, "--json", "--data-dir", data_dir)
    report = json.loads(proc.stdout)
    assert len(report["members"]) == 2 and report["total"] == 10000
    assert 0 <= report["ece"] <= 1 and report["brier"] > 0
    best_member = max(m["correct"] for m in report["members"])
    assert report["correct"] >= best_member - 50  # averaging two models is not worse than either by much
    text = run("eval", *runs, "--data-dir", data_dir).stdout
    assert "ensemble of 2 models" in text and "ECE" in text
    proc = run("report", tmp_path / "r1", "--data-dir", data_dir)
    assert proc.returncode == 0 and (tmp_path / "r1" / "report.html").is_file()
    assert_clean_error(run("report", tmp_path), "no metrics.jsonl")


def test_eval_on_the_validation_split_the_run_held_out(data_dir, tmp_path):
    runs = {}
    for val_size in (1000, 2000):
        out = tmp_path / f"v{val_size}"
        proc = run("train", "--model", "mlp", "--epochs", "1", "--train-limit", "3000", "--val-size", val_size,
                   "--data-dir", data_dir, "--out", out, "--no-report")
        assert proc.returncode == 0, proc.stderr
        runs[val_size] = out
    last_val = [e for e in read_run_events(runs[1000]) if e["event"] == "validation"][-1]
    report = json.loads(run("eval", runs[1000] / "model.pt", "--split", "validation", "--json",
                            "--data-dir", data_dir).stdout)
    # the same 1,000 held-out images the run was judged on (the temperature leaves the argmax alone)
    assert (report["correct"], report["total"]) == (last_val["correct"], 1000)
    assert_clean_error(run("eval", runs[1000] / "model.pt", runs[2000] / "model.pt", "--split", "validation",
                           "--data-dir", data_dir), "held out a different validation split")
    no_val = tmp_path / "noval"
    assert run("train", "--model", "mlp", "--epochs", "1", "--train-limit", "500", "--data-dir", data_dir,
               "--out", no_val, "--no-report").returncode == 0
    assert_clean_error(run("eval", no_val / "model.pt", "--split", "validation", "--data-dir", data_dir),
                       "no validation split")


def _imports_torch(*argv) -> tuple[bool, str]:
    code = ("import sys\nfrom mnistlab.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, *map(str, argv)], capture_output=True, text=True, timeout=120)
    return proc.stdout.strip().endswith("True"), proc.stdout


def test_help_and_onnx_predictions_import_no_torch(tmp_path):
    from pathlib import Path

    from PIL import Image

    assert not _imports_torch("--help")[0]
    assert not _imports_torch("predict", "--help")[0]
    image = Image.new("L", (60, 60), 255)
    image.paste(0, (25, 10, 33, 50))  # a dark bar
    image.save(tmp_path / "bar.png")
    onnx = Path(__file__).parent / "data" / "v1" / "model.onnx"
    pytest.importorskip("onnxruntime")
    uses_torch, out = _imports_torch("predict", onnx, tmp_path / "bar.png")
    assert "bar.png: " in out and "top:" in out and not uses_torch
    assert _imports_torch("eval", "--help")[0]  # the check can fail: evaluation does need torch


@pytest.mark.parametrize("flags, message", [
    (["--seed", "1208925819614629174706176"], "--seed must be a whole number from 0 to"),
    (["--model-config", '{"widths": "abc"}', "--model", "mlp"], "model 'mlp' does not take the settings"),
    (["--model-config", '{"nosuch": 1}'], "model 'cnn' does not take the settings {\"nosuch\": 1}"),
    (["--model-config", '{"widths": [-3]}', "--model", "mlp"], "does not take the settings"),
    (["--augment", '{"degrees": "x"}'], "--augment degrees must be a number, not \"x\""),
    (["--augment", '{"elastic": 1, "elastic_sigma": 0}'], "--augment elastic_sigma must lie between 0.5"),
    (["--augment", '{"rotate": 3}'], "--augment takes degrees"),
    (["--threads", "10000"], "--threads 10000 is more than"),
    (["--device", "bogus"], "unknown device 'bogus'"),
    (["--device", "cuda"], "sees no CUDA GPU"),
    (["--compile", "--cuda-graph"], "choose one"),
    (["--resume", "x.pt", "--dry-run"], "cannot be combined with --resume"),
])
def test_contradictory_and_absurd_values_are_one_sentence(fake_data, tmp_path, flags, message):
    proc = run("train", *flags, "--data-dir", fake_data, "--out", tmp_path / "run", "--no-report")
    assert_clean_error(proc, message)
    assert len(proc.stderr.strip().splitlines()) == 1


def test_predict_refuses_a_missing_device_and_an_empty_folder(trained_cnn, tmp_path):
    from PIL import Image

    Image.new("L", (40, 40), 255).save(tmp_path / "white.png")
    for device, message in (("cuda", "sees no CUDA GPU"), ("bogus", "unknown device 'bogus'")):
        assert_clean_error(run("predict", trained_cnn, tmp_path / "white.png", "--device", device), message)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    assert_clean_error(run("predict", trained_cnn, tmp_path / "empty"), "no images found in")


def test_resume_flags_on_the_command_line(fake_data, tmp_path):
    assert run("train", "--model", "mlp", "--epochs", "1", "--batch-size", "20", "--data-dir", fake_data,
               "--out", tmp_path / "run", "--no-report").returncode == 0
    ckpt = tmp_path / "run" / "ckpt-epoch001.pt"
    assert_clean_error(run("train", "--resume", ckpt, "--lr", "0.01", "--data-dir", fake_data),
                       "--lr 0.01 differs from the resumed run's 0.1")
    assert_clean_error(run("train", "--resume", ckpt, "--preset", "fast", "--data-dir", fake_data),
                       "--preset starts a new run; it cannot be combined with --resume")
    proc = run("train", "--resume", ckpt, "--epochs", "2", "--data-dir", fake_data, "--no-report")
    assert proc.returncode == 0, proc.stderr
    assert [e["epoch"] for e in read_run_events(tmp_path / "run") if e["event"] == "epoch"] == [1, 2]
