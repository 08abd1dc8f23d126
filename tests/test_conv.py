"""conv2d on the Triton kernels against torch.nn.functional.conv2d: output and every gradient."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close, assert_low_precision_close

from alexnet_triton import nn, ops
from alexnet_triton.architecture import CONV_LAYERS, ConvLayer
from alexnet_triton.data import space_to_depth_images
from alexnet_triton.kernels import conv, runtime, space_to_depth
from alexnet_triton.ops import conv as conv_op

# PyTorch's reference pads a copy for an even "same" window; this op needs none (pad_h/pad_w are the top/left padding).
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")

# AlexNet's ten conv layers: real kernel/stride/padding/groups, channels / 8
# and smaller images so the interpreter stays fast.
SCALED_SIZES = {"conv1": 31, "conv2": 11}
ALEXNET_LAYERS = [pytest.param(layer.scaled(8, SCALED_SIZES.get(layer.name, 7)), id=f"{variant}-{layer.name}")
                  for variant, layers in CONV_LAYERS.items() for layer in layers]
ODD_LAYERS = [
    pytest.param(ConvLayer("batch1_rect", 5, 7, 3, 2, 1, 1, 10), id="stride2-not-dividing"),
    pytest.param(ConvLayer("wide_channels", 80, 136, 3, 1, 1, 1, 6), id="channels-over-one-block"),
    pytest.param(ConvLayer("groups3", 18, 21, 2, 1, 0, 3, 9), id="groups3-even-kernel"),
    pytest.param(ConvLayer("1x1", 24, 20, 1, 1, 0, 1, 5), id="1x1"),
    pytest.param(ConvLayer("stride3_pad2", 4, 9, 4, 3, 2, 1, 11), id="stride3-pad-gt-stride"),
]


def random_operands(x_shape, w_shape, dtype=torch.float32, channels_last: bool = False, seed: int = 0):
    """Fresh random x, weight (scaled by 1/sqrt(fan_in)), bias, all requiring grad."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(x_shape, generator=gen)
    w = torch.randn(w_shape, generator=gen) / (w_shape[1] * w_shape[2] * w_shape[3]) ** 0.5
    b = torch.randn(w_shape[0], generator=gen)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return [t.to(dtype).requires_grad_() for t in (x, w, b)]


def make_inputs(layer: ConvLayer, batch: int, dtype=torch.float32, height: int | None = None,
                channels_last: bool = False, seed: int = 0):
    """``random_operands`` for an AlexNet-like layer: x [batch, C, height (default: size), size]."""
    return random_operands((batch, layer.in_channels, height or layer.size, layer.size), layer.weight_shape, dtype,
                           channels_last, seed)


def geometry(layer: ConvLayer) -> dict:
    return dict(stride=layer.stride, padding=layer.padding, groups=layer.groups)


def torch_conv(x, w, b, conv_args: dict, relu):
    y = F.conv2d(x, w, b, **conv_args)
    return F.relu(y) if relu else y


def run_both(conv_args: dict, x, w, b, relu, no_torch_fallback, precision="ieee"):
    """(triton outputs, torch outputs, dy): y, dx, dw, db for the same upstream gradient dy; ``conv_args``: the
    keyword arguments stride, padding, dilation, groups."""
    with no_torch_fallback():
        y = ops.conv2d(x, w, b, relu=relu, precision=precision, **conv_args)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(y.dtype)
    with no_torch_fallback():
        grads = torch.autograd.grad(y, (x, w, b), dy)
    y_ref = torch_conv(x, w, b, conv_args, relu)
    grads_ref = torch.autograd.grad(y_ref, (x, w, b), dy)
    return (y, *grads), (y_ref, *grads_ref), dy


def assert_all_close(ours, ref, names=("y", "dx", "dw", "db")):
    for name, a, e in zip(names, ours, ref, strict=True):
        assert a.shape == e.shape, f"{name}: shape {tuple(a.shape)} vs {tuple(e.shape)}"
        assert_close(a, e, name)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("layer", ALEXNET_LAYERS)
def test_alexnet_layers_fp32(layer, channels_last, no_torch_fallback):
    x, w, b = make_inputs(layer, batch=2, channels_last=channels_last)
    ours, ref, _ = run_both(geometry(layer), x, w, b, True, no_torch_fallback)
    assert_all_close(ours, ref)
    assert ours[0].is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert ours[1].stride() == x.stride()


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("layer", [p for p in ALEXNET_LAYERS if "conv1" not in p.id])
def test_alexnet_layers_channel_block_order(layer, channels_last):
    check_channel_block_order(make_inputs(layer, batch=2, channels_last=channels_last), geometry(layer))


def check_channel_block_order(operands, conv_args: dict):
    """The launchers in the reduction order a GPU uses for >= 16 channels per group (the interpreter defaults to
    flat), ReLU fused: y, db, dx, dw against PyTorch's autograd."""
    x, w, b = (t.detach().requires_grad_() for t in operands)
    y_ref = torch_conv(x, w, b, conv_args, True)
    dy = torch.randn(y_ref.shape, generator=torch.Generator().manual_seed(2))
    dx_ref, dw_ref, db_ref = torch.autograd.grad(y_ref, (x, w, b), dy)
    x, w, b, y_ref = (t.detach() for t in (x, w, b, y_ref))
    y = conv.conv2d_forward(x, w, b, relu=True, flat_crs=False, **conv_args)
    masked, db = conv.conv2d_output_grad(dy, y_ref, bias_grad=True)
    dx = conv.conv2d_input_grad(masked, w, x.shape, memory_format=runtime.memory_format_of(x), flat_krs=False,
                                **conv_args)
    dw = conv.conv2d_weight_grad(masked, x, w.shape, flat_crs=False, **conv_args)
    assert_all_close((y, dx, dw, db), (y_ref, dx_ref, dw_ref, db_ref))


@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@pytest.mark.parametrize("layer", ODD_LAYERS)
def test_odd_shapes_fp32(layer, relu, no_torch_fallback):
    x, w, b = make_inputs(layer, batch=1, height=layer.size + 3, seed=3)
    ours, ref, _ = run_both(geometry(layer), x, w, b, relu, no_torch_fallback)
    assert_all_close(ours, ref)


# Dilation: in the input gradient, gcd(stride, dilation) > 1 leaves stride phases without taps (d2x3-s2x3;
# d4x2-s2x3's rows, where a tap also steps two output rows), gcd = 1 permutes a phase's taps (d3-s2-groups3).
DILATED = [
    pytest.param((2, 6, 11, 10), (8, 6, 3, 3), dict(dilation=2), id="d2"),
    pytest.param((2, 6, 11, 10), (8, 6, 3, 2), dict(stride=(2, 3), padding=(1, 2), dilation=(2, 3)), id="d2x3-s2x3"),
    pytest.param((1, 6, 13, 12), (9, 2, 3, 3), dict(stride=2, padding=2, dilation=3, groups=3), id="d3-s2-groups3"),
    pytest.param((2, 4, 12, 11), (6, 4, 2, 3), dict(stride=(2, 3), padding=(3, 1), dilation=(4, 2)), id="d4x2-s2x3"),
]
# "same": dilation * (kernel - 1) rows/columns in all, an odd one below/right; "valid": none.
PADDING_STRINGS = [
    pytest.param((2, 5, 9, 8), (6, 5, 3, 3), dict(padding="same"), id="same-odd-kernel"),
    pytest.param((2, 5, 9, 8), (6, 5, 4, 2), dict(padding="same"), id="same-even-kernel"),
    pytest.param((2, 5, 9, 8), (6, 5, 2, 3), dict(padding="same", dilation=(3, 2)), id="same-dilated-odd-total"),
    pytest.param((1, 6, 7, 9), (6, 2, 4, 3), dict(padding="same", dilation=(2, 1), groups=3), id="same-groups3"),
    pytest.param((2, 5, 9, 8), (6, 5, 3, 4), dict(padding="valid", stride=2, dilation=2), id="valid-strided"),
]


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("x_shape, w_shape, conv_args", DILATED + PADDING_STRINGS)
def test_dilation_and_string_padding_fp32(x_shape, w_shape, conv_args, channels_last, no_torch_fallback):
    operands = random_operands(x_shape, w_shape, channels_last=channels_last, seed=4)
    ours, ref, _ = run_both(conv_args, *operands, True, no_torch_fallback)
    assert_all_close(ours, ref)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("x_shape, w_shape, conv_args", DILATED + PADDING_STRINGS)
def test_dilation_and_string_padding_channel_block_order(x_shape, w_shape, conv_args, channels_last):
    """Includes the weight gradient's pointer-stepping path (channels_last x of a stride-1 "same" conv)."""
    check_channel_block_order(random_operands(x_shape, w_shape, channels_last=channels_last, seed=5), conv_args)


@pytest.mark.parametrize("layout", ["chw", "hwc"])
def test_unbatched_input(layout, no_torch_fallback):
    """x [C, H, W] (contiguous, or a channels-last view): y [K, OH, OW] and dx [C, H, W], as PyTorch's."""
    x, w, b = random_operands((5, 9, 8), (6, 5, 3, 3), seed=6)
    if layout == "hwc":
        x = x.detach().permute(1, 2, 0).contiguous().permute(2, 0, 1).requires_grad_()
    ours, ref, _ = run_both(dict(stride=2, padding=1, dilation=(1, 2)), x, w, b, True, no_torch_fallback)
    assert_all_close(ours, ref)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_empty_batch_launches_nothing(channels_last, no_torch_fallback):
    """N = 0: an empty y and dx, zero dw and db, as PyTorch's, and no kernel launched."""
    operands = random_operands((0, 4, 7, 6), (6, 2, 3, 3), channels_last=channels_last)
    launched = []
    with runtime.capture_launches(launched.append):
        ours, ref, _ = run_both(dict(padding="same", dilation=2, groups=2), *operands, True, no_torch_fallback)
    assert launched == []
    assert_all_close(ours, ref)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("layer", [ALEXNET_LAYERS[0], ALEXNET_LAYERS[1], ALEXNET_LAYERS[3], ODD_LAYERS[1]])
def test_low_precision_against_fp64(layer, dtype, no_torch_fallback):
    """fp16/bf16 (tensor-core path) forward with ReLU and backward without it, vs an fp64 reference.

    Backward runs without the ReLU: where a rounded output sits at 0 the mask
    legitimately differs between precisions (the mask itself is tested below).
    """
    x, w, b = make_inputs(layer, batch=2, dtype=dtype)
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    with no_torch_fallback():
        y_relu = ops.conv2d(x, w, b, relu=True, **geometry(layer))
    g = geometry(layer)
    assert_low_precision_close(y_relu, torch_conv(x, w, b, g, True), torch_conv(x64, w64, b64, g, True), "y")

    ours, ref, dy = run_both(g, x, w, b, False, no_torch_fallback)
    y64 = torch_conv(x64, w64, b64, g, False)
    refs64 = (y64, *torch.autograd.grad(y64, (x64, w64, b64), dy.double()))
    for name, a, e, e64 in zip(("y", "dx", "dw", "db"), ours, ref, refs64, strict=True):
        assert a.dtype == dtype
        assert_low_precision_close(a, e, e64, name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
def test_relu_mask_in_backward_kernels(dtype):
    """dx and dw use dy * (y > 0) with y given exactly, at every dtype."""
    layer = ALEXNET_LAYERS[1].values[0]
    x, w, _ = (t.detach() for t in make_inputs(layer, batch=2, dtype=dtype))
    out_shape = (2, layer.out_channels, layer.out_size, layer.out_size)
    gen = torch.Generator().manual_seed(5)
    dy = torch.randn(out_shape, generator=gen).to(dtype)
    y = torch.randn(out_shape, generator=gen).to(dtype)  # about half positive
    masked64 = dy.double() * (y > 0)
    masked, db = conv.conv2d_output_grad(dy, y, bias_grad=True)
    dx = conv.conv2d_input_grad(masked, w, x.shape, **geometry(layer))
    dw = conv.conv2d_weight_grad(masked, x, w.shape, **geometry(layer))
    dx64 = torch.nn.grad.conv2d_input(x.shape, w.double(), masked64, **geometry(layer))
    dw64 = torch.nn.grad.conv2d_weight(x.double(), w.shape, masked64, **geometry(layer))
    for name, ours, ref64 in (("dx", dx, dx64), ("dw", dw, dw64), ("db", db, masked64.sum((0, 2, 3)))):
        scale = ref64.abs().max().item()
        error = (ours.double() - ref64).abs().max().item()
        tolerance = 1e-5 if dtype == torch.float32 else 2 * torch.finfo(dtype).eps
        assert error <= tolerance * scale, f"{name}: error {error:.3g} vs scale {scale:.3g}"


# (layer, the input gradient's reduction order: flat or channel blocks): 2012 conv4 (2 groups) and torchvision
# conv4, scaled; a strided conv (stride phases) and 3 groups with an even kernel
RELU_INPUT_CASES = [pytest.param(ALEXNET_LAYERS[3].values[0], False, id="2012-conv4-channel-blocks"),
                    pytest.param(ALEXNET_LAYERS[8].values[0], True, id="torchvision-conv4-flat"),
                    pytest.param(ODD_LAYERS[0].values[0], False, id="stride2-not-dividing"),
                    pytest.param(ODD_LAYERS[2].values[0], True, id="groups3-even-kernel")]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("layer, flat", RELU_INPUT_CASES)
def test_input_grad_masked_by_a_relu_input(layer, flat, dtype):
    """``relu_input``: dx = conv2d_input_grad(dy, w) * (x > 0) in one launch, x a ReLU's output (half of it 0) as a
    channels_last view with column stride 2, dy a view every other column, dx poisoned; and the 48-column tile
    (two dots, ``block_tail``), whose second part the mask covers too."""
    gen = torch.Generator().manual_seed(41)
    x_shape = (2, layer.in_channels, layer.size + 1, layer.size)
    x = torch.relu(torch.randn(2, layer.size + 1, 2 * layer.size, layer.in_channels, generator=gen)).to(dtype)
    x = x.permute(0, 3, 1, 2)[..., ::2]  # channels_last, every other column
    w = (torch.randn(layer.weight_shape, generator=gen) / 10).to(dtype)
    g = conv.conv2d_geometry(x_shape, w.shape, layer.stride, layer.padding, 1, layer.groups)
    dy = every_other_column(torch.randn(2, layer.out_channels, g.OH, g.OW, generator=gen).to(dtype))
    ref64 = torch.nn.grad.conv2d_input(x_shape, w.double(), dy.double(), **geometry(layer)) * (x > 0)
    configs = [None] + [c for c in conv.INPUT_GRAD_CONFIGS.tensor_core if conv._tile_of(c) == (64, 48, 128)]
    for config in configs if dtype == torch.bfloat16 and not flat else configs[:1]:
        dx = conv.conv2d_input_grad(dy, w, x_shape, flat_krs=flat, config=config, relu_input=x, **geometry(layer))
        assert torch.equal(dx == 0, (x == 0) | (ref64 == 0))
        error, scale = (dx.double() - ref64).abs().max().item(), ref64.abs().max().item()
        tolerance = 1e-5 if dtype == torch.float32 else 2 * torch.finfo(dtype).eps
        assert error <= tolerance * scale, f"dx: error {error:.3g} vs scale {scale:.3g} ({config})"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=["fp32", "bf16", "fp64"])
@pytest.mark.parametrize("layer, flat", RELU_INPUT_CASES)
def test_input_grad_sums_the_bias_gradient_under_the_relu(layer, flat, dtype):
    """``conv2d_input_grad_and_bias_grad``: dx bitwise as ``conv2d_input_grad``'s with that relu_input, and db (fp32
    for bf16: a master bias's) = dx summed over N, H, W as PyTorch sums it, within the sum's rounding; x a ReLU's
    output as a channels_last view with column stride 2, dy every other column, outputs poisoned; at the
    interpreter's tile and at each of the GPU's tensor-core and CUDA-core ones (128 and 64 rows: several partial
    rows per stride phase, the last one part empty)."""
    gen = torch.Generator().manual_seed(43)
    x = torch.relu(torch.randn(3, layer.size + 1, 2 * layer.size, layer.in_channels, generator=gen)).to(dtype)
    x = x.permute(0, 3, 1, 2)[..., ::2]
    w = (torch.randn(layer.weight_shape, generator=gen) / 10).to(dtype)
    g = conv.conv2d_geometry(x.shape, w.shape, layer.stride, layer.padding, 1, layer.groups)
    dy = every_other_column(torch.randn(3, layer.out_channels, g.OH, g.OW, generator=gen).to(dtype))
    bias_dtype = torch.float32 if dtype == torch.bfloat16 else dtype
    configs = conv.INPUT_GRAD_RELU_BIAS_CONFIGS
    for config in (None, *configs.tensor_core, *configs.cuda_core):
        dx, db = conv.conv2d_input_grad_and_bias_grad(dy, w, x, bias_dtype, flat_krs=flat, config=config,
                                                      memory_format=torch.channels_last, **geometry(layer))
        expected = conv.conv2d_input_grad(dy, w, x.shape, flat_krs=flat, config=config, relu_input=x,
                                          memory_format=torch.channels_last, **geometry(layer))
        assert torch.equal(dx, expected), config
        reference = dx.to(bias_dtype).sum((0, 2, 3))
        assert db.dtype == bias_dtype and db.shape == (layer.in_channels,)
        scale = dx.double().abs().sum((0, 2, 3)).max().item()
        assert (db - reference).abs().max().item() <= 4 * torch.finfo(bias_dtype).eps * scale, config


def test_the_bias_summing_input_grad_is_picked_from_tiles_of_one_height():
    """Its partial sums split the pixels at BLOCK_M: a pick, never autotuning, among candidates of one BLOCK_M per
    list (bitwise repeatable; the partials' rows known before the launch): on an H100's 132 SMs, 128x128 tiles
    for torchvision conv4's and conv5's input gradients (3-4 rounds of programs), 128x64 ones for 2012 conv4's and
    conv5's (192 channels a group, which 128 columns pad), at full size."""
    for configs in (conv.INPUT_GRAD_RELU_BIAS_CONFIGS, conv.INPUT_GRAD_RELU_BIAS_GATHER_CONFIGS):
        for candidates in (configs.tensor_core, configs.cuda_core):
            assert len({c.kwargs["BLOCK_M"] for c in candidates}) == 1
    picked = {}
    for variant in CONV_LAYERS:
        for layer in CONV_LAYERS[variant][3:]:
            dx = torch.empty(128, layer.in_channels, layer.size, layer.size, device="meta")
            g = conv.conv2d_geometry(dx.shape, layer.weight_shape, layer.stride, layer.padding, 1, layer.groups)
            with runtime.target(132):
                config = conv.INPUT_GRAD_RELU_BIAS_CONFIGS.pick(conv.INPUT_GRAD_RELU_BIAS_CONFIGS.tensor_core,
                                                                dict(N=128, dx_ptr=dx, **g.kernel_args()))
            picked[variant, layer.name] = conv._tile_of(config)
    assert picked == {("2012", "conv4"): (128, 64, 64), ("2012", "conv5"): (128, 64, 64),
                      ("torchvision", "conv4"): (128, 128, 64), ("torchvision", "conv5"): (128, 128, 64)}


@pytest.mark.parametrize("bias_by_next", [False, True], ids=["own-bias-pass", "bias-grad-by-next"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_a_conv_relu_hands_its_mask_to_the_next_conv(dtype, bias_by_next, monkeypatch, no_torch_fallback):
    """conv3 -> ReLU -> conv4 -> ReLU of the 2012 net (scaled), the first with ``relu_masked_by_next``, the second
    with ``relu_input``: output and the gradients of x, both weights and both biases as PyTorch's; the first conv's
    backward makes one output-grad pass, for its bias gradient (no mask, no saved output), or, with
    ``bias_grad_by_next`` and the second given its bias (``relu_input_bias``), none: the second's input gradient
    sums it."""
    conv3, conv4 = (layer.values[0] for layer in ALEXNET_LAYERS[2:4])
    x, w3, b3 = make_inputs(conv3, batch=2, dtype=dtype, height=9, channels_last=True, seed=3)
    w4, b4 = (t.detach().to(dtype).requires_grad_() for t in make_inputs(conv4, batch=1, seed=4)[1:])
    passes, output_grad = [], conv_op._conv2d_output_grad
    monkeypatch.setattr(conv_op, "_conv2d_output_grad",
                        lambda dy, y, bias_grad, bias_dtype: passes.append((y is None, bias_grad))
                        or output_grad(dy, y, bias_grad, bias_dtype))
    with no_torch_fallback():
        middle = ops.conv2d(x, w3, b3, relu=True, relu_masked_by_next=True, bias_grad_by_next=bias_by_next,
                            **geometry(conv3))
        y = ops.conv2d(middle, w4, b4, relu=True, relu_input=True, relu_input_bias=b3 if bias_by_next else None,
                       **geometry(conv4))
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(5)).to(dtype)
    with no_torch_fallback():
        grads = torch.autograd.grad(y, (x, w3, b3, w4, b4), dy)
    # conv4's: mask and bias; conv3's: bias only, unless conv4's input gradient summed it
    assert passes == [(False, True)] + [(True, True)] * (not bias_by_next)

    def reference(*operands):
        x, w3, b3, w4, b4 = operands
        return torch_conv(torch_conv(x, w3, b3, geometry(conv3), True), w4, b4, geometry(conv4), True)
    y_ref = reference(x, w3, b3, w4, b4)
    names = ("y", "dx", "dw3", "db3", "dw4", "db4")
    ours, ref = (y, *grads), (y_ref, *torch.autograd.grad(y_ref, (x, w3, b3, w4, b4), dy))
    if dtype == torch.float32:
        assert_all_close(ours, ref, names)
    else:
        operands64 = [t.detach().double().requires_grad_() for t in (x, w3, b3, w4, b4)]
        y64 = reference(*operands64)
        for name, a, e, e64 in zip(names, ours, ref, (y64, *torch.autograd.grad(y64, operands64, dy.double())),
                                   strict=True):
            assert_low_precision_close(a, e, e64, name)


def test_relu_hand_over_refuses_what_it_cannot_do():
    """relu_masked_by_next without a ReLU, either flag on the space-to-depth form, a relu_input of the wrong shape,
    bias_grad_by_next without relu_masked_by_next or a bias, and a relu_input_bias of the wrong shape or dtype or
    without relu_input: one clear error each."""
    x, w = torch.randn(2, 4, 9, 9), torch.randn(6, 4, 3, 3)
    with pytest.raises(ValueError, match=r"^conv2d: relu_masked_by_next needs relu=True"):
        ops.conv2d(x, w, relu_masked_by_next=True)
    x1, w1 = torch.randn(1, 3, 31, 31).to(memory_format=torch.channels_last), torch.randn(8, 3, 11, 11)
    with pytest.raises(ValueError, match=r"^conv2d: relu_input and relu_masked_by_next are not supported .* "
                                         r"space-to-depth form \(input \(1, 3, 31, 31\)"):
        ops.conv2d(x1, w1, stride=4, precision="tf32", relu_input=True)
    dy = torch.randn(2, 6, 7, 7)
    with pytest.raises(ValueError, match=r"^conv2d_input_grad: relu_input must have shape \(2, 4, 9, 9\)"):
        conv.conv2d_input_grad(dy, w, x.shape, relu_input=x[:, :3])
    with pytest.raises(ValueError, match=r"^conv2d: bias_grad_by_next needs relu_masked_by_next=True and a bias"):
        ops.conv2d(x, w, torch.randn(6), relu=True, bias_grad_by_next=True)
    with pytest.raises(ValueError, match=r"^conv2d: bias_grad_by_next needs relu_masked_by_next=True and a bias"):
        ops.conv2d(x, w, relu=True, relu_masked_by_next=True, bias_grad_by_next=True)
    with pytest.raises(ValueError, match=r"^conv2d: relu_input_bias must be the bias of the conv before, shape "
                                         r"\[C_in\] = \[4\], with relu_input=True; got shape \(6,\)"):
        ops.conv2d(x, w, relu_input=True, relu_input_bias=torch.randn(6))
    with pytest.raises(ValueError, match=r"relu_input=False"):
        ops.conv2d(x, w, relu_input_bias=torch.randn(4))
    with pytest.raises(TypeError, match=r"^conv2d: relu_input_bias must be x's dtype \(torch.float32\)"):
        ops.conv2d(x, w, relu_input=True, relu_input_bias=torch.randn(4, dtype=torch.float64))


GRADCHECK_CASES = [
    pytest.param((2, 4, 6, 6), (6, 2, 3, 3), dict(stride=2, padding=1, groups=2), id="strided-groups2"),
    pytest.param((2, 4, 7, 6), (6, 2, 3, 2), dict(stride=2, padding=1, dilation=(2, 3), groups=2), id="dilated"),
    pytest.param((4, 6, 5), (3, 4, 4, 3), dict(padding="same", dilation=(1, 2)), id="unbatched-same-even-kernel"),
]


@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@pytest.mark.parametrize("x_shape, w_shape, conv_args", GRADCHECK_CASES)
def test_gradcheck_float64(x_shape, w_shape, conv_args, relu):
    x, w, b = random_operands(x_shape, w_shape, dtype=torch.float64, seed=7)
    assert torch.autograd.gradcheck(lambda x, w, b: ops.conv2d(x, w, b, relu=relu, **conv_args), (x, w, b),
                                    fast_mode=True)


SHIPPED_CONFIGS = [
    pytest.param(kernel, config, id=f"{kernel}-{runtime.config_name(config)}")
    for kernel, configs in (("forward", conv.FORWARD_CONFIGS), ("forward", conv.FORWARD_GATHER_CONFIGS),
                            ("input_grad", conv.INPUT_GRAD_CONFIGS), ("input_grad", conv.INPUT_GRAD_GATHER_CONFIGS),
                            ("weight_grad", conv.WEIGHT_GRAD_CONFIGS), ("weight_grad", conv.WEIGHT_GRAD_GATHER_CONFIGS))
    for config in configs.shipped()]


@pytest.mark.parametrize("flat", [False, True], ids=["channel-blocks", "flat"])
@pytest.mark.parametrize("kernel, config", SHIPPED_CONFIGS)
def test_every_shipped_config(kernel, config, flat):
    """Each GPU config of each conv kernel, in both reduction orders, computes the right result (dilated rows,
    plain columns: both forms of the dilation code)."""
    layer = ConvLayer("cfg", 20, 72, 3, 2, 1, 2, 9)
    x, w, b = (t.detach() for t in make_inputs(layer, batch=2, height=10))
    g = dict(geometry(layer), dilation=(2, 1))
    y_ref = torch_conv(x, w, b, g, True)
    dy = torch.randn(y_ref.shape, generator=torch.Generator().manual_seed(2))
    dy_masked = dy * (y_ref > 0)
    if kernel == "forward":
        assert_close(conv.conv2d_forward(x, w, b, relu=True, flat_crs=flat, config=config, **g), y_ref, "y")
    elif kernel == "input_grad":
        dx = conv.conv2d_input_grad(dy_masked, w, x.shape, flat_krs=flat, config=config, **g)
        assert_close(dx, torch.nn.grad.conv2d_input(x.shape, w, dy_masked, **g), "dx")
    else:
        dw = conv.conv2d_weight_grad(dy_masked, x, w.shape, flat_crs=flat, splits=2, config=config, **g)
        assert_close(dw, torch.nn.grad.conv2d_weight(x, w.shape, dy_masked, **g), "dw")


def layer_case(param) -> pytest.param:
    """(x shape, weight shape, conv arguments) of a layer parameter, batch 2."""
    layer = param.values[0]
    return pytest.param((2, layer.in_channels, layer.size, layer.size), layer.weight_shape, geometry(layer),
                        id=param.id)


def every_other_column(t: torch.Tensor) -> torch.Tensor:
    """A view with t's values whose last dimension has stride 2."""
    return torch.stack([t, t], dim=-1).flatten(-2)[..., ::2]


STRIDED_CASES = [layer_case(ALEXNET_LAYERS[1]), layer_case(ALEXNET_LAYERS[3]), layer_case(ODD_LAYERS[2]),
                 pytest.param((2, 6, 10, 9), (8, 3, 3, 2), dict(stride=2, padding=1, dilation=(2, 3), groups=2),
                              id="dilated-strided"),
                 pytest.param((2, 5, 9, 8), (6, 5, 4, 3), dict(padding="same", dilation=2), id="same-even-kernel")]


@pytest.mark.parametrize("relu, weight_view", [(True, "channels_last"), (False, "strided")],
                         ids=["relu-channels_last-weight", "linear-strided-weight"])
@pytest.mark.parametrize("x_shape, w_shape, conv_args", STRIDED_CASES)
def test_strided_operands(x_shape, w_shape, conv_args, relu, weight_view, no_torch_fallback):
    """Every operand a strided view (x, dy and the weight every other column, bias every other element) or the
    weight channels_last (as the model keeps it on a GPU): same results, dw in the weight's layout. Without
    the ReLU, dy's view reaches the input- and weight-gradient kernels itself."""
    x, w, b = (t.detach() for t in random_operands(x_shape, w_shape, seed=9))
    views = (every_other_column(x),
             w.to(memory_format=torch.channels_last) if weight_view == "channels_last" else every_other_column(w),
             torch.stack([b, b], dim=1)[:, 0])
    assert not any(v.is_contiguous() for v in views)
    views = [v.requires_grad_() for v in views]
    with no_torch_fallback():
        y = ops.conv2d(*views, relu=relu, **conv_args)
    dy = every_other_column(torch.randn(y.shape, generator=torch.Generator().manual_seed(6)))
    with no_torch_fallback():
        grads = torch.autograd.grad(y, views, dy)
    x, w, b = (t.requires_grad_() for t in (x, w, b))
    y_ref = torch_conv(x, w, b, conv_args, relu)
    assert_all_close((y, *grads), (y_ref, *torch.autograd.grad(y_ref, (x, w, b), dy)))
    assert grads[1].is_contiguous(memory_format=runtime.memory_format_of(views[1]))


def test_output_grad_reads_strided_views():
    """The ReLU mask and bias-gradient pass with dy and the saved output y both strided views."""
    gen = torch.Generator().manual_seed(8)
    dy, y = (every_other_column(torch.randn(2, 5, 4, 3, generator=gen)) for _ in range(2))
    masked, db = conv.conv2d_output_grad(dy, y, bias_grad=True)
    assert_close(masked, dy * (y > 0), "masked dy")
    assert_close(db, (dy * (y > 0)).sum((0, 2, 3)), "db")


@pytest.mark.parametrize("relu", [True, False], ids=["mask-and-bias", "bias-only"])
def test_output_grad_with_the_gpu_tile(relu, monkeypatch):
    """The GPU's tile in the interpreter: 8 blocks of 64 pixels a program, 64 channels: 585 pixels (a second
    program with one partial block and six past the end) x 80 channels (a second, partial channel block), dy and y
    strided views, outputs poisoned."""
    monkeypatch.setattr(conv, "OUTPUT_GRAD_CONFIGS", dataclasses.replace(conv.OUTPUT_GRAD_CONFIGS,
                                                                         interpreter=conv._OUTPUT_GRAD_TILE))
    gen = torch.Generator().manual_seed(12)
    dy, y = (every_other_column(torch.randn(3, 80, 13, 15, generator=gen)) for _ in range(2))
    with runtime.capture_launches() as records:
        conv.conv2d_output_grad(dy, y if relu else None, bias_grad=True)
    assert records[0].args["db_partial_ptr"].shape == (2, 80)
    masked, db = conv.conv2d_output_grad(dy, y if relu else None, bias_grad=True)
    reference = dy * (y > 0) if relu else dy
    assert_close(masked, reference, "masked dy")
    assert_close(db, reference.sum((0, 2, 3)), "db")


def test_weight_grad_is_deterministic_and_split_invariant():
    layer = ALEXNET_LAYERS[2].values[0]
    x, w, _ = (t.detach() for t in make_inputs(layer, batch=2))
    dy = torch.randn(2, layer.out_channels, layer.out_size, layer.out_size, generator=torch.Generator().manual_seed(4))
    g = geometry(layer)
    first = conv.conv2d_weight_grad(dy, x, w.shape, splits=3, **g)
    again = conv.conv2d_weight_grad(dy, x, w.shape, splits=3, **g)
    single = conv.conv2d_weight_grad(dy, x, w.shape, splits=1, **g)
    assert torch.equal(first, again)
    assert_close(first, single, "dw, 3 splits vs 1")
    assert_close(first, torch.nn.grad.conv2d_weight(x, w.shape, dy, **g), "dw")
    db = conv.conv2d_output_grad(dy, bias_grad=True)[1]
    assert torch.equal(db, conv.conv2d_output_grad(dy, bias_grad=True)[1])
    assert_close(db, dy.sum((0, 2, 3)), "db")


def test_input_grad_skipped_when_not_needed(monkeypatch):
    """AlexNet's first layer: no input gradient is computed for an input that needs none (on either path)."""
    calls = []
    for name in ("alexnet_triton.ops.conv.conv2d_input_grad", "alexnet_triton.kernels.conv.conv2d_input_grad"):
        monkeypatch.setattr(name, lambda *a, **k: calls.append(1))
    layer = ALEXNET_LAYERS[0].values[0]
    x, w, b = make_inputs(layer, batch=1)
    ops.conv2d(x.detach(), w, b, relu=True, **geometry(layer)).sum().backward()
    assert calls == [] and w.grad is not None and b.grad is not None


MODULE_ARGS = [dict(kernel_size=5, padding=2, groups=2), dict(kernel_size=(4, 3), padding="same", dilation=(2, 1)),
               dict(kernel_size=3, stride=2, padding="valid", dilation=2, bias=False)]


@pytest.mark.parametrize("kwargs", MODULE_ARGS, ids=["groups2", "same-dilated", "valid-strided-no-bias"])
def test_module_is_a_drop_in_for_nn_conv2d(kwargs, no_torch_fallback):
    """Same arguments, state_dict both ways, same outputs for a batch and an unbatched input."""
    reference = torch.nn.Conv2d(8, 12, **kwargs)
    module = nn.Conv2d(8, 12, **kwargs)
    module.load_state_dict(reference.state_dict())
    reference.load_state_dict(module.state_dict())
    assert module.state_dict().keys() == reference.state_dict().keys()
    for x in (torch.randn(2, 8, 9, 10), torch.randn(8, 9, 10)):
        with no_torch_fallback():
            y = module(x)
        assert_close(y, reference(x), "y")


def test_module_refuses_other_padding_modes_and_strided_same():
    with pytest.raises(NotImplementedError, match=r"padding_mode 'reflect'.*F\.pad\(x, \[1, 1, 2, 2\]"):
        nn.Conv2d(3, 4, 3, padding=(2, 1), padding_mode="reflect")
    with pytest.raises(ValueError, match="strided"):  # torch.nn.Conv2d's own check
        nn.Conv2d(3, 4, 3, stride=2, padding="same")


def test_guard_catches_a_torch_convolution(no_torch_fallback):
    """The fallback guard itself works: a PyTorch convolution inside it fails."""
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    with no_torch_fallback(), pytest.raises(AssertionError, match="inside the Triton path"):
        F.conv2d(x, w)
    with no_torch_fallback(), pytest.raises(AssertionError, match="inside the Triton path"):
        torch.nn.Conv2d(2, 3, 3)(x)


BAD_INPUTS = [
    ("2-D input", dict(x=(5, 5)), ValueError, r"input must be 3-D \[C_in, H, W\] or 4-D.*\(5, 5\)"),
    ("5-D weight", dict(w=(4, 3, 3, 3, 1)), ValueError, r"weight must be 4-D"),
    ("channels vs weight", dict(x=(2, 4, 8, 8)), ValueError, r"C_in=4.*expects C_in=3"),
    ("C_in not divisible by groups", dict(x=(2, 3, 8, 8), w=(4, 1, 3, 3), groups=2), ValueError,
     r"divide by groups=2"),
    ("C_out not divisible by groups", dict(x=(2, 4, 8, 8), w=(3, 2, 3, 3), groups=2), ValueError,
     r"C_out=3"),
    ("output below 1", dict(x=(2, 3, 2, 2)), ValueError, r"empty output.*2, 2\)"),
    ("dtype mismatch", dict(w_dtype=torch.float16), TypeError, r"float32.*float16"),
    ("integer x", dict(x_dtype=torch.int32, w_dtype=torch.int32), TypeError, r"x has dtype torch.int32"),
    ("bias shape", dict(b=(5,)), ValueError, r"bias must have shape \(4,\), got \(5,\)"),
    ("device", dict(device="meta"), ValueError, r"x \(meta\), weight \(cpu\) and bias \(cpu\) must be on one device"),
    ("stride zero", dict(stride=0), ValueError, r"stride and dilation must be >= 1"),
    ("dilation zero", dict(dilation=0), ValueError, r"dilation \(0, 0\)"),
    ("dilation of three", dict(dilation=(1, 2, 1)), TypeError, r"dilation must be an int or a pair"),
    ("float dilation", dict(dilation=1.5), TypeError, r"dilation must be an int or a pair of ints, got 1.5"),
    ("dilated window too large", dict(dilation=4), ValueError, r"empty output.*dilation \(4, 4\)"),
    ("negative padding", dict(padding=-1), ValueError, r"padding must be >= 0"),
    ("unknown padding string", dict(padding="full"), ValueError, r"padding must be .*'same'.*got 'full'"),
    ("same padding with stride", dict(padding="same", stride=2), ValueError,
     r"padding='same' is not supported for strided"),
    ("no input channels", dict(x=(2, 0, 8, 8), w=(4, 0, 3, 3)), NotImplementedError, r"no input channels"),
    ("empty image", dict(x=(2, 3, 0, 8), padding=2), ValueError, r"empty image"),
    ("bad precision", dict(precision="fp8"), ValueError, r"precision must be one of"),
    ("bad stride type", dict(stride="2"), TypeError, r"stride must be an int or a pair"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_rejected_with_a_clear_error(case):
    _, spec, error, message = case
    x = torch.randn(spec.get("x", (2, 3, 8, 8))).to(spec.get("x_dtype", torch.float32))
    w = torch.randn(spec.get("w", (4, 3, 3, 3))).to(spec.get("w_dtype", torch.float32))
    b = torch.randn(spec.get("b", (4,)))
    if "device" in spec:
        x = x.to(spec["device"])
    with pytest.raises(error, match=message):
        ops.conv2d(x, w, b, stride=spec.get("stride", 1), padding=spec.get("padding", 0),
                   dilation=spec.get("dilation", 1), groups=spec.get("groups", 1),
                   precision=spec.get("precision", "ieee"))



@pytest.mark.parametrize("stride, error", [(True, TypeError), (1.0, TypeError), ([1, 1, 1], TypeError),
                                           (0, ValueError)])
def test_cached_geometry_never_answers_for_bad_arguments(stride, error):
    """The validated geometry is cached by its arguments: stride 1 cached first, True, 1.0 or a triple still
    raise, and so do sizes that flatten alike (x 3-D, weight 5-D)."""
    good = conv.conv2d_geometry((2, 3, 8, 8), (4, 3, 3, 3), 1, 0, 1, 1)
    assert conv.conv2d_geometry((2, 3, 8, 8), (4, 3, 3, 3), 1, 0, 1, 1) is good
    with pytest.raises(error, match="stride"):
        conv.conv2d_geometry((2, 3, 8, 8), (4, 3, 3, 3), stride, 0, 1, 1)
    with pytest.raises(ValueError, match="x must be 4-D"):
        conv.conv2d_geometry((2, 3, 8), (8, 4, 3, 3, 3), 1, 0, 1, 1)

REPEATABILITY_SCRIPT = """
import hashlib, torch
from alexnet_triton import ops
g = torch.Generator().manual_seed(11)
x = torch.randn(2, 16, 9, 9, generator=g)
w = torch.randn(24, 8, 3, 3, generator=g, requires_grad=True)
b = torch.randn(24, generator=g, requires_grad=True)
w2 = torch.randn(8, 24, 3, 3, generator=g, requires_grad=True)
y = ops.conv2d(x, w, b, 1, 1, groups=2, relu=True, relu_masked_by_next=True, bias_grad_by_next=True)
y2 = ops.conv2d(y, w2, None, 1, 1, relu_input=True, relu_input_bias=b)
dw, db = torch.autograd.grad(y2, (w, b), torch.randn(y2.shape, generator=g))
print(hashlib.sha256(dw.numpy().tobytes() + db.numpy().tobytes()).hexdigest())
"""


def test_weight_and_bias_grads_are_bitwise_repeatable_across_processes():
    """As cuDNN's deterministic mode promises: no atomics, a fixed split, and a weight-gradient config (and that of
    an input gradient that sums the bias gradient of the conv before) that is never a timed choice (``pick``: a
    rule of the shapes), so another process computes the same bits."""
    import subprocess
    import sys

    assert all(configs.pick is not None for configs in (conv.WEIGHT_GRAD_CONFIGS, conv.WEIGHT_GRAD_GATHER_CONFIGS,
                                                        conv.INPUT_GRAD_RELU_BIAS_CONFIGS,
                                                        conv.INPUT_GRAD_RELU_BIAS_GATHER_CONFIGS))
    digests = [subprocess.run([sys.executable, "-c", REPEATABILITY_SCRIPT], capture_output=True, text=True,
                              timeout=300, check=True).stdout.split()[-1] for _ in range(2)]
    assert digests[0] == digests[1]


# ----------------------------------------------------------------------------- space-to-depth (conv1)


@pytest.mark.parametrize("variant", list(CONV_LAYERS))
def test_space_to_depth_form_is_conv1s_alone(variant):
    """Full-size conv1 (either variant) becomes a 3x3 conv over 48 channels on a 57x57 map; no other layer."""
    conv1, *others = CONV_LAYERS[variant]
    depth = conv.conv2d_depth(channels_last_input(128, 3, conv1.size, conv1.size), conv1.weight_shape, conv1.stride,
                              conv1.padding, 1, 1, torch.bfloat16, "ieee")
    assert (depth.block, depth.size, depth.taps, depth.pad) == (4, (57, 57), (3, 3), (conv1.padding,) * 2)
    assert depth.extent == (conv1.size,) * 2  # every row and column of x is read
    for layer in others:
        assert conv.conv2d_depth(channels_last_input(128, layer.in_channels, layer.size, layer.size),
                                 layer.weight_shape, layer.stride, layer.padding, 1, layer.groups, torch.bfloat16,
                                 "ieee") is None


def channels_last_input(*shape: int) -> torch.Tensor:
    return torch.empty(shape, memory_format=torch.channels_last)


@pytest.mark.parametrize("x_shape, w_shape, conv_args", [
    pytest.param((1, 3, 19, 19), (4, 3, 3, 3), dict(stride=2), id="12-channels"),
    pytest.param((1, 4, 19, 19), (4, 4, 1, 1), dict(stride=2), id="filter-below-stride"),
    pytest.param((1, 4, 19, 19), (4, 4, 5, 5), dict(stride=(2, 1)), id="unequal-stride"),
    pytest.param((1, 4, 19, 19), (4, 4, 5, 5), dict(stride=2, dilation=2), id="dilated"),
    pytest.param((1, 4, 19, 19), (4, 2, 5, 5), dict(stride=2, groups=2), id="groups"),
    pytest.param((1, 16, 19, 19), (4, 16, 5, 5), dict(stride=2), id="16-channels"),
])
def test_space_to_depth_form_is_not_taken(x_shape, w_shape, conv_args):
    g = dict(stride=1, padding=0, dilation=1, groups=1) | conv_args
    assert conv.conv2d_depth(channels_last_input(*x_shape), w_shape, g["stride"], g["padding"], g["dilation"],
                             g["groups"], torch.bfloat16, "ieee") is None


def test_space_to_depth_form_is_not_taken_for_nchw_or_exact_fp32():
    """An NCHW x keeps the direct path (its y and dy would be scattered per element), and so does exact fp32
    (FMA-bound: the padded taps would only add work); TF32 takes the form."""
    conv1 = ((4, 3, 11, 11), 4, 0, 1, 1)
    x = channels_last_input(1, 3, 19, 19)
    assert conv.conv2d_depth(x.contiguous(), *conv1, torch.bfloat16, "ieee") is None
    assert conv.conv2d_depth(x, *conv1, torch.float32, "ieee") is None
    assert conv.conv2d_depth(x, *conv1, torch.float32, "tf32") is not None


# Through the space-to-depth form: conv1's geometry with rows and columns no output reads (8 x 8 outputs read 39 of
# 42 rows, 39 of 40 columns),
# padding that is not a multiple of the block, a rectangular image, a stride-2 conv over 2 channels, a stride-3
# one whose filter is a multiple of it.
DEPTH_CASES = [
    pytest.param((2, 3, 42, 40), (8, 3, 11, 11), dict(stride=4), id="conv1-unread-rows"),
    pytest.param((2, 3, 30, 33), (6, 3, 11, 11), dict(stride=4, padding=(1, 3)), id="conv1-pad-1x3"),
    pytest.param((1, 2, 13, 11), (5, 2, 3, 4), dict(stride=2, padding=1), id="stride2"),
    pytest.param((2, 8, 14, 13), (3, 8, 6, 3), dict(stride=3, padding=(0, 2)), id="stride3"),
]


@pytest.mark.parametrize("weight_layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@pytest.mark.parametrize("x_shape, w_shape, conv_args", DEPTH_CASES)
def test_space_to_depth_form_fp32(x_shape, w_shape, conv_args, relu, weight_layout, no_torch_fallback):
    """y, dx, dw, db against PyTorch (TF32: exact in the interpreter); y and dx in x's layout, dw in the
    weight's."""
    g = dict(padding=0) | conv_args
    x, w, b = random_operands(x_shape, w_shape, channels_last=True, seed=12)
    assert conv.conv2d_depth(x, w_shape, g["stride"], g["padding"], 1, 1, torch.float32, "tf32") is not None
    if weight_layout == "channels_last":
        w = w.detach().to(memory_format=torch.channels_last).requires_grad_()
    ours, ref, _ = run_both(conv_args, x, w, b, relu, no_torch_fallback, precision="tf32")
    assert_all_close(ours, ref)
    assert ours[0].is_contiguous(memory_format=runtime.memory_format_of(x))
    assert ours[1].stride() == x.stride() and ours[2].stride() == w.stride()


def test_space_to_depth_form_ignores_what_no_output_reads(no_torch_fallback):
    """NaN in x's rows and columns below/right of the last window: y as PyTorch's (finite), their dx 0."""
    x, w, b = random_operands((1, 3, 42, 40), (8, 3, 11, 11), channels_last=True, seed=13)
    x = x.detach().clone()
    x[:, :, 39:] = x[:, :, :, 39:] = float("nan")  # 8 x 8 outputs read rows and columns 0..38
    x.requires_grad_()
    ours, ref, _ = run_both(dict(stride=4), x, w, b, True, no_torch_fallback, precision="tf32")
    assert ours[0].isfinite().all()
    assert_all_close(ours, ref)


def test_space_to_depth_form_under_autocast(no_torch_fallback):
    """fp32 x and weight under autocast: the rearranging passes cast them (no cast of x beforehand); y in bf16,
    dx, dw and db in fp32 (the casts' backward), as F.conv2d gives them."""
    x, w, b = random_operands((2, 3, 31, 31), (8, 3, 11, 11), channels_last=True, seed=14)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours, ref, dy = run_both(dict(stride=4, padding=2), x, w, b, False, no_torch_fallback)
    x64, w64, b64 = (t.detach().bfloat16().double().requires_grad_() for t in (x, w, b))
    y64 = F.conv2d(x64, w64, b64, stride=4, padding=2)
    refs64 = (y64, *torch.autograd.grad(y64, (x64, w64, b64), dy.double()))
    assert ours[0].dtype == torch.bfloat16
    for name, a, e, e64 in zip(("y", "dx", "dw", "db"), ours, ref, refs64, strict=True):
        assert a.dtype == e.dtype, name
        assert_low_precision_close(a, e, e64, name)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_space_to_depth_form_low_precision_against_fp64(dtype, no_torch_fallback):
    x, w, b = random_operands((2, 3, 35, 35), (16, 3, 11, 11), dtype=dtype, channels_last=True, seed=15)
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    ours, ref, dy = run_both(dict(stride=4), x, w, b, False, no_torch_fallback)
    y64 = F.conv2d(x64, w64, b64, stride=4)
    refs64 = (y64, *torch.autograd.grad(y64, (x64, w64, b64), dy.double()))
    for name, a, e, e64 in zip(("y", "dx", "dw", "db"), ours, ref, refs64, strict=True):
        assert a.dtype == dtype
        assert_low_precision_close(a, e, e64, name)


@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
def test_space_to_depth_form_gradcheck_float64(relu):
    x, w, b = random_operands((2, 2, 9, 8), (3, 2, 3, 3), dtype=torch.float64, channels_last=True, seed=16)
    assert conv.conv2d_depth(x, w.shape, 2, 1, 1, 1, torch.float64, "ieee") is not None
    assert torch.autograd.gradcheck(lambda x, w, b: ops.conv2d(x, w, b, 2, 1, relu=relu), (x, w, b), fast_mode=True)


@pytest.mark.parametrize("case, error, message", [
    (dict(w_dtype=torch.float16), TypeError, r"float32.*float16"),
    (dict(b=(5,)), ValueError, r"bias must have shape \(4,\), got \(5,\)"),
    (dict(device="meta"), ValueError, r"x is on meta"),
    (dict(precision="fp8"), ValueError, r"precision must be one of"),
], ids=["dtype-mismatch", "bias-shape", "device", "precision"])
def test_space_to_depth_form_rejects_bad_input(case, error, message):
    x = torch.randn(1, 3, 19, 19, device=case.get("device", "cpu")).contiguous(memory_format=torch.channels_last)
    w = torch.randn(4, 3, 11, 11).to(case.get("w_dtype", torch.float32))
    assert conv.conv2d_depth(x, w.shape, 4, 0, 1, 1, torch.float32, "tf32") is not None
    with pytest.raises(error, match=message):
        ops.conv2d(x, w, torch.randn(case.get("b", (4,))), 4, precision=case.get("precision", "tf32"))


@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@pytest.mark.parametrize("x_shape, w_shape, conv_args", DEPTH_CASES[:2] + [
    pytest.param((2, 3, 35, 35), (6, 3, 11, 11), dict(stride=4, padding=2), id="torchvision-conv1")])
def test_images_in_depth_form_give_what_the_images_give(x_shape, w_shape, conv_args, relu, no_torch_fallback):
    """depth_form_of: conv1's images given as the form the loaders make (data.space_to_depth_images) give y, dw
    and db bit for bit as the images (float64: the interpreter's dtype that takes the form), y channels_last."""
    x, w, b = random_operands(x_shape, w_shape, dtype=torch.float64, channels_last=True, seed=17)
    image_size, g = x_shape[2:], dict(padding=0) | conv_args
    form = ops.input_form(w_shape, image_size, g["stride"], g["padding"], dtype=torch.float64)
    assert form == conv.conv2d_depth(x, w_shape, g["stride"], g["padding"], 1, 1, torch.float64, "ieee")
    x_d = space_to_depth_images(x.detach(), form)
    assert x_d.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x_d, space_to_depth.space_to_depth(x.detach(), form.block, form.size, form.pad, form.extent))
    dy = torch.randn(x_shape[0], w_shape[0], *ops.conv2d(x.detach(), w, b, **conv_args).shape[2:],
                     dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    results = []
    for given, form_of in ((x.detach(), None), (x_d, image_size)):
        w_, b_ = (t.detach().clone().requires_grad_() for t in (w, b))
        with no_torch_fallback():
            y = ops.conv2d(given, w_, b_, **conv_args, relu=relu, depth_form_of=form_of)
            y.backward(dy)
        results.append((y, w_.grad, b_.grad))
    for name, ours, images in zip(("y", "dw", "db"), *results, strict=True):
        assert torch.equal(ours, images), name
    assert results[1][0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("change, message", [
    (dict(shape=(2, 48, 9, 9)), r"must be the images' space-to-depth form, shape \[N, 48, 8, 8\].*got \(2, 48, 9, 9\)"),
    (dict(layout=torch.contiguous_format), r"channels_last in torch.float64.*NCHW"),
    (dict(dtype=torch.float32, autocast=True), r"in torch.bfloat16 .*got .*torch.float32"),
    (dict(requires_grad=True), r"takes no gradient"),
    (dict(image_size=(30, 30)), r"must be the images' space-to-depth form, shape \[N, 48, 7, 7\]"),
    (dict(relu_input=True), r"depth_form_of takes no relu_input"),
    (dict(stride=1), r"runs on the images themselves"),
], ids=["shape", "nchw", "dtype", "requires-grad", "image-size", "relu-input", "no-form"])
def test_images_in_depth_form_are_checked(change, message):
    """A form that is not the images' (shape, layout, dtype, a gradient), or a conv that takes no form: an error
    naming it, before any launch."""
    dtype = change.get("dtype", torch.float64)
    w = torch.randn(4, 3, 11, 11, dtype=dtype)
    x_d = torch.randn(change.get("shape", (2, 48, 8, 8)), dtype=dtype).contiguous(
        memory_format=change.get("layout", torch.channels_last)).requires_grad_(change.get("requires_grad", False))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if change.get("autocast") else contextlib.nullcontext()
    with autocast, pytest.raises(ValueError, match=message):
        ops.conv2d(x_d, w, None, change.get("stride", 4), depth_form_of=change.get("image_size", (31, 31)),
                   relu=True, relu_input=change.get("relu_input", False))


def test_gradient_launchers_name_themselves_in_their_errors():
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    dy = torch.randn(1, 3, 3, 3)
    with pytest.raises(ValueError, match=r"^conv2d_input_grad: precision"):
        conv.conv2d_input_grad(dy, w, x.shape, precision="fp8")
    with pytest.raises(ValueError, match=r"^conv2d_weight_grad: precision"):
        conv.conv2d_weight_grad(dy, x, w.shape, precision="fp8")
    with pytest.raises(ValueError, match=r"^conv2d_weight_grad: dy must have shape"):
        conv.conv2d_weight_grad(dy[:, :2], x, w.shape)
    with pytest.raises(TypeError, match=r"^conv2d_weight_grad: dtype must be x's dtype \(torch.float32\)"):
        conv.conv2d_weight_grad(dy, x, w.shape, dtype=torch.float16)
    with pytest.raises(TypeError, match=r"^conv2d_output_grad: bias_dtype must be .* got torch.int32"):
        conv.conv2d_output_grad(dy, bias_grad=True, bias_dtype=torch.int32)


FLAT_VECTOR_CONFIGS = [pytest.param(kernel, config, id=f"{kernel}-{runtime.config_name(config)}")
                       for kernel, configs in (("forward", conv.FORWARD_FLAT_VECTOR_CONFIGS),
                                               ("weight_grad", conv.WEIGHT_GRAD_FLAT_VECTOR_CONFIGS))
                       for config in configs.shipped()]


@pytest.mark.parametrize("kernel, config", FLAT_VECTOR_CONFIGS)
def test_flat_channel_vectors_every_config(kernel, config):
    """The flat reduction over channel vectors with no bounds checks (a conv whose windows all lie inside x, as
    conv1's after space-to-depth) at each GPU config of its forward and weight gradient."""
    x, w, b = (t.detach() for t in random_operands((2, 16, 9, 10), (24, 16, 3, 3), seed=17))
    assert conv.conv2d_geometry(x.shape, w.shape, 1, 0, 1, 1).window_inside
    y_ref = torch_conv(x, w, b, {}, True)
    if kernel == "forward":
        assert_close(conv.conv2d_forward(x, w, b, relu=True, flat_crs=True, config=config), y_ref, "y")
    else:
        dy = torch.randn(y_ref.shape, generator=torch.Generator().manual_seed(3))
        dw = conv.conv2d_weight_grad(dy, x, w.shape, flat_crs=True, splits=2, config=config)
        assert_close(dw, torch.nn.grad.conv2d_weight(x, w.shape, dy), "dw")


# Each GPU config of the flat channel-vector path in the dtype it runs: bf16 on tensor cores, fp32 on CUDA cores.
FLAT_VECTOR_DTYPES = [pytest.param(kernel, config, dtype, id=f"{kernel}-{runtime.config_name(config)}-{name}")
                      for kernel, configs in (("forward", conv.FORWARD_FLAT_VECTOR_CONFIGS),
                                              ("weight_grad", conv.WEIGHT_GRAD_FLAT_VECTOR_CONFIGS))
                      for tiles, dtype, name in ((configs.tensor_core, torch.bfloat16, "bf16"),
                                                 (configs.cuda_core, torch.float32, "fp32"))
                      for config in tiles]


@pytest.mark.parametrize("kernel, config, dtype", FLAT_VECTOR_DTYPES)
def test_flat_channel_vectors_with_bounds_checks_every_config(kernel, config, dtype):
    """The flat reduction over channel vectors with a bounds check per tap, as a GPU runs 2012 conv2 (48 channels
    a group: each 64-wide block holds 16-channel runs of up to three taps; 5x5, padding 2, 2 groups), at each GPU
    config of its forward and weight gradient: odd 7x9 maps, so every border's windows cross the padding, and a
    channels_last x viewed out of a wider, larger tensor (channel stride 1, other strides not dense)."""
    conv_args = dict(padding=2, groups=2)
    gen = torch.Generator().manual_seed(23)
    x = torch.randn(2, 104, 8, 12, generator=gen).to(dtype, memory_format=torch.channels_last)[:, 5:101, 1:, 2:11]
    w = (torch.randn(32, 48, 5, 5, generator=gen) / 1200 ** 0.5).to(dtype, memory_format=torch.channels_last)
    b = torch.randn(32, generator=gen).to(dtype)
    assert x.stride(1) == 1 and not x.is_contiguous(memory_format=torch.channels_last)
    assert conv.gpu_flat_reduction(48, x.stride(1) == 1) and not conv.conv2d_geometry(
        x.shape, w.shape, 1, 2, 1, 2).window_inside
    x64, w64, b64 = (t.double() for t in (x, w, b))
    if kernel == "forward":
        ours = conv.conv2d_forward(x, w, b, relu=True, flat_crs=True, config=config, **conv_args)
        ref, ref64 = (torch_conv(*operands, conv_args, True) for operands in ((x, w, b), (x64, w64, b64)))
        name = "y"
    else:
        dy = torch.randn(2, 32, 7, 9, generator=gen).to(dtype)
        ours = conv.conv2d_weight_grad(dy, x, w.shape, flat_crs=True, splits=2, config=config,
                                       memory_format=torch.channels_last, **conv_args)
        ref = torch.nn.grad.conv2d_weight(x, w.shape, dy, **conv_args)
        ref64 = torch.nn.grad.conv2d_weight(x64, w.shape, dy.double(), **conv_args)
        name = "dw"
    if dtype == torch.float32:
        assert_close(ours, ref, name)
    else:
        assert_low_precision_close(ours, ref, ref64, name)


# The weight-gradient tiles for row counts 128 would pad, on the geometries they are for: 64 rows for torchvision
# conv1's 64 output channels over its space-to-depth form's 48 channels and 3x3 taps (flat; every window inside x;
# 432 = 256 + 176 reduction columns) and for 192 output channels per group over 64-channel blocks (2012 conv4's
# shape: 3x3, padding 1, 2 groups); 192 rows (``conv.block_tail``: dots of 128 and 64 rows) over the flat reduction
# of that shape (576 = 4.5 x 128 columns, windows bounds checked), and of 200 output channels and 24 input channels
# (the second program's 128 rows hold 8, its 64 none; 216 columns).
WEIGHT_GRAD_ROW_TILE_CASES = [
    pytest.param(conv.WEIGHT_GRAD_FLAT_VECTOR_CONFIGS, (64, 256, 64), True, (64, 48, 3, 3), {}, id="flat-64x256x64"),
    pytest.param(conv.WEIGHT_GRAD_CONFIGS, (64, 64, 64), False, (384, 64, 3, 3), dict(padding=1, groups=2),
                 id="channel-blocks-64x64x64"),
    pytest.param(conv.WEIGHT_GRAD_FLAT_VECTOR_CONFIGS, (192, 128, 64), True, (384, 64, 3, 3),
                 dict(padding=1, groups=2), id="flat-192x128x64"),
    pytest.param(conv.WEIGHT_GRAD_FLAT_VECTOR_CONFIGS, (192, 128, 32), True, (200, 24, 3, 3), dict(padding=1),
                 id="flat-192x128x32-partial")]


@pytest.mark.parametrize("dy_layout", ["strided", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("configs, tile, flat, w_shape, conv_args", WEIGHT_GRAD_ROW_TILE_CASES)
def test_weight_grad_row_tiles(configs, tile, flat, w_shape, conv_args, dtype, dy_layout):
    """Each such weight-gradient tile on its geometry, x a channels_last view out of a wider, larger tensor, dy a
    view with column stride 2 or dense channels_last (pixels addressed flat), three split slices, dw poisoned."""
    config, = (c for c in configs.tensor_core if conv._tile_of(c) == tile)
    _check_weight_grad_tile(config, flat, w_shape, conv_args, dtype, dy_layout)


@pytest.mark.parametrize("dy_layout", ["strided", "channels_last"])
def test_weight_grad_64_row_tile_of_4_byte_operands(dy_layout):
    """4-byte operands (TF32 on a GPU) over windows inside x, as space-to-depth conv1 launches them, add 64 rows at
    BK 32: torchvision conv1's 64 output channels over its form's 432 (3 x 3 x 48) reduction elements."""
    config, = (c for c in conv.WEIGHT_GRAD_WINDOW_INSIDE_TF32_CONFIGS.tensor_core if conv._tile_of(c) == (64, 256, 32))
    _check_weight_grad_tile(config, True, (64, 48, 3, 3), {}, torch.float32, dy_layout)


def _check_weight_grad_tile(config, flat, w_shape, conv_args, dtype, dy_layout):
    """dw of ``config`` on the geometry against PyTorch's (fp32) or an fp64 reference (16-bit); the module's
    layouts: x a channels_last view, dy strided or dense channels_last, three slices, dw channels_last."""
    channels = w_shape[1] * conv_args.get("groups", 1)
    gen = torch.Generator().manual_seed(29)
    x = torch.randn(3, channels + 8, 9, 11, generator=gen).to(dtype, memory_format=torch.channels_last)
    x = x[:, 3:3 + channels, 1:, 1:]
    g = conv.conv2d_geometry(x.shape, w_shape, 1, conv_args.get("padding", 0), 1, conv_args.get("groups", 1))
    dy = torch.randn(3, w_shape[0], g.OH, g.OW, generator=gen).to(dtype)
    dy = every_other_column(dy) if dy_layout == "strided" else dy.contiguous(memory_format=torch.channels_last)
    assert x.stride(1) == 1 and not x.is_contiguous(memory_format=torch.channels_last)
    assert config in conv.pass_configs("weight_grad", x, flat, g).tensor_core  # launched on a GPU
    assert conv._pixels_flat(dy) is (dy_layout != "strided")
    dw = conv.conv2d_weight_grad(dy, x, w_shape, flat_crs=flat, splits=3, config=config,
                                 memory_format=torch.channels_last, **conv_args)
    assert dw.is_contiguous(memory_format=torch.channels_last)
    ref = torch.nn.grad.conv2d_weight(x, w_shape, dy, **conv_args)
    if dtype == torch.float32:
        assert_close(dw, ref, "dw")
    else:
        ref64 = torch.nn.grad.conv2d_weight(x.double(), w_shape, dy.double(), **conv_args)
        assert_low_precision_close(dw, ref, ref64, "dw")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("tile", [conv._tile_of(c) for c in conv._WAVE_TILES], ids=lambda t: "x".join(map(str, t)))
@pytest.mark.parametrize("kernel_pass", ["forward", "input_grad"])
def test_wave_tiles_on_channel_blocks(kernel_pass, tile, dtype):
    """The 64x64 forward and input-gradient tiles (the 13x13 layers' wave tails) over channel blocks: 96 channels
    per group on both sides (BK 128 pads one block, BK 64 half of the second), 2 groups, 3x3 with padding 1, 2 x 7
    x 9 = 126 pixels (two 64-row blocks, the second partial); x and dy channels_last views out of wider, larger
    tensors (the channel vectors these tiles load), the weight a view with column stride 2."""
    configs = conv.FORWARD_CONFIGS if kernel_pass == "forward" else conv.INPUT_GRAD_CONFIGS
    config, = (c for c in configs.tensor_core if conv._tile_of(c) == tile)
    w_shape, conv_args = (192, 96, 3, 3), dict(padding=1, groups=2)
    gen = torch.Generator().manual_seed(31)
    x, dy = (torch.randn(2, 200, 8, 10, generator=gen).to(dtype, memory_format=torch.channels_last)[:, 5:197, 1:, 1:]
             for _ in range(2))
    w = every_other_column(torch.randn(w_shape, generator=gen).to(dtype) / 36)
    assert all(t.stride(1) == 1 and not t.is_contiguous(memory_format=torch.channels_last) for t in (x, dy))
    g = conv.conv2d_geometry(x.shape, w_shape, 1, 1, 1, 2)
    assert conv.pass_configs(kernel_pass, x if kernel_pass == "forward" else dy, False, g) is configs
    if kernel_pass == "forward":
        ours, name = conv.conv2d_forward(x, w, None, relu=False, flat_crs=False, config=config, **conv_args), "y"
        ref, ref64 = (F.conv2d(x.to(d), w.to(d), **conv_args) for d in (dtype, torch.float64))
    else:
        ours, name = conv.conv2d_input_grad(dy, w, x.shape, flat_krs=False, config=config, **conv_args), "dx"
        ref, ref64 = (torch.nn.grad.conv2d_input(x.shape, w.to(d), dy.to(d), **conv_args)
                      for d in (dtype, torch.float64))
    if dtype == torch.float32:
        assert_close(ours, ref, name)
    else:
        assert_low_precision_close(ours, ref, ref64, name)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("channels", [48, 40, 100])
def test_input_grad_48_column_tile(channels, dtype):
    """The input gradient's 48-column tile (``conv.block_tail``: dots of 32 and 16 columns) on 2012 conv2's
    geometry (5x5, padding 2, 2 groups, 40 output channels a group: BK 128 pads them): 48 input channels per group
    (what it is for), 40 (the 16-column part half masked) and 100 (three column blocks, the last 4 wide); dy a
    channels_last view out of a wider, larger tensor, the weight a view with column stride 2, dx poisoned."""
    config, = (c for c in conv.INPUT_GRAD_CONFIGS.tensor_core if conv._tile_of(c) == (64, 48, 128))
    w_shape, conv_args = (80, channels, 5, 5), dict(padding=2, groups=2)
    gen = torch.Generator().manual_seed(37)
    dy = torch.randn(2, 88, 8, 10, generator=gen).to(dtype, memory_format=torch.channels_last)[:, 3:83, 1:, 1:]
    w = every_other_column(torch.randn(w_shape, generator=gen).to(dtype) / 10)
    x_shape = (2, 2 * channels, 7, 9)
    g = conv.conv2d_geometry(x_shape, w_shape, 1, 2, 1, 2)
    assert dy.stride(1) == 1 and not dy.is_contiguous(memory_format=torch.channels_last)
    assert conv.pass_configs("input_grad", dy, False, g) is conv.INPUT_GRAD_CONFIGS
    dx = conv.conv2d_input_grad(dy, w, x_shape, flat_krs=False, config=config, memory_format=torch.channels_last,
                                **conv_args)
    ref, ref64 = (torch.nn.grad.conv2d_input(x_shape, w.to(d), dy.to(d), **conv_args) for d in (dtype, torch.float64))
    if dtype == torch.float32:
        assert_close(dx, ref, "dx")
    else:
        assert_low_precision_close(dx, ref, ref64, "dx")


# The forward's 96-column tiles (``conv.block_tail``: dots of 64 and 32 columns sharing the x window tile), shipped
# for conv1's 96 output channels over its space-to-depth form (48 channels, 3x3, the flat reduction, windows inside
# x): BK 64 and BK 32 (432 reduction columns: 6.75 and 13.5 steps, the last one partial).
FORWARD_96_COLUMN_TILES = [c for c in conv.FORWARD_FLAT_VECTOR_CONFIGS.tensor_core if c.kwargs["BLOCK_N"] == 96]
FORWARD_96_COLUMN_TILE = FORWARD_96_COLUMN_TILES[0]


@pytest.mark.parametrize("config", FORWARD_96_COLUMN_TILES, ids=runtime.config_name)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("w_shape, groups", [
    pytest.param((96, 48, 3, 3), 1, id="96"), pytest.param((80, 48, 3, 3), 1, id="80-tail-half-masked"),
    pytest.param((200, 48, 3, 3), 1, id="200-three-blocks"), pytest.param((160, 24, 3, 3), 2, id="2x80-groups")])
def test_forward_96_column_tiles(w_shape, groups, dtype, config):
    """Each 96-column forward tile on conv1's space-to-depth geometry: 96 output channels (what it is for), 80 (the
    32-column part half masked), 200 (three column blocks, the last 8 wide: its 32-column part all masked) and 2
    groups of 80 over 24 channels; 2 x 9 x 10 = 180 pixels (two 128-row blocks, the second partial); x a
    channels_last view out of a wider, larger tensor, the weight a view with column stride 2, bias + ReLU, y
    poisoned."""
    gen = torch.Generator().manual_seed(41)
    channels = w_shape[1] * groups
    x = torch.randn(2, channels + 8, 12, 13, generator=gen).to(dtype, memory_format=torch.channels_last)
    x = x[:, 4:4 + channels, 1:, 1:]
    w = every_other_column(torch.randn(w_shape, generator=gen).to(dtype) / (w_shape[1] * 9) ** 0.5)
    b = torch.randn(w_shape[0], generator=gen).to(dtype)
    g = conv.conv2d_geometry(x.shape, w_shape, 1, 0, 1, groups)
    assert x.stride(1) == 1 and not x.is_contiguous(memory_format=torch.channels_last) and g.window_inside
    assert conv.pass_configs("forward", x, True, g) is conv.FORWARD_FLAT_VECTOR_CONFIGS
    y = conv.conv2d_forward(x, w, b, groups=groups, relu=True, flat_crs=True, config=config)
    ref, ref64 = (torch_conv(x.to(d), w.to(d), b.to(d), dict(groups=groups), True) for d in (dtype, torch.float64))
    if dtype == torch.float32:
        assert_close(y, ref, "y")
    else:
        assert_low_precision_close(y, ref, ref64, "y")


@pytest.mark.parametrize("out_channels", [96, 40])
def test_space_to_depth_form_with_the_96_column_forward_tile(out_channels, monkeypatch, no_torch_fallback):
    """conv1 through ops.conv2d (its space-to-depth form) with the forward on the 96-column tile, as a GPU launches
    it: y, dx, dw, db against PyTorch (TF32: exact in the interpreter) for 96 output channels and 40 (the 32-column
    part masked but for 8); the weight a view with column stride 2, bias + ReLU."""
    vectors, flat_vectors, gather = conv._CONFIG_SETS["forward"]
    launched = []
    forced = dataclasses.replace(flat_vectors, interpreter=lambda args: launched.append(args["K_per_group"])
                                 or FORWARD_96_COLUMN_TILE)
    monkeypatch.setitem(conv._CONFIG_SETS, "forward", (vectors, forced, gather))
    x, w, b = random_operands((2, 3, 35, 39), (out_channels, 3, 11, 11), channels_last=True, seed=43)
    w = every_other_column(w)
    ours, ref, _ = run_both(dict(stride=4, padding=2), x, w, b, True, no_torch_fallback, precision="tf32")
    assert launched == [out_channels]
    assert_all_close(ours, ref)


WEIGHT_GRAD_CRS_ROWS_TILE, = (c for c in conv.WEIGHT_GRAD_WINDOW_INSIDE_CONFIGS.tensor_core if c.kwargs.get("CRS_ROWS"))
WEIGHT_GRAD_CRS_ROWS_TF32_TILE, = (c for c in conv.WEIGHT_GRAD_WINDOW_INSIDE_TF32_CONFIGS.tensor_core
                                   if c.kwargs.get("CRS_ROWS"))


@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format], ids=["dw-nhwc", "dw-nchw"])
@pytest.mark.parametrize("dy_layout", ["strided", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("w_shape, splits", [((96, 48, 3, 3), 3), ((40, 24, 3, 3), 1), ((100, 8, 2, 2), 5)],
                         ids=["conv1-depth-form", "K40-crs216", "K100-crs32-empty-slices"])
def test_weight_grad_transposed_tile(w_shape, splits, dtype, dy_layout, memory_format):
    """The weight gradient's transposed tile (CRS_ROWS: 256 (r, s, c) rows x 96 output channels, dots of 64 and 32
    columns) on flat windows inside x, as space-to-depth conv1 launches it (BK 64 at 16-bit operands, BK 32 at 4-byte
    ones: TF32 on a GPU, exact here): 96 output channels
    over 432 = 256 + 176 reduction elements (2012 conv1's depth form); 40 (the 32-column dot all masked) over
    216; 100 (a second program row, 4 channels of it valid) over 32, at 5 splits of 189 pixels (64-pixel slices: the
    last two empty, writing zeros). x a channels_last view out of a wider, larger tensor, dy a view with column
    stride 2 or dense channels_last, dw poisoned, in either layout."""
    gen = torch.Generator().manual_seed(47)
    x = torch.randn(3, w_shape[1] + 8, 9, 11, generator=gen).to(dtype, memory_format=torch.channels_last)
    x = x[:, 3:3 + w_shape[1], 1:, 1:]
    g = conv.conv2d_geometry(x.shape, w_shape, 1, 0, 1, 1)
    dy = torch.randn(3, w_shape[0], g.OH, g.OW, generator=gen).to(dtype)
    dy = every_other_column(dy) if dy_layout == "strided" else dy.contiguous(memory_format=torch.channels_last)
    assert g.window_inside and x.stride(1) == 1 and not x.is_contiguous(memory_format=torch.channels_last)
    expected = (conv.WEIGHT_GRAD_WINDOW_INSIDE_CONFIGS if dtype == torch.bfloat16
                else conv.WEIGHT_GRAD_WINDOW_INSIDE_TF32_CONFIGS)
    assert conv.pass_configs("weight_grad", x, True, g) is expected
    tile = WEIGHT_GRAD_CRS_ROWS_TILE if dtype == torch.bfloat16 else WEIGHT_GRAD_CRS_ROWS_TF32_TILE
    dw = conv.conv2d_weight_grad(dy, x, w_shape, flat_crs=True, splits=splits, config=tile,
                                 memory_format=memory_format)
    assert dw.is_contiguous(memory_format=memory_format)
    ref = torch.nn.grad.conv2d_weight(x, w_shape, dy)
    if dtype == torch.float32:
        assert_close(dw, ref, "dw")
    else:
        ref64 = torch.nn.grad.conv2d_weight(x.double(), w_shape, dy.double())
        assert_low_precision_close(dw, ref, ref64, "dw")


@pytest.mark.parametrize("out_channels", [96, 40])
def test_space_to_depth_form_with_the_transposed_weight_grad_tile(out_channels, monkeypatch, no_torch_fallback):
    """conv1 at bf16 through ops.conv2d (its space-to-depth form) with the weight gradient on the transposed tile,
    as a GPU launches it: dw (and y, dx, db) against an fp64 reference for 96 output channels and 40 (the 32-column
    dot all masked); the weight a view with column stride 2, bias, no ReLU (a rounded output at 0 may flip its
    mask between precisions)."""
    launched = []
    forced = dataclasses.replace(conv.WEIGHT_GRAD_WINDOW_INSIDE_CONFIGS, interpreter=lambda args: launched.append(
        args["K_per_group"]) or WEIGHT_GRAD_CRS_ROWS_TILE)
    monkeypatch.setattr(conv, "WEIGHT_GRAD_WINDOW_INSIDE_CONFIGS", forced)
    x, w, b = random_operands((2, 3, 35, 39), (out_channels, 3, 11, 11), torch.bfloat16, channels_last=True, seed=53)
    w = every_other_column(w.detach()).requires_grad_()
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    g = dict(stride=4, padding=2)
    ours, ref, dy = run_both(g, x, w, b, False, no_torch_fallback)
    assert launched == [out_channels]
    y64 = torch_conv(x64, w64, b64, g, False)
    refs64 = (y64, *torch.autograd.grad(y64, (x64, w64, b64), dy.double()))
    for name, a, e, e64 in zip(("y", "dx", "dw", "db"), ours, ref, refs64, strict=True):
        assert_low_precision_close(a, e, e64, name)
