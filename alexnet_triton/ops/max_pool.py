"""max_pool2d, differentiable in x; saves int8 window offsets, not int64 indices."""

from __future__ import annotations

import torch

from ..kernels.max_pool import max_pool2d_backward, max_pool2d_forward
from ..kernels.runtime import memory_format_of


class MaxPool2dFunction(torch.autograd.Function):
    """Autograd Function over the Triton max-pool kernels (see ``max_pool2d``)."""

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding):
        y, window = max_pool2d_forward(x, kernel_size, stride, padding)
        ctx.save_for_backward(window)
        ctx.pool = dict(x_shape=x.shape, kernel_size=kernel_size, stride=stride, padding=padding,
                        memory_format=memory_format_of(x))
        ctx.mark_non_differentiable(window)
        return y

    @staticmethod
    def backward(ctx, dy):
        (window,) = ctx.saved_tensors
        return max_pool2d_backward(dy, window, **ctx.pool), None, None, None


def max_pool2d(x: torch.Tensor, kernel_size, stride=None, padding=0) -> torch.Tensor:
    """``F.max_pool2d(x, kernel_size, stride, padding)`` (ceil_mode=False, dilation 1).

    x [N, C, H, W] (NCHW or channels_last; the output keeps it) -> [N, C, OH, OW].
    Gradients go to the first maximum of each window; NaN propagates as in PyTorch.
    """
    return MaxPool2dFunction.apply(x, kernel_size, stride, padding)
