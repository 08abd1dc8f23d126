"""conv2d with fused bias and ReLU, differentiable in x, weight and bias; a stride-b conv with few channels (AlexNet's
conv1) runs as its space-to-depth form (``kernels.conv.Depth``)."""

from __future__ import annotations

import torch

from ..kernels import checks
from ..kernels.conv import (
    Depth,
    conv2d_depth,
    conv2d_forward,
    conv2d_input_grad,
    conv2d_output_grad,
    conv2d_weight_grad,
)
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
        return *_gradients(
            ctx, dy, y,
            lambda dy: conv2d_input_grad(dy, weight, x.shape, memory_format=memory_format_of(x), **ctx.conv),
            lambda dy: conv2d_weight_grad(dy, x, weight.shape, memory_format=memory_format_of(weight), **ctx.conv)
        ), None, None, None, None, None, None


def _gradients(ctx, dy, y, input_grad, weight_grad) -> tuple:
    """(dx, dw, db) of the inputs that need one: the ReLU mask (y: the saved output, or None) and the bias
    gradient applied once (``conv2d_output_grad``), then ``input_grad(dy)`` and ``weight_grad(dy)``."""
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    dy, db = conv2d_output_grad(dy, y, bias_grad=ctx.has_bias and need_b)
    return input_grad(dy) if need_x else None, weight_grad(dy) if need_w else None, db


class DepthConv2dFunction(torch.autograd.Function):
    """Autograd Function over a conv's space-to-depth form (``Depth``): x and the weight in their own dtypes
    (fp32 under autocast), cast to ``dtype`` by the rearranging passes; x_d is saved for the weight gradient
    (the weight's form is remade for an input gradient), and the gradients come back in x's and the weight's
    dtypes and layouts (autocast's casts' backward)."""

    @staticmethod
    def forward(ctx, x, weight, bias, depth: Depth, dtype, relu, precision):
        y, x_d = depth.forward(x, weight, bias, relu, precision, dtype)
        ctx.save_for_backward(x_d, weight, y if relu else None)
        ctx.depth, ctx.precision, ctx.has_bias = depth, precision, bias is not None
        ctx.x_like = (x.shape, memory_format_of(x), x.dtype)
        ctx.weight_like = (weight.shape, memory_format_of(weight), weight.dtype)
        return y

    @staticmethod
    def backward(ctx, dy):
        x_d, weight, y = ctx.saved_tensors
        return *_gradients(ctx, dy, y, lambda dy: ctx.depth.input_grad(dy, weight, *ctx.x_like, ctx.precision),
                           lambda dy: ctx.depth.weight_grad(dy, x_d, *ctx.weight_like, ctx.precision)
                           ), None, None, None, None


def conv2d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0,
           dilation=1, groups: int = 1, *, relu: bool = False, precision: str = "ieee") -> torch.Tensor:
    """``F.conv2d(input, weight, bias, stride, padding, dilation, groups)``, then ReLU if ``relu``.

    input [N, C_in, H, W] (NCHW or channels_last; the output keeps it) or unbatched [C_in, H, W], weight
    [C_out, C_in/groups, R, S], bias [C_out] -> [N, C_out, OH, OW] (unbatched: [C_out, OH, OW]).
    stride, dilation: int or pair; padding: int, pair, "valid" or "same" (stride 1; an odd total puts the extra
    row/column below/right, as PyTorch does). N may be 0. precision: "ieee" (exact fp32 products) or "tf32"
    (fp32 on tensor cores, GPU only). Under torch.autocast, input, weight and bias are cast to its dtype first,
    as F.conv2d's are (alexnet_triton.precision); on the space-to-depth path the rearranging passes cast x and
    the weight.
    """
    if input.dim() not in (3, 4):
        raise ValueError(f"conv2d: input must be 3-D [C_in, H, W] or 4-D [N, C_in, H, W], got shape "
                         f"{tuple(input.shape)}")
    x = input.unsqueeze(0) if input.dim() == 3 else input  # unbatched: a batch of one (a view, no copy)
    dtype = autocast_operands(x.new_empty(0))[0].dtype  # the dtype the conv computes in (x's, or autocast's)
    depth = None if weight.dim() != 4 else conv2d_depth(x, weight.shape, stride, padding, dilation, groups,
                                                        dtype, precision)
    if depth is None:
        x, weight, bias = autocast_operands(x, weight, bias)
        y = Conv2dFunction.apply(x, weight, bias, stride, padding, dilation, groups, relu, precision)
    else:  # the dtypes autocast gives x and the weight, checked on empty stand-ins (they are cast on the way)
        x_like, weight_like, bias = autocast_operands(x.new_empty(0), weight.new_empty(0), bias)
        checks.check_layer_operands("conv2d", x_like, weight_like, bias, weight.shape[0])
        checks.check_precision("conv2d", precision)
        y = DepthConv2dFunction.apply(x, weight, bias, depth, dtype, relu, precision)
    return y.squeeze(0) if input.dim() == 3 else y
