import json

import numpy as np
import pytest
import torch
import torch.nn as nn

pytest.importorskip("onnxruntime")
import onnxruntime as ort  # noqa: E402

from fakes import run_cli
from mnistlab import MODELS, MnistlabError, RunConfig, load_model, load_split, train  # noqa: E402
from mnistlab.export import export, fold_batchnorm  # noqa: E402


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

    torch.onnx.export(Flat(), (torch.zeros(1, 1, 28, 28),), tmp_path / "foreign.onnx", dynamo=False)
    with pytest.raises(MnistlabError, match="not one exported by mnistlab"):
        load_model(tmp_path / "foreign.onnx")
    import onnx

    torch.onnx.export(Flat(), (torch.zeros(1, 3, 32, 32),), tmp_path / "shape.onnx", dynamo=False)
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
