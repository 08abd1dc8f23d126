"""local_response_norm, differentiable in x; saves only x (the denominator is recomputed)."""

from __future__ import annotations

import torch

from ..kernels.lrn import lrn_backward, lrn_forward


class LocalResponseNormFunction(torch.autograd.Function):
    """Autograd Function over the Triton LRN kernels (see ``local_response_norm``)."""

    @staticmethod
    def forward(ctx, x, size, alpha, beta, k):
        ctx.save_for_backward(x)
        ctx.lrn = dict(size=size, alpha=alpha, beta=beta, k=k)
        return lrn_forward(x, size, alpha, beta, k)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return lrn_backward(dy, x, **ctx.lrn), None, None, None, None


def local_response_norm(x: torch.Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> torch.Tensor:
    """``F.local_response_norm(x, size, alpha, beta, k)`` across channels of x [N, C, *spatial] (3-D and up; even
    sizes have one channel more before than after, as in PyTorch; k > 0 and alpha >= 0).

    alpha is divided by size, as PyTorch, Caffe and cuDNN do; the 2012 paper's
    literal alpha=1e-4 without that division is alpha=5e-4 here (size 5).
    """
    return LocalResponseNormFunction.apply(x, size, alpha, beta, k)
