"""Dropout that stores a seed, not a mask (F.dropout semantics in training mode).

Element i (its flat row-major index) is kept when ``tl.rand(seed, i) >= p``:
Philox 4x32-10 keyed on the seed, counter = the element index. The mask thus
depends only on (seed, index), not on block sizes, grids or which kernel asks,
so the backward regenerates it instead of saving it, and the linear kernels'
fused dropout epilogue (kernels/linear.py, through ``dropped_out``) draws
exactly the mask this op draws. Kept values are scaled by 1/(1-p) computed as
PyTorch does (in the tensor's dtype), and 0 when p = 1.

The kernel reads and writes contiguous memory: the launcher passes a
non-contiguous tensor as a contiguous copy (the mask is defined on the
row-major index whatever the layout). In place, a contiguous tensor is
overwritten by the kernel itself, a non-contiguous one by copying the result back.
"""

from __future__ import annotations

import numbers

import torch
import triton
import triton.language as tl

from . import checks, runtime

# Seeds are non-negative 64-bit ints; drawn ones stay below 2**31 (one kernel signature, i32).
SEED_LIMIT = 2**63
DRAWN_SEED_LIMIT = 2**31
# Not autotuned: one config; the interpreter runs fewer, larger programs.
CONFIGS = runtime.fixed_config(BLOCK=1024, num_warps=4, interpreter_block=16384)


@triton.jit
def dropout_keep(seed, offsets, p):
    """True where the element with flat index ``offsets`` (int32 or int64) is kept: Philox uniform >= p."""
    return tl.rand(seed, offsets) >= p


@triton.jit
def dropped_out(v, seed, offsets, p, scale):
    """``v * scale`` where element ``offsets`` is kept, else 0 (v in the compute dtype)."""
    return tl.where(dropout_keep(seed, offsets, p), v * scale, 0.0)


@triton.jit(do_not_specialize=["seed"])
def _dropout_kernel(
    # pointers
    x_ptr, y_ptr,
    # sizes
    numel,
    # runtime scalars
    seed, p, scale,
    # meta
    COMPUTE_DTYPE: tl.constexpr, BLOCK: tl.constexpr,
):
    """y = x * scale where kept, else 0; x, y: contiguous [numel].

    The forward (x) and the backward (dy -> dx) are the same map.
    grid (cdiv(numel, BLOCK),): each program handles BLOCK consecutive elements.
    """
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    in_range = offs < numel
    x = tl.load(x_ptr + offs, mask=in_range, other=0.0).to(COMPUTE_DTYPE)
    y = dropped_out(x, seed, offs, p, scale)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=in_range)


# ----------------------------------------------------------------------------- launchers


def check_probability(op: str, p) -> float:
    """p as a float; TypeError unless a real number (not a tensor), ValueError outside [0, 1]."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"{op}: dropout probability must be a float, got {p!r} (for a 0-d tensor pass p.item())")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{op}: dropout probability has to be between 0 and 1, but got {p}")
    return float(p)


def check_seed(op: str, seed) -> int:
    """seed as given; TypeError unless an int, ValueError outside [0, 2**63)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"{op}: seed must be an int, got {seed!r}")
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"{op}: seed must be in [0, 2**63), got {seed}")
    return seed


def draw_seed() -> int:
    """A fresh seed from torch's default CPU generator, so torch.manual_seed makes runs repeat."""
    return int(torch.randint(0, DRAWN_SEED_LIMIT, ()).item())


def dropout_scale(p: float, dtype: torch.dtype) -> float:
    """Factor of the kept values: 1/(1-p) rounded to ``dtype`` as F.dropout computes it; 0 for p = 1."""
    return (torch.ones((), dtype=dtype) / (1.0 - p)).item() if p < 1.0 else 0.0


def _dropout_launch(op: str, t: torch.Tensor, p: float, seed: int, config: triton.Config | None,
                    inplace: bool = False) -> torch.Tensor:
    p = check_probability(op, p)
    seed = check_seed(op, seed)
    checks.check_float_dtype(op, x=t)
    checks.check_device(op, x=t)
    source = t.contiguous()  # the mask is defined on the row-major index, whatever the layout
    out = source if inplace and source is t else runtime.new_output(t.shape, device=t.device, dtype=t.dtype)
    if out.numel():
        runtime.launch(_dropout_kernel, lambda meta: (triton.cdiv(out.numel(), meta["BLOCK"]),), CONFIGS, config,
                       x_ptr=source, y_ptr=out, numel=out.numel(), seed=seed, p=p, scale=dropout_scale(p, t.dtype),
                       COMPUTE_DTYPE=runtime.accumulator_type(t.dtype))
    return t.copy_(out) if inplace and out is not t else out


def dropout_forward(x: torch.Tensor, p: float, seed: int, config: triton.Config | None = None,
                    inplace: bool = False) -> torch.Tensor:
    """y (x's shape): x * 1/(1-p) where kept, else 0; the mask comes from (seed, row-major index).

    y is a new contiguous tensor, or x itself (overwritten) when ``inplace``.
    """
    return _dropout_launch("dropout", x, p, seed, config, inplace)


def dropout_backward(dy: torch.Tensor, p: float, seed: int, config: triton.Config | None = None) -> torch.Tensor:
    """dx = dy * 1/(1-p) where the forward with this seed kept the element, else 0 (the mask is regenerated)."""
    return _dropout_launch("dropout_backward", dy, p, seed, config)
