"""The mixed-precision policy, one rule for both backends, and the Triton ops' share of it.

Parameters stay fp32 and the model's forward runs under ``torch.autocast``, which casts per op: PyTorch's ops
by its op lists, the Triton ops as their PyTorch counterparts are cast (``autocast_operands``): conv2d and
linear compute in the autocast dtype, cross_entropy in fp32, the other layers in their input's dtype. linear takes
its fp32 parameters uncast (``autocast_master_operands``): same results, no cast launches.
No loss scaling here (training adds a GradScaler for fp16).
"""

from __future__ import annotations

import contextlib

import torch

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_operands(*tensors: torch.Tensor | None, fp32: bool = False) -> tuple[torch.Tensor | None, ...]:
    """``tensors`` as torch.autocast hands them to an op when it is on for the first one's device: its
    floating-point tensors other than float64 cast to the autocast dtype (an op of autocast's lower-precision
    list: conv2d, linear) or to float32 (``fp32``: an op of its fp32 list, cross_entropy); otherwise unchanged."""
    device_type = tensors[0].device.type
    if not (torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)):
        return tensors
    dtype = torch.float32 if fp32 else torch.get_autocast_dtype(device_type)
    return tuple(t.to(dtype) if t is not None and t.is_floating_point() and t.dtype != torch.float64 else t
                 for t in tensors)


def autocast_master_operands(x: torch.Tensor, *parameters: torch.Tensor | None
                             ) -> tuple[torch.Tensor | None, ...]:
    """``autocast_operands(x, *parameters)`` for a layer whose kernels take fp32 master parameters (linear): the
    same casts, except that fp32 parameters stay fp32 when x becomes fp16/bf16 (the kernels round each loaded tile
    to x's dtype, the bits the cast would give, and write the gradients in fp32): no cast launch per call."""
    (low_x,) = autocast_operands(x)
    if low_x.dtype in AMP_DTYPES.values() and all(p is None or p.dtype == torch.float32 for p in parameters):
        return low_x, *parameters
    return autocast_operands(x, *parameters)


def forward_context(device_type: str, dtype: torch.dtype | None):
    """torch.autocast to ``dtype`` when it is a low dtype (either backend; the images stay fp32: the first conv
    casts them); nothing otherwise."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype)
