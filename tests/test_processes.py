"""`mnistlab train --processes N` (issue 24, hypothesis 1): N single-threaded ranks on one machine,
started by mnistlab itself on its torchrun path. Repeatable bit for bit; one process's arithmetic in
another order, so equal to it within float rounding."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as td
import torch.multiprocessing as mp
from safetensors.torch import load_file

from mnistlab import distributed as dist
from mnistlab.launch import free_port, rank_environments
from mnistlab.training.report import wait_for_report
from mnistlab.training.runs import read_run_events
from mnistlab_testkit.fakes import alive, children, run_cli

FLAGS = ["--model", "cnn", "--train-limit", "640", "--epochs", "1", "--no-progress", "--no-report"]  # 10 steps


def trained(tmp_path, name, data_dir, *flags) -> dict:
    proc = run_cli("train", *FLAGS, "--data-dir", data_dir, "--out", tmp_path / name, *flags)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {"out": proc.stdout, **load_file(tmp_path / name / "model.safetensors")}


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a if k != "out")


def test_two_ranks_repeat_bit_for_bit_and_match_one_process(data_dir, tmp_path):
    first = trained(tmp_path, "two", data_dir, "--processes", "2")
    again = trained(tmp_path, "again", data_dir, "--processes", "2")
    assert same(first, again)
    assert first["out"].count("test accuracy:") == 1 and ", 2 processes)" in first["out"]
    # one process with one thread: the same mean gradients, summed in another order (fp32: bf16
    # rounds the two halves' weight gradients apart, and ten steps carry that further)
    two = trained(tmp_path, "two32", data_dir, "--processes", "2", "--precision", "fp32")
    one = trained(tmp_path, "one32", data_dir, "--threads", "1", "--precision", "fp32")
    assert not same(two, one)  # not the same arithmetic, so not the same bits...
    for k in ("conv1.weight", "conv2.weight", "fc.weight", "fc.bias"):  # ...but the same within float rounding
        torch.testing.assert_close(two[k], one[k], rtol=0, atol=1e-5 * float(one[k].abs().max()))
    seen = [[(e["samples"], e["index_sum"], e["index_sq_sum"]) for e in read_run_events(tmp_path / name)
             if e["event"] == "epoch"] for name in ("two32", "one32")]
    assert seen[0] == seen[1]  # the same images in the same steps


def test_the_report_of_two_ranks_is_drawn_from_their_test_pass(data_dir, tmp_path):
    proc = run_cli("train", *FLAGS[:-1], "--data-dir", data_dir, "--out", tmp_path / "run", "--processes", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    final = re.search(r"test accuracy: (\d+/10000 = [\d.]+%)", proc.stdout).group(1)
    page = wait_for_report(tmp_path / "run", timeout=240)  # drawn in the background, after the command
    assert f"<th>test accuracy</th><td>{final}</td>" in page.read_text()


def _gather(rank: int, port: int, out) -> None:
    os.environ.update(rank_environments(2, 1, port)[rank])
    td.init_process_group("gloo")
    items = torch.arange(7 * 3).view(7, 3)  # 7 rows: rank 0 holds 4, rank 1 holds 3
    out[rank] = dist.gather_shards(items[rank::2]).tolist()
    td.destroy_process_group()


def test_gather_shards_puts_the_ranks_items_back_in_order():
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_gather, args=(free_port(), out), nprocs=2)
        assert out[0] == out[1] == torch.arange(21).view(7, 3).tolist()


@pytest.mark.parametrize("killed", ["a rank", "the parent"])
def test_a_failed_rank_or_a_terminated_parent_stops_every_rank(killed, data_dir, tmp_path):
    cmd = [sys.executable, "-m", "mnistlab", "train", "--model", "cnn", "--epochs", "40", "--train-limit", "640",
           "--no-progress", "--no-report", "--checkpoint-every", "1", "--data-dir", str(data_dir),
           "--out", str(tmp_path / "run"), "--processes", "2"]
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "MNISTLAB_OFFLINE": "1"})
    deadline = time.time() + 300
    while not (tmp_path / "run" / "ckpt-epoch001.pt").exists() and time.time() < deadline and job.poll() is None:
        time.sleep(0.1)
    ranks = children(job.pid)
    assert len(ranks) == 2
    os.kill(ranks[1] if killed == "a rank" else job.pid, signal.SIGKILL if killed == "a rank" else signal.SIGTERM)
    out, err = job.communicate(timeout=120)
    assert job.returncode != 0 and "test accuracy:" not in out
    assert not any(alive(pid) for pid in ranks)  # none left behind, waiting on its peer


@pytest.mark.parametrize("flags", [["--processes", "0"], ["--processes", "two"]])
def test_processes_must_be_a_positive_number(flags, tmp_path):
    proc = run_cli("train", *flags, "--out", tmp_path / "run")
    assert proc.returncode == 2 and "--processes" in proc.stderr


def test_trainings_share_the_cores_and_a_dead_ones_share_comes_back(tmp_path):
    from mnistlab.device import CoreShare

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


def test_ctrl_c_is_said_once_and_its_hint_trains_as_many_processes(fake_data, tmp_path):
    import shlex

    cmd = [sys.executable, "-m", "mnistlab", "train", "--model", "mlp", "--epochs", "3", "--batch-size", "2",
           "--log-interval", "1", "--no-progress", "--no-report", "--data-dir", str(fake_data),
           "--out", str(tmp_path / "run"), "--processes", "2"]
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                           env={**os.environ, "MNISTLAB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    for line in job.stdout:  # both ranks are training: 300 steps
        if "loss" in line:
            break
    os.killpg(job.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the launcher and every rank
    out, err = job.communicate(timeout=120)
    assert job.returncode == 130, err
    assert err.count("mnistlab: interrupted.") == 1, err
    hint = shlex.split(out.split("continue with: ", 1)[1].splitlines()[0])
    assert hint[hint.index("--processes") + 1] == "2" and (tmp_path / "run" / "ckpt-interrupt.pt").is_file()
