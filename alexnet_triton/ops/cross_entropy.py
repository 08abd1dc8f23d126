"""cross_entropy (fused log-softmax + NLL), differentiable in the logits and in class-probability targets."""

from __future__ import annotations

import torch
from torch.nn import _reduction

from ..kernels import checks
from ..kernels.cross_entropy import (
    SavedForBackward,
    check_options,
    cross_entropy_backward,
    cross_entropy_forward,
    device_target_check,
)
from ..precision import autocast_on, autocast_operands
from .library import kernel_op


@kernel_op("cross_entropy", fake_context=device_target_check)
def _cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, ignore_index: int,
                   reduction: str, label_smoothing: float, loss_dtype: torch.dtype) -> list[torch.Tensor]:
    """[loss, lse, mass?, divisor?]: the loss (of ``loss_dtype``), then what the backward needs
    (``SavedForBackward``'s tensors)."""
    loss, saved = cross_entropy_forward(logits, target, reduction, weight=weight, ignore_index=ignore_index,
                                        label_smoothing=label_smoothing, loss_dtype=loss_dtype)
    return [loss, *(t for t in saved if t is not None)]


@kernel_op("cross_entropy_backward")
def _cross_entropy_backward(dloss: torch.Tensor, logits: torch.Tensor, target: torch.Tensor,
                            weight: torch.Tensor | None, saved: list[torch.Tensor], has_mass: bool,
                            ignore_index: int, reduction: str, label_smoothing: float,
                            target_grad: bool) -> list[torch.Tensor]:
    """[dlogits] or, with ``target_grad`` (class-probability targets), [dlogits, dtarget]."""
    lse, *rest = saved
    mass = rest.pop(0) if has_mass else None
    saved_for_backward = SavedForBackward(lse, mass, rest[0] if rest else None)
    dlogits, dtarget = cross_entropy_backward(dloss, logits, target, saved_for_backward, reduction, weight=weight,
                                              ignore_index=ignore_index, label_smoothing=label_smoothing,
                                              target_grad=target_grad)
    return [dlogits, dtarget] if target_grad else [dlogits]


def _save(ctx, inputs, output) -> None:
    logits, target, weight, *ctx.options, _ = inputs
    ctx.has_mass = target.is_floating_point() or ctx.options[2] > 0  # soft targets or label smoothing
    ctx.save_for_backward(logits, target, weight, *output[1:])
    ctx.mark_non_differentiable(*output[1:])  # the backward's inputs, not results
    ctx.set_materialize_grads(False)  # no zero-filled gradients made for them


def _backward(ctx, grads):
    logits, target, weight, *saved = ctx.saved_tensors
    need_logits, need_target = ctx.needs_input_grad[:2]
    if grads[0] is None:  # the loss was not used
        return None, None, None, None, None, None, None
    grads = _cross_entropy_backward(grads[0], logits, target, weight, saved, ctx.has_mass, *ctx.options,
                                    need_target)
    return grads[0] if need_logits else None, grads[1] if need_target else None, None, None, None, None, None


_cross_entropy.register_autograd(_backward, setup_context=_save)


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
    F.cross_entropy (float64 stays float64; alexnet_triton.precision). There fp16/bf16 logits with class-index
    targets (and no class weights, or weights of the logits' dtype) reach the kernels uncast: they compute in
    fp32 anyway and write the gradient in the logits' dtype, the bits of the casts, without the cast launches.
    "mean" and "sum" are deterministic (fixed-order reduction). The gradient is recomputed from the logits in one
    kernel and written to new tensors: w.r.t. the logits, and w.r.t. class-probability targets that need one
    (first derivatives only).
    """
    if size_average is not None or reduce is not None:
        reduction = _reduction.legacy_get_string(size_average, reduce)
    uncast = autocast_on(input.device.type) and input.dtype in checks.LOW_DTYPES and \
        not target.is_floating_point() and (weight is None or weight.dtype == input.dtype)
    if not uncast:
        input, target, weight = autocast_operands(input, target, weight, fp32=True)
    if weight is not None and weight.requires_grad and torch.is_grad_enabled():
        raise NotImplementedError("cross_entropy: no gradient w.r.t. weight; pass weight.detach()")
    check_options("cross_entropy", ignore_index, reduction, label_smoothing)
    loss_dtype = torch.float32 if uncast else input.dtype
    return _cross_entropy(input, target, weight, ignore_index, reduction, float(label_smoothing), loss_dtype)[0]
