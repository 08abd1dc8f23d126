"""space_to_depth / depth_to_space (kernels/space_to_depth.py) against PyTorch reshapes: every element, exactly."""

from __future__ import annotations

import pytest
import torch

from alexnet_triton.kernels import runtime
from alexnet_triton.kernels.space_to_depth import depth_to_space, space_to_depth

DTYPES = [pytest.param(d, id=str(d).removeprefix("torch."))
          for d in (torch.float16, torch.bfloat16, torch.float32, torch.float64)]
LAYOUTS = ["nchw", "channels_last", "strided"]


def laid_out(t: torch.Tensor, layout: str) -> torch.Tensor:
    """t's values as NCHW, channels_last, or a view whose width has stride 2 (no dense layout)."""
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "strided":
        return torch.stack([t, t], dim=-1).flatten(-2)[..., ::2]
    return t.contiguous()


def reference_to_depth(t, block, size, pad, extent):
    """space_to_depth by padding and reshaping: t placed at (pad_h, pad_w) of a zero canvas of size * block."""
    N, C = t.shape[:2]
    (Hb, Wb), (pad_h, pad_w), (height, width) = size, pad, extent
    canvas = t.new_zeros(N, C, Hb * block, Wb * block)
    rows, cols = min(height, Hb * block - pad_h), min(width, Wb * block - pad_w)
    canvas[:, :, pad_h:pad_h + rows, pad_w:pad_w + cols] = t[:, :, :rows, :cols]
    return canvas.reshape(N, C, Hb, block, Wb, block).permute(0, 3, 5, 1, 2, 4).reshape(N, C * block * block, Hb, Wb)


def reference_from_depth(t, block, shape, pad):
    """depth_to_space by reshaping t's blocks back to pixels and cutting out shape at (pad_h, pad_w)."""
    N, C, H, W = shape
    Hb, Wb = t.shape[2:]
    canvas = t.reshape(N, block, block, C, Hb, Wb).permute(0, 3, 4, 1, 5, 2).reshape(N, C, Hb * block, Wb * block)
    canvas = torch.nn.functional.pad(canvas, (0, max(0, pad[1] + W - Wb * block), 0, max(0, pad[0] + H - Hb * block)))
    return canvas[:, :, pad[0]:pad[0] + H, pad[1]:pad[1] + W]


# (x shape, block, size, pad, extent): conv1's map (227 -> 57 blocks of 4, the last row/column zero), torchvision's
# (pad 2 both sides), a block that does not divide, an extent that cuts rows and columns, a map smaller than x.
CASES = [
    pytest.param((1, 3, 227, 227), 4, (57, 57), (0, 0), None, id="conv1-2012"),
    pytest.param((1, 3, 224, 224), 4, (57, 57), (2, 2), None, id="conv1-torchvision"),
    pytest.param((2, 5, 11, 9), 3, (5, 4), (1, 2), (10, 7), id="odd-extent"),
    pytest.param((3, 2, 7, 13), 2, (3, 5), (0, 1), None, id="map-inside-x"),
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, block, size, pad, extent", CASES)
def test_space_to_depth(shape, block, size, pad, extent, dtype, layout):
    x = laid_out(torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype), layout)
    out = space_to_depth(x, block, size, pad, extent)
    expected = reference_to_depth(x, block, size, pad, extent or shape[2:])
    assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64], ids=["fp16", "bf16", "fp64"])
def test_space_to_depth_casts(dtype):
    """fp32 in, another dtype out: the cast PyTorch's .to() makes, in the same pass."""
    x = torch.randn(2, 3, 10, 9, generator=torch.Generator().manual_seed(1)).contiguous(
        memory_format=torch.channels_last)
    out = space_to_depth(x, 2, (5, 5), (0, 1), dtype=dtype)
    assert out.dtype == dtype
    assert torch.equal(out, reference_to_depth(x, 2, (5, 5), (0, 1), (10, 9)).to(dtype))


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last],
                         ids=["nchw", "channels_last"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, block, size, pad, extent", CASES)
def test_depth_to_space(shape, block, size, pad, extent, dtype, layout, memory_format):
    """The inverse read into any layout: x's pixels from their blocks, 0 where a block lies beyond the map."""
    N, C = shape[:2]
    t = torch.randn(N, C * block * block, *size, generator=torch.Generator().manual_seed(2)).to(dtype)
    t = laid_out(t, layout)
    out = depth_to_space(t, block, shape, pad, memory_format)
    assert out.dtype == dtype and out.is_contiguous(memory_format=memory_format)
    assert torch.equal(out, reference_from_depth(t, block, shape, pad))


def test_round_trip_and_cast_back():
    """depth_to_space(space_to_depth(x)) = x where the map covers x, in the dtype asked for."""
    x = torch.randn(2, 3, 227, 227, generator=torch.Generator().manual_seed(3))
    blocks = space_to_depth(x, 4, (57, 57), dtype=torch.bfloat16)
    back = depth_to_space(blocks, 4, x.shape, dtype=torch.float32)
    assert back.dtype == torch.float32 and torch.equal(back, x.bfloat16().float())


def test_empty_batch_launches_nothing():
    launched = []
    with runtime.capture_launches(launched.append):
        out = space_to_depth(torch.randn(0, 3, 8, 8), 4, (2, 2))
        back = depth_to_space(torch.randn(0, 48, 2, 2), 4, (0, 3, 8, 8))
    assert launched == [] and out.shape == (0, 48, 2, 2) and back.shape == (0, 3, 8, 8)


@pytest.mark.parametrize("call, message", [
    (lambda: space_to_depth(torch.randn(3, 8, 8), 4, (2, 2)), "must be 4-D"),
    (lambda: space_to_depth(torch.randn(1, 3, 8, 8), 0, (2, 2)), "block must be a positive int"),
    (lambda: space_to_depth(torch.randn(1, 3, 8, 8), 4, (2, 2), (-1, 0)), "padding must be >= 0"),
    (lambda: space_to_depth(torch.randn(1, 3, 8, 8), 4, (2, 2), extent=(9, 8)), "extent"),
    (lambda: space_to_depth(torch.randn(1, 3, 8, 8).int(), 4, (2, 2)), "dtype"),
    (lambda: depth_to_space(torch.randn(1, 47, 2, 2), 4, (1, 3, 8, 8)), "does not hold"),
])
def test_bad_input_is_rejected_with_a_clear_error(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()
