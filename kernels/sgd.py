"""One SGD step for many parameters in one launch, in place: weight decay, momentum and the update in a single
pass (the parameters' blocks one after another in one grid).

Two update forms (dampening 0; g is the gradient, negated when maximising):
  "pytorch" (torch.optim.SGD):  g' = g + weight_decay * w
                                b <- g' on the first step, else b <- momentum * b + g'
                                w <- w - lr * (g' + momentum * b if nesterov else b)
                                (without momentum: w <- w - lr * g')
  "paper" (Krizhevsky et al. 2012, section 5, v starting at 0):
                                v <- momentum * v - weight_decay * lr * w - lr * g
                                w <- w + v
For a constant lr both forms give the same weights (v = -lr * b); they differ once lr changes,
since the paper's v carries the old lr. Math in fp32 (fp64 for float64 parameters; lr (read from a device tensor,
so a captured CUDA graph follows a schedule), momentum and weight_decay are fp32); the momentum buffer has the
parameter's dtype.
A parameter may also have a compute copy (``precision.compute_copy``: an fp32 master weight in fp16/bf16 for the
layers that read it), written in the same pass from the new weight, rounded to nearest even.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import checks, runtime

UPDATES = ("pytorch", "paper")
# Not autotuned: one config; 4096-wide GPU blocks took up to 146 registers (numel % 16 != 0).
CONFIGS = runtime.fixed_config(BLOCK=1024, num_warps=4, interpreter_block=16384)
# Tensors per launch at most: the kernel selects its tensor's pointers in a loop unrolled over them.
MAX_TENSORS = 32


@triton.jit
def apply_update(param_ptrs, buf_ptrs, copy_ptrs, g, mask, copy_mask, lr, momentum, weight_decay,
                 PAPER: tl.constexpr, HAS_MOMENTUM: tl.constexpr, FIRST_STEP: tl.constexpr, NESTEROV: tl.constexpr,
                 HAS_WEIGHT_DECAY: tl.constexpr, MAXIMIZE: tl.constexpr, HAS_COPY: tl.constexpr,
                 COMPUTE_DTYPE: tl.constexpr):
    """One SGD step (module docstring) of the parameter elements at ``param_ptrs`` where ``mask`` holds, from their
    gradient ``g`` (a tile of any shape, COMPUTE_DTYPE), in place: loads w (and the momentum buffer at ``buf_ptrs``,
    same offsets, unless FIRST_STEP), stores w and, with momentum, the buffer; HAS_COPY: also the new w in the
    compute copy's dtype at ``copy_ptrs`` where ``copy_mask`` holds. lr: fp32. The one copy of the update math: the
    multi-tensor step and the linear weight-gradient epilogue (kernels/linear.py) both call it."""
    w = tl.load(param_ptrs, mask=mask, other=0.0).to(COMPUTE_DTYPE)
    if MAXIMIZE:
        g = -g
    if PAPER:
        step = -lr * g
        if HAS_WEIGHT_DECAY:
            step -= weight_decay * lr * w
        if HAS_MOMENTUM:
            if not FIRST_STEP:
                step += momentum * tl.load(buf_ptrs, mask=mask, other=0.0).to(COMPUTE_DTYPE)
            tl.store(buf_ptrs, step.to(buf_ptrs.dtype.element_ty), mask=mask)
        w += step
    else:
        if HAS_WEIGHT_DECAY:
            g += weight_decay * w
        if HAS_MOMENTUM:
            buf = g
            if not FIRST_STEP:
                buf = momentum * tl.load(buf_ptrs, mask=mask, other=0.0).to(COMPUTE_DTYPE) + g
            tl.store(buf_ptrs, buf.to(buf_ptrs.dtype.element_ty), mask=mask)
            if NESTEROV:
                g += momentum * buf
            else:
                g = buf
        w -= lr * g
    tl.store(param_ptrs, w.to(param_ptrs.dtype.element_ty), mask=mask)
    if HAS_COPY:
        tl.store(copy_ptrs, w.to(copy_ptrs.dtype.element_ty), mask=copy_mask)


@triton.jit
def _sgd_step_kernel(
    # pointers: tuples of T tensors (one dtype), the compute copies of the first COPIES of them (one low dtype; a
    # placeholder when COPIES is 0), and the learning rate (a 1-element device tensor); not named "params":
    # Triton's argument binder (3.7) has a local of that name
    param_ptrs, grad_ptrs, buf_ptrs, copy_ptrs, lr_ptr,
    # sizes: a tuple of T element counts
    numels,
    # runtime scalars
    momentum, weight_decay,
    # meta
    PAPER: tl.constexpr, HAS_MOMENTUM: tl.constexpr, FIRST_STEP: tl.constexpr, NESTEROV: tl.constexpr,
    HAS_WEIGHT_DECAY: tl.constexpr, MAXIMIZE: tl.constexpr, COPIES: tl.constexpr, COMPUTE_DTYPE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Update param_ptrs[i] (and the momentum buffers buf_ptrs[i]) in place, and write copy_ptrs[i] (i < COPIES)
    from the new param_ptrs[i]; param_ptrs[i], grad_ptrs[i], buf_ptrs[i] (and copy_ptrs[i]) share shape and
    strides. lr is read from ``lr_ptr`` as fp32, so a schedule updates it in place (a replayed CUDA graph sees it).

    FIRST_STEP: the buffers hold no value yet (they are only written). grid (sum_i cdiv(numels[i], BLOCK),): the
    tensors' blocks one after another; each program updates BLOCK elements of one tensor in memory order.
    """
    pid = tl.program_id(0)
    param_ptr, grad_ptr, buf_ptr, copy_ptr, numel = param_ptrs[0], grad_ptrs[0], buf_ptrs[0], copy_ptrs[0], numels[0]
    block = pid  # the program's block within its tensor
    end = tl.cdiv(numels[0], BLOCK)  # the first block after the tensors seen so far
    copied_end = end  # the first block after the tensors with a copy
    for i in tl.static_range(1, len(param_ptrs)):
        here = pid >= end
        param_ptr = tl.where(here, param_ptrs[i], param_ptr)
        grad_ptr = tl.where(here, grad_ptrs[i], grad_ptr)
        buf_ptr = tl.where(here, buf_ptrs[i], buf_ptr)
        if i < COPIES:
            copy_ptr = tl.where(here, copy_ptrs[i], copy_ptr)
        numel = tl.where(here, numels[i], numel)
        block = tl.where(here, pid - end, block)
        end += tl.cdiv(numels[i], BLOCK)
        if i < COPIES:
            copied_end = end
    lr = tl.load(lr_ptr).to(tl.float32)
    offs = block.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    in_range = offs < numel
    g = tl.load(grad_ptr + offs, mask=in_range, other=0.0).to(COMPUTE_DTYPE)
    apply_update(param_ptr + offs, buf_ptr + offs, copy_ptr + offs, g, in_range, in_range & (pid < copied_end), lr,
                 momentum, weight_decay, PAPER, HAS_MOMENTUM, FIRST_STEP, NESTEROV, HAS_WEIGHT_DECAY, MAXIMIZE,
                 COPIES > 0, COMPUTE_DTYPE)


def _dense(t: torch.Tensor) -> bool:
    """Whether t's elements fill one block of memory (contiguous or channels_last), so one flat index walks it."""
    return t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))


def check_update_operands(op: str, param: torch.Tensor, grad: torch.Tensor, momentum_buffer: torch.Tensor | None,
                          copy: torch.Tensor | None = None) -> None:
    """Clear errors for a (param, grad, buffer, compute copy) the kernel cannot take."""
    if grad.is_sparse or param.is_sparse:
        raise checks.ArgumentTypeError(f"{op}: sparse tensors are not supported (param layout {param.layout}, "
                                       f"grad layout {grad.layout})")
    checks.check_float_dtype(op, param=param, grad=grad, momentum_buffer=momentum_buffer)
    checks.check_device(op, param=param, grad=grad, momentum_buffer=momentum_buffer)
    for name, t in (("grad", grad), ("momentum_buffer", momentum_buffer)):
        if t is not None and (t.shape != param.shape or t.dtype != param.dtype or t.stride() != param.stride()):
            raise checks.ArgumentError(f"{op}: {name} {tuple(t.shape)} {t.dtype} strides {t.stride()} must match param "
                                       f"{tuple(param.shape)} {param.dtype} strides {param.stride()}")
    if copy is not None and (not checks.is_master(param.dtype, copy.dtype)
                             or copy.shape != param.shape or copy.stride() != param.stride()
                             or copy.device != param.device):
        raise checks.ArgumentError(f"{op}: compute copy {tuple(copy.shape)} {copy.dtype} strides {copy.stride()} on "
                                   f"{copy.device} must be fp16/bf16 of a float32 param's shape, strides and device "
                                   f"(param {tuple(param.shape)} {param.dtype} strides {param.stride()} on "
                                   f"{param.device})")
    if not _dense(param):
        raise checks.ArgumentError(f"{op}: param {tuple(param.shape)} with strides {param.stride()} must be contiguous "
                                   "or channels_last")


def learning_rate_tensor(op: str, lr: float | torch.Tensor, device: torch.device) -> torch.Tensor:
    """lr as the kernel reads it: a 1-element float tensor on ``device`` (a tensor lr is used as it is)."""
    if not isinstance(lr, torch.Tensor):
        return torch.full((1,), float(lr), dtype=torch.float32, device=device)
    if lr.numel() != 1 or not lr.is_floating_point() or lr.device != device:
        raise checks.ArgumentError(f"{op}: a tensor lr must be one floating-point element on the parameters' device "
                                   f"{device}, got shape {tuple(lr.shape)} {lr.dtype} on {lr.device}")
    return lr


def sgd_steps(params: list[torch.Tensor], grads: list[torch.Tensor], momentum_buffers: list[torch.Tensor | None],
              *, lr: float | torch.Tensor, momentum: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
              maximize: bool = False, update: str = "pytorch", first_step: bool = False,
              copies: list[torch.Tensor | None] | None = None) -> list[torch.Tensor | None]:
    """Update every ``params[i]`` in place from ``grads[i]``; return the momentum buffers (None without momentum).

    One launch per (device, dtype, first step or not) and per ``MAX_TENSORS`` tensors: a parameter group of one
    dtype is one launch. momentum_buffers[i]: the previous step's buffer, or None on the first step (a new one is
    allocated with the parameter's shape, dtype and memory format). params[i], grads[i] and the buffer must share
    shape, dtype and strides, contiguous or channels_last. lr: a float, or a 1-element float tensor on the
    parameters' device read by the kernel (fp32) at each step: updated in place, it changes the lr of a captured
    CUDA graph. first_step: the given buffers hold nothing yet (allocated by the caller): written, not read.
    copies[i] (None: none): the compute copy of an fp32 ``params[i]`` (``precision.compute_copy``; fp16/bf16, its
    shape and strides), written from the new weight; a launch writes copies of one dtype (its first one's): a
    parameter whose copy has another is stepped in a launch of its own.
    """
    op = "sgd"
    if update not in UPDATES:
        raise checks.ArgumentError(f"{op}: update must be one of {UPDATES}, got {update!r}")
    copies = copies if copies is not None else [None] * len(params)
    if not len(params) == len(grads) == len(momentum_buffers) == len(copies):
        raise checks.ArgumentError(f"{op}: {len(params)} params, {len(grads)} grads, {len(momentum_buffers)} "
                                   f"momentum buffers and {len(copies)} copies: give one of each per parameter")
    launches: dict[tuple, list[int]] = {}
    buffers = list(momentum_buffers)
    for i, (param, grad, buffer, copy) in enumerate(zip(params, grads, buffers, copies, strict=True)):
        check_update_operands(op, param, grad, buffer, copy)
        first = momentum != 0 and (buffer is None or first_step)
        if first and buffer is None:
            buffers[i] = runtime.new_output(param.shape, device=param.device, dtype=param.dtype,
                                            memory_format=runtime.memory_format_of(param))
        launches.setdefault((param.device, param.dtype, first), []).append(i)
    lr_tensors = {device: learning_rate_tensor(op, lr, device) for device, _, _ in launches}
    for (device, dtype, first), indices in launches.items():
        for group in _copies_first(indices, copies):
            numels = tuple(params[i].numel() for i in group)
            copied = [copies[i] for i in group if copies[i] is not None]
            runtime.launch(
                # (plain integer ceil division: triton.cdiv costs microseconds per host call)
                _sgd_step_kernel, lambda meta, numels=numels: (sum(-(-n // meta["BLOCK"]) for n in numels),),
                CONFIGS, param_ptrs=tuple(params[i] for i in group), grad_ptrs=tuple(grads[i] for i in group),
                buf_ptrs=tuple(params[i] if momentum == 0 else buffers[i] for i in group),
                copy_ptrs=tuple(copied) or (params[group[0]],), lr_ptr=lr_tensors[device], numels=numels,
                momentum=float(momentum), weight_decay=float(weight_decay), PAPER=update == "paper",
                HAS_MOMENTUM=momentum != 0, FIRST_STEP=first, NESTEROV=nesterov, HAS_WEIGHT_DECAY=weight_decay != 0,
                MAXIMIZE=maximize, COPIES=len(copied), COMPUTE_DTYPE=runtime.accumulator_type(dtype))
    return buffers if momentum != 0 else [None] * len(params)


def _copies_first(indices: list[int], copies: list[torch.Tensor | None]) -> list[list[int]]:
    """``indices`` in launches of at most MAX_TENSORS parameters, each with its parameters that have a compute copy
    first, all of one copy dtype (those of another dtype in launches of their own)."""
    by_dtype: dict[torch.dtype | None, list[int]] = {}
    for i in indices:
        by_dtype.setdefault(copies[i].dtype if copies[i] is not None else None, []).append(i)
    plain = by_dtype.pop(None, [])
    ordered = list(by_dtype.values()) or [[]]
    ordered[0] += plain
    return [part[start:start + MAX_TENSORS] for part in ordered for start in range(0, len(part), MAX_TENSORS)]


def sgd_step(param: torch.Tensor, grad: torch.Tensor, momentum_buffer: torch.Tensor | None, *,
             lr: float | torch.Tensor, **hyper) -> torch.Tensor | None:
    """``sgd_steps`` of one parameter: update ``param`` in place; return its momentum buffer (None without
    momentum)."""
    return sgd_steps([param], [grad], [momentum_buffer], lr=lr, **hyper)[0]
