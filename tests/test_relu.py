"""The element-wise ReLU kernels (kernels/relu.py) against torch.relu and aten::threshold_backward."""

from __future__ import annotations

import pytest
import torch

from alexnet_triton.kernels.relu import relu_forward, threshold_backward
from alexnet_triton.parity import TOLERANCES

SHAPES = {"conv1-out": (2, 12, 13, 13), "fc": (3, 37), "odd-1d": (1031,), "scalar": ()}
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """The tolerance table's comparison, NaN where PyTorch has NaN (the inputs hold some)."""
    atol, rtol = TOLERANCES[expected.dtype]
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, equal_nan=True, msg=lambda m: f"{name}: {m}")


def _tensor(shape, dtype, channels_last=False):
    t = torch.randn(shape, dtype=torch.float64).to(dtype)
    if t.numel():
        t.view(-1)[:: 7] = float("nan")
        t.view(-1)[1:: 11] = 0.0
    return t.to(memory_format=torch.channels_last) if channels_last else t


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_relu_and_its_gradient_match_pytorch(shape, dtype):
    x, dy = _tensor(shape, dtype), _tensor(shape, dtype)
    y = relu_forward(x)
    assert_close(y, torch.relu(x), "relu")
    threshold = 0.25
    assert_close(threshold_backward(dy, x, threshold), torch.ops.aten.threshold_backward(dy, x, threshold), "dx")


def test_channels_last_and_in_place():
    x = _tensor((2, 5, 4, 3), torch.float32, channels_last=True)
    expected = torch.relu(x)
    y = relu_forward(x)
    assert y.stride() == x.stride()
    assert_close(y, expected, "relu")
    same = relu_forward(x, inplace=True)
    assert same is x
    assert_close(x, expected, "in place")
    dy = _tensor((2, 5, 4, 3), torch.float32, channels_last=True)
    dx = threshold_backward(dy, x)
    assert dx.stride() == x.stride()
    assert_close(dx, torch.ops.aten.threshold_backward(dy, x, 0), "dx")


def test_refuses_what_it_cannot_take():
    x = torch.randn(4, 6)
    with pytest.raises(ValueError, match="x .*must be contiguous or channels_last"):
        relu_forward(x[:, ::2])
    with pytest.raises(TypeError, match="dtype torch.int64"):
        relu_forward(torch.arange(4))
    with pytest.raises(ValueError, match="must match"):
        threshold_backward(torch.randn(4, 6), torch.randn(6, 4))
