"""conv2d with fused bias and ReLU, differentiable in x, weight and bias."""

from __future__ import annotations

import torch

from ..kernels.conv import conv2d_forward, conv2d_input_grad, conv2d_output_grad, conv2d_weight_grad
from ..kernels.runtime import memory_format_of
from ..precision import autocast_operands


class Conv2dFunction(torch.autograd.Function):
    """Autograd Function over the Triton conv kernels (see ``conv2d``); x is 4-D."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups, relu, precision):
        y = conv2d_forward(x, weight, bias, stride, padding, dilation, groups, relu, precision)
        ctx.save_for_backward(x, weight, y if relu else None)
        ctx.conv = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, precision=precision)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, y = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        dx = dw = None
        dy, db = conv2d_output_grad(dy, y, bias_grad=ctx.has_bias and need_b)  # ReLU mask applied once
        if need_x:
            dx = conv2d_input_grad(dy, weight, x.shape, memory_format=memory_format_of(x), **ctx.conv)
        if need_w:
            dw = conv2d_weight_grad(dy, x, weight.shape, memory_format=memory_format_of(weight), **ctx.conv)
        return dx, dw, db, None, None, None, None, None, None


def conv2d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0,
           dilation=1, groups: int = 1, *, relu: bool = False, precision: str = "ieee") -> torch.Tensor:
    """``F.conv2d(input, weight, bias, stride, padding, dilation, groups)``, then ReLU if ``relu``.

    input [N, C_in, H, W] (NCHW or channels_last; the output keeps it) or unbatched [C_in, H, W], weight
    [C_out, C_in/groups, R, S], bias [C_out] -> [N, C_out, OH, OW] (unbatched: [C_out, OH, OW]).
    stride, dilation: int or pair; padding: int, pair, "valid" or "same" (stride 1; an odd total puts the extra
    row/column below/right, as PyTorch does). N may be 0. precision: "ieee" (exact fp32 products) or "tf32"
    (fp32 on tensor cores, GPU only). Under torch.autocast, input, weight and bias are cast to its dtype first,
    as F.conv2d's are (alexnet_triton.precision).
    """
    input, weight, bias = autocast_operands(input, weight, bias)
    if input.dim() == 3:  # unbatched: a batch of one (views, no copy)
        return Conv2dFunction.apply(input.unsqueeze(0), weight, bias, stride, padding, dilation, groups, relu,
                                    precision).squeeze(0)
    if input.dim() != 4:
        raise ValueError(f"conv2d: input must be 3-D [C_in, H, W] or 4-D [N, C_in, H, W], got shape "
                         f"{tuple(input.shape)}")
    return Conv2dFunction.apply(input, weight, bias, stride, padding, dilation, groups, relu, precision)
