"""Unmodified PyTorch models on the Triton kernels: while active, the ATen operators this project implements
dispatch to its kernels (``use_kernels()``, or ``enable()`` / ``disable()``).

The overrides are registered at the dispatcher for this mode's device (CPU tensors in the interpreter, CUDA
tensors on a GPU), at its autograd key (the Triton ops bring their own backward) and at its backend key (for
code under ``torch.inference_mode``, which skips autograd):

  aten::conv2d (both overloads)         ops.conv2d
  aten::linear                          ops.linear
  aten::max_pool2d(_with_indices)       ops.max_pool2d
  aten::dropout, aten::dropout_         ops.dropout
  aten::cross_entropy_loss              ops.cross_entropy (PyTorch's log_softmax + nll_loss in one kernel)
  aten::_adaptive_avg_pool2d..          only where the output is the input's own size (a copy, no arithmetic)
  aten::_fused_sgd_                     kernels.sgd (torch.optim.SGD(..., fused=True))
  aten::relu, relu_, threshold_backward kernels.relu (backend key only: autograd's own formula calls
                                        threshold_backward, which runs here)
  F.local_response_norm                 ops.local_response_norm (a Python composite in PyTorch, not an ATen
                                        operator: the function itself is swapped while active)

fp32 convolutions and linears use TF32 exactly when PyTorch would (``torch.backends.cudnn.allow_tf32``,
``torch.backends.cuda.matmul.allow_tf32``; never in the interpreter).

A call the kernels do not take (another dtype or device, a geometry they refuse) falls through to PyTorch,
visibly: it is counted in ``FALLBACKS`` by operator and reason, logged once per operator, and raises
``KernelFallback`` under ``strict=True``. Where PyTorch itself rejects the arguments, the caller gets
PyTorch's own exception: a refusal by the kernels is checked against PyTorch's implementation first.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections import Counter
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from . import ops
from .kernels import relu, runtime, sgd

LOG = logging.getLogger("alexnet_triton")
# (ATen operator, reason) -> calls that fell through to PyTorch while the kernels were in use
FALLBACKS: Counter[tuple[str, str]] = Counter()
# ATen operator -> calls the kernels ran
HANDLED: Counter[str] = Counter()
_REDUCTIONS = ("none", "mean", "sum")  # aten's reduction enum, in order
_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class KernelFallback(RuntimeError):
    """A call under ``use_kernels(strict=True)`` that the Triton kernels do not take."""


class _Active:
    """The registrations while the kernels are in use (nesting counted)."""

    depth = 0
    strict: list[bool] = []
    libraries: list[torch.library.Library] = []
    local_response_norm: Callable | None = None
    logged: set[str] = set()


def _keys() -> tuple[str, str]:
    """(autograd key, backend key) of the device this mode's kernels take."""
    return ("AutogradCPU", "CPU") if runtime.INTERPRETER else ("AutogradCUDA", "CUDA")


def _takes(*tensors: torch.Tensor | None) -> str | None:
    """None when the kernels take these tensors (device and dtype), else the reason they do not."""
    wanted = "cpu" if runtime.INTERPRETER else "cuda"
    dtypes = _SUPPORTED_DTYPES + ((torch.float64,) if runtime.INTERPRETER else ())
    for t in tensors:
        if t is None:
            continue
        if t.device.type != wanted:
            return f"device {t.device.type}"
        if t.dtype not in dtypes:
            return f"dtype {t.dtype}"
    return None


def _note_fall_through(name: str, reason: str) -> None:
    """Count and log (once per operator) a call the kernels do not take; KernelFallback under strict."""
    if _Active.strict and _Active.strict[-1]:
        raise KernelFallback(f"use_kernels(strict=True): aten::{name} falls through to PyTorch ({reason})")
    FALLBACKS[name, reason] += 1
    if name not in _Active.logged:
        _Active.logged.add(name)
        LOG.warning("alexnet_triton.use_kernels: aten::%s runs on PyTorch (%s); alexnet_triton.dispatch.FALLBACKS "
                    "counts every such call", name, reason)


def _fall_through(name: str, reason: str, pytorch: Callable, *args, **kwargs):
    """PyTorch's result for a ``name`` call the kernels do not take (``_note_fall_through``)."""
    _note_fall_through(name, reason)
    return pytorch(*args, **kwargs)


def _kernels_or_pytorch(name: str, ours: Callable, pytorch: Callable, *args, **kwargs):
    """``ours(*args, **kwargs)``; where the kernels refuse the arguments, PyTorch's: its own exception where it
    rejects them too (class and message as without the kernels), else its result as a counted fall-through."""
    try:
        result = ours(*args, **kwargs)
    except (ValueError, TypeError, NotImplementedError) as refusal:
        result = pytorch(*args, **kwargs)
        _note_fall_through(name, f"{type(refusal).__name__}: {refusal}")
        return result
    HANDLED[name] += 1
    return result


def _precision(tf32_allowed: bool) -> str:
    return "tf32" if tf32_allowed and not runtime.INTERPRETER else "ieee"


def _conv2d(pytorch: Callable) -> Callable:
    def conv2d(input, weight, bias=None, stride=(1,), padding=(0,), dilation=(1,), groups=1):
        reason = _takes(input, weight, bias)
        if reason:
            return _fall_through("conv2d", reason, pytorch, input, weight, bias, stride, padding, dilation, groups)
        precision = _precision(torch.backends.cudnn.allow_tf32)

        def ours(x, w, b, s, p, d, g):
            return ops.conv2d(x, w, b, _pair(s), p if isinstance(p, str) else _pair(p), _pair(d), g,
                              precision=precision)
        return _kernels_or_pytorch("conv2d", ours, pytorch, input, weight, bias, stride, padding, dilation, groups)
    return conv2d


def _pair(values) -> int | tuple[int, int]:
    """An aten int[2] argument (one value standing for both) as the ops take it."""
    values = tuple(values) if isinstance(values, (list, tuple)) else (values,)
    return values[0] if len(values) == 1 else values


def _linear(input, weight, bias=None):
    pytorch = torch.ops.aten.linear.default.decompose
    reason = _takes(input, weight, bias)
    if reason:
        return _fall_through("linear", reason, pytorch, input, weight, bias)
    precision = _precision(torch.backends.cuda.matmul.allow_tf32)
    return _kernels_or_pytorch("linear", lambda *a: ops.linear(*a, precision=precision), pytorch, input, weight,
                               bias)


def _max_pool2d(return_indices: bool, pytorch: Callable) -> Callable:
    name = "max_pool2d_with_indices" if return_indices else "max_pool2d"

    def max_pool2d(input, kernel_size, stride=(), padding=(0,), dilation=(1,), ceil_mode=False):
        args = (input, kernel_size, stride, padding, dilation, ceil_mode)
        reason = _takes(input)
        if reason:
            return _fall_through(name, reason, pytorch, *args)
        return _kernels_or_pytorch(
            name, lambda x, k, s, p, d, c: ops.max_pool2d(x, _pair(k), _pair(s) if len(s) else None, _pair(p),
                                                           _pair(d), c, return_indices), pytorch, *args)
    return max_pool2d


def _dropout(inplace: bool, pytorch: Callable) -> Callable:
    name = "dropout_" if inplace else "dropout"

    def dropout(input, p, train):
        reason = _takes(input)
        if reason:
            return _fall_through(name, reason, pytorch, input, p, train)
        return _kernels_or_pytorch(name, lambda x, q, t: ops.dropout(x, q, t, inplace), pytorch, input, p, train)
    return dropout


def _cross_entropy_loss(input, target, weight=None, reduction=1, ignore_index=-100, label_smoothing=0.0):
    pytorch = torch.ops.aten.cross_entropy_loss.default.decompose
    args = (input, target, weight, reduction, ignore_index, label_smoothing)
    reason = _takes(input, weight)
    if reason:
        return _fall_through("cross_entropy_loss", reason, pytorch, *args)
    return _kernels_or_pytorch(
        "cross_entropy_loss", lambda x, t, w, r, i, s: ops.cross_entropy(
            x, t, w, ignore_index=i, reduction=_REDUCTIONS[r], label_smoothing=s), pytorch, *args)


def _adaptive_avg_pool2d(input, output_size):
    pytorch = torch.ops.aten.adaptive_avg_pool2d.default.decompose
    if tuple(output_size) != tuple(input.shape[-2:]):
        return _fall_through("adaptive_avg_pool2d", f"output {tuple(output_size)} is not the input's size",
                             pytorch, input, output_size)
    HANDLED["adaptive_avg_pool2d"] += 1
    return input.clone()  # every window is one pixel: the average is the pixel


def _relu(inplace: bool) -> Callable:
    name = "relu_" if inplace else "relu"

    def relu_op(input):
        pytorch = (lambda x: x.clamp_min_(0)) if inplace else (lambda x: torch.clamp_min(x, 0))  # PyTorch's relu
        reason = _takes(input) or (None if relu.dense(input) else "not contiguous or channels_last")
        if reason:
            return _fall_through(name, reason, pytorch, input)
        HANDLED[name] += 1
        return relu.relu_forward(input, inplace)
    return relu_op


def _threshold_backward(grad_output, self, threshold):
    def pytorch(dy, y, t):
        return torch.where(y <= t, torch.zeros_like(dy), dy)
    reason = _takes(grad_output, self) or (
        None if relu.dense(self) and grad_output.stride() == self.stride() else "operands in different layouts")
    if reason:
        return _fall_through("threshold_backward", reason, pytorch, grad_output, self, threshold)
    HANDLED["threshold_backward"] += 1
    return relu.threshold_backward(grad_output, self, threshold)


def _fused_sgd_(params, grads, momentum_buffers, *, weight_decay, momentum, lr, dampening, nesterov, maximize,
                is_first_step, grad_scale=None, found_inf=None):
    """torch.optim.SGD(fused=True)'s update of a parameter group, one kernel launch (``kernels.sgd``)."""
    arguments = dict(weight_decay=weight_decay, momentum=momentum, lr=lr, dampening=dampening, nesterov=nesterov,
                     maximize=maximize, is_first_step=is_first_step, grad_scale=grad_scale, found_inf=found_inf)
    reason = _takes(*params, *grads) or (
        "a gradient scaler's grad_scale / found_inf" if grad_scale is not None or found_inf is not None else None
    ) or (f"dampening {dampening}" if dampening else None)
    if reason:
        return _fall_through("_fused_sgd_", reason, _unregistered(torch.ops.aten._fused_sgd_.default), params, grads,
                             momentum_buffers, **arguments)
    buffers = list(momentum_buffers) if momentum else [None] * len(params)
    if momentum and is_first_step:  # PyTorch's first step starts the buffer at the gradient: 0 * momentum + grad
        for buffer in buffers:
            buffer.zero_()
    HANDLED["_fused_sgd_"] += 1
    sgd.sgd_steps(list(params), list(grads), buffers, lr=lr, momentum=momentum, weight_decay=weight_decay,
                  nesterov=nesterov, maximize=maximize)


def _local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0):
    reason = _takes(input)
    if reason:
        return _fall_through("local_response_norm", reason, _Active.local_response_norm, input, size, alpha, beta,
                             k)
    return _kernels_or_pytorch("local_response_norm", ops.local_response_norm, _Active.local_response_norm, input,
                               size, alpha, beta, k)


def _register() -> list[torch.library.Library]:
    """The overrides, registered; the returned libraries undo them when destroyed."""
    autograd, backend = _keys()
    aten = torch.ops.aten
    overrides = {
        "conv2d": _conv2d(aten.conv2d.default.decompose),
        "conv2d.padding": _conv2d(aten.conv2d.padding.decompose),
        "linear": _linear,
        "max_pool2d": _max_pool2d(False, aten.max_pool2d.default.decompose),
        "max_pool2d_with_indices": _max_pool2d(True, _unregistered(aten.max_pool2d_with_indices.default)),
        "dropout": _dropout(False, aten.dropout.default.decompose),
        "dropout_": _dropout(True, aten.dropout_.default.decompose),
        "cross_entropy_loss": _cross_entropy_loss,
        "adaptive_avg_pool2d": _adaptive_avg_pool2d,
        "_fused_sgd_": _fused_sgd_,
        "_fused_sgd_.tensor_lr": _fused_sgd_,
    }
    below_autograd = {"relu": _relu(False), "relu_": _relu(True), "threshold_backward": _threshold_backward}
    libraries = [torch.library.Library("aten", "IMPL"), torch.library.Library("aten", "IMPL")]
    with _quiet_overrides():
        for name, fn in overrides.items():
            libraries[0].impl(name, fn, autograd)
            libraries[1].impl(name, fn, backend)
        for name, fn in below_autograd.items():
            libraries[1].impl(name, fn, backend)
    return libraries


def _unregistered(op: torch._ops.OpOverload) -> Callable:
    """``op`` as PyTorch runs it, past this module's overrides of its autograd and backend keys."""
    def call(*args, **kwargs):
        with _disabled_overrides():
            return op(*args, **kwargs)
    return call


@contextlib.contextmanager
def _disabled_overrides() -> Iterator[None]:
    libraries, _Active.libraries = _Active.libraries, []
    for library in libraries:
        library._destroy()
    try:
        yield
    finally:
        _Active.libraries = _register()


@contextlib.contextmanager
def _quiet_overrides() -> Iterator[None]:
    """PyTorch warns at every override of a registered kernel: these overrides are the point."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Oo]verrid")
        yield


def enable(strict: bool = False) -> None:
    """Route the operators above to the Triton kernels until ``disable()`` (calls nest: each enable needs its
    disable). strict: a call the kernels do not take raises ``KernelFallback`` instead of running on PyTorch."""
    if _Active.depth == 0:
        _Active.libraries = _register()
        _Active.local_response_norm = F.local_response_norm
        F.local_response_norm = _local_response_norm
    _Active.depth += 1
    _Active.strict.append(strict)


def disable() -> None:
    """Undo the latest ``enable()``; the last one restores PyTorch's kernels."""
    if _Active.depth == 0:
        raise RuntimeError("alexnet_triton.disable(): the kernels are not enabled")
    _Active.depth -= 1
    _Active.strict.pop()
    if _Active.depth == 0:
        for library in _Active.libraries:
            library._destroy()
        _Active.libraries = []
        F.local_response_norm = _Active.local_response_norm


@contextlib.contextmanager
def use_kernels(strict: bool = False) -> Iterator[None]:
    """Within the block, the operators above run on the Triton kernels (``enable`` / ``disable``)."""
    enable(strict)
    try:
        yield
    finally:
        disable()
