"""Cross-entropy of logits against class indices or class probabilities (F.cross_entropy semantics), fused
log-softmax + NLL.

Notation: logits [N, C, S] (F.cross_entropy's (N, C, d1, ..., dk) with S = d1 * ... * dk, or (C,) as [1, C, 1]),
one row per position (n, s): lse = m + log(sum_c exp(x_c - m)), m = max_c x_c (the row maximum is subtracted
first, so large logits do not overflow; C is streamed in BLOCK_C chunks with an online rescaling of the running
sum). With class weights w (1 without) and the target distribution q of a row,
    loss = sum_c w_c q_c (lse - x_c),   q = y (1 - eps) + eps / C   (soft targets y: probabilities [N, C, S])
                                        q = onehot(t) (1 - eps) + eps / C   (class indices t: [N, S])
which is PyTorch's formula (eps = label_smoothing; for class indices without smoothing loss = w_t (lse - x_t),
one gathered logit). A row whose class index equals ignore_index has loss 0. "sum" adds the row losses, "mean"
divides the sum by the sum of w_t over the rows not ignored (class indices; nan when every row is ignored) or by
the number of rows (soft targets; nan when there are none). Both reduce in a fixed order in a second kernel (no
atomics: the result is deterministic).

Backward, one kernel recomputing the softmax p = exp(x - lse) from the logits and the saved lse:
    dlogits_c = (mass p_c - w_c q_c) * g,   mass = sum_c w_c q_c (saved per row; w_t for class indices
                                             without smoothing),   0 for ignored rows
    dtarget_c = (1 - eps) w_c (lse - x_c) * g   (soft targets only: F.cross_entropy is differentiable in them)
(g: the incoming gradient of the row, divided by the forward's divisor for "mean").

Math in fp32 (fp64 for float64 logits). Not supported: a gradient w.r.t. the class weights.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from . import checks, partial_sums, runtime

REDUCTIONS = ("mean", "sum", "none")
CLASS_INDEX_DTYPES = (torch.int64, torch.uint8)  # what F.cross_entropy takes for class indices
# Not autotuned: one row per program, AlexNet's 1000 classes in one chunk.
CONFIGS = runtime.fixed_config(BLOCK_C=1024, num_warps=4)
_HOST_TARGET_CHECK: contextvars.ContextVar[bool] = contextvars.ContextVar("host_target_check", default=True)


@contextlib.contextmanager
def device_target_check():
    """Inside it, a forward does not check class-index targets on the host (``torch.aminmax`` and a read of its
    result: a GPU sync per call, and no CUDA graph can hold it); the kernel alone guards: a row whose target is
    outside [0, C) and not ignore_index gets a NaN loss (so a "mean" or "sum" loss is NaN), where the host check
    raises a ValueError naming the index."""
    token = _HOST_TARGET_CHECK.set(False)
    try:
        yield
    finally:
        _HOST_TARGET_CHECK.reset(token)


@triton.jit
def _target_and_weight(c, in_row, t, target_row_ptr, target_sc, weight_ptr, weight_sc, one_minus_eps, eps_over_c,
                       SOFT_TARGET: tl.constexpr, HAS_WEIGHT: tl.constexpr, SMOOTHING: tl.constexpr,
                       COMPUTE_DTYPE: tl.constexpr):
    """(q, w) over one chunk of classes c: the row's smoothed target distribution and the class weights
    (1 without), both 0 outside the row (c >= C)."""
    if SOFT_TARGET:
        q = tl.load(target_row_ptr + c * target_sc, mask=in_row, other=0.0).to(COMPUTE_DTYPE)
    else:
        q = (c == t).to(COMPUTE_DTYPE)
    if SMOOTHING:
        q = tl.where(in_row, q * one_minus_eps + eps_over_c, 0.0)
    if HAS_WEIGHT:
        w = tl.load(weight_ptr + c * weight_sc, mask=in_row, other=0.0).to(COMPUTE_DTYPE)
    else:
        w = in_row.to(COMPUTE_DTYPE)
    return q, w


@triton.jit
def _cross_entropy_forward_kernel(
    # pointers
    logits_ptr, target_ptr, weight_ptr, loss_ptr, lse_ptr, row_weight_ptr, mass_ptr,
    # sizes
    C, S,
    # strides, in elements
    logits_sn, logits_sc, logits_ss, target_sn, target_sc, target_ss, weight_sc,
    # runtime scalars (label smoothing eps: 1 - eps and eps / C, computed on the host in double precision)
    ignore_index, one_minus_eps, eps_over_c,
    # meta
    SOFT_TARGET: tl.constexpr, HAS_WEIGHT: tl.constexpr, SMOOTHING: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """loss[r], lse[r] (COMPUTE_DTYPE) of each row r = n * S + s; loss [N * S] any float dtype.
    Class indices also store row_weight[r] = w_t (0 if ignored), the "mean" divisor's terms; soft targets or
    label smoothing also store mass[r] = sum_c w_c q_c for the backward.

    grid (N * S,): each program streams one row in BLOCK_C chunks.
    """
    row = tl.program_id(0).to(tl.int64)
    n = row // S
    s = row - n * S
    row_ptr = logits_ptr + n * logits_sn + s * logits_ss
    target_row_ptr = target_ptr + n * target_sn + s * target_ss
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
    if SOFT_TARGET:
        t = 0  # unused: the target row is loaded chunk by chunk
        kept = True
    else:
        t = tl.load(target_row_ptr).to(tl.int64)
        kept = t != ignore_index
        # the launcher rejects other targets outside [0, C) (or, without its host check, their loss is NaN below);
        # the mask keeps them from reading
        in_range = (t >= 0) & (t < C)
        if HAS_WEIGHT:
            w_t = tl.load(weight_ptr + t * weight_sc, mask=in_range, other=0.0).to(COMPUTE_DTYPE)
        else:
            w_t = tl.full([], 1.0, COMPUTE_DTYPE)
        tl.store(row_weight_ptr + row, tl.where(kept, w_t, 0.0))
    if SOFT_TARGET or SMOOTHING:
        loss = tl.zeros([], COMPUTE_DTYPE)
        mass = tl.zeros([], COMPUTE_DTYPE)
        for start in range(0, C, BLOCK_C):
            c = start + cols
            in_row = c < C
            x = tl.load(row_ptr + c * logits_sc, mask=in_row, other=0.0).to(COMPUTE_DTYPE)
            q, w = _target_and_weight(c, in_row, t, target_row_ptr, target_sc, weight_ptr, weight_sc, one_minus_eps,
                                      eps_over_c, SOFT_TARGET, HAS_WEIGHT, SMOOTHING, COMPUTE_DTYPE)
            loss += tl.sum(tl.where(in_row, q * w * (lse - x), 0.0), 0)
            mass += tl.sum(q * w, 0)
        tl.store(mass_ptr + row, tl.where(kept, mass, 0.0))
    else:
        x_t = tl.load(row_ptr + t * logits_sc, mask=in_range, other=0.0).to(COMPUTE_DTYPE)
        loss = w_t * (lse - x_t)
    if not SOFT_TARGET:
        loss = tl.where(in_range, loss, float("nan"))
    tl.store(loss_ptr + row, tl.where(kept, loss, 0.0).to(loss_ptr.dtype.element_ty))
    tl.store(lse_ptr + row, lse)


@triton.jit
def _sum_row_losses_kernel(
    # pointers
    losses_ptr, row_weights_ptr, out_ptr, divisor_ptr,
    # sizes
    N,
    # runtime scalars
    fixed_divisor,
    # meta
    BLOCK: tl.constexpr, WEIGHTED: tl.constexpr,
):
    """out[()] = sum(losses) / divisor, in a fixed order; divisor[()] = sum(row_weights) if WEIGHTED else
    fixed_divisor. losses, row_weights [N] fp32/fp64; out a 0-d float tensor, divisor 0-d like losses.

    grid (1,): one program adds BLOCK lanes at a time, then reduces the lanes.
    """
    offs = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], dtype=losses_ptr.dtype.element_ty)
    weight_acc = tl.zeros([BLOCK], dtype=losses_ptr.dtype.element_ty)
    for start in range(0, N, BLOCK):
        acc += tl.load(losses_ptr + start + offs, mask=start + offs < N, other=0.0)
        if WEIGHTED:
            weight_acc += tl.load(row_weights_ptr + start + offs, mask=start + offs < N, other=0.0)
    if WEIGHTED:
        divisor = tl.sum(weight_acc, 0)
    else:
        divisor = tl.zeros([], losses_ptr.dtype.element_ty) + fixed_divisor
    tl.store(out_ptr, (tl.sum(acc, 0) / divisor).to(out_ptr.dtype.element_ty))
    tl.store(divisor_ptr, divisor)


@triton.jit
def _cross_entropy_backward_kernel(
    # pointers
    logits_ptr, target_ptr, weight_ptr, lse_ptr, mass_ptr, divisor_ptr, dloss_ptr, dlogits_ptr, dtarget_ptr,
    # sizes
    C, S,
    # strides, in elements (dloss_s*: 0 for "mean"/"sum", one scalar for every row; out_s*: dlogits' and
    # dtarget's, both new contiguous [N, C, S] tensors)
    logits_sn, logits_sc, logits_ss, target_sn, target_sc, target_ss, weight_sc, dloss_sn, dloss_ss,
    out_sn, out_sc, out_ss,
    # runtime scalars (label smoothing eps: 1 - eps and eps / C, computed on the host in double precision)
    ignore_index, one_minus_eps, eps_over_c,
    # meta
    SOFT_TARGET: tl.constexpr, HAS_WEIGHT: tl.constexpr, SMOOTHING: tl.constexpr, MEAN: tl.constexpr,
    TARGET_GRAD: tl.constexpr, COMPUTE_DTYPE: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """dlogits[n, c, s] = (mass p_c - w_c q_c) * g (0 for ignored rows); with TARGET_GRAD also
    dtarget[n, c, s] = (1 - eps) w_c (lse - x_c) * g. g = dloss of the row (/ divisor[()] if MEAN).

    grid (N * S,): each program writes one row in BLOCK_C chunks.
    """
    row = tl.program_id(0).to(tl.int64)
    n = row // S
    s = row - n * S
    row_ptr = logits_ptr + n * logits_sn + s * logits_ss
    target_row_ptr = target_ptr + n * target_sn + s * target_ss
    out_offset = n * out_sn + s * out_ss
    lse = tl.load(lse_ptr + row)
    scale = tl.load(dloss_ptr + n * dloss_sn + s * dloss_ss).to(COMPUTE_DTYPE)
    if MEAN:
        scale = scale / tl.load(divisor_ptr)
    if SOFT_TARGET:
        t = 0  # unused: the target row is loaded chunk by chunk
    else:
        t = tl.load(target_row_ptr).to(tl.int64)
        # an ignored row's gradient is 0, also when "mean" divided by 0 (every row ignored)
        scale = tl.where(t != ignore_index, scale, 0.0)
    if SOFT_TARGET or SMOOTHING:
        mass = tl.load(mass_ptr + row)
    elif HAS_WEIGHT:
        mass = tl.load(weight_ptr + t * weight_sc, mask=(t >= 0) & (t < C), other=0.0).to(COMPUTE_DTYPE)
    cols = tl.arange(0, BLOCK_C)
    for start in range(0, C, BLOCK_C):
        c = start + cols
        in_row = c < C
        x = tl.load(row_ptr + c * logits_sc, mask=in_row, other=0.0).to(COMPUTE_DTYPE)
        p = tl.exp(x - lse)
        if SOFT_TARGET or SMOOTHING:
            q, w = _target_and_weight(c, in_row, t, target_row_ptr, target_sc, weight_ptr, weight_sc, one_minus_eps,
                                      eps_over_c, SOFT_TARGET, HAS_WEIGHT, SMOOTHING, COMPUTE_DTYPE)
            grad = mass * p - q * w
        elif HAS_WEIGHT:
            grad = (p - (c == t).to(COMPUTE_DTYPE)) * mass
        else:
            grad = p - (c == t).to(COMPUTE_DTYPE)
        tl.store(dlogits_ptr + out_offset + c * out_sc, (grad * scale).to(dlogits_ptr.dtype.element_ty), mask=in_row)
        if TARGET_GRAD:
            dq = (lse - x) * w * scale
            if SMOOTHING:
                dq = dq * one_minus_eps
            tl.store(dtarget_ptr + out_offset + c * out_sc, dq.to(dtarget_ptr.dtype.element_ty), mask=in_row)


class SavedForBackward(NamedTuple):
    """What the backward needs from the forward besides logits, target and weight (rows: N * S positions)."""

    lse: torch.Tensor  # [rows] log-sum-exp of each row, fp32 (fp64 for float64 logits)
    mass: torch.Tensor | None  # [rows] sum_c w_c q_c, with soft targets or label smoothing; else None
    divisor: torch.Tensor | None  # 0-d, what "mean" divided the summed losses by; None for "sum"/"none"


class _Rows(NamedTuple):
    """One call's operands as rows: logits [N, C, S]; target [N, S] (class indices) or [N, C, S] (soft)."""

    logits: torch.Tensor
    target: torch.Tensor
    soft: bool
    loss_shape: tuple[int, ...]  # the "none" loss: (N, d1, ..., dk), or () for unbatched logits (C,)

    @property
    def classes(self) -> int:
        return self.logits.shape[1]

    @property
    def count(self) -> int:
        return self.logits.shape[0] * self.logits.shape[2]


def check_options(op: str, ignore_index: int, reduction: str, label_smoothing: float) -> None:
    """TypeError / ValueError unless ignore_index is an int, reduction one of ``REDUCTIONS`` and label_smoothing a
    number at most 1."""
    if reduction not in REDUCTIONS:
        raise checks.ArgumentError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise checks.ArgumentTypeError(f"{op}: ignore_index must be an int, got {ignore_index!r}")
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, int | float):
        raise checks.ArgumentTypeError(f"{op}: label_smoothing must be a float, got {label_smoothing!r}")
    if label_smoothing > 1.0:
        raise checks.ArgumentError(f"{op}: label_smoothing must be at most 1.0, got {label_smoothing}")


def _as_rows(op: str, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, ignore_index: int,
             reduction: str, label_smoothing: float) -> _Rows:
    """Clear errors for everything the kernels cannot take, before any launch; the operands as rows (views
    where the extra dimensions merge into one, as they do for any dense layout; else copies)."""
    check_options(op, ignore_index, reduction, label_smoothing)
    checks.check_float_dtype(op, logits=logits)
    checks.check_device(op, logits=logits, target=target, weight=weight)
    batched = logits.dim() > 1
    N, C = logits.shape[:2] if batched else (1, logits.shape[0] if logits.dim() else 0)
    if C == 0:
        raise checks.ArgumentError(f"{op}: logits must be (C,), (N, C) or (N, C, d1, ..., dk) with C >= 1, "
                                   f"got shape {tuple(logits.shape)}")
    S = math.prod(logits.shape[2:])
    soft = target.is_floating_point()
    if soft:
        if target.dtype != logits.dtype:
            raise checks.ArgumentTypeError(f"{op}: class-probability target has dtype {target.dtype}, logits "
                                           f"{logits.dtype}: give both one dtype")
        if target.shape != logits.shape:
            raise checks.ArgumentError(f"{op}: class-probability target must have the logits' shape "
                                       f"{tuple(logits.shape)}, got {tuple(target.shape)}")
        if ignore_index != -100:
            raise checks.ArgumentError(f"{op}: ignore_index ({ignore_index}) is not supported with "
                                       "class-probability targets")
        target_rows = target.reshape(N, C, S)
    else:
        if target.dtype not in CLASS_INDEX_DTYPES:
            indices = ", ".join(map(str, CLASS_INDEX_DTYPES))
            raise checks.ArgumentTypeError(f"{op}: target must hold class indices ({indices}) or class "
                                           f"probabilities (the logits' dtype), got dtype {target.dtype}")
        wanted = (N, *logits.shape[2:]) if batched else ()
        if tuple(target.shape) != wanted:
            raise checks.ArgumentError(f"{op}: class-index target must have shape {wanted} to match logits "
                                       f"{tuple(logits.shape)}, got {tuple(target.shape)}")
        target_rows = target.reshape(N, S)
    if weight is not None and tuple(weight.shape) != (C,):
        raise checks.ArgumentError(f"{op}: weight must have shape ({C},), one weight per class, got "
                                   f"{tuple(weight.shape)}")
    if weight is not None and weight.dtype != logits.dtype:
        raise checks.ArgumentTypeError(f"{op}: weight has dtype {weight.dtype}; give it the logits' dtype "
                                       f"{logits.dtype}")
    loss_shape = (N, *logits.shape[2:]) if batched else ()
    return _Rows(logits.reshape(N, C, S), target_rows, soft, loss_shape)


def _check_target_range(op: str, target: torch.Tensor, C: int, ignore_index: int) -> None:
    """ValueError naming a class index outside [0, C) that is not ignore_index (costs one torch.aminmax and,
    on a GPU, a sync; a second look only when that finds one outside)."""
    if target.numel() == 0:
        return
    lowest, highest = (int(v) for v in torch.aminmax(target))
    if lowest >= 0 and highest < C:
        return
    bad = target[((target < 0) | (target >= C)) & (target != ignore_index)]
    if bad.numel():
        raise checks.ArgumentError(f"{op}: target holds class index {int(bad[0])}, outside [0, C) for C={C} classes "
                         f"and not ignore_index={ignore_index}")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of lse, mass and the "mean" divisor: fp32, or fp64 for float64 logits."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _kernel_args(rows: _Rows, weight: torch.Tensor | None, ignore_index: int, label_smoothing: float) -> dict:
    """The arguments the forward and backward kernels share."""
    logits, target = rows.logits, rows.target
    target_sn, target_sc, target_ss = target.stride() if rows.soft else (target.stride(0), 0, target.stride(1))
    eps = float(max(label_smoothing, 0.0))  # PyTorch smooths only for label_smoothing > 0
    return dict(logits_ptr=logits, target_ptr=target, weight_ptr=logits if weight is None else weight,
                C=rows.classes, S=logits.shape[2], **runtime.stride_args("logits", logits, "ncs"),
                target_sn=target_sn, target_sc=target_sc, target_ss=target_ss,
                weight_sc=0 if weight is None else weight.stride(0), ignore_index=ignore_index,
                one_minus_eps=1.0 - eps, eps_over_c=eps / rows.classes, SOFT_TARGET=rows.soft,
                HAS_WEIGHT=weight is not None, SMOOTHING=eps > 0, COMPUTE_DTYPE=runtime.accumulator_type(logits.dtype))


def cross_entropy_forward(logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean", *,
                          weight: torch.Tensor | None = None, ignore_index: int = -100,
                          label_smoothing: float = 0.0, loss_dtype: torch.dtype | None = None
                          ) -> tuple[torch.Tensor, SavedForBackward]:
    """(loss, saved) for logits (N, C, d1, ..., dk) or (C,) and target: class indices (N, d1, ..., dk) or ()
    (int64 or uint8, in [0, C) or ignore_index), or class probabilities shaped like the logits;
    weight: [C] class weights or None.

    loss: the per-position shape (N, d1, ..., dk) (or ()) for "none", else a 0-d tensor, in ``loss_dtype``
    (default the logits'; float32 for fp16/bf16 logits under autocast: the math is fp32 either way).
    """
    op = "cross_entropy"
    rows = _as_rows(op, logits, target, weight, ignore_index, reduction, label_smoothing)
    if not rows.soft and _HOST_TARGET_CHECK.get():
        _check_target_range(op, rows.target, rows.classes, ignore_index)
    compute_dtype, loss_dtype = _compute_dtype(logits.dtype), loss_dtype or logits.dtype
    if loss_dtype not in (logits.dtype, torch.float32):
        raise checks.ArgumentTypeError(f"{op}: loss_dtype must be the logits' ({logits.dtype}) or torch.float32, "
                                       f"got {loss_dtype}")

    def buffer(shape, dtype=compute_dtype):
        return runtime.new_output(shape, device=logits.device, dtype=dtype)

    lse = buffer((rows.count,))
    row_losses = buffer((rows.count,), loss_dtype if reduction == "none" else compute_dtype)
    mass = buffer((rows.count,)) if rows.soft or label_smoothing > 0 else None
    row_weights = None if rows.soft else buffer((rows.count,))
    runtime.launch(_cross_entropy_forward_kernel, lambda meta: (rows.count,), CONFIGS,
                   **_kernel_args(rows, weight, ignore_index, label_smoothing), loss_ptr=row_losses, lse_ptr=lse,
                   row_weight_ptr=lse if row_weights is None else row_weights, mass_ptr=lse if mass is None else mass)
    if reduction == "none":
        return row_losses.view(rows.loss_shape), SavedForBackward(lse, mass, None)
    loss, divisor = buffer((), loss_dtype), buffer(())
    weighted = reduction == "mean" and not rows.soft
    runtime.launch(_sum_row_losses_kernel, lambda meta: (1,), partial_sums.WIDE_CONFIGS, losses_ptr=row_losses,
                   row_weights_ptr=row_weights if weighted else row_losses, out_ptr=loss, divisor_ptr=divisor,
                   N=rows.count, fixed_divisor=rows.count if reduction == "mean" else 1, WEIGHTED=weighted)
    return loss, SavedForBackward(lse, mass, divisor if reduction == "mean" else None)


def cross_entropy_backward(dloss: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, saved: SavedForBackward,
                           reduction: str = "mean", *, weight: torch.Tensor | None = None, ignore_index: int = -100,
                           label_smoothing: float = 0.0,
                           target_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dlogits, dtarget): new contiguous tensors shaped like logits and target (dtarget only with
    ``target_grad``, for class-probability targets; else None) from the incoming gradient dloss (the loss's
    shape) and the forward's operands, arguments and ``saved``."""
    op = "cross_entropy_backward"
    rows = _as_rows(op, logits, target, weight, ignore_index, reduction, label_smoothing)
    dloss_shape = rows.loss_shape if reduction == "none" else ()
    if tuple(dloss.shape) != dloss_shape:
        raise checks.ArgumentError(f"{op}: dloss must have the loss's shape {dloss_shape} for logits "
                                   f"{tuple(logits.shape)}, "
                                   f"reduction {reduction!r}, got {tuple(dloss.shape)}")
    if target_grad and not rows.soft:
        raise checks.ArgumentError(f"{op}: target_grad needs class-probability targets (class indices have "
                                   "no gradient)")
    if (saved.mass is not None) != (rows.soft or label_smoothing > 0) or (saved.divisor is not None) != (
            reduction == "mean"):
        raise checks.ArgumentError(f"{op}: saved does not come from a forward with these arguments")
    for name, buffer, shape in zip(saved._fields, saved, ((rows.count,), (rows.count,), ()), strict=True):
        checks.check_shape_and_dtype(op, f"saved.{name}", buffer, shape, _compute_dtype(logits.dtype))
    checks.check_device(op, dloss=dloss, **saved._asdict())
    lse, mass, divisor = (None if t is None else t.contiguous() for t in saved)  # the kernel indexes them by row
    N, C, S = rows.logits.shape
    dloss = dloss.reshape(N, S) if reduction == "none" else dloss.expand(N, S)  # "mean"/"sum": stride 0
    dlogits = runtime.new_output((N, C, S), device=logits.device, dtype=logits.dtype)
    dtarget = runtime.new_output((N, C, S), device=logits.device, dtype=target.dtype) if target_grad else None
    runtime.launch(_cross_entropy_backward_kernel, lambda meta: (rows.count,), CONFIGS,
                   **_kernel_args(rows, weight, ignore_index, label_smoothing), lse_ptr=lse,
                   mass_ptr=lse if mass is None else mass, divisor_ptr=lse if divisor is None else divisor,
                   dloss_ptr=dloss, dlogits_ptr=dlogits, dtarget_ptr=dlogits if dtarget is None else dtarget,
                   **runtime.stride_args("dloss", dloss, "ns"),
                   **runtime.stride_args("out", dlogits, "ncs"), MEAN=reduction == "mean", TARGET_GRAD=target_grad)
    return dlogits.view(logits.shape), None if dtarget is None else dtarget.view(target.shape)
