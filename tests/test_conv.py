"""conv2d on the Triton kernels against torch.nn.functional.conv2d: output and every gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close, assert_low_precision_close

from alexnet_triton import nn, ops
from alexnet_triton.architecture import CONV_LAYERS, ConvLayer
from alexnet_triton.kernels import conv, runtime

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


def make_inputs(layer: ConvLayer, batch: int, dtype=torch.float32, height: int | None = None,
                channels_last: bool = False, seed: int = 0):
    """Fresh random x, weight (scaled by 1/sqrt(fan_in)), bias, all requiring grad."""
    gen = torch.Generator().manual_seed(seed)
    height = height or layer.size
    x = torch.randn(batch, layer.in_channels, height, layer.size, generator=gen)
    fan_in = layer.in_channels // layer.groups * layer.kernel ** 2
    w = torch.randn(layer.out_channels, layer.in_channels // layer.groups, layer.kernel, layer.kernel,
                    generator=gen) / fan_in ** 0.5
    b = torch.randn(layer.out_channels, generator=gen)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return [t.to(dtype).requires_grad_() for t in (x, w, b)]


def geometry(layer: ConvLayer) -> dict:
    return dict(stride=layer.stride, padding=layer.padding, groups=layer.groups)


def torch_conv(x, w, b, layer, relu):
    y = F.conv2d(x, w, b, **geometry(layer))
    return F.relu(y) if relu else y


def run_both(layer, x, w, b, relu, no_torch_fallback, precision="ieee"):
    """(triton outputs, torch outputs, dy): y, dx, dw, db for the same upstream gradient dy."""
    with no_torch_fallback():
        y = ops.conv2d(x, w, b, relu=relu, precision=precision, **geometry(layer))
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(y.dtype)
    with no_torch_fallback():
        grads = torch.autograd.grad(y, (x, w, b), dy)
    y_ref = torch_conv(x, w, b, layer, relu)
    grads_ref = torch.autograd.grad(y_ref, (x, w, b), dy)
    return (y, *grads), (y_ref, *grads_ref), dy


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("layer", ALEXNET_LAYERS)
def test_alexnet_layers_fp32(layer, channels_last, no_torch_fallback):
    x, w, b = make_inputs(layer, batch=2, channels_last=channels_last)
    ours, ref, _ = run_both(layer, x, w, b, True, no_torch_fallback)
    for name, a, e in zip(("y", "dx", "dw", "db"), ours, ref, strict=True):
        assert_close(a, e, name)
    assert ours[0].is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert ours[1].stride() == x.stride()


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("layer", [p for p in ALEXNET_LAYERS if "conv1" not in p.id])
def test_alexnet_layers_channel_block_order(layer, channels_last):
    """The reduction order a GPU uses for >= 16 channels per group (the interpreter defaults to flat)."""
    x, w, b = (t.detach() for t in make_inputs(layer, batch=2, channels_last=channels_last))
    g = geometry(layer)
    y_ref = torch_conv(x, w, b, layer, True)
    dy = torch.randn(y_ref.shape, generator=torch.Generator().manual_seed(2))
    dy_masked = dy * (y_ref > 0)
    y = conv.conv2d_forward(x, w, b, relu=True, flat_crs=False, **g)
    masked, db = conv.conv2d_output_grad(dy, y_ref, bias_grad=True)
    dx = conv.conv2d_input_grad(masked, w, x.shape, memory_format=runtime.memory_format_of(x), flat_krs=False, **g)
    dw = conv.conv2d_weight_grad(masked, x, w.shape, flat_crs=False, **g)
    assert_close(y, y_ref, "y")
    assert_close(dx, torch.nn.grad.conv2d_input(x.shape, w, dy_masked, **g), "dx")
    assert_close(dw, torch.nn.grad.conv2d_weight(x, w.shape, dy_masked, **g), "dw")
    assert_close(db, dy_masked.sum((0, 2, 3)), "db")


@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@pytest.mark.parametrize("layer", ODD_LAYERS)
def test_odd_shapes_fp32(layer, relu, no_torch_fallback):
    x, w, b = make_inputs(layer, batch=1, height=layer.size + 3, seed=3)
    ours, ref, _ = run_both(layer, x, w, b, relu, no_torch_fallback)
    for name, a, e in zip(("y", "dx", "dw", "db"), ours, ref, strict=True):
        assert_close(a, e, name)


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
    assert_low_precision_close(y_relu, torch_conv(x, w, b, layer, True), torch_conv(x64, w64, b64, layer, True), "y")

    ours, ref, dy = run_both(layer, x, w, b, False, no_torch_fallback)
    y64 = torch_conv(x64, w64, b64, layer, False)
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


@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
def test_gradcheck_float64(relu):
    layer = ConvLayer("gradcheck", 4, 6, 3, 2, 1, 2, 6)
    x, w, b = make_inputs(layer, batch=2, dtype=torch.float64, seed=7)
    assert torch.autograd.gradcheck(lambda x, w, b: ops.conv2d(x, w, b, relu=relu, **geometry(layer)), (x, w, b),
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
    """Each GPU config of each conv kernel, in both reduction orders, computes the right result."""
    layer = ConvLayer("cfg", 20, 72, 3, 2, 1, 2, 9)
    x, w, b = (t.detach() for t in make_inputs(layer, batch=2, height=10))
    g = geometry(layer)
    y_ref = torch_conv(x, w, b, layer, True)
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


@pytest.mark.parametrize("layer", [ALEXNET_LAYERS[1], ALEXNET_LAYERS[3], ODD_LAYERS[2]])
def test_strided_operands_and_channels_last_weights(layer, no_torch_fallback):
    """Every operand a strided view (x and dy every other column, bias every other element) or in another
    layout (weights channels_last, as the model keeps them on a GPU): same results, dw in the weight's layout."""
    x, w, b = (t.detach() for t in make_inputs(layer, batch=2, seed=9))
    x_view = torch.stack([x, x], dim=4).flatten(3)[..., ::2]  # x itself, column stride 2
    w_cl = w.to(memory_format=torch.channels_last).requires_grad_()
    b_view = torch.stack([b, b], dim=1)[:, 0].requires_grad_()
    x_view.requires_grad_()
    with no_torch_fallback():
        y = ops.conv2d(x_view, w_cl, b_view, relu=True, **geometry(layer))
    x, w, b = (t.requires_grad_() for t in (x, w, b))
    y_ref = torch_conv(x, w, b, layer, True)
    dy = torch.randn(y.shape[:3] + (2 * y.shape[3],), generator=torch.Generator().manual_seed(6))[..., ::2]
    with no_torch_fallback():
        grads = torch.autograd.grad(y, (x_view, w_cl, b_view), dy)
    refs = torch.autograd.grad(y_ref, (x, w, b), dy)
    assert_close(y, y_ref, "y")
    for name, a, e in zip(("dx", "dw", "db"), grads, refs, strict=True):
        assert_close(a, e, name)
    assert grads[1].is_contiguous(memory_format=torch.channels_last)


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
    """AlexNet's first layer: no input gradient is computed for an input that needs none."""
    calls = []
    monkeypatch.setattr("alexnet_triton.ops.conv.conv2d_input_grad", lambda *a, **k: calls.append(1))
    layer = ALEXNET_LAYERS[0].values[0]
    x, w, b = make_inputs(layer, batch=1)
    ops.conv2d(x.detach(), w, b, relu=True, **geometry(layer)).sum().backward()
    assert calls == [] and w.grad is not None and b.grad is not None


def test_module_is_a_drop_in_for_nn_conv2d(no_torch_fallback):
    reference = torch.nn.Conv2d(8, 12, 5, stride=1, padding=2, groups=2)
    module = nn.Conv2d(8, 12, 5, stride=1, padding=2, groups=2)
    module.load_state_dict(reference.state_dict())
    x = torch.randn(2, 8, 9, 9)
    with no_torch_fallback():
        y = module(x)
    assert_close(y, reference(x), "y")
    assert set(module.state_dict()) == {"weight", "bias"}
    with pytest.raises(ValueError, match="dilation"):
        nn.Conv2d(3, 4, 3, dilation=2)


def test_guard_catches_a_torch_convolution(no_torch_fallback):
    """The fallback guard itself works: a PyTorch convolution inside it fails."""
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    with no_torch_fallback(), pytest.raises(AssertionError, match="inside the Triton path"):
        F.conv2d(x, w)
    with no_torch_fallback(), pytest.raises(AssertionError, match="inside the Triton path"):
        torch.nn.Conv2d(2, 3, 3)(x)


BAD_INPUTS = [
    ("3-D x", dict(x=(2, 5, 5)), ValueError, r"x must be 4-D.*\(2, 5, 5\)"),
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
    ("device", dict(device="meta"), ValueError, r"x is on meta"),
    ("stride zero", dict(stride=0), ValueError, r"stride must be >= 1"),
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
        ops.conv2d(x, w, b, stride=spec.get("stride", 1), groups=spec.get("groups", 1),
                   precision=spec.get("precision", "ieee"))


REPEATABILITY_SCRIPT = """
import hashlib, torch
from alexnet_triton import ops
g = torch.Generator().manual_seed(11)
x = torch.randn(2, 16, 9, 9, generator=g)
w = torch.randn(24, 8, 3, 3, generator=g, requires_grad=True)
b = torch.randn(24, generator=g, requires_grad=True)
y = ops.conv2d(x, w, b, 1, 1, 2, relu=True)
dw, db = torch.autograd.grad(y, (w, b), torch.randn(y.shape, generator=g))
print(hashlib.sha256(dw.numpy().tobytes() + db.numpy().tobytes()).hexdigest())
"""


def test_weight_and_bias_grads_are_bitwise_repeatable_across_processes():
    """As cuDNN's deterministic mode promises: no atomics, a fixed split, and a weight-gradient config that is
    never a timed choice (``pick``: a rule of the shapes), so another process computes the same bits."""
    import subprocess
    import sys

    assert conv.WEIGHT_GRAD_CONFIGS.pick is not None and conv.WEIGHT_GRAD_GATHER_CONFIGS.pick is not None
    digests = [subprocess.run([sys.executable, "-c", REPEATABILITY_SCRIPT], capture_output=True, text=True,
                              timeout=300, check=True).stdout.split()[-1] for _ in range(2)]
    assert digests[0] == digests[1]
