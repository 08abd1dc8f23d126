"""Dropout that stores a seed, not a mask (F.dropout semantics in training mode).

Element i (its flat row-major index) is kept when ``tl.rand(seed, i) >= p``:
Philox 4x32-10 keyed on the seed, counter = the element index. The mask thus
depends only on (seed, index), not on block sizes, grids or which kernel asks,
so the backward regenerates it instead of saving it, and the linear kernels'
fused dropout epilogue (kernels/linear.py, through ``dropped_out``) draws
exactly the mask this op draws. Kept values are scaled by 1/(1-p) computed as
PyTorch does (in the tensor's dtype), and 0 when p = 1.

The kernels read the seed from a 1-element int64 device tensor, not a launch
argument: a drawn seed is ``torch.randint`` on the tensor's device (torch's
generator for that device, so ``torch.manual_seed`` makes runs repeat, and a
captured CUDA graph draws a fresh one at each replay), and nothing is read back
to the host. A given seed value gives the mask it gave as an int argument.

The kernel reads and writes contiguous memory: the launcher passes a
non-contiguous tensor as a contiguous copy (the mask is defined on the
row-major index whatever the layout); in-place dropout (ops.dropout) copies
the result into its input.
"""

from __future__ import annotations

import functools
import numbers

import torch
import triton
import triton.language as tl

from . import checks, runtime

# Seeds are non-negative 64-bit ints; drawn ones stay below 2**31.
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


@triton.jit
def _dropout_kernel(
    # pointers (seed_ptr: the mask's seed, int64 [1])
    x_ptr, y_ptr, seed_ptr,
    # sizes
    numel,
    # runtime scalars
    p, scale,
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
    y = dropped_out(x, tl.load(seed_ptr), offs, p, scale)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=in_range)


# ----------------------------------------------------------------------------- launchers


def check_probability(op: str, p) -> float:
    """p as a float; TypeError unless a real number (not a tensor), ValueError outside [0, 1]."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise checks.ArgumentTypeError(f"{op}: dropout probability must be a float, got {p!r} (for a 0-d tensor "
                                       "pass p.item())")
    if not 0.0 <= p <= 1.0:
        raise checks.ArgumentError(f"{op}: dropout probability has to be between 0 and 1, but got {p}")
    return float(p)


def check_seed(op: str, seed, device: torch.device | None = None) -> int | torch.Tensor:
    """seed as given: an int in [0, 2**63), or an int64 tensor of one element (on ``device`` when given: the
    seed the kernels read); TypeError or ValueError naming what is wrong otherwise."""
    if isinstance(seed, torch.Tensor):
        if seed.dtype != torch.int64 or seed.numel() != 1:
            raise checks.ArgumentTypeError(f"{op}: a seed tensor must hold one int64, got shape {tuple(seed.shape)} "
                                           f"{seed.dtype}")
        if device is not None and seed.device != device:
            raise checks.ArgumentError(f"{op}: seed tensor on {seed.device}, the input on {device}")
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise checks.ArgumentTypeError(f"{op}: seed must be an int or an int64 tensor of one element, got {seed!r}")
    if not 0 <= seed < SEED_LIMIT:
        raise checks.ArgumentError(f"{op}: seed must be in [0, 2**63), got {seed}")
    return seed


def seed_tensor(op: str, seed, device: torch.device) -> torch.Tensor:
    """The seed the kernels read: ``seed`` (an int or an int64 tensor, see ``check_seed``) as an int64 [1] tensor
    on ``device``; None draws one there (``draw_seed``)."""
    if seed is None:
        return draw_seed(device)
    seed = check_seed(op, seed, device)
    return seed.reshape(1) if isinstance(seed, torch.Tensor) else torch.full((1,), seed, dtype=torch.int64,
                                                                             device=device)


def draw_seed(device: torch.device | str = "cpu") -> torch.Tensor:
    """A fresh seed in [0, 2**31), int64 [1] on ``device``, from torch's generator of that device (so
    torch.manual_seed makes runs repeat), drawn there: no host read, and a CUDA graph replay draws anew."""
    return torch.randint(0, DRAWN_SEED_LIMIT, (1,), device=device)


@functools.cache
def dropout_scale(p: float, dtype: torch.dtype) -> float:
    """Factor of the kept values: 1/(1-p) rounded to ``dtype`` as F.dropout computes it; 1 for p = 0, 0 for p = 1
    (computed once per (p, dtype): a constant of the launches, not a per-step host read)."""
    if p == 0.0 or p == 1.0:
        return 1.0 - p
    return (torch.ones((), dtype=dtype) / (1.0 - p)).item()


def _dropout_launch(op: str, t: torch.Tensor, p: float, seed, config: triton.Config | None) -> torch.Tensor:
    p = check_probability(op, p)
    seed = seed_tensor(op, seed, t.device)
    checks.check_float_dtype(op, x=t)
    checks.check_device(op, x=t)
    source = t.contiguous()  # the mask is defined on the row-major index, whatever the layout
    out = runtime.new_output(t.shape, device=t.device, dtype=t.dtype)
    if out.numel():
        runtime.launch(_dropout_kernel, lambda meta: (triton.cdiv(out.numel(), meta["BLOCK"]),), CONFIGS, config,
                       x_ptr=source, y_ptr=out, seed_ptr=seed, numel=out.numel(), p=p, scale=dropout_scale(p, t.dtype),
                       COMPUTE_DTYPE=runtime.accumulator_type(t.dtype))
    return out


def dropout_forward(x: torch.Tensor, p: float, seed: int | torch.Tensor,
                    config: triton.Config | None = None) -> torch.Tensor:
    """y (x's shape, a new contiguous tensor): x * 1/(1-p) where kept, else 0; the mask comes from (seed,
    row-major index). seed: an int, or an int64 tensor of one element on x's device (read by the kernel)."""
    return _dropout_launch("dropout", x, p, seed, config)


def dropout_backward(dy: torch.Tensor, p: float, seed: int | torch.Tensor,
                     config: triton.Config | None = None) -> torch.Tensor:
    """dx = dy * 1/(1-p) where the forward with this seed kept the element, else 0 (the mask is regenerated)."""
    return _dropout_launch("dropout_backward", dy, p, seed, config)
