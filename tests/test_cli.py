import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from mnistlab.checkpoints import load_checkpoint
from mnistlab.training.runs import read_run_events
from mnistlab_testkit.fakes import assert_one_sentence
from mnistlab_testkit.fakes import run_cli as run


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
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(tmp_path / "program.pt"))  # torch.load would warn first
    proc = run("eval", tmp_path / "program.pt")
    assert_clean_error(proc, "program.pt: a TorchScript program (torch.jit.save, or mnistlab export --format "
                             "torchscript), which mnistlab writes for other tools but does not read back")
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
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


@pytest.mark.parametrize("flags, message, code", [
    # argparse's refusals (exit 2, after the usage)
    (["--epochs", "0"], "--epochs: must be a positive finite number", 2),
    (["--batch-size", "0"], "--batch-size: must be a positive whole number", 2),
    (["--augment", "[1]"], "--augment: must be a JSON object", 2),
    (["--lr", "-1"], "--lr: must be a positive finite number", 2),
    (["--batch-size", "abc"], "--batch-size: must be a positive whole number, not abc", 2),
    (["--model", "resnet"], "invalid choice: 'resnet'", 2),
    (["--dataset", "cifar"], "invalid choice: 'cifar'", 2),
    # mnistlab's own (exit 1, one sentence)
    (["--seed", "1208925819614629174706176"], "--seed must be a whole number from 0 to", 1),
    (["--model-config", '{"widths": "abc"}', "--model", "mlp"], "model 'mlp' does not take the settings", 1),
    (["--model-config", '{"nosuch": 1}'], "model 'cnn' does not take the settings {\"nosuch\": 1}", 1),
    (["--model-config", '{"widths": [-3]}', "--model", "mlp"], "does not take the settings", 1),
    (["--augment", '{"degrees": "x"}'], "--augment degrees must be a number, not \"x\"", 1),
    (["--augment", '{"elastic": 1, "elastic_sigma": 0}'], "--augment elastic_sigma must lie between 0.5", 1),
    (["--augment", '{"rotate": 3}'], "--augment takes degrees", 1),
    (["--resume", "x.pt", "--dry-run"], "cannot be combined with --resume", 1),
    (["--threads", "10000"], "--threads 10000 is more than", 1),
    (["--device", "bogus"], "unknown device 'bogus'", 1),
    (["--device", "cuda"], "sees no CUDA GPU", 1),
    (["--compile", "--cuda-graph"], "choose one", 1),
    *[([flag, value], f"{flag} must be a finite number", 1) for flag in ("--momentum", "--weight-decay")
      for value in ("nan", "inf")],
    (["--epochs", "1e300"], "--epochs 1e+300 is more than", 1),
    (["--momentum", "5"], "--momentum must lie in [0, 1), not 5.0", 1),
    (["--epochs", "abc"], "argument --epochs: must be a positive finite number, not abc", 2),
    (["--processes", "2", "--init", "classic-cnn"], "fine-tuning (--init) runs in one", 1),
])
def test_absurd_and_contradictory_train_flags_are_refused_before_anything_is_written(fake_data, tmp_path, flags,
                                                                                     message, code):
    proc = run("train", *flags, "--data-dir", fake_data, "--out", tmp_path / "run", "--no-report")
    assert_one_sentence(proc, message, code)
    assert not (tmp_path / "run").exists()


def test_predict_says_when_a_model_name_is_mistyped_or_a_second_model_given(tmp_path):
    from PIL import Image

    bar = Image.new("L", (40, 40), 255)
    bar.paste(0, (17, 5, 23, 35))
    bar.save(tmp_path / "bar.png")
    assert_clean_error(run("predict", "classic-cnn", "robust-real", tmp_path / "bar.png"),
                       "robust-real is a model too: predict takes one model, before the images")
    assert_clean_error(run("predict", "robust-rea", tmp_path / "bar.png"),
                       "robust-rea: no such file, nor a pretrained model (those are: robust-real")


def test_predict_refuses_a_missing_device_and_an_empty_folder(trained_cnn, tmp_path):
    from PIL import Image

    bar = Image.new("L", (40, 40), 255)
    bar.paste(0, (17, 5, 23, 35))  # a digit to read: the images are checked before the device
    bar.save(tmp_path / "bar.png")
    for device, message in (("cuda", "sees no CUDA GPU"), ("bogus", "unknown device 'bogus'")):
        assert_clean_error(run("predict", trained_cnn, tmp_path / "bar.png", "--device", device), message)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    assert_clean_error(run("predict", trained_cnn, tmp_path / "empty"), "no images found in")
    among = run("predict", trained_cnn, tmp_path / "bar.png", tmp_path / "empty")  # read what is there, say what is not
    assert among.returncode == 0 and f"{tmp_path / 'empty'}: no images in this folder" in among.stderr
    twice = run("predict", trained_cnn, tmp_path / "bar.png", tmp_path / "bar.png")  # each as it is named
    assert twice.returncode == 0 and twice.stdout.count("bar.png: ") == 2, twice.stdout


def test_resume_flags_on_the_command_line(fake_data, tmp_path):
    assert run("train", "--model", "mlp", "--epochs", "1", "--batch-size", "20", "--data-dir", fake_data,
               "--out", tmp_path / "run", "--no-report").returncode == 0
    ckpt = tmp_path / "run" / "ckpt-epoch001.pt"
    assert_clean_error(run("train", "--resume", ckpt, "--lr", "0.01", "--data-dir", fake_data),
                       "--lr 0.01 differs from the resumed run's 0.1")
    assert_clean_error(run("train", "--resume", ckpt, "--preset", "fast", "--data-dir", fake_data),
                       "--preset starts a new run; it cannot be combined with --resume")
    # its last checkpoint, "resumed" into another folder, would train nothing
    assert_clean_error(run("train", "--resume", ckpt, "--out", tmp_path / "elsewhere", "--data-dir", fake_data),
                       "this run is finished")
    assert not (tmp_path / "elsewhere").exists()
    proc = run("train", "--resume", ckpt, "--epochs", "2", "--data-dir", fake_data, "--no-report")
    assert proc.returncode == 0, proc.stderr
    assert [e["epoch"] for e in read_run_events(tmp_path / "run") if e["event"] == "epoch"] == [1, 2]


def test_a_dry_run_takes_the_epochs_and_images_given():
    proc = run("train", "--dry-run", "--epochs", "2", "--train-limit", "100", "--print-config")
    assert proc.returncode == 0, proc.stderr
    assert "epochs = 2.0" in proc.stdout and "train_limit = 100" in proc.stdout
    proc = run("train", "--dry-run", "--print-config")
    assert "\nepochs = 1\n" in proc.stdout and "train_limit = 640" in proc.stdout


def test_the_library_refuses_what_the_cli_refuses(tmp_path):
    """A rule of the train command lives in the library, so that a Python user meets it too."""
    from mnistlab.errors import MnistlabError
    from mnistlab.training.config import DEFAULT_FAMILIES, from_preset
    from mnistlab.training.finetune import finetune

    with pytest.raises(MnistlabError, match="--outlier-families chooses"):  # even all four, never ignored
        from_preset(None, outlier_families=",".join(DEFAULT_FAMILIES))
    assert from_preset(None, outlier_families=",".join(DEFAULT_FAMILIES), outlier_exposure=0.5).outlier_exposure == 0.5
    with pytest.raises(MnistlabError, match="give --dataset PATH too"):
        finetune("classic-cnn", "", out=tmp_path / "a")
    with pytest.raises(MnistlabError, match="--lr does not apply to --init"):
        finetune("classic-cnn", "mnist", out=tmp_path / "b", settings={"lr": 0.1})
    with pytest.raises(MnistlabError, match="--dry-run does not apply to --init"):
        finetune("classic-cnn", "mnist", out=tmp_path / "c", settings={"dry_run": True})
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_the_cli_leaves_its_parsed_arguments_alone(monkeypatch, tmp_path):
    """Commands read the parsed namespace and never write to it (a config file's options included)."""
    import argparse

    from mnistlab import cli

    seen = []

    class Frozen(argparse.Namespace):
        def __setattr__(self, name, value):
            if seen:  # once parsing is over
                raise AssertionError(f"the command set args.{name}")
            super().__setattr__(name, value)

    def parse(self, args=None, namespace=None):
        ns = real(self, args, Frozen())
        seen.append(ns)
        return ns

    real = argparse.ArgumentParser.parse_args
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse)
    config = tmp_path / "c.toml"
    config.write_text('preset = "fast"\nout = "elsewhere"\nepochs = 2\n')
    assert cli.main(["train", "--config", str(config), "--print-config"]) == 0
    assert seen and seen[0].preset is None and seen[0].out is None


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


def test_the_first_line_helper_survives_empty_messages():
    from mnistlab.errors import first_line

    assert first_line(RuntimeError("")) == "RuntimeError"
    assert first_line(ValueError("one\ntwo")) == "one"


def test_models_lists_a_registered_model_without_a_docstring(monkeypatch, capsys):
    from mnistlab import cli
    from mnistlab.models import MODELS

    monkeypatch.setitem(MODELS, "bare", type("Bare", (torch.nn.Module,), {}))
    assert cli.main(["models"]) == 0
    assert "bare     (no description)" in capsys.readouterr().out


def test_predict_checks_its_images_before_it_loads_the_model(tmp_path):
    """A missing file, or one that is not an image, is said in one sentence, before the model is loaded:
    a model file that would fail (or take long) to load is never touched."""
    (tmp_path / "bad.pt").write_bytes(b"garbage")  # loading it would fail with a sentence of its own
    (tmp_path / "words.png").write_text("not a picture")
    for image, said in (("missing.png", "missing.png: no such file."),
                        ("words.png", "words.png: not an image (or a format Pillow cannot read).")):
        proc = run("predict", tmp_path / "bad.pt", tmp_path / image)
        assert proc.returncode == 1 and proc.stdout == ""
        assert proc.stderr.strip().splitlines() == [f"mnistlab: {tmp_path}/{said}"]
    proc = run("predict", tmp_path / "bad.pt", tmp_path / "missing.png", "--json")
    assert json.loads(proc.stdout) == {"source": str(tmp_path / "missing.png"), "error": str(tmp_path / "missing.png")
                                       + ": no such file."}


@pytest.mark.parametrize("command, target", [(["train", "--dry-run"], "mnistlab.training.loop.train"),
                                             (["serve"], "mnistlab.serve.server.serve")])
def test_a_command_collects_garbage_once_its_modules_are_imported(monkeypatch, command, target):
    """The console script collects nothing while a command imports torch (a tenth of a second of
    start-up); a training run or a server then collects as usual."""
    import gc

    from mnistlab import cli

    seen = []

    def stand_in(*args, **kwargs):
        seen.append(gc.isenabled())
        raise cli.MnistlabError("stop here")

    monkeypatch.setattr(target, stand_in)
    gc.disable()  # as entry() does
    try:
        assert cli.main(command) == 1
    finally:
        gc.enable()
        gc.unfreeze()
    assert seen == [True]


def test_cuda_graph_asked_for_without_a_gpu_is_said(fake_data, tmp_path):
    asked = run("train", "--dry-run", "--cuda-graph", "--no-report", "--device", "cpu", "--data-dir", str(fake_data),
                "--out", str(tmp_path / "a"))
    assert asked.returncode == 0, asked.stderr
    assert "--cuda-graph captures the step on a CUDA GPU; on this run's cpu device it runs eagerly" in asked.stderr
    preset = run("train", "--dry-run", "--preset", "classic", "--no-report", "--device", "cpu", "--data-dir",
                 str(fake_data), "--out", str(tmp_path / "b"))  # the preset's own capture: nothing to say on a CPU
    assert preset.returncode == 0 and "cuda-graph" not in preset.stderr, preset.stderr
