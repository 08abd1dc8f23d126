"""Space-to-depth and depth-to-space: b x b pixel blocks <-> channels, with padding and a cast.

space_to_depth(t, b): out [N, C*b*b, Hb, Wb] (channels_last) from t [N, C, H, W]:
    out[n, (i*b + j)*C + c, hb, wb] = t[n, c, hb*b + i - pad_h, wb*b + j - pad_w], 0 outside rows [0, height)
    and columns [0, width) (height <= H, width <= W: the part of t that counts).
depth_to_space is its inverse read: out [N, C, H, W] in any layout from t [N, C*b*b, Hb, Wb], 0 where the block
falls outside t. Both cast to the output's dtype on the way.

They turn a stride-b convolution with few channels (AlexNet's conv1: 3 channels, 11x11, stride 4) into a stride-1
one over C*b*b channels with a ceil(R/b) x ceil(S/b) filter (``kernels/conv.py``): the input x and the weight go
through space_to_depth, the weight gradient (and an input gradient) come back through depth_to_space. Any input
layout and strides; element-wise passes over memory, not autotuned.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import checks, runtime

_TILE = triton.Config({"BLOCK_P": 32}, num_warps=4, num_stages=1)
# The interpreter: fewer, larger programs (its cost is per program and per tl operation).
CONFIGS = runtime.KernelConfigs(tensor_core=(_TILE,), cuda_core=(_TILE,), interpreter=triton.Config({"BLOCK_P": 4096}),
                                key=())


@triton.jit
def _space_to_depth_kernel(
    t_ptr, out_ptr,
    P, height, width, pad_h, pad_w,
    t_sn, t_sc, t_sh, t_sw,
    out_sn, out_sc, out_sh, out_sw,
    C: tl.constexpr, B: tl.constexpr, HB: tl.constexpr, WB: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """out [N, C*B*B, HB, WB] from t [N, C, H, W] (module docstring); P = N*HB*WB.

    grid (cdiv(P, BLOCK_P),): each program writes BLOCK_P output pixels x all C*B*B channels.
    """
    pixels = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    wb = pixels % WB
    hb = (pixels // WB) % HB
    n = (pixels // (WB * HB)).to(tl.int64)
    channels = tl.arange(0, BLOCK_C)
    c = channels % C
    j = (channels // C) % B
    i = channels // (C * B)
    h = hb[:, None] * B + i[None, :] - pad_h
    w = wb[:, None] * B + j[None, :] - pad_w
    ok = (pixels < P)[:, None] & (channels < C * B * B)[None, :]
    inside = ok & (h >= 0) & (h < height) & (w >= 0) & (w < width)
    v = tl.load(t_ptr + (n * t_sn)[:, None] + (c * t_sc)[None, :] + h * t_sh + w * t_sw, mask=inside, other=0.0)
    out_ptrs = out_ptr + (n * out_sn + hb * out_sh + wb * out_sw)[:, None] + (channels * out_sc)[None, :]
    tl.store(out_ptrs, v.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _depth_to_space_kernel(
    t_ptr, out_ptr,
    P, pad_h, pad_w,
    t_sn, t_sc, t_sh, t_sw,
    out_sn, out_sc, out_sh, out_sw,
    C: tl.constexpr, B: tl.constexpr, H: tl.constexpr, W: tl.constexpr, HB: tl.constexpr, WB: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """out [N, C, H, W] from t [N, C*B*B, HB, WB] (module docstring); P = N*H*W.

    grid (cdiv(P, BLOCK_P),): each program writes BLOCK_P output pixels x all C channels.
    """
    pixels = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    w = pixels % W
    h = (pixels // W) % H
    n = (pixels // (W * H)).to(tl.int64)
    c = tl.arange(0, BLOCK_C)
    hb = (h + pad_h) // B
    wb = (w + pad_w) // B
    block = (h + pad_h) % B * B + (w + pad_w) % B
    ok = (pixels < P)[:, None] & (c < C)[None, :]
    v = tl.load(t_ptr + (n * t_sn + hb * t_sh + wb * t_sw + block * C * t_sc)[:, None] + (c * t_sc)[None, :],
                mask=ok & ((hb < HB) & (wb < WB))[:, None], other=0.0)
    out_ptrs = out_ptr + (n * out_sn + h * out_sh + w * out_sw)[:, None] + (c * out_sc)[None, :]
    tl.store(out_ptrs, v.to(out_ptr.dtype.element_ty), mask=ok)


# ----------------------------------------------------------------------------- launchers


def _check(op: str, t: torch.Tensor, block: int, pad: tuple[int, int]) -> None:
    if t.dim() != 4:
        raise checks.ArgumentError(f"{op}: the tensor must be 4-D [N, C, H, W], got shape {tuple(t.shape)}")
    checks.check_float_dtype(op, t=t)
    checks.check_device(op, t=t)
    if not isinstance(block, int) or isinstance(block, bool) or block < 1:
        raise checks.ArgumentError(f"{op}: block must be a positive int, got {block!r}")
    if min(pad) < 0:
        raise checks.ArgumentError(f"{op}: padding must be >= 0, got {pad}")


def space_to_depth(t: torch.Tensor, block: int, size: tuple[int, int], pad: tuple[int, int] = (0, 0),
                   extent: tuple[int, int] | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """[N, C*block*block, *size] channels_last, in ``dtype`` (default t's), from t [N, C, H, W] (any layout):
    pixel block (hb, wb) holds t's rows hb*block - pad[0] + [0, block) and columns likewise, channel
    (i*block + j)*C + c; zeros outside t's first extent = (height, width) rows and columns (default all)."""
    op = "space_to_depth"
    _check(op, t, block, pad)
    height, width = extent or t.shape[2:]
    if not (0 <= height <= t.shape[2] and 0 <= width <= t.shape[3]):
        raise checks.ArgumentError(f"{op}: extent {(height, width)} must lie within t's {tuple(t.shape[2:])}")
    N, C = t.shape[:2]
    out = runtime.new_output((N, C * block * block, *size), device=t.device, dtype=dtype or t.dtype,
                             memory_format=torch.channels_last)
    checks.check_float_dtype(op, out=out)
    P = N * size[0] * size[1]
    if P:
        runtime.launch(_space_to_depth_kernel, lambda meta: (runtime.cdiv(P, meta["BLOCK_P"]),), CONFIGS,
                       t_ptr=t, out_ptr=out, P=P, height=height, width=width, pad_h=pad[0], pad_w=pad[1],
                       **runtime.stride_args("t", t), **runtime.stride_args("out", out), C=C, B=block,
                       HB=size[0], WB=size[1], BLOCK_C=triton.next_power_of_2(C * block * block))
    return out


def depth_to_space(t: torch.Tensor, block: int, shape, pad: tuple[int, int] = (0, 0),
                   memory_format: torch.memory_format = torch.contiguous_format,
                   dtype: torch.dtype | None = None) -> torch.Tensor:
    """out ``shape`` = [N, C, H, W] in ``memory_format`` and ``dtype`` (default t's) from t [N, C*block*block, Hb,
    Wb]: the inverse of ``space_to_depth`` with this block and padding, zeros where a pixel's block lies beyond
    t's Hb x Wb."""
    op = "depth_to_space"
    _check(op, t, block, pad)
    N, C, H, W = shape
    if tuple(t.shape[:2]) != (N, C * block * block):
        raise checks.ArgumentError(f"{op}: t of shape {tuple(t.shape)} does not hold [{N}, {C}, ...] in "
                                   f"{block}x{block} "
                                   f"blocks (expected [{N}, {C * block * block}, Hb, Wb])")
    out = runtime.new_output(shape, device=t.device, dtype=dtype or t.dtype, memory_format=memory_format)
    checks.check_float_dtype(op, out=out)
    P = N * H * W
    if P:
        runtime.launch(_depth_to_space_kernel, lambda meta: (runtime.cdiv(P, meta["BLOCK_P"]),), CONFIGS,
                       t_ptr=t, out_ptr=out, P=P, pad_h=pad[0], pad_w=pad[1], **runtime.stride_args("t", t),
                       **runtime.stride_args("out", out), C=C, B=block, H=H, W=W, HB=t.shape[2], WB=t.shape[3],
                       BLOCK_C=triton.next_power_of_2(C))
    return out
