"""ReLU and its gradient as element-wise kernels, for models whose ReLU is a module of its own (the fused ones
live in the conv and linear epilogues).

Both kernels run over a dense tensor's storage in memory order (contiguous or channels_last: the element-wise
result does not depend on the order), so any dense layout is one flat launch. PyTorch's rules: relu keeps NaN;
threshold_backward(dy, y, threshold) is 0 where y <= threshold, else dy (so a NaN y passes dy through).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import checks, runtime

# Not autotuned: one config; the interpreter runs fewer, larger programs.
CONFIGS = runtime.fixed_config(BLOCK=1024, num_warps=4, interpreter_block=16384)


@triton.jit
def _relu_kernel(
    # pointers
    x_ptr, y_ptr,
    # sizes
    numel,
    # meta
    BLOCK: tl.constexpr,
):
    """y = max(x, 0), NaN kept. x, y: [numel] (storage order). grid (cdiv(numel, BLOCK),)."""
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < numel
    x = tl.load(x_ptr + offsets, mask=mask)
    tl.store(y_ptr + offsets, tl.where(x < 0, 0.0, x).to(x.dtype), mask=mask)


@triton.jit
def _threshold_backward_kernel(
    # pointers
    dy_ptr, y_ptr, dx_ptr,
    # sizes
    numel,
    # runtime scalars
    threshold,
    # meta
    BLOCK: tl.constexpr,
):
    """dx = 0 where y <= threshold, else dy. dy, y, dx: [numel] (storage order). grid (cdiv(numel, BLOCK),)."""
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < numel
    dy = tl.load(dy_ptr + offsets, mask=mask)
    y = tl.load(y_ptr + offsets, mask=mask)
    tl.store(dx_ptr + offsets, tl.where(y <= threshold, 0.0, dy).to(dy.dtype), mask=mask)


def dense(t: torch.Tensor) -> bool:
    """Whether ``t``'s elements fill its storage span without gaps or overlap in a memory format the flat kernels
    take (contiguous, or channels_last for 4-D)."""
    return t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))


def _check(op: str, **tensors: torch.Tensor) -> None:
    checks.check_float_dtype(op, **tensors)
    checks.check_device(op, **tensors)
    for name, t in tensors.items():
        if not dense(t):
            raise checks.ArgumentError(f"{op}: {name} (shape {tuple(t.shape)}, strides {t.stride()}) must be "
                                       "contiguous or channels_last")


def relu_forward(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """relu(x) for a dense x of any shape: a new tensor in x's layout, or x itself overwritten (``inplace``)."""
    _check("relu", x=x)
    y = x if inplace else runtime.new_output(x.shape, device=x.device, dtype=x.dtype,
                                             memory_format=runtime.memory_format_of(x))
    if x.numel():
        runtime.launch(_relu_kernel, lambda meta: (triton.cdiv(x.numel(), meta["BLOCK"]),), CONFIGS, x_ptr=x,
                       y_ptr=y, numel=x.numel())
    return y


def threshold_backward(dy: torch.Tensor, y: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """dx [shape of y] = dy where y > threshold, else 0; dy and y dense, of one shape, dtype and layout."""
    _check("threshold_backward", dy=dy, y=y)
    if dy.shape != y.shape or dy.dtype != y.dtype or dy.stride() != y.stride():
        raise checks.ArgumentError(f"threshold_backward: dy {tuple(dy.shape)} {dy.dtype} strides {dy.stride()} "
                                   f"must match y {tuple(y.shape)} {y.dtype} strides {y.stride()}")
    dx = runtime.new_output(y.shape, device=y.device, dtype=y.dtype, memory_format=runtime.memory_format_of(y))
    if y.numel():
        runtime.launch(_threshold_backward_kernel, lambda meta: (triton.cdiv(y.numel(), meta["BLOCK"]),), CONFIGS,
                       dy_ptr=dy, y_ptr=y, dx_ptr=dx, numel=y.numel(), threshold=float(threshold))
    return dx
