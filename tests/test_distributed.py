"""torchrun with 2 CPU processes (gloo, loopback) against one process with the same global batch."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mnistlab import RunConfig, train
from mnistlab.checkpoints import load_checkpoint
from mnistlab.training.runs import read_run_events
from mnistlab_testkit.fakes import children

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
FLAGS = ["--preset", "fast", "--train-limit", "12000", "--no-progress", "--checkpoint-every", "1"]


def torchrun(args, nproc=2, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MNISTLAB_OFFLINE": "1"}
    cmd = [TORCHRUN, "--nproc-per-node", str(nproc), "--standalone",
           "-m", "mnistlab", "train", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, **kw)


def events(run_dir, kind):
    return [e for e in read_run_events(run_dir) if e["event"] == kind]


@pytest.fixture(scope="module")
def two_and_one(data_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    proc = torchrun([*FLAGS, "--data-dir", data_dir, "--out", tmp / "two", "--epochs", "2"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg = RunConfig(model="bn-cnn", model_config={"channels": [16, 32], "hidden": 256}, optimizer="adam", lr=0.01,
                    schedule="onecycle", batch_size=128, epochs=2, label_smoothing=0.1, train_limit=12000,
                    checkpoint_every=1)
    train(cfg, out=tmp / "one", data_dir=data_dir, progress=False)
    return tmp, proc


def test_two_processes_see_the_same_data_and_steps_as_one(two_and_one):
    tmp, proc = two_and_one
    two, one = events(tmp / "two", "epoch"), events(tmp / "one", "epoch")
    key = lambda e: (e["epoch"], e["steps"], e["samples"], e["index_sum"], e["index_sq_sum"])  # noqa: E731
    assert [key(e) for e in two] == [key(e) for e in one]
    assert two[-1]["steps"] == 2 * 94  # 12000 images, global batch 128
    acc2, acc1 = events(tmp / "two", "test")[-1], events(tmp / "one", "test")[-1]
    assert acc2["total"] == acc1["total"] == 10000
    assert abs(acc2["accuracy"] - acc1["accuracy"]) <= 0.001
    assert acc2["accuracy"] >= 0.98


def test_only_rank_zero_speaks(two_and_one):
    tmp, proc = two_and_one
    assert proc.stdout.count("test accuracy:") == 1
    assert "2 processes" in proc.stdout


def test_checkpoints_cross_world_sizes(two_and_one, data_dir, tmp_path):
    tmp, _ = two_and_one
    # two processes -> one: continue the 2-process run's first epoch for one more epoch
    shutil.copy(tmp / "two" / "ckpt-epoch001.pt", tmp_path / "from2.pt")
    one = train(resume=tmp_path / "from2.pt", out=tmp_path / "one", data_dir=data_dir, progress=False)
    assert events(tmp_path / "one", "epoch")[-1]["steps"] == 188
    assert one.test_accuracy >= 0.98
    # one process -> two
    shutil.copy(tmp / "one" / "ckpt-epoch001.pt", tmp_path / "from1.pt")
    proc = torchrun(["--resume", tmp_path / "from1.pt", "--data-dir", data_dir, "--out", tmp_path / "two"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert events(tmp_path / "two", "epoch")[-1]["steps"] == 188
    assert events(tmp_path / "two", "test")[-1]["accuracy"] >= 0.98


def test_a_killed_rank_ends_the_job_and_the_last_checkpoint_resumes(data_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MNISTLAB_OFFLINE": "1"}
    cmd = [TORCHRUN, "--standalone", "--nproc-per-node", "2", "-m", "mnistlab",
           "train", *FLAGS, "--epochs", "40", "--data-dir", str(data_dir), "--out", str(tmp_path / "run")]
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    ckpt = tmp_path / "run" / "ckpt-epoch001.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and job.poll() is None:
        time.sleep(0.1)
    assert ckpt.exists()
    workers = children(job.pid)
    assert len(workers) == 2
    os.kill(workers[1], signal.SIGKILL)
    out, err = job.communicate(timeout=300)
    assert job.returncode != 0
    assert "SIGKILL" in err or "Signal 9" in err or "exitcode" in err
    assert "test accuracy:" not in out
    saved = sorted(p.name for p in (tmp_path / "run").glob("ckpt-epoch*.pt"))
    last = tmp_path / "run" / saved[-1]
    _, state = load_checkpoint(last)  # intact: loads and is a complete training state
    assert "optimizer_state" in state and state["epoch"] >= 2
    # finish it in one process, two more epochs beyond the checkpoint
    shutil.copy(last, tmp_path / "last.pt")
    done = train(resume=tmp_path / "last.pt", out=tmp_path / "resumed", data_dir=data_dir,
                 progress=False)
    assert done.test_total == 10000 and torch.isfinite(torch.tensor(done.train_seconds))
