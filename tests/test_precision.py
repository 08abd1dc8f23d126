"""The mixed-precision policy (alexnet_triton.precision) that training and the benchmarks share, and the casts the
Triton ops make under autocast (their numerics against PyTorch: test_autocast.py)."""

from __future__ import annotations

import pytest
import torch

from alexnet_triton.precision import AMP_DTYPES, autocast_master_operands, autocast_operands, forward_context


@pytest.mark.parametrize("amp", list(AMP_DTYPES))
def test_amp_is_autocast_to_the_low_dtype(amp):
    dtype, images = AMP_DTYPES[amp], torch.randn(2, 3, 4, 4)
    with forward_context("cpu", dtype):
        assert torch.is_autocast_enabled("cpu") == (dtype is not None)
        assert (images @ torch.randn(4, 4)).dtype == (dtype or torch.float32)


def test_fp32_means_no_autocast():
    with forward_context("cpu", torch.float32):
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_autocast_operands_casts_as_autocast_does(dtype):
    """Floating-point tensors other than float64 to the autocast dtype (or float32); integers, float64, None kept."""
    x, w64, index = torch.randn(2, 3), torch.randn(3, dtype=torch.float64), torch.tensor([1, 0])
    with torch.autocast("cpu", dtype=dtype):
        low = autocast_operands(x, x.half(), w64, index, None)
        fp32 = autocast_operands(x.to(dtype), index, fp32=True)
    assert [t.dtype for t in low[:4]] == [dtype, dtype, torch.float64, torch.int64] and low[4] is None
    assert torch.equal(low[0], x.to(dtype)) and low[2] is w64 and low[3] is index
    assert [t.dtype for t in fp32] == [torch.float32, torch.int64]


def test_autocast_operands_outside_autocast_or_on_a_device_without_it():
    x, meta = torch.randn(2, 3), torch.empty(2, 3, device="meta")
    assert autocast_operands(x, None)[0] is x
    with torch.autocast("cpu", dtype=torch.float16):
        assert autocast_operands(meta)[0] is meta


def test_autocast_master_operands_keeps_fp32_parameters_only_with_a_low_input():
    """x cast as autocast casts it; fp32 parameters stay fp32 when x becomes fp16/bf16 (one non-fp32 parameter:
    all cast, as autocast_operands does); outside autocast nothing changes."""
    x, w, b = torch.randn(2, 3), torch.randn(4, 3), torch.randn(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low_x, kept_w, kept_b = autocast_master_operands(x, w, b)
        _, cast_w, cast_b = autocast_master_operands(x, w, b.half())
        x64, cast64_w, _ = autocast_master_operands(x.double(), w, None)
    assert low_x.dtype == torch.bfloat16 and torch.equal(low_x, x.to(torch.bfloat16))
    assert kept_w is w and kept_b is b
    assert cast_w.dtype == cast_b.dtype == torch.bfloat16
    assert x64.dtype == torch.float64 and cast64_w.dtype == torch.bfloat16
    assert all(a is e for a, e in zip(autocast_master_operands(x, w, None), (x, w, None), strict=True))
