"""One SGD step for one parameter, in place: weight decay, momentum and the update in a single pass.

Two update forms (dampening 0; g is the gradient, negated when maximising):
  "pytorch" (torch.optim.SGD):  g' = g + weight_decay * w
                                b <- g' on the first step, else b <- momentum * b + g'
                                w <- w - lr * (g' + momentum * b if nesterov else b)
                                (without momentum: w <- w - lr * g')
  "paper" (Krizhevsky et al. 2012, section 5, v starting at 0):
                                v <- momentum * v - weight_decay * lr * w - lr * g
                                w <- w + v
For a constant lr both forms give the same weights (v = -lr * b); they differ once lr changes,
since the paper's v carries the old lr. Math in fp32 (fp64 for float64 parameters; lr, momentum and
weight_decay are fp32 kernel scalars); the momentum buffer has the parameter's dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import checks, runtime

UPDATES = ("pytorch", "paper")
# Not autotuned: one config; 4096-wide GPU blocks took up to 146 registers (numel % 16 != 0).
CONFIGS = runtime.fixed_config(BLOCK=1024, num_warps=4, interpreter_block=16384)


@triton.jit
def _sgd_step_kernel(
    # pointers
    param_ptr, grad_ptr, buf_ptr,
    # sizes
    numel,
    # runtime scalars
    lr, momentum, weight_decay,
    # meta
    PAPER: tl.constexpr, HAS_MOMENTUM: tl.constexpr, FIRST_STEP: tl.constexpr, NESTEROV: tl.constexpr,
    HAS_WEIGHT_DECAY: tl.constexpr, MAXIMIZE: tl.constexpr, COMPUTE_DTYPE: tl.constexpr, BLOCK: tl.constexpr,
):
    """Update param (and the momentum buffer buf) in place; param, grad, buf share shape and strides.

    FIRST_STEP: buf holds no value yet (it is only written). grid (cdiv(numel, BLOCK),): each program
    updates BLOCK elements in memory order.
    """
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    in_range = offs < numel
    w = tl.load(param_ptr + offs, mask=in_range, other=0.0).to(COMPUTE_DTYPE)
    g = tl.load(grad_ptr + offs, mask=in_range, other=0.0).to(COMPUTE_DTYPE)
    if MAXIMIZE:
        g = -g
    if PAPER:
        step = -lr * g
        if HAS_WEIGHT_DECAY:
            step -= weight_decay * lr * w
        if HAS_MOMENTUM:
            if not FIRST_STEP:
                step += momentum * tl.load(buf_ptr + offs, mask=in_range, other=0.0).to(COMPUTE_DTYPE)
            tl.store(buf_ptr + offs, step.to(buf_ptr.dtype.element_ty), mask=in_range)
        w += step
    else:
        if HAS_WEIGHT_DECAY:
            g += weight_decay * w
        if HAS_MOMENTUM:
            buf = g
            if not FIRST_STEP:
                buf = momentum * tl.load(buf_ptr + offs, mask=in_range, other=0.0).to(COMPUTE_DTYPE) + g
            tl.store(buf_ptr + offs, buf.to(buf_ptr.dtype.element_ty), mask=in_range)
            if NESTEROV:
                g += momentum * buf
            else:
                g = buf
        w -= lr * g
    tl.store(param_ptr + offs, w.to(param_ptr.dtype.element_ty), mask=in_range)


def _dense(t: torch.Tensor) -> bool:
    """Whether t's elements fill one block of memory (contiguous or channels_last), so one flat index walks it."""
    return t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))


def sgd_step(param: torch.Tensor, grad: torch.Tensor, momentum_buffer: torch.Tensor | None, *, lr: float,
             momentum: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False,
             update: str = "pytorch") -> torch.Tensor | None:
    """Update ``param`` in place from ``grad``; return the momentum buffer (None without momentum).

    momentum_buffer: the previous step's buffer, or None on the first step (a new one is allocated
    with param's shape, dtype and memory format). param, grad and the buffer must share shape,
    dtype and strides, contiguous or channels_last.
    """
    op = "sgd"
    if update not in UPDATES:
        raise ValueError(f"{op}: update must be one of {UPDATES}, got {update!r}")
    if grad.is_sparse or param.is_sparse:
        raise TypeError(f"{op}: sparse tensors are not supported (param layout {param.layout}, "
                        f"grad layout {grad.layout})")
    checks.check_float_dtype(op, param=param, grad=grad, momentum_buffer=momentum_buffer)
    checks.check_device(op, param=param, grad=grad, momentum_buffer=momentum_buffer)
    for name, t in (("grad", grad), ("momentum_buffer", momentum_buffer)):
        if t is not None and (t.shape != param.shape or t.dtype != param.dtype or t.stride() != param.stride()):
            raise ValueError(f"{op}: {name} {tuple(t.shape)} {t.dtype} strides {t.stride()} must match param "
                             f"{tuple(param.shape)} {param.dtype} strides {param.stride()}")
    if not _dense(param):
        raise ValueError(f"{op}: param {tuple(param.shape)} with strides {param.stride()} must be contiguous "
                         "or channels_last")
    first_step = momentum != 0 and momentum_buffer is None
    if first_step:
        momentum_buffer = runtime.new_output(param.shape, device=param.device, dtype=param.dtype,
                                             memory_format=runtime.memory_format_of(param))
    runtime.launch(_sgd_step_kernel, lambda meta: (triton.cdiv(param.numel(), meta["BLOCK"]),), CONFIGS,
                   param_ptr=param, grad_ptr=grad, buf_ptr=param if momentum_buffer is None else momentum_buffer,
                   numel=param.numel(), lr=float(lr), momentum=float(momentum), weight_decay=float(weight_decay),
                   PAPER=update == "paper", HAS_MOMENTUM=momentum != 0, FIRST_STEP=first_step, NESTEROV=nesterov,
                   HAS_WEIGHT_DECAY=weight_decay != 0, MAXIMIZE=maximize,
                   COMPUTE_DTYPE=runtime.accumulator_type(param.dtype))
    return momentum_buffer if momentum != 0 else None
