"""2-D convolution as implicit GEMM: forward (bias + ReLU fused), input gradient, weight/bias gradient.

Notation: x [N, C, H, W], weight [K, C/G, R, S], y [N, K, OH, OW], G groups;
per group the GEMM is (N*OH*OW) x (K/G) x (C/G*R*S). All tensors are indexed
through their strides, so NCHW and channels_last inputs both work; outputs
take the input's memory format. Accumulation is fp32 (fp64 for float64
inputs, which exist to run gradcheck in the interpreter).

The reduction over (r, s, c) runs one of two ways (constexpr ``FLAT_CRS``):
  - channel blocks: each step is one filter tap (r, s) and a block of
    channels, so a channels_last tile row is contiguous memory (vector loads,
    cp.async); used when C/G fills a block.
  - flat: each step is BLOCK consecutive (r, s, c) indices, c fastest; for
    few channels (conv1: C=3, C*R*S=363) where channel blocks would be mostly
    padding, and by default in the interpreter (fewer interpreted steps).
The input gradient reduces over (tap, output channel) the same two ways.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import runtime
from .partial_sums import sum_partials

# On a GPU, below this many channels per group the flat (r, s, c) reduction is used.
FLAT_CRS_CHANNELS = 16


def flat_reduction(channels_per_group: int) -> bool:
    """Default reduction order: flat on a GPU for few channels (tensor-core K >= 16), and always in the
    interpreter, where fewer, larger steps are faster (tests run the channel-block order explicitly)."""
    return runtime.INTERPRETER or channels_per_group < FLAT_CRS_CHANNELS


@triton.jit
def _crs_indices(block, C, R, S, BLOCK: tl.constexpr, FLAT_CRS: tl.constexpr):
    """Filter indices (r, s, c, valid) of reduction block ``block`` over (r, s, c).

    Flat: all four are [BLOCK] vectors. Channel blocks: the block is one tap,
    so r and s are scalars; c and valid are [BLOCK].
    """
    if FLAT_CRS:
        crs = block * BLOCK + tl.arange(0, BLOCK)
        c = crs % C
        rs = crs // C
        r = rs // S
        s = rs - r * S
        valid = r < R
    else:
        channel_blocks = tl.cdiv(C, BLOCK)
        tap = block // channel_blocks
        c = (block - tap * channel_blocks) * BLOCK + tl.arange(0, BLOCK)
        r = tap // S
        s = tap - r * S
        valid = c < C
    return r, s, c, valid


@triton.jit
def _crs_blocks(C, R, S, BLOCK: tl.constexpr, FLAT_CRS: tl.constexpr):
    """Number of reduction blocks over (r, s, c)."""
    if FLAT_CRS:
        return tl.cdiv(C * R * S, BLOCK)
    else:
        return R * S * tl.cdiv(C, BLOCK)


@triton.jit
def _im2col_tile(x_pixel_ptr, ih0, iw0, pixel_ok, r, s, c, crs_ok, H, W, x_sc, x_sh, x_sw,
                 FLAT_CRS: tl.constexpr):
    """x values of an im2col tile [P, BLOCK]: rows are output pixels, columns (r, s, c).

    x_pixel_ptr [P]: x at (n, first channel of the group, 0, 0) of each pixel;
    ih0/iw0 [P]: top-left input coordinate of each pixel's window (may be < 0);
    r, s, c, crs_ok: from ``_crs_indices``. Outside the image reads 0.
    """
    if FLAT_CRS:  # the tap varies along the columns: 2-D coordinates
        ih = ih0[:, None] + r[None, :]
        iw = iw0[:, None] + s[None, :]
        inside = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        ptrs = x_pixel_ptr[:, None] + ih * x_sh + iw * x_sw + (c * x_sc)[None, :]
        mask = pixel_ok[:, None] & crs_ok[None, :] & inside
    else:  # one tap: a row offset per pixel plus a channel offset per column
        ih = ih0 + r
        iw = iw0 + s
        row_ok = pixel_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        ptrs = (x_pixel_ptr + ih * x_sh + iw * x_sw)[:, None] + (c * x_sc)[None, :]
        mask = row_ok[:, None] & crs_ok[None, :]
    return tl.load(ptrs, mask=mask, other=0.0)


@triton.jit
def _output_tile_at_input(pixel_ptr, ih, iw, pixel_ok, r, s, k, krs_ok, pad_h, pad_w, stride_h, stride_w,
                          OH, OW, sk, sh, sw, FLAT_KRS: tl.constexpr):
    """Values [P, BLOCK] of an output-shaped tensor (dy or y) at the output pixels that input pixel
    (ih, iw) [P] reaches through tap (r, s), for output channels k (columns).

    pixel_ptr [P]: the tensor at (n, first channel of the group, 0, 0); r, s, k,
    krs_ok: from ``_crs_indices`` over (tap_h, tap_w, k), mapped to filter taps.
    (ih + pad - r) is a multiple of the stride for every tap of the pixel's phase.
    """
    if FLAT_KRS:
        oh = (ih[:, None] + pad_h - r[None, :]) // stride_h
        ow = (iw[:, None] + pad_w - s[None, :]) // stride_w
        mask = pixel_ok[:, None] & krs_ok[None, :] & (oh >= 0) & (oh < OH) & (ow >= 0) & (ow < OW)
        ptrs = pixel_ptr[:, None] + oh * sh + ow * sw + (k * sk)[None, :]
    else:
        oh = (ih + pad_h - r) // stride_h
        ow = (iw + pad_w - s) // stride_w
        row_ok = pixel_ok & (oh >= 0) & (oh < OH) & (ow >= 0) & (ow < OW)
        ptrs = (pixel_ptr + oh * sh + ow * sw)[:, None] + (k * sk)[None, :]
        mask = row_ok[:, None] & krs_ok[None, :]
    return tl.load(ptrs, mask=mask, other=0.0)


@triton.jit
def _relu_masked(dy, y, ACC_DTYPE: tl.constexpr):
    """dy where the ReLU output y is positive, else 0 (the ReLU backward)."""
    return tl.where(y.to(ACC_DTYPE) > 0.0, dy, 0.0).to(dy.dtype)


@triton.jit
def _conv2d_forward_kernel(
    # pointers
    x_ptr, w_ptr, b_ptr, y_ptr,
    # sizes
    N, H, W, C_per_group, OH, OW, K_per_group, R, S,
    # geometry
    stride_h, stride_w, pad_h, pad_w,
    # strides, in elements
    x_sn, x_sc, x_sh, x_sw,
    w_sk, w_sc, w_sr, w_ss,
    y_sn, y_sc, y_sh, y_sw,
    # meta
    HAS_BIAS: tl.constexpr, APPLY_RELU: tl.constexpr, FLAT_CRS: tl.constexpr,
    PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """y = relu?(conv2d(x, w) + b).

    grid (cdiv(N*OH*OW, BLOCK_M), cdiv(K/G, BLOCK_N), G): each program computes
    a BLOCK_M (output pixels) x BLOCK_N (output channels of group G) tile.
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    group = tl.program_id(2)

    pixels = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pixel_ok = pixels < N * OH * OW
    ow = pixels % OW
    oh = (pixels // OW) % OH
    n = pixels // (OW * OH)
    x_pixel_ptr = x_ptr + n.to(tl.int64) * x_sn + group * C_per_group * x_sc
    ih0 = oh * stride_h - pad_h
    iw0 = ow * stride_w - pad_w

    k_in_group = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    k_ok = k_in_group < K_per_group
    k = group * K_per_group + k_in_group
    w_k_ptr = w_ptr + k * w_sk

    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC_DTYPE)
    for block in range(0, _crs_blocks(C_per_group, R, S, BLOCK_K, FLAT_CRS)):
        r, s, c, crs_ok = _crs_indices(block, C_per_group, R, S, BLOCK_K, FLAT_CRS)
        a = _im2col_tile(x_pixel_ptr, ih0, iw0, pixel_ok, r, s, c, crs_ok, H, W, x_sc, x_sh, x_sw, FLAT_CRS)
        w_ptrs = w_k_ptr[None, :] + (c * w_sc + r * w_sr + s * w_ss)[:, None]
        b = tl.load(w_ptrs, mask=crs_ok[:, None] & k_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=ACC_DTYPE)

    if HAS_BIAS:
        acc += tl.load(b_ptr + k, mask=k_ok, other=0.0).to(ACC_DTYPE)[None, :]
    if APPLY_RELU:
        acc = tl.maximum(acc, 0.0)
    y_ptrs = (y_ptr + n.to(tl.int64) * y_sn + oh * y_sh + ow * y_sw)[:, None] + (k * y_sc)[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=pixel_ok[:, None] & k_ok[None, :])


@triton.jit
def _conv2d_input_grad_kernel(
    # pointers
    dy_ptr, y_ptr, w_ptr, dx_ptr,
    # sizes
    N, H, W, C_per_group, OH, OW, K_per_group, R, S,
    # geometry
    stride_h, stride_w, pad_h, pad_w,
    # strides, in elements
    dy_sn, dy_sk, dy_sh, dy_sw,
    y_sn, y_sk, y_sh, y_sw,
    w_sk, w_sc, w_sr, w_ss,
    dx_sn, dx_sc, dx_sh, dx_sw,
    # meta
    RELU_MASK: tl.constexpr, FLAT_KRS: tl.constexpr, PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """dx = conv2d_input_grad(dy * (y > 0 if RELU_MASK), w).

    Input pixels are split into stride phases (ih + pad_h) % stride_h,
    (iw + pad_w) % stride_w; a phase needs only the filter taps r, s of the
    same residue, so no step is spent on taps that hit no output pixel. The
    reduction runs over (tap, output channel k) as the forward's does over
    (r, s, c): channel blocks per tap, or flat (FLAT_KRS).
    grid (cdiv(N*cdiv(H, sh)*cdiv(W, sw), BLOCK_M), cdiv(C/G, BLOCK_N), G*sh*sw):
    each program computes a BLOCK_M (input pixels of one phase) x BLOCK_N
    (input channels of group G) tile of dx.
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    group = tl.program_id(2) // (stride_h * stride_w)
    phase = tl.program_id(2) % (stride_h * stride_w)
    phase_h = phase // stride_w
    phase_w = phase % stride_w

    # input rows ih with (ih + pad_h) % stride_h == phase_h: ih = first_h + i * stride_h
    first_h = ((phase_h - pad_h) % stride_h + stride_h) % stride_h
    first_w = ((phase_w - pad_w) % stride_w + stride_w) % stride_w
    rows = (H - first_h + stride_h - 1) // stride_h
    cols = (W - first_w + stride_w - 1) // stride_w
    pixels = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pixel_ok = pixels < N * rows * cols
    ih = first_h + (pixels // cols) % rows * stride_h
    iw = first_w + pixels % cols * stride_w
    n = pixels // (cols * rows)

    c_in_group = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    c_ok = c_in_group < C_per_group
    c = group * C_per_group + c_in_group

    # taps of this phase: r = phase_h + j * stride_h, j < taps_h (none when phase_h >= R)
    taps_h = (R - phase_h + stride_h - 1) // stride_h
    taps_w = (S - phase_w + stride_w - 1) // stride_w
    dy_pixel_ptr = dy_ptr + n.to(tl.int64) * dy_sn + group * K_per_group * dy_sk
    y_pixel_ptr = y_ptr + n.to(tl.int64) * y_sn + group * K_per_group * y_sk
    w_c_ptr = w_ptr + group * K_per_group * w_sk + c_in_group * w_sc
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC_DTYPE)
    for block in range(0, _crs_blocks(K_per_group, taps_h, taps_w, BLOCK_K, FLAT_KRS)):
        tap_h, tap_w, k_in_group, krs_ok = _crs_indices(block, K_per_group, taps_h, taps_w, BLOCK_K, FLAT_KRS)
        r = phase_h + tap_h * stride_h
        s = phase_w + tap_w * stride_w
        a = _output_tile_at_input(dy_pixel_ptr, ih, iw, pixel_ok, r, s, k_in_group, krs_ok, pad_h, pad_w,
                                  stride_h, stride_w, OH, OW, dy_sk, dy_sh, dy_sw, FLAT_KRS)
        if RELU_MASK:
            y = _output_tile_at_input(y_pixel_ptr, ih, iw, pixel_ok, r, s, k_in_group, krs_ok, pad_h, pad_w,
                                      stride_h, stride_w, OH, OW, y_sk, y_sh, y_sw, FLAT_KRS)
            a = _relu_masked(a, y, ACC_DTYPE)
        w_ptrs = w_c_ptr[None, :] + (k_in_group * w_sk + r * w_sr + s * w_ss)[:, None]
        b = tl.load(w_ptrs, mask=krs_ok[:, None] & c_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=ACC_DTYPE)

    dx_ptrs = (dx_ptr + n.to(tl.int64) * dx_sn + ih * dx_sh + iw * dx_sw)[:, None] + (c * dx_sc)[None, :]
    tl.store(dx_ptrs, acc.to(dx_ptr.dtype.element_ty), mask=pixel_ok[:, None] & c_ok[None, :])


@triton.jit
def _conv2d_weight_grad_kernel(
    # pointers
    dy_ptr, y_ptr, x_ptr, dw_partial_ptr, db_partial_ptr,
    # sizes
    N, H, W, C_per_group, OH, OW, K_per_group, R, S, groups, splits,
    # geometry
    stride_h, stride_w, pad_h, pad_w,
    # strides, in elements
    dy_sn, dy_sk, dy_sh, dy_sw,
    y_sn, y_sk, y_sh, y_sw,
    x_sn, x_sc, x_sh, x_sw,
    # meta
    RELU_MASK: tl.constexpr, BIAS_GRAD: tl.constexpr, FLAT_CRS: tl.constexpr,
    PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Split-K partial sums of dw = dy'^T @ im2col(x) and db = sum(dy'), dy' = dy * (y > 0 if RELU_MASK).

    The N*OH*OW reduction is cut into ``splits`` contiguous slices; slice j
    writes dw_partial[j, k, (c, r, s)] ([splits, K, C/G*R*S], accumulator type) and, from the
    programs with pid_n == 0, db_partial[j, k] ([splits, K]). No atomics:
    a second pass sums the slices in order.
    grid (cdiv(K/G, BLOCK_M), crs blocks, G*splits): each program computes a
    BLOCK_M (output channels) x BLOCK_N ((r, s, c) of group G) tile over one slice.
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    group = tl.program_id(2) // splits
    split = tl.program_id(2) % splits

    k_in_group = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    k_ok = k_in_group < K_per_group
    k = group * K_per_group + k_in_group
    r, s, c, crs_ok = _crs_indices(pid_n, C_per_group, R, S, BLOCK_N, FLAT_CRS)

    pixel_count = N * OH * OW
    slice_len = tl.cdiv(tl.cdiv(pixel_count, splits), BLOCK_K) * BLOCK_K
    slice_start = split * slice_len
    slice_end = tl.minimum(slice_start + slice_len, pixel_count)

    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC_DTYPE)
    bias_acc = tl.zeros([BLOCK_M], dtype=ACC_DTYPE)
    for start in range(slice_start, slice_end, BLOCK_K):
        pixels = start + tl.arange(0, BLOCK_K)
        pixel_ok = pixels < slice_end
        ow = pixels % OW
        oh = (pixels // OW) % OH
        n = (pixels // (OW * OH)).to(tl.int64)
        mask = k_ok[:, None] & pixel_ok[None, :]
        a = tl.load(dy_ptr + (k * dy_sk)[:, None] + (n * dy_sn + oh * dy_sh + ow * dy_sw)[None, :],
                    mask=mask, other=0.0)
        if RELU_MASK:
            y = tl.load(y_ptr + (k * y_sk)[:, None] + (n * y_sn + oh * y_sh + ow * y_sw)[None, :],
                        mask=mask, other=0.0)
            a = _relu_masked(a, y, ACC_DTYPE)
        x_pixel_ptr = x_ptr + n * x_sn + group * C_per_group * x_sc
        b = _im2col_tile(x_pixel_ptr, oh * stride_h - pad_h, ow * stride_w - pad_w, pixel_ok,
                         r, s, c, crs_ok, H, W, x_sc, x_sh, x_sw, FLAT_CRS)
        acc = tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=ACC_DTYPE)
        if BIAS_GRAD:  # every program sums (a runtime branch here spills); pid_n == 0 stores
            bias_acc += tl.sum(a.to(ACC_DTYPE), axis=1)

    K = K_per_group * groups
    CRS = C_per_group * R * S
    crs = c * (R * S) + r * S + s
    row = split.to(tl.int64) * K + k
    tl.store(dw_partial_ptr + (row * CRS)[:, None] + crs[None, :], acc, mask=k_ok[:, None] & crs_ok[None, :])
    if BIAS_GRAD:
        if pid_n == 0:
            tl.store(db_partial_ptr + row, bias_acc, mask=k_ok)


# ----------------------------------------------------------------------------- launchers


def conv2d_geometry(x_shape, w_shape, stride, padding, groups: int) -> dict:
    """Validate a convolution's shapes; return its sizes as kernel arguments.

    x_shape [N, C, H, W], w_shape [K, C/G, R, S]. Raises ValueError/TypeError
    naming the offending shapes.
    """
    stride_h, stride_w = runtime.int_pair(stride, "conv2d", "stride")
    pad_h, pad_w = runtime.int_pair(padding, "conv2d", "padding")
    if len(x_shape) != 4:
        raise ValueError(f"conv2d: x must be 4-D [N, C_in, H, W], got shape {tuple(x_shape)}")
    if len(w_shape) != 4:
        raise ValueError(f"conv2d: weight must be 4-D [C_out, C_in/groups, R, S], got shape {tuple(w_shape)}")
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"conv2d: groups must be a positive int, got {groups!r}")
    if stride_h < 1 or stride_w < 1 or pad_h < 0 or pad_w < 0:
        raise ValueError(f"conv2d: stride must be >= 1 and padding >= 0, got stride {(stride_h, stride_w)}, "
                         f"padding {(pad_h, pad_w)}")
    N, C, H, W = x_shape
    K, C_per_group, R, S = w_shape
    if C % groups or K % groups:
        raise ValueError(f"conv2d: channels must divide by groups={groups}: x has C_in={C} "
                         f"(shape {tuple(x_shape)}), weight has C_out={K} (shape {tuple(w_shape)})")
    if C_per_group * groups != C:
        raise ValueError(f"conv2d: x shape {tuple(x_shape)} has C_in={C}, but weight shape {tuple(w_shape)} "
                         f"with groups={groups} expects C_in={C_per_group * groups}")
    OH = (H + 2 * pad_h - R) // stride_h + 1
    OW = (W + 2 * pad_w - S) // stride_w + 1
    if min(N, K, C_per_group, R, S) < 1 or OH < 1 or OW < 1:
        raise ValueError(f"conv2d: empty output: x {tuple(x_shape)}, weight {tuple(w_shape)}, stride "
                         f"{(stride_h, stride_w)}, padding {(pad_h, pad_w)} give output {OH}x{OW} "
                         f"with N={N}, C_out={K}")
    return dict(N=N, H=H, W=W, C_per_group=C_per_group, OH=OH, OW=OW, K_per_group=K // groups, R=R, S=S,
                stride_h=stride_h, stride_w=stride_w, pad_h=pad_h, pad_w=pad_w)


def conv2d_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1,
                   padding=0, groups: int = 1, relu: bool = False, precision: str = "ieee",
                   flat_crs: bool | None = None, config: triton.Config | None = None) -> torch.Tensor:
    """y = conv2d(x, weight, bias), then ReLU if ``relu``: x [N, C, H, W], weight [K, C/G, R, S] -> y [N, K, OH, OW].

    precision: "ieee" (exact fp32) or "tf32" (fp32 operands on tensor cores);
    fp16/bf16 always use tensor cores. flat_crs/config override the launch
    choices (tests, benchmarks).
    """
    geometry = conv2d_geometry(x.shape, weight.shape, stride, padding, groups)
    runtime.check_precision("conv2d", precision)
    runtime.check_layer_operands("conv2d", x, weight, bias, weight.shape[0])
    g = geometry
    y = runtime.new_output((g["N"], weight.shape[0], g["OH"], g["OW"]), device=x.device, dtype=x.dtype,
                           memory_format=runtime.memory_format_of(x))
    if flat_crs is None:
        flat_crs = flat_reduction(g["C_per_group"])
    grid = lambda meta: (triton.cdiv(g["N"] * g["OH"] * g["OW"], meta["BLOCK_M"]),  # noqa: E731
                         triton.cdiv(g["K_per_group"], meta["BLOCK_N"]), groups)
    runtime.launch(
        _conv2d_forward_kernel, grid, runtime.CONV_FORWARD, config, runtime.uses_tensor_cores(x.dtype, precision),
        x_ptr=x, w_ptr=weight, b_ptr=bias if bias is not None else weight, y_ptr=y, **geometry,
        **runtime.stride_args("x", x), **runtime.stride_args("w", weight, "kcrs"), **runtime.stride_args("y", y),
        HAS_BIAS=bias is not None, APPLY_RELU=relu, FLAT_CRS=flat_crs, PRECISION=precision,
        ACC_DTYPE=runtime.accumulator_type(x.dtype))
    return y


def conv2d_input_grad(dy: torch.Tensor, weight: torch.Tensor, x_shape, stride=1, padding=0, groups: int = 1,
                      y: torch.Tensor | None = None,
                      memory_format: torch.memory_format = torch.contiguous_format, precision: str = "ieee",
                      flat_krs: bool | None = None, config: triton.Config | None = None) -> torch.Tensor:
    """dx [N, C, H, W] of conv2d from dy [N, K, OH, OW] and weight [K, C/G, R, S].

    y: the forward's ReLU output; when given, dy is masked by y > 0 inside the kernel.
    memory_format: dx's layout (the forward input's).
    """
    g = conv2d_geometry(x_shape, weight.shape, stride, padding, groups)
    runtime.check_precision("conv2d", precision)
    out_shape = (g["N"], weight.shape[0], g["OH"], g["OW"])
    runtime.check_shape_and_dtype("conv2d_input_grad", "dy", dy, out_shape, weight.dtype)
    runtime.check_shape_and_dtype("conv2d_input_grad", "y", y, out_shape, weight.dtype)
    runtime.check_device("conv2d_input_grad", dy=dy, weight=weight, y=y)
    if flat_krs is None:
        flat_krs = flat_reduction(g["K_per_group"])
    dx = runtime.new_output(x_shape, device=dy.device, dtype=dy.dtype, memory_format=memory_format)
    sh, sw = g["stride_h"], g["stride_w"]
    grid = lambda meta: (  # noqa: E731
        triton.cdiv(g["N"] * triton.cdiv(g["H"], sh) * triton.cdiv(g["W"], sw), meta["BLOCK_M"]),
        triton.cdiv(g["C_per_group"], meta["BLOCK_N"]), groups * sh * sw)
    runtime.launch(
        _conv2d_input_grad_kernel, grid, runtime.CONV_INPUT_GRAD, config,
        runtime.uses_tensor_cores(dy.dtype, precision),
        dy_ptr=dy, y_ptr=y if y is not None else dy, w_ptr=weight, dx_ptr=dx, **g,
        **runtime.stride_args("dy", dy, "nkhw"), **runtime.stride_args("y", y if y is not None else dy, "nkhw"),
        **runtime.stride_args("w", weight, "kcrs"), **runtime.stride_args("dx", dx, "nchw"),
        RELU_MASK=y is not None, FLAT_KRS=flat_krs, PRECISION=precision,
        ACC_DTYPE=runtime.accumulator_type(dy.dtype))
    return dx


def weight_grad_splits(pixels: int, output_tiles: int) -> int:
    """Slices of the N*OH*OW reduction: enough programs for ~4 per SM, each slice >= 512 pixels."""
    wanted = triton.cdiv(4 * runtime.streaming_multiprocessors(), output_tiles)
    return max(1, min(wanted, pixels // 512, 256))


def conv2d_weight_grad(dy: torch.Tensor, x: torch.Tensor, weight_shape, stride=1, padding=0, groups: int = 1,
                       y: torch.Tensor | None = None, bias_grad: bool = True, precision: str = "ieee",
                       splits: int | None = None, flat_crs: bool | None = None,
                       config: triton.Config | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dw [K, C/G, R, S], db [K] or None) of conv2d from dy [N, K, OH, OW] and x [N, C, H, W].

    y: the forward's ReLU output; when given, dy is masked by y > 0 inside the
    kernel. The N*OH*OW reduction is split into ``splits`` slices whose fp32
    partials are summed in a fixed order: results are bitwise repeatable.
    """
    g = conv2d_geometry(x.shape, weight_shape, stride, padding, groups)
    runtime.check_precision("conv2d", precision)
    out_shape = (g["N"], weight_shape[0], g["OH"], g["OW"])
    runtime.check_shape_and_dtype("conv2d_weight_grad", "dy", dy, out_shape, x.dtype)
    runtime.check_shape_and_dtype("conv2d_weight_grad", "y", y, out_shape, x.dtype)
    runtime.check_device("conv2d_weight_grad", dy=dy, x=x, y=y)
    K, crs = weight_shape[0], g["C_per_group"] * g["R"] * g["S"]
    if flat_crs is None:
        flat_crs = flat_reduction(g["C_per_group"])
    if splits is None:
        splits = weight_grad_splits(g["N"] * g["OH"] * g["OW"], triton.cdiv(K, 64) * triton.cdiv(crs, 64))
    if not isinstance(splits, int) or splits < 1:
        raise ValueError(f"conv2d_weight_grad: splits must be a positive int, got {splits!r}")
    partial_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    dw_partial = runtime.new_output((splits, K * crs), device=x.device, dtype=partial_dtype)
    db_partial = runtime.new_output((splits, K), device=x.device, dtype=partial_dtype) if bias_grad else dw_partial

    def grid(meta):
        if flat_crs:
            crs_blocks = triton.cdiv(crs, meta["BLOCK_N"])
        else:
            crs_blocks = g["R"] * g["S"] * triton.cdiv(g["C_per_group"], meta["BLOCK_N"])
        return triton.cdiv(g["K_per_group"], meta["BLOCK_M"]), crs_blocks, groups * splits

    runtime.launch(
        _conv2d_weight_grad_kernel, grid, runtime.CONV_WEIGHT_GRAD, config,
        runtime.uses_tensor_cores(x.dtype, precision),
        dy_ptr=dy, y_ptr=y if y is not None else dy, x_ptr=x, dw_partial_ptr=dw_partial, db_partial_ptr=db_partial,
        **g, groups=groups, splits=splits,
        **runtime.stride_args("dy", dy, "nkhw"), **runtime.stride_args("y", y if y is not None else dy, "nkhw"),
        **runtime.stride_args("x", x),
        RELU_MASK=y is not None, BIAS_GRAD=bias_grad, FLAT_CRS=flat_crs, PRECISION=precision,
        ACC_DTYPE=runtime.accumulator_type(x.dtype))
    dw = sum_partials(dw_partial, runtime.new_output(weight_shape, device=x.device, dtype=x.dtype))
    db = sum_partials(db_partial, runtime.new_output((K,), device=x.device, dtype=x.dtype)) if bias_grad else None
    return dw, db
