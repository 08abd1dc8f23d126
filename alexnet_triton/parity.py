"""How close a Triton result must be to PyTorch's: the one tolerance table, used by the tests and by the GPU study's
correctness check.

fp32/fp64: absolute and relative tolerance against PyTorch at the same dtype (the interpreter computes fp32 dots
exactly; only summation order differs). fp16/bf16: the error against an fp64 reference may be at most
``LOW_PRECISION_FACTOR`` x PyTorch's own error at that dtype + atol x max(|reference|, 1). fp32 through TF32
tensor cores (precision="tf32": 10 explicit mantissa bits): ``TF32_TOLERANCE`` x max(|reference|).
"""

from __future__ import annotations

import torch

TOLERANCES = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-4, 1e-4),
    torch.float16: (2e-3, 0.0),
    torch.bfloat16: (1.6e-2, 0.0),
}
LOW_PRECISION_FACTOR = 2.0
TF32_TOLERANCE = 5e-3


def assert_close(actual: torch.Tensor, expected: torch.Tensor, name: str = "", equal_nan: bool = False) -> None:
    """Same-dtype comparison with the TOLERANCES table (``equal_nan``: NaN where the expected value is NaN)."""
    atol, rtol = TOLERANCES[expected.dtype]
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, equal_nan=equal_nan,
                               msg=lambda m: f"{name}: {m}")


def assert_tf32_close(actual: torch.Tensor, expected: torch.Tensor, name: str = "") -> None:
    """fp32 computed with TF32 products vs PyTorch's fp32: within TF32_TOLERANCE x max(|expected|)."""
    torch.testing.assert_close(actual, expected, atol=TF32_TOLERANCE * expected.abs().max().item(), rtol=0,
                               msg=lambda m: f"{name}: {m}")


def assert_low_precision_close(actual: torch.Tensor, torch_result: torch.Tensor, reference64: torch.Tensor,
                               name: str = "") -> None:
    """Error of ``actual`` vs the fp64 reference <= factor x PyTorch's error + atol (fp16/bf16)."""
    atol, _ = TOLERANCES[actual.dtype]
    ours = (actual.double() - reference64).abs().max().item()
    theirs = (torch_result.double() - reference64).abs().max().item()
    scale = reference64.abs().max().item()
    bound = LOW_PRECISION_FACTOR * theirs + atol * max(scale, 1.0)
    assert ours <= bound, f"{name}: max error {ours:.3g} vs fp64 > bound {bound:.3g} (PyTorch's: {theirs:.3g})"
