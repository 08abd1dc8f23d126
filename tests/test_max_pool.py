"""max_pool2d on the Triton kernels against torch.nn.functional.max_pool2d: output and input gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close

from alexnet_triton import nn, ops
from alexnet_triton.kernels import max_pool

# AlexNet's overlapping 3x3/2 pools (2012: 55->27, 27->13, 13->6; channels scaled down) and other geometries.
GEOMETRIES = [
    pytest.param((2, 12, 55, 55), 3, 2, 0, id="alexnet-pool1"),
    pytest.param((2, 32, 27, 27), 3, 2, 0, id="alexnet-pool2"),
    pytest.param((2, 32, 13, 13), 3, 2, 0, id="alexnet-pool5"),
    pytest.param((1, 5, 10, 7), 2, 2, 0, id="2x2-odd-width"),
    pytest.param((2, 3, 9, 12), 3, 1, 1, id="3x3-s1-pad1"),
    pytest.param((1, 4, 11, 8), (3, 2), (2, 1), (1, 0), id="rectangular"),
    pytest.param((1, 2, 14, 14), 5, 3, 2, id="5x5-s3-pad2"),
]


def reference(x, dy, kernel, stride, padding):
    y = F.max_pool2d(x, kernel, stride, padding)
    return y, torch.autograd.grad(y, x, dy)[0]


def run(x, dy, kernel, stride, padding, no_torch_fallback):
    with no_torch_fallback():
        y = ops.max_pool2d(x, kernel, stride, padding)
        return y, torch.autograd.grad(y, x, dy)[0]


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shape, kernel, stride, padding", GEOMETRIES)
def test_matches_torch_fp32(shape, kernel, stride, padding, channels_last, no_torch_fallback):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    dy = torch.randn(F.max_pool2d(x, kernel, stride, padding).shape, generator=gen)
    y_ref, dx_ref = reference(x, dy, kernel, stride, padding)
    y, dx = run(x, dy, kernel, stride, padding, no_torch_fallback)
    assert torch.equal(y, y_ref)
    assert_close(dx, dx_ref, "dx")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt) and dx.is_contiguous(memory_format=fmt)


def test_ties_after_relu_go_to_the_first_maximum(no_torch_fallback):
    """ReLU outputs: many windows are all zeros or hold repeated values; PyTorch picks the first."""
    gen = torch.Generator().manual_seed(1)
    x = F.relu(torch.randint(-3, 3, (2, 6, 15, 15), generator=gen).float()).requires_grad_()
    dy = torch.randn(2, 6, 7, 7, generator=gen)
    y, dx = run(x, dy, 3, 2, 0, no_torch_fallback)
    y_ref, dx_ref = reference(x, dy, 3, 2, 0)
    assert torch.equal(y, y_ref)
    assert_close(dx, dx_ref, "dx")


def test_nan_propagates_like_torch(no_torch_fallback):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 3, 9, 9, generator=gen)
    x[0, 0, 2, 2] = x[0, 1, 4, 5] = x[0, 1, 4, 6] = x[0, 2, 0, 0] = float("nan")
    x.requires_grad_()
    dy = torch.randn(1, 3, 4, 4, generator=gen)
    y, dx = run(x, dy, 3, 2, 0, no_torch_fallback)
    y_ref, dx_ref = reference(x, dy, 3, 2, 0)
    assert torch.equal(y.isnan(), y_ref.isnan()) and y.isnan().any()
    assert torch.equal(y.nan_to_num(), y_ref.nan_to_num())
    assert_close(dx, dx_ref, "dx")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_low_precision(dtype, no_torch_fallback):
    """The maximum is exact at any dtype; dx sums at most 4 routed values in fp32 then rounds once."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 8, 27, 27, generator=gen).to(dtype).requires_grad_()
    dy = torch.randn(2, 8, 13, 13, generator=gen).to(dtype)
    y, dx = run(x, dy, 3, 2, 0, no_torch_fallback)
    x64 = x.detach().double().requires_grad_()
    y64, dx64 = reference(x64, dy.double(), 3, 2, 0)
    assert y.dtype == dtype and torch.equal(y.double(), y64)
    assert torch.equal(dx, dx64.to(dtype))


def test_window_offsets_are_int8_and_routing_matches_torch_indices():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, 13, 13, generator=gen)
    _, window = max_pool.max_pool2d_forward(x, 3, 2)
    _, indices = F.max_pool2d(x, 3, 2, return_indices=True)
    oh = torch.arange(6).view(1, 1, 6, 1)
    ow = torch.arange(6).view(1, 1, 1, 6)
    flat = (oh * 2 + window.long() // 3) * 13 + (ow * 2 + window.long() % 3)
    assert window.dtype == torch.int8 and torch.equal(flat, indices)


def test_gradcheck_float64():
    x = torch.randn(1, 2, 7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5)).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: ops.max_pool2d(x, 3, 2, 1), (x,), fast_mode=True)


def test_module_is_a_drop_in(no_torch_fallback):
    x = torch.randn(2, 3, 11, 11)
    with no_torch_fallback():
        y = nn.MaxPool2d(3, 2)(x)
    assert torch.equal(y, torch.nn.MaxPool2d(3, 2)(x))
    with pytest.raises(ValueError, match="ceil_mode"):
        nn.MaxPool2d(3, 2, ceil_mode=True)


BAD_INPUTS = [
    ("3-D x", (2, 5, 5), dict(kernel_size=3), ValueError, r"x must be 4-D.*\(2, 5, 5\)"),
    ("kernel larger than input", (1, 1, 2, 2), dict(kernel_size=3), ValueError, r"larger than the input"),
    ("padding over half the kernel", (1, 1, 8, 8), dict(kernel_size=3, padding=2), ValueError,
     r"at most half the kernel"),
    ("zero kernel", (1, 1, 8, 8), dict(kernel_size=0), ValueError, r"must be >= 1"),
    ("bad kernel type", (1, 1, 8, 8), dict(kernel_size="3"), TypeError, r"kernel_size must be an int or a pair"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_rejected_with_a_clear_error(case):
    _, shape, kwargs, error, message = case
    with pytest.raises(error, match=message):
        ops.max_pool2d(torch.randn(shape), **kwargs)


def test_integer_input_is_rejected():
    with pytest.raises(TypeError, match="x has dtype torch.int64"):
        ops.max_pool2d(torch.zeros(1, 1, 4, 4, dtype=torch.long), 2)
