"""SGD with momentum, without torch.optim: the tutorial's optimiser for a short-lived command.

Every torch.optim.Optimizer imports torch._dynamo on its first add_param_group, zero_grad,
state_dict or load_state_dict (PyTorch 2.13: those methods are wrapped in torch._disable_dynamo),
which costs about 1.1 s of CPU time in every `mnistlab train` that runs no compiled code. This is
the same arithmetic as torch.optim.SGD (momentum, weight decay, dampening, no Nesterov) in
torch._foreach_* ops, tested equal to it bit for bit, with the same state_dict: a checkpoint
written by either resumes in the other.
"""

from __future__ import annotations

from typing import Any

import torch


class ForeachSGD:
    """torch.optim.SGD's update, param_groups, state and state_dict, for one parameter group."""

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0, dampening: float = 0.0):
        params = list(params)
        if not params:
            raise ValueError("ForeachSGD got an empty parameter list")
        # the keys torch.optim.SGD's groups hold, so that state_dicts cross between the two
        self.param_groups: list[dict[str, Any]] = [
            {"params": params, "lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay,
             "nesterov": False, "maximize": False, "foreach": True, "differentiable": False, "fused": None}]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        grads: list[torch.Tensor] = [p.grad for p in params]
        lr, momentum, wd, dampening = group["lr"], group["momentum"], group["weight_decay"], group["dampening"]
        if group["nesterov"] or group["maximize"]:
            raise ValueError("ForeachSGD does plain momentum only (no nesterov, no maximize)")
        if wd:
            grads = list(torch._foreach_add(grads, params, alpha=wd))
        if momentum:
            if all(p in self.state for p in params):
                bufs = [self.state[p]["momentum_buffer"] for p in params]
                torch._foreach_mul_(bufs, momentum)
                torch._foreach_add_(bufs, grads, alpha=1 - dampening)
            else:  # a parameter's first step: its buffer starts as its gradient
                bufs = []
                for p, g in zip(params, grads):
                    if p in self.state:
                        bufs.append(self.state[p]["momentum_buffer"].mul_(momentum).add_(g, alpha=1 - dampening))
                    else:
                        bufs.append(g.detach().clone())
                        self.state[p] = {"momentum_buffer": bufs[-1]}
            grads = bufs
        torch._foreach_add_(params, grads, alpha=-lr)

    def state_dict(self) -> dict:
        """torch.optim.SGD's layout: parameters numbered in order, state keyed by those numbers."""
        params = self.param_groups[0]["params"]
        state = {i: {"momentum_buffer": self.state[p]["momentum_buffer"].clone()}
                 for i, p in enumerate(params) if p in self.state}
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return {"state": state, "param_groups": [group | {"params": list(range(len(params)))}]}

    def load_state_dict(self, state_dict: dict) -> None:
        """A state_dict of torch.optim.SGD's or this class's, for the same parameters."""
        groups, params = state_dict["param_groups"], self.param_groups[0]["params"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(params):
            raise ValueError("the saved optimiser state has other parameter groups than this model")
        saved = groups[0]
        state = {}
        for key, value in state_dict["state"].items():
            p = params[saved["params"].index(key)]
            buf = value["momentum_buffer"]
            if buf.shape != p.shape:
                raise ValueError(f"a momentum buffer of shape {tuple(buf.shape)} for a parameter of {tuple(p.shape)}")
            state[p] = {"momentum_buffer": buf.to(p.device, p.dtype).clone()}
        for key in ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"):
            self.param_groups[0][key] = saved[key]
        self.state = state
