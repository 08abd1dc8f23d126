"""The mixed-precision policy, one rule for both backends, and the Triton ops' share of it.

Parameters stay fp32 and the model's forward runs under ``torch.autocast``, which casts per op: PyTorch's ops
by its op lists, the Triton ops as their PyTorch counterparts are cast (``autocast_operands``): conv2d and
linear compute in the autocast dtype, cross_entropy in fp32, the other layers in their input's dtype. linear and
conv2d take their fp32 parameters uncast (``autocast_master_operands``) and write their gradients in fp32:
same results, no cast launches. Once the optimizer has stepped, they read a low-precision compute copy of their
weight instead (``compute_copy``: half the bytes, the same bits), which the update writes beside the fp32 weight
(conv2d's kernels read only a weight of x's dtype: until then, each call casts its master weight).
No loss scaling here (training adds a GradScaler for fp16).
"""

from __future__ import annotations

import contextlib

import torch
from torch.utils.weak import WeakIdKeyDictionary

from .kernels import checks

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_on(device_type: str) -> bool:
    """Whether torch.autocast is on for ``device_type`` ("cpu", "cuda")."""
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)


def autocast_operands(*tensors: torch.Tensor | None, fp32: bool = False, device_type: str | None = None
                      ) -> tuple[torch.Tensor | None, ...]:
    """``tensors`` as torch.autocast hands them to an op when it is on for the first one's device (or
    ``device_type``): its floating-point tensors other than float64 cast to the autocast dtype (an op of autocast's
    lower-precision list: conv2d, linear) or to float32 (``fp32``: an op of its fp32 list, cross_entropy);
    otherwise unchanged."""
    device_type = device_type or tensors[0].device.type
    if not autocast_on(device_type):
        return tensors
    dtype = torch.float32 if fp32 else torch.get_autocast_dtype(device_type)
    return tuple(t.to(dtype) if t is not None and t.is_floating_point() and t.dtype != torch.float64 else t
                 for t in tensors)


def autocast_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype ``autocast_operands`` gives x for an op of autocast's lower-precision list, without casting it."""
    if not autocast_on(x.device.type) or not x.is_floating_point() or x.dtype == torch.float64:
        return x.dtype
    return torch.get_autocast_dtype(x.device.type)


def autocast_master_operands(x: torch.Tensor, *parameters: torch.Tensor | None
                             ) -> tuple[torch.Tensor | None, ...]:
    """``autocast_operands(x, *parameters)`` for a layer whose kernels take fp32 master parameters (linear,
    conv2d): the same casts, except that fp32 parameters stay fp32 when x becomes fp16/bf16 (``master_parameters``)."""
    (low_x,) = autocast_operands(x)
    return low_x, *master_parameters(x, low_x.dtype, *parameters)


def master_parameters(x: torch.Tensor, dtype: torch.dtype, *parameters: torch.Tensor | None
                      ) -> tuple[torch.Tensor | None, ...]:
    """``parameters`` of a layer on x computing in ``dtype`` (autocast's for x) whose kernels take fp32 master
    parameters: unchanged when ``dtype`` is fp16/bf16 and each is fp32 (or None: the kernels round what they load
    to x's dtype, the bits the cast would give, and write the gradients in fp32; no cast launch per call), else
    as ``autocast_operands`` casts them."""
    if dtype in AMP_DTYPES.values() and all(p is None or p.dtype == torch.float32 for p in parameters):
        return parameters
    return autocast_operands(*parameters, device_type=x.device.type)


def forward_context(device_type: str, dtype: torch.dtype | None):
    """torch.autocast to ``dtype`` when it is a low dtype (either backend; the images stay fp32: the first conv
    casts them); nothing otherwise."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype)


class ComputeCopy:
    """A copy of an fp32 master weight in a low compute dtype: round-to-nearest-even of each element, the bits the
    linear kernels' in-tile rounding of the master gives. The optimizer's update kernels write it in the same pass
    as the weight; ``version`` and ``data_ptr``: the weight's when it was written (None: not yet)."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype
        self.tensor: torch.Tensor | None = None
        self.version: int | None = None
        self.data_ptr: int | None = None


# master weight -> its copy, asked for by the layers that read it (weakly held: a freed weight drops its copy); not
# in any state_dict or checkpoint.
_COMPUTE_COPIES: WeakIdKeyDictionary = WeakIdKeyDictionary()


def compute_copy(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """The ``dtype`` copy of the fp32 master parameter ``weight`` (an nn.Parameter of a layer computing in fp16 or
    bf16; None for any other weight) for a layer to read instead of it, when the optimizer wrote it at the weight's
    present value: the weight is the same memory (``data_ptr``) at the same
    ``_version`` (every torch in-place op, ``load_state_dict`` and this project's mutating custom ops included,
    bump it; replacing ``.data`` changes data_ptr; an in-place write into ``.data`` or by a raw ``kernels``
    launcher goes unseen, as it escapes autograd's checks too). Otherwise None, and the copy is asked for: the
    optimizer's next update of ``weight`` writes it. Never while torch.compile traces (the compiled graph reads the
    master)."""
    if torch.compiler.is_compiling() or not isinstance(weight, torch.nn.Parameter) or \
            not checks.is_master(weight.dtype, dtype):
        return None
    copy = _COMPUTE_COPIES.get(weight)
    if copy is None or copy.dtype != dtype:
        _COMPUTE_COPIES[weight] = ComputeCopy(dtype)
        return None
    current = copy.version == weight._version and copy.data_ptr == weight.data_ptr()
    return copy.tensor if current else None


def copy_to_write(param: torch.Tensor) -> torch.Tensor | None:
    """The tensor an update of ``param`` writes its compute copy into (allocated at the first update after a layer
    asked for it; the same one after that: a captured CUDA graph's pointer), or None when none was asked for. The
    caller calls ``copy_written`` after the update."""
    copy = _COMPUTE_COPIES.get(param)
    if copy is None or param.dtype != torch.float32 or torch.compiler.is_compiling():
        return None
    if copy.tensor is None or copy.tensor.shape != param.shape or copy.tensor.stride() != param.stride() or \
            copy.tensor.device != param.device:
        copy.tensor = torch.empty_like(param, dtype=copy.dtype)
    return copy.tensor


def copy_written(param: torch.Tensor) -> None:
    """Record that the update just wrote ``param``'s compute copy from its present value."""
    copy = _COMPUTE_COPIES[param]
    copy.version, copy.data_ptr = param._version, param.data_ptr()
