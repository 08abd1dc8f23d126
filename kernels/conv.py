"""2-D convolution as implicit GEMM: forward (bias + ReLU fused), output grad (ReLU mask + bias grad), input grad,
weight grad.

Notation: x [N, C, H, W], weight [K, C/G, R, S], y [N, K, OH, OW], G groups;
per group the GEMM is (N*OH*OW) x (K/G) x (C/G*R*S). Filter tap (r, s) of
output pixel (oh, ow) reads x at (oh * stride_h - pad_h + r * dilation_h,
ow * stride_w - pad_w + s * dilation_w); pad_h, pad_w are the padding above
and left of x, the padding below and right enters only through OH, OW (so
padding="same" with an odd total needs nothing else). All tensors are indexed
through their strides, so NCHW and channels_last inputs both work; outputs
take the input's memory format, weight gradients the weight's. Accumulation is
fp32 (fp64 for float64 inputs, which exist to run gradcheck in the interpreter).

Speed (read from the SASS, ``experiments/inspect_kernels.py --loop``) rests on:
  - the layer's geometry (channels per group, filter size, stride, padding,
    dilation) is constexpr: AlexNet has five layers, each compiles once, every
    index division in a loop becomes a multiply-shift by a constant, and
    dilation 1 folds away (the same machine code as without dilation);
  - per-row pointers and window origins are computed once, before the loop; a
    step adds one uniform tap offset and checks the window's bounds;
  - with channels_last activations and channels_last (K, R, S, C) weights, both
    operand tiles are contiguous along the channel: vector loads that the
    pipeliner turns into cp.async;
  - the ReLU mask and the bias gradient are one element-wise pass over dy
    (``conv2d_output_grad``), not work repeated inside two GEMM loops; where
    the conv's input is a ReLU's output, the input gradient's epilogue masks
    the dx it writes (``relu_input``) and can sum the bias gradient of the
    conv before from it (``conv2d_input_grad_and_bias_grad``), so the conv
    before needs no pass over its output gradient at all.

The reduction over (r, s, c) runs one of two ways (constexpr ``FLAT_CRS``):
  - channel blocks: each step is one filter tap (r, s) and a block of
    channels, so a channels_last tile row is contiguous memory; used when C/G
    fills a block.
  - flat: each step is BLOCK consecutive (r, s, c) indices, c fastest; for
    few channels (conv1: C=3, C*R*S=363) where channel blocks would be mostly
    padding, for channels_last channels that are whole 16-byte vectors but not
    whole blocks (2012 conv2: 48 of each 64-channel block), and by default in
    the interpreter (fewer interpreted steps). With C a multiple of 8 the flat
    columns are 16-byte channel vectors: each run of a tap's channels is one
    vector load, its mask the bounds of that tap's (h, w) (Triton's axis
    analysis keeps C % 16-aligned runs contiguous and their masks constant), or
    none where every window lies inside x: conv1 on tensor cores runs so as its
    space-to-depth form (``Depth``: 48 channels, 3x3). The weight gradient also
    reduces flat where its plan is modelled faster (``gpu_weight_grad_flat``:
    192 channels per group, whose flat columns fit 192-row tiles).
The input gradient reduces over (tap, output channel) the same two ways.
Tiles need not be powers of two: a side of two powers of two (192 = 128 + 64,
48 = 32 + 16) runs a dot per part sharing the other operand (``block_tail``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from . import checks, runtime, space_to_depth
from .partial_sums import bias_partials, finish_bias_grad, sum_partials

# On a GPU, below this many channels per group the flat (r, s, c) reduction is used.
FLAT_CRS_CHANNELS = 16
# The channel block of the tensor-core tiles (BLOCK_K of the forward, BLOCK_N of the weight gradient's 64-wide
# tiles): channels per group that are not a multiple of it pad every tap's block (``gpu_flat_reduction``).
CHANNEL_BLOCK = 64


def _interpreter_forward_tile(a: dict) -> triton.Config:  # pixels x output channels over (c, r, s)
    return runtime.interpreter_gemm_tile(a["N"] * a["OH"] * a["OW"], a["K_per_group"],
                                         a["C_per_group"] * a["R"] * a["S"])


def _interpreter_input_grad_tile(a: dict) -> triton.Config:  # input pixels of one stride phase x channels
    sh, sw = a["stride_h"], a["stride_w"]
    return runtime.interpreter_gemm_tile(a["N"] * runtime.cdiv(a["H"], sh) * runtime.cdiv(a["W"], sw),
                                         a["C_per_group"],
                                         a["K_per_group"] * runtime.cdiv(a["R"], a["tap_step_h"])
                                         * runtime.cdiv(a["S"], a["tap_step_w"]))


def _interpreter_weight_grad_tile(a: dict) -> triton.Config:  # output channels x (c, r, s) over pixels
    return runtime.interpreter_gemm_tile(a["K_per_group"], a["C_per_group"] * a["R"] * a["S"],
                                         a["N"] * a["OH"] * a["OW"])


def _interpreter_output_grad_tile(a: dict) -> triton.Config:  # every channel, pixels up to 2^20 elements
    block_k = max(16, triton.next_power_of_2(a["K"]))
    return triton.Config({"BLOCK_P": min(max(16, triton.next_power_of_2(a["P"])), (1 << 20) // block_k),
                          "BLOCK_K": block_k, "BLOCKS": 1})


_tile = runtime.gemm_tile
# Two config sets per GEMM kernel (the forward has a third, below), chosen per launch by ``pass_configs``. The
# channel-block path on channels_last activations (the GPU model's layout, every AlexNet layer but conv1) loads
# contiguous channel vectors and takes large tensor-core tiles, largest first; at launch each GPU keeps those
# whose pipeline fits its shared memory at the operand's size (``KernelConfigs.fitting``): 128x256x64 bf16 fits
# sm_80/sm_90 (144 KiB), not a 64 KiB gfx942 workgroup; TF32 takes the BLOCK_K = 32 tiles. The gather path (NCHW
# activations, or the flat reduction of conv1's three channels; and the stride-phase input gradient of a strided
# conv, conv1's) computes more addresses and masks per element: those tiles spilled at 128x128 and above
# (sm_80/sm_90), so it keeps smaller ones. The geometry
# is constexpr, but Triton's autotuning cache tells launches apart by their key arguments (and dtypes) alone:
# the keys name the geometry (``GEOMETRY_KEY``), the batch and the channel strides of an activation and of the
# weight, so that each layer is tuned for itself. The operand whose element size decides which tiles fit shared
# memory: x in the forward, dy in the gradients (of one dtype with the other operand).
_TENSOR_CORE_TILES = (_tile(128, 256, 64, 8, 3), _tile(256, 128, 64, 8, 3), _tile(128, 128, 64, 8, 3),
                      _tile(128, 128, 32, 8, 3))
# A 64-wide tile for the channel counts that 128 and 256 pad: 192 output channels per group in the forward (2012
# conv4, torchvision conv2: a third of a 256-wide tile idle) and 48 input channels per group in the input gradient
# (conv2 of 2012).
_NARROW_TILE = _tile(128, 64, 64, 8, 3)
# 64x64 tiles (4 warps: one warpgroup, wgmma m64) for the 13x13 layers' wave tails: their finer grid fills the SMs'
# rounds (2012 conv3's input gradient: 676 programs of 128x64 are 5.12 rounds of 132 SMs, 1352 of 64x64 are 10.24,
# 11 rounds of half the work). BK 128 halves the loop's overhead per MMA: sm_90 bf16/fp16 issue/tensor at most
# 0.79 (forward) and 0.91 (input gradient) against BK 64's 1.05 and 1.22; BK 64 serves the channel counts BK 128
# pads (192 per group) and TF32 (at most 1.0; BK 128 fits sm_90 only there); sm_80 at most 0.71 (2012 conv1's
# TF32 input gradient, which no training step runs).
_WAVE_TILES = (_tile(64, 64, 128, 4, 3), _tile(64, 64, 64, 4, 4))
_GATHER_TILES = (_tile(128, 64, 32, 8, 3), _tile(64, 64, 32, 8, 3))


@dataclass(frozen=True)
class ConvGeometry:
    """A convolution's sizes as its GEMM kernels' constexprs (the field names are the kernels' parameter names;
    ``kernel_args``): x [N, C, H, W] -> y [N, K, OH, OW] through a [K, C/G, R, S] weight, pad_h / pad_w the padding
    above and left (below and right enters only through OH, OW)."""

    H: int
    W: int
    OH: int
    OW: int
    C_per_group: int
    K_per_group: int
    R: int
    S: int
    stride_h: int
    stride_w: int
    pad_h: int
    pad_w: int
    dilation_h: int
    dilation_w: int

    def kernel_args(self) -> dict[str, int]:
        """The fields as keyword arguments of a conv kernel."""
        return dict(vars(self))  # the fields (dataclasses.asdict deep-copies: microseconds per launch)

    @property
    def window_inside(self) -> bool:
        """Whether every filter window lies inside the input (no padding, the last window ends within it): the
        forward and weight-gradient loops then check no bounds."""
        return (self.pad_h == self.pad_w == 0
                and (self.OH - 1) * self.stride_h + (self.R - 1) * self.dilation_h < self.H
                and (self.OW - 1) * self.stride_w + (self.S - 1) * self.dilation_w < self.W)


GEOMETRY_KEY = tuple(field.name for field in dataclasses.fields(ConvGeometry))


def _configs(tensor_core, cuda_core, interpreter, key, operand, pick=None) -> runtime.KernelConfigs:
    return runtime.KernelConfigs(tensor_core=tensor_core, cuda_core=cuda_core, interpreter=interpreter,
                                 key=(*key, *GEOMETRY_KEY), pick=pick, operand=operand)


# The last element of a weight-gradient tile computed transposed (the kernel's CRS_ROWS) in ``_tile_of``.
CRS_ROWS = "crs rows"


# issue/tensor of the weight-gradient main loop per operand element size (2: bf16/fp16, 4: TF32), kind of loop
# (``weight_grad_loop``) and tensor-core tile (``_tile_of``), for the tiles that fit sm_90 at that
# size: the largest over the channels_last cases of that size and kind in reports/kernels/inspection.csv on sm_90,
# or on sm_80 where that is 1 or more (only TF32's transposed 96x256x32: 1.25 against sm_90's 1.09; every other
# sm_80 loop issues below 1), rounded up; tests/test_configs.py checks it against that table. The
# bounds-checked flat loop (2012 conv2) decodes each column's tap and checks its window per element: it issues
# more. A tile not in it counts as 1.
WEIGHT_GRAD_ISSUE_PER_TENSOR = {
    2: {"channel blocks": {(256, 128, 64): 0.4, (128, 256, 64): 0.57, (256, 64, 64): 0.64, (128, 128, 64): 0.76,
                           (128, 64, 64): 1.18, (128, 128, 32): 0.88, (64, 64, 64): 1.31},
        "flat": {(256, 128, 64): 0.45, (128, 256, 64): 0.6, (256, 64, 64): 0.67, (128, 128, 64): 0.79,
                 (128, 64, 64): 1.27, (128, 128, 32): 0.94, (64, 256, 64): 0.94, (192, 128, 64): 0.65,
                 (192, 128, 32): 0.76, (96, 256, 64, CRS_ROWS): 0.85},
        "flat, bounds checked": {(256, 128, 64): 0.48, (128, 256, 64): 0.7, (256, 64, 64): 0.7,
                                 (128, 128, 64): 0.87, (128, 64, 64): 1.36, (128, 128, 32): 1.02,
                                 (64, 256, 64): 1.31, (192, 128, 64): 0.71, (192, 128, 32): 0.82}},
    4: {"channel blocks": {(128, 128, 64): 0.73, (128, 64, 64): 1.06, (128, 128, 32): 0.84, (64, 64, 64): 1.54},
        "flat": {(128, 128, 64): 0.83, (128, 64, 64): 1.27, (128, 128, 32): 0.93, (192, 128, 32): 0.76,
                 (64, 256, 32): 1.22, (96, 256, 32, CRS_ROWS): 1.25},
        "flat, bounds checked": {(128, 128, 64): 0.94, (128, 64, 64): 1.33, (128, 128, 32): 1.0,
                                 (192, 128, 32): 0.84}}}


def weight_grad_loop(flat: bool, window_inside: bool) -> str:
    """The kind of a weight-gradient main loop (a key of each size's ``WEIGHT_GRAD_ISSUE_PER_TENSOR``): "channel
    blocks", "flat" (every window inside x: no bounds checks; conv1's space-to-depth form) or "flat, bounds
    checked"."""
    return "channel blocks" if not flat else "flat" if window_inside else "flat, bounds checked"


# A DRAM byte in the unit of ``WeightGradWork.time``, one multiply-add of one SM's tensor cores: bf16 MACs per SM
# per second over DRAM bytes per second is 1.1 on an H100 SXM (132 SMs), 0.7 on an A100 SXM (108).
MACS_PER_BYTE = 1.0
# Each split-K slice reduces at least this many pixels; at most this many slices.
MIN_SLICE_PIXELS, MAX_SPLITS = 512, 256
# The most shared memory one block may use on any GPU this project compiles for (sm_90: H100, H200; an A100's
# is 163 KiB): a tile whose pipeline needs more is never launched (``weight_grad_splits``).
SHARED_PER_BLOCK = 232448


@dataclass(frozen=True)
class WeightGradWork:
    """A weight gradient dw [K, C/G, R, S] = dy^T x over ``pixels`` = N*OH*OW, as its launch's tile pick and split
    plan (``weight_grad_plan``) see it: ``time``; ``of`` reads it from the kernel's keyword arguments."""

    pixels: int
    K: int
    K_per_group: int
    C_per_group: int
    R: int
    S: int
    loop: str  # ``weight_grad_loop``
    operand_bytes: int  # dy and x, read once
    element_bytes: int  # of dw, and of dy and x
    partial_bytes: int  # of a split-K partial: fp32, fp64 for float64

    @classmethod
    def of(cls, a: dict) -> WeightGradWork:
        """From a launch's keyword arguments ``a`` (N, the geometry, dy_ptr, x_ptr, FLAT_CRS, WINDOW_INSIDE)."""
        dy, x = a["dy_ptr"], a["x_ptr"]
        return cls(a["N"] * a["OH"] * a["OW"], dy.shape[1], a["K_per_group"], a["C_per_group"], a["R"], a["S"],
                   weight_grad_loop(a["FLAT_CRS"], a["WINDOW_INSIDE"]),
                   dy.numel() * dy.element_size() + x.numel() * x.element_size(), x.element_size(),
                   8 if x.dtype == torch.float64 else 4)

    def time(self, tile: tuple, splits: int, sms: int) -> float:
        """Modelled time of the launch at ``tile`` (BLOCK_M, BLOCK_N, BLOCK_K; ``_tile_of``) with ``splits`` slices on
        ``sms`` SMs, in multiply-adds of one SM's tensor cores: its programs (output tiles x groups x splits) in rounds
        of the SM count (programs resident together share an SM's tensor cores, so waves count SMs, not slots), each its
        tile's MMAs over its slice (padding included; a TF32 one, at 4-byte operands, takes two bf16 ones' time:
        tensor cores run TF32 at half rate) x the loop's issue/tensor at the operands' element size
        (``WEIGHT_GRAD_ISSUE_PER_TENSOR``) where that exceeds 1; or the bytes the launch moves if more; plus the
        partials' round trip through ``sum_partials`` and dw's write."""
        m, n, k = tile[:3]
        crs = self.C_per_group * self.R * self.S
        programs = (self.K // self.K_per_group * runtime.cdiv(self.K_per_group, m)
                    * crs_blocks(self.C_per_group, self.R, self.S, n, self.loop != "channel blocks") * splits)
        steps = runtime.cdiv(runtime.cdiv(self.pixels, splits), k)
        mma = (runtime.cdiv(programs, sms) * steps * m * n * k * (2 if self.element_bytes == 4 else 1)
               * max(1.0, WEIGHT_GRAD_ISSUE_PER_TENSOR.get(self.element_bytes, {}).get(self.loop, {}).get(tile, 1.0)))
        partials = splits * self.K * crs * self.partial_bytes
        return (max(mma, (self.operand_bytes + partials) * MACS_PER_BYTE)
                + (partials + self.K * crs * self.element_bytes) * MACS_PER_BYTE)


@functools.cache
def weight_grad_plan(work: WeightGradWork, tiles: tuple[tuple, ...], sms: int) -> tuple[tuple, int]:
    """(tile, splits) of least ``work.time`` on ``sms`` SMs: each tile with its best split count (slices of at
    least MIN_SLICE_PIXELS pixels, at most MAX_SPLITS); ties go to the earlier tile, then fewer splits."""
    most = max(1, min(work.pixels // MIN_SLICE_PIXELS, MAX_SPLITS))
    return min(((tile, splits) for tile in tiles for splits in range(1, most + 1)),
               key=lambda plan: work.time(*plan, sms))


def _tile_of(config: triton.Config) -> tuple:
    """(BLOCK_M, BLOCK_N, BLOCK_K), and CRS_ROWS after them for a weight-gradient tile computed transposed."""
    tile = config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"], config.kwargs["BLOCK_K"]
    return (*tile, CRS_ROWS) if config.kwargs.get("CRS_ROWS") else tile


# ``_least_time``'s choices per (candidates' id, work, splits, SMs); each entry keeps its candidates alive, so an
# id cannot be reused while it is cached.
_picked: dict[tuple, tuple[tuple[triton.Config, ...], triton.Config]] = {}


def _least_time(candidates: tuple[triton.Config, ...], args: dict) -> triton.Config:
    """The weight-gradient tile of least ``WeightGradWork.time`` at the launch's split count on this GPU's (or the
    ``runtime.target``'s) SMs; ties go to the earlier tile. With the split count that ``weight_grad_splits``
    planned, this is the planned tile wherever that tile fits the GPU's shared memory."""
    work, sms, splits = WeightGradWork.of(args), runtime.streaming_multiprocessors(), args["splits"]
    key = (id(candidates), work, splits, sms)
    entry = _picked.get(key)
    if entry is None or entry[0] is not candidates:
        entry = _picked[key] = (candidates, min(candidates, key=lambda c: work.time(_tile_of(c), splits, sms)))
    return entry[1]


def _least_rounds(candidates: tuple[triton.Config, ...], args: dict) -> triton.Config:
    """The input-gradient tile whose programs, in rounds of this GPU's (or the ``runtime.target``'s) SMs, cover the
    fewest tile elements (BLOCK_M x BLOCK_N each: wave quantisation and channel padding); ties go to the earlier
    tile."""
    sms, sh, sw = runtime.streaming_multiprocessors(), args["stride_h"], args["stride_w"]
    pixels = args["N"] * runtime.cdiv(args["H"], sh) * runtime.cdiv(args["W"], sw)
    groups = args["dx_ptr"].shape[1] // args["C_per_group"]

    def elements(config: triton.Config) -> int:
        m, n = config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"]
        programs = runtime.cdiv(pixels, m) * runtime.cdiv(args["C_per_group"], n) * groups * sh * sw
        return runtime.cdiv(programs, sms) * m * n
    return min(candidates, key=elements)


# Exact fp32 (CUDA cores): 64x64x32 w8 spilled on the channel-block path (channels_last, sm_80/sm_90).
FORWARD_CONFIGS = _configs(_TENSOR_CORE_TILES + (_NARROW_TILE,) + _WAVE_TILES,
                           (_tile(32, 64, 32, 4, 2), _tile(32, 32, 32, 4, 2)), _interpreter_forward_tile,
                           ("N", "x_sc", "w_sc"), "x_ptr")
FORWARD_GATHER_CONFIGS = _configs(_GATHER_TILES, (_tile(64, 64, 32, 8, 2), _tile(32, 64, 32, 4, 2),
                                                  _tile(32, 32, 32, 4, 2)), _interpreter_forward_tile,
                                  ("N", "x_sc", "w_sc"), "x_ptr")
# The flat reduction over channel vectors (conv1 after space-to-depth: 432 = 3 x 3 taps x 48 channels, 96 or 64
# output channels): N = 128 or 64, and 4 warps at 128 x 128 (sm_90: 0.26 issue/tensor at BK 64, 8 warps 0.58 at
# BK 32); 128x128x64 w8 had no loop left on sm_80/sm_90 (7 steps, unrolled), 128x64x64 w4 spilled on sm_80 (bf16),
# 256x128x32 w8 there at TF32. N = 96 (``block_tail``: dots of 64 and 32 columns sharing the x tile) for 2012
# conv1's 96 output channels, which 128 pad by a third: wgmma n64 and n32 both async on sm_90 (wait depth 2); BK 64
# sm_90 0.42 issue/tensor bf16/fp16, 0.35 TF32 (255 registers, no spill; fits sm_90 only), sm_80 0.31 (255
# registers, no spill); BK 32 (TF32 on sm_80: 255 registers, no spill, 0.31) sm_90 0.59 bf16/fp16, 0.43 TF32;
# Triton 3.6 spilled none of the 255-register ones either; at 8 warps 128x96x64 left no loop (unrolled, as
# 128x128x64). 2012 conv2 (1200 = 5 x 5 taps x 48 channels, bounds checked) takes them too (sm_90 bf16: 0.31
# issue/tensor at 128x128x64, 0.84 at 128x64x32). Exact fp32: the channel-block set's CUDA-core tiles (64x64x32 w8
# spilled on sm_90 for conv2).
FORWARD_FLAT_VECTOR_CONFIGS = _configs((_tile(128, 128, 64, 4, 3), _tile(128, 128, 32, 4, 3), _tile(128, 64, 32, 4, 3),
                                        _tile(128, 96, 64, 4, 3), _tile(128, 96, 32, 4, 3)),
                                       FORWARD_CONFIGS.cuda_core,
                                       _interpreter_forward_tile, ("N", "x_sc", "w_sc"), "x_ptr")
_INPUT_GRAD_CUDA_CORE = (_tile(64, 64, 32, 8, 2), _tile(64, 64, 16, 8, 2), _tile(32, 32, 32, 4, 2))
# 48 columns (``block_tail``: dots of 32 and 16 columns sharing the dy tile) for 48 input channels per group (2012
# conv2), which 64 pad by a third: sm_90 bf16 1.05 issue/tensor (64x64x128: 0.71 on a third more columns), wgmma
# wait depth 2; sm_80 0.6; TF32 fits sm_90 only (169 KiB).
INPUT_GRAD_CONFIGS = _configs(_TENSOR_CORE_TILES + (_NARROW_TILE,) + _WAVE_TILES + (_tile(64, 48, 128, 4, 3),),
                              _INPUT_GRAD_CUDA_CORE, _interpreter_input_grad_tile, ("N", "dx_sc", "w_sc"), "dy_ptr")
INPUT_GRAD_GATHER_CONFIGS = _configs((_tile(64, 128, 32, 8, 3), _tile(64, 64, 32, 8, 3)), _INPUT_GRAD_CUDA_CORE,
                                     _interpreter_input_grad_tile, ("N", "dx_sc", "w_sc"), "dy_ptr")
# The input gradient masked by a ReLU's output (``relu_input``): its epilogue holds the x tile's mask beside dx, and
# the 256-wide tiles spilled on sm_80 (80-128 bytes; their loops unchanged), as 64x128x32 did on the gather path
# (NCHW; Triton 3.6, sm_80); the 13x13 layers it serves take the smaller tiles anyway.
INPUT_GRAD_RELU_CONFIGS, INPUT_GRAD_RELU_GATHER_CONFIGS = (
    dataclasses.replace(configs, tensor_core=tuple(c for c in configs.tensor_core if limit not in _tile_of(c)))
    for configs, limit in ((INPUT_GRAD_CONFIGS, 256), (INPUT_GRAD_GATHER_CONFIGS, 128)))
# And summing the gradient of the bias under that ReLU (``conv2d_input_grad_and_bias_grad``): its partial sums split
# the pixels at BLOCK_M, so it is picked, never autotuned (bitwise repeatable; ``_least_rounds``), among candidates
# of one BLOCK_M per list (the partials' rows known before the launch). On tensor cores 128 rows: 128x128x64 w8
# (sm_90 bf16 0.50-0.53 issue/tensor) where its rounds of programs do as much as the narrow tile's (torchvision
# conv4 and conv5: 507 and 338 programs of it, 4 and 3 rounds of 132 SMs), else the narrow tile (128x64x64 w8,
# 0.95-1.0; 147 KiB at TF32, which an A100 fits, where 128x128x64 does not): 2012 conv4's and conv5's 192 input
# channels a group pad to 256 at 128 columns. A 64-row set would lose more than it gains (modelled on an H100, bf16):
# 64x64x128 pads 192 channels a tap at BK 128 (2012 conv4: 40.3 us against the narrow tile's 30.2), 64x64x64 issues
# 1.0-1.15; only torchvision conv5 would gain (64x64x128, 11 rounds: 27.7 us against 30.2).
INPUT_GRAD_RELU_BIAS_CONFIGS = dataclasses.replace(INPUT_GRAD_RELU_CONFIGS,
                                                   tensor_core=(_tile(128, 128, 64, 8, 3), _NARROW_TILE),
                                                   cuda_core=(_tile(64, 64, 32, 8, 2),), pick=_least_rounds)
INPUT_GRAD_RELU_BIAS_GATHER_CONFIGS = dataclasses.replace(INPUT_GRAD_RELU_GATHER_CONFIGS,
                                                          tensor_core=(_tile(64, 64, 32, 8, 3),),
                                                          cuda_core=(_tile(64, 64, 32, 8, 2),), pick=_least_rounds)
# Not autotuned: among the tiles that fit the GPU, the one of least modelled time (``_least_time``) is launched,
# so the split of the pixel reduction, and with it the bits of dw, depend only on the shapes and the GPU, never
# on timing noise (bitwise-repeatable across processes). 256x128x64 at 4 stages (192 KiB) fits sm_90 only: at 3
# stages it spilled 8 bytes on sm_80 (torchvision conv4). 256x64 serves 192-channel layers (conv4, conv5 of
# 2012), 128x64 128 output channels per group (2012 conv5, torchvision conv3; 8 warps: for 2012 conv2's channel
# blocks at 4, 0.89 instead of 1.17 issue/tensor on sm_90, but Triton 3.9 spilled it on sm_80).
_WEIGHT_GRAD_TILES = (_tile(256, 128, 64, 8, 4), _tile(128, 256, 64, 8, 3), _tile(256, 64, 64, 8, 4),
                      _tile(128, 128, 64, 8, 3), _tile(128, 64, 64, 8, 3), _tile(128, 128, 32, 8, 3))
# 64x64x64 (4 warps: one warpgroup) fits 192 output channels per group over channel blocks with no padding
# either way: sm_90 1.31 issue/tensor (bf16) against 256x64's 0.64 on a third more rows, so it wins where its finer
# grid fills the SMs' rounds (the flat 192-row tiles, below, beat both on 2012 conv4 and torchvision conv2).
WEIGHT_GRAD_CONFIGS = _configs(_WEIGHT_GRAD_TILES + (_tile(64, 64, 64, 4, 4),), (_tile(32, 64, 32, 4, 2),),
                               _interpreter_weight_grad_tile, ("N", "splits", "x_sc", "dw_sc"), "dy_ptr",
                               pick=_least_time)
# The flat reduction over channel vectors adds a 64-row tile (one warpgroup: wgmma m64 on sm_90) for torchvision
# conv1's 64 output channels (its space-to-depth form), which 128 rows pad by half: 64x256x64 loops at 0.94
# issue/tensor on sm_90, as 128x128x32 does on twice the rows. Over channel blocks it spilled 8 bytes on sm_80
# (255 registers; flat 250). At 4-byte (TF32) operands it fits no GPU (240 KiB).
# And 192-row tiles (``block_tail``: dots of 128 and 64 rows sharing the x tile) for 192 output channels per group
# (2012 conv4, torchvision conv2 and conv3), whose 64-row tiles are issue-bound (64x64x64 over channel blocks: sm_90
# 1.31 issue/tensor): flat, 1728 or 1600 reduction elements pad to 1792 or 1664 at 128 columns; sm_90 bf16 at
# most 0.71 at BK 64, 0.82 at BK 32 (TF32 only BK 32 fits: 0.84), wgmma wait depth 2. At 64 columns (channel
# blocks) the two dots ran synchronously (wait depth 0) on sm_90. 96 rows (64 + 32) for 2012 conv1's 96 output
# channels are not shipped (transposed they are, below): wgmma needs 64 rows a warpgroup, so the 32-row dot ran
# as mma.sync (HMMA.16816) on sm_90, a third of the MACs on a path not known to reach wgmma's rate (issue/tensor
# counts it at that rate: 96x128x64 w4 0.98, w8 1.21, 96x128x32 w8 1.49); sm_80 0.55 (no spill).
WEIGHT_GRAD_FLAT_VECTOR_CONFIGS = dataclasses.replace(
    WEIGHT_GRAD_CONFIGS, tensor_core=_WEIGHT_GRAD_TILES + (_tile(64, 256, 64, 4, 3), _tile(192, 128, 64, 8, 3),
                                                           _tile(192, 128, 32, 8, 3)))
# Space-to-depth conv1 (the flat loop with every window inside x) adds a tile computed transposed (the kernel's
# CRS_ROWS): 256 (r, s, c) rows x 96 output channels, dots of 64 and 32 columns sharing the x^T tile, so 2012
# conv1's 96 output channels pad to none where the 128-row tiles pad them by a third (wgmma's N may be 32; its M
# is 64 a warpgroup; 432 reduction elements pad to 512 at 256 rows as at 128). sm_90 bf16/fp16 0.85 issue/tensor,
# wgmma n64 + n32 async (wait depth 2), 166 registers; sm_80 0.6, 255 registers, no spill (at 3 stages it spilled
# 32 bytes there: 2 stages, 89 KiB, which no gfx942 workgroup fits). 16-bit operands here (TF32's transposed tile, at
# BK 32, is below; at 128 rows TF32 issued sm_90 1.21, sm_80 1.43, 1095 loop instructions). 128 rows issued more on
# sm_90: 8 warps 1.1 (BK 64), 1.03 (BK 128); 4 warps 0.93 (BK 64, 2 stages; at 3 sm_80 spilled 80 bytes).
WEIGHT_GRAD_WINDOW_INSIDE_CONFIGS = dataclasses.replace(
    WEIGHT_GRAD_FLAT_VECTOR_CONFIGS,
    tensor_core=WEIGHT_GRAD_FLAT_VECTOR_CONFIGS.tensor_core + (triton.Config(
        {"BLOCK_M": 96, "BLOCK_N": 256, "BLOCK_K": 64, "CRS_ROWS": True}, num_warps=8, num_stages=2),))
# At 4-byte (TF32) operands that loop adds 64 rows at BK 32 instead (one warpgroup: wgmma m64; 64x256x64 fits no
# GPU there) for torchvision conv1's 64 output channels, which the 128-row tiles pad by half: 64x256x32 w4, 3 stages,
# 121 KiB on sm_90 (no gfx942 workgroup fits it): 1.211 issue/tensor, 168 registers, no spill, on half the rows of
# 128x128x32 (0.93): about 0.65 of its time; sm_80 0.669, 254 registers, no spill. In a one-off compile 64x128x64
# issued 1.33, 64x256x32 at 8 warps 1.37. And the transposed tile at BK 32 for 2012 conv1's 96 output channels
# (128 rows pad them by a third): 96x256x32 w8, 2 stages, 89 KiB (an A100 fits it, no gfx942 workgroup): sm_90
# 1.09 issue/tensor, 164 registers, wgmma wait depth 2; sm_80 1.25, 255 registers, no spill. Issue-bound on three
# quarters of 128x128x32's MMAs (0.92, tensor-bound): about 0.8 of its time. In a one-off compile 3 stages issued
# 1.08 on sm_90 but 1.32 on sm_80, 4 warps spilled 552 bytes on sm_80, 96x128x32 w4 issued 1.16.
WEIGHT_GRAD_WINDOW_INSIDE_TF32_CONFIGS = dataclasses.replace(
    WEIGHT_GRAD_FLAT_VECTOR_CONFIGS,
    tensor_core=WEIGHT_GRAD_FLAT_VECTOR_CONFIGS.tensor_core + (_tile(64, 256, 32, 4, 3), triton.Config(
        {"BLOCK_M": 96, "BLOCK_N": 256, "BLOCK_K": 32, "CRS_ROWS": True}, num_warps=8, num_stages=2)))
WEIGHT_GRAD_GATHER_CONFIGS = _configs((_tile(64, 64, 16, 8, 3),), (_tile(32, 32, 32, 4, 2),),
                                      _interpreter_weight_grad_tile, ("N", "splits", "x_sc", "dw_sc"), "dy_ptr",
                                      pick=_least_time)


# pass -> (channel blocks on channel vectors, the flat reduction on channel vectors, the gather path)
_CONFIG_SETS = {"forward": (FORWARD_CONFIGS, FORWARD_FLAT_VECTOR_CONFIGS, FORWARD_GATHER_CONFIGS),
                "input_grad": (INPUT_GRAD_CONFIGS, None, INPUT_GRAD_GATHER_CONFIGS),
                "weight_grad": (WEIGHT_GRAD_CONFIGS, WEIGHT_GRAD_FLAT_VECTOR_CONFIGS, WEIGHT_GRAD_GATHER_CONFIGS)}


def pass_configs(kernel_pass: str, activation: torch.Tensor, flat: bool, g: ConvGeometry) -> runtime.KernelConfigs:
    """The config set a pass ("forward", "input_grad", "weight_grad") launches with, given the activation it
    gathers windows from (x; dy for the input gradient) and its reduction order: the large tiles where the
    operand tiles are channel vectors (channels_last activations: channel stride 1), else the gather tiles.
    Channel blocks are vectors; the flat reduction is where its columns are too (channels a multiple of 8:
    16-byte runs; conv1 after space-to-depth, 2012 conv2), but never in the input gradient, which also gathers
    the stride phases of a strided conv; the weight gradient's flat loop with every window inside x (space-to-depth
    conv1) adds a transposed tile at 16-bit operands, a 64-row one at 4-byte ones."""
    vectors, flat_vectors, gather = _CONFIG_SETS[kernel_pass]
    if activation.stride(1) != 1:
        return gather
    if kernel_pass == "input_grad":
        return vectors if not flat and g.stride_h == g.stride_w == 1 else gather
    if not flat:
        return vectors
    if g.C_per_group % 8:
        return gather
    if kernel_pass == "weight_grad" and g.window_inside and activation.element_size() in (2, 4):
        return WEIGHT_GRAD_WINDOW_INSIDE_CONFIGS if activation.element_size() == 2 else \
            WEIGHT_GRAD_WINDOW_INSIDE_TF32_CONFIGS
    return flat_vectors


# The output-gradient pass: [BLOCK_P pixels, BLOCK_K channels] per step, BLOCKS steps of consecutive pixels per
# program (BLOCKS times fewer bias-gradient partial rows: 2012 conv3's 21632 pixels give 43, one ``sum_partials``
# launch, not 338 and two). 8 warps: at 4, Triton 3.9 spilled on sm_80 (NCHW, 243 registers: every element carries
# its own int64 pixel address); element-wise, not autotuned.
_OUTPUT_GRAD_TILE = triton.Config({"BLOCK_P": 64, "BLOCK_K": 64, "BLOCKS": 8}, num_warps=8, num_stages=1)
OUTPUT_GRAD_CONFIGS = runtime.KernelConfigs(tensor_core=(_OUTPUT_GRAD_TILE,), cuda_core=(_OUTPUT_GRAD_TILE,),
                                            interpreter=_interpreter_output_grad_tile, key=())


def gpu_flat_reduction(channels_per_group: int, channel_vectors: bool) -> bool:
    """The GPU path's reduction order: flat for few channels (tensor-core K >= 16), and, where the flat columns
    are channel vectors (``channel_vectors``: channels_last activations in the forward and weight gradient), for
    channels that fill whole 16-byte vectors but not whole ``CHANNEL_BLOCK`` blocks: 2012 conv2's 48 channels
    per group fill 48 of each tap's 64-channel block (1600 reduction elements for 1200: a quarter of the MMAs on
    zeros), flat only its last block (1216)."""
    return channels_per_group < FLAT_CRS_CHANNELS or (channel_vectors and channels_per_group % 8 == 0
                                                      and channels_per_group % CHANNEL_BLOCK != 0)


def flat_reduction(channels_per_group: int, channel_vectors: bool = False) -> bool:
    """Default reduction order: ``gpu_flat_reduction`` on a GPU, and always flat in the interpreter, where
    fewer, larger steps are faster (tests run the channel-block order explicitly)."""
    return runtime.INTERPRETER or gpu_flat_reduction(channels_per_group, channel_vectors)


@triton.constexpr_function
def block_tail(block):
    """The second part of a tile side that is two powers of two (192 = 128 + 64, 48 = 32 + 16: its lowest set
    bit), or 0 for a power of two. Such a tile fits 192 or 48 channels with no padding where one tl.dot (powers
    of two) would pad them to 256 or 64: the kernel runs a dot for each part, sharing the other operand's tile."""
    return block & -block if block & (block - 1) else 0


@triton.jit
def _crs_indices(block, C: tl.constexpr, R, S, BLOCK: tl.constexpr, FLAT_CRS: tl.constexpr):
    """Filter indices (r, s, c, valid) of reduction block ``block`` over (r, s, c).

    Flat: all four are [BLOCK] vectors. Channel blocks: the block is one tap,
    so r and s are scalars; c and valid are [BLOCK]. C and BLOCK are constexpr
    (so is S where the caller's geometry is): divisions are multiply-shifts.
    """
    if FLAT_CRS:
        crs = block * BLOCK + tl.arange(0, BLOCK)
        c = crs % C
        rs = crs // C
        r = rs // S
        s = rs - r * S
        valid = r < R
    else:
        tap = block // tl.cdiv(C, BLOCK)
        c = (block - tap * tl.cdiv(C, BLOCK)) * BLOCK + tl.arange(0, BLOCK)
        r = tap // S
        s = tap - r * S
        if C % BLOCK == 0:
            valid = tl.full([BLOCK], 1, tl.int1)
        else:
            valid = c < C
    return r, s, c, valid


@triton.jit
def _crs_blocks(C: tl.constexpr, R, S, BLOCK: tl.constexpr, FLAT_CRS: tl.constexpr):
    """Number of reduction blocks over (r, s, c): in a kernel, and from Python as ``crs_blocks`` (plain
    arithmetic, so that both can run it; (a + b - 1) // b is what tl.cdiv computes)."""
    if FLAT_CRS:
        return (C * R * S + BLOCK - 1) // BLOCK
    else:
        return R * S * ((C + BLOCK - 1) // BLOCK)


crs_blocks = _crs_blocks.fn  # (C, R, S, BLOCK, FLAT_CRS) -> blocks, for grids and the pick rule


@triton.jit
def _window_tile(row_ptr, h0, w0, r, s, c, c_ok, rows_ok, H, W, sc, sh, sw, FLAT: tl.constexpr,
                 INSIDE: tl.constexpr):
    """Values [P, BLOCK] of an NCHW-indexed tensor at rows (h0 + r, w0 + s), channels c; 0 outside [0, H) x [0, W).

    row_ptr [P]: the tensor at (n, first channel, h0, w0) of each row (computed once per program; may point
    outside the tensor, only read under the mask); h0/w0 [P]: each row's window origin; r, s, c, c_ok: a
    reduction block (``_crs_indices``): scalar r, s (channel blocks) or [BLOCK] vectors (flat). INSIDE: every
    window of the layer lies inside the tensor (``ConvGeometry.window_inside``), so only rows_ok [P] and c_ok mask the
    load (otherwise rows_ok is unused: a row past the end has its origin out of every tap's reach).
    """
    if INSIDE:  # no bounds to check: the mask is loop-invariant along the rows
        ptrs = row_ptr[:, None] + (r * sh + s * sw + c * sc)[None, :]
        mask = rows_ok[:, None] & c_ok[None, :]
    elif FLAT:  # the tap varies along the columns: 2-D coordinates
        h = h0[:, None] + r[None, :]
        w = w0[:, None] + s[None, :]
        inside = (h >= 0) & (h < H) & (w >= 0) & (w < W)
        ptrs = row_ptr[:, None] + (r * sh + s * sw + c * sc)[None, :]
        mask = c_ok[None, :] & inside
    else:  # one tap: a uniform offset for every row
        h = h0 + r
        w = w0 + s
        row_ok = (h >= 0) & (h < H) & (w >= 0) & (w < W)
        ptrs = (row_ptr + (r * sh + s * sw))[:, None] + (c * sc)[None, :]
        mask = row_ok[:, None] & c_ok[None, :]
    return tl.load(ptrs, mask=mask, other=0.0)


@triton.jit
def _first_tap(phase, R: tl.constexpr, stride: tl.constexpr, dilation: tl.constexpr, tap_step: tl.constexpr):
    """The input gradient's first filter tap of a stride phase: the least r with r * dilation % stride == phase
    (the phase's next taps follow every ``tap_step``), or R (no tap) when no r has that residue."""
    if dilation == 1:
        first = phase
    else:  # r and r + tap_step have the same residue: the least r with it, if any, is below tap_step
        first = R
        for r in tl.static_range(tap_step):
            first = tl.where(r * dilation % stride == phase, r, first)
    return first


@triton.jit
def _store_output(acc, y_ptr, b_ptr, n, oh, ow, pixel_ok, k, k_ok, b_sk, y_sn, y_sc, y_sh, y_sw,
                  HAS_BIAS: tl.constexpr, APPLY_RELU: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """y = relu?(acc + b): the forward's output tile acc [P, BLOCK] at pixels (n, oh, ow) [P] (pixel_ok [P]) and
    output channels k [BLOCK] (k_ok [BLOCK]); b rounded to y's dtype first (an fp32 master bias of a 16-bit y: the
    value autocast's cast would give)."""
    if HAS_BIAS:
        b = tl.load(b_ptr + k * b_sk, mask=k_ok, other=0.0).to(y_ptr.dtype.element_ty)
        acc += b.to(ACC_DTYPE)[None, :]
    if APPLY_RELU:
        acc = tl.maximum(acc, 0.0)
    y_ptrs = (y_ptr + n.to(tl.int64) * y_sn + oh * y_sh + ow * y_sw)[:, None] + (k * y_sc)[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=pixel_ok[:, None] & k_ok[None, :])


@triton.jit
def _conv2d_forward_kernel(
    # pointers
    x_ptr, w_ptr, b_ptr, y_ptr,
    # sizes (the batch; the rest of the geometry is specialised below)
    N,
    # strides, in elements
    x_sn, x_sc, x_sh, x_sw,
    w_sk, w_sc, w_sr, w_ss,
    b_sk,
    y_sn, y_sc, y_sh, y_sw,
    # geometry, specialised per layer
    H: tl.constexpr, W: tl.constexpr, OH: tl.constexpr, OW: tl.constexpr,
    C_per_group: tl.constexpr, K_per_group: tl.constexpr, R: tl.constexpr, S: tl.constexpr,
    stride_h: tl.constexpr, stride_w: tl.constexpr, pad_h: tl.constexpr, pad_w: tl.constexpr,
    dilation_h: tl.constexpr, dilation_w: tl.constexpr,
    # meta
    HAS_BIAS: tl.constexpr, APPLY_RELU: tl.constexpr, FLAT_CRS: tl.constexpr, WINDOW_INSIDE: tl.constexpr,
    PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """y = relu?(conv2d(x, w) + b).

    grid (cdiv(N*OH*OW, BLOCK_M), cdiv(K/G, BLOCK_N), G): each program computes
    a BLOCK_M (output pixels) x BLOCK_N (output channels of group G; two powers
    of two: ``block_tail``) tile.
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    group = tl.program_id(2)

    pixels = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    ow = pixels % OW
    oh = (pixels // OW) % OH
    n = pixels // (OW * OH)
    # window origins; a pixel past the end gets one below every tap's reach, so its row is always masked
    ih0 = tl.where(pixels < N * OH * OW, oh * stride_h - pad_h, -dilation_h * (R - 1) - 1)
    iw0 = ow * stride_w - pad_w
    x_row_ptr = x_ptr + n.to(tl.int64) * x_sn + group * C_per_group * x_sc + ih0 * x_sh + iw0 * x_sw

    # output channels: BLOCK_N = HEAD_N + TAIL_N columns, a dot each (``block_tail``), sharing the x window tile
    TAIL_N: tl.constexpr = block_tail(BLOCK_N)
    HEAD_N: tl.constexpr = BLOCK_N - TAIL_N
    k_in_group = pid_n * BLOCK_N + tl.arange(0, HEAD_N)
    k_ok = k_in_group < K_per_group
    k = group * K_per_group + k_in_group
    w_k_ptr = w_ptr + k * w_sk
    acc = tl.zeros([BLOCK_M, HEAD_N], dtype=ACC_DTYPE)
    if TAIL_N > 0:
        k_tail_in_group = pid_n * BLOCK_N + HEAD_N + tl.arange(0, TAIL_N)
        k_tail_ok = k_tail_in_group < K_per_group
        k_tail = group * K_per_group + k_tail_in_group
        w_k_tail_ptr = w_ptr + k_tail * w_sk
        acc_tail = tl.zeros([BLOCK_M, TAIL_N], dtype=ACC_DTYPE)

    for block in range(0, _crs_blocks(C_per_group, R, S, BLOCK_K, FLAT_CRS)):
        r, s, c, crs_ok = _crs_indices(block, C_per_group, R, S, BLOCK_K, FLAT_CRS)
        a = _window_tile(x_row_ptr, ih0, iw0, r * dilation_h, s * dilation_w, c, crs_ok, pixels < N * OH * OW, H, W,
                         x_sc, x_sh, x_sw, FLAT_CRS, WINDOW_INSIDE)
        w_offsets = c * w_sc + r * w_sr + s * w_ss
        b = tl.load(w_k_ptr[None, :] + w_offsets[:, None], mask=crs_ok[:, None] & k_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=ACC_DTYPE)
        if TAIL_N > 0:
            b_tail = tl.load(w_k_tail_ptr[None, :] + w_offsets[:, None], mask=crs_ok[:, None] & k_tail_ok[None, :],
                             other=0.0)
            acc_tail = tl.dot(a, b_tail, acc_tail, input_precision=PRECISION, out_dtype=ACC_DTYPE)

    pixel_ok = pixels < N * OH * OW
    _store_output(acc, y_ptr, b_ptr, n, oh, ow, pixel_ok, k, k_ok, b_sk, y_sn, y_sc, y_sh, y_sw, HAS_BIAS,
                  APPLY_RELU, ACC_DTYPE)
    if TAIL_N > 0:
        _store_output(acc_tail, y_ptr, b_ptr, n, oh, ow, pixel_ok, k_tail, k_tail_ok, b_sk, y_sn, y_sc, y_sh, y_sw,
                      HAS_BIAS, APPLY_RELU, ACC_DTYPE)


@triton.jit
def _conv2d_output_grad_kernel(
    # pointers
    dy_ptr, y_ptr, out_ptr, db_partial_ptr,
    # sizes
    P, K, OH, OW,
    # strides, in elements
    dy_sn, dy_sk, dy_sh, dy_sw,
    y_sn, y_sk, y_sh, y_sw,
    out_sn, out_sk, out_sh, out_sw,
    # meta
    RELU_MASK: tl.constexpr, BIAS_GRAD: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr, BLOCKS: tl.constexpr,
):
    """out = dy * (y > 0) (RELU_MASK) and db_partial[i, k] = sum of that over program i's pixels (BIAS_GRAD).

    dy, y, out: [N, K, OH, OW]; P = N*OH*OW; db_partial: [cdiv(P, BLOCK_P * BLOCKS), K], accumulator type. A
    pointer its pass does not use is None (y and out without RELU_MASK, db_partial without BIAS_GRAD).
    grid (cdiv(P, BLOCK_P * BLOCKS), cdiv(K, BLOCK_K)): each program handles BLOCKS consecutive blocks of BLOCK_P
    pixels x BLOCK_K channels, one after another.
    """
    k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    db = tl.zeros([BLOCK_K], dtype=ACC_DTYPE)
    for block in range(tl.program_id(0) * BLOCKS, tl.program_id(0) * BLOCKS + BLOCKS):
        pixels = block * BLOCK_P + tl.arange(0, BLOCK_P)
        ow = pixels % OW
        oh = (pixels // OW) % OH
        n = (pixels // (OW * OH)).to(tl.int64)
        mask = (pixels < P)[:, None] & (k < K)[None, :]
        dy = tl.load(dy_ptr + (n * dy_sn + oh * dy_sh + ow * dy_sw)[:, None] + (k * dy_sk)[None, :], mask=mask,
                     other=0.0)
        if RELU_MASK:
            y = tl.load(y_ptr + (n * y_sn + oh * y_sh + ow * y_sw)[:, None] + (k * y_sk)[None, :], mask=mask,
                        other=0.0)
            dy = tl.where(y.to(ACC_DTYPE) > 0.0, dy, 0.0).to(dy.dtype)
            tl.store(out_ptr + (n * out_sn + oh * out_sh + ow * out_sw)[:, None] + (k * out_sk)[None, :], dy,
                     mask=mask)
        if BIAS_GRAD:
            db += tl.sum(dy.to(ACC_DTYPE), axis=0)
    if BIAS_GRAD:
        tl.store(db_partial_ptr + tl.program_id(0).to(tl.int64) * K + k, db, mask=k < K)


@triton.jit
def _conv2d_input_grad_kernel(
    # pointers
    dy_ptr, w_ptr, dx_ptr, x_ptr, bias_partial_ptr,
    # sizes (the batch; the rest of the geometry is specialised below)
    N,
    # strides, in elements
    dy_sn, dy_sk, dy_sh, dy_sw,
    w_sk, w_sc, w_sr, w_ss,
    dx_sn, dx_sc, dx_sh, dx_sw,
    x_sn, x_sc, x_sh, x_sw,
    # geometry, specialised per layer
    H: tl.constexpr, W: tl.constexpr, OH: tl.constexpr, OW: tl.constexpr,
    C_per_group: tl.constexpr, K_per_group: tl.constexpr, R: tl.constexpr, S: tl.constexpr,
    stride_h: tl.constexpr, stride_w: tl.constexpr, pad_h: tl.constexpr, pad_w: tl.constexpr,
    dilation_h: tl.constexpr, dilation_w: tl.constexpr, tap_step_h: tl.constexpr, tap_step_w: tl.constexpr,
    # meta
    INPUT_RELU: tl.constexpr, BIAS_GRAD: tl.constexpr,
    FLAT_KRS: tl.constexpr, PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """dx = conv2d_input_grad(dy, w) (dy already ReLU-masked: ``conv2d_output_grad``), and with INPUT_RELU masked by
    x > 0, x the forward input (None otherwise): where x is a ReLU's output, the gradient of that ReLU's input.
    BIAS_GRAD (with INPUT_RELU): also bias_partial [cdiv(N*cdiv(H, sh)*cdiv(W, sw), BLOCK_M) * sh*sw, C] (fp32, fp64
    for float64): row pid_m * sh*sw + phase = this program's dx (as stored) summed over its pixels, the partial sums
    of the gradient of the bias that conv before added under its ReLU.

    Input pixels are split into stride phases (ih + pad_h) % stride_h,
    (iw + pad_w) % stride_w; row ih takes filter row r from output row
    oh = (ih + pad_h - r * dilation_h) / stride_h where that divides, so a
    phase needs only the rows r with r * dilation_h of its residue: r =
    first_tap_h + tap_h * tap_step_h (``_first_tap``; tap_step_h =
    stride_h / gcd(stride_h, dilation_h), none when no r has the residue),
    and tap tap_h reaches oh = oh0 - tap_h * dilation_h / gcd, oh0 that of
    first_tap_h. Dilation 1: first_tap_h = phase_h, tap_step_h = stride_h.
    Columns likewise. The reduction runs over (tap, output channel k) as the
    forward's does over (r, s, c): channel blocks per tap, or flat (FLAT_KRS).
    grid (cdiv(N*cdiv(H, sh)*cdiv(W, sw), BLOCK_M), cdiv(C/G, BLOCK_N), G*sh*sw):
    each program computes a BLOCK_M (input pixels of one phase) x BLOCK_N
    (input channels of group G; two powers of two: ``block_tail``) tile of dx.
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    group = tl.program_id(2) // (stride_h * stride_w)
    phase = tl.program_id(2) % (stride_h * stride_w)
    phase_h = phase // stride_w
    phase_w = phase % stride_w
    first_tap_h = _first_tap(phase_h, R, stride_h, dilation_h, tap_step_h)
    first_tap_w = _first_tap(phase_w, S, stride_w, dilation_w, tap_step_w)

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
    # past the end: beyond every tap's reach, never in [0, OH)
    oh0 = tl.where(pixel_ok, (ih + pad_h - first_tap_h * dilation_h) // stride_h, OH + dilation_h * (R - 1) + 1)
    ow0 = (iw + pad_w - first_tap_w * dilation_w) // stride_w
    dy_row_ptr = dy_ptr + n.to(tl.int64) * dy_sn + group * K_per_group * dy_sk + oh0 * dy_sh + ow0 * dy_sw

    # input channels: BLOCK_N = HEAD_N + TAIL_N columns, a dot each (``block_tail``), sharing the dy tile
    TAIL_N: tl.constexpr = block_tail(BLOCK_N)
    HEAD_N: tl.constexpr = BLOCK_N - TAIL_N
    w_tap_ptr = w_ptr + group * K_per_group * w_sk + first_tap_h * w_sr + first_tap_w * w_ss
    c_in_group = pid_n * BLOCK_N + tl.arange(0, HEAD_N)
    c_ok = c_in_group < C_per_group
    w_c_ptr = w_tap_ptr + c_in_group * w_sc
    acc = tl.zeros([BLOCK_M, HEAD_N], dtype=ACC_DTYPE)
    if TAIL_N > 0:
        c_tail_in_group = pid_n * BLOCK_N + HEAD_N + tl.arange(0, TAIL_N)
        c_tail_ok = c_tail_in_group < C_per_group
        w_c_tail_ptr = w_tap_ptr + c_tail_in_group * w_sc
        acc_tail = tl.zeros([BLOCK_M, TAIL_N], dtype=ACC_DTYPE)

    # taps of this phase: r = first_tap_h + j * tap_step_h, j < taps_h (none when first_tap_h >= R)
    taps_h = (R - first_tap_h + tap_step_h - 1) // tap_step_h
    taps_w = (S - first_tap_w + tap_step_w - 1) // tap_step_w
    for block in range(0, _crs_blocks(K_per_group, taps_h, taps_w, BLOCK_K, FLAT_KRS)):
        tap_h, tap_w, k_in_group, krs_ok = _crs_indices(block, K_per_group, taps_h, taps_w, BLOCK_K, FLAT_KRS)
        # dy at (oh0 - tap_h * dilation_h / gcd, ...): the window tile with negated tap offsets
        a = _window_tile(dy_row_ptr, oh0, ow0, -tap_h * (dilation_h * tap_step_h // stride_h),
                         -tap_w * (dilation_w * tap_step_w // stride_w), k_in_group, krs_ok, pixel_ok, OH, OW, dy_sk,
                         dy_sh, dy_sw, FLAT_KRS, False)
        w_offsets = k_in_group * w_sk + tap_h * tap_step_h * w_sr + tap_w * tap_step_w * w_ss
        b = tl.load(w_c_ptr[None, :] + w_offsets[:, None], mask=krs_ok[:, None] & c_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=ACC_DTYPE)
        if TAIL_N > 0:
            b_tail = tl.load(w_c_tail_ptr[None, :] + w_offsets[:, None], mask=krs_ok[:, None] & c_tail_ok[None, :],
                             other=0.0)
            acc_tail = tl.dot(a, b_tail, acc_tail, input_precision=PRECISION, out_dtype=ACC_DTYPE)

    dx_row_ptr = dx_ptr + n.to(tl.int64) * dx_sn + ih * dx_sh + iw * dx_sw + group * C_per_group * dx_sc
    x_row_ptr = x_ptr  # None unless INPUT_RELU
    if INPUT_RELU:
        x_row_ptr = x_ptr + n.to(tl.int64) * x_sn + ih * x_sh + iw * x_sw + group * C_per_group * x_sc
    partial_row_ptr = bias_partial_ptr  # None unless BIAS_GRAD
    if BIAS_GRAD:  # rows of C = C_per_group * groups channels
        channels = C_per_group * (tl.num_programs(2) // (stride_h * stride_w))
        partial_row_ptr = bias_partial_ptr + (pid_m * stride_h * stride_w + phase) * channels + group * C_per_group
    _store_input_grad(acc, dx_row_ptr, x_row_ptr, partial_row_ptr, c_in_group, c_ok, pixel_ok, dx_sc, x_sc,
                      INPUT_RELU, BIAS_GRAD, ACC_DTYPE)
    if TAIL_N > 0:
        _store_input_grad(acc_tail, dx_row_ptr, x_row_ptr, partial_row_ptr, c_tail_in_group, c_tail_ok, pixel_ok,
                          dx_sc, x_sc, INPUT_RELU, BIAS_GRAD, ACC_DTYPE)


@triton.jit
def _store_input_grad(acc, dx_row_ptr, x_row_ptr, partial_row_ptr, c, c_ok, pixel_ok, dx_sc, x_sc,
                      INPUT_RELU: tl.constexpr, BIAS_GRAD: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """Store acc [pixels, channels c] as dx rows, rounded to dx's dtype; with INPUT_RELU, 0 where x <= 0: two masked
    stores, not a select on dx, which ptxas took for a read of the wgmma accumulator inside the pipelined loop and
    so serialised every wgmma of it (sm_90: wait depth 0, 64x64x128 181 -> 199 loop instructions). BIAS_GRAD: the
    stored dx summed over the pixels into partial_row_ptr[c]."""
    mask = pixel_ok[:, None] & c_ok[None, :]
    dx_ptrs = dx_row_ptr[:, None] + (c * dx_sc)[None, :]
    dx = acc.to(dx_row_ptr.dtype.element_ty)
    if INPUT_RELU:
        positive = tl.load(x_row_ptr[:, None] + (c * x_sc)[None, :], mask=mask, other=0.0).to(ACC_DTYPE) > 0.0
        tl.store(dx_ptrs, tl.zeros_like(dx), mask=mask & ~positive)
        mask = mask & positive
    tl.store(dx_ptrs, dx, mask=mask)
    if BIAS_GRAD:
        kept = tl.where(mask, dx.to(partial_row_ptr.dtype.element_ty), 0.0)
        tl.store(partial_row_ptr + c, tl.sum(kept, axis=0), mask=c_ok)


@triton.jit
def _dy_tile(stepped_ptrs, row_ptr, rows_ok, offsets, pixels_ok, PIXELS_FLAT: tl.constexpr):
    """dy [rows, pixels] of the weight gradient: at ``stepped_ptrs`` [rows, pixels] (PIXELS_FLAT: dense
    channels_last dy, pointers the caller steps) or row_ptr [rows] + offsets [pixels]; 0 where rows_ok [rows] or
    pixels_ok [pixels] is false."""
    mask = rows_ok[:, None] & pixels_ok[None, :]
    if PIXELS_FLAT:
        return tl.load(stepped_ptrs, mask=mask, other=0.0)
    else:
        return tl.load(row_ptr[:, None] + offsets[None, :], mask=mask, other=0.0)


@triton.jit
def _weight_grad_zeros(ROWS: tl.constexpr, COLUMNS: tl.constexpr, ACC_DTYPE: tl.constexpr, CRS_ROWS: tl.constexpr):
    """A zero accumulator of the weight gradient: [ROWS (output channels), COLUMNS ((r, s, c))], or its transpose
    where CRS_ROWS."""
    if CRS_ROWS:
        return tl.zeros([COLUMNS, ROWS], dtype=ACC_DTYPE)
    else:
        return tl.zeros([ROWS, COLUMNS], dtype=ACC_DTYPE)


@triton.jit
def _weight_grad_dot(dy, x, acc, PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr, CRS_ROWS: tl.constexpr):
    """acc + dy [rows, pixels] @ x [pixels, columns], or where CRS_ROWS acc + x^T @ dy^T (acc transposed)."""
    if CRS_ROWS:
        return tl.dot(tl.trans(x), tl.trans(dy), acc, input_precision=PRECISION, out_dtype=ACC_DTYPE)
    else:
        return tl.dot(dy, x, acc, input_precision=PRECISION, out_dtype=ACC_DTYPE)


@triton.jit
def _store_weight_grad(dw_ptr, acc, k_offsets, k_ok, crs_offsets, crs_ok, CRS_ROWS: tl.constexpr):
    """Store acc [rows (output channels at k_offsets), columns ((r, s, c) at crs_offsets)] at dw_ptr, or its
    transpose where CRS_ROWS."""
    if CRS_ROWS:
        tl.store(dw_ptr + k_offsets[None, :] + crs_offsets[:, None], acc, mask=k_ok[None, :] & crs_ok[:, None])
    else:
        tl.store(dw_ptr + k_offsets[:, None] + crs_offsets[None, :], acc, mask=k_ok[:, None] & crs_ok[None, :])


@triton.jit
def _conv2d_weight_grad_kernel(
    # pointers
    dy_ptr, x_ptr, dw_partial_ptr,
    # sizes (the batch and the split count; the geometry is specialised below)
    N, splits,
    # strides, in elements (dw: the weight's own layout, dense; a slice every dw_split_stride)
    dy_sn, dy_sk, dy_sh, dy_sw,
    x_sn, x_sc, x_sh, x_sw,
    dw_sk, dw_sc, dw_sr, dw_ss, dw_split_stride,
    # geometry, specialised per layer
    H: tl.constexpr, W: tl.constexpr, OH: tl.constexpr, OW: tl.constexpr,
    C_per_group: tl.constexpr, K_per_group: tl.constexpr, R: tl.constexpr, S: tl.constexpr,
    stride_h: tl.constexpr, stride_w: tl.constexpr, pad_h: tl.constexpr, pad_w: tl.constexpr,
    dilation_h: tl.constexpr, dilation_w: tl.constexpr,
    # meta
    DY_PIXELS_FLAT: tl.constexpr, X_PIXELS_FLAT: tl.constexpr,
    FLAT_CRS: tl.constexpr, WINDOW_INSIDE: tl.constexpr, PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, CRS_ROWS: tl.constexpr = False,
):
    """Split-K partial sums of dw = dy^T @ im2col(x) (dy already ReLU-masked: ``conv2d_output_grad``).

    The N*OH*OW reduction is cut into ``splits`` contiguous slices; slice j
    writes dw_partial[j] ([splits, K*C/G*R*S], accumulator type, each slice in
    the weight's own element order). No atomics: a second pass sums the slices
    in order.
    grid (cdiv(K/G, BLOCK_M), crs blocks, G*splits): each program computes a
    BLOCK_M (output channels) x BLOCK_N ((r, s, c) of group G) tile over one slice;
    BLOCK_M may be two powers of two (``block_tail``). CRS_ROWS: the tile is computed transposed, dw^T [BLOCK_N,
    BLOCK_M] = im2col(x)^T @ dy, output channels on the MMA's N side (wgmma's N may be 32; its M is 64 a
    warpgroup), the same operand tiles read and the same partials written.
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    group = tl.program_id(2) // splits
    split = tl.program_id(2) % splits

    # output channels: BLOCK_M = HEAD_M + TAIL_M rows, a dot each (``block_tail``), sharing the x tile
    TAIL_M: tl.constexpr = block_tail(BLOCK_M)
    HEAD_M: tl.constexpr = BLOCK_M - TAIL_M
    k_in_group = pid_m * BLOCK_M + tl.arange(0, HEAD_M)
    k_ok = k_in_group < K_per_group
    k = group * K_per_group + k_in_group
    r, s, c, crs_ok = _crs_indices(pid_n, C_per_group, R, S, BLOCK_N, FLAT_CRS)
    dy_k_ptr = dy_ptr + k * dy_sk
    x_group_ptr = x_ptr + group * C_per_group * x_sc

    pixel_count = N * OH * OW
    slice_len = tl.cdiv(tl.cdiv(pixel_count, splits), BLOCK_K) * BLOCK_K
    slice_start = split * slice_len
    slice_end = tl.minimum(slice_start + slice_len, pixel_count)

    first = (slice_start + tl.arange(0, BLOCK_K)).to(tl.int64)
    # dense channels_last dy (DY_PIXELS_FLAT; else unused): pixel p sits at p * dy_sw; the pointers step BLOCK_K
    a_ptrs = dy_k_ptr[:, None] + (first * dy_sw)[None, :]
    acc = _weight_grad_zeros(HEAD_M, BLOCK_N, ACC_DTYPE, CRS_ROWS)
    if TAIL_M > 0:
        k_tail_in_group = pid_m * BLOCK_M + HEAD_M + tl.arange(0, TAIL_M)
        k_tail_ok = k_tail_in_group < K_per_group
        k_tail = group * K_per_group + k_tail_in_group
        dy_k_tail_ptr = dy_ptr + k_tail * dy_sk
        a_tail_ptrs = dy_k_tail_ptr[:, None] + (first * dy_sw)[None, :]
        acc_tail = _weight_grad_zeros(TAIL_M, BLOCK_N, ACC_DTYPE, CRS_ROWS)
    if X_PIXELS_FLAT:  # dense channels_last x of a same-size stride-1 conv, channel blocks: likewise
        b_ptrs = (x_group_ptr + first * x_sw + ((r * dilation_h - pad_h) * x_sh + (s * dilation_w - pad_w) * x_sw)
                  )[:, None] + (c * x_sc)[None, :]
    for start in range(slice_start, slice_end, BLOCK_K):
        pixels = start + tl.arange(0, BLOCK_K)
        # pixel indices are never negative: unsigned (a division by a constant is a multiply-high and a shift)
        rows = pixels.to(tl.uint32) // OW
        images = rows // OH
        ow = (pixels.to(tl.uint32) - rows * OW).to(tl.int32)
        oh = (rows - images * OH).to(tl.int32)
        n = images.to(tl.int64)
        dy_offsets = n * dy_sn + oh * dy_sh + ow * dy_sw
        a = _dy_tile(a_ptrs, dy_k_ptr, k_ok, dy_offsets, pixels < slice_end, DY_PIXELS_FLAT)
        if DY_PIXELS_FLAT:
            a_ptrs += BLOCK_K * dy_sw
        if WINDOW_INSIDE:  # rows past the slice are masked by rows_ok (``_window_tile``)
            ih0 = oh * stride_h
        else:
            ih0 = tl.where(pixels < slice_end, oh * stride_h - pad_h, -dilation_h * (R - 1) - 1)
        iw0 = ow * stride_w - pad_w
        if X_PIXELS_FLAT:
            ih = ih0 + r * dilation_h
            iw = iw0 + s * dilation_w
            row_ok = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            b = tl.load(b_ptrs, mask=row_ok[:, None] & crs_ok[None, :], other=0.0)
            b_ptrs += BLOCK_K * x_sw
        else:
            b = _window_tile(x_group_ptr + (n * x_sn + (ih0 * x_sh + iw0 * x_sw)), ih0, iw0, r * dilation_h,
                             s * dilation_w, c, crs_ok, pixels < slice_end, H, W, x_sc, x_sh, x_sw, FLAT_CRS,
                             WINDOW_INSIDE)
        acc = _weight_grad_dot(a, b, acc, PRECISION, ACC_DTYPE, CRS_ROWS)
        if TAIL_M > 0:
            a_tail = _dy_tile(a_tail_ptrs, dy_k_tail_ptr, k_tail_ok, dy_offsets, pixels < slice_end, DY_PIXELS_FLAT)
            if DY_PIXELS_FLAT:
                a_tail_ptrs += BLOCK_K * dy_sw
            acc_tail = _weight_grad_dot(a_tail, b, acc_tail, PRECISION, ACC_DTYPE, CRS_ROWS)

    dw_slice_ptr = dw_partial_ptr + split.to(tl.int64) * dw_split_stride
    crs_offsets = c * dw_sc + r * dw_sr + s * dw_ss
    _store_weight_grad(dw_slice_ptr, acc, k * dw_sk, k_ok, crs_offsets, crs_ok, CRS_ROWS)
    if TAIL_M > 0:
        _store_weight_grad(dw_slice_ptr, acc_tail, k_tail * dw_sk, k_tail_ok, crs_offsets, crs_ok, CRS_ROWS)


# ----------------------------------------------------------------------------- launchers


PADDING_STRINGS = ("valid", "same")


def _padding_before_after(padding, kernel: tuple[int, int], dilation: tuple[int, int], stride: tuple[int, int]
                          ) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) padding: ints, a pair, "valid" (none) or "same" (PyTorch's rule:
    dilation * (kernel - 1) in all, the odd one after; stride 1 only)."""
    if isinstance(padding, str):
        if padding not in PADDING_STRINGS:
            raise checks.ArgumentError(f"conv2d: padding must be an int, a pair of ints or one of {PADDING_STRINGS}, "
                                       f"got {padding!r}")
        if padding == "valid":
            return (0, 0), (0, 0)
        if stride != (1, 1):
            raise checks.ArgumentError(f"conv2d: padding='same' is not supported for strided convolutions (stride "
                                       f"{stride}), as in PyTorch; give the padding as ints")
        totals = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
        return tuple((total // 2, total - total // 2) for total in totals)
    pad_h, pad_w = checks.int_pair(padding, "conv2d", "padding")
    if pad_h < 0 or pad_w < 0:
        raise checks.ArgumentError(f"conv2d: padding must be >= 0, got {(pad_h, pad_w)}")
    return (pad_h, pad_h), (pad_w, pad_w)


# Validated geometries by their arguments: the public op, its space-to-depth test and the launchers (forward and
# both gradients) ask for the same layer's geometry, each step. Bounded; invalid arguments are never cached.
_GEOMETRIES: dict[tuple, ConvGeometry] = {}
_GEOMETRIES_KEPT = 4096


def conv2d_geometry(x_shape, w_shape, stride, padding, dilation, groups: int) -> ConvGeometry:
    """Validate a convolution's shapes; return its sizes as its kernels' constexprs (the batch N is x_shape[0]).

    x_shape [N, C, H, W] (N may be 0), w_shape [K, C/G, R, S]; padding as ``_padding_before_after`` takes it
    (pad_h, pad_w: the padding above and left). Raises ValueError/TypeError naming the offending argument, as
    conv2d's (the gradient launchers take the forward's arguments, and their errors name the convolution).
    """
    try:
        # the shapes' sizes (hashing a symbolic one raises TypeError); the rest by repr, which tells 1, 1.0 and True
        key = (len(x_shape), *x_shape, *w_shape, repr((stride, padding, dilation, groups)))
        return _GEOMETRIES[key]
    except TypeError:  # unhashable arguments (symbolic sizes, or a mistake the checks below name)
        return _conv2d_geometry(x_shape, w_shape, stride, padding, dilation, groups)
    except KeyError:
        geometry = _conv2d_geometry(x_shape, w_shape, stride, padding, dilation, groups)
        if len(_GEOMETRIES) >= _GEOMETRIES_KEPT:
            _GEOMETRIES.clear()
        _GEOMETRIES[key] = geometry
        return geometry


def _conv2d_geometry(x_shape, w_shape, stride, padding, dilation, groups: int) -> ConvGeometry:
    """``conv2d_geometry``, computed."""
    stride_h, stride_w = checks.int_pair(stride, "conv2d", "stride")
    dilation_h, dilation_w = checks.int_pair(dilation, "conv2d", "dilation")
    if len(x_shape) != 4:
        raise checks.ArgumentError(f"conv2d: x must be 4-D [N, C_in, H, W], got shape {tuple(x_shape)}")
    if len(w_shape) != 4:
        raise checks.ArgumentError(f"conv2d: weight must be 4-D [C_out, C_in/groups, R, S], got shape {tuple(w_shape)}")
    if not isinstance(groups, int) or groups < 1:
        raise checks.ArgumentError(f"conv2d: groups must be a positive int, got {groups!r}")
    if min(stride_h, stride_w, dilation_h, dilation_w) < 1:
        raise checks.ArgumentError(f"conv2d: stride and dilation must be >= 1, got stride {(stride_h, stride_w)}, "
                                   f"dilation {(dilation_h, dilation_w)}")
    N, C, H, W = x_shape
    K, C_per_group, R, S = w_shape
    (pad_top, pad_bottom), (pad_left, pad_right) = _padding_before_after(
        padding, (R, S), (dilation_h, dilation_w), (stride_h, stride_w))
    if C == 0:
        raise NotImplementedError(f"conv2d: x {tuple(x_shape)} has no input channels; PyTorch returns "
                                  "[N, 0, OH, OW] there, not [N, C_out, OH, OW] (pytorch#101356), and this op "
                                  "does not follow it; give at least one channel")
    if C % groups or K % groups:
        raise checks.ArgumentError(f"conv2d: channels must divide by groups={groups}: x has C_in={C} "
                                   f"(shape {tuple(x_shape)}), weight has C_out={K} (shape {tuple(w_shape)})")
    if C_per_group * groups != C:
        raise checks.ArgumentError(f"conv2d: x shape {tuple(x_shape)} has C_in={C}, but weight shape {tuple(w_shape)} "
                                   f"with groups={groups} expects C_in={C_per_group * groups}")
    if H < 1 or W < 1:
        raise checks.ArgumentError(f"conv2d: x {tuple(x_shape)} has an empty image (H, W must be >= 1)")
    OH = (H + pad_top + pad_bottom - dilation_h * (R - 1) - 1) // stride_h + 1
    OW = (W + pad_left + pad_right - dilation_w * (S - 1) - 1) // stride_w + 1
    if min(K, R, S) < 1 or OH < 1 or OW < 1:
        raise checks.ArgumentError(f"conv2d: empty output: x {tuple(x_shape)}, weight {tuple(w_shape)}, stride "
                                   f"{(stride_h, stride_w)}, padding {padding!r}, dilation {(dilation_h, dilation_w)} "
                                   f"give output {OH}x{OW} with C_out={K}")
    return ConvGeometry(H=H, W=W, OH=OH, OW=OW, C_per_group=C_per_group, K_per_group=K // groups, R=R, S=S,
                        stride_h=stride_h, stride_w=stride_w, pad_h=pad_top, pad_w=pad_left,
                        dilation_h=dilation_h, dilation_w=dilation_w)


def conv2d_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1,
                   padding=0, dilation=1, groups: int = 1, relu: bool = False, precision: str = "ieee",
                   flat_crs: bool | None = None, config: triton.Config | None = None,
                   memory_format: torch.memory_format | None = None) -> torch.Tensor:
    """y = conv2d(x, weight, bias), then ReLU if ``relu``: x [N, C, H, W], weight [K, C/G, R, S] -> y [N, K, OH, OW].

    padding: ints, a pair, "valid" or "same" (``conv2d_geometry``). precision: "ieee" (exact fp32) or "tf32"
    (fp32 operands on tensor cores); fp16/bf16 always use tensor cores. bias: x's dtype, or fp32 with an fp16/bf16
    x (autocast's master bias, rounded to x's dtype in the epilogue). Any weight layout works; channels_last
    (K, R, S, C) weights give the GPU contiguous channel blocks. flat_crs/config override the launch choices
    (tests, benchmarks). memory_format: y's layout (default x's). An empty batch (N = 0) launches nothing.
    """
    g = conv2d_geometry(x.shape, weight.shape, stride, padding, dilation, groups)
    checks.check_precision("conv2d", precision)
    checks.check_layer_operands("conv2d", x, weight, bias, weight.shape[0], master_bias=True)
    N = x.shape[0]
    y = runtime.new_output((N, weight.shape[0], g.OH, g.OW), device=x.device, dtype=x.dtype,
                           memory_format=memory_format or runtime.memory_format_of(x))
    if N == 0:
        return y
    if flat_crs is None:
        flat_crs = flat_reduction(g.C_per_group, x.stride(1) == 1)
    grid = lambda meta: (runtime.cdiv(N * g.OH * g.OW, meta["BLOCK_M"]),  # noqa: E731
                         runtime.cdiv(g.K_per_group, meta["BLOCK_N"]), groups)
    runtime.launch(
        _conv2d_forward_kernel, grid, pass_configs("forward", x, flat_crs, g), config,
        runtime.uses_tensor_cores(x.dtype, precision),
        x_ptr=x, w_ptr=weight, b_ptr=bias if bias is not None else weight, y_ptr=y, N=N, **g.kernel_args(),
        **runtime.stride_args("x", x), **runtime.stride_args("w", weight, "kcrs"),
        b_sk=bias.stride(0) if bias is not None else 0, **runtime.stride_args("y", y), HAS_BIAS=bias is not None,
        APPLY_RELU=relu, FLAT_CRS=flat_crs, WINDOW_INSIDE=g.window_inside, PRECISION=precision,
        ACC_DTYPE=runtime.accumulator_type(x.dtype))
    return y


def conv2d_output_grad(dy: torch.Tensor, y: torch.Tensor | None = None, bias_grad: bool = False,
                       bias_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dy', db) from dy [N, K, OH, OW]: dy' = dy * (y > 0) when the forward's ReLU output ``y`` is given (a new
    tensor in y's layout; else dy itself), db [K] = dy' summed over N, OH, OW when ``bias_grad`` (else None), of
    ``bias_dtype`` (default dy's; the bias's, fp32 for a master bias: written from the fp32 sums, no cast).

    One element-wise pass that the two GEMM gradients then read; db is summed in a fixed order (partials per
    block of pixels, then ``sum_partials``): bitwise repeatable.
    """
    if dy.dim() != 4:
        raise checks.ArgumentError(f"conv2d_output_grad: dy must be 4-D [N, K, OH, OW], got shape {tuple(dy.shape)}")
    checks.check_shape_and_dtype("conv2d_output_grad", "y", y, tuple(dy.shape), dy.dtype)
    checks.check_device("conv2d_output_grad", dy=dy, y=y)
    if y is None and not bias_grad:
        return dy, None
    bias_dtype = bias_dtype or dy.dtype
    checks.check_grad_dtype("conv2d_output_grad", "bias_dtype", bias_dtype, dy.dtype)
    N, K, OH, OW = dy.shape
    P = N * OH * OW
    masked = runtime.new_output(dy.shape, device=dy.device, dtype=dy.dtype,
                                memory_format=runtime.memory_format_of(y)) if y is not None else dy
    if P == 0:  # an empty batch: nothing to mask, db sums no pixels
        return masked, runtime.new_output((K,), device=dy.device, dtype=bias_dtype).zero_() if bias_grad else None
    config = OUTPUT_GRAD_CONFIGS.for_interpreter(dict(P=P, K=K)) if runtime.INTERPRETER else \
        OUTPUT_GRAD_CONFIGS.tensor_core[0]
    blocks = runtime.cdiv(P, config.kwargs["BLOCK_P"] * config.kwargs["BLOCKS"])
    db_partial = bias_partials(blocks, K, dy) if bias_grad else None
    runtime.launch(
        _conv2d_output_grad_kernel, lambda meta: (blocks, runtime.cdiv(K, meta["BLOCK_K"])), OUTPUT_GRAD_CONFIGS,
        config, dy_ptr=dy, y_ptr=y, out_ptr=None if y is None else masked, db_partial_ptr=db_partial,
        P=P, K=K, OH=OH, OW=OW, **runtime.stride_args("dy", dy, "nkhw"),
        **runtime.stride_args("y", y if y is not None else dy, "nkhw"), **runtime.stride_args("out", masked, "nkhw"),
        RELU_MASK=y is not None, BIAS_GRAD=bias_grad, ACC_DTYPE=runtime.accumulator_type(dy.dtype))
    return masked, finish_bias_grad(db_partial, bias_dtype) if bias_grad else None


def conv2d_input_grad(dy: torch.Tensor, weight: torch.Tensor, x_shape, stride=1, padding=0, dilation=1,
                      groups: int = 1, memory_format: torch.memory_format = torch.contiguous_format,
                      precision: str = "ieee", flat_krs: bool | None = None, config: triton.Config | None = None,
                      relu_input: torch.Tensor | None = None) -> torch.Tensor:
    """dx [N, C, H, W] of conv2d from dy [N, K, OH, OW] (ReLU-masked already: ``conv2d_output_grad``) and
    weight [K, C/G, R, S]. memory_format: dx's layout (the forward input's). relu_input: the forward input x [N, C,
    H, W] where it is a ReLU's output: dx is then masked by x > 0, the gradient of that ReLU's input (so the conv
    before it needs no masking pass).
    """
    return _input_grad("conv2d_input_grad", dy, weight, x_shape, stride, padding, dilation, groups, memory_format,
                       precision, flat_krs, config, relu_input, None)[0]


def conv2d_input_grad_and_bias_grad(dy: torch.Tensor, weight: torch.Tensor, relu_input: torch.Tensor,
                                    bias_dtype: torch.dtype, stride=1, padding=0, dilation=1, groups: int = 1,
                                    memory_format: torch.memory_format = torch.contiguous_format,
                                    precision: str = "ieee", flat_krs: bool | None = None,
                                    config: triton.Config | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(dx, db): ``conv2d_input_grad``'s dx masked by relu_input > 0 (x [N, C, H, W], the forward input, a ReLU's
    output), and db [C] of ``bias_dtype`` = dx summed over N, H, W: the gradient of the bias added before that ReLU,
    summed in the epilogue that writes dx (partials per program, then ``sum_partials``), so the conv before needs
    no pass over its output gradient for it. Picked, not autotuned (``INPUT_GRAD_RELU_BIAS_CONFIGS``): bitwise
    repeatable."""
    checks.check_grad_dtype("conv2d_input_grad_and_bias_grad", "bias_dtype", bias_dtype, dy.dtype)
    return _input_grad("conv2d_input_grad_and_bias_grad", dy, weight, tuple(relu_input.shape), stride, padding,
                       dilation, groups, memory_format, precision, flat_krs, config, relu_input, bias_dtype)


def _input_grad(name: str, dy: torch.Tensor, weight: torch.Tensor, x_shape, stride, padding, dilation, groups: int,
                memory_format: torch.memory_format, precision: str, flat_krs: bool | None,
                config: triton.Config | None, relu_input: torch.Tensor | None, bias_dtype: torch.dtype | None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dx, db of ``bias_dtype``, None without one): the launch of both public input gradients, ``name``'s."""
    g = conv2d_geometry(x_shape, weight.shape, stride, padding, dilation, groups)
    checks.check_precision(name, precision)
    N = x_shape[0]
    checks.check_shape_and_dtype(name, "dy", dy, (N, weight.shape[0], g.OH, g.OW), weight.dtype)
    checks.check_shape_and_dtype(name, "relu_input", relu_input, tuple(x_shape), dy.dtype)
    checks.check_device(name, dy=dy, weight=weight, relu_input=relu_input)
    if flat_krs is None:
        flat_krs = flat_reduction(g.K_per_group)
    dx = runtime.new_output(x_shape, device=dy.device, dtype=dy.dtype, memory_format=memory_format)
    if N == 0:
        return dx, None if bias_dtype is None else finish_bias_grad(bias_partials(0, g.C_per_group * groups, dy),
                                                                    bias_dtype)
    sh, sw = g.stride_h, g.stride_w
    pixels = N * runtime.cdiv(g.H, sh) * runtime.cdiv(g.W, sw)  # of the largest stride phase
    grid = lambda meta: (  # noqa: E731
        runtime.cdiv(pixels, meta["BLOCK_M"]), runtime.cdiv(g.C_per_group, meta["BLOCK_N"]), groups * sh * sw)
    configs = pass_configs("input_grad", dy, flat_krs, g)
    if relu_input is not None:
        vectors = configs is INPUT_GRAD_CONFIGS
        configs = (INPUT_GRAD_RELU_CONFIGS if vectors else INPUT_GRAD_RELU_GATHER_CONFIGS) if bias_dtype is None else \
            (INPUT_GRAD_RELU_BIAS_CONFIGS if vectors else INPUT_GRAD_RELU_BIAS_GATHER_CONFIGS)
    args = dict(dy_ptr=dy, w_ptr=weight, dx_ptr=dx, x_ptr=relu_input, N=N, **g.kernel_args(),
                tap_step_h=sh // math.gcd(sh, g.dilation_h), tap_step_w=sw // math.gcd(sw, g.dilation_w),
                **runtime.stride_args("dy", dy, "nkhw"), **runtime.stride_args("w", weight, "kcrs"),
                **runtime.stride_args("dx", dx, "nchw"),
                **runtime.stride_args("x", dx if relu_input is None else relu_input),
                INPUT_RELU=relu_input is not None, BIAS_GRAD=bias_dtype is not None, FLAT_KRS=flat_krs,
                PRECISION=precision, ACC_DTYPE=runtime.accumulator_type(dy.dtype))
    tensor_cores, partials = runtime.uses_tensor_cores(dy.dtype, precision), None
    if bias_dtype is not None:  # a row per program along the pixels, per stride phase
        if config is None and runtime.INTERPRETER:
            config = configs.for_interpreter(args)
        rows = runtime.cdiv(pixels, _block_m(configs, config, tensor_cores)) * sh * sw
        partials = bias_partials(rows, g.C_per_group * groups, dy)
    runtime.launch(_conv2d_input_grad_kernel, grid, configs, config, tensor_cores, bias_partial_ptr=partials, **args)
    return dx, None if partials is None else finish_bias_grad(partials, bias_dtype)


def _block_m(configs: runtime.KernelConfigs, config: triton.Config | None, tensor_cores: bool) -> int:
    """BLOCK_M of a launch of ``configs``: the forced ``config``'s, else the one all its GPU candidates share."""
    if config is not None:
        return config.kwargs["BLOCK_M"]
    (block_m,) = {c.kwargs["BLOCK_M"] for c in configs.gpu(tensor_cores)}
    return block_m


def _pixels_flat(t: torch.Tensor) -> bool:
    """Whether pixel (n, h, w) of ``t`` [N, C, H, W] sits at ((n * H + h) * W + w) * stride(3), so a flat pixel
    index addresses it: dense channels_last (or a single channel)."""
    _, _, height, width = t.shape
    return t.stride(2) == width * t.stride(3) and t.stride(0) == height * t.stride(2)


def weight_grad_schedule(dy: torch.Tensor, x: torch.Tensor, g: ConvGeometry, flat: bool,
                         tensor_cores: bool) -> tuple[float, int]:
    """(modelled time, slices of the pixel reduction) of the weight gradient in reduction order ``flat``: the
    plan (``weight_grad_plan``) on the GPU's SM count over its shipped tiles that fit some GPU's shared memory at
    the operands' element size (``SHARED_PER_BLOCK``: the split is a launch argument, fixed before the pick rule
    meets the tiles that fit this GPU's)."""
    configs = pass_configs("weight_grad", x, flat, g)
    work = WeightGradWork.of(dict(N=x.shape[0], **g.kernel_args(), dy_ptr=dy, x_ptr=x, FLAT_CRS=flat,
                                  WINDOW_INSIDE=g.window_inside))
    tiles = tuple(_tile_of(c) for c in configs.fitting(configs.gpu(tensor_cores), dy.element_size(),
                                                        SHARED_PER_BLOCK))
    sms = runtime.streaming_multiprocessors()
    tile, splits = weight_grad_plan(work, tiles, sms)
    return work.time(tile, splits, sms), splits


def _symbolic(*tensors: torch.Tensor) -> bool:
    """Whether a size is symbolic (fake tensors of torch.compile's dynamic shapes: nothing runs, and a plan needs
    the sizes' values)."""
    return any(isinstance(size, torch.SymInt) for t in tensors for size in t.shape)


def gpu_weight_grad_flat(dy: torch.Tensor, x: torch.Tensor, g: ConvGeometry, precision: str) -> bool:
    """The weight gradient's reduction order on a GPU: ``gpu_flat_reduction``'s, or flat where that is channel
    blocks of channels_last x whose channels are whole 16-byte vectors and the flat order's plan is modelled
    faster (``weight_grad_schedule``; ties keep channel blocks): 192 output channels per group (2012 conv4,
    torchvision conv2 and conv3), which the flat set's 192-row tiles fit."""
    channel_vectors = x.stride(1) == 1
    flat = gpu_flat_reduction(g.C_per_group, channel_vectors)
    if flat or not channel_vectors or g.C_per_group % 8 or _symbolic(dy, x):
        return flat
    tensor_cores = runtime.uses_tensor_cores(x.dtype, precision)
    return weight_grad_schedule(dy, x, g, True, tensor_cores)[0] < weight_grad_schedule(dy, x, g, False,
                                                                                        tensor_cores)[0]


def conv2d_weight_grad(dy: torch.Tensor, x: torch.Tensor, weight_shape, stride=1, padding=0, dilation=1,
                       groups: int = 1, memory_format: torch.memory_format = torch.contiguous_format,
                       precision: str = "ieee", splits: int | None = None, flat_crs: bool | None = None,
                       config: triton.Config | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """dw [K, C/G, R, S] of conv2d from dy [N, K, OH, OW] (ReLU-masked already: ``conv2d_output_grad``) and
    x [N, C, H, W]. memory_format: dw's layout (the weight's, so the optimizer sees matching strides); dtype: dw's
    (default x's; the weight's, fp32 for a master weight: written from the fp32 sums, no cast).

    The N*OH*OW reduction is split into ``splits`` slices whose fp32 partials are summed in a fixed order:
    results are bitwise repeatable, and the split depends only on the shapes and the GPU's SM count. An empty
    batch (N = 0) gives zeros without a launch.
    """
    g = conv2d_geometry(x.shape, weight_shape, stride, padding, dilation, groups)
    checks.check_precision("conv2d_weight_grad", precision)
    N = x.shape[0]
    checks.check_shape_and_dtype("conv2d_weight_grad", "dy", dy, (N, weight_shape[0], g.OH, g.OW), x.dtype)
    checks.check_device("conv2d_weight_grad", dy=dy, x=x)
    K, crs = weight_shape[0], g.C_per_group * g.R * g.S
    if flat_crs is None:
        flat_crs = runtime.INTERPRETER or gpu_weight_grad_flat(dy, x, g, precision)
    configs, tensor_cores = pass_configs("weight_grad", x, flat_crs, g), runtime.uses_tensor_cores(x.dtype, precision)
    if splits is None and _symbolic(dy, x):
        splits = 1  # nothing runs, and dw's shape does not depend on the split
    elif splits is None:
        splits = weight_grad_schedule(dy, x, g, flat_crs, tensor_cores)[1]
    if not isinstance(splits, int) or splits < 1:
        raise checks.ArgumentError(f"conv2d_weight_grad: splits must be a positive int, got {splits!r}")
    dtype = dtype or x.dtype
    checks.check_grad_dtype("conv2d_weight_grad", "dtype", dtype, x.dtype)
    dw = runtime.new_output(weight_shape, device=x.device, dtype=dtype, memory_format=memory_format)
    if N == 0:
        return dw.zero_()
    partial_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    dw_partial = runtime.new_output((splits, K * crs), device=x.device, dtype=partial_dtype)
    same_size = (g.H, g.W, g.stride_h, g.stride_w) == (g.OH, g.OW, 1, 1)
    grid = lambda meta: (runtime.cdiv(g.K_per_group, meta["BLOCK_M"]),  # noqa: E731
                         crs_blocks(g.C_per_group, g.R, g.S, meta["BLOCK_N"], flat_crs), groups * splits)
    runtime.launch(
        _conv2d_weight_grad_kernel, grid, configs, config, tensor_cores,
        dy_ptr=dy, x_ptr=x, dw_partial_ptr=dw_partial, N=N, **g.kernel_args(), splits=splits,
        **runtime.stride_args("dy", dy, "nkhw"), **runtime.stride_args("x", x),
        **runtime.stride_args("dw", dw, "kcrs"), dw_split_stride=K * crs,
        DY_PIXELS_FLAT=_pixels_flat(dy), X_PIXELS_FLAT=_pixels_flat(x) and same_size and not flat_crs,
        FLAT_CRS=flat_crs, WINDOW_INSIDE=g.window_inside,
        PRECISION=precision, ACC_DTYPE=runtime.accumulator_type(x.dtype))
    # dw's elements in memory order: a contiguous flat view of its storage (both layouts are dense)
    dense = dw if memory_format == torch.contiguous_format else dw.permute(0, 2, 3, 1)
    sum_partials(dw_partial, dense.view(-1))
    return dw


# ----------------------------------------------------------------------------- space-to-depth (conv1)


@dataclass(frozen=True)
class Depth:
    """A stride-b convolution with few channels as a stride-1 one over b x b pixel blocks (``space_to_depth``).

    x [N, C, H, W] becomes x_d [N, C*b*b, OH + Rb - 1, OW + Sb - 1] (channel (i*b + j)*C + c holds x at row
    hb*b + i - pad_h, column wb*b + j - pad_w) and weight [K, C, R, S] becomes w_d [K, C*b*b, Rb, Sb], Rb =
    ceil(R/b), its taps past R, S zero; conv2d(x_d, w_d) (stride 1, no padding) = conv2d(x, weight): output
    pixel (oh, ow) meets x row oh*b - pad_h + ri*b + i through filter row ri*b + i. AlexNet's conv1 (3 channels,
    11x11, stride 4, 55x55 out): 48 channels, 3x3 filter, 57x57 map, +19% multiply-adds (12x12 filter taps);
    the loops then read channel vectors with no bounds checks (``ConvGeometry.window_inside``). x rows and columns
    no output reads (below/right of the last window) count as 0. A non-finite x value meets the zero taps of a
    neighbouring window (0 x inf = NaN where F.conv2d's output stays finite): finite inputs only.
    """

    block: int
    pad: tuple[int, int]  # x's padding above and left
    extent: tuple[int, int]  # rows and columns of x that some output reads (from the top-left)
    size: tuple[int, int]  # x_d's Hb x Wb
    taps: tuple[int, int]  # w_d's Rb x Sb

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, relu: bool,
                precision: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(y, x_d): y [N, K, OH, OW] in x's layout and ``dtype`` (bias in it already), x_d channels_last in
        ``dtype``; x_d and w_d are each made by one pass that also casts (autocast's casts of x and the weight).
        The conv reduces over (ri, si, channel) flat: 16-byte channel vectors, no bounds checks."""
        x_d = space_to_depth.space_to_depth(x, self.block, self.size, self.pad, self.extent, dtype)
        return self.convolve(x_d, weight, bias, relu, precision, runtime.memory_format_of(x)), x_d

    def convolve(self, x_d: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, relu: bool,
                 precision: str, memory_format: torch.memory_format) -> torch.Tensor:
        """y [N, K, OH, OW] in ``memory_format`` and x_d's dtype from x_d [N, C*b*b, *size] (channels_last: x's
        form, ``space_to_depth`` or the loaders' ``data.space_to_depth_images``) and the weight, cast to x_d's
        dtype on its way to w_d."""
        return conv2d_forward(x_d, self.weight(weight, x_d.dtype), bias, relu=relu, precision=precision,
                              flat_crs=True, memory_format=memory_format)

    def form_shape(self, batch: int, channels: int) -> tuple[int, int, int, int]:
        """x_d's shape for ``batch`` images of ``channels`` channels."""
        return batch, channels * self.block ** 2, *self.size

    def weight(self, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """w_d [K, C*b*b, Rb, Sb], channels_last, in ``dtype``."""
        return space_to_depth.space_to_depth(weight, self.block, self.taps, dtype=dtype)

    def input_grad(self, dy: torch.Tensor, weight: torch.Tensor, x_shape, memory_format: torch.memory_format,
                   dtype: torch.dtype, precision: str) -> torch.Tensor:
        """dx [N, C, H, W] in ``memory_format`` and ``dtype`` (x's) from dy (ReLU-masked already) and the weight:
        x_d's gradient, then back to x's pixels (rows no output reads get 0)."""
        w_d = self.weight(weight, dy.dtype)
        dx_d = conv2d_input_grad(dy, w_d, (x_shape[0], w_d.shape[1], *self.size), memory_format=torch.channels_last,
                                 precision=precision)
        return space_to_depth.depth_to_space(dx_d, self.block, x_shape, self.pad, memory_format, dtype)

    def weight_grad(self, dy: torch.Tensor, x_d: torch.Tensor, weight_shape, memory_format: torch.memory_format,
                    dtype: torch.dtype, precision: str) -> torch.Tensor:
        """dw [K, C, R, S] in ``memory_format`` and ``dtype`` (the weight's) from dy (ReLU-masked already) and
        x_d: w_d's gradient (flat reduction, as the forward's), the zero taps' gradients dropped."""
        w_d_shape = (weight_shape[0], x_d.shape[1], *self.taps)
        dw_d = conv2d_weight_grad(dy, x_d, w_d_shape, memory_format=torch.channels_last, precision=precision,
                                  flat_crs=True)
        return space_to_depth.depth_to_space(dw_d, self.block, weight_shape, memory_format=memory_format,
                                             dtype=dtype)


def conv2d_depth(x: torch.Tensor, w_shape, stride, padding, dilation, groups: int, dtype: torch.dtype,
                 precision: str) -> Depth | None:
    """The space-to-depth form (``Depth``) of a convolution of x [N, C, H, W] computed in ``dtype`` at
    ``precision``, or None where it is not taken. Taken for a square stride b >= 2 without dilation or groups on
    few channels (C < FLAT_CRS_CHANNELS: channel blocks would be mostly padding) that become whole 16-byte vectors
    (C*b*b a multiple of 8), with a filter at least b wide (R, S >= b: the taps padded to a multiple of b cost
    less than 2x), for channels_last x (y takes x's layout: an NCHW y, and then dy, is scattered per element, and
    the tiles spilled); not for exact fp32, whose FMA loop is bound by its multiply-adds, not addresses (the padded
    taps would add 19% to conv1's). float64 (the interpreter's gradcheck) takes it, as the tensor-core dtypes do."""
    g = conv2d_geometry(x.shape, w_shape, stride, padding, dilation, groups)
    b, C, R, S = g.stride_h, g.C_per_group, g.R, g.S
    if not (b == g.stride_w >= 2 and g.dilation_h == g.dilation_w == 1 and groups == 1
            and C < FLAT_CRS_CHANNELS and C * b * b % 8 == 0 and min(R, S) >= b
            and runtime.memory_format_of(x) == torch.channels_last and (dtype, precision) != (torch.float32, "ieee")):
        return None
    taps = (runtime.cdiv(R, b), runtime.cdiv(S, b))
    extent = (min(g.H, (g.OH - 1) * b - g.pad_h + R), min(g.W, (g.OW - 1) * b - g.pad_w + S))
    return Depth(block=b, pad=(g.pad_h, g.pad_w), extent=extent, size=(g.OH + taps[0] - 1, g.OW + taps[1] - 1),
                 taps=taps)
