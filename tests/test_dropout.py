"""dropout on the Triton kernel: F.dropout semantics, its mask rebuilt by an independent Philox, seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import triton

from alexnet_triton import nn, ops
from alexnet_triton.kernels import dropout as dropout_kernels
from alexnet_triton.ops import library

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DTYPE_IDS = ["fp32", "fp16", "bf16"]


def philox_keep(seed: int, indices: int | torch.Tensor, p: float) -> torch.Tensor:
    """Keep mask of the flat indices 0..indices-1 (an int) or of ``indices`` (an int64 tensor), written from the
    Philox 4x32-10 definition in numpy (counter = (index low, index high, 0, 0), key = (seed low, seed high)), then
    Triton's uint -> [0, 1) map; the indices' shape."""
    flat = np.arange(indices) if isinstance(indices, int) else indices.numpy()
    c0 = flat.astype(np.uint64) & np.uint64(0xFFFFFFFF)
    c1 = flat.astype(np.uint64) >> np.uint64(32)
    c2 = np.zeros(flat.shape, dtype=np.uint64)
    c3 = np.zeros(flat.shape, dtype=np.uint64)
    k0, k1 = np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32)
    mask32 = np.uint64(0xFFFFFFFF)
    round_a, round_b = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
    for _ in range(10):
        product_a, product_b = round_a * c0, round_b * c2  # < 2**64: exact
        c0, c1, c2, c3 = ((product_b >> np.uint64(32)) ^ c1 ^ k0, product_b & mask32,
                          (product_a >> np.uint64(32)) ^ c3 ^ k1, product_a & mask32)
        k0, k1 = (k0 + np.uint64(0x9E3779B9)) & mask32, (k1 + np.uint64(0xBB67AE85)) & mask32
    signed = c0.astype(np.uint32).view(np.int32).astype(np.int64)
    uniform = np.where(signed < 0, -signed - 1, signed).astype(np.float32) * np.float32(4.6566127342e-10)
    return torch.from_numpy(uniform >= np.float32(p))


def fresh(shape, dtype=torch.float32, seed=0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype).requires_grad_()


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_kept_fraction_within_binomial_bounds(p, no_torch_fallback):
    n = 1 << 16
    with no_torch_fallback():  # large blocks: fewer interpreted programs
        y = dropout_kernels.dropout_forward(torch.ones(n), p, 2012, config=triton.Config({"BLOCK": n // 4}))
    kept = int((y != 0).sum())
    assert abs(kept - n * (1 - p)) <= 5 * math.sqrt(n * p * (1 - p)), (kept, n, p)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_values_and_gradient_follow_an_independent_mask(dtype, no_torch_fallback):
    """y = x * scale and dx = dy * scale exactly where the reference Philox keeps, 0 elsewhere; the scale is
    1/(1-p) rounded to the dtype, as F.dropout computes it."""
    p, seed = 0.3, 123456789
    x = fresh((37, 129), dtype)
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    with no_torch_fallback():
        y = ops.dropout(x, p, True, seed=seed)
        (dx,) = torch.autograd.grad(y, x, dy)
    keep = philox_keep(seed, x.numel(), p).view(x.shape)
    scale = dropout_kernels.dropout_scale(p, dtype)
    assert torch.equal(y, torch.where(keep, x.detach() * scale, 0.0))
    assert torch.equal(dx, torch.where(keep, dy * scale, 0.0))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("p", [0.1, 0.5, 0.123])
def test_scale_is_pytorchs(p, dtype):
    kept = F.dropout(torch.ones(4096, dtype=dtype), p, True).unique()
    assert kept[kept != 0].tolist() == [dropout_kernels.dropout_scale(p, dtype)]


def test_seed_fixes_the_mask(no_torch_fallback):
    x = fresh((64, 65)).detach()
    with no_torch_fallback():
        first, again, other = (ops.dropout(x, 0.5, True, seed=s) for s in (7, 7, 8))
        big_seed = ops.dropout(x, 0.5, True, seed=2**40 + 7)
    assert torch.equal(first, again)
    assert not torch.equal(first == 0, other == 0)
    assert not torch.equal(first == 0, big_seed == 0)
    assert torch.equal(big_seed != 0, philox_keep(2**40 + 7, x.numel(), 0.5).view(x.shape))


def test_no_seed_draws_from_torch_generator(no_torch_fallback):
    x = fresh((16, 33)).detach()
    with no_torch_fallback():
        torch.manual_seed(3)
        first = ops.dropout(x, 0.5)
        torch.manual_seed(3)
        again = ops.dropout(x, 0.5)
        different = ops.dropout(x, 0.5)
    assert torch.equal(first, again) and not torch.equal(first, different)


def test_mask_does_not_depend_on_block_size_or_layout(no_torch_fallback):
    """The mask is keyed on the row-major index: other block sizes and a transposed input give the same result."""
    x = fresh((50, 70)).detach()
    small_blocks = triton.Config({"BLOCK": 512}, num_warps=4)
    with no_torch_fallback():
        default = dropout_kernels.dropout_forward(x, 0.4, 99)
        blocked = dropout_kernels.dropout_forward(x, 0.4, 99, config=small_blocks)
        transposed = ops.dropout(x.t().contiguous().t(), 0.4, True, seed=99)
        four_d = ops.dropout(x.view(5, 10, 7, 10), 0.4, True, seed=99)
    assert torch.equal(default, blocked) and torch.equal(default, transposed)
    assert torch.equal(four_d.view(50, 70), default)


def test_edge_probabilities_and_eval_behave_like_pytorch(no_torch_fallback):
    x = fresh((9, 11))
    with no_torch_fallback():
        assert ops.dropout(x, 0.0, True) is x
        assert ops.dropout(x, 0.5, False) is x
        assert ops.dropout(x[:0], 0.5, True).numel() == 0
        y = ops.dropout(x, 1.0, True, seed=5)
        (dx,) = torch.autograd.grad(y.sum(), x)
    reference = F.dropout(x, 1.0, True)
    (reference_dx,) = torch.autograd.grad(reference.sum(), x)
    assert torch.equal(y, reference) and torch.equal(dx, reference_dx)


@pytest.mark.parametrize("shape", [(6, 7), (), (2, 3, 4)], ids=["2d", "0d", "3d"])
def test_gradcheck_float64(shape):
    x = fresh(shape, torch.float64)
    assert torch.autograd.gradcheck(lambda x: ops.dropout(x, 0.4, True, seed=11), (x,), fast_mode=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("shape", [(), (7,), (3, 1, 4, 5)], ids=["0d", "1d", "4d"])
def test_any_shape_follows_the_row_major_mask(shape, dtype, no_torch_fallback):
    """0-D, 1-D and 4-D tensors: the mask of their row-major index, output and gradient."""
    p, seed = 0.5, 2024
    x = fresh(shape, dtype)
    dy = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    with no_torch_fallback():
        y = ops.dropout(x, p, True, seed=seed)
        (dx,) = torch.autograd.grad(y, x, dy)
    keep = philox_keep(seed, x.numel(), p).view(shape)
    assert y.shape == shape and torch.equal(y, torch.where(keep, x.detach() * 2, 0.0))
    assert torch.equal(dx, torch.where(keep, dy * 2, 0.0))


def strided_views(t: torch.Tensor) -> dict[str, torch.Tensor]:
    """Non-contiguous views holding t's values: every other column of a wider tensor, and a transpose."""
    wide = torch.stack([t, torch.full_like(t, float("nan"))], dim=-1).flatten(-2)
    return dict(step=wide[..., ::2], transposed=t.t().contiguous().t())


@pytest.mark.parametrize("view", ["step", "transposed"])
def test_strided_input_and_gradient(view, no_torch_fallback):
    """x and dy as non-contiguous views give the contiguous tensors' results (the mask follows the row-major
    index, not the memory order)."""
    p, seed = 0.3, 55
    x = fresh((9, 13)).detach()
    dy = torch.randn(9, 13, generator=torch.Generator().manual_seed(2))
    x_view, dy_view = strided_views(x)[view].requires_grad_(), strided_views(dy)[view]
    with no_torch_fallback():
        y = ops.dropout(x_view, p, True, seed=seed)
        (dx,) = torch.autograd.grad(y, x_view, dy_view)
        expected_y = ops.dropout(x, p, True, seed=seed)
        expected_dx = dropout_kernels.dropout_backward(dy, p, seed)
    assert torch.equal(y, expected_y) and torch.equal(dx, expected_dx)


def test_stride_zero_gradient(no_torch_fallback):
    """The cotangent of a sum is an expanded (stride-0) dy."""
    x = fresh((5, 8))
    with no_torch_fallback():
        y = ops.dropout(x, 0.5, True, seed=3)
        (dx,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(dx, torch.where(y != 0, 2.0, 0.0))
    assert torch.equal(dx, dropout_kernels.dropout_backward(torch.ones(5, 8), 0.5, 3))


@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_inplace_overwrites_x_with_the_same_result(layout, no_torch_fallback):
    """inplace=True returns x itself holding what the out-of-place op returns; the gradient flows through it."""
    base = fresh((6, 10))
    x = base * 1.0 if layout == "contiguous" else (base * 1.0).t().contiguous().t()
    expected = ops.dropout(base.detach(), 0.5, True, seed=17)
    with no_torch_fallback():
        y = ops.dropout(x, 0.5, True, True, seed=17)
        (d_base,) = torch.autograd.grad(y.sum(), base)
    assert y is x and torch.equal(y.detach(), expected)
    assert torch.equal(d_base, torch.where(expected != 0, 2.0, 0.0))


def test_inplace_edge_cases_behave_like_pytorch(no_torch_fallback):
    x = fresh((4, 5))
    with no_torch_fallback():
        assert ops.dropout(x, 0.5, False, True) is x and ops.dropout(x, 0.0, True, True) is x
        empty = torch.ones(0, 3)
        assert ops.dropout(empty, 0.5, True, True) is empty
        with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
            ops.dropout(x, 0.5, True, True, seed=1)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        F.dropout(x, 0.5, True, True)


def test_module_is_a_drop_in(no_torch_fallback):
    """nn.Dropout: torch.nn.Dropout's constructor (p, inplace); identity in eval mode; the mask in training."""
    x = fresh((8, 9)).detach()
    module = nn.Dropout(0.25)
    with no_torch_fallback():
        torch.manual_seed(4)
        y = module(x)
        torch.manual_seed(4)
        assert torch.equal(y, ops.dropout(x, 0.25))
        assert module.eval()(x) is x
        target = x.clone()
        assert nn.Dropout(0.25, inplace=True)(target) is target
    assert repr(module) == repr(torch.nn.Dropout(0.25))


BAD_INPUTS = [
    ("p below 0", dict(p=-0.1), ValueError, r"between 0 and 1, but got -0.1"),
    ("p above 1", dict(p=1.5), ValueError, r"between 0 and 1, but got 1.5"),
    ("p not a number", dict(p="0.5"), TypeError, r"probability must be a float"),
    ("p a tensor", dict(p=torch.tensor(0.5)), TypeError, r"for a 0-d tensor pass p.item\(\)"),
    ("integer x", dict(x=torch.ones(3, dtype=torch.int32)), TypeError, r"x has dtype torch.int32"),
    ("negative seed", dict(seed=-1), ValueError, r"seed must be in \[0, 2\*\*63\)"),
    ("float seed", dict(seed=1.5), TypeError, r"seed must be an int"),
    ("int32 seed tensor", dict(seed=torch.ones(1, dtype=torch.int32)), TypeError,
     r"a seed tensor must hold one int64, got shape \(1,\) torch.int32"),
    ("two-element seed tensor", dict(seed=torch.ones(2, dtype=torch.int64)), TypeError, r"got shape \(2,\)"),
    ("seed tensor elsewhere", dict(seed=torch.ones(1, dtype=torch.int64, device="meta")), ValueError,
     r"seed tensor on meta, the input on cpu"),
]


def test_meta_tensors_get_their_result_shape():
    """The operator's fake implementation serves the meta device (shape inference, torch.compile's tracing)."""
    y = ops.dropout(torch.ones(3, 4, device="meta"), 0.5, True, seed=torch.ones(1, dtype=torch.int64, device="meta"))
    assert y.device.type == "meta" and y.shape == (3, 4)


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_rejected_with_a_clear_error(case):
    _, spec, error, message = case
    with pytest.raises(error, match=message):
        ops.dropout(spec.get("x", torch.ones(3)), spec.get("p", 0.5), True, seed=spec.get("seed", 1))


def test_a_seed_tensor_is_the_int_seed_and_is_read_by_the_kernel(no_torch_fallback):
    """A seed tensor (0-d or [1]) gives the int seed's mask, forward and backward; rewriting it in place before
    the backward is an error (the mask would change)."""
    x = fresh((30, 41))
    with no_torch_fallback():
        by_int = ops.dropout(x, 0.5, True, seed=2**40 + 7)
        by_int.backward(torch.ones_like(by_int))
        expected_grad, x.grad = x.grad, None
        for seed in (torch.tensor(2**40 + 7), torch.tensor([2**40 + 7])):
            by_tensor = ops.dropout(x, 0.5, True, seed=seed)
            by_tensor.backward(torch.ones_like(by_tensor))
            assert torch.equal(by_tensor, by_int) and torch.equal(x.grad, expected_grad)
            x.grad = None
        seed = torch.tensor([5])
        y = ops.dropout(x, 0.5, True, seed=seed)
        seed.add_(1)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()


def test_a_drawn_seed_is_a_tensor_on_the_inputs_device_with_no_host_read():
    """The drawn seed comes from torch.randint on x's device and reaches the kernel as a tensor: no .item()."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class NoHostRead(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            assert func.overloadpacket.__name__ != "_local_scalar_dense", "a host read of a tensor value"
            return library.run_under(self, func, args, kwargs)  # inside this project's operators too

    x = fresh((8, 9))
    dropout_kernels.dropout_scale(0.5, x.dtype)  # computed once per (p, dtype), before the mode
    with NoHostRead():
        y = ops.dropout(x, 0.5)
        y.sum().backward()
    seed = dropout_kernels.draw_seed()
    assert seed.dtype == torch.int64 and seed.shape == (1,) and 0 <= int(seed) < dropout_kernels.DRAWN_SEED_LIMIT
