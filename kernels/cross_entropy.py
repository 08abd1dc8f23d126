"""Cross-entropy of logits against class indices (F.cross_entropy semantics), fused log-softmax + NLL.

Notation: logits [N, C], target int64 [N] with values in [0, C).
loss_i = lse_i - logits[i, target_i],  lse_i = m_i + log(sum_c exp(logits[i, c] - m_i)),  m_i = max_c logits[i, c]
(the row maximum is subtracted first, so large logits do not overflow; C is streamed in BLOCK_C chunks
with an online rescaling of the running sum). "mean" and "sum" reduce the per-row losses in a fixed
order in a second kernel (no atomics: the result is deterministic).

Backward, one kernel recomputing the softmax from the logits and the saved lse:
dlogits[i, c] = (exp(logits[i, c] - lse_i) - [c == target_i]) * dloss_i / divisor
(dloss_i: the incoming gradient, one scalar for "mean"/"sum"; divisor N for "mean", else 1).

Math in fp32 (fp64 for float64 logits). Not supported: class-probability targets, class weights,
ignore_index, label smoothing.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import partial_sums, runtime

REDUCTIONS = ("mean", "sum", "none")
# Not autotuned: one row per program, AlexNet's 1000 classes in one chunk.
CONFIGS = runtime.fixed_config(BLOCK_C=1024, num_warps=4)


@triton.jit
def _cross_entropy_forward_kernel(
    # pointers
    logits_ptr, target_ptr, loss_ptr, lse_ptr,
    # sizes
    C,
    # strides, in elements
    logits_sn, logits_sc, target_sn,
    # meta
    COMPUTE_DTYPE: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """loss[i] = lse[i] - logits[i, target[i]]; lse [N] in COMPUTE_DTYPE, loss [N] any float dtype.

    grid (N,): each program streams one row in BLOCK_C chunks.
    """
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + row * logits_sn
    cols = tl.arange(0, BLOCK_C)
    row_max = tl.full([], float("-inf"), COMPUTE_DTYPE)
    total = tl.zeros([], COMPUTE_DTYPE)
    for start in range(0, C, BLOCK_C):  # every chunk holds a real logit, so its maximum is finite
        c = start + cols
        x = tl.load(row_ptr + c * logits_sc, mask=c < C, other=float("-inf")).to(COMPUTE_DTYPE)
        new_max = tl.maximum(row_max, tl.max(x, 0))
        total = total * tl.exp(row_max - new_max) + tl.sum(tl.exp(x - new_max), 0)
        row_max = new_max
    lse = row_max + tl.log(total)
    t = tl.load(target_ptr + row * target_sn)
    # the launcher rejects targets outside [0, C); the mask keeps a bad one from reading out of bounds
    x_t = tl.load(row_ptr + t * logits_sc, mask=(t >= 0) & (t < C), other=0.0).to(COMPUTE_DTYPE)
    tl.store(loss_ptr + row, (lse - x_t).to(loss_ptr.dtype.element_ty))
    tl.store(lse_ptr + row, lse)


@triton.jit
def _sum_row_losses_kernel(
    # pointers
    losses_ptr, out_ptr,
    # sizes
    N,
    # runtime scalars
    divisor,
    # meta
    BLOCK: tl.constexpr,
):
    """out[()] = sum(losses) / divisor, in a fixed order. losses [N] fp32/fp64, out a 0-d float tensor.

    grid (1,): one program adds BLOCK lanes at a time, then reduces the lanes.
    """
    offs = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], dtype=losses_ptr.dtype.element_ty)
    for start in range(0, N, BLOCK):
        acc += tl.load(losses_ptr + start + offs, mask=start + offs < N, other=0.0)
    tl.store(out_ptr, (tl.sum(acc, 0) / divisor).to(out_ptr.dtype.element_ty))


@triton.jit
def _cross_entropy_backward_kernel(
    # pointers
    logits_ptr, target_ptr, lse_ptr, dloss_ptr, dlogits_ptr,
    # sizes
    C,
    # strides, in elements (dloss_sn is 0 for "mean"/"sum": one scalar for every row)
    logits_sn, logits_sc, target_sn, dloss_sn, dlogits_sn, dlogits_sc,
    # runtime scalars
    divisor,
    # meta
    COMPUTE_DTYPE: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """dlogits[i, c] = (softmax(logits)[i, c] - [c == target[i]]) * dloss[i] / divisor.

    grid (N,): each program writes one row in BLOCK_C chunks.
    """
    row = tl.program_id(0).to(tl.int64)
    t = tl.load(target_ptr + row * target_sn)
    lse = tl.load(lse_ptr + row)
    scale = tl.load(dloss_ptr + row * dloss_sn).to(COMPUTE_DTYPE) / divisor
    cols = tl.arange(0, BLOCK_C)
    for start in range(0, C, BLOCK_C):
        c = start + cols
        in_row = c < C
        x = tl.load(logits_ptr + row * logits_sn + c * logits_sc, mask=in_row, other=0.0).to(COMPUTE_DTYPE)
        grad = (tl.exp(x - lse) - (c == t).to(COMPUTE_DTYPE)) * scale
        tl.store(dlogits_ptr + row * dlogits_sn + c * dlogits_sc, grad.to(dlogits_ptr.dtype.element_ty),
                 mask=in_row)


def _check_inputs(op: str, logits: torch.Tensor, target: torch.Tensor, reduction: str) -> None:
    """Clear errors for everything the kernels cannot take, before any launch."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if logits.dim() != 2:
        raise ValueError(f"{op}: logits must be 2-D [N, C], got shape {tuple(logits.shape)}")
    runtime.check_float_dtype(op, logits=logits)
    N, C = logits.shape
    if N == 0 or C == 0:
        raise ValueError(f"{op}: logits {tuple(logits.shape)} must have at least one row and one class")
    if target.dtype != torch.int64:
        raise TypeError(f"{op}: target must hold int64 class indices, got dtype {target.dtype} "
                        "(class-probability targets are not supported)")
    if tuple(target.shape) != (N,):
        raise ValueError(f"{op}: target must have shape ({N},) to match logits {tuple(logits.shape)}, "
                         f"got {tuple(target.shape)}")
    runtime.check_device(op, logits=logits, target=target)


def _check_target_range(op: str, target: torch.Tensor, C: int) -> None:
    """ValueError naming an out-of-range class index (costs one torch.aminmax and, on a GPU, a sync)."""
    lowest, highest = (int(v) for v in torch.aminmax(target))
    if lowest < 0 or highest >= C:
        bad = lowest if lowest < 0 else highest
        raise ValueError(f"{op}: target holds class index {bad}, outside [0, C) for C={C} classes "
                         "(ignore_index is not supported)")


def cross_entropy_forward(logits: torch.Tensor, target: torch.Tensor,
                          reduction: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, lse) for logits [N, C] and target int64 [N].

    loss: [N] for "none", else a 0-d tensor, in logits' dtype; lse: [N] per-row log-sum-exp in fp32
    (fp64 for float64 logits), what the backward needs besides the logits and target.
    """
    _check_inputs("cross_entropy", logits, target, reduction)
    N, C = logits.shape
    _check_target_range("cross_entropy", target, C)
    compute_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    lse = runtime.new_output((N,), device=logits.device, dtype=compute_dtype)
    row_losses = runtime.new_output((N,), device=logits.device,
                                    dtype=logits.dtype if reduction == "none" else compute_dtype)
    runtime.launch(_cross_entropy_forward_kernel, lambda meta: (N,), CONFIGS,
                   logits_ptr=logits, target_ptr=target, loss_ptr=row_losses, lse_ptr=lse, C=C,
                   logits_sn=logits.stride(0), logits_sc=logits.stride(1), target_sn=target.stride(0),
                   COMPUTE_DTYPE=runtime.accumulator_type(logits.dtype))
    if reduction == "none":
        return row_losses, lse
    loss = runtime.new_output((), device=logits.device, dtype=logits.dtype)
    runtime.launch(_sum_row_losses_kernel, lambda meta: (1,), partial_sums.CONFIGS, losses_ptr=row_losses,
                   out_ptr=loss, N=N, divisor=N if reduction == "mean" else 1)
    return loss, lse


def cross_entropy_backward(dloss: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, lse: torch.Tensor,
                           reduction: str = "mean") -> torch.Tensor:
    """dlogits [N, C] (a new contiguous tensor in logits' dtype) from the incoming gradient dloss
    ([N] for "none", 0-d otherwise) and the forward's logits, target and lse."""
    op = "cross_entropy_backward"
    _check_inputs(op, logits, target, reduction)
    N, C = logits.shape
    dloss_shape = (N,) if reduction == "none" else ()
    if tuple(dloss.shape) != dloss_shape or tuple(lse.shape) != (N,):
        raise ValueError(f"{op}: dloss {tuple(dloss.shape)} must have shape {dloss_shape} and lse "
                         f"{tuple(lse.shape)} shape ({N},) for logits {tuple(logits.shape)}, reduction {reduction!r}")
    runtime.check_device(op, dloss=dloss, lse=lse)
    dlogits = runtime.new_output((N, C), device=logits.device, dtype=logits.dtype)
    runtime.launch(_cross_entropy_backward_kernel, lambda meta: (N,), CONFIGS,
                   logits_ptr=logits, target_ptr=target, lse_ptr=lse, dloss_ptr=dloss, dlogits_ptr=dlogits, C=C,
                   logits_sn=logits.stride(0), logits_sc=logits.stride(1), target_sn=target.stride(0),
                   dloss_sn=dloss.stride(0) if reduction == "none" else 0, dlogits_sn=dlogits.stride(0),
                   dlogits_sc=dlogits.stride(1), divisor=N if reduction == "mean" else 1,
                   COMPUTE_DTYPE=runtime.accumulator_type(logits.dtype))
    return dlogits
