"""max_pool2d, differentiable in its input; saves int8 window offsets (not int64 indices), from which
``return_indices=True`` makes PyTorch's indices on demand."""

from __future__ import annotations

import torch

from ..kernels.max_pool import max_pool2d_backward, max_pool2d_forward, max_pool2d_indices
from ..kernels.runtime import memory_format_of


class MaxPool2dFunction(torch.autograd.Function):
    """Autograd Function over the Triton max-pool kernels: (y, window offsets) of a 4-D input; the offsets are
    not differentiable (see ``max_pool2d``)."""

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation, ceil_mode):
        y, window = max_pool2d_forward(x, kernel_size, stride, padding, dilation, ceil_mode)
        ctx.save_for_backward(window)
        ctx.pool = dict(x_shape=x.shape, kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation,
                        ceil_mode=ceil_mode, memory_format=memory_format_of(x))
        ctx.mark_non_differentiable(window)
        ctx.set_materialize_grads(False)  # no zero-filled gradient for the offsets: one launch fewer
        return y, window

    @staticmethod
    def backward(ctx, dy, _):
        (window,) = ctx.saved_tensors
        dx = None if dy is None else max_pool2d_backward(dy, window, **ctx.pool)
        return dx, None, None, None, None, None


def max_pool2d(input: torch.Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """``F.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)``.

    input [N, C, H, W] (NCHW or channels_last; the output keeps it; N may be 0) or unbatched [C, H, W]
    -> [N, C, OH, OW] or [C, OH, OW]; with return_indices, also the int64 flat index (h * W + w) of each
    window's maximum in its plane. Gradients and indices go to the first maximum of each window; NaN
    propagates as in PyTorch.
    """
    if input.dim() not in (3, 4):
        raise ValueError(f"max_pool2d: input must be 3-D [C, H, W] or 4-D [N, C, H, W], got shape "
                         f"{tuple(input.shape)}")
    unbatched = input.dim() == 3
    x = input.unsqueeze(0) if unbatched else input
    y, window = MaxPool2dFunction.apply(x, kernel_size, stride, padding, dilation, ceil_mode)
    outputs = [y]
    if return_indices:
        outputs.append(max_pool2d_indices(window, x.shape, kernel_size, stride, padding, dilation, ceil_mode))
    if unbatched:
        outputs = [t.squeeze(0) for t in outputs]
    return tuple(outputs) if return_indices else outputs[0]
