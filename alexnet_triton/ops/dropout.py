"""dropout that stores a seed, not a mask: the backward regenerates the mask and saves no tensor."""

from __future__ import annotations

import torch

from ..kernels.dropout import check_probability, check_seed, dropout_backward, dropout_forward, seed_tensor
from .library import kernel_op


@kernel_op("dropout")
def _dropout(x: torch.Tensor, p: float, seed: torch.Tensor) -> torch.Tensor:
    return dropout_forward(x, p, seed)


@kernel_op("dropout_backward")
def _dropout_backward(dy: torch.Tensor, p: float, seed: torch.Tensor) -> torch.Tensor:
    return dropout_backward(dy, p, seed)


def _save(ctx, inputs, output) -> None:
    _, ctx.p, seed = inputs
    ctx.save_for_backward(seed)  # an in-place change of the seed before the backward is an error


def _backward(ctx, dy):
    return _dropout_backward(dy, ctx.p, *ctx.saved_tensors), None, None


_dropout.register_autograd(_backward, setup_context=_save)


def dropout(x: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False,
            seed: int | torch.Tensor | None = None) -> torch.Tensor:
    """``F.dropout(x, p, training, inplace)`` with the mask drawn from ``seed``.

    Element i of x (row-major index; any shape, 0-D included) is kept when
    Philox(seed, i) >= p and scaled by 1/(1-p). The output is a new contiguous
    tensor, or x itself when ``inplace`` (the result copied into x: as in PyTorch,
    an error for a leaf that requires grad). seed: an int in [0, 2**63) or an int64
    tensor of one element on x's device (the kernels read it from there); None draws
    one on x's device from torch's generator, so ``torch.manual_seed`` makes runs
    repeat and a CUDA graph of the call draws a fresh mask at each replay. As in
    PyTorch, p = 0, training=False and empty tensors return x itself; p = 1
    gives zeros and a zero gradient.
    """
    p = check_probability("dropout", p)
    if seed is not None:
        check_seed("dropout", seed, x.device)
    if p == 0.0 or not training or x.numel() == 0:
        return x  # no seed drawn: evaluation leaves torch's RNG untouched
    y = _dropout(x, p, seed_tensor("dropout", seed, x.device))
    return x.copy_(y) if inplace else y
