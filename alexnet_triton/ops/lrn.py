"""local_response_norm, differentiable in x; saves only x (the denominator is recomputed)."""

from __future__ import annotations

import torch

from ..kernels.lrn import check_lrn_input, lrn_backward, lrn_forward
from .library import kernel_op


@kernel_op("local_response_norm")
def _local_response_norm(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    return lrn_forward(x, size, alpha, beta, k)


@kernel_op("local_response_norm_backward")
def _local_response_norm_backward(dy: torch.Tensor, x: torch.Tensor, size: int, alpha: float, beta: float,
                                  k: float) -> torch.Tensor:
    return lrn_backward(dy, x, size, alpha, beta, k)


def _save(ctx, inputs, output) -> None:
    x, *ctx.lrn = inputs
    ctx.save_for_backward(x)


def _backward(ctx, dy):
    (x,) = ctx.saved_tensors
    return _local_response_norm_backward(dy, x, *ctx.lrn), None, None, None, None


_local_response_norm.register_autograd(_backward, setup_context=_save)


def local_response_norm(x: torch.Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> torch.Tensor:
    """``F.local_response_norm(x, size, alpha, beta, k)`` across channels of x [N, C, *spatial] (3-D and up; even
    sizes have one channel more before than after, as in PyTorch; k > 0 and alpha >= 0).

    alpha is divided by size, as PyTorch, Caffe and cuDNN do; the 2012 paper's
    literal alpha=1e-4 without that division is alpha=5e-4 here (size 5).
    """
    check_lrn_input("local_response_norm", x.shape, size, alpha, k)
    return _local_response_norm(x, size, float(alpha), float(beta), float(k))
