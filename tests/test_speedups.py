"""The speed-ups of issue 24 (mnistlab.speedups) change how fast, never what: the same weights,
counts and output with each on as with it off."""

import json
import os
import subprocess
import sys
import threading

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from mnistlab import RunConfig, train
from mnistlab.convpool import ConvPoolReLU
from mnistlab.errors import MnistlabError
from mnistlab.models import CNN, build_model
from mnistlab.speedups import switches
from mnistlab.training.optim import ForeachSGD

EXACT = "foreach-sgd,inference-mode,background-report"  # the speed-ups that keep the arithmetic bit for bit


def tutorial_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("cnn").to(memory_format=torch.channels_last)


def batches(n: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(64, 1, 28, 28, generator=g).contiguous(memory_format=torch.channels_last)
        yield x, torch.randint(0, 10, (64,), generator=g)


def sgd_steps(model, opt, data) -> None:
    for x, y in data:
        with torch.autocast("cpu", dtype=torch.bfloat16):  # as mnistlab trains on a CPU with bf16
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def weights(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("kind", ["fused", "foreach"])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
def test_foreach_sgd_equals_torch_sgd_bit_for_bit(kind, weight_decay):
    torch.set_num_threads(1)
    theirs, ours = tutorial_cnn(), tutorial_cnn()
    sgd_steps(theirs, torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.5, weight_decay=weight_decay,
                                      **{kind: True}), batches(300))
    sgd_steps(ours, ForeachSGD(ours.parameters(), lr=0.1, momentum=0.5, weight_decay=weight_decay), batches(300))
    assert all(torch.equal(a, b) for a, b in zip(weights(theirs), weights(ours)))
    assert not torch.equal(weights(ours)[0], weights(tutorial_cnn())[0])  # it trained


def test_foreach_sgd_state_dict_crosses_with_torch_sgd():
    torch.set_num_threads(1)
    # torch's SGD for 5 steps, then ours from its state; and the other way round
    a, b = tutorial_cnn(), tutorial_cnn()
    torch_a = torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.5, fused=True)
    sgd_steps(a, torch_a, batches(5))
    b.load_state_dict(a.state_dict())
    ours_b = ForeachSGD(b.parameters(), lr=0.01, momentum=0.9)  # loading restores the saved lr and momentum
    ours_b.load_state_dict(torch_a.state_dict())
    assert ours_b.param_groups[0]["lr"] == 0.1 and ours_b.param_groups[0]["momentum"] == 0.5
    sgd_steps(a, torch_a, batches(5, seed=2))
    sgd_steps(b, ours_b, batches(5, seed=2))
    assert all(torch.equal(x, y) for x, y in zip(weights(a), weights(b)))
    torch_b = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.5, fused=True)
    torch_b.load_state_dict(ours_b.state_dict())
    sgd_steps(a, torch_a, batches(5, seed=3))
    sgd_steps(b, torch_b, batches(5, seed=3))
    assert all(torch.equal(x, y) for x, y in zip(weights(a), weights(b)))
    with pytest.raises(ValueError, match="parameter groups"):
        ForeachSGD(torch.nn.Linear(2, 2).parameters(), lr=0.1).load_state_dict(torch_a.state_dict())


def test_switches_parse(monkeypatch):
    monkeypatch.setenv("MNISTLAB_SPEED", "all,-fused-conv")
    assert switches() == {"foreach-sgd": True, "inference-mode": True, "background-report": True,
                          "fused-conv": False}
    monkeypatch.setenv("MNISTLAB_SPEED", "-all,inference-mode")
    assert [k for k, v in switches().items() if v] == ["inference-mode"]
    monkeypatch.setenv("MNISTLAB_SPEED", "")
    assert [k for k, v in switches().items() if v] == ["foreach-sgd"]  # the measured default
    monkeypatch.setenv("MNISTLAB_SPEED", "fast-please")
    with pytest.raises(MnistlabError, match="unknown speed-up 'fast-please'"):
        switches()


def _classic_run(tmp_path, name, data_dir, monkeypatch, speed: str, capsys):
    monkeypatch.setenv("MNISTLAB_SPEED", speed)
    cfg = RunConfig(model="cnn", epochs=2, train_limit=3200, threads=1, eval_every=1)
    train(cfg, out=tmp_path / name, data_dir=data_dir, progress=False, report=True)
    out = capsys.readouterr().out.replace(str(tmp_path / name), "RUN")
    tests = [(e["correct"], e["total"], e["loss"], e["ece"]) for e in map(json.loads, open(tmp_path / name /
             "metrics.jsonl")) if e["event"] == "test"]
    return out, tests, load_file(tmp_path / name / "model.safetensors")


def test_exact_speedups_keep_weights_counts_and_output(data_dir, tmp_path, monkeypatch, capsys):
    import mnistlab.training.report as report

    drawn_on, build = [], report.build_report

    def spy(run_dir, **kw):
        drawn_on.append((threading.current_thread().name, (run_dir / "model.pt").exists()))
        return build(run_dir, **kw)

    monkeypatch.setattr(report, "build_report", spy)
    predicted, forward = [], CNN.forward
    monkeypatch.setattr(CNN, "forward", lambda self, x: predicted.append(torch.is_inference_mode_enabled()) or
                        forward(self, x))
    before = _classic_run(tmp_path, "off", data_dir, monkeypatch, "", capsys)
    assert drawn_on == [("MainThread", True)] and not any(predicted)
    predicted.clear()
    after = _classic_run(tmp_path, "on", data_dir, monkeypatch, EXACT, capsys)
    # the report drawn beside the last checkpoint, test passes in inference mode
    assert drawn_on[1][0] == "mnistlab-report" and (tmp_path / "on" / "report.html").stat().st_size > 10_000
    assert sum(predicted) == 2 * 10  # two test passes of ten batches of 1000
    # the same weights, test figures and output (but the training seconds)
    assert after[2].keys() == before[2].keys() and all(torch.equal(after[2][k], before[2][k]) for k in after[2])
    assert after[1] == before[1] and len(after[1]) == 2 and after[1][-1][0] > 8000
    strip = lambda text: [line.split("; ")[0] for line in text.splitlines()]  # noqa: E731
    assert strip(after[0]) == strip(before[0]) and after[0].splitlines()[-1] == "report: RUN/report.html"


def test_foreach_sgd_never_imports_dynamo(fake_data, tmp_path):
    code = ("import sys\nfrom mnistlab.cli import main\n"
            f"main(['train', '--model', 'cnn', '--epochs', '1', '--threads', '1', '--no-progress', '--no-report', "
            f"'--data-dir', {str(fake_data)!r}, '--out', sys.argv[1]])\n"
            "print('dynamo:', 'torch._dynamo' in sys.modules)")
    seen = {}
    for speed in ("-foreach-sgd", "foreach-sgd"):
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / speed.replace("-f", "off-f"))],
                              capture_output=True, text=True, env={**os.environ, "MNISTLAB_SPEED": speed}, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        seen[speed] = proc.stdout.splitlines()[-1]
    assert seen == {"-foreach-sgd": "dynamo: True", "foreach-sgd": "dynamo: False"}
    off, on = (load_file(tmp_path / name / "model.safetensors") for name in ("off-foreach-sgd", "foreach-sgd"))
    assert all(torch.equal(off[k], on[k]) for k in off)


@pytest.mark.parametrize("c, o, size, k", [(1, 3, 8, 3), (2, 4, 9, 4)])
def test_conv_pool_relu_gradcheck(c, o, size, k):
    torch.manual_seed(0)
    x = torch.randn(2, c, size, size, dtype=torch.float64, requires_grad=True)
    w = torch.randn(o, c, k, k, dtype=torch.float64, requires_grad=True)
    b = torch.randn(o, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ConvPoolReLU.apply, (x, w, b))
    torch.testing.assert_close(ConvPoolReLU.apply(x, w, b), F.relu(F.max_pool2d(F.conv2d(x, w, b), 2)))


def test_fused_tutorial_cnn_matches_its_plain_layers(monkeypatch):
    plain = tutorial_cnn()
    monkeypatch.setenv("MNISTLAB_SPEED", "fused-conv")
    fused = tutorial_cnn()
    assert fused.fused and not plain.fused
    x, y = next(batches(1))
    grads = []
    for model in (plain, fused):
        logits = model(x)
        F.cross_entropy(logits, y).backward()
        grads.append((logits.detach(), [p.grad for p in model.parameters()]))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-5, atol=1e-5)
    for a, b in zip(grads[1][1], grads[0][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))
    calls = []
    monkeypatch.setattr(ConvPoolReLU, "apply", lambda *a: calls.append(1) or F.relu(F.max_pool2d(F.conv2d(*a), 2)))
    fused(x)
    assert len(calls) == 2
    fused.eval()  # evaluation, prediction and export keep the plain layers: the same bits as ever
    assert torch.equal(fused(x), plain.eval()(x)) and len(calls) == 2
