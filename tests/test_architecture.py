"""The network table (alexnet_triton.architecture) against the model built from it: parameter shapes and counts,
layer order, and the fc layers' fused ReLU/dropout, for both variants at full size and scaled down."""

from __future__ import annotations

import pytest
from torch import nn

from alexnet_triton import architecture
from alexnet_triton.architecture import LAYERS, VARIANTS, linear_steps, parameter_count, parameter_shapes
from alexnet_triton.model import AlexNet
from alexnet_triton.model import parameter_count as model_parameter_count

SIZES = [dict(), dict(width=0.125, input_size=67, num_classes=10), dict(width=0.3, input_size=99, num_classes=7)]
MODULE_KINDS = {nn.Conv2d: "conv", nn.ReLU: "relu", nn.LocalResponseNorm: "lrn", nn.MaxPool2d: "pool",
                nn.Dropout: "dropout", nn.Linear: "linear"}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_shapes_and_count_match_the_built_model(variant, size):
    model = AlexNet(variant, init="torch", **size)
    assert [shape for _, shape in parameter_shapes(variant, **size)] == [tuple(p.shape) for p in model.parameters()]
    assert parameter_count(variant, **size) == model_parameter_count(model)


@pytest.mark.parametrize("variant", VARIANTS)
def test_layer_order_matches_the_built_model(variant):
    model = AlexNet(variant, init="torch", width=0.125, input_size=67)
    built = [MODULE_KINDS[type(m)] for m in [*model.features, *model.classifier]]
    table = [layer.kind for layer in LAYERS[variant] if layer.kind not in ("flatten", "avgpool")]
    assert built == table
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d) == any(layer.kind == "avgpool" for layer in LAYERS[variant])


def test_the_paper_facts():
    assert architecture.LRN == dict(size=5, alpha=1e-4, beta=0.75, k=2.0)
    assert architecture.POOL == dict(kernel_size=3, stride=2)
    assert [c.out_size for c in architecture.CONV_LAYERS["2012"]] == [55, 27, 13, 13, 13]
    assert [c.out_size for c in architecture.CONV_LAYERS["torchvision"]] == [55, 27, 13, 13, 13]


def test_linear_steps_follow_the_table():
    # 2012: ReLU then dropout on fc6's and fc7's outputs; torchvision: dropout on fc6's input (standalone) and
    # on fc7's input, which is fc6's epilogue after its ReLU.
    assert linear_steps("2012") == {"fc6": (False, True, True), "fc7": (False, True, True),
                                    "fc8": (False, False, False)}
    assert linear_steps("torchvision") == {"fc6": (True, True, True), "fc7": (False, True, False),
                                           "fc8": (False, False, False)}


def test_vanishing_map_and_unknown_variant_are_named():
    with pytest.raises(ValueError, match="input_size 40 is too small for the 2012 net .* pool5"):
        parameter_shapes("2012", input_size=40)
    with pytest.raises(ValueError, match="variant must be one of"):
        parameter_count("2013")
