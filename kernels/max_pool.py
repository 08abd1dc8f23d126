"""2-D max pooling (F.max_pool2d semantics: padding, dilation, ceil_mode): forward saving small window
offsets, backward as a gather over the windows that cover each input pixel (no atomics), and PyTorch's int64
indices made from the offsets on demand.

Notation: x [N, C, H, W] -> y [N, C, OH, OW], window KH x KW taps, dilation DH x DW (compile-time constants,
so dilation 1 compiles to the undilated code). Window (oh, ow) starts at (oh*stride_h - pad_h,
ow*stride_w - pad_w); its tap (i, j) reads (start_h + i*DH, start_w + j*DW) and has offset i*KW + j.
Padded and out-of-input positions (ceil_mode's last windows) never win (they count as -inf, as in PyTorch).
Ties go to the first maximum in row-major tap order; a NaN wins over any number and a later NaN over an
earlier one, exactly as PyTorch's kernels compare (``v > max or v != v``), so gradients and indices land where
PyTorch's do. A window with nothing above -inf keeps, as PyTorch does, its first tap with row and column >= 0
(past the input when dilation skips every pixel: PyTorch's backward then writes out of bounds; this one drops
that gradient).

RELU pools relu(x) (AlexNet's ReLU before a pool, taken out of the conv, whose backward then needs no mask pass),
exactly as ``max_pool2d(relu(x))``: the running maximum starts at 0 instead of -inf (at -inf in a dilated window
that misses every pixel), so y = max(window maximum, 0) and NaN still wins; the loop is unchanged. A window whose
maximum is <= 0 passes no gradient (relu's is 0 at its winner, as PyTorch's threshold_backward: NaN passes): the
forward stores its offset o as -1 - o, which no tap of the backward matches, so the backward needs no x and no
flag; the indices decode it.

HAS_BIAS: pools x + bias[c] (then its relu with RELU): a conv's bias moved after it, so that the pool's backward
makes its gradient: each program loops over ``BIAS_GRAD_BLOCKS`` consecutive blocks of BLOCK_P pixels, sums the
dx it writes (as stored) over them in registers and writes one row of per-program partials (its tile's channels),
which ``finish_bias_grad`` sums in a fixed order (no atomics: bitwise repeatable). x + bias is rounded to y's dtype
before the max, as the unfused add stores it: the same winners.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import checks, runtime
from .partial_sums import bias_partials, finish_bias_grad

# Not autotuned: one config (forward and indices; the backward's: BACKWARD_CONFIGS); the interpreter runs fewer, larger
# programs.
CONFIGS = runtime.fixed_config(BLOCK=1024, num_warps=8, interpreter_block=16384)


def _backward_configs(block_p: int, block_c: int) -> runtime.KernelConfigs:
    """The backward's BLOCK_P x BLOCK_C tile: 1024 elements at 4 warps (8 warps spilled 8 bytes at 40 registers on
    sm_80, conv5's 256 channels), 16384 in the interpreter."""
    config = triton.Config(dict(BLOCK_P=block_p, BLOCK_C=block_c), num_warps=4, num_stages=1)
    return runtime.KernelConfigs(tensor_core=(config,), cuda_core=(config,), key=(),
                                 interpreter=triton.Config(dict(BLOCK_P=1024, BLOCK_C=16)))


# by CHANNELS_LAST: 32 channels (64 bytes of bf16) of 32 pixels; in NCHW 256 pixels (a row and more) of 4 channels
BACKWARD_CONFIGS = {True: _backward_configs(32, 32), False: _backward_configs(256, 4)}


def backward_config(channels_last: bool) -> triton.Config:
    """The backward's config (BLOCK_P, BLOCK_C) in this mode (GPU or interpreter) for the layout."""
    configs = BACKWARD_CONFIGS[channels_last]
    return configs.for_interpreter({}) if runtime.INTERPRETER else configs.tensor_core[0]


# Pixel blocks each program of a backward that makes the bias gradient loops over (1 without it), summing its dx in
# registers: BIAS_GRAD_BLOCKS times fewer partial rows to write and sum again (the 2012 conv1's LRN + pool backward:
# 9.3 MB of fp32 partials with one block per program, bf16 batch 128). The max-pool backward sums dx element-wise
# over its blocks and reduces once: 12-17% fewer instructions per block (sm_90, sm_80) for 47 -> 55..80 registers
# (occupancy 0.625 -> 0.56..0.375). 2 in the interpreter: the tests' small images still run several programs of
# several blocks.
BIAS_GRAD_BLOCKS = 2 if runtime.INTERPRETER else 8


@triton.jit
def _output_coordinates(offs, C, OH, OW, CHANNELS_LAST: tl.constexpr):
    """(n, c, oh, ow) of flat output indices, enumerated in the tensor's memory order."""
    if CHANNELS_LAST:
        c = offs % C
        ow = (offs // C) % OW
        oh = (offs // (C * OW)) % OH
        n = offs // (C * OW * OH)
    else:
        ow = offs % OW
        oh = (offs // OW) % OH
        c = (offs // (OW * OH)) % C
        n = offs // (OW * OH * C)
    return n, c, oh, ow


@triton.jit
def _first_in_bounds(h0, w0, KW, DILATION_H: tl.constexpr = 1, DILATION_W: tl.constexpr = 1):
    """Window offset of the first tap with row and column >= 0 of windows starting at (h0, w0): PyTorch keeps it
    when nothing beats -inf."""
    return tl.cdiv(tl.maximum(h0, 0) - h0, DILATION_H) * KW + tl.cdiv(tl.maximum(w0, 0) - w0, DILATION_W)


@triton.jit
def _keep_maximum(best, best_at, v, inside, at):
    """Running window maximum in PyTorch's order: a later value wins if greater or NaN (ties keep the first)."""
    wins = inside & ((v > best) | (v != v))
    return tl.where(wins, v, best), tl.where(wins, at, best_at)


@triton.jit
def _gather_window_grads(dy_ptr, window_ptr, n64, c, h, w, valid, OH, OW, KH, KW, stride_h, stride_w, pad_h, pad_w,
                         dy_sn, dy_sc, dy_sh, dy_sw, win_sn, win_sc, win_sh, win_sw, COMPUTE_DTYPE: tl.constexpr,
                         DILATION_H: tl.constexpr = 1, DILATION_W: tl.constexpr = 1):
    """Sum of dy over the windows covering input pixels (n64, c, h, w) whose saved winner is that pixel.

    Indices broadcast against each other to valid's shape; at most ceil(span_h/stride_h) x ceil(span_w/stride_w)
    windows, span = (K - 1) * dilation + 1.
    """
    # windows oh with oh*stride - pad <= h <= oh*stride - pad + span - 1
    last_oh = tl.minimum((h + pad_h) // stride_h, OH - 1)
    last_ow = tl.minimum((w + pad_w) // stride_w, OW - 1)
    acc = tl.zeros(valid.shape, dtype=COMPUTE_DTYPE)
    for a in range(0, tl.cdiv((KH - 1) * DILATION_H + 1, stride_h)):
        oh = last_oh - a
        for b in range(0, tl.cdiv((KW - 1) * DILATION_W + 1, stride_w)):
            ow = last_ow - b
            local_h = h - (oh * stride_h - pad_h)
            local_w = w - (ow * stride_w - pad_w)
            tap_h = local_h // DILATION_H
            tap_w = local_w // DILATION_W
            on_tap = (local_h % DILATION_H == 0) & (local_w % DILATION_W == 0)
            covers = valid & (oh >= 0) & (ow >= 0) & on_tap & (tap_h < KH) & (tap_w < KW)
            winner = tl.load(window_ptr + n64 * win_sn + c * win_sc + oh * win_sh + ow * win_sw, mask=covers,
                             other=-1)
            mine = covers & (winner.to(tl.int32) == tap_h * KW + tap_w)
            acc += tl.load(dy_ptr + n64 * dy_sn + c * dy_sc + oh * dy_sh + ow * dy_sw, mask=mine,
                           other=0.0).to(COMPUTE_DTYPE)
    return acc


@triton.jit
def _max_pool2d_forward_kernel(
    # pointers
    x_ptr, bias_ptr, y_ptr, window_ptr,
    # sizes
    N, C, H, W, OH, OW, KH, KW,
    # geometry
    stride_h, stride_w, pad_h, pad_w,
    # strides, in elements
    x_sn, x_sc, x_sh, x_sw,
    bias_sc,
    y_sn, y_sc, y_sh, y_sw,
    # meta
    DILATION_H: tl.constexpr, DILATION_W: tl.constexpr, CHANNELS_LAST: tl.constexpr, RELU: tl.constexpr,
    HAS_BIAS: tl.constexpr, COMPUTE_DTYPE: tl.constexpr, BLOCK: tl.constexpr,
):
    """y [N, C, OH, OW] = max over each window of x [N, C, H, W] (of x + bias[c] if HAS_BIAS; then of its relu if
    RELU); window[n, c, oh, ow] = row-major offset of the winner in its window (RELU: -1 - offset where the maximum
    is <= 0).

    window has y's shape and strides, dtype int8/int16/int32 (``window_offset_dtype``). grid (cdiv(N*C*OH*OW,
    BLOCK),): each program computes BLOCK outputs, enumerated in memory order (CHANNELS_LAST or NCHW).
    """
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < N * C * OH * OW
    n, c, oh, ow = _output_coordinates(offs, C, OH, OW, CHANNELS_LAST)
    h0 = oh * stride_h - pad_h
    w0 = ow * stride_w - pad_w
    x_base = x_ptr + n.to(tl.int64) * x_sn + c * x_sc
    best_at = _first_in_bounds(h0, w0, KW, DILATION_H, DILATION_W)
    best = tl.full([BLOCK], 0.0 if RELU else float("-inf"), COMPUTE_DTYPE)  # relu(x) >= 0 at every pixel
    if HAS_BIAS:  # rounded to y's dtype, as the conv's epilogue took it (an fp32 bias: its autocast cast)
        bias = tl.load(bias_ptr + c * bias_sc, mask=valid, other=0.0).to(y_ptr.dtype.element_ty).to(COMPUTE_DTYPE)
    if RELU and DILATION_H * DILATION_W > 1:  # a dilated window may miss every pixel (an undilated one never does)
        # best_at is its first tap inside the input, if it has one
        misses = (h0 + (best_at // KW) * DILATION_H >= H) | (w0 + (best_at % KW) * DILATION_W >= W)
        best = tl.where(misses, float("-inf"), best)
    for at in range(0, KH * KW):  # row-major window order: ties keep the first
        h = h0 + (at // KW) * DILATION_H
        w = w0 + (at % KW) * DILATION_W
        inside = valid & (h >= 0) & (h < H) & (w >= 0) & (w < W)
        v = tl.load(x_base + h * x_sh + w * x_sw, mask=inside, other=float("-inf")).to(COMPUTE_DTYPE)
        if HAS_BIAS:  # x + bias rounded to y's dtype, as the unfused add stores it: the same winners
            v = (v + bias).to(y_ptr.dtype.element_ty).to(COMPUTE_DTYPE)
        best, best_at = _keep_maximum(best, best_at, v, inside, at)
    if RELU:  # the ReLU's gradient is 0 at a winner <= 0 (NaN passes): no tap of the backward matches -1 - offset
        best_at = tl.where(best <= 0, -1 - best_at, best_at)
    out = n.to(tl.int64) * y_sn + c * y_sc + oh * y_sh + ow * y_sw
    tl.store(y_ptr + out, best.to(y_ptr.dtype.element_ty), mask=valid)
    tl.store(window_ptr + out, best_at.to(window_ptr.dtype.element_ty), mask=valid)


@triton.jit
def _max_pool2d_backward_kernel(
    # pointers
    dy_ptr, window_ptr, dx_ptr, bias_partial_ptr,
    # sizes
    N, C, H, W, OH, OW, KH, KW,
    # geometry
    stride_h, stride_w, pad_h, pad_w,
    # strides, in elements
    dy_sn, dy_sc, dy_sh, dy_sw,
    win_sn, win_sc, win_sh, win_sw,
    dx_sn, dx_sc, dx_sh, dx_sw,
    # meta
    DILATION_H: tl.constexpr, DILATION_W: tl.constexpr, CHANNELS_LAST: tl.constexpr, BIAS_GRAD: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr, BLOCKS: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """dx[n, c, h, w] (dx [N, C, H, W]) = sum of dy [N, C, OH, OW] over the windows covering (h, w) whose winner
    (window, dy's shape) is (h, w); BIAS_GRAD: bias_partial[pid_p, c] ([cdiv(cdiv(N*H*W, BLOCK_P), BLOCKS), C],
    fp32 or fp64) = the sum of this program's dx (as stored) over its pixels.

    grid (cdiv(cdiv(N*H*W, BLOCK_P), BLOCKS), cdiv(C, BLOCK_C)): each program gathers BLOCK_C channels of BLOCKS
    consecutive blocks of BLOCK_P pixels (n, h, w), one block at a time, a tile whose last (fastest) axis is the one
    adjacent in memory: [pixels, channels] for CHANNELS_LAST, [channels, pixels] for NCHW.
    """
    PIXEL_AXIS: tl.constexpr = 0 if CHANNELS_LAST else 1
    c_block = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c = tl.expand_dims(c_block, PIXEL_AXIS)
    if BIAS_GRAD:  # dx summed over the blocks element-wise, over the pixels once at the end
        dx_sum = tl.zeros([BLOCK_P, BLOCK_C] if CHANNELS_LAST else [BLOCK_C, BLOCK_P],
                          dtype=bias_partial_ptr.dtype.element_ty)
    for block in range(tl.program_id(0) * BLOCKS, tl.program_id(0) * BLOCKS + BLOCKS):
        p = block * BLOCK_P + tl.arange(0, BLOCK_P)
        n, h, w = p // (H * W), (p // W) % H, p % W
        n64, h, w = tl.expand_dims(n.to(tl.int64), 1 - PIXEL_AXIS), tl.expand_dims(h, 1 - PIXEL_AXIS), \
            tl.expand_dims(w, 1 - PIXEL_AXIS)
        valid = tl.expand_dims(p < N * H * W, 1 - PIXEL_AXIS) & tl.expand_dims(c_block < C, PIXEL_AXIS)
        acc = _gather_window_grads(dy_ptr, window_ptr, n64, c, h, w, valid, OH, OW, KH, KW, stride_h, stride_w,
                                   pad_h, pad_w, dy_sn, dy_sc, dy_sh, dy_sw, win_sn, win_sc, win_sh, win_sw,
                                   COMPUTE_DTYPE, DILATION_H, DILATION_W)
        dx = acc.to(dx_ptr.dtype.element_ty)
        tl.store(dx_ptr + n64 * dx_sn + c * dx_sc + h * dx_sh + w * dx_sw, dx, mask=valid)
        if BIAS_GRAD:  # masked pixels and channels hold 0
            dx_sum += dx.to(bias_partial_ptr.dtype.element_ty)
    if BIAS_GRAD:
        tl.store(bias_partial_ptr + tl.program_id(0) * C + c_block, tl.sum(dx_sum, axis=PIXEL_AXIS), mask=c_block < C)


@triton.jit
def _window_indices_kernel(
    # pointers
    window_ptr, indices_ptr,
    # sizes
    N, C, H, W, OH, OW, KH, KW,
    # geometry
    stride_h, stride_w, pad_h, pad_w,
    # strides, in elements
    win_sn, win_sc, win_sh, win_sw,
    idx_sn, idx_sc, idx_sh, idx_sw,
    # meta
    DILATION_H: tl.constexpr, DILATION_W: tl.constexpr, CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr,
):
    """indices[n, c, oh, ow] = h * W + w of the winner (h, w) whose offset window[n, c, oh, ow] holds (int64); both
    [N, C, OH, OW].

    grid (cdiv(N*C*OH*OW, BLOCK),): each program converts BLOCK offsets.
    """
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < N * C * OH * OW
    n, c, oh, ow = _output_coordinates(offs, C, OH, OW, CHANNELS_LAST)
    n64 = n.to(tl.int64)
    at = tl.load(window_ptr + n64 * win_sn + c * win_sc + oh * win_sh + ow * win_sw, mask=valid, other=0)
    at = at.to(tl.int32)
    at = tl.where(at < 0, -1 - at, at)  # a RELU pool's offset of a window without gradient
    h = oh * stride_h - pad_h + (at // KW) * DILATION_H
    w = ow * stride_w - pad_w + (at % KW) * DILATION_W
    tl.store(indices_ptr + n64 * idx_sn + c * idx_sc + oh * idx_sh + ow * idx_sw, h.to(tl.int64) * W + w,
             mask=valid)


def _int_pair(value, name: str) -> tuple[int, int]:
    """An int, or a sequence of one or two ints (F.max_pool2d takes both), as a pair."""
    if isinstance(value, (tuple, list, torch.Size)) and len(value) == 1:
        value = value[0]
    return checks.int_pair(value, "max_pool2d", name)


def max_pool2d_dilation(dilation=1) -> dict:
    """The kernels' compile-time dilation DILATION_H, DILATION_W (an int or pair of ints, each >= 1)."""
    dilation_h, dilation_w = _int_pair(dilation, "dilation")
    if min(dilation_h, dilation_w) < 1:
        raise checks.ArgumentError(f"max_pool2d: dilation {(dilation_h, dilation_w)} must be >= 1")
    return dict(DILATION_H=dilation_h, DILATION_W=dilation_w)


def check_relu(op: str, relu) -> None:
    """TypeError unless ``relu`` (pool relu(x)) is a bool."""
    if not isinstance(relu, bool):
        raise checks.ArgumentTypeError(f"{op}: relu must be a bool, got {relu!r}")


def _pooled_size(size: int, kernel: int, stride: int, pad: int, dilation: int, ceil_mode: bool) -> int:
    """PyTorch's output size (pooling_output_shape): in ceil_mode the last window must start inside the input or
    its left/top padding."""
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    return out - 1 if ceil_mode and (out - 1) * stride >= size + pad else out


def max_pool2d_geometry(x_shape, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False) -> dict:
    """Validate F.max_pool2d's arguments against x_shape [N, C, H, W] (N may be 0); return the kernels' size
    and geometry arguments (the dilation constants come from ``max_pool2d_dilation``).

    stride None or empty means kernel_size; padding at most half the kernel, as PyTorch requires.
    """
    if len(x_shape) != 4:
        raise checks.ArgumentError(f"max_pool2d: x must be 4-D [N, C, H, W], got shape {tuple(x_shape)}")
    if 0 in tuple(x_shape)[1:]:
        raise checks.ArgumentError(f"max_pool2d: C, H and W must be non-zero (only the batch may be empty), got shape "
                                   f"{tuple(x_shape)}")
    KH, KW = _int_pair(kernel_size, "kernel_size")
    no_stride = stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0)
    stride_h, stride_w = _int_pair(kernel_size if no_stride else stride, "stride")
    pad_h, pad_w = _int_pair(padding, "padding")
    dilation = max_pool2d_dilation(dilation)
    if min(KH, KW, stride_h, stride_w) < 1:
        raise checks.ArgumentError(f"max_pool2d: kernel_size {(KH, KW)} and stride {(stride_h, stride_w)} must be >= 1")
    if pad_h < 0 or pad_w < 0 or 2 * pad_h > KH or 2 * pad_w > KW:
        raise checks.ArgumentError(f"max_pool2d: padding {(pad_h, pad_w)} must be >= 0 and at most half the kernel "
                                   f"size {(KH, KW)}")
    if not isinstance(ceil_mode, bool):
        raise checks.ArgumentTypeError(f"max_pool2d: ceil_mode must be a bool, got {ceil_mode!r}")
    N, C, H, W = x_shape
    OH = _pooled_size(H, KH, stride_h, pad_h, dilation["DILATION_H"], ceil_mode)
    OW = _pooled_size(W, KW, stride_w, pad_w, dilation["DILATION_W"], ceil_mode)
    if OH < 1 or OW < 1:
        raise checks.ArgumentError(f"max_pool2d: kernel {(KH, KW)} with dilation "
                                   f"{(dilation['DILATION_H'], dilation['DILATION_W'])} and padding {(pad_h, pad_w)} "
                                   f"is larger than the input {tuple(x_shape)}")
    return dict(N=N, C=C, H=H, W=W, OH=OH, OW=OW, KH=KH, KW=KW, stride_h=stride_h, stride_w=stride_w,
                pad_h=pad_h, pad_w=pad_w)


def window_offset_dtype(geometry: dict) -> torch.dtype:
    """The smallest integer type holding a window offset: int8 for windows of up to 127 taps, else int16 or int32."""
    taps = geometry["KH"] * geometry["KW"]
    return torch.int8 if taps <= 127 else torch.int16 if taps <= 32767 else torch.int32


def check_bias(op: str, bias: torch.Tensor | None, x: torch.Tensor) -> None:
    """ValueError/TypeError unless ``bias`` (None passes) is [C] of x's channels, on x's device, of x's dtype or
    fp32 (with fp16/bf16 x: autocast's master bias, rounded to x's dtype by the kernels)."""
    if bias is None:
        return
    checks.check_device(op, x=x, bias=bias)
    if bias.dim() != 1 or bias.shape[0] != x.shape[1]:
        raise checks.ArgumentError(f"{op}: bias must have shape ({x.shape[1]},) (x's channels), got "
                                   f"{tuple(bias.shape)}")
    if bias.dtype != x.dtype and not checks.is_master(bias.dtype, x.dtype):
        raise checks.ArgumentTypeError(f"{op}: bias has dtype {bias.dtype}; it must be x's ({x.dtype}) or float32 "
                                       "with a float16/bfloat16 x")
    if bias.device != x.device:
        raise checks.ArgumentError(f"{op}: bias is on {bias.device}, x on {x.device}: they must be on one device")


def max_pool2d_forward(x: torch.Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                       relu: bool = False, bias: torch.Tensor | None = None,
                       memory_format: torch.memory_format | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(y [N, C, OH, OW], window offsets [N, C, OH, OW] of ``window_offset_dtype``) of max_pool2d(x), of
    max_pool2d(x + bias[c]) with a ``bias`` [C] (``check_bias``), then of relu of that if ``relu``; both in
    ``memory_format`` (default x's: the kernel reads x in its own order either way)."""
    g = max_pool2d_geometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    checks.check_float_dtype("max_pool2d", x=x)
    checks.check_device("max_pool2d", x=x)
    check_bias("max_pool2d", bias, x)
    fmt = runtime.memory_format_of(x)
    shape = (g["N"], g["C"], g["OH"], g["OW"])
    y = runtime.new_output(shape, device=x.device, dtype=x.dtype, memory_format=memory_format or fmt)
    window = runtime.new_output(shape, device=x.device, dtype=window_offset_dtype(g),
                                memory_format=memory_format or fmt)
    runtime.launch(_max_pool2d_forward_kernel, lambda meta: (triton.cdiv(y.numel(), meta["BLOCK"]),),
                   CONFIGS, x_ptr=x, bias_ptr=bias, y_ptr=y, window_ptr=window, **g, **runtime.stride_args("x", x),
                   bias_sc=0 if bias is None else bias.stride(0), **runtime.stride_args("y", y),
                   **max_pool2d_dilation(dilation), CHANNELS_LAST=fmt is torch.channels_last, RELU=relu,
                   HAS_BIAS=bias is not None, COMPUTE_DTYPE=runtime.accumulator_type(x.dtype))
    return y, window


def _check_window(op: str, window: torch.Tensor, g: dict) -> None:
    """ValueError unless window is [N, C, OH, OW] of the offset dtype of these pooling arguments."""
    checks.check_shape_and_dtype(op, "window", window, (g["N"], g["C"], g["OH"], g["OW"]), window_offset_dtype(g))


def pixel_blocks_per_program(bias_grad: bool) -> int:
    """Pixel blocks per program of a backward: ``BIAS_GRAD_BLOCKS`` when it sums the bias gradient, else 1."""
    return BIAS_GRAD_BLOCKS if bias_grad else 1


def max_pool2d_backward(dy: torch.Tensor, window: torch.Tensor, x_shape, kernel_size, stride=None, padding=0,
                        dilation=1, ceil_mode=False, memory_format: torch.memory_format = torch.contiguous_format,
                        bias_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dx [N, C, H, W] (in ``memory_format``), db [C] of ``bias_dtype`` = dx summed over N, H, W, or None without
    ``bias_dtype``) from dy and the forward's window offsets (both [N, C, OH, OW]): one pass writes dx and db's
    per-program partials."""
    g = max_pool2d_geometry(x_shape, kernel_size, stride, padding, dilation, ceil_mode)
    checks.check_float_dtype("max_pool2d_backward", dy=dy)
    checks.check_device("max_pool2d_backward", dy=dy, window=window)
    _check_window("max_pool2d_backward", window, g)
    if dy.shape != window.shape:
        raise checks.ArgumentError(f"max_pool2d_backward: dy {tuple(dy.shape)} must have shape {tuple(window.shape)}")
    dx = runtime.new_output(x_shape, device=dy.device, dtype=dy.dtype, memory_format=memory_format)
    channels_last = memory_format is torch.channels_last
    configs = BACKWARD_CONFIGS[channels_last]
    config = backward_config(channels_last)
    blocks = pixel_blocks_per_program(bias_dtype is not None)
    rows = runtime.cdiv(runtime.cdiv(g["N"] * g["H"] * g["W"], config.kwargs["BLOCK_P"]), blocks)
    partials = None if bias_dtype is None else bias_partials(rows, g["C"], dy)
    runtime.launch(_max_pool2d_backward_kernel, lambda meta: (rows, triton.cdiv(g["C"], meta["BLOCK_C"])),
                   configs, config, dy_ptr=dy, window_ptr=window, dx_ptr=dx, bias_partial_ptr=partials, **g,
                   **runtime.stride_args("dy", dy), **runtime.stride_args("win", window),
                   **runtime.stride_args("dx", dx), **max_pool2d_dilation(dilation), CHANNELS_LAST=channels_last,
                   BIAS_GRAD=partials is not None, COMPUTE_DTYPE=runtime.accumulator_type(dy.dtype), BLOCKS=blocks)
    return dx, None if partials is None else finish_bias_grad(partials, bias_dtype)


def max_pool2d_indices(window: torch.Tensor, x_shape, kernel_size, stride=None, padding=0, dilation=1,
                       ceil_mode=False) -> torch.Tensor:
    """F.max_pool2d's return_indices from the forward's window offsets: int64 [N, C, OH, OW] (window's memory
    format), each the flat index h * W + w of the winner in its (n, c) plane."""
    g = max_pool2d_geometry(x_shape, kernel_size, stride, padding, dilation, ceil_mode)
    checks.check_device("max_pool2d_indices", window=window)
    _check_window("max_pool2d_indices", window, g)
    fmt = runtime.memory_format_of(window)
    indices = runtime.new_output(window.shape, device=window.device, dtype=torch.int64, memory_format=fmt)
    runtime.launch(_window_indices_kernel, lambda meta: (triton.cdiv(indices.numel(), meta["BLOCK"]),),
                   CONFIGS, window_ptr=window, indices_ptr=indices, **g, **runtime.stride_args("win", window),
                   **runtime.stride_args("idx", indices), **max_pool2d_dilation(dilation),
                   CHANNELS_LAST=fmt is torch.channels_last)
    return indices
