"""SGD, Adam and AdamW without torch.optim's own classes: the optimisers of a short-lived command.

Every torch.optim optimiser imports torch._dynamo on its first add_param_group, zero_grad,
state_dict or load_state_dict (PyTorch 2.13: those methods are wrapped in torch._disable_dynamo),
which costs a second of CPU time in every `mnistlab train` that runs no compiled code. These
classes subclass torch.optim.Optimizer (so that LR schedulers drive them) but build their one
parameter group themselves and override those four methods. Each is the same arithmetic as its
torch.optim namesake (the ops of its foreach path, in torch._foreach_* ops), tested equal to it bit
for bit, with the same state_dict: a checkpoint written by either resumes in the other.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from typing import Any

import torch

# group keys that change the arithmetic: options these classes do not implement are refused
_UNSUPPORTED = ("nesterov", "maximize", "amsgrad")
# group keys that say how torch.optim ran, not what: a loaded state keeps this object's own
_OWN = ("foreach", "fused", "capturable", "differentiable", "decoupled_weight_decay")


class ForeachOptimizer(torch.optim.Optimizer):
    """torch.optim.Optimizer's interface for one parameter group, with no method that imports torch._dynamo."""

    def __init__(self, params, defaults: dict[str, Any]):
        # not super().__init__(): its add_param_group imports torch._dynamo
        params = list(params)
        if not params or isinstance(params[0], dict):
            raise ValueError(f"{type(self).__name__} takes a non-empty list of parameters (one group)")
        self.defaults = defaults
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        self._patch_step_function()
        self.state: defaultdict[torch.Tensor, Any] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = [{"params": params, **defaults}]
        self._check_group(self.param_groups[0])

    @property
    def group(self) -> dict[str, Any]:
        return self.param_groups[0]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.group["params"]:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_().zero_()

    def state_dict(self) -> dict[str, Any]:
        """torch.optim's layout: parameters numbered in order, state keyed by those numbers."""
        params = self.group["params"]
        state = {i: {k: v.clone() if torch.is_tensor(v) else v for k, v in self.state[p].items()}
                 for i, p in enumerate(params) if self.state.get(p)}
        group = {k: v for k, v in self.group.items() if k != "params"}
        return {"state": state, "param_groups": [group | {"params": list(range(len(params)))}]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A state_dict of the torch.optim namesake's or this class's, for the same parameters.

        As torch.optim does, the saved group's settings replace this one's (the scheduler's keys too)."""
        groups, params = state_dict["param_groups"], self.group["params"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(params):
            raise ValueError("the saved optimiser state has other parameter groups than this model")
        saved = groups[0]
        self._check_group(saved)
        state: defaultdict[torch.Tensor, Any] = defaultdict(dict)
        for key, value in state_dict["state"].items():
            p = params[saved["params"].index(key)]
            state[p] = {name: self._restored(name, v, p) for name, v in value.items()}
        own = {k: self.group[k] for k in _OWN if k in self.group}
        settings = {k: _number(v) for k, v in saved.items() if k != "params" and k not in _OWN}
        self.param_groups = [settings | own | {"params": params}]
        self.state = state

    @staticmethod
    def _restored(name: str, value: Any, p: torch.Tensor) -> Any:
        if not torch.is_tensor(value):
            return value
        if name == "step":  # a count, kept on the host as torch.optim keeps it (never the parameter's dtype)
            return value.detach().to("cpu", torch.float32).clone()
        if value.shape != p.shape:
            raise ValueError(f"a saved '{name}' of shape {tuple(value.shape)} for a parameter of {tuple(p.shape)}")
        return value.detach().to(p.device, p.dtype).clone()

    def _check_group(self, group: dict[str, Any]) -> None:
        refused = [k for k in _UNSUPPORTED if group.get(k)]
        if refused:
            raise ValueError(f"{type(self).__name__} does not implement {', '.join(refused)}")

    @torch.no_grad()
    def step(self, closure=None) -> None:  # type: ignore[override]
        """One update of the parameters that have a gradient this step (the subclass's _update)."""
        params = [p for p in self.group["params"] if p.grad is not None]
        if params:
            self._update(self.group, params, [p.grad for p in params])

    def _update(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        raise NotImplementedError


def _number(value: Any) -> Any:
    """A setting as a Python number: a CUDA-graph run keeps its lr (and betas) in device tensors."""
    if torch.is_tensor(value) and value.numel() == 1:
        return value.item()
    if isinstance(value, (tuple, list)):
        return type(value)(_number(v) for v in value)
    return value


class ForeachSGD(ForeachOptimizer):
    """torch.optim.SGD's update (momentum, weight decay, dampening; no Nesterov)."""

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0, dampening: float = 0.0):
        # the keys torch.optim.SGD's groups hold, so that state_dicts cross between the two
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening,
                                  "weight_decay": weight_decay, "nesterov": False, "maximize": False,
                                  "foreach": True, "differentiable": False, "fused": None})

    def _update(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        lr, momentum, wd, dampening = group["lr"], group["momentum"], group["weight_decay"], group["dampening"]
        if wd:
            grads = list(torch._foreach_add(grads, params, alpha=wd))
        if momentum:
            if all("momentum_buffer" in self.state[p] for p in params):
                bufs = [self.state[p]["momentum_buffer"] for p in params]
                torch._foreach_mul_(bufs, momentum)
                torch._foreach_add_(bufs, grads, alpha=1 - dampening)
            else:  # a parameter's first step: its buffer starts as its gradient
                bufs = []
                for p, g in zip(params, grads):
                    if "momentum_buffer" in self.state[p]:
                        bufs.append(self.state[p]["momentum_buffer"].mul_(momentum).add_(g, alpha=1 - dampening))
                    else:
                        bufs.append(g.detach().clone())
                        self.state[p]["momentum_buffer"] = bufs[-1]
            grads = bufs
        torch._foreach_add_(params, grads, alpha=-lr)


class ForeachAdam(ForeachOptimizer):
    """torch.optim.Adam's update (with `decoupled_weight_decay`, AdamW's); no amsgrad, no maximize.

    The betas are read from the group at each step: a one-cycle schedule cycles beta1."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled_weight_decay: bool = False):
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                                  "amsgrad": False, "maximize": False, "foreach": True, "capturable": False,
                                  "differentiable": False, "fused": None,
                                  "decoupled_weight_decay": decoupled_weight_decay})

    def _update(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        for p in params:
            if not self.state[p]:  # as torch.optim.Adam's: the count on the host, the moments beside the weights
                self.state[p] = {"step": torch.tensor(0.0, dtype=torch.float32),
                                 "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                 "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
        steps = [self.state[p]["step"] for p in params]
        exp_avgs = [self.state[p]["exp_avg"] for p in params]
        exp_avg_sqs = [self.state[p]["exp_avg_sq"] for p in params]
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        torch._foreach_add_(steps, torch.tensor(1.0), alpha=1.0)
        if wd:
            if group["decoupled_weight_decay"]:
                torch._foreach_mul_(params, 1 - lr * wd)
            else:
                grads = list(torch._foreach_add(grads, params, alpha=wd))
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        counts = [s.item() for s in steps]
        step_sizes = [(lr / (1 - beta1 ** n)) * -1 for n in counts]
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, [(1 - beta2 ** n) ** 0.5 for n in counts])
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, exp_avgs, denom, step_sizes)


def adamw(params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
          weight_decay: float = 1e-2) -> ForeachAdam:
    """torch.optim.AdamW's update: Adam with the weight decay applied to the weights, not the gradient."""
    return ForeachAdam(params, lr, betas, eps, weight_decay, decoupled_weight_decay=True)
