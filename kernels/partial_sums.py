"""Deterministic second stage of split reductions: sum partials (fp32, or fp64) in a fixed order."""

import torch
import triton
import triton.language as tl

from . import checks, runtime

# Not autotuned: one config; the interpreter runs fewer, larger programs.
CONFIGS = runtime.fixed_config(BLOCK=1024, num_warps=4, interpreter_block=16384)


@triton.jit
def _sum_partials_kernel(
    # pointers
    partials_ptr, out_ptr,
    # sizes
    splits, length,
    # meta
    BLOCK: tl.constexpr,
):
    """out[i] = sum_s partials[s, i] (s ascending), cast to out's dtype.

    partials: [splits, length] fp32 or fp64, contiguous; out: [length].
    grid (cdiv(length, BLOCK),): each program sums one BLOCK of columns.
    """
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    in_range = offs < length
    acc = tl.zeros([BLOCK], dtype=partials_ptr.dtype.element_ty)
    ptrs = partials_ptr + offs
    for _ in range(0, splits):
        acc += tl.load(ptrs, mask=in_range, other=0.0)
        ptrs += length
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=in_range)


def sum_partials(partials: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Write ``partials.sum(0)`` into the contiguous ``out`` ([length], any float dtype)."""
    splits, length = partials.shape
    if not (partials.is_contiguous() and out.is_contiguous() and out.numel() == length):
        raise checks.ArgumentError(f"sum_partials: partials {tuple(partials.shape)} and out {tuple(out.shape)} "
                                   "must be contiguous with matching length")
    runtime.launch(_sum_partials_kernel, lambda meta: (runtime.cdiv(length, meta["BLOCK"]),),
                   CONFIGS, partials_ptr=partials, out_ptr=out, splits=splits, length=length)
    return out
