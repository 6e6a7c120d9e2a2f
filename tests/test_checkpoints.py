import os

import pytest
import torch

from mnistlab import CheckpointError, MnistlabError, ModelCard
from mnistlab.checkpoints import load_checkpoint, save_checkpoint
from mnistlab.fileio import atomic_write
from mnistlab.inference import load_model


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
