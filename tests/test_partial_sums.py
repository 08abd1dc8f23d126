"""sum_partials: the second stage of the split reductions, against an fp64 sum, in each of its shapes."""

import pytest
import torch

from alexnet_triton.kernels import partial_sums, runtime
from alexnet_triton.kernels.partial_sums import sum_partials

# (splits, length): split-K slices (wide: the slices one after another per column block, one launch), a bias
# gradient's rows per program of the pass that wrote them (tall: 32 rows a step; over 128 rows, chunks of rows, then
# their sums: two launches, three over 128 x 128 rows): conv3's bias (338 x 384), 2012 conv1's LRN block (3025 x 96)
# and conv2's (5832 x 256), conv1's weight-gradient slices (33 x 41472), and the edges of each shape.
SHAPES = [((1, 5), 1), ((16, 3000), 1), ((17, 96), 1), ((33, 41472), 1), ((128, 384), 1), ((129, 96), 2),
          ((338, 384), 2), ((3025, 96), 2), ((5832, 256), 2), ((16385, 3), 3)]


@pytest.mark.parametrize("partial_dtype, out_dtype", [(torch.float32, torch.float32), (torch.float32, torch.bfloat16),
                                                      (torch.float64, torch.float64)], ids=["fp32", "bf16", "fp64"])
@pytest.mark.parametrize("shape, launches", SHAPES, ids=[f"{s}x{n}" for (s, n), _ in SHAPES])
def test_sums_every_row_of_every_column(shape, launches, partial_dtype, out_dtype):
    """Every shape against an fp64 sum (out poisoned), at the launch count its shape gives."""
    partials = torch.randn(shape, generator=torch.Generator().manual_seed(shape[0]), dtype=torch.float64)
    partials = partials.to(partial_dtype)
    out = runtime.new_output((shape[1],), device="cpu", dtype=out_dtype)
    with runtime.capture_launches() as records:
        sum_partials(partials, runtime.new_output((shape[1],), device="cpu", dtype=out_dtype))
    assert len(records) == launches
    assert sum_partials(partials, out) is out
    reference = partials.double().sum(0)
    rows_eps = shape[0] * torch.finfo(partial_dtype).eps + torch.finfo(out_dtype).eps
    error = (out.double() - reference).abs().max().item()
    assert error <= 2 * rows_eps * partials.double().abs().sum(0).max().item()


def test_wide_shape_adds_the_slices_in_order():
    """Split-K slices (the weight gradient's dw bits): the slices added one after another, exactly."""
    partials = torch.randn(partial_sums.WIDE_ROWS, 3000, generator=torch.Generator().manual_seed(2))
    expected = partials[0].clone()
    for row in partials[1:]:
        expected += row
    assert torch.equal(sum_partials(partials, torch.empty(3000)), expected)


def test_rejects_mismatched_or_strided_buffers():
    with pytest.raises(ValueError, match=r"^sum_partials: partials \(4, 6\) and out \(5,\)"):
        sum_partials(torch.zeros(4, 6), torch.zeros(5))
    with pytest.raises(ValueError, match=r"^sum_partials: partials \(4, 3\)"):
        sum_partials(torch.zeros(4, 6)[:, ::2], torch.zeros(3))
