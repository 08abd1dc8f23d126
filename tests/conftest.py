"""Shared test machinery: the PyTorch-fallback guard, tolerances, and the interpreter's bf16 dot fix."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from alexnet_triton.kernels import runtime
from torch.utils._python_dispatch import TorchDispatchMode

import alexnet_triton  # noqa: F401  (fixes the execution mode before Triton is imported)

# fp32/fp64: absolute and relative tolerance against PyTorch at the same dtype
# (the interpreter computes fp32 dots exactly; only summation order differs).
# fp16/bf16: error against an fp64 reference may be at most
# LOW_PRECISION_FACTOR x PyTorch's own error at that dtype + atol.
TOLERANCES = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-4, 1e-4),
    torch.float16: (2e-3, 0.0),
    torch.bfloat16: (1.6e-2, 0.0),
}
LOW_PRECISION_FACTOR = 2.0

# Triton 3.7.1's interpreter stores bf16 as raw uint16 and (1) multiplies those
# integers in tl.dot, (2) truncates fp32 -> bf16 casts. A GPU multiplies bf16
# exactly, accumulates in fp32 and rounds casts to nearest-even; the patch
# below does the same in numpy, so bf16 numerics can be tested on the CPU.
# Loads, stores and bf16 -> fp32 casts are already right.
PATCHED_TRITON = "3.7.1"


def _patch_interpreter_bf16() -> bool:
    import numpy as np
    import triton
    import triton.language as tl
    from triton.runtime import interpreter

    if triton.__version__ != PATCHED_TRITON:
        return False
    builder = interpreter.InterpreterBuilder
    original_dot, original_cast = builder.create_dot, builder.cast_impl

    def bf16_bits_to_fp32(handle):
        return interpreter.TensorHandle((handle.data.astype(np.uint32) << 16).view(np.float32), tl.float32)

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if a.dtype == tl.bfloat16 and b.dtype == tl.bfloat16:
            a, b = bf16_bits_to_fp32(a), bf16_bits_to_fp32(b)
        return original_dot(self, a, b, d, input_precision, max_num_imprecise_acc)

    def cast_impl(self, src, dst_type):
        if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
            bits = src.data.astype(np.float32).view(np.uint32)
            rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
            return interpreter.TensorHandle(np.where(np.isnan(src.data), np.uint16(0x7FC0), rounded), tl.bfloat16)
        return original_cast(self, src, dst_type)

    builder.create_dot, builder.cast_impl = create_dot, cast_impl
    return True


BF16_IN_INTERPRETER = runtime.INTERPRETER and _patch_interpreter_bf16()


def skip_unless_bf16_testable(dtype: torch.dtype) -> None:
    if dtype == torch.bfloat16 and runtime.INTERPRETER and not BF16_IN_INTERPRETER:
        pytest.skip(f"bf16 tl.dot is wrong in this Triton's interpreter; the fix is pinned to {PATCHED_TRITON}")


FORBIDDEN_ATEN = {
    "convolution", "convolution_backward", "_convolution", "conv2d", "cudnn_convolution",
    "mkldnn_convolution", "_slow_conv2d_forward", "_slow_conv2d_backward", "thnn_conv2d",
    "max_pool2d", "max_pool2d_with_indices", "max_pool2d_with_indices_backward", "mkldnn_max_pool2d",
    "avg_pool3d", "avg_pool3d_backward", "avg_pool2d",  # F.local_response_norm's building blocks
    "_log_softmax", "_log_softmax_backward_data", "_softmax", "_softmax_backward_data",  # F.cross_entropy's
    "nll_loss_forward", "nll_loss_backward", "nll_loss", "nll_loss_nd", "cross_entropy_loss",
    "_fused_sgd", "_fused_sgd_", "_foreach_add", "_foreach_add_", "_foreach_mul", "_foreach_mul_",  # torch SGD's
    "linear", "addmm", "mm", "matmul", "bmm", "addmv", "mv",  # F.linear and its backward
    "dropout", "feature_dropout", "native_dropout", "native_dropout_backward", "bernoulli", "bernoulli_",
}


class _ForbidTorchCompute(TorchDispatchMode):
    """Raise when a forbidden ATen op is dispatched (a silent PyTorch fallback)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in FORBIDDEN_ATEN:
            raise AssertionError(f"PyTorch op {func} ran inside the Triton path")
        return func(*args, **(kwargs or {}))


@pytest.fixture
def no_torch_fallback(monkeypatch):
    """A context manager: inside it, PyTorch's convolution, pooling, LRN, cross-entropy, SGD, linear (matmul)
    and dropout kernels raise (Python and ATen entry points)."""

    @contextlib.contextmanager
    def guard():
        def forbidden(name):
            def raise_(*args, **kwargs):
                raise AssertionError(f"{name} called inside the Triton path")
            return raise_

        with monkeypatch.context() as patch:
            patch.setattr(F, "conv2d", forbidden("F.conv2d"))
            patch.setattr(F, "max_pool2d", forbidden("F.max_pool2d"))
            patch.setattr(F, "local_response_norm", forbidden("F.local_response_norm"))
            for name in ("cross_entropy", "log_softmax", "softmax", "nll_loss"):
                patch.setattr(F, name, forbidden(f"F.{name}"))
            for name in ("linear", "dropout"):
                patch.setattr(F, name, forbidden(f"F.{name}"))
            patch.setattr(torch.nn.grad, "conv2d_input", forbidden("torch.nn.grad.conv2d_input"))
            patch.setattr(torch.nn.grad, "conv2d_weight", forbidden("torch.nn.grad.conv2d_weight"))
            with _ForbidTorchCompute():
                yield

    return guard


def assert_close(actual: torch.Tensor, expected: torch.Tensor, name: str = "") -> None:
    """Same-dtype comparison with the TOLERANCES table."""
    atol, rtol = TOLERANCES[expected.dtype]
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")


def assert_low_precision_close(actual: torch.Tensor, torch_result: torch.Tensor, reference64: torch.Tensor,
                               name: str = "") -> None:
    """Error of ``actual`` vs the fp64 reference <= factor x PyTorch's error + atol (fp16/bf16)."""
    atol, _ = TOLERANCES[actual.dtype]
    ours = (actual.double() - reference64).abs().max().item()
    theirs = (torch_result.double() - reference64).abs().max().item()
    scale = reference64.abs().max().item()
    bound = LOW_PRECISION_FACTOR * theirs + atol * max(scale, 1.0)
    assert ours <= bound, f"{name}: max error {ours:.3g} vs fp64 > bound {bound:.3g} (PyTorch's: {theirs:.3g})"


@pytest.fixture(autouse=True)
def poison_outputs(monkeypatch):
    """Every kernel output starts as NaN, so an unwritten element fails the comparison."""
    monkeypatch.setattr(runtime, "poison_outputs", True)
