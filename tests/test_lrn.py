"""local_response_norm on the Triton kernels against torch.nn.functional.local_response_norm."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close, assert_low_precision_close

from alexnet_triton import nn, ops
from alexnet_triton.kernels import lrn as lrn_kernels

# (shape, size, alpha, beta, k): AlexNet's (channels scaled), the paper-literal alpha, and others;
# channel counts below, equal to and not divisible by a power-of-two block.
CASES = [
    pytest.param((2, 12, 7, 7), 5, 1e-4, 0.75, 2.0, id="alexnet-caffe-alpha"),
    pytest.param((2, 32, 5, 5), 5, 5e-4, 0.75, 2.0, id="alexnet-paper-alpha"),
    pytest.param((1, 3, 4, 6), 5, 1e-4, 0.75, 1.0, id="fewer-channels-than-window"),
    pytest.param((2, 7, 3, 5), 3, 0.5, 0.75, 1.0, id="size3-strong-alpha"),
    pytest.param((1, 20, 4, 4), 7, 1.0, 0.5, 1.5, id="size7"),
    pytest.param((1, 33, 2, 3), 1, 0.3, 1.2, 0.8, id="size1-33-channels"),
    pytest.param((2, 9, 3, 4), 2, 0.5, 0.75, 1.0, id="size2"),
    pytest.param((1, 11, 3, 3), 4, 0.8, 0.75, 1.0, id="size4"),
    pytest.param((1, 5, 2, 3), 6, 1.0, 0.5, 1.5, id="size6-over-the-channels"),
]
# x [N, C, *spatial] of every rank F.local_response_norm takes, each with an even and an odd size.
RANKS = [
    pytest.param((2, 7, 5), 2, id="3d-size2"),
    pytest.param((1, 9, 4), 5, id="3d-size5"),
    pytest.param((2, 6, 2, 3, 3), 4, id="5d-size4"),
    pytest.param((1, 7, 3, 2, 2), 3, id="5d-size3"),
    pytest.param((1, 5, 2, 1, 2, 3), 6, id="6d-size6"),
]


def make(shape, dtype=torch.float32, channels_last=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen) * 2
    dy = torch.randn(shape, generator=gen)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return x.to(dtype).requires_grad_(), dy.to(dtype)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shape, size, alpha, beta, k", CASES)
def test_matches_torch_fp32(shape, size, alpha, beta, k, channels_last, no_torch_fallback):
    x, dy = make(shape, channels_last=channels_last)
    with no_torch_fallback():
        y = ops.local_response_norm(x, size, alpha, beta, k)
        dx, = torch.autograd.grad(y, x, dy)
    y_ref = F.local_response_norm(x, size, alpha, beta, k)
    dx_ref, = torch.autograd.grad(y_ref, x, dy)
    assert_close(y, y_ref, "y")
    assert_close(dx, dx_ref, "dx")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt) and dx.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_low_precision_against_fp64(dtype, no_torch_fallback):
    """PyTorch's CPU LRN has no fp16/bf16 kernels (avg_pool3d), so its share of the bound is its fp32
    result rounded to the dtype: the error of any implementation that does the math in fp32."""
    x, dy = make((2, 16, 5, 5), dtype=dtype)
    with no_torch_fallback():
        y = ops.local_response_norm(x, 5, 1e-4, 0.75, 2.0)
        dx, = torch.autograd.grad(y, x, dy)
    x32 = x.detach().float().requires_grad_()
    y32 = F.local_response_norm(x32, 5, 1e-4, 0.75, 2.0)
    dx32, = torch.autograd.grad(y32, x32, dy.float())
    x64 = x.detach().double().requires_grad_()
    y64 = F.local_response_norm(x64, 5, 1e-4, 0.75, 2.0)
    dx64, = torch.autograd.grad(y64, x64, dy.double())
    assert y.dtype == dtype and dx.dtype == dtype
    assert_low_precision_close(y, y32.to(dtype), y64, "y")
    assert_low_precision_close(dx, dx32.to(dtype), dx64, "dx")


@pytest.mark.parametrize("shape, size", [pytest.param((1, 6, 2, 3), 3, id="4d-size3"),
                                         pytest.param((1, 6, 2, 3), 4, id="4d-size4"), *RANKS])
def test_gradcheck_float64(shape, size):
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: ops.local_response_norm(x, size, 0.5, 0.75, 1.0), (x,), fast_mode=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("shape, size", RANKS)
def test_every_rank_matches_torch(shape, size, dtype, no_torch_fallback):
    """3-D [N, C, L] and 5-D/6-D inputs, even and odd window sizes: output and input gradient."""
    x, dy = make(shape, dtype=dtype)
    with no_torch_fallback():
        y = ops.local_response_norm(x, size, 0.7, 0.75, 1.0)
        dx, = torch.autograd.grad(y, x, dy)
    y_ref = F.local_response_norm(x, size, 0.7, 0.75, 1.0)
    dx_ref, = torch.autograd.grad(y_ref, x, dy)
    assert_close(y, y_ref, "y")
    assert_close(dx, dx_ref, "dx")


def strided(t: torch.Tensor, view: str) -> torch.Tensor:
    """A non-contiguous view holding t's values: every other element of a twice-as-wide last dimension
    ("step"), or t's last two dimensions stored swapped ("swapped"; from 5-D on they cannot merge)."""
    if view == "step":
        wide = torch.stack([t, torch.full_like(t, float("nan"))], dim=-1).flatten(-2)
        return wide[..., ::2]
    return t.transpose(-1, -2).contiguous().transpose(-1, -2)


@pytest.mark.parametrize("view", ["step", "swapped"])
@pytest.mark.parametrize("shape, size", [pytest.param((2, 6, 3, 5), 4, id="4d-size4"), *RANKS[::2]])
def test_strided_operands(shape, size, view, no_torch_fallback):
    """x and dy as non-contiguous views (x through autograd, dy as the cotangent; the launchers directly too)."""
    x, dy = make(shape, dtype=torch.float64)
    x_view, dy_view = strided(x.detach(), view).requires_grad_(), strided(dy, view)
    assert not x_view.is_contiguous() and not dy_view.is_contiguous()
    with no_torch_fallback():
        y = ops.local_response_norm(x_view, size, 0.7, 0.75, 1.0)
        dx, = torch.autograd.grad(y, x_view, dy_view)
        dx_direct = lrn_kernels.lrn_backward(dy_view, x_view.detach(), size, 0.7, 0.75, 1.0)
    y_ref = F.local_response_norm(x, size, 0.7, 0.75, 1.0)
    dx_ref, = torch.autograd.grad(y_ref, x, dy)
    assert_close(y, y_ref, "y")
    assert_close(dx, dx_ref, "dx")
    assert_close(dx_direct, dx_ref, "dx (launcher)")


def test_stride_zero_gradient(no_torch_fallback):
    """The cotangent of a sum is an expanded (stride-0) tensor."""
    x, _ = make((2, 5, 3, 4), dtype=torch.float64)
    with no_torch_fallback():
        dx, = torch.autograd.grad(ops.local_response_norm(x, 2, 0.7, 0.75, 1.0).sum(), x)
    dx_ref, = torch.autograd.grad(F.local_response_norm(x, 2, 0.7, 0.75, 1.0).sum(), x)
    assert_close(dx, dx_ref, "dx")


@pytest.mark.parametrize("shape", [(0, 4, 3), (2, 0, 3), (2, 4, 0), (0, 3, 2, 2), (1, 3, 0, 2), (1, 2, 2, 0, 3)])
def test_empty_input(shape, no_torch_fallback):
    x = torch.randn(shape, requires_grad=True)
    with no_torch_fallback():
        y = ops.local_response_norm(x, 2)
        y.sum().backward()
    assert y.shape == F.local_response_norm(x, 2).shape and x.grad.shape == x.shape


@pytest.mark.parametrize("shape, size", [((2, 8, 3, 3), 5), ((2, 8, 3), 2)])
def test_module_is_a_drop_in(shape, size, no_torch_fallback):
    x = torch.randn(shape)
    with no_torch_fallback():
        y = nn.LocalResponseNorm(size, alpha=1e-4, beta=0.75, k=2.0)(x)
    assert_close(y, torch.nn.LocalResponseNorm(size, alpha=1e-4, beta=0.75, k=2.0)(x), "y")


BAD_INPUTS = [
    ("2-D x", (4, 5), dict(size=5), ValueError, r"at least 3 dimensions.*\(4, 5\)"),
    ("zero size", (1, 4, 3, 3), dict(size=0), ValueError, r"positive int, got 0"),
    ("float size", (1, 4, 3, 3), dict(size=2.0), ValueError, r"positive int, got 2.0"),
    ("non-positive k", (1, 4, 3, 3), dict(size=3, k=0.0), ValueError, r"k must be > 0"),
    ("negative alpha", (1, 4, 3), dict(size=3, alpha=-1.0), ValueError, r"alpha >= 0"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_rejected_with_a_clear_error(case):
    _, shape, kwargs, error, message = case
    with pytest.raises(error, match=message):
        ops.local_response_norm(torch.randn(shape), **kwargs)


def test_integer_input_is_rejected():
    with pytest.raises(TypeError, match="x has dtype torch.int32"):
        ops.local_response_norm(torch.ones(1, 4, 3, 3, dtype=torch.int32), 3)
