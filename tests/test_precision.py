"""The mixed-precision policy (alexnet_triton.precision) that training and the benchmarks share."""

from __future__ import annotations

import pytest
import torch

from alexnet_triton.precision import AMP_DTYPES, forward_context, model_input


@pytest.mark.parametrize("amp", list(AMP_DTYPES))
def test_triton_path_takes_low_precision_images_pytorch_path_autocasts(amp):
    dtype, images = AMP_DTYPES[amp], torch.randn(2, 3, 4, 4)
    assert model_input(images, "triton", dtype).dtype == (dtype or torch.float32)
    assert model_input(images, "torch", dtype) is images
    weight = torch.randn(4, 4)
    with forward_context("torch", "cpu", dtype):
        torch_result = images @ weight
    with forward_context("triton", "cpu", dtype):
        triton_side = images @ weight  # no autocast: the Triton layers cast their own weights
    assert torch_result.dtype == (dtype or torch.float32)
    assert triton_side.dtype == torch.float32


def test_fp32_means_no_autocast():
    with forward_context("torch", "cpu", torch.float32):
        assert not torch.is_autocast_enabled("cpu")
