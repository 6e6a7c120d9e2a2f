import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mnistlab import CheckpointError, MnistlabError, load_model
from mnistlab.card import ModelCard
from mnistlab.evaluation import evaluate
from mnistlab.inference import Classifier
from mnistlab.pretrained import DEFAULT, catalogue, is_name
from mnistlab_testkit.fakes import run_cli


@pytest.mark.parametrize("name", list(catalogue()))
def test_each_pretrained_model_matches_its_sha256_and_its_recorded_accuracy(name, data_dir):
    entry = catalogue()[name]
    assert hashlib.sha256(entry.path.read_bytes()).hexdigest() == entry.sha256
    model = load_model(name)
    assert model.card.dataset == entry.dataset and model.card.temperature != 1.0  # calibrated on validation
    ev = evaluate(model, data_dir)
    assert (ev.correct, ev.total) == (entry.test_correct, entry.test_total)  # exactly, not about


@pytest.mark.parametrize("name", list(catalogue()))
def test_each_pretrained_model_records_its_mnist_c_figures(name, data_dir):
    from mnistlab.data.corruptions import TEST
    from mnistlab.robustness import evaluate_corruptions

    figures = catalogue()[name].mnist_c
    assert figures is not None and figures["seed"] == 0 and set(figures["corruptions"]) == set(TEST)
    rows = figures["corruptions"].values()
    assert figures["mean_accuracy"] == pytest.approx(sum(r["correct"] / r["total"] for r in rows) / len(TEST), abs=1e-6)
    report = evaluate_corruptions([name], ["fog"], data_dir)  # one of them again: the same counts
    assert report.results["fog"].correct == figures["corruptions"]["fog"]["correct"]
    assert report.rejected.get("fog") == figures["corruptions"]["fog"]["rejected"]


def test_the_shipped_weights_are_safetensors_with_their_card_in_the_metadata():
    from safetensors import safe_open

    for name, entry in catalogue().items():
        assert entry.path.suffix == ".safetensors"
        with safe_open(str(entry.path), framework="np") as f:  # any safetensors reader, without mnistlab or torch
            assert ModelCard.from_dict(json.loads(f.metadata()["mnistlab"])) == load_model(name).card


def test_the_shipped_models_are_small_and_strong():
    models = catalogue()
    assert {"robust-real", "classic-cnn"} <= set(models) and DEFAULT == "robust-real"
    assert models["classic-cnn"].path.stat().st_size < 60_000 and models["classic-cnn"].accuracy >= 0.985
    # the default is the robust-real recipe's deep model (48/96/192): 2.7 MB, and at least 99.3% clean
    assert models["robust-real"].path.stat().st_size < 3_000_000 and models["robust-real"].accuracy >= 0.993


def test_names_and_paths_are_never_confused(tmp_path, monkeypatch):
    assert is_name("robust-real") and is_name("classic-cnn")
    assert not any(is_name(p) for p in ("./robust-real", "robust-real.pt", "runs/robust-real", "model.onnx", ""))
    monkeypatch.chdir(tmp_path)
    shutil.copy(catalogue()["classic-cnn"].path, tmp_path / "robust-real")  # a file that happens to share the name
    assert load_model("robust-real").card.model == "deep"  # the name wins...
    assert load_model("./robust-real").card.model == "cnn"  # ...and the path says it is a path
    with pytest.raises(MnistlabError, match="no pretrained model is called 'fastest'"):
        load_model("fastest")
    assert isinstance(Classifier.from_pretrained("classic-cnn"), Classifier)
    with pytest.raises(MnistlabError, match="is a path"):
        Classifier.from_pretrained("./robust-real")


def test_the_default_is_named_after_its_preset_and_its_old_name_is_no_model():
    assert Classifier.from_pretrained().card == load_model("robust-real").card
    assert "robust-real" in catalogue()["robust-real"].command  # the preset that made it
    with pytest.raises(MnistlabError, match="no pretrained model is called 'fast'; choose one of: .*robust-real"):
        load_model("fast")  # the preset keeps the name; no alias
    proc = run_cli("eval", "fast")
    assert proc.returncode != 0 and "no pretrained model is called 'fast'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_damaged_pretrained_file_is_refused(tmp_path, monkeypatch):
    import mnistlab.pretrained as pretrained

    entry = catalogue()["classic-cnn"]
    bad = tmp_path / "weights"
    bad.mkdir()
    raw = bytearray(entry.path.read_bytes())
    raw[-100] ^= 1
    (bad / entry.file).write_bytes(bytes(raw))
    monkeypatch.setattr(pretrained.Pretrained, "path", property(lambda self: bad / self.file))
    with pytest.raises(CheckpointError, match="fails its sha256 check"):
        load_model("classic-cnn")


def test_commands_without_a_model_use_the_default_and_say_so(tmp_path, data_dir):
    from PIL import Image, ImageDraw

    img = Image.new("L", (120, 120), 255)
    ImageDraw.Draw(img).line([(60, 15), (60, 105)], fill=0, width=10)
    img.save(tmp_path / "one.png")
    proc = run_cli("predict", tmp_path / "one.png")
    assert proc.returncode == 0 and "one.png: 1 " in proc.stdout
    assert "using the pretrained 'robust-real'" in proc.stderr
    proc = run_cli("predict", "classic-cnn", tmp_path / "one.png", "--json")
    assert json.loads(proc.stdout)["prediction"] == "1" and "using the pretrained" not in proc.stderr
    proc = run_cli("eval", "--json", "--data-dir", data_dir)
    assert json.loads(proc.stdout)["correct"] == catalogue()[DEFAULT].test_correct
    listing = run_cli("models").stdout
    for name, entry in catalogue().items():
        assert name in listing and f"{entry.test_correct}/{entry.test_total}" in listing


@pytest.mark.parametrize("name", list(catalogue()))
def test_the_onnx_copy_answers_as_the_pytorch_model_does(name, data_dir):
    """The shipped ONNX copy, which `mnistlab predict` runs to start without torch, says what the shipped
    weights say: the same label, the same confidence to the printed digit, the same "not a digit"."""
    pytest.importorskip("onnxruntime")
    from mnistlab import load_split
    from mnistlab.data.outliers import outlier_set

    shipped, copy = load_model(name), load_model(name, torch_free=True)
    assert shipped.backend.runtime.startswith("PyTorch") and copy.backend.runtime == "ONNX Runtime"
    assert copy.card == shipped.card
    digits = load_split("mnist", "test", data_dir)[0][:1000].numpy()
    images = np.concatenate([digits, outlier_set("validation", 400, data_dir=data_dir)])
    answers = []
    for model in (shipped, copy):
        predictions = [model.predict_pixels(image) for image in images if image.max() >= 26]
        answers.append([(p.label, f"{100 * p.confidence:.1f}", p.rejected) for p in predictions])
    assert answers[0] == answers[1]
    if shipped.card.reject_score:  # both kinds of answer are compared: digits and "not a digit"
        assert 0 < sum(rejected for _, _, rejected in answers[0]) < len(answers[0])


def test_predict_runs_the_onnx_copy_without_torch_and_prints_what_pytorch_prints(tmp_path):
    pytest.importorskip("onnxruntime")
    from PIL import Image, ImageDraw

    img = Image.new("L", (120, 120), 255)
    ImageDraw.Draw(img).line([(60, 15), (60, 105)], fill=0, width=10)
    img.save(tmp_path / "one.png")
    img = Image.new("L", (120, 120), 255)
    for line in (((40, 10), (40, 110)), ((80, 10), (80, 110)), ((10, 40), (110, 40)), ((10, 80), (110, 80))):
        ImageDraw.Draw(img).line(line, fill=0, width=8)
    img.save(tmp_path / "hash.png")  # a '#': not a digit
    code = ("import sys; from mnistlab.cli import main; rc = main(sys.argv[1:]); "
            "print('torch imported' if 'torch' in sys.modules else 'no torch'); sys.exit(rc)")
    fast = subprocess.run([sys.executable, "-c", code, "predict", str(tmp_path / "one.png"),
                           str(tmp_path / "hash.png")], capture_output=True, text=True, timeout=300)
    assert fast.returncode == 0, fast.stderr
    assert fast.stdout.splitlines()[-1] == "no torch"
    weights = catalogue()[DEFAULT].path  # the same model by its file: the PyTorch backend
    slow = run_cli("predict", weights, tmp_path / "one.png", tmp_path / "hash.png")
    assert slow.returncode == 0 and fast.stdout.splitlines()[:-1] == slow.stdout.splitlines()
    assert "one.png: 1 " in slow.stdout and "hash.png: not a digit" in slow.stdout


def test_a_damaged_onnx_copy_is_refused(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    import mnistlab.pretrained as pretrained

    entry = catalogue()["classic-cnn"]
    raw = bytearray((entry.path.parent / entry.onnx["file"]).read_bytes())
    raw[-100] ^= 1
    (tmp_path / entry.onnx["file"]).write_bytes(bytes(raw))
    shutil.copy(entry.path, tmp_path / entry.file)
    monkeypatch.setattr(pretrained, "_shipped", lambda file: tmp_path / file)
    assert load_model("classic-cnn").backend.runtime == "PyTorch"  # the weights themselves are whole
    with pytest.raises(CheckpointError, match="fails its sha256 check"):
        load_model("classic-cnn", torch_free=True)
