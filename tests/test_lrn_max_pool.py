"""The fused LRN + max-pool block against F.max_pool2d(F.local_response_norm(x)) (with relu=True, of F.relu(x); with a
bias, of x + bias and its gradient too), and conv->ReLU->block whole, the ReLU (and the conv's bias) in the conv or
in the block."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close, assert_low_precision_close

from alexnet_triton import nn, ops
from alexnet_triton.architecture import CONV_LAYERS
from alexnet_triton.kernels import lrn_max_pool

# (shape, size, alpha, beta, k, kernel, stride, padding): AlexNet's two blocks (channels / 8, real spatial
# sizes), other LRN sizes and constants, padded / rectangular / non-overlapping pools, odd channel counts.
CASES = [
    pytest.param((2, 12, 55, 55), 5, 1e-4, 0.75, 2.0, 3, 2, 0, id="alexnet-block1"),
    pytest.param((2, 32, 27, 27), 5, 5e-4, 0.75, 2.0, 3, 2, 0, id="alexnet-block2-paper-alpha"),
    pytest.param((1, 7, 9, 10), 3, 0.5, 0.75, 1.0, 3, 2, 1, id="size3-padded-pool"),
    pytest.param((2, 33, 6, 5), 7, 1.0, 0.5, 1.5, (3, 2), (2, 1), (1, 0), id="size7-rect-pool-33-channels"),
    pytest.param((1, 3, 8, 8), 5, 0.2, 1.2, 0.8, 2, 2, 0, id="fewer-channels-than-window"),
]


def reference(x, size, alpha, beta, k, kernel, stride, padding, relu=False):
    return F.max_pool2d(F.local_response_norm(F.relu(x) if relu else x, size, alpha, beta, k), kernel, stride,
                        padding)


def relu_output(shape, dtype=torch.float32, channels_last=False, seed=0):
    """A conv+ReLU-like input: about half zeros, the rest positive."""
    x = F.relu(torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 3)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return x.to(dtype).requires_grad_()


def upstream(y, seed=1):
    return torch.randn(y.shape, generator=torch.Generator().manual_seed(seed)).to(y.dtype)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shape, size, alpha, beta, k, kernel, stride, padding", CASES)
def test_matches_torch_fp32(shape, size, alpha, beta, k, kernel, stride, padding, channels_last,
                            no_torch_fallback):
    x = relu_output(shape, channels_last=channels_last)
    block = (size, alpha, beta, k, kernel, stride, padding)
    with no_torch_fallback():
        y = ops.lrn_max_pool2d(x, *block)
    dy = upstream(y)
    with no_torch_fallback():
        dx, = torch.autograd.grad(y, x, dy)
    y_ref = reference(x, *block)
    dx_ref, = torch.autograd.grad(y_ref, x, dy)
    assert_close(y, y_ref, "y")
    assert_close(dx, dx_ref, "dx")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt) and dx.is_contiguous(memory_format=fmt)


def conv_output(shape, channels_last=False, seed=0):
    """A conv output before its ReLU, mostly negative: many all-negative pooling windows and channel windows."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 3 - 2
    return (x.to(memory_format=torch.channels_last) if channels_last else x).requires_grad_()


def assert_relu_block_matches_torch(x, block, no_torch_fallback, equal_nan=False):
    """ops.lrn_max_pool2d(relu=True) against reference(relu=True): y and dx; returns them."""
    with no_torch_fallback():
        y = ops.lrn_max_pool2d(x, *block, relu=True)
    dy = upstream(y)
    with no_torch_fallback():
        dx, = torch.autograd.grad(y, x, dy)
    y_ref = reference(x, *block, relu=True)
    dx_ref, = torch.autograd.grad(y_ref, x, dy)
    assert_close(y, y_ref, "y", equal_nan=equal_nan)
    assert_close(dx, dx_ref, "dx", equal_nan=equal_nan)
    return y, dx


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shape, size, alpha, beta, k, kernel, stride, padding", CASES)
def test_relu_block_matches_torch_relu_lrn_pool(shape, size, alpha, beta, k, kernel, stride, padding, channels_last,
                                                no_torch_fallback):
    """relu=True (AlexNet's ReLU taken out of the conv) on a negative-heavy conv output: dx is 0 where x <= 0."""
    x = conv_output(shape, channels_last)
    y, dx = assert_relu_block_matches_torch(x, (size, alpha, beta, k, kernel, stride, padding), no_torch_fallback)
    assert (y == 0).any() and (dx[x.detach() > 0] != 0).any() and (dx[x.detach() <= 0] == 0).all()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt) and dx.is_contiguous(memory_format=fmt)


def test_relu_block_strided_input(no_torch_fallback):
    """x as a non-contiguous view (every other row and column of a wider map), in neither memory format."""
    x = conv_output((2, 12, 27, 31), seed=6).detach()[:, :, ::2, 1::2].requires_grad_()
    assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    assert_relu_block_matches_torch(x, (5, 1e-4, 0.75, 2.0, 3, 2, 0), no_torch_fallback)


def test_relu_block_ties_at_zero(no_torch_fallback):
    """Small integers, relu'd by the block: windows of zeros and exact ties; zeros and negatives get no gradient."""
    x = torch.randint(-2, 3, (2, 6, 15, 15), generator=torch.Generator().manual_seed(7)).float().requires_grad_()
    y, _ = assert_relu_block_matches_torch(x, (3, 1e-2, 0.75, 1.0, 3, 2, 0), no_torch_fallback)
    assert (y == 0).any()


def test_relu_block_nan_like_torch(no_torch_fallback):
    """relu(NaN) is NaN: it spreads over its channel window, wins its pooling windows, and its gradient passes the
    ReLU as PyTorch's does; a negative pixel's gradient is 0 even beside it."""
    x = conv_output((1, 8, 9, 9), seed=8).detach()
    x[0, 3, 4, 4] = float("nan")
    y, dx = assert_relu_block_matches_torch(x.requires_grad_(), (3, 1e-2, 0.75, 1.0, 3, 2, 0), no_torch_fallback,
                                            equal_nan=True)
    assert y.isnan().any() and dx.isnan().any()


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_equals_the_unfused_triton_ops(channels_last):
    """Same winners and bitwise the same outputs as local_response_norm then max_pool2d on our kernels."""
    x = relu_output((2, 20, 13, 13), channels_last=channels_last, seed=3)
    y, window = lrn_max_pool.lrn_max_pool2d_forward(x.detach(), 5, 1e-3, 0.75, 2.0, 3, 2)
    y_unfused = ops.max_pool2d(ops.local_response_norm(x, 5, 1e-3, 0.75, 2.0), 3, 2)
    assert window.dtype == torch.int8
    assert torch.equal(y, y_unfused)
    dy = upstream(y)
    dx, no_db = lrn_max_pool.lrn_max_pool2d_backward(dy, window, x.detach(), 5, 1e-3, 0.75, 2.0, 3, 2)
    dx_unfused, = torch.autograd.grad(y_unfused, x, dy)
    assert_close(dx, dx_unfused, "dx")
    assert no_db is None


def run_with_bias(x, bias, block, relu, no_torch_fallback, seed=1):
    """(y, dx, db) of ops.lrn_max_pool2d(bias=bias) through autograd, and the dy used."""
    x, bias = x.detach().clone().requires_grad_(), bias.detach().clone().requires_grad_()
    with no_torch_fallback():
        y = ops.lrn_max_pool2d(x, *block, relu=relu, bias=bias)
        dy = upstream(y, seed)
        return y, *torch.autograd.grad(y, (x, bias), dy), dy


def bias_reference(x, bias, dy, block, relu):
    """(y, dx, db) of reference(x + bias[c]) by PyTorch."""
    x, bias = x.detach().clone().requires_grad_(), bias.detach().clone().requires_grad_()
    y = reference(x + bias[:, None, None], *block, relu=relu)
    return y, *torch.autograd.grad(y, (x, bias), dy)


@pytest.mark.parametrize("relu", [False, True], ids=["bias-block", "bias-relu-block"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shape, size, alpha, beta, k, kernel, stride, padding", CASES)
def test_bias_block_matches_torch(shape, size, alpha, beta, k, kernel, stride, padding, channels_last, relu,
                                  no_torch_fallback):
    """bias: the block of x + bias[c] (AlexNet's conv bias moved to the block): y, dx and the bias gradient (dx
    summed over N, H, W from the backward's per-program partials: several rows of them at the AlexNet sizes)."""
    x = conv_output(shape, channels_last, seed=9).detach()
    bias = torch.randn(shape[1], generator=torch.Generator().manual_seed(10))
    block = (size, alpha, beta, k, kernel, stride, padding)
    y, dx, db, dy = run_with_bias(x, bias, block, relu, no_torch_fallback)
    y_ref, dx_ref, db_ref = bias_reference(x, bias, dy, block, relu)
    for name, ours, ref in zip(("y", "dx", "db"), (y, dx, db), (y_ref, dx_ref, db_ref), strict=True):
        assert_close(ours, ref, name)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt) and dx.is_contiguous(memory_format=fmt) and db.shape == bias.shape


def test_bias_block_strided_operands(no_torch_fallback):
    """x and the bias as non-contiguous views (x every other row and column of a wider map, the bias every other
    element)."""
    x = conv_output((2, 12, 27, 31), seed=11).detach()[:, :, ::2, 1::2]
    bias = torch.randn(24, generator=torch.Generator().manual_seed(12))[::2]
    assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    block = (5, 1e-4, 0.75, 2.0, 3, 2, 0)
    y, dx, db, dy = run_with_bias(x, bias, block, True, no_torch_fallback)
    for name, ours, ref in zip(("y", "dx", "db"), (y, dx, db), bias_reference(x, bias, dy, block, True), strict=True):
        assert_close(ours, ref, name)


def every_other_column(t: torch.Tensor) -> torch.Tensor:
    """A copy of t as a view of every other column of a wider buffer (neither memory format)."""
    wide = torch.full((*t.shape[:-1], 2 * t.shape[-1]), 99, dtype=t.dtype)
    wide[..., ::2] = t
    return wide[..., ::2]


def partial_rows_recorded(monkeypatch) -> list[int]:
    """The list that the row count of each bias-gradient partials buffer the block allocates goes into."""
    rows, bias_partials = [], lrn_max_pool.bias_partials

    def recorded_partials(count, channels, like):
        rows.append(count)
        return bias_partials(count, channels, like)

    monkeypatch.setattr(lrn_max_pool, "bias_partials", recorded_partials)
    return rows


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_bias_grad_programs_loop_over_pixel_blocks(channels_last, monkeypatch, no_torch_fallback):
    """The backward's programs each sum the bias gradient of BLOCKS pixel blocks: one image, 7 channels, 13 rows
    and a width making the block count one past twice BLOCKS (the last program has one block of pixels, the rest
    masked), x, dy, the window offsets and the bias as strided views: y, dx and db equal PyTorch's, from one
    partial row per program."""
    configs, blocks = lrn_max_pool.backward_launch(7, True, channels_last)
    assert configs is lrn_max_pool.CONFIGS
    assert blocks["BLOCKS"] > 1
    pixels_per_program = blocks["BLOCKS"] * blocks["BLOCK_P"]
    width = 2 * pixels_per_program // 13 + 1  # 13 * width pixels: past 2 programs' worth by at most one block
    assert 2 * pixels_per_program < 13 * width <= 2 * pixels_per_program + blocks["BLOCK_P"]
    x = conv_output((1, 7, 13, width), channels_last, seed=18).detach()
    x = every_other_column(x) if not channels_last else x
    bias = torch.randn(14, generator=torch.Generator().manual_seed(19))[::2]
    block = (5, 1e-4, 0.75, 2.0, 3, 2, 0)
    rows = partial_rows_recorded(monkeypatch)
    with no_torch_fallback():
        y, window = lrn_max_pool.lrn_max_pool2d_forward(x, *block[:4], *block[4:], relu=True, bias=bias)
        dy = every_other_column(upstream(y, seed=20))
        dx, db = lrn_max_pool.lrn_max_pool2d_backward(dy, every_other_column(window), x, *block, relu=True,
                                                      bias=bias, bias_grad=True)
    assert rows == [3]
    for name, ours, ref in zip(("y", "dx", "db"), (y, dx, db), bias_reference(x, bias, dy, block, True), strict=True):
        assert_close(ours, ref, name)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_more_than_128_channels_backward_on_twice_the_pixels_in_channels_last(channels_last, monkeypatch,
                                                                              no_torch_fallback):
    """2012 conv2's 256 channels: in channels_last the backward runs twice the warps and pixels per program (one
    partial row per program: half the rows), in NCHW the plain tile; y, dx and db equal PyTorch's, the bias a
    strided view."""
    configs, wide = lrn_max_pool.backward_launch(256, True, True)
    plain = lrn_max_pool.backward_launch(256, True, False)[1]
    assert configs is lrn_max_pool.WIDE_BACKWARD_CONFIGS and lrn_max_pool.backward_launch(256, True, False)[0] is \
        lrn_max_pool.CONFIGS
    assert wide == dict(plain, BLOCK_P=2 * plain["BLOCK_P"]) and wide["BLOCKS"] == plain["BLOCKS"] == 1
    assert configs.tensor_core[0].num_warps == 2 * lrn_max_pool.CONFIGS.tensor_core[0].num_warps
    width = plain["BLOCK_P"] * 3 // 13 - 1  # 13 * width pixels: past 2 plain blocks, within 2 wide ones
    assert 2 * plain["BLOCK_P"] < 13 * width <= 2 * wide["BLOCK_P"] - plain["BLOCK_P"]
    x = conv_output((1, 256, 13, width), channels_last, seed=21).detach()
    bias = torch.randn(512, generator=torch.Generator().manual_seed(22))[::2]
    block = (5, 1e-4, 0.75, 2.0, 3, 2, 0)
    rows = partial_rows_recorded(monkeypatch)
    y, dx, db, dy = run_with_bias(x, bias, block, True, no_torch_fallback)
    assert rows == [2 if channels_last else 3]
    for name, ours, ref in zip(("y", "dx", "db"), (y, dx, db), bias_reference(x, bias, dy, block, True), strict=True):
        assert_close(ours, ref, name)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("bias_dtype", ["x's", torch.float32], ids=["bias-of-x-dtype", "fp32-bias"])
def test_bias_low_precision_against_fp64(dtype, bias_dtype, no_torch_fallback):
    """fp16/bf16 x with a bias of its dtype or fp32 (autocast's master bias: rounded to x's dtype, its gradient
    fp32): the block of x + bias as PyTorch's add stores it in x's dtype; db is the sum of dx."""
    x = conv_output((2, 16, 11, 11), seed=13).detach().to(dtype)
    bias = torch.randn(16, generator=torch.Generator().manual_seed(14)).to(dtype if bias_dtype == "x's" else bias_dtype)
    block = (5, 1e-4, 0.75, 2.0, 3, 2, 0)
    y, dx, db, dy = run_with_bias(x, bias, block, True, no_torch_fallback)
    assert y.dtype == dx.dtype == dtype and db.dtype == bias.dtype
    z = x + bias.to(dtype)[:, None, None]
    reference32 = rounded_reference(z, dy, dtype, torch.float32, block, relu=True)
    reference64 = rounded_reference(z, dy, dtype, torch.float64, block, relu=True)
    for name, ours, ref32, ref64 in zip(("y", "dx"), (y, dx), reference32, reference64, strict=True):
        assert_low_precision_close(ours, ref32.to(dtype), ref64, name)
    assert_close(db, dx.double().sum((0, 2, 3)).to(bias.dtype), "db")


def test_bias_gradcheck_float64():
    """Both inputs, x of both signs around the bias (none within gradcheck's step of the ReLU's kink)."""
    gen = torch.Generator().manual_seed(15)
    x = torch.rand(1, 5, 7, 7, dtype=torch.float64, generator=gen) + 0.1
    x = (x * torch.where(torch.arange(245).view(1, 5, 7, 7) % 3 == 0, -1, 1)).requires_grad_()
    bias = (torch.rand(5, dtype=torch.float64, generator=gen) * 0.05).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, b: ops.lrn_max_pool2d(x, 3, 0.5, 0.75, 1.0, 3, 2, relu=True, bias=b),
                                    (x, bias), fast_mode=True)


def test_bias_without_its_gradient(no_torch_fallback):
    """A bias that needs no gradient still shifts x; the backward then sums no partials."""
    x = conv_output((2, 8, 9, 9), seed=16)
    bias = torch.randn(8, generator=torch.Generator().manual_seed(17))
    block = (5, 1e-4, 0.75, 2.0, 3, 2, 0)
    with no_torch_fallback():
        y = ops.lrn_max_pool2d(x, *block, relu=True, bias=bias)
        dy = upstream(y)
        dx, = torch.autograd.grad(y, x, dy)
    y_ref, dx_ref, _ = bias_reference(x, bias, dy, block, True)
    assert_close(y, y_ref, "y")
    assert_close(dx, dx_ref, "dx")


def test_ties_after_relu_go_to_the_first_maximum(no_torch_fallback):
    """Small integers after ReLU: many windows hold equal normalised values; PyTorch's first maximum wins."""
    gen = torch.Generator().manual_seed(2)
    x = F.relu(torch.randint(-2, 3, (2, 6, 15, 15), generator=gen).float()).requires_grad_()
    with no_torch_fallback():
        y = ops.lrn_max_pool2d(x, 3, 1e-2, 0.75, 1.0, 3, 2)
    dy = upstream(y)
    with no_torch_fallback():
        dx, = torch.autograd.grad(y, x, dy)
    y_ref = reference(x, 3, 1e-2, 0.75, 1.0, 3, 2, 0)
    dx_ref, = torch.autograd.grad(y_ref, x, dy)
    assert_close(y, y_ref, "y")
    assert_close(dx, dx_ref, "dx")  # a gradient routed to another tied position would be off by O(1)


def test_nan_propagates_like_torch(no_torch_fallback):
    """A NaN spreads over its LRN channel window and wins every pooling window it is in, as in PyTorch."""
    x = relu_output((1, 8, 9, 9)).detach()
    x[0, 3, 4, 4] = float("nan")
    x.requires_grad_()
    with no_torch_fallback():
        y = ops.lrn_max_pool2d(x, 3, 1e-2, 0.75, 1.0, 3, 2)
    y_ref = reference(x, 3, 1e-2, 0.75, 1.0, 3, 2, 0)
    assert torch.isnan(y_ref).any()
    assert_close(y, y_ref, "y", equal_nan=True)


def rounded_reference(x, dy, dtype, reference_dtype, block, relu=False):
    """(y, dx) of the composition (of relu(x) if ``relu``) computed in reference_dtype, with the LRN output rounded to
    ``dtype`` before the pool (straight-through for the gradient), as every implementation that stores it in
    ``dtype`` does: bf16 rounding makes ties, which an unrounded reference would break differently, routing
    gradients elsewhere."""
    x_ref = x.detach().to(reference_dtype).requires_grad_()
    normalised = F.local_response_norm(F.relu(x_ref) if relu else x_ref, *block[:4])
    normalised = normalised + (normalised.to(dtype).to(reference_dtype) - normalised).detach()
    y = F.max_pool2d(normalised, *block[4:])
    return y, *torch.autograd.grad(y, x_ref, dy.to(reference_dtype))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("relu", [False, True], ids=["block", "relu-block"])
def test_low_precision_against_fp64(dtype, relu, no_torch_fallback):
    """PyTorch's CPU LRN has no fp16/bf16 kernels, so its share of the bound is its fp32 result rounded."""
    x = (conv_output((2, 16, 11, 11)) if relu else relu_output((2, 16, 11, 11))).detach().to(dtype).requires_grad_()
    block = (5, 1e-4, 0.75, 2.0, 3, 2, 0)
    with no_torch_fallback():
        y = ops.lrn_max_pool2d(x, *block, relu=relu)
        dy = upstream(y)
        dx, = torch.autograd.grad(y, x, dy)
    assert y.dtype == dtype and dx.dtype == dtype
    reference32 = rounded_reference(x, dy, dtype, torch.float32, block, relu)
    reference64 = rounded_reference(x, dy, dtype, torch.float64, block, relu)
    for name, ours, ref32, ref64 in zip(("y", "dx"), (y, dx), reference32, reference64, strict=True):
        assert_low_precision_close(ours, ref32.to(dtype), ref64, name)


@pytest.mark.parametrize("relu", [False, True], ids=["block", "relu-block"])
def test_gradcheck_float64(relu):
    """relu: x of both signs (none within gradcheck's step of 0)."""
    x = (torch.rand(1, 5, 7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) + 0.1)
    x = (x * torch.where(torch.arange(245).view(1, 5, 7, 7) % 3 == 0, -1, 1) if relu else x).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: ops.lrn_max_pool2d(x, 3, 0.5, 0.75, 1.0, 3, 2, relu=relu), (x,),
                                    fast_mode=True)


BLOCK_LAYERS = [layer.scaled(8, size) for layer, size in zip(CONV_LAYERS["2012"][:2], (43, 15), strict=True)]


@pytest.mark.parametrize("relu_in", ["conv", "block", "block-and-bias"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("layer", BLOCK_LAYERS, ids=["conv1-block", "conv2-block"])
def test_conv_relu_block_matches_the_torch_composition(layer, channels_last, relu_in, no_torch_fallback):
    """AlexNet's conv -> ReLU -> LRN -> pool on the Triton path against PyTorch, the ReLU in the conv's epilogue, in
    the block, or in the block with the conv's bias (as the model runs it): output and every gradient."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, layer.in_channels, layer.size, layer.size, generator=gen)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    w = torch.randn(layer.out_channels, layer.in_channels // layer.groups, layer.kernel, layer.kernel, generator=gen)
    w = w / (layer.in_channels // layer.groups * layer.kernel ** 2) ** 0.5
    b = torch.randn(layer.out_channels, generator=gen)
    x, w, b = (t.requires_grad_() for t in (x, w, b))
    conv = dict(stride=layer.stride, padding=layer.padding, groups=layer.groups)
    with no_torch_fallback():
        in_block = relu_in.startswith("block")
        bias_in_block = relu_in == "block-and-bias"
        y = ops.lrn_max_pool2d(ops.conv2d(x, w, None if bias_in_block else b, relu=not in_block, **conv), 5, 1e-4,
                               0.75, 2.0, relu=in_block, bias=b if bias_in_block else None)
    dy = upstream(y)
    with no_torch_fallback():
        grads = torch.autograd.grad(y, (x, w, b), dy)
    y_ref = reference(F.relu(F.conv2d(x, w, b, **conv)), 5, 1e-4, 0.75, 2.0, 3, 2, 0)
    grads_ref = torch.autograd.grad(y_ref, (x, w, b), dy)
    for name, ours, ref in zip(("y", "dx", "dw", "db"), (y, *grads), (y_ref, *grads_ref), strict=True):
        assert_close(ours, ref, name)


@pytest.mark.parametrize("relu", [False, True], ids=["block", "relu-block"])
def test_module_is_the_composition(relu, no_torch_fallback):
    x = conv_output((2, 8, 9, 9)) if relu else relu_output((2, 8, 9, 9))
    with no_torch_fallback():
        y = nn.LRNMaxPool2d(5, alpha=1e-4, beta=0.75, k=2.0, kernel_size=3, stride=2, relu=relu)(x)
    assert_close(y, reference(x, 5, 1e-4, 0.75, 2.0, 3, 2, 0, relu), "y")


BAD_INPUTS = [
    ("3-D x", (4, 9, 9), dict(size=5), ValueError, r"x must be 4-D.*\(4, 9, 9\)"),
    ("even size", (1, 4, 9, 9), dict(size=4), ValueError, r"positive odd int, got 4"),
    ("non-positive size", (1, 4, 9, 9), dict(size=-1), ValueError, r"positive odd int, got -1"),
    ("kernel larger than input", (1, 4, 2, 2), dict(size=3), ValueError, r"larger than the input"),
    ("padding over half the kernel", (1, 4, 9, 9), dict(size=3, padding=2), ValueError, r"at most half"),
    ("int relu", (1, 4, 9, 9), dict(size=3, relu=1), TypeError, r"lrn_max_pool2d: relu must be a bool, got 1"),
    ("bias of the wrong length", (1, 4, 9, 9), dict(size=3, bias=torch.zeros(5)), ValueError,
     r"lrn_max_pool2d: bias must have shape \(4,\) \(x's channels\), got \(5,\)"),
    ("float64 bias", (1, 4, 9, 9), dict(size=3, bias=torch.zeros(4, dtype=torch.float64)), TypeError,
     r"lrn_max_pool2d: bias has dtype torch.float64; it must be x's \(torch.float32\)"),
    ("bias on another device", (1, 4, 9, 9), dict(size=3, bias=torch.zeros(4, device="meta")), ValueError,
     r"lrn_max_pool2d: bias is on meta"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_rejected_with_a_clear_error(case):
    _, shape, kwargs, error, message = case
    with pytest.raises(error, match=message):
        ops.lrn_max_pool2d(torch.rand(shape), **kwargs)


def test_integer_input_is_rejected():
    with pytest.raises(TypeError, match="x has dtype torch.int64"):
        ops.lrn_max_pool2d(torch.ones(1, 4, 9, 9, dtype=torch.int64), 3)


def test_mismatched_gradient_is_rejected():
    x = relu_output((1, 4, 9, 9)).detach()
    y, window = lrn_max_pool.lrn_max_pool2d_forward(x, 3, 1e-4, 0.75, 1.0, 3, 2)
    with pytest.raises(ValueError, match=r"dy \(1, 4, 3, 3\).*must have shape \(1, 4, 4, 4\)"):
        lrn_max_pool.lrn_max_pool2d_backward(torch.zeros(1, 4, 3, 3), window, x, 3, 1e-4, 0.75, 1.0, 3, 2)
