"""dropout that stores a seed, not a mask: the backward regenerates the mask and saves no tensor."""

from __future__ import annotations

import torch

from ..kernels.dropout import check_probability, check_seed, dropout_backward, dropout_forward, seed_tensor


class DropoutFunction(torch.autograd.Function):
    """Autograd Function over the Triton dropout kernel (see ``dropout``)."""

    @staticmethod
    def forward(ctx, x, p, seed, inplace):
        ctx.p = p
        ctx.save_for_backward(seed)  # an in-place change of the seed before the backward is an error
        if inplace:
            ctx.mark_dirty(x)
        return dropout_forward(x, p, seed, inplace=inplace)

    @staticmethod
    def backward(ctx, dy):
        return dropout_backward(dy, ctx.p, *ctx.saved_tensors), None, None, None


def dropout(x: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False,
            seed: int | torch.Tensor | None = None) -> torch.Tensor:
    """``F.dropout(x, p, training, inplace)`` with the mask drawn from ``seed``.

    Element i of x (row-major index; any shape, 0-D included) is kept when
    Philox(seed, i) >= p and scaled by 1/(1-p). The output is a new contiguous
    tensor, or x itself when ``inplace`` (as in PyTorch, an error for a leaf that
    requires grad). seed: an int in [0, 2**63) or an int64 tensor of one element
    on x's device (the kernels read it from there); None draws one on x's device
    from torch's generator, so ``torch.manual_seed`` makes runs repeat and a
    CUDA graph of the call draws a fresh mask at each replay. As in
    PyTorch, p = 0, training=False and empty tensors return x itself; p = 1
    gives zeros and a zero gradient.
    """
    p = check_probability("dropout", p)
    if seed is not None:
        check_seed("dropout", seed, x.device)
    if p == 0.0 or not training or x.numel() == 0:
        return x  # no seed drawn: evaluation leaves torch's RNG untouched
    seed = seed_tensor("dropout", seed, x.device)
    return DropoutFunction.apply(x, p, seed, inplace)
