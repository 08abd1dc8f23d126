"""Where the Triton kernels run, and with which launch configurations.

This module alone decides the execution mode and owns every kernel's config
list. It must be imported before `triton` (``alexnet_triton/__init__`` does so).

Modes (environment variable ``ALEXNET_TRITON_MODE``):
  ``auto`` (default)  ``gpu`` when CUDA is available, else ``interpreter``.
  ``interpreter``     Triton's CPU interpreter (``TRITON_INTERPRET=1``); tensors
                      live on the CPU; each kernel runs one fixed config with
                      large blocks, since interpreter cost grows with
                      programs x loop steps, not with block size.
  ``gpu``             native compilation; GEMM-like kernels autotune over their
                      GPU config list. Also the mode for ahead-of-time compile
                      inspection on a machine without a GPU.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

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

import triton  # noqa: E402  (the mode must be fixed before Triton is imported)


@dataclass(frozen=True)
class KernelConfigs:
    """A kernel's launch configurations.

    gpu: autotuning candidates on a GPU (each must compile for sm_80 and sm_90
        without spills: ``experiments/inspect_kernels.py`` checks).
    interpreter: the one config used in the interpreter; one of ``gpu``, so the
        tests exercise a config that also ships.
    key: kernel argument names whose values key the autotuning cache.
    """

    gpu: tuple[triton.Config, ...]
    interpreter: triton.Config
    key: tuple[str, ...]

    def __post_init__(self):
        if self.interpreter not in self.gpu:
            raise ValueError("the interpreter config must be one of the GPU configs")


def fixed_config(num_warps: int, **meta: int) -> KernelConfigs:
    """Configs of a kernel that is not autotuned: one config everywhere."""
    config = triton.Config(meta, num_warps=num_warps, num_stages=1)
    return KernelConfigs(gpu=(config,), interpreter=config, key=())


def _config(block_m: int, block_n: int, block_k: int, warps: int, stages: int) -> triton.Config:
    return triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k},
                         num_warps=warps, num_stages=stages)


# Implicit-GEMM tiles shared by the three convolution kernels. fp32 operands
# need twice the shared memory of fp16/bf16, so stages are chosen for fp32 to
# fit sm_80's 163 KiB.
_GEMM_TILES = (
    _config(128, 128, 32, 8, 3),
    _config(128, 64, 32, 4, 4),
    _config(64, 128, 32, 4, 4),
    _config(64, 64, 32, 4, 4),
    _config(64, 64, 64, 4, 3),
    _config(128, 128, 64, 8, 2),
)
_INTERPRETER_TILE = _GEMM_TILES[-1]

CONV_FORWARD = KernelConfigs(
    gpu=_GEMM_TILES, interpreter=_INTERPRETER_TILE,
    key=("N", "H", "W", "C_per_group", "K_per_group", "R", "S", "stride_h", "stride_w"))
CONV_INPUT_GRAD = KernelConfigs(
    gpu=_GEMM_TILES, interpreter=_INTERPRETER_TILE,
    key=("N", "H", "W", "C_per_group", "K_per_group", "R", "S", "stride_h", "stride_w"))
CONV_WEIGHT_GRAD = KernelConfigs(
    gpu=_GEMM_TILES, interpreter=_INTERPRETER_TILE,
    key=("N", "OH", "OW", "C_per_group", "K_per_group", "R", "S", "splits"))

# Row/element-wise kernels are not autotuned: one config each.
PARTIAL_SUMS = fixed_config(BLOCK=1024, num_warps=4)


def streaming_multiprocessors() -> int:
    """SM count of the current GPU; in the interpreter, the CPU core count."""
    if INTERPRETER or not torch.cuda.is_available():
        return os.cpu_count() or 1
    return torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count


def check_device(op: str, **tensors: torch.Tensor | None) -> None:
    """Raise ValueError unless every tensor is on the device this mode runs on.

    While launches are captured (ahead-of-time inspection), CPU tensors stand
    in for GPU ones and any device passes.
    """
    if _capture is not None:
        return
    wanted = "cpu" if INTERPRETER else "cuda"
    for name, tensor in tensors.items():
        if tensor is not None and tensor.device.type != wanted:
            raise ValueError(
                f"{op}: {name} is on {tensor.device}, but the Triton kernels run in {MODE} mode, "
                f"which needs {wanted} tensors (set {MODE_VARIABLE} to choose the mode)")


# Tests set this: every output buffer a launcher allocates is then filled with
# NaN first, so an element a kernel fails to write cannot pass for a result.
poison_outputs = False


def new_output(shape, *, device, dtype: torch.dtype,
               memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """Allocate a kernel output (uninitialised; NaN-filled when ``poison_outputs``)."""
    out = torch.empty(tuple(shape), device=device, dtype=dtype, memory_format=memory_format)
    if poison_outputs:
        out.fill_(float("nan"))
    return out


@dataclass
class LaunchRecord:
    """A launch captured instead of run (for ahead-of-time inspection)."""

    kernel: Any
    args: dict[str, Any]
    configs: KernelConfigs


_capture: list[LaunchRecord] | None = None


@contextlib.contextmanager
def capture_launches():
    """Within the block, launches are recorded (not run); yields the record list."""
    global _capture
    previous, _capture = _capture, []
    try:
        yield _capture
    finally:
        _capture = previous


_autotuned: dict[Any, Any] = {}


def launch(kernel, grid: Callable[[dict], tuple[int, ...]], configs: KernelConfigs,
           config: triton.Config | None = None, **args: Any) -> None:
    """Launch ``kernel`` over ``grid(meta)`` with keyword ``args``.

    ``config`` forces one launch configuration (tests, benchmarks); otherwise
    the interpreter uses ``configs.interpreter`` and a GPU autotunes over
    ``configs.gpu``.
    """
    if _capture is not None:
        _capture.append(LaunchRecord(kernel, dict(args), configs))
        return
    if config is None and (INTERPRETER or len(configs.gpu) == 1):
        config = configs.interpreter
    if config is not None:
        meta = {**args, **config.kwargs}
        options = {} if INTERPRETER else {"num_warps": config.num_warps, "num_stages": config.num_stages}
        kernel[grid(meta)](**args, **config.kwargs, **options)
        return
    if kernel not in _autotuned:
        _autotuned[kernel] = triton.autotune(configs=list(configs.gpu), key=list(configs.key))(kernel)
    _autotuned[kernel][grid](**args)
