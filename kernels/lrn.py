"""Local response normalisation across channels, F.local_response_norm semantics, forward and backward.

y_c = x_c * d_c^(-beta),  d_c = k + alpha / size * sum_{j = c - size//2}^{c + (size-1)//2} x_j^2
(zero-padded channel window, alpha divided by size as PyTorch does; an even size has one channel more
before c than after, as PyTorch pads it).
dx_i = dy_i * d_i^(-beta) - 2 * alpha * beta / size * x_i * sum_c dy_c * x_c * d_c^(-beta - 1)
over c = i - (size-1)//2 .. i + size//2 (the channels whose window holds i: the forward window mirrored).

x is [N, C, *spatial] with any number >= 1 of spatial dimensions; the kernels see [N, C, H, W]: a 3-D
x [N, C, L] as H = 1, and from 5-D on the leading spatial dimensions merged into H (a view when their
strides allow it, else a copy).

Math in fp32 (fp64 for float64 inputs). Each program holds every channel of its
positions, so the channel windows are sums of register shifts of one tile: x and
dy are each read once. Backward recomputes d from x, so it needs only the
forward's input (in AlexNet: the conv+ReLU output, already saved).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import checks, runtime

# Not autotuned: block sizes follow the channel count (``channel_blocks``). Elements per program (all channels x
# BLOCK_P pixels) and warps, per Triton release, each set compiling every AlexNet case without spills on sm_80,
# sm_90 and gfx942: 2048 at 8 warps for Triton 3.6 and 3.7 (4096 took up to 255 registers in the fused LRN + pool
# kernels and spilled the LRN backward on sm_90, fp32; 1024 spilled the fused kernels on sm_90, fp32, 256
# channels); 512 at 4 warps from Triton 3.9 (2048 and 1024 at 8 warps, 1024 at 4 and 512 at 8 each spilled a
# fused kernel there). The interpreter runs fewer, larger programs. kernels/lrn_max_pool.py shares both.
WARPS = 4 if runtime.TRITON_VERSION >= (3, 9) else 8
CONFIGS = runtime.fixed_config(num_warps=WARPS)
TILE_ELEMENTS = 32768 if runtime.INTERPRETER else 512 if runtime.TRITON_VERSION >= (3, 9) else 2048


@triton.jit
def _positions(pid, N, H, W, BLOCK_P: tl.constexpr):
    """(n, h, w, valid) of BLOCK_P flat spatial positions (w fastest)."""
    p = pid * BLOCK_P + tl.arange(0, BLOCK_P)
    return p // (H * W), (p // W) % H, p % W, p < N * H * W


@triton.jit
def _channel_window_sum(t, c, C, SIZE: tl.constexpr, BEFORE: tl.constexpr, BLOCK_C: tl.constexpr):
    """sum of t over channels c - BEFORE .. c - BEFORE + SIZE - 1 (zero outside [0, C)); t, result:
    [BLOCK_C, BLOCK_P].

    The channel shifts are register gathers of the tile (shared memory on a GPU), not reloads.
    """
    total = tl.zeros_like(t)
    for offset in tl.static_range(SIZE):
        j = c + offset - BEFORE
        rows = tl.broadcast_to(tl.minimum(tl.maximum(j, 0), BLOCK_C - 1)[:, None], t.shape)
        total += tl.where(((j >= 0) & (j < C))[:, None], tl.gather(t, rows, 0), 0.0)
    return total


@triton.jit
def _pow(base, exponent):
    """base ** exponent for base > 0 (libdevice pow is unavailable in the interpreter)."""
    return tl.exp2(exponent * tl.log2(base))


@triton.jit
def _lrn_denominator(x, c, C, alpha, k, SIZE: tl.constexpr, BLOCK_C: tl.constexpr):
    """d = k + alpha / size * (window sum of x^2) for a tile x [BLOCK_C, BLOCK_P] holding every channel."""
    return k + alpha / SIZE * _channel_window_sum(x * x, c, C, SIZE, SIZE // 2, BLOCK_C)


@triton.jit
def _lrn_input_grad(dy, x, d, c, C, alpha, beta, SIZE: tl.constexpr, BLOCK_C: tl.constexpr):
    """dx from tiles dy, x and the denominator d [BLOCK_C, BLOCK_P] (the module docstring's formula)."""
    neighbours = _channel_window_sum(dy * x * _pow(d, -beta - 1.0), c, C, SIZE, (SIZE - 1) // 2, BLOCK_C)
    return dy * _pow(d, -beta) - 2.0 * alpha * beta / SIZE * x * neighbours


@triton.jit
def _load_channels(ptr_p, c, C, sc, p_ok, COMPUTE_DTYPE: tl.constexpr):
    """Values [BLOCK_C, BLOCK_P] of channels c (0 outside [0, C)) at position pointers ptr_p [BLOCK_P]."""
    mask = (c < C)[:, None] & p_ok[None, :]
    return tl.load(ptr_p[None, :] + (c * sc)[:, None], mask=mask, other=0.0).to(COMPUTE_DTYPE)


@triton.jit
def _store_channels(ptr_p, c, C, sc, p_ok, values):
    """Store values [BLOCK_C, BLOCK_P] to channels c < C at position pointers ptr_p [BLOCK_P]."""
    tl.store(ptr_p[None, :] + (c * sc)[:, None], values.to(ptr_p.dtype.element_ty),
             mask=(c < C)[:, None] & p_ok[None, :])


@triton.jit
def _lrn_forward_kernel(
    # pointers
    x_ptr, y_ptr,
    # sizes
    N, C, H, W,
    # strides, in elements
    x_sn, x_sc, x_sh, x_sw,
    y_sn, y_sc, y_sh, y_sw,
    # runtime scalars
    alpha, beta, k,
    # meta (the window size is unrolled)
    SIZE: tl.constexpr, COMPUTE_DTYPE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """y [N, C, H, W] = x [N, C, H, W] * d^(-beta) (strided, any memory format). grid (cdiv(N*H*W, BLOCK_P),):
    each program normalises all C channels (BLOCK_C >= C) of BLOCK_P positions."""
    n, h, w, p_ok = _positions(tl.program_id(0), N, H, W, BLOCK_P)
    n = n.to(tl.int64)
    c = tl.arange(0, BLOCK_C)
    x = _load_channels(x_ptr + n * x_sn + h * x_sh + w * x_sw, c, C, x_sc, p_ok, COMPUTE_DTYPE)
    d = _lrn_denominator(x, c, C, alpha, k, SIZE, BLOCK_C)
    _store_channels(y_ptr + n * y_sn + h * y_sh + w * y_sw, c, C, y_sc, p_ok, x * _pow(d, -beta))


@triton.jit
def _lrn_backward_kernel(
    # pointers
    dy_ptr, x_ptr, dx_ptr,
    # sizes
    N, C, H, W,
    # strides, in elements
    dy_sn, dy_sc, dy_sh, dy_sw,
    x_sn, x_sc, x_sh, x_sw,
    dx_sn, dx_sc, dx_sh, dx_sw,
    # runtime scalars
    alpha, beta, k,
    # meta (the window size is unrolled)
    SIZE: tl.constexpr, COMPUTE_DTYPE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """dx [N, C, H, W] from dy and x (both [N, C, H, W]; d is recomputed). grid (cdiv(N*H*W, BLOCK_P),): each
    program handles all C channels of BLOCK_P positions."""
    n, h, w, p_ok = _positions(tl.program_id(0), N, H, W, BLOCK_P)
    n = n.to(tl.int64)
    c = tl.arange(0, BLOCK_C)
    x = _load_channels(x_ptr + n * x_sn + h * x_sh + w * x_sw, c, C, x_sc, p_ok, COMPUTE_DTYPE)
    dy = _load_channels(dy_ptr + n * dy_sn + h * dy_sh + w * dy_sw, c, C, dy_sc, p_ok, COMPUTE_DTYPE)
    d = _lrn_denominator(x, c, C, alpha, k, SIZE, BLOCK_C)
    dx = _lrn_input_grad(dy, x, d, c, C, alpha, beta, SIZE, BLOCK_C)
    _store_channels(dx_ptr + n * dx_sn + h * dx_sh + w * dx_sw, c, C, dx_sc, p_ok, dx)


def check_lrn_constants(op: str, size: int, alpha: float, k: float, odd_size: bool = False) -> None:
    """ValueError unless size is a positive int (odd, if ``odd_size``), k > 0 and alpha >= 0."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 1 or (odd_size and size % 2 == 0):
        raise checks.ArgumentError(f"{op}: size must be a positive {'odd ' if odd_size else ''}int, got {size!r}")
    if k <= 0 or alpha < 0:
        raise checks.ArgumentError(f"{op}: k must be > 0 and alpha >= 0 (the kernels raise the denominator to -beta "
                                   f"through its logarithm; for others use torch.nn.functional.local_response_norm), "
                                   f"got k={k}, alpha={alpha}")


def check_lrn_arguments(op: str, x_shape, size: int, alpha: float, beta: float, k: float) -> None:
    """The fused LRN + max-pool's arguments (kernels/lrn_max_pool.py): x [N, C, H, W] and an odd size."""
    if len(x_shape) != 4:
        raise checks.ArgumentError(f"{op}: x must be 4-D [N, C, H, W], got shape {tuple(x_shape)}")
    check_lrn_constants(op, size, alpha, k, odd_size=True)


def check_lrn_input(op: str, x_shape, size: int, alpha: float, k: float) -> None:
    """F.local_response_norm's arguments: x [N, C, *spatial] with at least one spatial dimension, any size."""
    if len(x_shape) < 3:
        raise checks.ArgumentError(f"{op}: x must be [N, C, *spatial] with at least 3 dimensions (as "
                                   f"F.local_response_norm), got shape {tuple(x_shape)}")
    check_lrn_constants(op, size, alpha, k)


def _as_nchw(t: torch.Tensor) -> torch.Tensor:
    """t [N, C, *spatial] as the kernels' [N, C, H, W]: [N, C, 1, L] for 3-D, the spatial dimensions but the
    last merged into H from 5-D on (a view when their strides allow, else a copy)."""
    return t.unsqueeze(2) if t.ndim == 3 else t.flatten(2, -2)


def channel_blocks(C: int) -> dict:
    """All channels in one block, BLOCK_P pixels: about TILE_ELEMENTS elements per program. Constants of the
    kernel, so of a concrete C: a symbolic one (a fake tensor's under dynamic shapes) is specialised, not carried
    through next_power_of_2's bit operations, whose expression sympy took a minute to divide."""
    block_c = triton.next_power_of_2(int(C))
    return dict(BLOCK_C=block_c, BLOCK_P=max(1, TILE_ELEMENTS // block_c))


def lrn_forward(x: torch.Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> torch.Tensor:
    """y [N, C, *spatial] = local_response_norm(x [N, C, *spatial]); a 4-D y keeps x's memory format, others
    are contiguous."""
    check_lrn_input("local_response_norm", x.shape, size, alpha, k)
    checks.check_float_dtype("local_response_norm", x=x)
    checks.check_device("local_response_norm", x=x)
    y = runtime.new_output(x.shape, device=x.device, dtype=x.dtype, memory_format=runtime.memory_format_of(x))
    if y.numel() == 0:
        return y
    x4, y4 = _as_nchw(x), _as_nchw(y)
    N, C, H, W = x4.shape
    blocks = channel_blocks(C)
    runtime.launch(_lrn_forward_kernel, lambda meta: (triton.cdiv(N * H * W, meta["BLOCK_P"]),), CONFIGS,
                   x_ptr=x4, y_ptr=y4, N=N, C=C, H=H, W=W, **runtime.stride_args("x", x4),
                   **runtime.stride_args("y", y4), SIZE=size, alpha=float(alpha), beta=float(beta), k=float(k),
                   COMPUTE_DTYPE=runtime.accumulator_type(x.dtype), **blocks)
    return y


def lrn_backward(dy: torch.Tensor, x: torch.Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75,
                 k: float = 1.0) -> torch.Tensor:
    """dx [N, C, *spatial] from dy and the forward's input x (same shape); dx is laid out as ``lrn_forward``'s y."""
    check_lrn_input("local_response_norm_backward", x.shape, size, alpha, k)
    if dy.shape != x.shape or dy.dtype != x.dtype:
        raise checks.ArgumentError(f"local_response_norm_backward: dy {tuple(dy.shape)} {dy.dtype} must match "
                                   f"x {tuple(x.shape)} {x.dtype}")
    checks.check_device("local_response_norm_backward", dy=dy, x=x)
    dx = runtime.new_output(x.shape, device=x.device, dtype=x.dtype, memory_format=runtime.memory_format_of(x))
    if dx.numel() == 0:
        return dx
    dy4, x4, dx4 = _as_nchw(dy), _as_nchw(x), _as_nchw(dx)
    N, C, H, W = x4.shape
    blocks = channel_blocks(C)
    runtime.launch(_lrn_backward_kernel, lambda meta: (triton.cdiv(N * H * W, meta["BLOCK_P"]),), CONFIGS,
                   dy_ptr=dy4, x_ptr=x4, dx_ptr=dx4, N=N, C=C, H=H, W=W, **runtime.stride_args("dy", dy4),
                   **runtime.stride_args("x", x4), **runtime.stride_args("dx", dx4),
                   SIZE=size, alpha=float(alpha), beta=float(beta), k=float(k),
                   COMPUTE_DTYPE=runtime.accumulator_type(x.dtype), **blocks)
    return dx
