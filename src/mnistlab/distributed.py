"""Data-parallel training on PyTorch's own engine, started by torchrun.

Without torchrun's environment every function here is a no-op for one process, so the
training loop reads the same either way.
"""

from __future__ import annotations

import os
import threading

import torch
import torch.distributed as td

from .errors import first_line
from .launch import launched

SYNC_EVERY = 20  # steps between the ranks' checks for a stop request (one all-reduce each)


def is_initialized() -> bool:
    return td.is_available() and td.is_initialized()


def rank() -> int:
    return td.get_rank() if is_initialized() else 0


def world_size() -> int:
    return td.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def is_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def join_process_group(device: torch.device) -> torch.device:
    """When torchrun launched us, start the process group (NCCL on GPUs, gloo on CPU) and return
    this rank's device; alone, return `device` unchanged."""
    if not launched():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    if not is_initialized():
        td.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def shard(order):
    """Each rank takes every world_size-th index of the epoch's shuffled order.

    Step i of rank r then sees order[i*B*W + r :: W] within the global batch i, so the
    ranks together see exactly the global batch a single process would.
    """
    if not is_initialized():
        return order
    r, w = rank(), world_size()
    return lambda epoch: order(epoch)[r::w]


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    if not is_initialized():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [model_device(model).index] if model_device(model).type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def any_rank(flag: bool, step: int) -> bool:
    """True when any rank raised the flag (checked every SYNC_EVERY steps under torchrun)."""
    if not is_initialized():
        return flag
    if step % SYNC_EVERY:
        return False
    return bool(all_reduce_sum(torch.tensor([int(flag)])).item())


def _collective_device() -> str:
    return "cuda" if td.get_backend() == "nccl" else "cpu"


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over the ranks (identity in one process)."""
    if not is_initialized():
        return t
    out = t.to(_collective_device())
    td.all_reduce(out)
    return out.to(t.device)


def gather_shards(t: torch.Tensor) -> torch.Tensor:
    """A split whole again from the ranks' shards (rank r holds items r, r + W, ..., as Loader.shard
    deals them), in order, on every rank (identity in one process)."""
    if not is_initialized():
        return t
    w, n = world_size(), int(all_reduce_sum(torch.tensor([len(t)])).item())
    rows = -(-n // w)  # the longest shard; the others are padded to it
    padded = torch.zeros((rows, *t.shape[1:]), dtype=t.dtype, device=_collective_device())
    padded[:len(t)] = t.to(padded.device)
    parts = [torch.empty_like(padded) for _ in range(w)]
    td.all_gather(parts, padded)
    return torch.stack(parts, 1).flatten(0, 1)[:n].to(t.device)  # row i of rank r is item i * w + r


def broadcast_str(value: str) -> str:
    """Rank 0's value of a string, on every rank."""
    if not is_initialized():
        return value
    box = [value]
    td.broadcast_object_list(box, src=0)
    return box[0]


def shutdown() -> None:
    """Leave the process group cleanly (an abandoned gloo group can abort the process at exit)."""
    if is_initialized():
        try:
            td.barrier()  # let every rank reach the end before any tears its connections down
        except RuntimeError:
            pass  # a peer already died: nothing to wait for
        td.destroy_process_group()


def broke(e: BaseException) -> str:
    """What a rank says when a peer died or failed under it: one line, without gloo's or NCCL's traceback."""
    return f"rank {rank()}: the distributed job broke ({first_line(e)})"


def describe() -> str:
    return f", {world_size()} processes" if is_initialized() else ""
