"""AlexNet's normalise-and-pool block fused: max_pool2d(local_response_norm(x)), forward and backward.

x [N, C, H, W] is a conv's output (in AlexNet, before its ReLU: RELU below). The
forward never writes the LRN output: each program holds every
channel of BLOCK_P output pixels, computes the LRN of each window position in
registers (channel windows as register shifts, kernels/lrn.py) and keeps the
running maximum and its window offset (kernels/max_pool.py: int8 for windows of
up to 127 taps). The backward recomputes the denominator from x, gathers the
pooling gradient of each input pixel from the at most ceil(k/s)^2 windows that
cover it (4 for AlexNet's 3x3/2), and applies the LRN backward to it, all in
registers. Saved for backward: x (the only copy of the conv's output: the conv,
whose ReLU is here, keeps none) and the window offsets (1 byte per output element
for windows of up to 127 taps).

Each LRN value is rounded to x's dtype before the max, and the pooling gradient
before the LRN backward, as the unfused ops store them: the fused op picks the
same winners and gives the same results as ``max_pool2d(local_response_norm(x))``.

RELU: of relu(x) instead (AlexNet's ReLU taken out of the conv, whose backward
then needs no mask pass; x is then the conv's output before it): each load of x
is clamped at 0 (NaN kept), and the backward masks dx where relu(x) <= 0, as
PyTorch's threshold_backward does (NaN passes). Nothing is saved for it.

HAS_BIAS: of x + bias[c] (then its relu with RELU): the conv before the block runs without its bias, which is
added here (rounded to x's dtype, as the unfused add stores it) to each load of x, forward and backward. The
backward's programs then (BIAS_GRAD) each loop over blocks of pixels (``backward_launch``) and sum their dx (as
stored) in registers into one row of per-program partials, which ``finish_bias_grad`` sums in a fixed order: the bias
gradient without a pass of its own over the conv's output gradient.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import checks, runtime
from .lrn import (
    CONFIGS,
    WARPS,
    _load_channels,
    _lrn_denominator,
    _lrn_input_grad,
    _positions,
    _pow,
    _store_channels,
    channel_blocks,
    check_lrn_arguments,
)
from .max_pool import (
    _first_in_bounds,
    _gather_window_grads,
    _keep_maximum,
    check_bias,
    max_pool2d_geometry,
    pixel_blocks_per_program,
    window_offset_dtype,
)
from .partial_sums import bias_partials, finish_bias_grad


@triton.jit
def _relu(x):
    """max(x, 0), NaN kept (torch.relu)."""
    return tl.maximum(x, 0.0, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _load_bias(bias_ptr, c, C, bias_sc, DTYPE: tl.constexpr, HAS_BIAS: tl.constexpr, COMPUTE_DTYPE: tl.constexpr):
    """bias[c] [BLOCK_C, 1] rounded to DTYPE (x's: an fp32 bias as its autocast cast) if HAS_BIAS (0 for c >= C),
    else None."""
    if HAS_BIAS:
        bias = tl.load(bias_ptr + c * bias_sc, mask=c < C, other=0.0).to(DTYPE).to(COMPUTE_DTYPE)[:, None]
    else:
        bias = None
    return bias


@triton.jit
def _block_input(x, bias, DTYPE: tl.constexpr, RELU: tl.constexpr, HAS_BIAS: tl.constexpr,
                 COMPUTE_DTYPE: tl.constexpr):
    """What the LRN of the block reads, from a tile x [BLOCK_C, BLOCK_P]: x + bias rounded to DTYPE (x's, as the
    unfused add stores it) if HAS_BIAS, then relu of that if RELU."""
    if HAS_BIAS:
        x = (x + bias).to(DTYPE).to(COMPUTE_DTYPE)
    if RELU:
        x = _relu(x)
    return x


@triton.jit
def _lrn_max_pool_forward_kernel(
    # pointers
    x_ptr, bias_ptr, y_ptr, window_ptr,
    # sizes
    N, C, H, W, OH, OW, KH, KW,
    # geometry
    stride_h, stride_w, pad_h, pad_w,
    # strides, in elements (window shares y's strides)
    x_sn, x_sc, x_sh, x_sw,
    bias_sc,
    y_sn, y_sc, y_sh, y_sw,
    # runtime scalars (LRN)
    alpha, beta, k,
    # meta (the window size is unrolled)
    SIZE: tl.constexpr, RELU: tl.constexpr, HAS_BIAS: tl.constexpr, COMPUTE_DTYPE: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """y [N, C, OH, OW] = max over each window of LRN(x [N, C, H, W]) (x + bias[c] if HAS_BIAS, then relu of that
    if RELU: ``_block_input``); window [N, C, OH, OW] = row-major offset of the winner in its window.

    grid (cdiv(N*OH*OW, BLOCK_P),): each program computes all C channels (BLOCK_C >= C) of BLOCK_P outputs.
    """
    n, oh, ow, p_ok = _positions(tl.program_id(0), N, OH, OW, BLOCK_P)
    n = n.to(tl.int64)
    c = tl.arange(0, BLOCK_C)
    h0 = oh * stride_h - pad_h
    w0 = ow * stride_w - pad_w
    best = tl.full([BLOCK_C, BLOCK_P], float("-inf"), COMPUTE_DTYPE)
    best_at = tl.broadcast_to(_first_in_bounds(h0, w0, KW)[None, :], [BLOCK_C, BLOCK_P])
    bias = _load_bias(bias_ptr, c, C, bias_sc, x_ptr.dtype.element_ty, HAS_BIAS, COMPUTE_DTYPE)
    for at in range(0, KH * KW):  # row-major window order: ties keep the first
        h = h0 + at // KW
        w = w0 + at % KW
        inside = p_ok & (h >= 0) & (h < H) & (w >= 0) & (w < W)
        x = _load_channels(x_ptr + n * x_sn + h * x_sh + w * x_sw, c, C, x_sc, inside, COMPUTE_DTYPE)
        x = _block_input(x, bias, x_ptr.dtype.element_ty, RELU, HAS_BIAS, COMPUTE_DTYPE)
        d = _lrn_denominator(x, c, C, alpha, k, SIZE, BLOCK_C)
        normalised = (x * _pow(d, -beta)).to(y_ptr.dtype.element_ty).to(COMPUTE_DTYPE)
        best, best_at = _keep_maximum(best, best_at, normalised, inside[None, :], at)
    _store_channels(y_ptr + n * y_sn + oh * y_sh + ow * y_sw, c, C, y_sc, p_ok, best)
    _store_channels(window_ptr + n * y_sn + oh * y_sh + ow * y_sw, c, C, y_sc, p_ok, best_at)


@triton.jit
def _lrn_max_pool_backward_kernel(
    # pointers
    dy_ptr, window_ptr, x_ptr, bias_ptr, dx_ptr, bias_partial_ptr,
    # sizes
    N, C, H, W, OH, OW, KH, KW,
    # geometry
    stride_h, stride_w, pad_h, pad_w,
    # strides, in elements
    dy_sn, dy_sc, dy_sh, dy_sw,
    win_sn, win_sc, win_sh, win_sw,
    x_sn, x_sc, x_sh, x_sw,
    bias_sc,
    dx_sn, dx_sc, dx_sh, dx_sw,
    # runtime scalars (LRN)
    alpha, beta, k,
    # meta (the window size is unrolled)
    SIZE: tl.constexpr, RELU: tl.constexpr, HAS_BIAS: tl.constexpr, BIAS_GRAD: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, BLOCKS: tl.constexpr,
):
    """dx [N, C, H, W] from dy [N, C, OH, OW], the window offsets (dy's shape) and x [N, C, H, W] (through the
    forward's ``_block_input``: RELU's dx is 0 where its input is <= 0); BIAS_GRAD: bias_partial[pid, c]
    ([cdiv(cdiv(N*H*W, BLOCK_P), BLOCKS), C], fp32 or fp64) = the sum of this program's dx (as stored) over its
    pixels.

    grid (cdiv(cdiv(N*H*W, BLOCK_P), BLOCKS),): each program computes all C channels of BLOCKS consecutive blocks of
    BLOCK_P input pixels, one block at a time."""
    c = tl.arange(0, BLOCK_C)
    bias = _load_bias(bias_ptr, c, C, bias_sc, x_ptr.dtype.element_ty, HAS_BIAS, COMPUTE_DTYPE)
    if BIAS_GRAD:
        bias_sum = tl.zeros([BLOCK_C], dtype=bias_partial_ptr.dtype.element_ty)
    for block in range(tl.program_id(0) * BLOCKS, tl.program_id(0) * BLOCKS + BLOCKS):
        n, h, w, p_ok = _positions(block, N, H, W, BLOCK_P)
        n = n.to(tl.int64)
        x = _load_channels(x_ptr + n * x_sn + h * x_sh + w * x_sw, c, C, x_sc, p_ok, COMPUTE_DTYPE)
        x = _block_input(x, bias, x_ptr.dtype.element_ty, RELU, HAS_BIAS, COMPUTE_DTYPE)
        d = _lrn_denominator(x, c, C, alpha, k, SIZE, BLOCK_C)
        valid = (c < C)[:, None] & p_ok[None, :]
        d_normalised = _gather_window_grads(dy_ptr, window_ptr, n[None, :], c[:, None], h[None, :], w[None, :],
                                            valid, OH, OW, KH, KW, stride_h, stride_w, pad_h, pad_w, dy_sn, dy_sc,
                                            dy_sh, dy_sw, win_sn, win_sc, win_sh, win_sw, COMPUTE_DTYPE)
        d_normalised = d_normalised.to(dx_ptr.dtype.element_ty).to(COMPUTE_DTYPE)
        dx = _lrn_input_grad(d_normalised, x, d, c, C, alpha, beta, SIZE, BLOCK_C)
        if RELU:
            dx = tl.where(x <= 0, 0.0, dx)
        _store_channels(dx_ptr + n * dx_sn + h * dx_sh + w * dx_sw, c, C, dx_sc, p_ok, dx)
        if BIAS_GRAD:  # dx as stored, 0 at masked pixels and channels
            dx = tl.where(valid, dx.to(dx_ptr.dtype.element_ty).to(bias_partial_ptr.dtype.element_ty), 0.0)
            bias_sum += tl.sum(dx, axis=1)  # (a [BLOCK_C, BLOCK_P] sum reduced after the loop spilled on sm_80)
    if BIAS_GRAD:
        tl.store(bias_partial_ptr + tl.program_id(0) * C + c, bias_sum, mask=c < C)


def lrn_max_pool2d_geometry(x_shape, size, alpha, beta, k, kernel_size, stride, padding) -> dict:
    """Validate the LRN and pooling parameters against x_shape [N, C, H, W]; return kernel size arguments."""
    check_lrn_arguments("lrn_max_pool2d", x_shape, size, alpha, beta, k)
    return max_pool2d_geometry(x_shape, kernel_size, stride, padding)


def lrn_max_pool2d_forward(x: torch.Tensor, size: int, alpha: float, beta: float, k: float, kernel_size,
                           stride=None, padding=0, relu: bool = False,
                           bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(y [N, C, OH, OW], window offsets [N, C, OH, OW] of ``window_offset_dtype``) of
    max_pool2d(local_response_norm(z)): z = x, or x + bias[c] with a ``bias`` [C] (``check_bias``), then relu(z)
    if ``relu``.

    y and the offsets keep x's memory format.
    """
    g = lrn_max_pool2d_geometry(x.shape, size, alpha, beta, k, kernel_size, stride, padding)
    checks.check_float_dtype("lrn_max_pool2d", x=x)
    checks.check_device("lrn_max_pool2d", x=x)
    check_bias("lrn_max_pool2d", bias, x)
    fmt = runtime.memory_format_of(x)
    shape = (g["N"], g["C"], g["OH"], g["OW"])
    y = runtime.new_output(shape, device=x.device, dtype=x.dtype, memory_format=fmt)
    window = runtime.new_output(shape, device=x.device, dtype=window_offset_dtype(g), memory_format=fmt)
    blocks = channel_blocks(g["C"])
    if bias is not None and fmt is not torch.channels_last:  # half the pixels: the whole tile spilled 8 bytes at
        blocks["BLOCK_P"] = max(1, blocks["BLOCK_P"] // 2)  # 128 registers (sm_90, fp16/bf16, conv1's 96 channels)
    runtime.launch(_lrn_max_pool_forward_kernel,
                   lambda meta: (triton.cdiv(g["N"] * g["OH"] * g["OW"], meta["BLOCK_P"]),), CONFIGS,
                   x_ptr=x, bias_ptr=bias, y_ptr=y, window_ptr=window, **g, **runtime.stride_args("x", x),
                   bias_sc=0 if bias is None else bias.stride(0), **runtime.stride_args("y", y), SIZE=size,
                   alpha=float(alpha), beta=float(beta), k=float(k), RELU=relu, HAS_BIAS=bias is not None,
                   COMPUTE_DTYPE=runtime.accumulator_type(x.dtype), **blocks)
    return y, window


# The backward of more than 128 channels in channels_last (2012's conv2: 256) at twice the warps and pixels per
# program: the same elements per thread (sm_90 bf16 111 -> 109 registers, sm_80 119 -> 117, occupancy 0.25 both,
# 1320 -> 1304 SASS instructions per thread on sm_90; Triton 3.6 and 3.9 likewise, 3.9's bf16 sm_90 spill of 8 bytes
# gone) and half the bias-gradient partial rows (2012 conv2, batch 128: 11.9 -> 6.0 MB written and read again).
# In NCHW the same doubling spilled (195 registers at 8 warps).
WIDE_BACKWARD_CONFIGS = runtime.fixed_config(num_warps=2 * WARPS)


def backward_launch(C: int, bias_grad: bool, channels_last: bool) -> tuple[runtime.KernelConfigs, dict]:
    """The backward's configs and its BLOCK_C, BLOCK_P and BLOCKS (pixel blocks per program) for C channels: with
    ``bias_grad``, ``pixel_blocks_per_program`` blocks up to 128 channels, else 1; past 128 in channels_last,
    ``WIDE_BACKWARD_CONFIGS`` and twice the pixels.

    The loop keeps the channel shifts' indices live across blocks: conv1 (96 channels, bf16, channels_last) takes
    112 -> 112 registers on sm_90 and 112 -> 119 on sm_80 (occupancy 0.25 both) for 2-5% fewer instructions per
    pixel; conv2's 256 took 128 -> 150 on sm_90 (occupancy 0.25 -> 0.125) and spilled 16 bytes on sm_80. Half the
    pixels per block (16 blocks) cut the registers but cost 16-67% more instructions per pixel.
    """
    blocks = channel_blocks(C)
    if blocks["BLOCK_C"] <= 128:
        return CONFIGS, dict(blocks, BLOCKS=pixel_blocks_per_program(bias_grad))
    if channels_last:
        return WIDE_BACKWARD_CONFIGS, dict(blocks, BLOCK_P=2 * blocks["BLOCK_P"], BLOCKS=1)
    return CONFIGS, dict(blocks, BLOCKS=1)


def lrn_max_pool2d_backward(dy: torch.Tensor, window: torch.Tensor, x: torch.Tensor, size: int, alpha: float,
                            beta: float, k: float, kernel_size, stride=None, padding=0, relu: bool = False,
                            bias: torch.Tensor | None = None, bias_grad: bool = False
                            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dx [N, C, H, W] (x's memory format), db [C] of bias's dtype = dx summed over N, H, W with ``bias_grad``, else
    None) from dy and the window offsets [N, C, OH, OW], and the forward's x, ``relu`` and ``bias``: one pass
    writes dx and db's per-program partials."""
    g = lrn_max_pool2d_geometry(x.shape, size, alpha, beta, k, kernel_size, stride, padding)
    out_shape = (g["N"], g["C"], g["OH"], g["OW"])
    if tuple(dy.shape) != out_shape or tuple(window.shape) != out_shape or dy.dtype != x.dtype:
        raise checks.ArgumentError(f"lrn_max_pool2d_backward: dy {tuple(dy.shape)} {dy.dtype} and window "
                                   f"{tuple(window.shape)} must have shape {out_shape} (dy of dtype {x.dtype})")
    checks.check_device("lrn_max_pool2d_backward", dy=dy, window=window, x=x)
    check_bias("lrn_max_pool2d_backward", bias, x)
    if bias_grad and bias is None:
        raise checks.ArgumentError("lrn_max_pool2d_backward: bias_grad needs the forward's bias")
    dx = runtime.new_output(x.shape, device=x.device, dtype=x.dtype, memory_format=runtime.memory_format_of(x))
    configs, blocks = backward_launch(g["C"], bias_grad, runtime.memory_format_of(x) is torch.channels_last)
    rows = runtime.cdiv(runtime.cdiv(g["N"] * g["H"] * g["W"], blocks["BLOCK_P"]), blocks["BLOCKS"])
    partials = bias_partials(rows, g["C"], x) if bias_grad else None
    runtime.launch(_lrn_max_pool_backward_kernel, lambda meta: (rows,), configs,
                   dy_ptr=dy, window_ptr=window, x_ptr=x, bias_ptr=bias, dx_ptr=dx, bias_partial_ptr=partials, **g,
                   **runtime.stride_args("dy", dy), **runtime.stride_args("win", window), **runtime.stride_args("x", x),
                   bias_sc=0 if bias is None else bias.stride(0), **runtime.stride_args("dx", dx), SIZE=size,
                   alpha=float(alpha), beta=float(beta), k=float(k), RELU=relu, HAS_BIAS=bias is not None,
                   BIAS_GRAD=bias_grad, COMPUTE_DTYPE=runtime.accumulator_type(x.dtype), **blocks)
    return dx, None if partials is None else finish_bias_grad(partials, bias.dtype)
