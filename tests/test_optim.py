"""mnistlab's optimisers (mnistlab.training.optim) compute what torch.optim's do, bit for bit, and
keep `mnistlab train` from importing torch._dynamo."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from mnistlab.models import build_model
from mnistlab.training.optim import ForeachAdam, ForeachSGD, adamw


def tutorial_cnn(name: str = "cnn") -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name).to(memory_format=torch.channels_last)


def batches(n: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(64, 1, 28, 28, generator=g).contiguous(memory_format=torch.channels_last)
        yield x, torch.randint(0, 10, (64,), generator=g)


def train_steps(model, opt, data, sched=None) -> None:
    for x, y in data:
        with torch.autocast("cpu", dtype=torch.bfloat16):  # as mnistlab trains on a CPU with bf16
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()


def weights(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(weights(a), weights(b), strict=True))


@pytest.mark.parametrize("kind", ["fused", "foreach"])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
def test_foreach_sgd_equals_torch_sgd_bit_for_bit(kind, weight_decay):
    torch.set_num_threads(1)
    theirs, ours = tutorial_cnn(), tutorial_cnn()
    train_steps(theirs, torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.5, weight_decay=weight_decay,
                                        **{kind: True}), batches(300))
    train_steps(ours, ForeachSGD(ours.parameters(), lr=0.1, momentum=0.5, weight_decay=weight_decay), batches(300))
    assert same(theirs, ours)
    assert not torch.equal(weights(ours)[0], weights(tutorial_cnn())[0])  # it trained


def _one_cycle(opt, steps: int = 20):
    # as mnistlab's one-cycle: the learning rate and beta1 (or momentum) change at every step
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.25)


@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 5e-4])
@pytest.mark.parametrize("foreach", [None, True])
def test_adam_and_adamw_equal_torch_bit_for_bit_under_a_schedule(decoupled, weight_decay, foreach):
    torch.set_num_threads(1)
    theirs, ours = tutorial_cnn("bn-cnn"), tutorial_cnn("bn-cnn")
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    torch_opt = cls(theirs.parameters(), lr=2e-3, betas=(0.9, 0.99), eps=1e-7, weight_decay=weight_decay,
                    foreach=foreach)
    our_opt = (adamw if decoupled else ForeachAdam)(ours.parameters(), lr=2e-3, betas=(0.9, 0.99), eps=1e-7,
                                                    weight_decay=weight_decay)
    sched_theirs, sched_ours = _one_cycle(torch_opt), _one_cycle(our_opt)
    lrs = []
    for data in zip(batches(20), batches(20)):
        train_steps(theirs, torch_opt, [data[0]], sched_theirs)
        train_steps(ours, our_opt, [data[1]], sched_ours)
        lrs.append(our_opt.param_groups[0]["lr"])
        assert our_opt.param_groups[0]["betas"] == torch_opt.param_groups[0]["betas"]
    assert len(set(lrs)) >= 18  # the learning rate changed at (nearly) every step
    assert same(theirs, ours)
    assert not torch.equal(weights(ours)[0], weights(tutorial_cnn("bn-cnn"))[0])  # it trained


def test_adam_differs_from_adamw_with_weight_decay():
    """The equality above is not vacuous: the two weight decays give other weights."""
    a, w = tutorial_cnn(), tutorial_cnn()
    train_steps(a, ForeachAdam(a.parameters(), lr=1e-3, weight_decay=0.1), batches(3))
    train_steps(w, adamw(w.parameters(), lr=1e-3, weight_decay=0.1), batches(3))
    assert not same(a, w)


@pytest.mark.parametrize("ours_cls, torch_cls, options", [
    (ForeachSGD, torch.optim.SGD, dict(lr=0.1, momentum=0.5)),
    (ForeachAdam, torch.optim.Adam, dict(lr=1e-3)),
])
def test_state_dict_crosses_with_torch_optim(ours_cls, torch_cls, options):
    torch.set_num_threads(1)
    # torch's optimiser for 5 steps, then ours from its state; and the other way round
    a, b = tutorial_cnn(), tutorial_cnn()
    torch_a = torch_cls(a.parameters(), **options)
    train_steps(a, torch_a, batches(5))
    b.load_state_dict(a.state_dict())
    ours_b = ours_cls(b.parameters(), lr=0.5)  # loading restores the saved settings
    ours_b.load_state_dict(torch_a.state_dict())
    assert ours_b.param_groups[0]["lr"] == options["lr"]
    train_steps(a, torch_a, batches(5, seed=2))
    train_steps(b, ours_b, batches(5, seed=2))
    assert same(a, b)
    torch_b = torch_cls(b.parameters(), **options)
    torch_b.load_state_dict(ours_b.state_dict())
    train_steps(a, torch_a, batches(5, seed=3))
    train_steps(b, torch_b, batches(5, seed=3))
    assert same(a, b)
    with pytest.raises(ValueError, match="parameter groups"):
        ours_cls(torch.nn.Linear(2, 2).parameters(), lr=0.1).load_state_dict(torch_a.state_dict())


def test_unimplemented_options_are_refused_on_load():
    model = torch.nn.Linear(2, 2)
    saved = torch.optim.Adam(model.parameters(), amsgrad=True).state_dict()
    with pytest.raises(ValueError, match="amsgrad"):
        ForeachAdam(model.parameters()).load_state_dict(saved)


def test_train_fast_never_imports_dynamo(fake_data, tmp_path):
    code = ("import sys\nfrom mnistlab.cli import main\n"
            "main(['train', '--preset', 'fast', '--train-limit', '512', '--threads', '1', '--no-progress', "
            f"'--no-report', '--data-dir', {str(fake_data)!r}, '--out', sys.argv[1]])\n"
            "print('dynamo:', 'torch._dynamo' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "run" / "model.pt").exists()
    assert proc.stdout.splitlines()[-1] == "dynamo: False"
