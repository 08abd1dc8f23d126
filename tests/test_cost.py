"""The cost model (alexnet_triton.study.models.cost) against numbers derived by hand and PyTorch's FLOP counter."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from alexnet_triton.architecture import parameter_count
from alexnet_triton.study.models.cost import flops, minimum_bytes
from alexnet_triton.study.registries.layer_kinds import StudyLayer, study_layers

VARIANTS = ("2012", "torchvision")


def layer(variant: str, name: str) -> StudyLayer:
    return next(candidate for candidate in study_layers(variant) if candidate.name == name)


def test_parameter_counts_by_hand():
    # 2012: convs 34,944 + 307,456 + 885,120 + 663,936 + 442,624; fc 37,752,832 + 16,781,312 + 4,097,000
    assert parameter_count("2012") == 60_965_224
    # torchvision: convs 23,296 + 307,392 + 663,936 + 884,992 + 590,080; the same fc layers
    assert parameter_count("torchvision") == 61_100_840


@pytest.mark.parametrize("variant", VARIANTS)
def test_layer_order_and_sgd_size(variant):
    names = [candidate.name for candidate in study_layers(variant)]
    pools = ["lrn-pool1", "lrn-pool2"] if variant == "2012" else ["pool1", "pool2"]
    assert names == ["conv1", pools[0], "conv2", pools[1], "conv3", "conv4", "conv5", "pool5", "fc6", "fc7", "fc8",
                     "cross-entropy", "sgd"]
    assert layer(variant, "sgd").in_features == parameter_count(variant)


@pytest.mark.parametrize("variant", VARIANTS)
def test_pooled_sizes(variant):
    first, second = ("lrn-pool1", "lrn-pool2") if variant == "2012" else ("pool1", "pool2")
    assert [(layer(variant, name).size, layer(variant, name).pooled_size) for name in (first, second, "pool5")] \
        == [(55, 27), (27, 13), (13, 6)]
    assert layer(variant, "fc6").in_features == 256 * 6 * 6


def test_conv1_forward_flops_by_hand():
    conv1 = layer("2012", "conv1")
    per_image = 2 * 96 * 55 * 55 * 363  # 96 maps of 55x55, each output an 11x11x3 dot product
    assert flops(conv1, "forward", 1) == per_image
    assert flops(conv1, "forward", 128) == 128 * per_image


def test_backward_flops_count_one_gemm_per_gradient():
    """conv1's input is the image: its backward is the weight gradient only; every other layer adds the input
    gradient's GEMM of the same size."""
    conv1 = layer("2012", "conv1")
    assert flops(conv1, "backward", 4) == flops(conv1, "forward", 4)
    for variant in VARIANTS:
        for name in ("conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
            gemm = layer(variant, name)
            assert flops(gemm, "backward", 4) == 2 * flops(gemm, "forward", 4), (variant, name)
            assert flops(gemm, "full", 4) == 3 * flops(gemm, "forward", 4), (variant, name)


@pytest.mark.parametrize("variant, mega_macs", [("2012", 724), ("torchvision", 714)])
def test_forward_multiply_adds_per_image(variant, mega_macs):
    """The published totals: 724M multiply-adds (2012) and 714M (torchvision) per image, forward."""
    gemms = [candidate for candidate in study_layers(variant) if candidate.kind in ("conv", "linear")]
    assert round(sum(flops(gemm, "forward", 1) for gemm in gemms) / 2e6) == mega_macs


def test_linear_minimum_bytes_by_hand():
    fc7, batch, size = layer("2012", "fc7"), 128, 2
    x, y, w, b = batch * 4096, batch * 4096, 4096 * 4096, 4096
    assert minimum_bytes(fc7, "forward", batch, size) == size * (x + w + b + y)
    # backward reads dy, x, w; writes dx, dw, db (no y: fc8's input gradient applies fc7's ReLU and dropout,
    # masked by the x it reads anyway)
    assert minimum_bytes(fc7, "backward", batch, size) == size * (y + 2 * x + 2 * w + b)
    assert minimum_bytes(fc7, "full", batch, size) == size * (2 * y + 3 * x + 3 * w + 2 * b)


def test_fc8_backward_reads_no_relu_mask():
    """fc8 produces the logits, with no ReLU: its backward reads dy, x, w and writes dx, dw, db."""
    fc8, batch = layer("2012", "fc8"), 128
    x, y, w, b = batch * 4096, batch * 1000, 4096 * 1000, 1000
    assert minimum_bytes(fc8, "backward", batch, 4) == 4 * (y + 2 * x + 2 * w + b)


def test_conv_minimum_bytes_by_hand():
    conv1, batch = layer("2012", "conv1"), 2
    x, y, w, b = batch * 3 * 227 * 227, batch * 96 * 55 * 55, 96 * 363, 96
    assert minimum_bytes(conv1, "forward", batch, 4) == 4 * (x + w + b + y)
    # no input gradient: the weights are not read; the ReLU's mask is the LRN block's (x > 0): dy, x -> dw, db
    assert minimum_bytes(conv1, "backward", batch, 4) == 4 * (y + x + w + b)
    conv3 = layer("2012", "conv3")  # a conv follows: the mask is conv4's (x4 > 0, x4 read for dw4 anyway)
    x, y, w, b = batch * 256 * 13 * 13, batch * 384 * 13 * 13, 384 * 256 * 9, 384
    assert minimum_bytes(conv3, "backward", batch, 2) == 2 * (y + 2 * x + 2 * w + b)
    conv5 = layer("torchvision", "conv5")  # a max-pool follows: the mask is in its window offsets
    x, y, w, b = batch * 256 * 13 * 13, batch * 256 * 13 * 13, 256 * 256 * 9, 256
    assert minimum_bytes(conv5, "backward", batch, 2) == 2 * (y + 2 * x + 2 * w + b)


def test_pool_cross_entropy_and_sgd_bytes_by_hand():
    pool, batch = layer("2012", "lrn-pool1"), 8
    inputs, outputs = batch * 96 * 55 * 55, batch * 96 * 27 * 27
    assert minimum_bytes(pool, "forward", batch, 2) == 2 * (inputs + outputs)
    assert minimum_bytes(pool, "backward", batch, 2) == 2 * (2 * inputs + outputs)  # x, dy -> dx
    pool = layer("torchvision", "pool1")
    inputs, outputs = batch * 64 * 55 * 55, batch * 64 * 27 * 27
    assert minimum_bytes(pool, "backward", batch, 2) == 2 * (inputs + outputs) + outputs  # dy, int8 offsets -> dx
    loss = layer("2012", "cross-entropy")
    # forward: logits, int64 targets -> fp32 log-sum-exp; backward: logits, targets, lse -> dlogits
    assert minimum_bytes(loss, "forward", batch, 4) == 4 * batch * 1000 + (8 + 4) * batch
    assert minimum_bytes(loss, "backward", batch, 4) == 2 * 4 * batch * 1000 + (8 + 4) * batch
    sgd = layer("2012", "sgd")
    assert minimum_bytes(sgd, "forward", batch, 4) == flops(sgd, "forward", batch) == 0
    assert minimum_bytes(sgd, "backward", batch, 4) == 5 * 4 * 60_965_224  # p, g, m in; p, m out
    assert flops(sgd, "backward", 1) == flops(sgd, "backward", 128) == 6 * 60_965_224


def _counted(run) -> int:
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


@pytest.mark.parametrize("variant", VARIANTS)
def test_conv_flops_match_torch_flop_counter(variant):
    """Every conv, scaled down, forward and backward. The counter ignores groups in its weight-gradient formula
    (it counts G times too much), so a grouped conv runs as G convs of one group each."""
    batch = 2
    for index, conv in enumerate(candidate.conv for candidate in study_layers(variant) if candidate.kind == "conv"):
        small = conv.scaled(8, 31 if index == 0 else 9)
        scaled = StudyLayer(variant, conv.name, "conv", conv=small, needs_input_grad=index > 0)
        x = torch.randn(batch, small.in_channels, small.size, small.size, requires_grad=index > 0)
        w = torch.randn(small.out_channels, small.in_channels // small.groups, small.kernel, small.kernel,
                        requires_grad=True)

        def forward(x=x, w=w, small=small):
            return torch.cat([F.conv2d(xg, wg, stride=small.stride, padding=small.padding)
                              for xg, wg in zip(x.chunk(small.groups, 1), w.chunk(small.groups, 0), strict=True)], 1)

        y = forward()
        assert _counted(forward) == flops(scaled, "forward", batch), conv.name
        assert _counted(lambda y=y: y.backward(torch.ones_like(y))) == flops(scaled, "backward", batch), conv.name


def test_linear_flops_match_torch_flop_counter():
    scaled = StudyLayer("2012", "fc", "linear", in_features=48, out_features=20)
    x, w, b = torch.randn(6, 48, requires_grad=True), torch.randn(20, 48, requires_grad=True), torch.randn(20)
    y = F.linear(x, w, b)
    assert _counted(lambda: F.linear(x, w, b)) == flops(scaled, "forward", 6)
    assert _counted(lambda: y.backward(torch.ones_like(y))) == flops(scaled, "backward", 6)


def test_bad_phase_and_variant_raise():
    conv1 = layer("2012", "conv1")
    with pytest.raises(ValueError, match="phase must be one of"):
        flops(conv1, "sideways", 1)
    with pytest.raises(ValueError, match="phase must be one of"):
        minimum_bytes(conv1, "inference", 1, 4)
    with pytest.raises(ValueError, match="variant must be one of"):
        study_layers("1998")
