"""cross_entropy (fused log-softmax + NLL), differentiable in the logits; saves logits, target and per-row lse."""

from __future__ import annotations

import torch

from ..kernels.cross_entropy import cross_entropy_backward, cross_entropy_forward


class CrossEntropyFunction(torch.autograd.Function):
    """Autograd Function over the Triton cross-entropy kernels (see ``cross_entropy``)."""

    @staticmethod
    def forward(ctx, logits, target, reduction):
        loss, lse = cross_entropy_forward(logits, target, reduction)
        ctx.save_for_backward(logits, target, lse)
        ctx.reduction = reduction
        return loss

    @staticmethod
    def backward(ctx, dloss):
        logits, target, lse = ctx.saved_tensors
        return cross_entropy_backward(dloss, logits, target, lse, ctx.reduction), None, None


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """``F.cross_entropy(logits, target, reduction=reduction)`` for class-index targets.

    logits [N, C] (fp32/fp16/bf16; float64 in interpreter mode), target int64 [N] in [0, C) ->
    a 0-d loss ("mean", "sum") or [N] ("none"), in logits' dtype. "mean" and "sum" are deterministic
    (fixed-order reduction). The gradient softmax - onehot is recomputed from the logits in one kernel
    and written to a new tensor. No class weights, ignore_index or label smoothing.
    """
    return CrossEntropyFunction.apply(logits, target, reduction)
