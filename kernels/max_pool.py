"""2-D max pooling (F.max_pool2d semantics, ceil_mode=False, dilation 1): forward saving small window
offsets, backward as a gather over the windows that cover each input pixel (no atomics).

Notation: x [N, C, H, W] -> y [N, C, OH, OW], window KH x KW. Padded positions never win (they count
as -inf, as in PyTorch). Ties go to the first maximum in row-major window order;
a NaN wins over any number and a later NaN over an earlier one, exactly as PyTorch's kernels compare
(``v > max or v != v``), so gradients land where PyTorch sends them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import runtime

# Not autotuned: one config (forward and backward); the interpreter runs fewer, larger programs.
CONFIGS = runtime.fixed_config(BLOCK=1024, num_warps=8, interpreter_block=16384)


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
def _first_in_bounds(h0, w0, KW):
    """Window offset of the first in-bounds position of windows starting at (h0, w0): PyTorch keeps it
    when nothing beats -inf."""
    return (tl.maximum(h0, 0) - h0) * KW + (tl.maximum(w0, 0) - w0)


@triton.jit
def _keep_maximum(best, best_at, v, inside, at):
    """Running window maximum in PyTorch's order: a later value wins if greater or NaN (ties keep the first)."""
    wins = inside & ((v > best) | (v != v))
    return tl.where(wins, v, best), tl.where(wins, at, best_at)


@triton.jit
def _gather_window_grads(dy_ptr, window_ptr, n64, c, h, w, valid, OH, OW, KH, KW, stride_h, stride_w, pad_h, pad_w,
                         dy_sn, dy_sc, dy_sh, dy_sw, win_sn, win_sc, win_sh, win_sw, COMPUTE_DTYPE: tl.constexpr):
    """Sum of dy over the windows covering input pixels (n64, c, h, w) whose saved winner is that pixel.

    Indices broadcast against each other to valid's shape; at most ceil(KH/stride) x ceil(KW/stride) windows.
    """
    # windows oh with oh*stride - pad <= h <= oh*stride - pad + KH - 1
    last_oh = tl.minimum((h + pad_h) // stride_h, OH - 1)
    last_ow = tl.minimum((w + pad_w) // stride_w, OW - 1)
    acc = tl.zeros(valid.shape, dtype=COMPUTE_DTYPE)
    for a in range(0, tl.cdiv(KH, stride_h)):
        oh = last_oh - a
        for b in range(0, tl.cdiv(KW, stride_w)):
            ow = last_ow - b
            local_h = h - (oh * stride_h - pad_h)
            local_w = w - (ow * stride_w - pad_w)
            covers = valid & (oh >= 0) & (ow >= 0) & (local_h < KH) & (local_w < KW)
            winner = tl.load(window_ptr + n64 * win_sn + c * win_sc + oh * win_sh + ow * win_sw, mask=covers,
                             other=-1)
            mine = covers & (winner.to(tl.int32) == local_h * KW + local_w)
            acc += tl.load(dy_ptr + n64 * dy_sn + c * dy_sc + oh * dy_sh + ow * dy_sw, mask=mine,
                           other=0.0).to(COMPUTE_DTYPE)
    return acc


@triton.jit
def _max_pool2d_forward_kernel(
    # pointers
    x_ptr, y_ptr, window_ptr,
    # sizes
    N, C, H, W, OH, OW, KH, KW,
    # geometry
    stride_h, stride_w, pad_h, pad_w,
    # strides, in elements
    x_sn, x_sc, x_sh, x_sw,
    y_sn, y_sc, y_sh, y_sw,
    # meta
    CHANNELS_LAST: tl.constexpr, COMPUTE_DTYPE: tl.constexpr, BLOCK: tl.constexpr,
):
    """y = max over each window; window[n, c, oh, ow] = row-major offset of the winner in its window.

    window has y's shape and strides, dtype int8/int16. grid (cdiv(N*C*OH*OW, BLOCK),).
    """
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < N * C * OH * OW
    n, c, oh, ow = _output_coordinates(offs, C, OH, OW, CHANNELS_LAST)
    h0 = oh * stride_h - pad_h
    w0 = ow * stride_w - pad_w
    x_base = x_ptr + n.to(tl.int64) * x_sn + c * x_sc
    best = tl.full([BLOCK], float("-inf"), COMPUTE_DTYPE)
    best_at = _first_in_bounds(h0, w0, KW)
    for at in range(0, KH * KW):  # row-major window order: ties keep the first
        h = h0 + at // KW
        w = w0 + at % KW
        inside = valid & (h >= 0) & (h < H) & (w >= 0) & (w < W)
        v = tl.load(x_base + h * x_sh + w * x_sw, mask=inside, other=float("-inf")).to(COMPUTE_DTYPE)
        best, best_at = _keep_maximum(best, best_at, v, inside, at)
    out = n.to(tl.int64) * y_sn + c * y_sc + oh * y_sh + ow * y_sw
    tl.store(y_ptr + out, best.to(y_ptr.dtype.element_ty), mask=valid)
    tl.store(window_ptr + out, best_at.to(window_ptr.dtype.element_ty), mask=valid)


@triton.jit
def _max_pool2d_backward_kernel(
    # pointers
    dy_ptr, window_ptr, dx_ptr,
    # sizes
    N, C, H, W, OH, OW, KH, KW,
    # geometry
    stride_h, stride_w, pad_h, pad_w,
    # strides, in elements (window shares y's strides)
    dy_sn, dy_sc, dy_sh, dy_sw,
    win_sn, win_sc, win_sh, win_sw,
    dx_sn, dx_sc, dx_sh, dx_sw,
    # meta
    CHANNELS_LAST: tl.constexpr, COMPUTE_DTYPE: tl.constexpr, BLOCK: tl.constexpr,
):
    """dx[n, c, h, w] = sum of dy over the windows covering (h, w) whose winner is (h, w).

    grid (cdiv(N*C*H*W, BLOCK),): each program gathers BLOCK input pixels.
    """
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < N * C * H * W
    n, c, h, w = _output_coordinates(offs, C, H, W, CHANNELS_LAST)
    n64 = n.to(tl.int64)
    acc = _gather_window_grads(dy_ptr, window_ptr, n64, c, h, w, valid, OH, OW, KH, KW, stride_h, stride_w, pad_h,
                               pad_w, dy_sn, dy_sc, dy_sh, dy_sw, win_sn, win_sc, win_sh, win_sw, COMPUTE_DTYPE)
    out = n64 * dx_sn + c * dx_sc + h * dx_sh + w * dx_sw
    tl.store(dx_ptr + out, acc.to(dx_ptr.dtype.element_ty), mask=valid)


def max_pool2d_geometry(x_shape, kernel_size, stride=None, padding=0) -> dict:
    """Validate pooling parameters against x_shape [N, C, H, W]; return kernel size arguments."""
    if len(x_shape) != 4:
        raise ValueError(f"max_pool2d: x must be 4-D [N, C, H, W], got shape {tuple(x_shape)}")
    KH, KW = runtime.int_pair(kernel_size, "max_pool2d", "kernel_size")
    stride_h, stride_w = runtime.int_pair(kernel_size if stride is None else stride, "max_pool2d", "stride")
    pad_h, pad_w = runtime.int_pair(padding, "max_pool2d", "padding")
    if min(KH, KW, stride_h, stride_w) < 1:
        raise ValueError(f"max_pool2d: kernel_size {(KH, KW)} and stride {(stride_h, stride_w)} must be >= 1")
    if pad_h < 0 or pad_w < 0 or 2 * pad_h > KH or 2 * pad_w > KW:
        raise ValueError(f"max_pool2d: padding {(pad_h, pad_w)} must be >= 0 and at most half the kernel "
                         f"size {(KH, KW)}")
    N, C, H, W = x_shape
    OH = (H + 2 * pad_h - KH) // stride_h + 1
    OW = (W + 2 * pad_w - KW) // stride_w + 1
    if OH < 1 or OW < 1:
        raise ValueError(f"max_pool2d: kernel {(KH, KW)} with padding {(pad_h, pad_w)} is larger than the "
                         f"input {tuple(x_shape)}")
    return dict(N=N, C=C, H=H, W=W, OH=OH, OW=OW, KH=KH, KW=KW, stride_h=stride_h, stride_w=stride_w,
                pad_h=pad_h, pad_w=pad_w)


def window_offset_dtype(geometry: dict) -> torch.dtype:
    """The smallest integer type holding a window offset: int8, or int16 for windows over 127 elements."""
    return torch.int8 if geometry["KH"] * geometry["KW"] <= 127 else torch.int16


def max_pool2d_forward(x: torch.Tensor, kernel_size, stride=None, padding=0) -> tuple[torch.Tensor, torch.Tensor]:
    """(y [N, C, OH, OW], window offsets [N, C, OH, OW] int8, or int16 for windows over 127 elements)."""
    g = max_pool2d_geometry(x.shape, kernel_size, stride, padding)
    runtime.check_float_dtype("max_pool2d", x=x)
    runtime.check_device("max_pool2d", x=x)
    fmt = runtime.memory_format_of(x)
    shape = (g["N"], g["C"], g["OH"], g["OW"])
    y = runtime.new_output(shape, device=x.device, dtype=x.dtype, memory_format=fmt)
    window = runtime.new_output(shape, device=x.device, dtype=window_offset_dtype(g), memory_format=fmt)
    runtime.launch(_max_pool2d_forward_kernel, lambda meta: (triton.cdiv(y.numel(), meta["BLOCK"]),),
                   CONFIGS, x_ptr=x, y_ptr=y, window_ptr=window, **g, **runtime.stride_args("x", x),
                   **runtime.stride_args("y", y), CHANNELS_LAST=fmt is torch.channels_last,
                   COMPUTE_DTYPE=runtime.accumulator_type(x.dtype))
    return y, window


def max_pool2d_backward(dy: torch.Tensor, window: torch.Tensor, x_shape, kernel_size, stride=None, padding=0,
                        memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """dx [N, C, H, W] from dy and the forward's window offsets (both [N, C, OH, OW])."""
    g = max_pool2d_geometry(x_shape, kernel_size, stride, padding)
    out_shape = (g["N"], g["C"], g["OH"], g["OW"])
    if tuple(dy.shape) != out_shape or tuple(window.shape) != out_shape:
        raise ValueError(f"max_pool2d_backward: dy {tuple(dy.shape)} and window {tuple(window.shape)} must have "
                         f"shape {out_shape}")
    runtime.check_device("max_pool2d_backward", dy=dy, window=window)
    dx = runtime.new_output(x_shape, device=dy.device, dtype=dy.dtype, memory_format=memory_format)
    runtime.launch(_max_pool2d_backward_kernel, lambda meta: (triton.cdiv(dx.numel(), meta["BLOCK"]),),
                   CONFIGS, dy_ptr=dy, window_ptr=window, dx_ptr=dx, **g, **runtime.stride_args("dy", dy),
                   **runtime.stride_args("win", window), **runtime.stride_args("dx", dx),
                   CHANNELS_LAST=memory_format is torch.channels_last, COMPUTE_DTYPE=runtime.accumulator_type(dy.dtype))
    return dx
