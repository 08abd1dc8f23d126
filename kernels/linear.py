"""Fully connected layer as a GEMM: forward with a fused bias/ReLU/dropout epilogue, input gradient,
weight and bias gradient.

Notation: x [*, K] (M rows: the product of the leading dimensions), weight [N, K],
bias [N] -> y [*, N], y = dropout?(relu?(x @ weight^T + bias)). The launchers see
x, dy and y as [M, *] matrices through ``reshape``: a view, unless the leading
dimensions cannot be merged into one stride (then a copy). Inputs are indexed
through their strides (a transposed weight, a strided bias, a stride-0 dy
work); outputs are contiguous. Empty operands are allowed: a launch whose
output is empty is skipped, and K = 0 gives y = bias, dw empty, db = sum of dy'.
Accumulation is fp32 (fp64 for float64 inputs, which exist to run gradcheck in
the interpreter). Row offsets (m, n times a row stride) and dropout indices are
int64 (the forward's dropout indices int32 when y has fewer than 2**31 elements:
the same mask); column offsets stay below a row's extent.

Dropout uses the mask of kernels/dropout.py (``dropped_out``; the seed read from
a 1-element int64 device tensor) at y's flat index m * N + n (its row-major index in [*, N] too), so the fused epilogue
equals ``dropout(linear(...))`` on y's shape exactly:
the epilogue rounds relu(x @ w^T + b) to y's dtype before scaling, as the
two separate ops would. Backward gets d(pre-activation) = dy' on the load of dy:
  ReLU (+ dropout): dy' = dy * scale where y > 0 (y > 0 implies kept and
                    pre-activation > 0; scale = 1/(1-p), or 1 without dropout),
  dropout alone:    dy' = dy * scale where the regenerated mask keeps;
or dy comes as dy' already: the next linear's input gradient applied the first rule to the dx it writes, with its
own input (this layer's y) in y's place (``relu_input``), once per element rather than on every load of dy.
No extra tensor is saved: y is needed anyway (it is the next layer's input).

Mixed precision without cast launches: x (dy in backward) sets the compute dtype; when it is fp16/bf16, weight and
bias may also be fp32 master parameters (what torch.autocast would cast to x's dtype before every F.linear). The
forward and input-gradient kernels load fp32 tiles and round them to x's dtype in registers (round to nearest even:
the bits a cast first gives), and the weight-gradient kernel writes dw and db in the parameters' fp32
(``grad_dtype``) straight from its fp32 accumulator: more exact than PyTorch's low-precision gradient cast up
afterwards. An fp32 weight tile doubles its pipeline stage bytes in shared memory. Given the master weight's
compute copy in x's dtype (``weight_copy``: the same bits as those roundings), the forward and input-gradient kernels
read it instead, at half the bytes, with the master's tile order (WEIGHT_FIRST): the same results bit for bit.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import triton
import triton.language as tl

from . import checks, runtime
from .dropout import check_probability, dropout_scale, dropped_out, seed_tensor
from .sgd import UPDATES, apply_update, check_update_operands, learning_rate_tensor

# Rows of output tiles per group in the swizzled program order (tiles of one group share operand loads in L2).
GROUP_M = 8


# Plain GEMMs on strided rows (no im2col addressing). Tile roles: BLOCK_M x BLOCK_N output tile, BLOCK_K reduction
# step (each kernel's docstring says which dimensions it maps to them). Dropped for spills on sm_80/sm_90: forward
# tiles of 64 accumulators per thread (64x128 at 4 warps, 128x128 at 8), whose dropout epilogue runs Philox on the
# whole tile; 8-warp 64x64 weight-gradient tiles (fp32). Dropped for shared memory: 4-stage 64x128x64 TF32 tiles.
# Forward 128x64 reduces 64 deep: at 32 (4 stages) sm_90's ptxas built both 16-deep halves of the rounded fp32
# master weight (wgmma's register operand) in the same registers when a dropout epilogue followed, so each wgmma
# waited for the one before (wait depth 0); 64 deep keeps one in flight, in fewer instructions per MMA. It needs
# 96 KiB of LDS at 2 stages with an fp32 weight, over gfx942's 64 KiB: there such launches take the 64-row tiles.
# Input gradient: in AlexNet's step dy comes masked (the next layer's input gradient applied this layer's ReLU and
# dropout, ``relu_input``) and the loop is a plain GEMM: sm_90 bf16 fc6/fc7 88 instructions per 2 wgmmas at 128x128x32
# (0.69 issue/tensor), 127 per 4 at 128x128x64 (0.50). Masking dy' on the load (RELU_MASK: a linear whose next layer
# does not take its mask) makes dy' wgmma's register operand, read from the async-copy stages: 211 per 2 and 360
# per 4 (1.65 and 1.41). 128x128x64 (4 stages) fits fp16/bf16 weights only (256 KiB at 4 bytes). fc8's dy [128,
# 1000] loads element by element (1000 is no multiple of 16, Triton's hint for vector loads), held in registers
# across the stages: 254 registers on sm_90, 240 on sm_80, no spill (Triton 3.6 and 3.7). 64x128x32 w4 takes 3
# stages: at 4, Triton 3.6's sm_80 build of the plain loop (fc6's dx, dy unmasked) capped itself at 128 registers and
# spilled 8 bytes (at 3: 128, no spill). The third stage cost sm_90 10 loop instructions per 2 wgmmas (fc6/fc7 0.73
# -> 0.81 issue/tensor, fc8 1.19 -> 1.27), where the launches AlexNet makes of it are memory-bound in the model.
# The weight's element size decides which forward and input-gradient tiles fit shared memory (an fp32 master
# weight's 4 bytes for both operand tiles: an overestimate by the fp16/bf16 one's half), x's the weight gradient's.
_KEY = ("M", "N", "K")
_tile = runtime.gemm_tile


def _interpreter_forward_tile(a: dict) -> triton.Config:  # rows x output features over input features
    return runtime.interpreter_gemm_tile(a["M"], a["N"], a["K"])


def _interpreter_input_grad_tile(a: dict) -> triton.Config:  # rows x input features over output features
    return runtime.interpreter_gemm_tile(a["M"], a["K"], a["N"])


def _interpreter_weight_grad_tile(a: dict) -> triton.Config:  # output x input features over rows
    return runtime.interpreter_gemm_tile(a["N"], a["K"], a["M"])


FORWARD_CONFIGS = runtime.KernelConfigs(
    tensor_core=(_tile(64, 64, 64, 4, 4), _tile(128, 64, 64, 8, 3), _tile(64, 128, 32, 8, 4)),
    cuda_core=(_tile(64, 64, 32, 8, 2), _tile(32, 64, 32, 4, 2)),
    interpreter=_interpreter_forward_tile, key=(*_KEY, "APPLY_RELU", "DROPOUT"), operand="w_ptr")
INPUT_GRAD_CONFIGS = runtime.KernelConfigs(
    tensor_core=(_tile(64, 128, 32, 4, 3), _tile(128, 128, 32, 8, 4), _tile(64, 64, 64, 4, 4),
                 _tile(128, 128, 64, 8, 4)),
    cuda_core=(_tile(64, 64, 32, 8, 2), _tile(32, 64, 32, 4, 2)),
    interpreter=_interpreter_input_grad_tile, key=(*_KEY, "RELU_MASK", "DROPOUT_MASK", "INPUT_RELU"),
    operand="w_ptr")
WEIGHT_GRAD_CONFIGS = runtime.KernelConfigs(
    tensor_core=(_tile(128, 128, 32, 8, 4), _tile(64, 128, 32, 4, 4)),
    cuda_core=(_tile(32, 64, 32, 4, 2), _tile(64, 32, 32, 4, 2)),
    interpreter=_interpreter_weight_grad_tile, key=(*_KEY, "RELU_MASK", "DROPOUT_MASK"), operand="x_ptr")


@triton.jit
def _swizzled_tile(pid, rows, cols, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr,
                   GROUP_ROWS: tl.constexpr):
    """(row tile, column tile) of program ``pid``: column-major within groups of GROUP_ROWS row tiles."""
    row_tiles = tl.cdiv(rows, BLOCK_ROWS)
    group_size = GROUP_ROWS * tl.cdiv(cols, BLOCK_COLS)
    first_row = pid // group_size * GROUP_ROWS
    group_rows = tl.minimum(row_tiles - first_row, GROUP_ROWS)
    return first_row + pid % group_size % group_rows, pid % group_size // group_rows


@triton.jit
def _output_grad(dy_ptrs, y_ptrs, mask, flat, seed, p, scale, RELU_MASK: tl.constexpr,
                 DROPOUT_MASK: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """dy' (gradient of the pre-activation) at the given dy/y pointers, in dy's dtype; 0 where ``mask`` is off.

    flat: y's flat index m * N + n (int64) of each element, for the regenerated dropout mask.
    """
    g = tl.load(dy_ptrs, mask=mask, other=0.0).to(ACC_DTYPE)
    if RELU_MASK:
        y = tl.load(y_ptrs, mask=mask, other=0.0).to(ACC_DTYPE)
        g = tl.where(y > 0.0, g * scale, 0.0)
    elif DROPOUT_MASK:
        g = dropped_out(g, seed, flat, p, scale)
    return g.to(dy_ptrs.dtype.element_ty)


@triton.jit
def _flat_index(m, n, N, SMALL_Y: tl.constexpr):
    """y's flat index m * N + n of rows m [R] and columns n [C], [R, C]: int32 when SMALL_Y (y has fewer than
    2**31 elements: the same Philox counters as int64 indices, whose high word is 0 there), else int64."""
    return m.to(tl.int32 if SMALL_Y else tl.int64)[:, None] * N + n[None, :]


@triton.jit
def _forward_product(x_ptr, w_ptr, m, n, m_ok, n_ok, K, x_sm, x_sk, w_sn, w_sk, PRECISION: tl.constexpr,
                     ACC_DTYPE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     WEIGHT_FIRST: tl.constexpr):
    """x[m, :] @ w[n, :]^T, [BLOCK_M, BLOCK_N] in ACC_DTYPE, reducing over K in BLOCK_K steps; w's tiles rounded to
    x's dtype after the load.

    WEIGHT_FIRST (for fp32 master weights): computed as (w @ x^T)^T, so that the rounded weight tile is the dot's
    first operand, which sm_90's wgmma reads from registers. As the second operand it is stored back to shared
    memory each step and every tile's wgmma pipeline drains (wait depth 0; with WEIGHT_FIRST every shipped tile keeps
    one group in flight). sm_80 and gfx942 compile either order to within 7 loop instructions.
    """
    k = tl.arange(0, BLOCK_K)
    m64, n64 = m.to(tl.int64), n.to(tl.int64)
    if WEIGHT_FIRST:
        w_ptrs = w_ptr + (n64 * w_sn)[:, None] + (k * w_sk)[None, :]
        x_ptrs = x_ptr + (m64 * x_sm)[None, :] + (k * x_sk)[:, None]
        acc_t = tl.zeros([BLOCK_N, BLOCK_M], dtype=ACC_DTYPE)
        for k0 in range(0, K, BLOCK_K):
            k_ok = k < K - k0
            a = tl.load(w_ptrs, mask=n_ok[:, None] & k_ok[None, :], other=0.0).to(x_ptr.dtype.element_ty)
            b = tl.load(x_ptrs, mask=k_ok[:, None] & m_ok[None, :], other=0.0)
            acc_t = tl.dot(a, b, acc_t, input_precision=PRECISION, out_dtype=ACC_DTYPE)
            w_ptrs += BLOCK_K * w_sk
            x_ptrs += BLOCK_K * x_sk
        return tl.trans(acc_t)
    x_ptrs = x_ptr + (m64 * x_sm)[:, None] + (k * x_sk)[None, :]
    w_ptrs = w_ptr + (n64 * w_sn)[None, :] + (k * w_sk)[:, None]
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC_DTYPE)
    for k0 in range(0, K, BLOCK_K):
        k_ok = k < K - k0
        a = tl.load(x_ptrs, mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(w_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0).to(x_ptr.dtype.element_ty)
        acc = tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=ACC_DTYPE)
        x_ptrs += BLOCK_K * x_sk
        w_ptrs += BLOCK_K * w_sk
    return acc


@triton.jit
def _linear_forward_kernel(
    # pointers (seed_ptr: the dropout mask's seed, int64 [1])
    x_ptr, w_ptr, b_ptr, y_ptr, seed_ptr,
    # sizes
    M, N, K,
    # strides, in elements
    x_sm, x_sk,
    w_sn, w_sk,
    b_sn,
    y_sm, y_sn,
    # runtime scalars (dropout)
    p, scale,
    # meta
    HAS_BIAS: tl.constexpr, APPLY_RELU: tl.constexpr, DROPOUT: tl.constexpr, SMALL_Y: tl.constexpr,
    WEIGHT_FIRST: tl.constexpr,
    PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr, GROUP_M: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """y = dropout?(relu?(x @ w^T + b)); SMALL_Y: y has fewer than 2**31 elements (int32 dropout indices).

    grid (cdiv(M, BLOCK_M) * cdiv(N, BLOCK_N),), swizzled: each program computes
    a BLOCK_M (rows) x BLOCK_N (output features) tile, reducing over K in BLOCK_K steps.
    """
    pid_m, pid_n = _swizzled_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = m < M
    n_ok = n < N
    acc = _forward_product(x_ptr, w_ptr, m, n, m_ok, n_ok, K, x_sm, x_sk, w_sn, w_sk, PRECISION, ACC_DTYPE,
                           BLOCK_M, BLOCK_N, BLOCK_K, WEIGHT_FIRST)
    if HAS_BIAS:
        acc += tl.load(b_ptr + n * b_sn, mask=n_ok, other=0.0).to(x_ptr.dtype.element_ty).to(ACC_DTYPE)[None, :]
    if APPLY_RELU:
        acc = tl.maximum(acc, 0.0)
    if DROPOUT:  # round to y's dtype first, as dropout(linear(x)) would see it
        acc = dropped_out(acc.to(y_ptr.dtype.element_ty).to(ACC_DTYPE), tl.load(seed_ptr),
                          _flat_index(m, n, N, SMALL_Y), p, scale)
    y_ptrs = y_ptr + (m.to(tl.int64) * y_sm)[:, None] + (n * y_sn)[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


@triton.jit
def _linear_input_grad_kernel(
    # pointers (seed_ptr: the forward's dropout seed, int64 [1]; x_ptr: the forward's input, with INPUT_RELU)
    dy_ptr, y_ptr, w_ptr, dx_ptr, seed_ptr, x_ptr,
    # sizes
    M, N, K,
    # strides, in elements
    dy_sm, dy_sn,
    y_sm, y_sn,
    w_sn, w_sk,
    dx_sm, dx_sk,
    x_sm, x_sk,
    # runtime scalars (dropout; the scale of the dropout that made x, with INPUT_RELU)
    p, scale, input_scale,
    # meta
    RELU_MASK: tl.constexpr, DROPOUT_MASK: tl.constexpr, INPUT_RELU: tl.constexpr, PRECISION: tl.constexpr,
    ACC_DTYPE: tl.constexpr, GROUP_M: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """dx = dy' @ w, dy' = dy masked/scaled as the forward's epilogue (``_output_grad``). INPUT_RELU: x is the
    output of a ReLU (and a dropout of scale ``input_scale`` after it, 1 without), whose backward the epilogue
    applies to dx as ``_output_grad`` would on its load: dx rounded to its dtype, then dx * input_scale where x > 0,
    else 0 (the previous layer's d(pre-activation), which that layer's backward then takes unmasked).

    grid (cdiv(M, BLOCK_M) * cdiv(K, BLOCK_N),), swizzled: each program computes
    a BLOCK_M (rows) x BLOCK_N (input features) tile of dx, reducing over N in BLOCK_K steps.
    """
    pid_m, pid_k = _swizzled_tile(tl.program_id(0), M, K, BLOCK_M, BLOCK_N, GROUP_M)
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    k = pid_k * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = m < M
    k_ok = k < K
    m64 = m.to(tl.int64)
    dy_rows = dy_ptr + m64 * dy_sm
    y_rows = y_ptr + m64 * y_sm
    flat_rows = m64 * N
    n = tl.arange(0, BLOCK_K)
    w_ptrs = w_ptr + (n.to(tl.int64) * w_sn)[:, None] + (k * w_sk)[None, :]
    seed = tl.load(seed_ptr) if DROPOUT_MASK else 0

    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC_DTYPE)
    for n0 in range(0, N, BLOCK_K):
        cols = n0 + n
        a = _output_grad(dy_rows[:, None] + (cols * dy_sn)[None, :], y_rows[:, None] + (cols * y_sn)[None, :],
                         m_ok[:, None] & (cols < N)[None, :], flat_rows[:, None] + cols[None, :], seed, p, scale,
                         RELU_MASK, DROPOUT_MASK, ACC_DTYPE)
        b = tl.load(w_ptrs, mask=(cols < N)[:, None] & k_ok[None, :], other=0.0).to(dy_ptr.dtype.element_ty)
        acc = tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=ACC_DTYPE)
        w_ptrs += BLOCK_K * w_sn

    dx = acc.to(dx_ptr.dtype.element_ty)
    if INPUT_RELU:
        x = tl.load(x_ptr + (m64 * x_sm)[:, None] + (k * x_sk)[None, :], mask=m_ok[:, None] & k_ok[None, :],
                    other=0.0)
        dx = tl.where(x.to(ACC_DTYPE) > 0.0, dx.to(ACC_DTYPE) * input_scale, 0.0).to(dx_ptr.dtype.element_ty)
    dx_ptrs = dx_ptr + (m64 * dx_sm)[:, None] + (k * dx_sk)[None, :]
    tl.store(dx_ptrs, dx, mask=m_ok[:, None] & k_ok[None, :])


@triton.jit
def _weight_grad_tile(N, K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(n [BLOCK_M] output features, k [BLOCK_N] input features, pid_k) of this program's dw tile (swizzled; K = 0:
    one tile column, which computes db only)."""
    pid_n, pid_k = _swizzled_tile(tl.program_id(0), N, tl.maximum(K, 1), BLOCK_M, BLOCK_N, GROUP_M)
    return pid_n * BLOCK_M + tl.arange(0, BLOCK_M), pid_k * BLOCK_N + tl.arange(0, BLOCK_N), pid_k


@triton.jit
def _weight_grad_accumulators(dy_ptr, y_ptr, x_ptr, seed_ptr, n, k, M, N, K, dy_sm, dy_sn, y_sm, y_sn, x_sm, x_sk,
                              p, scale, RELU_MASK: tl.constexpr, DROPOUT_MASK: tl.constexpr,
                              BIAS_GRAD: tl.constexpr, PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
                              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """(dw tile [BLOCK_M, BLOCK_N], db part [BLOCK_M]) in ACC_DTYPE at output features n and input features k:
    dy'^T @ x and the row sums of dy' (dy' as in ``_output_grad``), reduced over the M rows in BLOCK_K steps, in
    order inside the program (no split, no atomics): bitwise repeatable. The db part is summed by every program
    (a runtime branch here costs registers); the caller keeps the first tile column's."""
    n_ok = n < N
    k_ok = k < K
    m = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + (m.to(tl.int64) * x_sm)[:, None] + (k * x_sk)[None, :]
    seed = tl.load(seed_ptr) if DROPOUT_MASK else 0

    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC_DTYPE)
    bias_acc = tl.zeros([BLOCK_M], dtype=ACC_DTYPE)
    for m0 in range(0, M, BLOCK_K):
        rows = (m0 + m).to(tl.int64)
        rows_ok = rows < M
        a = _output_grad(dy_ptr + (n * dy_sn)[:, None] + (rows * dy_sm)[None, :],
                         y_ptr + (n * y_sn)[:, None] + (rows * y_sm)[None, :], n_ok[:, None] & rows_ok[None, :],
                         n[:, None] + (rows * N)[None, :], seed, p, scale, RELU_MASK, DROPOUT_MASK, ACC_DTYPE)
        b = tl.load(x_ptrs, mask=rows_ok[:, None] & k_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=ACC_DTYPE)
        if BIAS_GRAD:
            bias_acc += tl.sum(a.to(ACC_DTYPE), axis=1)
        x_ptrs += BLOCK_K * x_sm
    return acc, bias_acc


@triton.jit
def _linear_weight_grad_kernel(
    # pointers (seed_ptr: the forward's dropout seed, int64 [1])
    dy_ptr, y_ptr, x_ptr, dw_ptr, db_ptr, seed_ptr,
    # sizes
    M, N, K,
    # strides, in elements
    dy_sm, dy_sn,
    y_sm, y_sn,
    x_sm, x_sk,
    dw_sn, dw_sk,
    # runtime scalars (dropout)
    p, scale,
    # meta
    RELU_MASK: tl.constexpr, DROPOUT_MASK: tl.constexpr, BIAS_GRAD: tl.constexpr, PRECISION: tl.constexpr,
    ACC_DTYPE: tl.constexpr, GROUP_M: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """dw = dy'^T @ x and db = sum over rows of dy' (``_weight_grad_accumulators``); programs of the first
    input-feature tile store db.

    grid (cdiv(N, BLOCK_M) * cdiv(max(K, 1), BLOCK_N),), swizzled: each program computes
    a BLOCK_M (output features) x BLOCK_N (input features) tile of dw, reducing over M in BLOCK_K steps
    (K = 0: one tile column, which computes db only).
    """
    n, k, pid_k = _weight_grad_tile(N, K, BLOCK_M, BLOCK_N, GROUP_M)
    acc, bias_acc = _weight_grad_accumulators(dy_ptr, y_ptr, x_ptr, seed_ptr, n, k, M, N, K, dy_sm, dy_sn, y_sm,
                                              y_sn, x_sm, x_sk, p, scale, RELU_MASK, DROPOUT_MASK, BIAS_GRAD,
                                              PRECISION, ACC_DTYPE, BLOCK_M, BLOCK_N, BLOCK_K)
    dw_ptrs = dw_ptr + (n.to(tl.int64) * dw_sn)[:, None] + (k * dw_sk)[None, :]
    tl.store(dw_ptrs, acc.to(dw_ptr.dtype.element_ty), mask=(n < N)[:, None] & (k < K)[None, :])
    if BIAS_GRAD:
        if pid_k == 0:
            tl.store(db_ptr + n, bias_acc.to(db_ptr.dtype.element_ty), mask=n < N)


@triton.jit
def _column_quarters(t, ROWS: tl.constexpr, COLS: tl.constexpr):
    """A [ROWS, COLS] tile as four [ROWS, COLS // 4] ones, columns 0::4, 2::4, 1::4 and 3::4 (two even/odd splits)."""
    even, odd = tl.split(tl.reshape(t, [ROWS, COLS // 2, 2]))
    first, third = tl.split(tl.reshape(even, [ROWS, COLS // 4, 2]))
    second, fourth = tl.split(tl.reshape(odd, [ROWS, COLS // 4, 2]))
    return first, third, second, fourth


@triton.jit
def _linear_weight_grad_sgd_kernel(
    # pointers (seed_ptr: the forward's dropout seed, int64 [1]; w_buf_ptr, b_buf_ptr: the momentum buffers of
    # the weight and bias; w_copy_ptr: the weight's fp16/bf16 compute copy (with WEIGHT_COPY); lr_ptr: the learning
    # rate, fp32 [1])
    dy_ptr, y_ptr, x_ptr, w_ptr, b_ptr, seed_ptr, w_buf_ptr, b_buf_ptr, w_copy_ptr, lr_ptr,
    # sizes
    M, N, K,
    # strides, in elements (the weight's, and its buffer's)
    dy_sm, dy_sn,
    y_sm, y_sn,
    x_sm, x_sk,
    w_sn, w_sk,
    # runtime scalars (dropout; the SGD step)
    p, scale, momentum, weight_decay,
    # meta (PAPER ... MAXIMIZE: kernels/sgd.py's)
    RELU_MASK: tl.constexpr, DROPOUT_MASK: tl.constexpr, BIAS_GRAD: tl.constexpr, PAPER: tl.constexpr,
    HAS_MOMENTUM: tl.constexpr, FIRST_STEP: tl.constexpr, NESTEROV: tl.constexpr, HAS_WEIGHT_DECAY: tl.constexpr,
    MAXIMIZE: tl.constexpr, WEIGHT_COPY: tl.constexpr, PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
    GROUP_M: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """``_linear_weight_grad_kernel``'s dw and db (same grid, same main loop), not stored: one SGD step of the
    weight (and, BIAS_GRAD, the bias) in place from the accumulators (``sgd.apply_update``), by the programs
    of the first input-feature tile for the bias; WEIGHT_COPY: the new weight also to its compute copy (the
    weight's strides)."""
    n, k, pid_k = _weight_grad_tile(N, K, BLOCK_M, BLOCK_N, GROUP_M)
    acc, bias_acc = _weight_grad_accumulators(dy_ptr, y_ptr, x_ptr, seed_ptr, n, k, M, N, K, dy_sm, dy_sn, y_sm,
                                              y_sn, x_sm, x_sk, p, scale, RELU_MASK, DROPOUT_MASK, BIAS_GRAD,
                                              PRECISION, ACC_DTYPE, BLOCK_M, BLOCK_N, BLOCK_K)
    lr = tl.load(lr_ptr).to(tl.float32)
    # In four column sets (each thread's accumulator holds column pairs), so that the weight and buffer tiles of one
    # set are live at a time: the whole tile at once spilled (255 registers on sm_80 and sm_90), halves took 255.
    w_offsets = _column_quarters((n.to(tl.int64) * w_sn)[:, None] + (k * w_sk)[None, :], BLOCK_M, BLOCK_N)
    tile = _column_quarters((n < N)[:, None] & (k < K)[None, :], BLOCK_M, BLOCK_N)
    grads = _column_quarters(acc, BLOCK_M, BLOCK_N)
    for part in tl.static_range(4):
        apply_update(w_ptr + w_offsets[part], w_buf_ptr + w_offsets[part], w_copy_ptr + w_offsets[part], grads[part],
                     tile[part], tile[part], lr, momentum, weight_decay, PAPER, HAS_MOMENTUM, FIRST_STEP, NESTEROV,
                     HAS_WEIGHT_DECAY, MAXIMIZE, WEIGHT_COPY, ACC_DTYPE)
    if BIAS_GRAD:
        if pid_k == 0:
            apply_update(b_ptr + n, b_buf_ptr + n, b_ptr + n, bias_acc, n < N, n < N, lr, momentum, weight_decay,
                         PAPER, HAS_MOMENTUM, FIRST_STEP, NESTEROV, HAS_WEIGHT_DECAY, MAXIMIZE, False, ACC_DTYPE)


# ----------------------------------------------------------------------------- launchers


def _check_dropout(p: float, seed, device: torch.device) -> tuple[float, torch.Tensor | None]:
    """(p, the seed tensor the kernels read) checked; the seed (an int or an int64 tensor of one element on
    ``device``) is only needed when p > 0 (else None)."""
    p = check_probability("linear", p)
    if p > 0 and seed is None:
        raise checks.ArgumentTypeError("linear: dropout > 0 needs a seed (an int or an int64 tensor of one element)")
    return p, (seed_tensor("linear", seed, device) if p > 0 else None)


def _master(compute_dtype: torch.dtype, *parameters: torch.Tensor | None) -> bool:
    """Whether ``parameters`` (None passes) are fp32 master parameters of an fp16/bf16 computation (see the module
    docstring)."""
    return compute_dtype in checks.LOW_DTYPES and all(t is None or t.dtype == torch.float32 for t in parameters)


def _check_operands(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out_features: int) -> None:
    """``checks.check_layer_operands``, which also passes fp32 weight and bias with an fp16/bf16 x."""
    if not _master(x.dtype, weight, bias):
        checks.check_layer_operands("linear", x, weight, bias, out_features)
        return
    checks.check_layer_operands("linear", weight, weight, bias, out_features)  # the parameters' dtype, device, shape
    checks.check_device("linear", x=x)
    if x.device != weight.device:
        raise checks.ArgumentError(f"linear: x ({x.device}) and weight ({weight.device}) must be on one device")


def linear_geometry(x_shape, w_shape) -> dict:
    """Validate x_shape [*, K] against w_shape [N, K]; return the sizes M (rows: the product of x's leading
    dimensions), N, K. ValueError names both shapes."""
    if len(x_shape) < 1:
        raise checks.ArgumentError(f"linear: x must have at least 1 dimension [*, in_features], got shape "
                                   f"{tuple(x_shape)}")
    if len(w_shape) != 2:
        raise checks.ArgumentError(f"linear: weight must be 2-D [out_features, in_features], got shape "
                                   f"{tuple(w_shape)}")
    (N, K) = w_shape
    if x_shape[-1] != K:
        raise checks.ArgumentError(f"linear: x shape {tuple(x_shape)} has {x_shape[-1]} features, but weight shape "
                                   f"{tuple(w_shape)} expects {K}")
    return dict(M=math.prod(x_shape[:-1]), N=N, K=K)


def _matrix(t: torch.Tensor, rows: int) -> torch.Tensor:
    """t [*, cols] as a [rows, cols] matrix: a view, or a copy when t's leading dimensions do not merge."""
    return t.reshape(rows, t.shape[-1])


def _grid(rows: int, cols: int):
    return lambda meta: (triton.cdiv(rows, meta["BLOCK_M"]) * triton.cdiv(cols, meta["BLOCK_N"]),)


def _mask_args(y: torch.Tensor | None, dy: torch.Tensor, p: float, seed: torch.Tensor | None) -> dict:
    """Kernel arguments of the backward's dy masking (see the module docstring)."""
    return dict(y_ptr=y if y is not None else dy, **runtime.stride_args("y", y if y is not None else dy, "mn"),
                seed_ptr=seed if seed is not None else dy, p=p, scale=dropout_scale(p, dy.dtype),
                RELU_MASK=y is not None, DROPOUT_MASK=y is None and p > 0)


def linear_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, relu: bool = False,
                   dropout: float = 0.0, seed: int | torch.Tensor | None = None, precision: str = "ieee",
                   config: triton.Config | None = None, *, weight_copy: torch.Tensor | None = None) -> torch.Tensor:
    """y [*, N] (x's dtype) = x [*, K] @ weight [N, K]^T + bias [N], then ReLU if ``relu``, then dropout with
    probability ``dropout`` and the mask of ``seed`` (needed when dropout > 0: an int, or an int64 tensor of one
    element on x's device, which the kernel reads). weight and bias: x's dtype, or fp32 master parameters of an
    fp16/bf16 x (rounded to x's dtype after each load). weight_copy: None, or the fp32 master weight rounded to
    x's dtype (its compute copy, ``precision.compute_copy``), read instead of it: the same result.

    precision: "ieee" (exact fp32) or "tf32" (fp32 operands on tensor cores);
    fp16/bf16 always use tensor cores. config overrides the launch choice.
    """
    g = linear_geometry(x.shape, weight.shape)
    checks.check_precision("linear", precision)
    p, seed = _check_dropout(dropout, seed, x.device)
    _check_operands(x, weight, bias, g["N"])
    master = _master(x.dtype, weight, bias)
    if weight_copy is not None:
        checks.check_weight_copy("linear", weight_copy, weight, x.dtype)
    y = runtime.new_output((*x.shape[:-1], g["N"]), device=x.device, dtype=x.dtype)
    if y.numel() == 0:
        return y
    x, y_matrix = _matrix(x, g["M"]), y.view(g["M"], g["N"])
    w = weight if weight_copy is None else weight_copy  # the weight the kernel reads (also the unused pointers')
    runtime.launch(
        _linear_forward_kernel, _grid(g["M"], g["N"]), FORWARD_CONFIGS, config,
        runtime.uses_tensor_cores(x.dtype, precision),
        x_ptr=x, w_ptr=w, b_ptr=bias if bias is not None else w, y_ptr=y_matrix,
        seed_ptr=seed if seed is not None else w, **g, **runtime.stride_args("x", x, "mk"),
        **runtime.stride_args("w", w, "nk"),
        b_sn=bias.stride(0) if bias is not None else 0, **runtime.stride_args("y", y_matrix, "mn"), p=p,
        scale=dropout_scale(p, x.dtype),
        HAS_BIAS=bias is not None, APPLY_RELU=relu, DROPOUT=p > 0, SMALL_Y=y.numel() < 2**31,
        WEIGHT_FIRST=master,
        PRECISION=precision,
        ACC_DTYPE=runtime.accumulator_type(x.dtype), GROUP_M=GROUP_M)
    return y


def linear_input_grad(dy: torch.Tensor, weight: torch.Tensor, y: torch.Tensor | None = None, dropout: float = 0.0,
                      seed: int | torch.Tensor | None = None, precision: str = "ieee",
                      config: triton.Config | None = None, *, relu_input: torch.Tensor | None = None,
                      relu_input_dropout: float = 0.0) -> torch.Tensor:
    """dx [*, K] (dy's dtype) from dy [*, N] and weight [N, K] (dy's dtype, or an fp32 master weight of an
    fp16/bf16 dy).

    y [*, N]: the forward's output when it ended in a ReLU (dy is masked by y > 0);
    dropout, seed: the forward's dropout (scale only, given y; else the mask is regenerated from the seed).
    relu_input [*, K] (dy's dtype): the forward's input x when it is the output of a ReLU, then a dropout of
    probability ``relu_input_dropout`` (0: none): dx is given as that ReLU's and dropout's backward, masked by
    x > 0 and scaled by the dropout's 1/(1-p), as ``linear_input_grad`` of the layer before with its y would mask it.
    """
    if dy.ndim < 1:
        raise checks.ArgumentError(f"linear_input_grad: dy must be [*, out_features], got shape {tuple(dy.shape)}")
    g = linear_geometry((*dy.shape[:-1], weight.shape[-1]), weight.shape)
    checks.check_precision("linear", precision)
    p, seed = _check_dropout(dropout, seed, dy.device)
    out_shape = (*dy.shape[:-1], g["N"])
    checks.check_shape_and_dtype("linear_input_grad", "dy", dy, out_shape,
                                 dy.dtype if _master(dy.dtype, weight) else weight.dtype)
    checks.check_shape_and_dtype("linear_input_grad", "y", y, out_shape, dy.dtype)
    checks.check_shape_and_dtype("linear_input_grad", "relu_input", relu_input, (*dy.shape[:-1], g["K"]), dy.dtype)
    relu_input_dropout = check_probability("linear_input_grad", relu_input_dropout)
    checks.check_device("linear_input_grad", dy=dy, weight=weight, y=y, relu_input=relu_input)
    dx = runtime.new_output((*dy.shape[:-1], g["K"]), device=dy.device, dtype=dy.dtype)
    if dx.numel() == 0:
        return dx
    dy, dx_matrix = _matrix(dy, g["M"]), dx.view(g["M"], g["K"])
    y = y if y is None else _matrix(y, g["M"])
    x = dx_matrix if relu_input is None else _matrix(relu_input, g["M"])  # (dx: an unused pointer)
    runtime.launch(
        _linear_input_grad_kernel, _grid(g["M"], g["K"]), INPUT_GRAD_CONFIGS, config,
        runtime.uses_tensor_cores(dy.dtype, precision),
        dy_ptr=dy, w_ptr=weight, dx_ptr=dx_matrix, x_ptr=x, **g, **runtime.stride_args("dy", dy, "mn"),
        **runtime.stride_args("w", weight, "nk"), **runtime.stride_args("dx", dx_matrix, "mk"),
        **runtime.stride_args("x", x, "mk"), **_mask_args(y, dy, p, seed),
        input_scale=dropout_scale(relu_input_dropout, dy.dtype),
        INPUT_RELU=relu_input is not None, PRECISION=precision, ACC_DTYPE=runtime.accumulator_type(dy.dtype),
        GROUP_M=GROUP_M)
    return dx


def _weight_grad_operands(op: str, dy: torch.Tensor, x: torch.Tensor, y: torch.Tensor | None, dropout: float, seed,
                          precision: str) -> tuple[dict, float, torch.Tensor | None]:
    """(sizes M, N, K, p, the seed tensor) of a weight-gradient launch, its operands checked (errors name ``op``)."""
    if dy.ndim < 1:
        raise checks.ArgumentError(f"{op}: dy must be [*, out_features], got shape {tuple(dy.shape)}")
    g = linear_geometry(x.shape, (dy.shape[-1], x.shape[-1]))
    checks.check_precision("linear", precision)
    p, seed = _check_dropout(dropout, seed, x.device)
    out_shape = (*x.shape[:-1], g["N"])
    checks.check_shape_and_dtype(op, "dy", dy, out_shape, x.dtype)
    checks.check_shape_and_dtype(op, "y", y, out_shape, x.dtype)
    checks.check_device(op, dy=dy, x=x, y=y)
    return g, p, seed


def _launch_weight_grad(kernel, dy: torch.Tensor, x: torch.Tensor, y: torch.Tensor | None, p: float, seed,
                        g: dict, precision: str, config: triton.Config | None, configs: runtime.KernelConfigs,
                        **args) -> None:
    """``kernel`` (the weight gradient, or its SGD step) over the dw grid, with the operands' arguments and
    ``args`` (its outputs' or parameters')."""
    dy, x = _matrix(dy, g["M"]), _matrix(x, g["M"])
    y = y if y is None else _matrix(y, g["M"])
    runtime.launch(
        kernel, _grid(g["N"], max(g["K"], 1)), configs, config, runtime.uses_tensor_cores(x.dtype, precision),
        dy_ptr=dy, x_ptr=x, **g, **runtime.stride_args("dy", dy, "mn"), **runtime.stride_args("x", x, "mk"),
        **_mask_args(y, dy, p, seed), **args, PRECISION=precision, ACC_DTYPE=runtime.accumulator_type(x.dtype),
        GROUP_M=GROUP_M)


def linear_weight_grad(dy: torch.Tensor, x: torch.Tensor, y: torch.Tensor | None = None, dropout: float = 0.0,
                       seed: int | torch.Tensor | None = None, bias_grad: bool = True, precision: str = "ieee",
                       grad_dtype: torch.dtype | None = None, config: triton.Config | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dw [N, K], db [N] or None) from dy [*, N] and x [*, K]; y, dropout, seed as in ``linear_input_grad``.

    grad_dtype: dw's and db's dtype: x's (None), or float32 for the fp32 master parameters of an fp16/bf16 x
    (stored from the fp32 accumulator, never rounded to x's dtype).
    Each dw/db element is reduced over the M rows in a fixed order inside one program: bitwise repeatable.
    M = 0 gives zeros.
    """
    g, p, seed = _weight_grad_operands("linear_weight_grad", dy, x, y, dropout, seed, precision)
    grad_dtype = grad_dtype or x.dtype
    checks.check_grad_dtype("linear_weight_grad", "grad_dtype", grad_dtype, x.dtype)
    dw = runtime.new_output((g["N"], g["K"]), device=x.device, dtype=grad_dtype)
    db = runtime.new_output((g["N"],), device=x.device, dtype=grad_dtype) if bias_grad else None
    if g["N"] == 0 or (g["K"] == 0 and not bias_grad):
        return dw, db
    _launch_weight_grad(_linear_weight_grad_kernel, dy, x, y, p, seed, g, precision, config, WEIGHT_GRAD_CONFIGS,
                        dw_ptr=dw, db_ptr=db if bias_grad else dw, **runtime.stride_args("dw", dw, "nk"),
                        BIAS_GRAD=bias_grad)
    return dw, db


# The fused update's launches are not autotuned (a timed trial would update the weights again): the last fitting
# candidate, the smaller tile: 64x64 (at most 168 registers on sm_80/sm_90, no spill on Triton 3.6 or 3.7). The
# plain kernel's 64x128 (4 warps) took 229 registers on sm_80 with Triton 3.7 and spilled with 3.6 (fc6, fp16), at
# 8 warps too: the epilogue holds the fp32 tile, the weight and the momentum. The launch is memory-bound (the fc
# layers' weight-gradient GEMMs reduce over the batch only), so the smaller tile costs no modelled time.
UPDATE_CONFIGS = dataclasses.replace(
    WEIGHT_GRAD_CONFIGS, tensor_core=(WEIGHT_GRAD_CONFIGS.tensor_core[0], _tile(64, 64, 32, 4, 4)),
    pick=lambda candidates, args: candidates[-1])


def linear_weight_grad_sgd_(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                            weight_buffer: torch.Tensor | None, bias_buffer: torch.Tensor | None,
                            y: torch.Tensor | None = None, dropout: float = 0.0,
                            seed: int | torch.Tensor | None = None, precision: str = "ieee", *,
                            lr: float | torch.Tensor, momentum: float = 0.0, weight_decay: float = 0.0,
                            nesterov: bool = False, maximize: bool = False, update: str = "pytorch",
                            first_step: bool = False, weight_copy: torch.Tensor | None = None,
                            config: triton.Config | None = None) -> None:
    """One SGD step (``kernels/sgd.py``'s, any update form) of weight [N, K] and bias [N] (or None) in place, from
    the gradients ``linear_weight_grad(dy, x, y, dropout, seed)`` would give, in one launch that never stores them:
    the weight-gradient kernel's epilogue applies the step to its fp32 accumulator tile.

    weight, bias: fp32 (x fp32, or fp16/bf16 with fp32 master parameters), contiguous. weight_buffer,
    bias_buffer: their momentum buffers (shape, dtype and strides of the parameter; needed when momentum != 0,
    with bias_buffer only with a bias); first_step: the buffers hold nothing yet (written, not read). weight_copy:
    None, or the weight's fp16/bf16 compute copy (``precision.compute_copy``), written from the new weight. lr: a float
    or a 1-element float tensor on the parameters' device, read by the kernel. The weights the launch reads
    must not be needed afterwards by another kernel of this step (the input gradient runs first).
    """
    op = "linear_weight_grad_sgd_"
    g, p, seed = _weight_grad_operands(op, dy, x, y, dropout, seed, precision)
    if update not in UPDATES:
        raise checks.ArgumentError(f"{op}: update must be one of {UPDATES}, got {update!r}")
    expected = {"weight": (g["N"], g["K"]), "bias": (g["N"],)}
    for name, param, buffer in (("weight", weight, weight_buffer), ("bias", bias, bias_buffer)):
        if param is None:
            if buffer is not None:
                raise checks.ArgumentError(f"{op}: a bias momentum buffer without a bias")
            continue
        if param.dtype != torch.float32 or tuple(param.shape) != expected[name] or not param.is_contiguous():
            raise checks.ArgumentError(f"{op}: {name} must be a contiguous float32 tensor of shape {expected[name]} "
                                       f"(fp32 master parameters), got {tuple(param.shape)} {param.dtype} strides "
                                       f"{param.stride()}")
        if (buffer is None) != (momentum == 0):
            raise checks.ArgumentError(f"{op}: {name}'s momentum buffer must be given exactly when momentum != 0 "
                                       f"(momentum {momentum}, buffer {'None' if buffer is None else 'given'})")
        check_update_operands(op, param, param, buffer, weight_copy if name == "weight" else None)
    checks.check_device(op, x=x, weight=weight, bias=bias)
    if g["N"] == 0 or (g["K"] == 0 and bias is None):
        return
    _launch_weight_grad(
        _linear_weight_grad_sgd_kernel, dy, x, y, p, seed, g, precision, config, UPDATE_CONFIGS, w_ptr=weight,
        b_ptr=bias if bias is not None else weight, w_buf_ptr=weight_buffer if weight_buffer is not None else weight,
        b_buf_ptr=bias_buffer if bias_buffer is not None else weight,
        w_copy_ptr=weight_copy if weight_copy is not None else weight, **runtime.stride_args("w", weight, "nk"),
        lr_ptr=learning_rate_tensor(op, lr, weight.device), momentum=float(momentum),
        weight_decay=float(weight_decay), BIAS_GRAD=bias is not None, PAPER=update == "paper",
        HAS_MOMENTUM=momentum != 0, FIRST_STEP=momentum != 0 and first_step, NESTEROV=nesterov,
        HAS_WEIGHT_DECAY=weight_decay != 0, MAXIMIZE=maximize, WEIGHT_COPY=weight_copy is not None)
