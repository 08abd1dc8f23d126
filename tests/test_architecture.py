"""The network table (alexnet_triton.architecture) against the model built from it: parameter shapes and counts,
layer order in the torch tree, the Triton tree's fused blocks and the fc layers' fused ReLU/dropout, for both
variants at full size and scaled down."""

from __future__ import annotations

import pytest
from torch import nn

from alexnet_triton import architecture
from alexnet_triton import nn as triton_nn
from alexnet_triton.architecture import LAYERS, VARIANTS, linear_steps, parameter_count, parameter_shapes
from alexnet_triton.model import AlexNet

SIZES = [dict(), dict(width=0.125, input_size=67, num_classes=10), dict(width=0.3, input_size=99, num_classes=7)]
MODULE_KINDS = {nn.Conv2d: "conv", nn.ReLU: "relu", nn.LocalResponseNorm: "lrn", nn.MaxPool2d: "pool",
                nn.Dropout: "dropout", nn.Linear: "linear"}
# The table's layers in one module of the Triton tree.
TRITON_KINDS = {triton_nn.Conv2d: lambda m: ["conv"] + ["relu"] * m.relu,
                triton_nn.LRNMaxPool2d: lambda m: ["relu"] * m.relu + ["lrn", "pool"],
                triton_nn.MaxPool2d: lambda m: ["relu"] * m.relu + ["pool"],
                triton_nn.Dropout: lambda m: ["dropout"],
                triton_nn.Linear: lambda m: ["linear"] + ["relu"] * m.relu + ["dropout"] * (m.dropout > 0)}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_shapes_and_count_match_the_built_model(variant, size):
    model = AlexNet(variant, init="torch", **size)
    assert [shape for _, shape in parameter_shapes(variant, **size)] == [tuple(p.shape) for p in model.parameters()]
    assert parameter_count(variant, **size) == sum(p.numel() for p in model.parameters())


def table_kinds(variant: str, part: str) -> list[str]:
    """The table's layer kinds in features (before flatten) or classifier (after), avgpool aside."""
    kinds = [layer.kind for layer in LAYERS[variant] if layer.kind != "avgpool"]
    flatten = kinds.index("flatten")
    return kinds[:flatten] if part == "features" else kinds[flatten + 1:]


@pytest.mark.parametrize("variant", VARIANTS)
def test_layer_order_matches_the_torch_tree(variant):
    model = AlexNet(variant, backend="torch", init="torch", width=0.125, input_size=67)
    for part in ("features", "classifier"):
        assert [MODULE_KINDS[type(m)] for m in model.get_submodule(part)] == table_kinds(variant, part)
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d) == any(layer.kind == "avgpool" for layer in LAYERS[variant])


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_triton_tree_fuses_the_table_at_the_torch_tree_indices(variant):
    """Each module's kinds are the table's from its index on; the indices it skips are the layers it absorbs."""
    model = AlexNet(variant, backend="triton", init="torch", width=0.125, input_size=67)
    for part in ("features", "classifier"):
        table, covered = table_kinds(variant, part), 0
        for index, module in model.get_submodule(part).named_children():
            kinds = TRITON_KINDS[type(module)](module)
            assert int(index) == covered and kinds == table[covered:covered + len(kinds)], (part, index, kinds)
            covered += len(kinds)
        assert covered == len(table)
    assert isinstance(model.avgpool, nn.Identity)


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


@pytest.mark.parametrize("variant", VARIANTS)
def test_linear_steps_are_the_triton_trees_linears(variant):
    modules = list(AlexNet(variant, init="torch", width=0.125, input_size=67).classifier)
    built = [(isinstance(before, triton_nn.Dropout), module.relu, module.dropout > 0)
             for before, module in zip([None, *modules[:-1]], modules, strict=True)
             if isinstance(module, triton_nn.Linear)]
    assert built == list(linear_steps(variant).values())


def test_vanishing_map_and_unknown_variant_are_named():
    with pytest.raises(ValueError, match="input_size 40 is too small for the 2012 net .* pool5"):
        parameter_shapes("2012", input_size=40)
    with pytest.raises(ValueError, match="variant must be one of"):
        parameter_count("2013")
