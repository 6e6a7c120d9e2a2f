import sys

import pytest

from mnistlab import MnistlabError, RunConfig, train
from mnistlab.training.runs import read_run_events
from mnistlab_testkit.fakes import run_cli

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def _scalars(folder) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(s.step, s.value) for s in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_holds_what_metrics_jsonl_holds(fake_data, tmp_path):
    cfg = RunConfig(model="mlp", epochs=2, batch_size=20, optimizer="adam", lr=0.01, schedule="onecycle",
                    val_size=40, log_interval=3, eval_every=1)
    train(cfg, out=tmp_path / "run", data_dir=fake_data, progress=False, tensorboard=True)
    events = read_run_events(tmp_path / "run")
    got = _scalars(tmp_path / "run" / "tensorboard")

    def expected(kind, key, step="epoch"):
        return [(e[step], pytest.approx(e[key], rel=1e-6)) for e in events if e["event"] == kind]

    steps = expected("train", "loss", "global_step")
    assert len(steps) == 2 * 3 and steps[-1][0] == 16  # 8 steps an epoch, logged at 3, 6 and 8
    assert got["train/loss"] == steps
    assert got["train/lr"] == expected("train", "lr", "global_step")
    assert len({v for _, v in got["train/lr"]}) >= 5  # the one-cycle schedule, not a constant
    assert got["validation/accuracy"] == expected("validation", "accuracy")
    assert got["test/accuracy"] == expected("test", "accuracy")
    assert got["test/loss"] == expected("test", "loss")
    assert got["epoch/train_loss"] == expected("epoch", "train_loss")
    seconds = [e["train_seconds"] for e in events if e["event"] == "epoch"]
    assert got["epoch/seconds"] == [(1, pytest.approx(seconds[0], rel=1e-6)),
                                    (2, pytest.approx(seconds[1] - seconds[0], rel=1e-6))]


def test_cli_tensorboard_folder_holds_one_subfolder_a_run(fake_data, tmp_path):
    for name in ("a", "b"):
        proc = run_cli("train", "--model", "mlp", "--epochs", "1", "--data-dir", fake_data, "--out", tmp_path / name,
                       "--no-report", "--tensorboard", tmp_path / "tb")
        assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == ["a", "b"]
    assert len(_scalars(tmp_path / "tb" / "b")["test/accuracy"]) == 1
    assert not (tmp_path / "a" / "tensorboard").exists()


def test_missing_tensorboard_is_one_sentence_before_any_work(fake_data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now raises ImportError
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(MnistlabError, match=r"needs the tensorboard package: pip install 'mnistlab\[tensorboard\]'"):
        train(RunConfig(model="mlp", epochs=1), out=tmp_path / "run", data_dir=fake_data, tensorboard=True)
    assert not (tmp_path / "run").exists()
