"""AlexNet's fused LRN + max-pool block, differentiable in x; saves x (the conv+ReLU output) and int8 offsets."""

from __future__ import annotations

import torch

from ..kernels.lrn_max_pool import lrn_max_pool2d_backward, lrn_max_pool2d_forward


class LRNMaxPool2dFunction(torch.autograd.Function):
    """Autograd Function over the fused Triton kernels (see ``lrn_max_pool2d``)."""

    @staticmethod
    def forward(ctx, x, size, alpha, beta, k, kernel_size, stride, padding):
        block = dict(size=size, alpha=alpha, beta=beta, k=k, kernel_size=kernel_size, stride=stride, padding=padding)
        y, window = lrn_max_pool2d_forward(x, **block)
        ctx.save_for_backward(window, x)
        ctx.block = block
        ctx.mark_non_differentiable(window)
        return y

    @staticmethod
    def backward(ctx, dy):
        window, x = ctx.saved_tensors
        return lrn_max_pool2d_backward(dy, window, x, **ctx.block), None, None, None, None, None, None, None


def lrn_max_pool2d(x: torch.Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0,
                   kernel_size=3, stride=2, padding=0) -> torch.Tensor:
    """``F.max_pool2d(F.local_response_norm(x, size, alpha, beta, k), kernel_size, stride, padding)`` fused.

    x [N, C, H, W] (NCHW or channels_last; the output keeps it) -> [N, C, OH, OW].
    In AlexNet x is the conv+ReLU output, which the conv saves anyway: the block
    adds only 1 byte per output element of saved state. Defaults: the 2012 net's
    overlapping 3x3/2 pool.
    """
    return LRNMaxPool2dFunction.apply(x, size, alpha, beta, k, kernel_size, stride, padding)
