"""cross_entropy (fused log-softmax + NLL), differentiable in the logits and in class-probability targets."""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable
from torch.nn import _reduction

from ..kernels.cross_entropy import SavedForBackward, cross_entropy_backward, cross_entropy_forward
from ..precision import autocast_operands


class CrossEntropyFunction(torch.autograd.Function):
    """Autograd Function over the Triton cross-entropy kernels (see ``cross_entropy``); saves logits, target,
    weight and the forward's per-row log-sum-exp (and target mass, "mean" divisor)."""

    @staticmethod
    def forward(ctx, logits, target, weight, ignore_index, reduction, label_smoothing):
        if ctx.needs_input_grad[2]:
            raise NotImplementedError("cross_entropy: no gradient w.r.t. weight; pass weight.detach()")
        ctx.reduction, ctx.options = reduction, dict(ignore_index=ignore_index, label_smoothing=label_smoothing)
        loss, saved = cross_entropy_forward(logits, target, reduction, weight=weight, **ctx.options)
        ctx.save_for_backward(logits, target, weight, *saved)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, dloss):
        logits, target, weight, *saved = ctx.saved_tensors
        dlogits, dtarget = cross_entropy_backward(dloss, logits, target, SavedForBackward(*saved), ctx.reduction,
                                                  weight=weight, target_grad=ctx.needs_input_grad[1], **ctx.options)
        return dlogits if ctx.needs_input_grad[0] else None, dtarget, None, None, None, None


def cross_entropy(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                  size_average: bool | None = None, ignore_index: int = -100, reduce: bool | None = None,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> torch.Tensor:
    """``F.cross_entropy`` with the same arguments and results.

    input: logits (N, C), (N, C, d1, ..., dk) or unbatched (C,), fp32/fp16/bf16 (float64 in interpreter mode);
    target: class indices (N), (N, d1, ..., dk) or () (int64 or uint8, in [0, C) or ``ignore_index``), or class
    probabilities of the input's shape and dtype; weight: [C] class weights (no gradient) or None.
    size_average / reduce: deprecated, mapped to ``reduction`` with PyTorch's warning, as PyTorch does.
    Returns a 0-d loss ("mean", "sum") or the per-position losses ("none"), in the input's dtype; under
    torch.autocast, in float32 from float32 copies of input and floating-point target and weight, as
    F.cross_entropy (float64 stays float64; alexnet_triton.precision).
    "mean" and "sum" are deterministic (fixed-order reduction). The gradient is recomputed from the logits in one
    kernel and written to new tensors: w.r.t. the logits, and w.r.t. class-probability targets that need one
    (first derivatives only).
    """
    if size_average is not None or reduce is not None:
        reduction = _reduction.legacy_get_string(size_average, reduce)
    input, target, weight = autocast_operands(input, target, weight, fp32=True)
    return CrossEntropyFunction.apply(input, target, weight, ignore_index, reduction, label_smoothing)
