import io
import json
import os
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

pytest.importorskip("onnxruntime")
import onnxruntime as ort  # noqa: E402

from mnistlab import MODELS, CheckpointError, MnistlabError, RunConfig, load_model, load_split, train  # noqa: E402
from mnistlab.export import export, fold_batchnorm  # noqa: E402
from mnistlab.pretrained import catalogue  # noqa: E402
from mnistlab_testkit.fakes import run_cli


@pytest.fixture(scope="module")
def test_set(data_dir):
    return load_split("mnist", "test", data_dir=data_dir, download=False)


SMALL = {"simple": {"kernel": 5, "channels": [8, 16, 24, 32, 40]}}  # its layers, at a width a CPU test affords


@pytest.fixture(scope="module", params=list(MODELS))
def short_trained(request, data_dir, tmp_path_factory):
    """Every registered model, trained briefly on real MNIST (batch-norm statistics included)."""
    out = tmp_path_factory.mktemp(request.param)
    cfg = RunConfig(model=request.param, model_config=SMALL.get(request.param, {}), epochs=1, train_limit=3000,
                    optimizer="adam", lr=0.003)
    return train(cfg, out=out, data_dir=data_dir, progress=False).model_path


def torch_probs(path, images):
    return load_model(path).predict_proba(images)


def ort_probs(path, images):
    return load_model(path).predict_proba(images)


@pytest.mark.parametrize("probs", [False, True])
def test_onnx_parity_on_the_whole_test_set(short_trained, test_set, tmp_path, probs):
    images, _ = test_set
    onnx_path = export(short_trained, "onnx", tmp_path / "m.onnx", probs=probs)
    ref, got = torch_probs(short_trained, images), ort_probs(onnx_path, images)
    assert (ref.argmax(1) == got.argmax(1)).all()
    assert np.abs(ref - got).max() <= 1e-5
    session = ort.InferenceSession(str(onnx_path))
    meta = json.loads(session.get_modelmeta().custom_metadata_map["mnistlab"])
    assert meta["classes"] == [str(i) for i in range(10)] and meta["normalization"] == [0.1307, 0.3081]
    assert session.get_inputs()[0].shape[0] == "batch"  # dynamic batch size
    if any(name in str(short_trained) for name in ("bn-cnn", "deep")):
        kinds = {n.op_type for n in __import__("onnx").load(str(onnx_path)).graph.node}
        assert "BatchNormalization" not in kinds  # folded into the convolutions


def test_torchscript_parity(short_trained, test_set, tmp_path):
    images, _ = test_set
    path = export(short_trained, "torchscript", tmp_path / "m.ts.pt", probs=True)
    files = {"mnistlab.json": ""}
    scripted = torch.jit.load(str(path), _extra_files=files)
    meta = json.loads(files["mnistlab.json"])
    x = ((images.float() / 255 - meta["normalization"][0]) / meta["normalization"][1]).unsqueeze(1)
    with torch.no_grad():
        got = scripted(x).double().numpy()
    ref = torch_probs(short_trained, images)
    assert (ref.argmax(1) == got.argmax(1)).all() and np.abs(ref - got).max() <= 1e-5


@pytest.mark.parametrize("probs", [False, True])
def test_pt2_parity_on_the_whole_test_set(short_trained, test_set, tmp_path, probs):
    images, _ = test_set
    path = export(short_trained, "pt2", tmp_path / "m.pt2", probs=probs)
    ref, model = torch_probs(short_trained, images), load_model(path)
    got = model.predict_proba(images)
    assert (ref.argmax(1) == got.argmax(1)).all()
    assert np.abs(ref - got).max() <= 1e-5
    assert model.backend.runtime == "PyTorch (torch.export)" and model.card == load_model(short_trained).card
    assert model.backend.outputs == ("probabilities" if probs else "logits")
    np.testing.assert_allclose(model.predict_proba(images[:1]), got[:1], rtol=0, atol=1e-6)  # any batch size
    files = {"mnistlab.json": ""}  # the card, in the archive's extra files, for any reader of .pt2
    program = torch.export.load(path, extra_files=files)
    assert json.loads(files["mnistlab.json"])["output"] == ("probabilities" if probs else "logits")
    if any(name in str(short_trained) for name in ("bn-cnn", "deep")):
        assert not any("batch_norm" in str(n.target) for n in program.graph.nodes)  # folded


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {Path(os.environ.get('TMPDIR', '/tmp')) / 'mnistlab-pt2-pwned'}",))


def _rewrite(src: Path, dst: Path, change) -> Path:
    """A copy of a .pt2 archive with members changed: change(inner name, bytes) -> bytes."""
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w") as new:
        for info in old.infolist():
            new.writestr(info, change(info.filename.split("/", 1)[1], old.read(info)))
    return dst


def _pickled_inputs(name, data):
    if not name.startswith("data/sample_inputs/"):
        return data
    buf = io.BytesIO()
    torch.save(((Evil(),), {}), buf)
    return buf.getvalue()


def _pickled_weight(name, data):
    if not name.endswith("_weights_config.json"):
        return data
    config = json.loads(data)
    next(iter(config["config"].values()))["use_pickle"] = True
    return json.dumps(config).encode()


def test_pt2_files_that_are_not_ours_or_not_plain_are_refused(tmp_path):
    good = export("classic-cnn", "pt2", tmp_path / "good.pt2")
    pwned = Path(os.environ.get("TMPDIR", "/tmp")) / "mnistlab-pt2-pwned"
    pwned.unlink(missing_ok=True)
    for change, message in ((_pickled_inputs, "refused: the archive holds pickled objects"),
                            (_pickled_weight, "refused: the archive holds pickled objects")):
        with pytest.raises(CheckpointError, match=message):
            load_model(_rewrite(good, tmp_path / f"{change.__name__}.pt2", change))
    assert not pwned.exists()  # checked before torch.export.load, which would have run it
    (tmp_path / "junk.pt2").write_bytes(b"PK\x03\x04junk")
    with pytest.raises(CheckpointError, match="junk.pt2: not a readable .pt2 program"):
        load_model(tmp_path / "junk.pt2")

    class Flat(nn.Module):
        def forward(self, images):
            return images.flatten(1)[:, :10]

    program = torch.export.export(Flat(), (torch.zeros(2, 1, 28, 28),))
    torch.export.save(program, tmp_path / "foreign.pt2")
    with pytest.raises(CheckpointError, match="not one exported by mnistlab"):
        load_model(tmp_path / "foreign.pt2")
    card = json.dumps({**load_model("classic-cnn").card.to_dict(), "classes": list("abc")})
    torch.export.save(program, tmp_path / "shape.pt2", extra_files={"mnistlab.json": card})
    with pytest.raises(CheckpointError, match=r"does not map images \[N, 1, 28, 28\] to \[N, 3\]"):
        load_model(tmp_path / "shape.pt2")
    card = json.dumps({**load_model("classic-cnn").card.to_dict(), "temperature": float("nan")})
    torch.export.save(program, tmp_path / "nan.pt2", extra_files={"mnistlab.json": card})
    with pytest.raises(CheckpointError, match="nan.pt2: its temperature is nan, outside"):
        load_model(tmp_path / "nan.pt2")


def test_a_pt2_program_goes_on_to_onnx_and_the_web_page_only(tmp_path, test_set):
    images, _ = test_set
    pt2 = export("classic-cnn", "pt2", tmp_path / "m.pt2")
    ref = load_model("classic-cnn").predict_proba(images[:2000])
    onnx_path = export(pt2, "onnx", tmp_path / "m.onnx")
    assert np.abs(load_model(onnx_path).predict_proba(images[:2000]) - ref).max() <= 1e-5
    site = export(pt2, "web", tmp_path / "site")
    assert np.abs(load_model(site / "model.onnx").predict_proba(images[:2000]) - ref).max() <= 1e-5
    for fmt, probs in (("pt2", False), ("torchscript", False), ("onnx", True)):
        with pytest.raises(MnistlabError, match="exports only to ONNX or the web page, as the logits it gives"):
            export(pt2, fmt, tmp_path / f"again.{fmt}", probs=probs)
    with pytest.raises(MnistlabError, match="--format hf takes the weights of a model"):
        export(pt2, "hf", tmp_path / "hf")


def test_fold_batchnorm_across_max_pool():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(1, 4, 3), nn.MaxPool2d(2), nn.BatchNorm2d(4), nn.ReLU())
    seq[2].running_mean.uniform_(-1, 1)
    seq[2].running_var.uniform_(0.5, 2)
    seq[2].weight.data.uniform_(0.5, 2)
    seq.eval()
    folded = fold_batchnorm(seq)
    assert isinstance(folded[2], nn.Identity)
    x = torch.randn(8, 1, 12, 12)
    torch.testing.assert_close(folded(x), seq(x), atol=1e-5, rtol=1e-5)
    seq[2].weight.data[0] = -1.0  # a negative scale cannot cross the pool: left in place
    with pytest.warns(UserWarning, match="negative scale"):
        kept = fold_batchnorm(seq)
    assert isinstance(kept[2], nn.BatchNorm2d)
    torch.testing.assert_close(kept(x), seq(x))


def test_int8_keeps_accuracy_and_shrinks(data_dir, tmp_path, test_set):
    cfg = RunConfig(model="bn-cnn", epochs=1, train_limit=12000, optimizer="adam", lr=0.01, schedule="onecycle",
                    batch_size=128)
    model = train(cfg, out=tmp_path / "run", data_dir=data_dir, progress=False).model_path
    fp32 = export(model, "onnx", tmp_path / "m.onnx")
    int8 = export(model, "onnx", tmp_path / "m.int8.onnx", int8=True, data_dir=data_dir)
    images, labels = test_set
    acc = [(ort_probs(p, images).argmax(1) == labels.numpy()).mean() for p in (fp32, int8)]
    assert acc[0] - acc[1] <= 0.002
    assert int8.stat().st_size < fp32.stat().st_size / 2.5


def test_foreign_and_misshapen_onnx_files_are_refused(tmp_path):
    class Flat(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :10]

    torch.onnx.export(Flat().eval(), (torch.zeros(1, 1, 28, 28),), tmp_path / "foreign.onnx", dynamo=True,
                      verbose=False)
    with pytest.raises(MnistlabError, match="not one exported by mnistlab"):
        load_model(tmp_path / "foreign.onnx")
    import onnx

    torch.onnx.export(Flat().eval(), (torch.zeros(1, 3, 32, 32),), tmp_path / "shape.onnx", dynamo=True,
                      verbose=False)
    m = onnx.load(str(tmp_path / "shape.onnx"))
    card = {"model": "cnn", "dataset": "mnist", "classes": list("0123456789"), "normalization": [0.1307, 0.3081]}
    onnx.helper.set_model_props(m, {"mnistlab": json.dumps(card)})
    onnx.save(m, str(tmp_path / "shape.onnx"))
    with pytest.raises(MnistlabError, match="not \\[N, 1, 28, 28\\]"):
        load_model(tmp_path / "shape.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(MnistlabError, match="not a readable ONNX model"):
        load_model(tmp_path / "junk.onnx")


def test_export_cli_errors(tmp_path, short_trained):
    (tmp_path / "afile").write_text("x")
    proc = run_cli("export", short_trained, "--out", tmp_path / "afile" / "m.onnx")
    assert proc.returncode == 1 and "cannot write" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    proc = run_cli("export", tmp_path / "bad.pt")
    assert proc.returncode == 1 and "bad.pt: not a readable checkpoint" in proc.stderr
    proc = run_cli("export", short_trained, "--format", "torchscript", "--int8")
    assert proc.returncode == 1 and "--int8 applies to ONNX" in proc.stderr


def test_the_cli_exports_pt2_and_hf_and_takes_them_as_models(tmp_path):
    from PIL import Image

    image = Image.new("L", (60, 60), 255)
    image.paste(0, (25, 10, 33, 50))  # a dark bar
    image.save(tmp_path / "bar.png")
    for out, fmt in (("m.pt2", "pt2"), ("hf", "hf")):
        proc = run_cli("export", "classic-cnn", tmp_path / out, "--format", fmt)
        assert proc.returncode == 0 and f"wrote {tmp_path / out}" in proc.stdout, proc.stderr
    shutil.copy(catalogue()["classic-cnn"].path, tmp_path / "m.safetensors")
    expected = json.loads(run_cli("predict", "classic-cnn", tmp_path / "bar.png", "--json").stdout)
    for model in ("m.pt2", "hf", "m.safetensors"):
        proc = run_cli("predict", tmp_path / model, tmp_path / "bar.png", "--json")
        got = json.loads(proc.stdout)
        assert got["prediction"] == expected["prediction"] == "1", proc.stderr
        assert got["confidence"] == pytest.approx(expected["confidence"], abs=1e-5)
    proc = run_cli("export", "classic-cnn", tmp_path / "m.ts.pt", "--format", "torchscript")
    assert proc.returncode == 0 and "--format pt2 (torch.export) is its successor" in proc.stderr


def test_export_probs_says_the_default_will_not_reject(tmp_path):
    note = []
    export("robust-real", "onnx", tmp_path / "p.onnx", probs=True, note=note.append)
    assert len(note) == 1 and "will not reject non-digits" in note[0] and "energy" in note[0]
    export("robust-real", "onnx", tmp_path / "l.onnx", note=note.append)  # logits keep the score: nothing to say
    assert len(note) == 1


def test_export_itself_says_what_the_cli_said(tmp_path, monkeypatch):
    """The deprecation note and the missing-onnx sentence come from export(), for Python users too."""
    note = []
    export("classic-cnn", "torchscript", tmp_path / "m.ts.pt", note=note.append)
    assert any("--format pt2 (torch.export) is its successor" in n for n in note)
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if onnx were not installed
    for fmt in ("onnx", "web"):
        with pytest.raises(MnistlabError, match="ONNX export needs onnx"):
            export("classic-cnn", fmt, tmp_path / f"x-{fmt}")
    assert not (tmp_path / "x-onnx").exists()


@pytest.mark.parametrize("order", [["robust-real", "--format", "onnx", "{out}"],
                                   ["--format", "onnx", "robust-real", "{out}"],
                                   ["robust-real", "{out}", "--format", "onnx"]])
def test_export_takes_its_options_before_between_or_after_the_paths(tmp_path, order):
    out = tmp_path / "x.onnx"
    result = run_cli("export", *[a.format(out=out) for a in order])
    assert result.returncode == 0, result.stderr
    assert out.is_file() and f"wrote {out}" in result.stdout


def test_export_without_a_path_says_where_it_wrote(tmp_path):
    import subprocess

    result = subprocess.run([sys.executable, "-m", "mnistlab", "export", "robust-real"], cwd=tmp_path, text=True,
                            capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "robust-real.onnx").is_file()
    assert str(tmp_path / "robust-real.onnx") in result.stdout and "no OUT was given" in result.stdout


def test_onnx_errors_without_a_message_are_one_sentence(tmp_path, monkeypatch):
    from mnistlab.onnx_backend import OnnxBackend

    def fail(*args, **kwargs):
        raise RuntimeError("")

    monkeypatch.setattr(ort, "InferenceSession", fail)
    with pytest.raises(MnistlabError, match=r"not a readable ONNX model \(RuntimeError\)"):
        OnnxBackend(tmp_path / "x.onnx")


def test_export_never_writes_over_the_model_it_exports_nor_as_a_folder(tmp_path):
    shutil.copy(catalogue()["classic-cnn"].path, tmp_path / "m.safetensors")
    before = (tmp_path / "m.safetensors").read_bytes()
    for fmt in ("onnx", "pt2"):
        with pytest.raises(MnistlabError, match="that is the model being exported"):
            export(tmp_path / "m.safetensors", fmt, tmp_path / "m.safetensors")
    assert (tmp_path / "m.safetensors").read_bytes() == before
    (tmp_path / "out").mkdir()
    proc = run_cli("export", tmp_path / "m.safetensors", tmp_path / "out")
    assert proc.returncode == 1 and "is a folder, and --format onnx writes one file" in proc.stderr
    assert not any((tmp_path / "out").iterdir())
    for fmt, name in (("onnx", "m.pt2"), ("pt2", "m.onnx")):  # each is read back by its suffix
        with pytest.raises(MnistlabError, match=f"--format {fmt} writes a .{fmt} file"):
            export(tmp_path / "m.safetensors", fmt, tmp_path / name)
        assert not (tmp_path / name).exists()
