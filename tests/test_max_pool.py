"""max_pool2d on the Triton kernels against torch.nn.functional.max_pool2d: output, indices and input gradient; with
relu=True against F.max_pool2d(F.relu(x)); with a bias against F.max_pool2d(F.relu(x + bias)), its gradient too."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close

from alexnet_triton import nn, ops
from alexnet_triton.kernels import max_pool

# (shape, F.max_pool2d arguments after the input): AlexNet's overlapping 3x3/2 pools (2012: 55->27, 27->13,
# 13->6; channels scaled down), other geometries, ceil_mode (a last window reaching past the input; a window
# dropped because it would start in the right padding; windows starting in the left padding) and dilation.
GEOMETRIES = [
    pytest.param((2, 12, 55, 55), dict(kernel_size=3, stride=2), id="alexnet-pool1"),
    pytest.param((2, 32, 27, 27), dict(kernel_size=3, stride=2), id="alexnet-pool2"),
    pytest.param((2, 32, 13, 13), dict(kernel_size=3, stride=2), id="alexnet-pool5"),
    pytest.param((1, 5, 10, 7), dict(kernel_size=2, stride=2), id="2x2-odd-width"),
    pytest.param((2, 3, 9, 12), dict(kernel_size=3, stride=1, padding=1), id="3x3-s1-pad1"),
    pytest.param((1, 4, 11, 8), dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0)), id="rectangular"),
    pytest.param((1, 2, 14, 14), dict(kernel_size=5, stride=3, padding=2), id="5x5-s3-pad2"),
    pytest.param((2, 3, 10, 10), dict(kernel_size=3, stride=2, ceil_mode=True), id="ceil-past-the-input"),
    pytest.param((1, 3, 5, 7), dict(kernel_size=2, stride=2, padding=1, ceil_mode=True),
                 id="ceil-drops-window-in-right-padding"),
    pytest.param((1, 2, 6, 8), dict(kernel_size=3, stride=3, padding=1, ceil_mode=True),
                 id="ceil-windows-from-left-padding"),
    pytest.param((2, 3, 9, 10), dict(kernel_size=3, stride=1, padding=1, dilation=2), id="dilation-2"),
    pytest.param((1, 4, 11, 9), dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0), dilation=(3, 1)),
                 id="dilation-rectangular"),
    pytest.param((1, 3, 12, 11), dict(kernel_size=3, stride=2, padding=1, dilation=(2, 3), ceil_mode=True),
                 id="dilation-ceil"),
]


def with_grad(x, channels_last=False):
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return x.requires_grad_()


def reference(x, dy, relu=False, **pool):
    y, indices = F.max_pool2d(F.relu(x) if relu else x, **pool, return_indices=True)
    return y, indices, torch.autograd.grad(y, x, dy)[0]


def run(x, dy, no_torch_fallback, relu=False, **pool):
    with no_torch_fallback():
        y, indices = ops.max_pool2d(x, **pool, return_indices=True, relu=relu)
        return y, indices, torch.autograd.grad(y, x, dy)[0]


def assert_matches_torch(x, dy, no_torch_fallback, relu=False, **pool):
    """Same y and indices as PyTorch (of relu(x) if ``relu``), bit for bit (NaN where PyTorch's is NaN), and dx
    within tolerance."""
    y_ref, indices_ref, dx_ref = reference(x, dy, relu, **pool)
    y, indices, dx = run(x, dy, no_torch_fallback, relu, **pool)
    assert y.dtype == y_ref.dtype and torch.equal(y.isnan(), y_ref.isnan())
    assert torch.equal(y.nan_to_num(), y_ref.nan_to_num())
    assert indices.dtype == torch.int64 and torch.equal(indices, indices_ref)
    assert_close(dx, dx_ref, "dx")
    return y, indices, dx


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shape, pool", GEOMETRIES)
def test_matches_torch_fp32(shape, pool, channels_last, no_torch_fallback):
    gen = torch.Generator().manual_seed(0)
    x = with_grad(torch.randn(shape, generator=gen), channels_last)
    dy = torch.randn(F.max_pool2d(x, **pool).shape, generator=gen)
    y, indices, dx = assert_matches_torch(x, dy, no_torch_fallback, **pool)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert all(t.is_contiguous(memory_format=fmt) for t in (y, indices, dx))


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shape, pool", GEOMETRIES)
def test_relu_pool_matches_torch_relu_then_pool(shape, pool, channels_last, no_torch_fallback):
    """relu=True (AlexNet's ReLU before a pool, fused) on a negative-heavy input: many windows with a maximum <= 0
    (y 0, no gradient, PyTorch's index of the first tap inside)."""
    gen = torch.Generator().manual_seed(11)
    x = with_grad(torch.randn(shape, generator=gen) - 1.0, channels_last)
    dy = torch.randn(F.max_pool2d(x, **pool).shape, generator=gen)
    y, _, dx = assert_matches_torch(x, dy, no_torch_fallback, relu=True, **pool)
    assert (y == 0).any() and (y > 0).any() and (dx != 0).any()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert all(t.is_contiguous(memory_format=fmt) for t in (y, dx))


@pytest.mark.parametrize("shape, pool", [GEOMETRIES[4], *GEOMETRIES[-4:]])
def test_matches_torch_fp64(shape, pool, no_torch_fallback):
    gen = torch.Generator().manual_seed(6)
    x = with_grad(torch.randn(shape, generator=gen, dtype=torch.float64))
    dy = torch.randn(F.max_pool2d(x, **pool).shape, generator=gen, dtype=torch.float64)
    assert_matches_torch(x, dy, no_torch_fallback, **pool)


@pytest.mark.parametrize("pool", [dict(kernel_size=3, stride=2, padding=1),
                                  dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True),
                                  dict(kernel_size=2, stride=2, padding=1, ceil_mode=True)],
                         ids=["padded", "dilation-ceil", "ceil-left-padding"])
@pytest.mark.parametrize("relu", [False, True], ids=["pool", "relu-pool"])
def test_gradcheck_float64(pool, relu):
    x = torch.randn(1, 2, 7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5)).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: ops.max_pool2d(x, **pool, relu=relu), (x,), fast_mode=True)


@pytest.mark.parametrize("pool", [dict(kernel_size=3, stride=2), dict(kernel_size=2, stride=1, padding=1,
                                                                      dilation=2, ceil_mode=True)],
                         ids=["alexnet", "dilation-ceil"])
@pytest.mark.parametrize("relu", [False, True], ids=["relu-output", "relu-pool"])
def test_ties_after_relu_go_to_the_first_maximum(pool, relu, no_torch_fallback):
    """ReLU outputs (given, or made by relu=True from small integers): many windows are all zeros or hold repeated
    values; PyTorch picks the first (value, index and gradient); relu=True passes no gradient to a winner at 0."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(-3, 3, (2, 6, 15, 15), generator=gen).float()
    x = with_grad(x if relu else F.relu(x))
    dy = torch.randn(F.max_pool2d(x, **pool).shape, generator=gen)
    y, _, _ = assert_matches_torch(x, dy, no_torch_fallback, relu, **pool)
    assert (y == 0).any() and (x.detach() == 0).any()


@pytest.mark.parametrize("pool", [dict(kernel_size=3, stride=2), dict(kernel_size=3, stride=2, dilation=2,
                                                                      ceil_mode=True)],
                         ids=["alexnet", "dilation-ceil"])
@pytest.mark.parametrize("relu", [False, True], ids=["pool", "relu-pool"])
def test_nan_propagates_like_torch(pool, relu, no_torch_fallback):
    """A NaN wins over any number and a later NaN over an earlier one: PyTorch's index and gradient (relu(NaN) is
    NaN, and PyTorch's ReLU passes the gradient of a NaN), also among negative values (relu=True)."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 3, 9, 9, generator=gen) - float(relu)
    x[0, 0, 2, 2] = x[0, 1, 4, 5] = x[0, 1, 4, 6] = x[0, 1, 6, 4] = x[0, 2, 0, 0] = float("nan")
    dy = torch.randn(F.max_pool2d(x, **pool).shape, generator=gen)
    y, _, dx = assert_matches_torch(with_grad(x), dy, no_torch_fallback, relu, **pool)
    assert y.isnan().any() and (dx[x.isnan()] != 0).any()


@pytest.mark.parametrize("pool", [dict(kernel_size=3, stride=2, padding=1),
                                  dict(kernel_size=5, stride=2, padding=2, dilation=2, ceil_mode=True)],
                         ids=["padded", "dilation-ceil"])
def test_all_minus_inf_windows_keep_torchs_first_tap(pool, no_torch_fallback):
    """Nothing beats -inf: PyTorch keeps the window's first tap inside the input (with dilation 2 and padding 2,
    the second tap of the first row and column); its index and gradient."""
    gen = torch.Generator().manual_seed(10)
    x = torch.full((1, 2, 11, 10), float("-inf"))
    x[0, 1] = torch.randn(11, 10, generator=gen).clamp(min=0).log()  # about half -inf
    dy = torch.randn(F.max_pool2d(x, **pool).shape, generator=gen)
    assert_matches_torch(with_grad(x), dy, no_torch_fallback, **pool)


def test_windows_without_an_input_tap_match_torch(no_torch_fallback):
    """Dilation 3 over a 2x2 input from padding 1: the only window's taps (-1, 2) miss every pixel. PyTorch
    returns -inf and the index of its first tap past the padding (row 2, column 2); its gradient writes out of
    bounds there, so only the forward is compared, and no gradient reaches x."""
    x = with_grad(torch.randn(1, 2, 2, 2))
    pool = dict(kernel_size=2, stride=3, padding=1, dilation=3)
    y_ref, indices_ref = F.max_pool2d(x, **pool, return_indices=True)
    with no_torch_fallback():
        y, indices = ops.max_pool2d(x, **pool, return_indices=True)
        dx, = torch.autograd.grad(y, x, torch.ones_like(y))
    assert torch.equal(y, y_ref) and (y == float("-inf")).all()
    assert torch.equal(indices, indices_ref) and (indices == 2 * 2 + 2).all()
    assert torch.equal(dx, torch.zeros_like(x))
    y_ref, indices_ref = F.max_pool2d(F.relu(x), **pool, return_indices=True)
    with no_torch_fallback():  # relu(x) is 0 on every pixel, but the window holds none: still -inf
        y, indices = ops.max_pool2d(x, **pool, return_indices=True, relu=True)
    assert torch.equal(y, y_ref) and torch.equal(indices, indices_ref)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("pool", [dict(kernel_size=3, stride=2), dict(kernel_size=3, stride=2, padding=1,
                                                                      dilation=2, ceil_mode=True)],
                         ids=["alexnet", "dilation-ceil"])
@pytest.mark.parametrize("relu", [False, True], ids=["pool", "relu-pool"])
def test_low_precision(dtype, pool, relu, no_torch_fallback):
    """The maximum and indices are exact at any dtype; dx sums the routed values in fp32 then rounds once."""
    gen = torch.Generator().manual_seed(3)
    x = (torch.randn(2, 8, 27, 27, generator=gen) - float(relu)).to(dtype).requires_grad_()
    x64 = x.detach().double().requires_grad_()
    dy = torch.randn(F.max_pool2d(x64, **pool).shape, generator=gen).to(dtype)
    y, indices, dx = run(x, dy, no_torch_fallback, relu, **pool)
    y64, indices64, dx64 = reference(x64, dy.double(), relu, **pool)
    assert y.dtype == dtype and torch.equal(y.double(), y64)
    assert torch.equal(indices, indices64)
    assert torch.equal(dx, dx64.to(dtype))


@pytest.mark.parametrize("pool", [dict(kernel_size=3, stride=2), dict(kernel_size=2, padding=1, dilation=2,
                                                                      ceil_mode=True)],
                         ids=["alexnet", "dilation-ceil"])
def test_unbatched_input(pool, no_torch_fallback):
    gen = torch.Generator().manual_seed(7)
    x = with_grad(torch.randn(5, 11, 9, generator=gen))
    dy = torch.randn(F.max_pool2d(x, **pool).shape, generator=gen)
    y, indices, dx = assert_matches_torch(x, dy, no_torch_fallback, **pool)
    assert y.dim() == indices.dim() == 3 and dx.shape == x.shape
    with no_torch_fallback():
        assert torch.equal(ops.max_pool2d(x, **pool), y)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_empty_batch(channels_last, no_torch_fallback):
    x = with_grad(torch.randn(0, 3, 10, 10), channels_last)
    pool = dict(kernel_size=3, stride=2, ceil_mode=True)
    y_ref, indices_ref = F.max_pool2d(x, **pool, return_indices=True)
    with no_torch_fallback():
        y, indices = ops.max_pool2d(x, **pool, return_indices=True)
        dx, = torch.autograd.grad(y, x, torch.ones_like(y))
    assert y.shape == y_ref.shape == (0, 3, 5, 5) and indices.shape == indices_ref.shape
    assert y.dtype == x.dtype and indices.dtype == torch.int64 and dx.shape == x.shape


def strided(t: torch.Tensor) -> torch.Tensor:
    """A copy of t as a non-contiguous view (every other element of a wider buffer in the last two dims), in
    neither memory format."""
    wide = torch.full((*t.shape[:-2], 2 * t.shape[-2], 3 * t.shape[-1]), 99, dtype=t.dtype)
    view = wide[..., ::2, 1::3]
    view.copy_(t)
    assert not view.is_contiguous() and not view.is_contiguous(memory_format=torch.channels_last)
    return view


@pytest.mark.parametrize("pool", [dict(kernel_size=3, stride=2), dict(kernel_size=3, stride=2, padding=1,
                                                                      dilation=2, ceil_mode=True)],
                         ids=["alexnet", "dilation-ceil"])
@pytest.mark.parametrize("relu", [False, True], ids=["pool", "relu-pool"])
def test_strided_operands(pool, relu, no_torch_fallback):
    """Every operand a launcher takes, as a non-contiguous view: x (forward), dy and the window offsets
    (backward), the window offsets (indices); each result equals PyTorch's."""
    gen = torch.Generator().manual_seed(8)
    x = strided(torch.randn(2, 3, 13, 12, generator=gen) - float(relu))
    dy = strided(torch.randn(F.max_pool2d(x, **pool).shape, generator=gen))
    y_ref, indices_ref, dx_ref = reference(x.clone().requires_grad_(), dy, relu, **pool)
    with no_torch_fallback():
        y, window = max_pool.max_pool2d_forward(x, **pool, relu=relu)
        dx, no_db = max_pool.max_pool2d_backward(dy, strided(window), x.shape, **pool)
        indices = max_pool.max_pool2d_indices(strided(window), x.shape, **pool)
        dx_autograd, = torch.autograd.grad(ops.max_pool2d(x.requires_grad_(), **pool, relu=relu), x, dy)
    assert torch.equal(y, y_ref) and torch.equal(indices, indices_ref) and no_db is None
    assert_close(dx, dx_ref, "dx")
    assert_close(dx_autograd, dx_ref, "dx through autograd")


def bias_reference(x, bias, dy, relu, **pool):
    """(y, indices, dx, db) of F.max_pool2d(relu(x + bias[c])) by PyTorch, in x's dtype (bias cast to it)."""
    x, bias = x.detach().clone().requires_grad_(), bias.detach().clone().requires_grad_()
    z = x + bias.to(x.dtype)[:, None, None]
    y, indices = F.max_pool2d(F.relu(z) if relu else z, **pool, return_indices=True)
    return y, indices, *torch.autograd.grad(y, (x, bias), dy)


def run_with_bias(x, bias, dy, no_torch_fallback, relu, **pool):
    """(y, indices, dx, db) of ops.max_pool2d(bias=bias) through autograd."""
    x, bias = x.detach().clone().requires_grad_(), bias.detach().clone().requires_grad_()
    with no_torch_fallback():
        y, indices = ops.max_pool2d(x, **pool, return_indices=True, relu=relu, bias=bias)
        return y, indices, *torch.autograd.grad(y, (x, bias), dy)


BIAS_GEOMETRIES = [*GEOMETRIES[:4], GEOMETRIES[5], GEOMETRIES[7], GEOMETRIES[-1]]


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shape, pool", BIAS_GEOMETRIES)
@pytest.mark.parametrize("relu", [False, True], ids=["bias-pool", "bias-relu-pool"])
def test_bias_pool_matches_torch(shape, pool, relu, channels_last, no_torch_fallback):
    """bias: the pool of x + bias[c] (AlexNet's conv bias moved to the pool that takes its ReLU): y and indices bit
    for bit, dx and the bias gradient (dx summed over N, H, W, from the backward's per-program partials: more than
    one row of them and of channel blocks at these sizes) within tolerance, in x's layout."""
    gen = torch.Generator().manual_seed(13)
    x = torch.randn(shape, generator=gen)
    x = x.to(memory_format=torch.channels_last) if channels_last else x
    bias = torch.randn(shape[1], generator=gen) - 0.5
    dy = torch.randn(F.max_pool2d(x, **pool).shape, generator=gen)
    y_ref, indices_ref, dx_ref, db_ref = bias_reference(x, bias, dy, relu, **pool)
    y, indices, dx, db = run_with_bias(x, bias, dy, no_torch_fallback, relu, **pool)
    assert torch.equal(y, y_ref) and torch.equal(indices, indices_ref)
    assert_close(dx, dx_ref, "dx")
    assert db.shape == bias.shape and db.dtype == bias.dtype
    assert_close(db, db_ref, "db")
    if relu:
        assert (y == 0).any() and (y > 0).any()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert all(t.is_contiguous(memory_format=fmt) for t in (y, dx))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("bias_dtype", ["x's", torch.float32], ids=["bias-of-x-dtype", "fp32-bias"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_bias_low_precision(dtype, bias_dtype, channels_last, no_torch_fallback):
    """fp16/bf16 x with a bias of its dtype or fp32 (autocast's master bias: rounded to x's dtype, its gradient
    fp32): x + bias rounded to x's dtype as PyTorch's add stores it, so y and indices are PyTorch's bit for bit; dx
    is the routed dy summed in fp32 and rounded once, db the sum of that dx."""
    gen = torch.Generator().manual_seed(14)
    x = torch.randn(2, 8, 27, 27, generator=gen).to(dtype)
    x = x.to(memory_format=torch.channels_last) if channels_last else x
    bias = (torch.randn(8, generator=gen) - 0.5).to(dtype if bias_dtype == "x's" else bias_dtype)
    pool = dict(kernel_size=3, stride=2)
    dy = torch.randn(F.max_pool2d(x.float(), **pool).shape, generator=gen).to(dtype)
    y, indices, dx, db = run_with_bias(x, bias, dy, no_torch_fallback, True, **pool)
    z = (x + bias.to(dtype)[:, None, None]).double().requires_grad_()  # PyTorch's rounded sum, then exact
    y64, indices64 = F.max_pool2d(F.relu(z), **pool, return_indices=True)
    dx64, = torch.autograd.grad(y64, z, dy.double())
    assert y.dtype == dtype and torch.equal(y.double(), y64) and torch.equal(indices, indices64)
    assert torch.equal(dx, dx64.to(dtype))
    assert db.dtype == bias.dtype
    assert_close(db, dx.double().sum((0, 2, 3)).to(bias.dtype), "db")


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_bias_strided_operands(channels_last, no_torch_fallback):
    """x, dy, the window offsets and the bias as non-contiguous views (the bias every other element of a wider
    buffer): the launchers' results equal PyTorch's."""
    gen = torch.Generator().manual_seed(15)
    pool = dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True)
    x = strided(torch.randn(2, 5, 13, 12, generator=gen))
    bias = torch.randn(10, generator=gen)[::2]
    dy = strided(torch.randn(F.max_pool2d(x, **pool).shape, generator=gen))
    y_ref, indices_ref, dx_ref, db_ref = bias_reference(x, bias, dy, True, **pool)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    with no_torch_fallback():
        y, window = max_pool.max_pool2d_forward(x, **pool, relu=True, bias=bias)
        dx, db = max_pool.max_pool2d_backward(dy, strided(window), x.shape, **pool, memory_format=fmt,
                                              bias_dtype=bias.dtype)
    assert torch.equal(y, y_ref) and dx.is_contiguous(memory_format=fmt)
    assert torch.equal(max_pool.max_pool2d_indices(window, x.shape, **pool), indices_ref)
    assert_close(dx, dx_ref, "dx")
    assert_close(db, db_ref, "db")


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_bias_grad_programs_loop_over_pixel_blocks(channels_last, monkeypatch, no_torch_fallback):
    """The backward's programs each sum the bias gradient of BIAS_GRAD_BLOCKS pixel blocks: one image, 5 channels,
    13 rows and a width making the block count one past twice that (the last program has one block of pixels, the
    rest masked), x, dy, the window offsets and the bias as strided views: dx and db equal PyTorch's, from one
    partial row per program."""
    block_p = max_pool.backward_config(channels_last).kwargs["BLOCK_P"]
    pixels_per_program = max_pool.BIAS_GRAD_BLOCKS * block_p
    width = 2 * pixels_per_program // 13 + 1  # 13 * width pixels: past 2 programs' worth by at most one block
    assert max_pool.BIAS_GRAD_BLOCKS > 1 and 2 * pixels_per_program < 13 * width <= 2 * pixels_per_program + block_p
    gen = torch.Generator().manual_seed(17)
    pool = dict(kernel_size=3, stride=2)
    x = strided(torch.randn(1, 5, 13, width, generator=gen))
    bias = torch.randn(10, generator=gen)[::2]
    dy = strided(torch.randn(F.max_pool2d(x, **pool).shape, generator=gen))
    rows, bias_partials = [], max_pool.bias_partials

    def recorded_partials(count, channels, like):
        rows.append(count)
        return bias_partials(count, channels, like)

    monkeypatch.setattr(max_pool, "bias_partials", recorded_partials)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    with no_torch_fallback():
        y, window = max_pool.max_pool2d_forward(x, **pool, relu=True, bias=bias)
        dx, db = max_pool.max_pool2d_backward(dy, strided(window), x.shape, **pool, memory_format=fmt,
                                              bias_dtype=bias.dtype)
    assert rows == [3] and dx.is_contiguous(memory_format=fmt)
    y_ref, _, dx_ref, db_ref = bias_reference(x, bias, dy, True, **pool)
    assert torch.equal(y, y_ref)
    assert_close(dx, dx_ref, "dx")
    assert_close(db, db_ref, "db")


def test_bias_without_its_gradient_and_unbatched(no_torch_fallback):
    """A bias that needs no gradient gets none (the backward sums no partials); an unbatched input takes a bias."""
    gen = torch.Generator().manual_seed(16)
    x, bias = with_grad(torch.randn(4, 9, 9, generator=gen)), torch.randn(4, generator=gen)
    dy = torch.randn(4, 4, 4, generator=gen)
    with no_torch_fallback():
        y = ops.max_pool2d(x, 3, 2, relu=True, bias=bias)
        dx, = torch.autograd.grad(y, x, dy)
    y_ref, _, dx_ref, _ = bias_reference(x, bias, dy, True, kernel_size=3, stride=2)
    assert torch.equal(y, y_ref)
    assert_close(dx, dx_ref, "dx")


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_bias_empty_batch(channels_last, no_torch_fallback):
    """No pixels: the bias gradient is 0 (no partials to sum)."""
    x = with_grad(torch.randn(0, 3, 10, 10), channels_last)
    bias = torch.randn(3).requires_grad_()
    with no_torch_fallback():
        y = ops.max_pool2d(x, 3, 2, relu=True, bias=bias)
        dx, db = torch.autograd.grad(y, (x, bias), torch.ones_like(y))
    assert y.shape == (0, 3, 4, 4) and dx.shape == x.shape and torch.equal(db, torch.zeros(3))


@pytest.mark.parametrize("shape, pool, dtype", [
    ((2, 4, 13, 13), dict(kernel_size=3, stride=2), torch.int8),
    ((1, 2, 14, 15), dict(kernel_size=(12, 11), stride=1, padding=(6, 5), dilation=(1, 2), ceil_mode=True),
     torch.int16),
], ids=["int8", "int16"])
def test_saved_window_offsets_are_small_and_give_torch_indices(shape, pool, dtype, no_torch_fallback):
    """The pool saves 1-byte offsets (2 bytes past 127 taps); PyTorch's int64 indices are made from them."""
    x = with_grad(torch.randn(shape, generator=torch.Generator().manual_seed(4)))
    with no_torch_fallback():
        y = ops.max_pool2d(x, **pool)
    (window,) = y.grad_fn.saved_tensors
    assert window.dtype == dtype and window.shape == y.shape
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(9))
    assert_matches_torch(x, dy, no_torch_fallback, **pool)


def test_window_offset_dtype_grows_with_the_window():
    geometry = dict(KH=182, KW=181)  # 32942 taps
    assert max_pool.window_offset_dtype(geometry) == torch.int32
    assert max_pool.window_offset_dtype(dict(KH=181, KW=181)) == torch.int16


@pytest.mark.parametrize("arguments", [
    dict(kernel_size=3, stride=2),
    dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0), dilation=(2, 1), ceil_mode=True, return_indices=True),
    dict(kernel_size=[3], stride=[2], padding=[1], dilation=[2]),
], ids=["alexnet", "every-argument", "one-element-lists"])
def test_module_is_a_drop_in(arguments, no_torch_fallback):
    x = torch.randn(2, 3, 11, 11)
    ours, theirs = nn.MaxPool2d(**arguments), torch.nn.MaxPool2d(**arguments)
    with no_torch_fallback():
        y = ours(x)
    expected = theirs(x)
    assert type(y) is type(expected)
    for a, b in zip((y,) if torch.is_tensor(y) else y, (expected,) if torch.is_tensor(expected) else expected,
                    strict=True):
        assert torch.equal(a, b)
    assert repr(ours) == repr(theirs) and ours.state_dict().keys() == theirs.state_dict().keys()


def test_relu_module_pools_the_relu(no_torch_fallback):
    """MaxPool2d(relu=True): torch.nn.MaxPool2d's arguments and state_dict, of relu(x); relu says so in its repr."""
    x = with_grad(torch.randn(2, 3, 11, 11, generator=torch.Generator().manual_seed(12)))
    ours, theirs = nn.MaxPool2d(3, 2, relu=True), torch.nn.MaxPool2d(3, 2)
    with no_torch_fallback():
        y = ours(x)
        dx, = torch.autograd.grad(y, x, torch.ones_like(y))
    expected = theirs(F.relu(x))
    assert torch.equal(y, expected)
    assert torch.equal(dx, torch.autograd.grad(expected, x, torch.ones_like(expected))[0])
    assert repr(ours) == repr(theirs)[:-1] + ", relu=True)" and ours.state_dict().keys() == theirs.state_dict().keys()


def test_signature_is_f_max_pool2d_positional_order(no_torch_fallback):
    x = torch.randn(1, 2, 10, 9)
    arguments = ((3, 2), (2, 1), 1, (1, 2), True, True)  # kernel_size, stride, padding, dilation, ceil, indices
    with no_torch_fallback():
        y, indices = ops.max_pool2d(x, *arguments)
    y_ref, indices_ref = F.max_pool2d(x, *arguments)
    assert torch.equal(y, y_ref) and torch.equal(indices, indices_ref)
    with no_torch_fallback():
        y = ops.max_pool2d(x, 3, stride=())  # an empty stride means kernel_size, as in PyTorch
    assert torch.equal(y, F.max_pool2d(x, 3, stride=()))


BAD_INPUTS = [
    ("2-D input", (5, 5), dict(kernel_size=3), ValueError, r"input must be 3-D .* or 4-D .*\(5, 5\)"),
    ("5-D input", (1, 1, 1, 5, 5), dict(kernel_size=3), ValueError, r"input must be 3-D"),
    ("zero channels", (2, 0, 5, 5), dict(kernel_size=3), ValueError, r"C, H and W must be non-zero"),
    ("kernel larger than input", (1, 1, 2, 2), dict(kernel_size=3), ValueError, r"larger than the input"),
    ("dilated kernel larger than input", (1, 1, 4, 4), dict(kernel_size=2, dilation=4), ValueError,
     r"dilation \(4, 4\).*larger than the input"),
    ("padding over half the kernel", (1, 1, 8, 8), dict(kernel_size=3, padding=2), ValueError,
     r"at most half the kernel"),
    ("negative padding", (1, 1, 8, 8), dict(kernel_size=3, padding=-1), ValueError, r"must be >= 0"),
    ("zero kernel", (1, 1, 8, 8), dict(kernel_size=0), ValueError, r"must be >= 1"),
    ("negative stride", (1, 1, 8, 8), dict(kernel_size=2, stride=-1), ValueError, r"must be >= 1"),
    ("zero dilation", (1, 1, 8, 8), dict(kernel_size=2, dilation=0), ValueError, r"dilation \(0, 0\) must be >= 1"),
    ("bad kernel type", (1, 1, 8, 8), dict(kernel_size="3"), TypeError, r"kernel_size must be an int or a pair"),
    ("three-element kernel", (1, 1, 8, 8), dict(kernel_size=(3, 2, 1)), TypeError, r"kernel_size must be"),
    ("float dilation", (1, 1, 8, 8), dict(kernel_size=2, dilation=1.5), TypeError, r"dilation must be"),
    ("int ceil_mode", (1, 1, 8, 8), dict(kernel_size=2, ceil_mode=1), TypeError, r"ceil_mode must be a bool"),
]
OUR_BAD_INPUTS = [  # arguments PyTorch's max_pool2d does not have
    ("int relu", (1, 1, 8, 8), dict(kernel_size=2, relu=1), TypeError, r"max_pool2d: relu must be a bool, got 1"),
    ("str relu", (1, 1, 8, 8), dict(kernel_size=2, relu="yes"), TypeError, r"relu must be a bool, got 'yes'"),
    ("bias of the wrong length", (1, 3, 8, 8), dict(kernel_size=2, bias=torch.zeros(4)), ValueError,
     r"max_pool2d: bias must have shape \(3,\) \(x's channels\), got \(4,\)"),
    ("2-D bias", (1, 3, 8, 8), dict(kernel_size=2, bias=torch.zeros(3, 1)), ValueError,
     r"bias must have shape \(3,\)"),
    ("float64 bias", (1, 3, 8, 8), dict(kernel_size=2, bias=torch.zeros(3, dtype=torch.float64)), TypeError,
     r"max_pool2d: bias has dtype torch.float64; it must be x's \(torch.float32\)"),
    ("integer bias", (1, 3, 8, 8), dict(kernel_size=2, bias=torch.zeros(3, dtype=torch.int32)), TypeError,
     r"bias has dtype torch.int32"),
    ("bias on another device", (1, 3, 8, 8), dict(kernel_size=2, bias=torch.zeros(3, device="meta")), ValueError,
     r"max_pool2d: bias is on meta"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_rejected_with_a_clear_error(case):
    _, shape, kwargs, error, message = case
    with pytest.raises(error, match=message):
        ops.max_pool2d(torch.randn(shape), **kwargs)
    with pytest.raises((RuntimeError, TypeError)):  # PyTorch refuses each as well
        F.max_pool2d(torch.randn(shape), **kwargs)


@pytest.mark.parametrize("case", OUR_BAD_INPUTS, ids=[c[0] for c in OUR_BAD_INPUTS])
def test_bad_relu_flag_or_bias_is_rejected_with_a_clear_error(case):
    _, shape, kwargs, error, message = case
    with pytest.raises(error, match=message):
        ops.max_pool2d(torch.randn(shape), **kwargs)


def test_fp16_bias_of_a_bf16_input_is_rejected():
    with pytest.raises(TypeError, match=r"bias has dtype torch.float16; it must be x's \(torch.bfloat16\) or "
                                        r"float32 with a float16/bfloat16 x"):
        ops.max_pool2d(torch.zeros(1, 2, 4, 4, dtype=torch.bfloat16), 2, bias=torch.zeros(2, dtype=torch.float16))


def test_integer_input_is_rejected():
    with pytest.raises(TypeError, match="x has dtype torch.int64"):
        ops.max_pool2d(torch.zeros(1, 1, 4, 4, dtype=torch.long), 2)


def test_mismatched_window_or_gradient_is_rejected():
    x = torch.randn(1, 2, 10, 10)
    y, window = max_pool.max_pool2d_forward(x, 3, 2)
    with pytest.raises(ValueError, match=r"window must have shape \(1, 2, 4, 4\) and dtype torch.int8"):
        max_pool.max_pool2d_backward(y, window.long(), x.shape, 3, 2)
    with pytest.raises(ValueError, match=r"window must have shape \(1, 2, 5, 5\)"):
        max_pool.max_pool2d_indices(window, x.shape, 3, 2, ceil_mode=True)
    with pytest.raises(ValueError, match=r"dy \(1, 2, 4, 3\) must have shape \(1, 2, 4, 4\)"):
        max_pool.max_pool2d_backward(y[..., :3], window, x.shape, 3, 2)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shape, pool", [GEOMETRIES[2], GEOMETRIES[5]])
def test_contiguous_output_is_nchw_with_the_same_values_and_gradients(shape, pool, channels_last,
                                                                      no_torch_fallback):
    """contiguous_output (the pool before a flatten): y and the indices NCHW-contiguous, bit for bit the pool's in
    x's layout; dx (in x's layout) and db from a flattened upstream gradient, bit for bit too; the flatten a view."""
    gen = torch.Generator().manual_seed(17)
    x = torch.randn(shape, generator=gen)
    x = x.to(memory_format=torch.channels_last) if channels_last else x
    bias = torch.randn(shape[1], generator=gen) - 0.5
    dy = torch.randn(F.max_pool2d(x, **pool).shape, generator=gen)
    results = []
    for contiguous_output in (False, True):
        x_, bias_ = x.detach().clone().requires_grad_(), bias.detach().clone().requires_grad_()
        with no_torch_fallback():
            y, indices = ops.max_pool2d(x_, **pool, return_indices=True, relu=True, bias=bias_,
                                        contiguous_output=contiguous_output)
            flat = torch.flatten(y, 1)
            dx, db = torch.autograd.grad(flat, (x_, bias_), torch.flatten(dy, 1))
        results.append((y, indices, dx, db))
        if contiguous_output:
            assert y.is_contiguous() and indices.is_contiguous() and flat.data_ptr() == y.data_ptr()
            assert dx.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    for name, kept, contiguous in zip(("y", "indices", "dx", "db"), *results, strict=True):
        assert torch.equal(contiguous, kept), name
