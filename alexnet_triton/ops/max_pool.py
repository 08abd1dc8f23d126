"""max_pool2d (of x + bias[c] with a ``bias``, then of its relu with ``relu``), differentiable in x and the bias; saves
window offsets (int8 up to 127 taps, not int64 indices), from which ``return_indices=True`` makes PyTorch's indices on
demand."""

from __future__ import annotations

import torch

from ..kernels import checks
from ..kernels.max_pool import (
    check_bias,
    check_relu,
    max_pool2d_backward,
    max_pool2d_dilation,
    max_pool2d_forward,
    max_pool2d_geometry,
    max_pool2d_indices,
)
from ..kernels.runtime import memory_format_of
from .library import kernel_op


@kernel_op("max_pool2d")
def _max_pool2d(x: torch.Tensor, bias: torch.Tensor | None, kernel_size: list[int], stride: list[int],
                padding: list[int], dilation: list[int], ceil_mode: bool, relu: bool,
                contiguous_output: bool) -> list[torch.Tensor]:
    """[y, window offsets] of a 4-D x (plus bias [C]), in x's layout or, with contiguous_output, NCHW."""
    return list(max_pool2d_forward(x, kernel_size, stride, padding, dilation, ceil_mode, relu, bias,
                                   torch.contiguous_format if contiguous_output else None))


@kernel_op("max_pool2d_backward")
def _max_pool2d_backward(dy: torch.Tensor, window: torch.Tensor, x_shape: list[int], kernel_size: list[int],
                         stride: list[int], padding: list[int], dilation: list[int], ceil_mode: bool,
                         channels_last: bool, bias_dtype: torch.dtype | None) -> list[torch.Tensor]:
    """[dx], then [db] (of ``bias_dtype``) when a bias dtype is given."""
    dx, db = max_pool2d_backward(dy, window, x_shape, kernel_size, stride, padding, dilation, ceil_mode,
                                 torch.channels_last if channels_last else torch.contiguous_format, bias_dtype)
    return [dx] if db is None else [dx, db]


@kernel_op("max_pool2d_indices")
def _max_pool2d_indices(window: torch.Tensor, x_shape: list[int], kernel_size: list[int], stride: list[int],
                        padding: list[int], dilation: list[int], ceil_mode: bool) -> torch.Tensor:
    return max_pool2d_indices(window, x_shape, kernel_size, stride, padding, dilation, ceil_mode)


def _save(ctx, inputs, output) -> None:
    x, bias, *ctx.pool, _, _ = inputs  # the window offsets hold what the backward needs of relu
    ctx.x_shape, ctx.channels_last = list(x.shape), memory_format_of(x) is torch.channels_last
    ctx.bias_dtype = None if bias is None else bias.dtype
    ctx.save_for_backward(output[1])
    ctx.set_materialize_grads(False)  # no zero-filled gradient for the offsets (nor for an unused y)


def _backward(ctx, grads):
    (window,) = ctx.saved_tensors
    dy = grads[0]
    if dy is None:
        return (None,) * 9
    bias_dtype = ctx.bias_dtype if ctx.needs_input_grad[1] else None
    dx, *db = _max_pool2d_backward(dy, window, ctx.x_shape, *ctx.pool, ctx.channels_last, bias_dtype)
    return dx, *(db or [None]), None, None, None, None, None, None, None


_max_pool2d.register_autograd(_backward, setup_context=_save)


def max_pool2d(input: torch.Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, *, relu: bool = False, bias: torch.Tensor | None = None,
               contiguous_output: bool = False):
    """``F.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)``; with ``bias`` [C],
    of ``input + bias[c]`` (a conv's bias moved after it: its gradient, dx summed over N, H, W, comes from this
    backward's pass, and the conv's backward needs no pass to make it); with ``relu``, of ``F.relu`` of that (a
    ReLU before the pool: its mask costs the backward nothing, kernels/max_pool.py).

    input [N, C, H, W] (NCHW or channels_last; the output keeps it, or is NCHW with ``contiguous_output``: what
    a flatten after the pool reads as a view, not a copy; N may be 0) or unbatched [C, H, W]
    -> [N, C, OH, OW] or [C, OH, OW]; with return_indices, also the int64 flat index (h * W + w) of each
    window's maximum in its plane. Gradients and indices go to the first maximum of each window; NaN
    propagates as in PyTorch. bias: input's dtype, or fp32 with an fp16/bf16 input (autocast's master
    parameter: rounded to input's dtype, its gradient fp32). input + bias is rounded to input's dtype before the
    max, as the unfused add stores it: with fp16/bf16 a conv's output is then rounded twice (before and after
    the bias) where its own bias epilogue rounds once; fp32 is bitwise the same.
    """
    if input.dim() not in (3, 4):
        raise checks.ArgumentError(f"max_pool2d: input must be 3-D [C, H, W] or 4-D [N, C, H, W], got shape "
                                   f"{tuple(input.shape)}")
    unbatched = input.dim() == 3
    x = input.unsqueeze(0) if unbatched else input
    g = max_pool2d_geometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    check_relu("max_pool2d", relu)
    check_bias("max_pool2d", bias, x)
    d = max_pool2d_dilation(dilation)
    pool = ([g["KH"], g["KW"]], [g["stride_h"], g["stride_w"]], [g["pad_h"], g["pad_w"]],
            [d["DILATION_H"], d["DILATION_W"]], ceil_mode)
    y, window = _max_pool2d(x, bias, *pool, relu, contiguous_output)
    outputs = [y]
    if return_indices:
        outputs.append(_max_pool2d_indices(window, list(x.shape), *pool))
    if unbatched:
        outputs = [t.squeeze(0) for t in outputs]
    return tuple(outputs) if return_indices else outputs[0]
