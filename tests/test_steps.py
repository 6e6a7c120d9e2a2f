"""The captured step (training.steps.GraphedStep) computes what the eager step does, bit for bit.

A CUDA graph records the step's kernels once and runs them at each replay. These tests need no
GPU: a recorder stands in for the graph. Its capture keeps the step's body without running it,
and its replay runs it, after letting the gradients go: the graph's backward writes them afresh
into the memory it captured, where an eager backward would add to them."""

import contextlib

import pytest
import torch

from mnistlab.data.own import load_split
from mnistlab.heads import head_of
from mnistlab.models import build_model
from mnistlab.training.config import RunConfig, from_preset
from mnistlab.training.loop import make_optimizer, uncapturable
from mnistlab.training.steps import EagerStep, GraphedStep


class Recorded:
    """A CUDA graph's stand-in: the body kept at capture, run at each replay."""

    def __init__(self, body, opt):
        self.body, self.opt, self.replays = body, opt, 0

    def replay(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        self.body()
        self.replays += 1


class RecordedStep(GraphedStep):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.graphs: list[Recorded] = []

    warm_up = staticmethod(contextlib.nullcontext)

    def capture(self, body):
        self.graphs.append(Recorded(body, self.opt))
        return self.graphs[-1]


@pytest.fixture(scope="module")
def mnist_batches(data_dir):
    """Real MNIST batches of the classic recipe's 64, and one of 32 (an epoch's last) among them."""
    images, labels = load_split("mnist", "train", data_dir)
    x = ((torch.as_tensor(images[:1024]).float() / 255 - 0.1307) / 0.3081).unsqueeze(1)
    y = torch.as_tensor(labels[:1024]).long()
    sizes = [64] * 7 + [32] + [64] * 6
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [(x[s:s + n].contiguous(memory_format=torch.channels_last), y[s:s + n]) for s, n in zip(starts, sizes)]


def classic(step_cls, lr_changes: dict[int, float] | None = None, batches=()):
    """The classic recipe's model and optimiser (cnn, SGD at 0.1 with momentum 0.5) stepped through `batches`;
    at step i of `lr_changes` the rate becomes its value, as a scheduler would set it."""
    torch.manual_seed(0)
    cfg = from_preset("classic")
    model = build_model(cfg.model).to(memory_format=torch.channels_last)
    opt = make_optimizer(cfg, model, capturable=True)
    step = step_cls(model, opt, None, cfg.label_smoothing, head_of(cfg.head))
    losses = []
    for i, (x, y) in enumerate(batches):
        if lr_changes and i in lr_changes:
            opt.param_groups[0]["lr"] = lr_changes[i]
            step.after_schedule()
        loss, correct = step(x, y)
        losses.append((loss.item(), correct.item()))
    return model, opt, step, losses


def test_the_classic_recipe_captures_its_step():
    cfg = from_preset("classic")
    assert cfg.cuda_graph and cfg.optimizer == "sgd" and uncapturable(cfg) is None
    assert "onecycle" in uncapturable(RunConfig(optimizer="sgd", schedule="onecycle"))  # SGD's rate: fixed in a graph
    assert uncapturable(from_preset("fast")) is None


def test_captured_sgd_step_equals_eager_bit_for_bit(mnist_batches):
    eager_model, eager_opt, _, eager_losses = classic(EagerStep, batches=mnist_batches)
    model, opt, step, losses = classic(RecordedStep, batches=mnist_batches)
    assert len(step.graphs) == 1 and step.graphs[0].replays == len(mnist_batches) - GraphedStep.WARMUP - 1
    assert losses == eager_losses
    for p, q in zip(model.parameters(), eager_model.parameters(), strict=True):
        assert torch.equal(p, q)
        assert torch.equal(opt.state[p]["momentum_buffer"], eager_opt.state[q]["momentum_buffer"])
    assert not torch.equal(next(model.parameters()), next(classic(EagerStep)[0].parameters()))  # it trained


def test_a_new_rate_is_captured_again(mnist_batches):
    changes = {6: 0.05, 10: 0.02}
    eager_model, _, _, eager_losses = classic(EagerStep, changes, mnist_batches)
    model, _, step, losses = classic(RecordedStep, changes, mnist_batches)
    assert len(step.graphs) == 3  # captured at step 3, and again after each change
    assert losses == eager_losses
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), eager_model.parameters(), strict=True))
