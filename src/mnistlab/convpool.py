"""Convolution, 2x2 max-pooling and ReLU as one autograd function (issue 24, hypothesis 2: fewer passes over memory).

For the tutorial CNN's small layers (1 -> 10 and 10 -> 20 channels, 5x5) on a CPU. oneDNN's path
is a convolution, a max-pool that writes its indices, a ReLU, and in the backward pass a pool
gradient that zero-fills a map as large as the convolution's output: memory-bound kernels on
10- and 20-channel maps. Here: the input's 5x5 windows gathered once (as unfold does), one GEMM
with the bias, the pool's maximum and its index (one byte) kept from the forward pass, and the ReLU
applied to the pooled quarter only. The same function as the layers it replaces (gradients
tested equal in float64), computed in another order: within float rounding, not bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _windows(x_nhwc: torch.Tensor, k: int) -> torch.Tensor:
    """[N, H, W, C] -> [N * Ho * Wo, k * k * C]: each output pixel's k x k window, one row each."""
    n, h, w, c = x_nhwc.shape
    s = x_nhwc.stride()
    view = x_nhwc.as_strided((n, h - k + 1, w - k + 1, k, k, c), (s[0], s[1], s[2], s[1], s[2], s[3]))
    return view.reshape(n * (h - k + 1) * (w - k + 1), k * k * c)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


class ConvPoolReLU(torch.autograd.Function):
    """relu(max_pool2d(conv2d(x, weight, bias), 2)) for a square kernel, no padding, stride 1,
    and a convolution output of even height and width."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        dtype = _compute_dtype(x)
        n, c, h, w = x.shape
        o, k = weight.shape[0], weight.shape[-1]
        ho, wo = h - k + 1, w - k + 1
        x_nhwc = x.to(dtype).permute(0, 2, 3, 1).contiguous()  # free for a channels-last input
        cols = _windows(x_nhwc, k)  # [N*Ho*Wo, k*k*C]
        w_mat = weight.to(dtype).permute(0, 2, 3, 1).reshape(o, k * k * c)  # rows in the windows' order
        y = torch.addmm(bias.to(dtype), cols, w_mat.t())  # [N*Ho*Wo, O]: the convolution, channels-last
        quads = y.view(n, ho // 2, 2, wo // 2, 2, o).permute(0, 1, 3, 5, 2, 4).reshape(n, ho // 2, wo // 2, o, 4)
        pooled, index = quads.max(-1)  # the first maximum in row-major order, as max_pool2d takes it
        out = pooled.clamp_min(0)
        ctx.save_for_backward(cols, w_mat, index.to(torch.uint8), out)
        ctx.shape, ctx.dtypes = (n, c, h, w, k), (x.dtype, weight.dtype, bias.dtype)
        ctx.x_needs_grad = x.requires_grad
        return out.permute(0, 3, 1, 2)  # [N, O, Ho/2, Wo/2], channels-last in memory

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        cols, w_mat, index, out = ctx.saved_tensors
        n, c, h, w, k = ctx.shape
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        o = w_mat.shape[0]
        g = grad_out.permute(0, 2, 3, 1).to(out.dtype) * (out > 0)  # the ReLU's gradient, [N, Hp, Wp, O]
        hp, wp = g.shape[1], g.shape[2]
        quads = torch.zeros((n, hp, wp, o, 4), dtype=g.dtype, device=g.device)
        quads.scatter_(-1, index.long().unsqueeze(-1), g.unsqueeze(-1))  # the pool's: to its maximum only
        grad_y = quads.view(n, hp, wp, o, 2, 2).permute(0, 1, 4, 2, 5, 3).reshape(n * hp * 2 * wp * 2, o)
        grad_w = (grad_y.t() @ cols).view(o, k, k, c).permute(0, 3, 1, 2).to(w_dtype)
        grad_b = grad_y.sum(0).to(b_dtype)
        grad_x = None
        if ctx.x_needs_grad:
            dcols = (grad_y @ w_mat).view(n, h - k + 1, w - k + 1, k, k, c).permute(0, 5, 3, 4, 1, 2)
            grad_x = F.fold(dcols.reshape(n, c * k * k, -1), (h, w), k).to(x_dtype)
            grad_x = grad_x.contiguous(memory_format=torch.channels_last)
        return grad_x, grad_w, grad_b


def conv_pool_relu(x: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    """relu(max_pool2d(conv(x), 2)) in one function, for a Conv2d with a bias, no padding, stride 1."""
    return ConvPoolReLU.apply(x, conv.weight, conv.bias)
