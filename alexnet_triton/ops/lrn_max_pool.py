"""AlexNet's fused (bias +) (ReLU +) LRN + max-pool block, differentiable in x and the bias; saves x (the conv's
output), the bias and the window offsets (int8 up to 127 taps)."""

from __future__ import annotations

import torch

from ..kernels.lrn_max_pool import lrn_max_pool2d_backward, lrn_max_pool2d_forward, lrn_max_pool2d_geometry
from ..kernels.max_pool import check_bias, check_relu
from .library import kernel_op


@kernel_op("lrn_max_pool2d")
def _lrn_max_pool2d(x: torch.Tensor, bias: torch.Tensor | None, size: int, alpha: float, beta: float, k: float,
                    kernel_size: list[int], stride: list[int], padding: list[int], relu: bool) -> list[torch.Tensor]:
    """[y, window offsets]."""
    return list(lrn_max_pool2d_forward(x, size, alpha, beta, k, kernel_size, stride, padding, relu, bias))


@kernel_op("lrn_max_pool2d_backward")
def _lrn_max_pool2d_backward(dy: torch.Tensor, window: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None,
                             size: int, alpha: float, beta: float, k: float, kernel_size: list[int],
                             stride: list[int], padding: list[int], relu: bool, bias_grad: bool
                             ) -> list[torch.Tensor]:
    """[dx], then [db] when ``bias_grad``."""
    dx, db = lrn_max_pool2d_backward(dy, window, x, size, alpha, beta, k, kernel_size, stride, padding, relu, bias,
                                     bias_grad)
    return [dx] if db is None else [dx, db]


def _save(ctx, inputs, output) -> None:
    x, bias, *ctx.block = inputs
    ctx.save_for_backward(output[1], x, bias)
    ctx.set_materialize_grads(False)  # no zero-filled gradient for the offsets (nor for an unused y)


def _backward(ctx, grads):
    window, x, bias = ctx.saved_tensors
    if grads[0] is None:
        return (None,) * 10
    dx, *db = _lrn_max_pool2d_backward(grads[0], window, x, bias, *ctx.block, ctx.needs_input_grad[1])
    return dx, *(db or [None]), *(None,) * 8


_lrn_max_pool2d.register_autograd(_backward, setup_context=_save)


def lrn_max_pool2d(x: torch.Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0,
                   kernel_size=3, stride=2, padding=0, *, relu: bool = False,
                   bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.max_pool2d(F.local_response_norm(z, size, alpha, beta, k), kernel_size, stride, padding)`` fused, for
    z = x, or x + bias[c] with a ``bias`` [C]; with ``relu``, of ``F.relu(z)``.

    x [N, C, H, W] (NCHW or channels_last; the output keeps it) -> [N, C, OH, OW].
    In AlexNet x is the output of conv1 or conv2 without its bias, which is this block's (its gradient, dx summed
    over N, H, W, comes from this backward's pass: the conv's backward needs none), with relu (the conv then needs
    no ReLU mask in its backward): the block saves x and 1 byte per output element. Defaults: the 2012 net's
    overlapping 3x3/2 pool. bias: x's dtype, or fp32 with an fp16/bf16 x (autocast's master parameter: rounded to
    x's dtype, its gradient fp32). x + bias is rounded to x's dtype, as the unfused add stores it: with fp16/bf16
    a conv's output is then rounded twice (before and after the bias) where its own bias epilogue rounds once;
    fp32 is bitwise the same.
    """
    g = lrn_max_pool2d_geometry(x.shape, size, alpha, beta, k, kernel_size, stride, padding)
    check_relu("lrn_max_pool2d", relu)
    check_bias("lrn_max_pool2d", bias, x)
    return _lrn_max_pool2d(x, bias, size, float(alpha), float(beta), float(k), [g["KH"], g["KW"]],
                           [g["stride_h"], g["stride_w"]], [g["pad_h"], g["pad_w"]], relu)[0]
