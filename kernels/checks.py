"""The launchers' input checks: each raises ArgumentError (a ValueError) or ArgumentTypeError (a TypeError) naming
the op, the argument and what it got; both are RuntimeErrors too, as PyTorch's errors for the same inputs are.

Which dtypes and devices pass depends on the execution mode (``runtime``): float64 only in the interpreter (for
gradcheck), CPU tensors in the interpreter and CUDA tensors on a GPU (any device while launches are captured).
"""

from __future__ import annotations

import torch

from . import runtime


class ArgumentError(ValueError, RuntimeError):
    """A bad argument value or shape: a ValueError, and the RuntimeError PyTorch raises for the same input (so
    code written against either catches it)."""


class ArgumentTypeError(TypeError, RuntimeError):
    """A bad argument type or dtype: a TypeError, and the RuntimeError PyTorch raises for the same input."""


def int_pair(value, op: str, name: str) -> tuple[int, int]:
    """An int or a pair of ints as a pair; TypeError naming ``op`` and ``name`` otherwise."""
    pair = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, (tuple, list)) else ()
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise ArgumentTypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    return pair


def check_float_dtype(op: str, **tensors: torch.Tensor | None) -> None:
    """TypeError unless each tensor is fp32/fp16/bf16 (or float64, in interpreter mode only: gradcheck)."""
    allowed = (torch.float32, torch.float16, torch.bfloat16) + ((torch.float64,) if runtime.INTERPRETER else ())
    for name, tensor in tensors.items():
        if tensor is not None and tensor.dtype not in allowed:
            raise ArgumentTypeError(f"{op}: {name} has dtype {tensor.dtype}; supported: "
                                    f"{', '.join(str(d) for d in allowed)}"
                                    + ("" if runtime.INTERPRETER else " (float64 only in interpreter mode)"))


def check_device(op: str, **tensors: torch.Tensor | None) -> None:
    """Raise ValueError unless every tensor is on the device this mode runs on.

    While launches are captured (ahead-of-time inspection), CPU tensors stand
    in for GPU ones and any device passes.
    """
    if runtime.capturing():
        return
    wanted = "cpu" if runtime.INTERPRETER else "cuda"
    for name, tensor in tensors.items():
        if tensor is not None and tensor.device.type != wanted:
            raise ArgumentError(f"{op}: {name} is on {tensor.device}, but the Triton kernels run in {runtime.MODE} "
                                f"mode, which needs {wanted} tensors (set {runtime.MODE_VARIABLE} to choose the mode)")


PRECISIONS = ("ieee", "tf32")


def check_precision(op: str, precision: str) -> None:
    """ValueError unless precision is "ieee" (exact fp32 products) or "tf32" (fp32 on tensor cores)."""
    if precision not in PRECISIONS:
        raise ArgumentError(f"{op}: precision must be one of {PRECISIONS}, got {precision!r}")


def check_shape_and_dtype(op: str, name: str, t: torch.Tensor | None, shape: tuple, dtype: torch.dtype) -> None:
    """ValueError unless ``t`` (a gradient or saved output; None passes) has this shape and dtype."""
    if t is not None and (tuple(t.shape) != shape or t.dtype != dtype):
        raise ArgumentError(f"{op}: {name} must have shape {shape} and dtype {dtype}, "
                            f"got {tuple(t.shape)} {t.dtype}")


# The dtypes of mixed precision's computations, whose layers may take fp32 master parameters (``is_master``).
LOW_DTYPES = (torch.float16, torch.bfloat16)


def is_master(parameter_dtype: torch.dtype, compute_dtype: torch.dtype) -> bool:
    """Whether a parameter (or its gradient) of ``parameter_dtype`` is the fp32 master of an fp16/bf16
    ``compute_dtype`` computation."""
    return parameter_dtype == torch.float32 and compute_dtype in LOW_DTYPES


def check_grad_dtype(op: str, name: str, grad_dtype: torch.dtype, x_dtype: torch.dtype) -> None:
    """TypeError unless a parameter's gradient dtype ``grad_dtype`` is x's or that of its fp32 master."""
    if grad_dtype != x_dtype and not is_master(grad_dtype, x_dtype):
        raise ArgumentTypeError(f"{op}: {name} must be x's dtype ({x_dtype}) or, with an fp16/bf16 x, torch.float32; "
                                f"got {grad_dtype}")


def check_weight_copy(op: str, weight_copy: torch.Tensor, weight: torch.Tensor, dtype: torch.dtype) -> None:
    """ArgumentError unless ``weight_copy`` is a compute copy of ``weight`` for a ``dtype`` computation: of an fp32
    master weight, in ``dtype`` (fp16/bf16), its shape, on its device."""
    if not is_master(weight.dtype, dtype) or weight_copy.dtype != dtype or weight_copy.shape != weight.shape or \
            weight_copy.device != weight.device:
        raise ArgumentError(f"{op}: weight_copy {tuple(weight_copy.shape)} {weight_copy.dtype} on "
                            f"{weight_copy.device} must be a {dtype} copy of an fp32 master weight of the "
                            f"fp16/bf16 computation, shaped and placed like it (weight {tuple(weight.shape)} "
                            f"{weight.dtype} on {weight.device})")


def check_layer_operands(op: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         out_features: int, master_bias: bool = False) -> None:
    """Dtype, device and shape checks shared by conv2d and linear: x, weight and bias of one float dtype on
    the mode's device (``master_bias``: or an fp32 bias with an fp16/bf16 x), bias [out_features]."""
    check_float_dtype(op, x=x, weight=weight, bias=bias)
    check_device(op, x=x, weight=weight, bias=bias)
    bias_ok = bias is None or bias.dtype == x.dtype or (master_bias and is_master(bias.dtype, x.dtype))
    if weight.dtype != x.dtype or not bias_ok:
        raise ArgumentTypeError(f"{op}: x ({x.dtype}), weight ({weight.dtype}) and bias "
                                f"({None if bias is None else bias.dtype}) must have one dtype"
                                + (" (or an fp32 bias with an fp16/bf16 x)" if master_bias else ""))
    if weight.device != x.device or (bias is not None and bias.device != x.device):
        raise ArgumentError(f"{op}: x ({x.device}), weight ({weight.device}) and bias "
                            f"({None if bias is None else bias.device}) must be on one device")
    if bias is not None and tuple(bias.shape) != (out_features,):
        raise ArgumentError(f"{op}: bias must have shape ({out_features},), got {tuple(bias.shape)}")
