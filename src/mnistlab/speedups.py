"""Switches for the speed-ups of issue 24 under measurement, read from $MNISTLAB_SPEED.

Each changes how fast a command runs, never what it computes (tests hold each to that):

    foreach-sgd        SGD in torch._foreach_* ops (mnistlab.training.optim): no torch._dynamo import
    inference-mode     test passes under torch.inference_mode instead of torch.no_grad
    background-report  the report drawn in a thread while the last checkpoints are written
    fused-conv         the tutorial CNN's conv+pool+ReLU as one autograd function (unfold, one GEMM);
                       the same gradients within float rounding, not bit for bit

MNISTLAB_SPEED=foreach-sgd,inference-mode turns those on; `all` turns every one on, and `-name`
turns one off (`all,-fused-conv`). DEFAULTS holds what is on without the variable; the
benchmark (benchmarks/speed_hypotheses.py) measures each on against off.
"""

from __future__ import annotations

import os

from .errors import MnistlabError

# As measured (BENCHMARKS.md, "Speed-ups measured (issue 24)"): foreach-sgd saves the 0.76 s that the
# first torch.optim step spent importing torch._dynamo, bit for bit the same weights, so it is on;
# inference mode changed a test pass by under 2%, the background report cost 2% of the fast
# command (its thread competes with the checkpoint writes on two cores) and the fused conv+pool
# step took 3.1x as long: they stay off.
DEFAULTS = {"foreach-sgd": True, "inference-mode": False, "background-report": False, "fused-conv": False}
ENV = "MNISTLAB_SPEED"


def enabled(name: str) -> bool:
    """Whether the speed-up `name` is on, by $MNISTLAB_SPEED over DEFAULTS."""
    return switches()[name]


def switches() -> dict[str, bool]:
    on = dict(DEFAULTS)
    for word in filter(None, (w.strip() for w in os.environ.get(ENV, "").split(","))):
        value = not word.startswith("-")
        name = word.lstrip("-+")
        if name == "all":
            on = dict.fromkeys(on, value)
        elif name in on:
            on[name] = value
        else:
            raise MnistlabError(f"${ENV}: unknown speed-up '{name}'; the names are all, {', '.join(DEFAULTS)}.")
    return on
