"""Where the Triton kernels run, and with which launch configurations.

This module alone decides the execution mode, and holds the config mechanism
(``KernelConfigs``, fitting tiles to a GPU, launch and capture); each kernel
module holds its own config lists beside its kernels. Import order does not
matter: when Triton was imported first, choosing the interpreter rebuilds
Triton's library for it (``kernels/interpreter.py``).

Modes (environment variable ``ALEXNET_TRITON_MODE``):
  ``auto`` (default)  ``gpu`` when CUDA is available, else ``interpreter``.
  ``interpreter``     Triton's CPU interpreter (``TRITON_INTERPRET=1``); tensors
                      live on the CPU; each kernel runs one fixed config with
                      large blocks, since interpreter cost grows with
                      programs x loop steps far more than with block size.
  ``gpu``             native compilation; GEMM-like kernels autotune over their
                      GPU config list. Also the mode for ahead-of-time compile
                      inspection on a machine without a GPU.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

MODE_VARIABLE = "ALEXNET_TRITON_MODE"
MODES = ("auto", "interpreter", "gpu")


def _decide_mode() -> str:
    requested = os.environ.get(MODE_VARIABLE, "auto").strip().lower()
    if requested not in MODES:
        raise ValueError(f"{MODE_VARIABLE}={requested!r}: expected one of {MODES}")
    interpret_set = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    if requested == "gpu" and interpret_set:
        raise ValueError(f"{MODE_VARIABLE}=gpu contradicts TRITON_INTERPRET=1 in the environment")
    if requested == "auto":
        requested = "interpreter" if interpret_set or not torch.cuda.is_available() else "gpu"
    if requested == "interpreter":
        os.environ["TRITON_INTERPRET"] = "1"
        logging.getLogger("alexnet_triton").warning(
            "alexnet_triton: running Triton kernels in the CPU interpreter (TRITON_INTERPRET=1); "
            "set %s=gpu on a CUDA machine", MODE_VARIABLE)
    return requested


MODE = _decide_mode()
INTERPRETER = MODE == "interpreter"

import triton  # noqa: E402  (TRITON_INTERPRET is set first, when it is not set already)
import triton.language as tl  # noqa: E402

from . import interpreter  # noqa: E402

# What was done to Triton's interpreter for these versions (see kernels/interpreter.py); empty on a GPU.
INTERPRETER_FIXES = interpreter.prepare() if INTERPRETER else []
# (major, minor) of the installed Triton, for the config choices that differ between releases.
TRITON_VERSION = interpreter.version(triton.__version__)


@dataclass(frozen=True)
class KernelConfigs:
    """A kernel's launch configurations.

    tensor_core: GPU autotuning candidates when the dot runs on tensor cores
        (fp16, bf16, fp32 as TF32).
    cuda_core: candidates for exact fp32 (IEEE) dots, which run as FMAs on
        CUDA cores and hold far more in registers, so they need smaller tiles.
        Every candidate must compile for sm_80, sm_90 and (as ``for_backend``
        adapts it) gfx942 without spills or shared memory over the limit
        (``experiments/inspect_kernels.py`` checks; the tests run each one).
    interpreter: the config the interpreter runs, or a function of the launch's
        arguments that returns it: large blocks, since the interpreter's cost
        grows with programs x loop steps far more than with block size.
    key: kernel argument names whose values key the autotuning cache.
    pick: when given, a launch runs ``pick(fitting candidates, launch args)`` instead of autotuning: a choice
        by rule, never by timing (for kernels whose result bits depend on the config: bitwise-repeatable
        across processes).
    operand: the kernel argument (a tensor) whose element size decides which tiles fit shared memory
        (``fitting``); required when a config has GEMM tiles (BLOCK_M, BLOCK_N, BLOCK_K), None otherwise.
    """

    tensor_core: tuple[triton.Config, ...]
    cuda_core: tuple[triton.Config, ...]
    interpreter: triton.Config | Callable[[dict[str, Any]], triton.Config]
    key: tuple[str, ...]
    pick: Callable[[tuple[triton.Config, ...], dict[str, Any]], triton.Config] | None = None
    operand: str | None = None

    def __post_init__(self):
        tiled = any(pipeline_shared_bytes(c, 1) for c in self.tensor_core + self.cuda_core)
        if tiled != (self.operand is not None):
            raise ValueError(f"KernelConfigs: operand={self.operand!r}: name the tensor argument whose element size "
                             "decides what fits shared memory exactly when a config has GEMM tiles "
                             f"({'it has' if tiled else 'none has'})")

    def operand_bytes(self, args: dict[str, Any]) -> int:
        """Element size of the deciding ``operand`` in a launch's keyword ``args``; 0 without GEMM tiles."""
        return 0 if self.operand is None else args[self.operand].element_size()

    def gpu(self, tensor_cores: bool, backend: str | None = None) -> tuple[triton.Config, ...]:
        """The autotuning candidates on a ``backend`` GPU ("cuda" or "hip"; default: this machine's)."""
        configs, backend = self.tensor_core if tensor_cores else self.cuda_core, backend or GPU_BACKEND
        return configs if backend == "cuda" else tuple(for_backend(c, backend) for c in configs)

    def fitting(self, candidates: tuple[triton.Config, ...], operand_bytes: int,
                shared_limit: int) -> tuple[triton.Config, ...]:
        """The candidates whose operand pipeline fits ``shared_limit`` bytes at ``operand_bytes`` per element
        (bf16 tiles that fit an H100 may not fit an A100, TF32 ones or a 64 KiB MI300 workgroup); the smallest
        candidate when none fits."""
        fit = tuple(c for c in candidates if pipeline_shared_bytes(c, operand_bytes) <= shared_limit)
        return fit or (min(candidates, key=lambda c: pipeline_shared_bytes(c, operand_bytes)),)

    def for_interpreter(self, args: dict[str, Any]) -> triton.Config:
        """The interpreter's config for a launch with keyword ``args``."""
        return self.interpreter(args) if callable(self.interpreter) else self.interpreter

    def shipped(self) -> tuple[triton.Config, ...]:
        """Every config a GPU launch can use."""
        return self.tensor_core + tuple(c for c in self.cuda_core if c not in self.tensor_core)


GPU_BACKEND = "hip" if torch.version.hip else "cuda"
# On AMD GPUs Triton's stream pipeliner keeps num_stages - 1 tiles ahead in LDS, 64 KiB per workgroup on MI300
# (gfx942): the 4-stage TF32 linear tiles needed up to 96 KiB there. Two stages is ROCm's usual GEMM depth.
HIP_MAX_STAGES = 2


def for_backend(config: triton.Config, backend: str) -> triton.Config:
    """``config`` as launched on a ``backend`` GPU: at most ``HIP_MAX_STAGES`` pipeline stages on "hip"."""
    if backend not in ("cuda", "hip"):
        raise ValueError(f"GPU backend {backend!r}: expected 'cuda' or 'hip'")
    if backend == "cuda" or config.num_stages <= HIP_MAX_STAGES:
        return config
    return triton.Config(config.kwargs, num_warps=config.num_warps, num_stages=HIP_MAX_STAGES)


def pipeline_shared_bytes(config: triton.Config, operand_bytes: int) -> int:
    """Shared memory a GEMM-like config's software pipeline holds: num_stages x (A tile + B tile); 0 for
    configs without BLOCK_M/N/K."""
    meta = config.kwargs
    if not {"BLOCK_M", "BLOCK_N", "BLOCK_K"} <= meta.keys():
        return 0
    return config.num_stages * (meta["BLOCK_M"] + meta["BLOCK_N"]) * meta["BLOCK_K"] * operand_bytes


def cdiv(a: int, b: int) -> int:
    """ceil(a / b), for host code (grids, splits): there triton.cdiv is a constexpr function whose call costs
    microseconds."""
    return -(-a // b)


def config_name(config: triton.Config) -> str:
    """Short label of a config: BM128_BN64_BK32_w8_s3."""
    meta = "_".join(f"{k.replace('BLOCK_', 'B')}{v}" for k, v in config.kwargs.items())
    return f"{meta}_w{config.num_warps}_s{config.num_stages}"


def fixed_config(num_warps: int, interpreter_block: int | None = None, **meta: int) -> KernelConfigs:
    """Configs of a kernel that is not autotuned: one config on a GPU; in the interpreter the same, or with
    BLOCK = ``interpreter_block`` (element-wise kernels: fewer, larger programs)."""
    config = triton.Config(meta, num_warps=num_warps, num_stages=1)
    interpreter = config if interpreter_block is None else triton.Config({**meta, "BLOCK": interpreter_block})
    return KernelConfigs(tensor_core=(config,), cuda_core=(config,), interpreter=interpreter, key=())


def gemm_tile(block_m: int, block_n: int, block_k: int, warps: int, stages: int) -> triton.Config:
    """A GEMM-like kernel's config: BLOCK_M x BLOCK_N output tile, BLOCK_K reduction step."""
    return triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k},
                         num_warps=warps, num_stages=stages)


# Interpreter tiles: its cost is Python work per tl operation, repeated per
# program and per reduction step, while numpy's work per tile element is cheap.
# So each GEMM gets a tile fitted to its own size (powers of two, at least 16,
# tl.dot's minimum), capped so that every tensor the kernel holds (the output
# tile BLOCK_M x BLOCK_N and both operand tiles) stays within Triton's limit of
# 2^20 elements: usually one program and a few reduction steps. On the scaled
# CPU net (width 1/8, 67x67, batch 16) a training step took 2x less CPU time
# than with fixed 512x32x128 conv and 128x128x64 linear tiles.
_INTERPRETER_TILE_CAPS = dict(rows=4096, cols=512, reduction=2048, tensor_elements=tl.TRITON_MAX_TENSOR_NUMEL)


def interpreter_gemm_tile(rows: int, cols: int, reduction: int) -> triton.Config:
    """The interpreter's tile for a [rows, cols] output reduced over ``reduction``: the problem's size, capped;
    the output tile shrinks first (its larger side), then the reduction step, until every tile fits."""
    caps = _INTERPRETER_TILE_CAPS
    limit = caps["tensor_elements"]
    block_m, block_n, block_k = (min(cap, max(16, triton.next_power_of_2(size))) for size, cap in
                                 ((rows, caps["rows"]), (cols, caps["cols"]), (reduction, caps["reduction"])))
    while block_m * block_n > limit:
        block_m, block_n = (block_m // 2, block_n) if block_m >= block_n else (block_m, block_n // 2)
    while max(block_m, block_n) * block_k > limit and block_k > 16:
        block_k //= 2
    if max(block_m * block_n, max(block_m, block_n) * block_k) > limit:
        raise ValueError(f"interpreter tile {block_m}x{block_n}x{block_k} for a [{rows}, {cols}] output over "
                         f"{reduction} exceeds Triton's {limit} elements per tensor")
    return triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k})


_TARGET_SMS: contextvars.ContextVar[int | None] = contextvars.ContextVar("target_sms", default=None)


@contextlib.contextmanager
def target(streaming_multiprocessors: int):
    """Inside it, launches are planned (grid splits, tile picks) for a GPU with ``streaming_multiprocessors``
    SMs instead of this machine's: ahead-of-time inspection and the study's launch models."""
    token = _TARGET_SMS.set(streaming_multiprocessors)
    try:
        yield
    finally:
        _TARGET_SMS.reset(token)


def streaming_multiprocessors() -> int:
    """SM count of the ``target`` GPU, else of the current GPU; 1 in the interpreter, which runs programs one
    after another."""
    if _TARGET_SMS.get() is not None:
        return _TARGET_SMS.get()
    if INTERPRETER or not torch.cuda.is_available():
        return 1
    return torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count


def uses_tensor_cores(dtype: torch.dtype, precision: str) -> bool:
    """Whether dots of this dtype run on tensor cores: fp16, bf16, and fp32 as TF32."""
    return dtype in (torch.float16, torch.bfloat16) or (dtype == torch.float32 and precision == "tf32")


# Tests set this: every output buffer a launcher allocates is then filled with
# NaN (integers: their maximum) first, so an element a kernel fails to write
# cannot pass for a result.
poison_outputs = False


@functools.cache
def _stride_names(prefix: str, dims: str) -> tuple[str, ...]:
    return tuple(f"{prefix}_s{d}" for d in dims)


def stride_args(prefix: str, t: torch.Tensor, dims: str = "nchw") -> dict[str, int]:
    """Kernel stride arguments: stride_args("w", weight, "kcrs") -> {"w_sk": ..., "w_sc": ..., ...}."""
    return dict(zip(_stride_names(prefix, dims), t.stride(), strict=True))


def accumulator_type(dtype: torch.dtype):
    """Type kernels accumulate and compare in: fp32, or fp64 for float64 (verification) inputs."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def memory_format_of(t: torch.Tensor) -> torch.memory_format:
    """channels_last when ``t`` is laid out so (and not also plain contiguous), else contiguous_format."""
    channels_last = t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


def new_output(shape, *, device, dtype: torch.dtype,
               memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """Allocate a kernel output (uninitialised; poisoned when ``poison_outputs``)."""
    out = torch.empty(tuple(shape), device=device, dtype=dtype, memory_format=memory_format)
    if poison_outputs:
        out.fill_(float("nan") if dtype.is_floating_point else torch.iinfo(dtype).max)
    return out


@dataclass
class LaunchRecord:
    """A launch captured instead of run (for ahead-of-time inspection)."""

    kernel: Any
    args: dict[str, Any]
    candidates: tuple[triton.Config, ...]  # before ``KernelConfigs.fitting`` a target's shared memory
    configs: KernelConfigs
    operand_bytes: int  # ``KernelConfigs.operand_bytes``
    grid: Callable[[dict], tuple[int, ...]]  # of meta = args + a config's kwargs, as ``launch`` calls it
    config: triton.Config | None = None  # the config the caller forced, if any

    def choices(self, shared_limit: int) -> tuple[triton.Config, ...]:
        """What a GPU whose blocks may use ``shared_limit`` bytes of shared memory would launch: the forced
        config, else the pick rule's choice among the fitting candidates, else those candidates (autotuned)."""
        if self.config is not None:
            return (self.config,)
        fitting = self.configs.fitting(self.candidates, self.operand_bytes, shared_limit)
        return fitting if self.configs.pick is None else (self.configs.pick(fitting, self.args),)


_capture: Callable[[LaunchRecord], None] | None = None


def capturing() -> bool:
    """Whether launches are being captured (``capture_launches``), not run."""
    return _capture is not None


@contextlib.contextmanager
def capture_launches(on_launch: Callable[[LaunchRecord], None] | None = None):
    """Within the block, launches are recorded (not run); yields the record list. Given ``on_launch``, each
    record goes to it instead and the list stays empty (a kept record keeps its launch's tensors alive)."""
    global _capture
    records: list[LaunchRecord] = []
    previous, _capture = _capture, on_launch or records.append
    try:
        yield records
    finally:
        _capture = previous


# Per-launch host work cached by object identity (hashing a tuple of triton.Configs, or a JITFunction, costs
# microseconds per launch): the fitting candidates per (KernelConfigs, tensor cores, operand bytes), and the
# autotuner per (kernel, those candidates). Each entry keeps its key's objects alive, so an id cannot be reused
# while it is cached.
_fitting: dict[tuple[int, bool, int], tuple[KernelConfigs, tuple[triton.Config, ...]]] = {}
_autotuned: dict[tuple[int, int], tuple[Any, tuple[triton.Config, ...], Any]] = {}


def _fitting_candidates(configs: KernelConfigs, tensor_cores: bool, operand_bytes: int) -> tuple[triton.Config, ...]:
    """``configs.fitting`` of this GPU's candidates (``_shared_limit``), computed once per key."""
    key = (id(configs), tensor_cores, operand_bytes)
    entry = _fitting.get(key)
    if entry is None or entry[0] is not configs:
        entry = _fitting[key] = (configs, configs.fitting(configs.gpu(tensor_cores), operand_bytes, _shared_limit()))
    return entry[1]


@functools.cache
def _shared_limit() -> int:
    """Shared memory one block may use on this GPU (opt-in maximum)."""
    return torch.cuda.get_device_properties(torch.cuda.current_device()).shared_memory_per_block_optin


def launch(kernel, grid: Callable[[dict], tuple[int, ...]], configs: KernelConfigs,
           config: triton.Config | None = None, tensor_cores: bool = True, **args: Any) -> None:
    """Launch ``kernel`` over ``grid(meta)`` with keyword ``args``.

    ``config`` forces one launch configuration (tests, benchmarks); otherwise the interpreter uses
    ``configs.interpreter``, and a GPU keeps the candidates ``configs.gpu(tensor_cores)`` that fit its shared memory
    at the element size of ``configs.operand`` (``KernelConfigs.fitting``), then launches the pick rule's choice
    among them, or the only one, or autotunes over them (``configs.key``).
    """
    operand_bytes = configs.operand_bytes(args)
    if _capture is not None:
        _capture(LaunchRecord(kernel, dict(args), configs.gpu(tensor_cores), configs, operand_bytes, grid, config))
        return
    if config is None and INTERPRETER:
        config = configs.for_interpreter(args)
    elif config is None:
        candidates = _fitting_candidates(configs, tensor_cores, operand_bytes)
        if configs.pick is not None:
            config = configs.pick(candidates, args)
        elif len(candidates) == 1:
            config = candidates[0]
    if config is not None:
        meta = {**args, **config.kwargs}
        options = {} if INTERPRETER else {"num_warps": config.num_warps, "num_stages": config.num_stages}
        kernel[grid(meta)](**args, **config.kwargs, **options)
        return
    entry = _autotuned.get((id(kernel), id(candidates)))  # candidates: a cached ``_fitting_candidates`` tuple here
    if entry is None or entry[0] is not kernel or entry[1] is not candidates:
        entry = _autotuned[id(kernel), id(candidates)] = (
            kernel, candidates, triton.autotune(configs=list(candidates), key=list(configs.key))(kernel))
    entry[2][grid](**args)
