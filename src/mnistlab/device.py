"""Where and how tensors are computed: the device, bf16 autocast, and the CPU allocator."""

from __future__ import annotations

import contextlib
import ctypes

import torch

from .errors import MnistlabError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; a device that is not there is one sentence."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise MnistlabError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MnistlabError(f"--device {name} was asked for, but this PyTorch sees no CUDA GPU.")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise MnistlabError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s).")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise MnistlabError("--device mps was asked for, but this PyTorch sees no Apple GPU.")
    if device.type not in ("cpu", "cuda", "mps"):
        raise MnistlabError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps.")
    return device


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast, or None for plain fp32. 'auto' uses bf16 where the hardware does it natively."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """bf16 autocast when dtype is given, else a no-op context."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def keep_freed_memory() -> None:
    """Ask glibc to keep freed memory instead of returning it to the OS.

    By default each large activation is a fresh mmap whose pages fault in on first touch,
    every step; measured here, that was a third of a batch-256 CNN step on the CPU.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, Windows, musl): nothing to tune
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, (1 << 31) - 1)
    libc.mallopt(m_top_pad, 1 << 27)
