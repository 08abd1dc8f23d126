"""Shared test machinery: the PyTorch-fallback guard and output poisoning (tolerances: alexnet_triton.parity)."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from alexnet_triton.kernels import runtime
from alexnet_triton.ops import library
from alexnet_triton.parity import TOLERANCES, assert_close, assert_low_precision_close  # noqa: F401  (for tests)

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
        if func.namespace == "aten" and func.overloadpacket.__name__ in FORBIDDEN_ATEN:
            raise AssertionError(f"PyTorch op {func} ran inside the Triton path")
        return library.run_under(self, func, args, kwargs)  # this project's operators: guarded inside too


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


@pytest.fixture
def no_torch_compute():
    """A context manager: inside it, PyTorch's convolution, pooling, cross-entropy, SGD, linear and dropout ATen
    kernels raise (the ATen half of ``no_torch_fallback``, for code that calls the F.* entry points, as unmodified
    models do)."""
    return _ForbidTorchCompute


@pytest.fixture(autouse=True)
def poison_outputs(monkeypatch):
    """Every kernel output starts as NaN, so an unwritten element fails the comparison."""
    monkeypatch.setattr(runtime, "poison_outputs", True)
