"""A plain Triton matmul, the yardstick for the conv kernels' main loops.

c [M, N] = a [M, K] @ b [K, N], every operand indexed through its strides (contiguous a and b: row-major, N
contiguous in b), fp32 accumulation (fp32 operands as TF32 on a GPU), masks on every edge, int32 offsets (every
AlexNet GEMM operand has fewer than 2^31 elements), output tiles visited in groups of GROUP_M tile rows (tiles of
one group share operand loads in L2). The inspection compiles it on each AlexNet conv layer's
forward GEMM (M = batch x output pixels, N = output channels / groups, K = input channels / groups x R x S)
at the conv forward's tensor-core tiles and at its own (``reference_configs``), and compares main loops.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...kernels import checks, conv, runtime

GROUP_M = 8
# Its own tiles, after the usual H100 GEMM tiles: 16-bit operands, then TF32 (half the tile along K).
OWN_TILES = {"16-bit": (runtime.gemm_tile(128, 256, 64, 8, 3), runtime.gemm_tile(128, 128, 64, 8, 4)),
             "tf32": (runtime.gemm_tile(128, 128, 32, 8, 3),)}  # 128x64x32 w4 s4 spilled on sm_80


@triton.jit
def _reference_matmul_kernel(
    # pointers
    a_ptr, b_ptr, c_ptr,
    # sizes
    M, N, K,
    # strides, in elements
    a_sm, a_sk,
    b_sk, b_sn,
    c_sm, c_sn,
    # meta
    PRECISION: tl.constexpr, GROUP_M: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """c = a @ b.

    grid (cdiv(M, BLOCK_M) * cdiv(N, BLOCK_N),): each program computes a BLOCK_M x BLOCK_N tile of c, reducing
    over K in BLOCK_K steps; programs walk the tiles column by column within groups of GROUP_M tile rows.
    """
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_per_group = GROUP_M * tl.cdiv(N, BLOCK_N)
    first_m = pid // tiles_per_group * GROUP_M
    rows_in_group = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + pid % tiles_per_group % rows_in_group
    pid_n = pid % tiles_per_group // rows_in_group

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    steps = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + rows[:, None] * a_sm + steps[None, :] * a_sk
    b_ptrs = b_ptr + steps[:, None] * b_sk + cols[None, :] * b_sn

    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        in_k = steps < K - k0
        a = tl.load(a_ptrs, mask=(rows < M)[:, None] & in_k[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=in_k[:, None] & (cols < N)[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        a_ptrs += BLOCK_K * a_sk
        b_ptrs += BLOCK_K * b_sk

    c_ptrs = c_ptr + rows[:, None] * c_sm + cols[None, :] * c_sn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=(rows < M)[:, None] & (cols < N)[None, :])


def reference_configs(dtype: torch.dtype) -> runtime.KernelConfigs:
    """The conv forward's tensor-core tiles (but the 256-row one, which spills this plain kernel on sm_80 at conv1's
    and conv2's GEMM shapes), then the GEMM's own tiles for ``dtype`` (fp32 means TF32); no CUDA-core configs:
    every launch uses tensor cores."""
    own = OWN_TILES["tf32" if dtype == torch.float32 else "16-bit"]
    same = tuple(c for c in conv.FORWARD_CONFIGS.tensor_core if c.kwargs["BLOCK_M"] < 256 and c not in own)
    return runtime.KernelConfigs(
        tensor_core=same + own, cuda_core=(),
        interpreter=lambda a: runtime.interpreter_gemm_tile(a["M"], a["N"], a["K"]), key=("M", "N", "K"),
        operand="a_ptr")  # a and b share one dtype


def reference_matmul(a: torch.Tensor, b: torch.Tensor, config: triton.Config | None = None) -> torch.Tensor:
    """c [M, N] = a [M, K] @ b [K, N] in a's dtype (fp16, bf16, or fp32 as TF32; the interpreter is exact)."""
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0] or a.dtype != b.dtype:
        raise ValueError(f"reference_matmul: a {tuple(a.shape)} {a.dtype} and b {tuple(b.shape)} {b.dtype} "
                         "must be [M, K] and [K, N] of one dtype")
    checks.check_device("reference_matmul", a=a, b=b)
    (M, K), N = a.shape, b.shape[1]
    c = runtime.new_output((M, N), device=a.device, dtype=a.dtype)
    runtime.launch(
        _reference_matmul_kernel,
        lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),),
        reference_configs(a.dtype), config, True,
        a_ptr=a, b_ptr=b, c_ptr=c, M=M, N=N, K=K, **runtime.stride_args("a", a, "mk"),
        **runtime.stride_args("b", b, "kn"), **runtime.stride_args("c", c, "mn"),
        PRECISION="tf32" if a.dtype == torch.float32 else "ieee", GROUP_M=GROUP_M)
    return c
