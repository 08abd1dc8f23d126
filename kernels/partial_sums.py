"""Deterministic second stage of split reductions: sum partials (fp32, or fp64) in a fixed order.

Partials come in two shapes. Up to ``WIDE_ROWS`` rows (a split-K weight gradient's slices, most layers), a program
per 1024 columns adds the rows one after another. Taller ones (a bias gradient summed in the pass that writes the
input gradient, a pool block's or a conv's output-gradient pass: a row per program of that pass, thousands of rows
of a few hundred columns; conv1's 33-66 weight-gradient slices) would be a chain of dependent loads per program,
one row each: on a GPU the latency of each (hundreds of ns) times the rows, milliseconds for 2012 conv2's LRN
block (11664 rows on one program). They are summed ``TALL_ROWS`` rows per step ([TALL_ROWS, 64] tiles, each row
added on its own lanes, the lanes reduced once at the end), at most ``CHUNK_ROWS`` rows per program (a few steps,
and programs enough to stream from many SMs): a taller buffer in two launches (three over 128 x 128 rows), chunks of
rows side by side, then the chunks' sums. The order of every sum is a rule of the buffer's shape alone.
"""

import torch
import triton
import triton.language as tl

from . import checks, runtime

# The most rows added one after another per program (AlexNet's split-K weight gradients: 7-14 slices but conv1's).
WIDE_ROWS = 16
# The tall shape's rows per step and most rows per program.
TALL_ROWS, CHUNK_ROWS = 32, 128
# Not autotuned: one config per shape; the interpreter runs fewer, larger programs of the wide one.
WIDE_CONFIGS = runtime.fixed_config(BLOCK=1024, num_warps=4, interpreter_block=16384)
TALL_CONFIGS = runtime.fixed_config(BLOCK=64, num_warps=4)


@triton.jit
def _sum_partials_kernel(
    # pointers
    partials_ptr, out_ptr,
    # sizes
    splits, length, rows_per_program,
    # meta
    ROWS: tl.constexpr, BLOCK: tl.constexpr,
):
    """out[j, i] = sum of partials[s, i] over the rows s of chunk j, [j * rows_per_program, (j + 1) *
    rows_per_program) within [0, splits): ROWS rows a step, each step added on its own lanes in ascending order,
    the ROWS lanes summed at the end; cast to out's dtype.

    partials: [splits, length] fp32 or fp64, contiguous; out: [chunks, length], contiguous.
    grid (cdiv(length, BLOCK), chunks): each program sums one BLOCK of columns over one chunk.
    """
    columns = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    in_range = columns < length
    first = tl.program_id(1) * rows_per_program
    end = tl.minimum(first + rows_per_program, splits)
    acc = tl.zeros([ROWS, BLOCK], dtype=partials_ptr.dtype.element_ty)
    for start in range(first, end, ROWS):
        rows = start + tl.arange(0, ROWS)
        acc += tl.load(partials_ptr + rows.to(tl.int64)[:, None] * length + columns[None, :],
                       mask=(rows < end)[:, None] & in_range[None, :], other=0.0)
    out_ptrs = out_ptr + tl.program_id(1).to(tl.int64) * length + columns
    tl.store(out_ptrs, tl.sum(acc, axis=0).to(out_ptr.dtype.element_ty), mask=in_range)


def sum_partials(partials: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Write ``partials.sum(0)`` into the contiguous ``out`` ([length], any float dtype)."""
    splits, length = partials.shape
    if not (partials.is_contiguous() and out.is_contiguous() and out.numel() == length):
        raise checks.ArgumentError(f"sum_partials: partials {tuple(partials.shape)} and out {tuple(out.shape)} "
                                   "must be contiguous with matching length")
    if splits <= WIDE_ROWS:
        _launch(partials, out, WIDE_CONFIGS, 1, splits, 1)
        return out
    chunks = runtime.cdiv(splits, CHUNK_ROWS)
    if chunks == 1:
        _launch(partials, out, TALL_CONFIGS, TALL_ROWS, splits, 1)
        return out
    sums = runtime.new_output((chunks, length), device=partials.device, dtype=partials.dtype)
    _launch(partials, sums, TALL_CONFIGS, TALL_ROWS, CHUNK_ROWS, chunks)
    return sum_partials(sums, out)


def bias_partials(rows: int, C: int, like: torch.Tensor) -> torch.Tensor:
    """The per-program bias-gradient partials [rows, C] of a backward whose gradients have ``like``'s dtype: fp32
    (fp64 for float64), summed by ``finish_bias_grad``."""
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    return runtime.new_output((rows, C), device=like.device, dtype=dtype)


def finish_bias_grad(partials: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """db [C] of ``dtype`` = partials [rows, C] summed over rows in a fixed order (bitwise repeatable; 0 for no
    rows: an empty batch)."""
    db = runtime.new_output(partials.shape[1:], device=partials.device, dtype=dtype)
    return db.zero_() if partials.shape[0] == 0 else sum_partials(partials, db)


def _launch(partials: torch.Tensor, out: torch.Tensor, configs: runtime.KernelConfigs, rows: int,
            rows_per_program: int, chunks: int) -> None:
    splits, length = partials.shape
    runtime.launch(_sum_partials_kernel, lambda meta: (runtime.cdiv(length, meta["BLOCK"]), chunks), configs,
                   partials_ptr=partials, out_ptr=out, splits=splits, length=length,
                   rows_per_program=rows_per_program, ROWS=rows)
