"""Weights in safetensors: a finished run's model.safetensors, the card in its metadata, the
Hugging Face folder that `mnistlab export --format hf` writes, and damaged files."""

import json
import shutil
import socket
import struct

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mnistlab import CheckpointError, MnistlabError, RunConfig, load_model, train
from mnistlab.checkpoints import load_weights, save_weights, weights_bytes
from mnistlab.export import export
from mnistlab.pretrained import catalogue
from mnistlab_testkit.fakes import run_cli

PIXELS = np.random.default_rng(0).integers(0, 256, (64, 28, 28), dtype=np.uint8)


def test_a_finished_run_writes_model_safetensors_beside_model_pt(fake_data, tmp_path):
    cfg = RunConfig(model="bn-cnn", model_config={"channels": [4, 8], "hidden": 16}, epochs=1, val_size=50,
                    checkpoint_every=1)
    run = train(cfg, out=tmp_path / "run", data_dir=fake_data, progress=False, report=False).run_dir
    card, weights = load_weights(run / "model.pt")
    card2, weights2 = load_weights(run / "model.safetensors")
    assert card2 == card and card.temperature != 1.0  # the card as fitted at the end
    assert weights2.keys() == weights.keys() and all(torch.equal(weights[k], weights2[k]) for k in weights)
    np.testing.assert_array_equal(load_model(run / "model.safetensors").predict_proba(PIXELS),
                                  load_model(run / "model.pt").predict_proba(PIXELS))
    # any safetensors reader sees the card, as JSON, in the metadata
    with safe_open(str(run / "model.safetensors"), framework="np") as f:
        assert json.loads(f.metadata()["mnistlab"]) == card.to_dict()
    assert sorted(p.name for p in run.glob("*.safetensors")) == ["model.safetensors"]  # checkpoints stay .pt


def _card_and_weights():
    return load_weights(catalogue()["classic-cnn"].path)


def _with_metadata(path, metadata: dict):
    card, weights = _card_and_weights()
    save_file({k: v.contiguous() for k, v in weights.items()}, path, metadata=metadata)
    return path


def _damaged(tmp_path, kind: str):
    path = tmp_path / "m.safetensors"
    card, weights = _card_and_weights()
    good = weights_bytes(card, weights)
    if kind == "truncated":
        path.write_bytes(good[:-100])
    elif kind == "junk":
        path.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{junk")
    elif kind == "no card":
        _with_metadata(path, {"format": "pt"})
    elif kind == "card not JSON":
        _with_metadata(path, {"mnistlab": "{model: cnn"})
    elif kind == "NaN std":
        _with_metadata(path, {"mnistlab": json.dumps({**card.to_dict(), "normalization": [0.1, float("nan")]})})
    elif kind == "infinite temperature":
        _with_metadata(path, {"mnistlab": json.dumps({**card.to_dict(), "temperature": float("inf")})})
    elif kind == "another model":
        save_weights(card.__class__(**{**card.__dict__, "model": "mlp"}), weights, path)
    return path


DAMAGE_SAID = {  # each kind of damage _damaged makes -> what loading the file says
    "truncated": "m.safetensors: not a readable safetensors file",
    "junk": "m.safetensors: not a readable safetensors file",
    "no card": "without mnistlab's model card in its metadata",
    "card not JSON": "the model card in its metadata is not valid JSON",
    "NaN std": "its normalisation is not two numbers",
    "infinite temperature": "its temperature is inf, outside",
    "another model": "its weights do not fit the model 'mlp'",
}


@pytest.mark.parametrize("kind", DAMAGE_SAID)
def test_damaged_safetensors_files_are_one_sentence(tmp_path, kind):
    path, message = _damaged(tmp_path, kind), DAMAGE_SAID[kind]
    with pytest.raises(CheckpointError, match=message):
        load_model(path)
    proc = run_cli("eval", path)
    assert proc.returncode == 1 and message.split("'")[0] in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_safetensors_file_is_known_by_its_bytes_too(tmp_path):
    card, weights = _card_and_weights()
    save_weights(card, weights, tmp_path / "weights")  # no suffix
    assert load_model(tmp_path / "weights").card == card
    with pytest.raises(CheckpointError, match="no such safetensors file"):
        load_model(tmp_path / "missing.safetensors")


def test_the_hugging_face_folder_round_trip(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    out = export("classic-cnn", "hf", tmp_path / "hf")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "mnistlab" and config["classes"] == list("0123456789")
    readme = (out / "README.md").read_text()
    assert readme.startswith("---\nlibrary_name: mnistlab\n") and "softmax(logits / 1.5019)" in readme
    monkeypatch.setattr(socket.socket, "connect", no_network)
    model = load_model(out)
    np.testing.assert_array_equal(model.predict_proba(PIXELS), load_model("classic-cnn").predict_proba(PIXELS))
    # config.json is the card: tools that rewrite model.safetensors may drop its metadata
    _, weights = load_weights(out)
    save_file({k: v.contiguous() for k, v in weights.items()}, out / "model.safetensors")
    config["classes"] = list("abcdefghij")
    (out / "config.json").write_text(json.dumps(config))
    assert load_model(out).classes == tuple("abcdefghij")
    # an earlier export is replaced; a folder that holds more (a hub clone's .git) is not
    assert export("classic-cnn", "hf", out) == out and load_model(out).classes[0] == "0"
    (out / ".git").mkdir()
    with pytest.raises(MnistlabError, match="already exists and holds other files"):
        export("classic-cnn", "hf", out)
    assert (out / ".git").is_dir()


@pytest.mark.parametrize("config, message", [
    (None, "a folder, but not a model in the Hugging Face layout"),
    ("{not json", "config.json is not valid JSON"),
    ('{"model": "cnn"}', "config.json: its model card lacks 'dataset'"),
])
def test_a_folder_that_is_not_a_model_is_one_sentence(tmp_path, config, message):
    shutil.copytree(export("classic-cnn", "hf", tmp_path / "hf"), tmp_path / "bad")
    if config is None:
        (tmp_path / "bad" / "config.json").unlink()
    else:
        (tmp_path / "bad" / "config.json").write_text(config)
    with pytest.raises(CheckpointError, match=message):
        load_model(tmp_path / "bad")


def test_the_byte_sniffing_does_not_take_other_files_for_safetensors(tmp_path):
    (tmp_path / "x.pt").write_bytes(struct.pack("<Q", 10**9) + b"{")  # a header longer than the file
    with pytest.raises(CheckpointError, match="x.pt: not a readable checkpoint"):
        load_model(tmp_path / "x.pt")
