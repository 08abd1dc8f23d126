"""AlexNet as data: both variants' layers in order, and the paper's hyperparameters.

The one description of the networks: the model builds its modules from ``LAYERS``; the cost model, the
inspection cases, the benchmark plans and the memory and traffic analyses derive theirs from it too.

Sources: Krizhevsky et al. 2012 (with Caffe's 227x227 input, which gives the
paper's 55x55 conv1 output) and torchvision's ``alexnet`` ("One weird trick").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

VARIANTS = ("2012", "torchvision")
INPUT_SIZES = {"2012": 227, "torchvision": 224}
NUM_CLASSES = 1000
FC_WIDTH = 4096
DROPOUT = 0.5
# The 2012 net's LRN in PyTorch's convention (alpha divided by size, like Caffe and cuDNN): the paper's
# literal alpha = 1e-4 without that division would be alpha = 5e-4 here.
LRN = dict(size=5, alpha=1e-4, beta=0.75, k=2.0)
POOL = dict(kernel_size=3, stride=2)  # overlapping max-pooling
SGD = dict(lr=0.01, momentum=0.9, weight_decay=5e-4)  # the paper's
# The paper's initialisation: weights N(0, 0.01); biases 1 in these layers ("the second, fourth, and fifth
# convolutional layers, as well as in the fully-connected hidden layers"), 0 in the others.
PAPER_INIT_STD = 0.01
PAPER_BIAS_ONE = ("conv2", "conv4", "conv5", "fc6", "fc7")


@dataclass(frozen=True)
class ConvLayer:
    """One convolution: ``in_channels`` x ``size`` x ``size`` input -> ``out_channels`` feature maps."""

    name: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    padding: int
    groups: int
    size: int  # input height = width

    @property
    def out_size(self) -> int:
        return (self.size + 2 * self.padding - self.kernel) // self.stride + 1

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return self.out_channels, self.in_channels // self.groups, self.kernel, self.kernel

    def scaled(self, channel_divisor: int, size: int) -> ConvLayer:
        """The same kernel/stride/padding/groups with fewer channels and another input size (CPU tests)."""
        def fewer(channels: int, keep_at_least: int) -> int:
            return max(keep_at_least, channels // channel_divisor // self.groups * self.groups)
        in_channels = self.in_channels if self.in_channels <= 4 else fewer(self.in_channels, self.groups)
        return replace(self, in_channels=in_channels, out_channels=fewer(self.out_channels, self.groups),
                       size=size)


@dataclass(frozen=True)
class Layer:
    """One entry of a network: ``kind`` names its ``KINDS`` entry. "conv" holds its full-size geometry in ``conv``;
    "linear" its ``out_features`` (None: the number of classes); "lrn", "pool" and "dropout" take LRN, POOL
    and the model's dropout probability; "avgpool" is torchvision's adaptive average pool (an identity at the
    map's own size)."""

    name: str
    kind: str
    conv: ConvLayer | None = None
    out_features: int | None = None


def _convs_with_relu(*convs: ConvLayer) -> dict[str, tuple[Layer, Layer]]:
    return {c.name: (Layer(c.name, "conv", conv=c), Layer(f"relu{c.name[-1]}", "relu")) for c in convs}


def _fc(name: str, out_features: int | None = FC_WIDTH) -> Layer:
    return Layer(name, "linear", out_features=out_features)


_C2012 = _convs_with_relu(
    ConvLayer("conv1", 3, 96, 11, 4, 0, 1, 227),
    ConvLayer("conv2", 96, 256, 5, 1, 2, 2, 27),
    ConvLayer("conv3", 256, 384, 3, 1, 1, 1, 13),
    ConvLayer("conv4", 384, 384, 3, 1, 1, 2, 13),
    ConvLayer("conv5", 384, 256, 3, 1, 1, 2, 13),
)
_CTV = _convs_with_relu(
    ConvLayer("conv1", 3, 64, 11, 4, 2, 1, 224),
    ConvLayer("conv2", 64, 192, 5, 1, 2, 1, 27),
    ConvLayer("conv3", 192, 384, 3, 1, 1, 1, 13),
    ConvLayer("conv4", 384, 256, 3, 1, 1, 1, 13),
    ConvLayer("conv5", 256, 256, 3, 1, 1, 1, 13),
)
LAYERS: dict[str, tuple[Layer, ...]] = {
    # Caffe's order: ReLU -> LRN -> pool after conv1 and conv2; dropout on the fc6/fc7 outputs.
    "2012": (
        *_C2012["conv1"], Layer("lrn1", "lrn"), Layer("pool1", "pool"),
        *_C2012["conv2"], Layer("lrn2", "lrn"), Layer("pool2", "pool"),
        *_C2012["conv3"], *_C2012["conv4"], *_C2012["conv5"], Layer("pool5", "pool"),
        Layer("flatten", "flatten"),
        _fc("fc6"), Layer("relu6", "relu"), Layer("drop6", "dropout"),
        _fc("fc7"), Layer("relu7", "relu"), Layer("drop7", "dropout"),
        _fc("fc8", None),
    ),
    # torchvision.models.alexnet: no LRN or groups; dropout on the fc6/fc7 inputs.
    "torchvision": (
        *_CTV["conv1"], Layer("pool1", "pool"), *_CTV["conv2"], Layer("pool2", "pool"),
        *_CTV["conv3"], *_CTV["conv4"], *_CTV["conv5"], Layer("pool5", "pool"),
        Layer("avgpool", "avgpool"), Layer("flatten", "flatten"),
        Layer("drop6", "dropout"), _fc("fc6"), Layer("relu6", "relu"),
        Layer("drop7", "dropout"), _fc("fc7"), Layer("relu7", "relu"),
        _fc("fc8", None),
    ),
}
CONV_LAYERS: dict[str, tuple[ConvLayer, ...]] = {
    variant: tuple(layer.conv for layer in layers if layer.conv) for variant, layers in LAYERS.items()}


def pooled(size: int) -> int:
    """Side of a POOL max-pool's output for a ``size`` x ``size`` input."""
    return (size - POOL["kernel_size"]) // POOL["stride"] + 1


@dataclass(frozen=True)
class Shaped:
    """A layer of a built network: ``inputs`` -> ``outputs`` channels (spatial layers) or features (from
    flatten on), and the side of its input and output maps (0 from flatten on). A conv's ``layer.conv`` holds
    its built channels and input size."""

    layer: Layer
    inputs: int
    outputs: int
    in_side: int
    side: int


def scaled_channels(channels: int, multiple: int, width: float) -> int:
    """A conv's channel count at ``width`` (the image's 3 channels stay), a multiple of ``multiple``: the
    largest groups count of the net, so that every grouped conv divides its input and output channels."""
    return channels if channels == 3 else max(multiple, round(channels * width / multiple) * multiple)


@dataclass(frozen=True)
class Sizing:
    """What sizes a built network's layers: its ``width`` multiplier, ``num_classes``, and ``multiple``, the
    largest groups count of its convs (every conv's channel count is a multiple of it)."""

    width: float
    num_classes: int
    multiple: int


@dataclass(frozen=True)
class LayerKind:
    """One kind of network layer. resize(layer, channels, side, sizing): the layer as built and the channels
    (features from flatten on) and map side after it (default: unchanged); spatial: its output map must not vanish;
    weight(shaped): the shape of its weight (its bias: [outputs]), None for a layer without parameters."""

    resize: Callable[[Layer, int, int, Sizing], tuple[Layer, int, int]] = lambda layer, channels, side, sizing: (
        layer, channels, side)
    spatial: bool = False
    weight: Callable[[Shaped], tuple[int, ...]] | None = None


def _resize_conv(layer: Layer, channels: int, side: int, sizing: Sizing) -> tuple[Layer, int, int]:
    c = layer.conv
    conv = replace(c, in_channels=channels, out_channels=scaled_channels(c.out_channels, sizing.multiple, sizing.width),
                   size=side)
    return replace(layer, conv=conv), conv.out_channels, conv.out_size


def _resize_linear(layer: Layer, channels: int, side: int, sizing: Sizing) -> tuple[Layer, int, int]:
    features = layer.out_features
    return layer, sizing.num_classes if features is None else max(1, round(features * sizing.width)), side


KINDS: dict[str, LayerKind] = {
    "conv": LayerKind(_resize_conv, spatial=True, weight=lambda s: s.layer.conv.weight_shape),
    "relu": LayerKind(),
    "lrn": LayerKind(),
    "pool": LayerKind(lambda layer, channels, side, sizing: (layer, channels, pooled(side)), spatial=True),
    "avgpool": LayerKind(),  # an identity at the map's own size
    "flatten": LayerKind(lambda layer, channels, side, sizing: (layer, channels * side * side, 0)),
    "dropout": LayerKind(),
    "linear": LayerKind(_resize_linear, weight=lambda s: (s.outputs, s.inputs)),
}


def check_variant(variant: str, who: str = "AlexNet") -> None:
    if variant not in VARIANTS:
        raise ValueError(f"{who}: variant must be one of {VARIANTS}, got {variant!r}")


def shaped(variant: str, width: float = 1.0, num_classes: int = NUM_CLASSES,
           input_size: int | None = None) -> Iterator[Shaped]:
    """The variant's layers in order, sized for ``width`` (channel and fc multiplier), ``num_classes`` and
    ``input_size`` (default: the variant's); ValueError when the map vanishes before flatten."""
    check_variant(variant)
    channels, side = 3, input_size or INPUT_SIZES[variant]
    sizing = Sizing(width, num_classes, max(c.groups for c in CONV_LAYERS[variant]))
    for layer in LAYERS[variant]:
        inputs, in_side = channels, side
        layer, channels, side = KINDS[layer.kind].resize(layer, channels, side, sizing)
        if KINDS[layer.kind].spatial and side < 1:
            raise ValueError(f"AlexNet: input_size {input_size} is too small for the {variant} net (the map "
                             f"vanishes at {layer.name})")
        yield Shaped(layer, inputs, channels, in_side, side)


def parameter_shapes(variant: str, width: float = 1.0, num_classes: int = NUM_CLASSES,
                     input_size: int | None = None) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every weight and bias, in the model's parameter order: conv [out, in/groups, k, k],
    linear [out, in], biases [out]."""
    shapes = []
    for s in shaped(variant, width, num_classes, input_size):
        if (weight := KINDS[s.layer.kind].weight) is not None:
            shapes += [(f"{s.layer.name}.weight", weight(s)), (f"{s.layer.name}.bias", (s.outputs,))]
    return shapes


def parameter_count(variant: str, width: float = 1.0, num_classes: int = NUM_CLASSES,
                    input_size: int | None = None) -> int:
    """Weights and biases (full size: 60,965,224 for "2012", 61,100,840 for "torchvision")."""
    return sum(math.prod(shape) for _, shape in parameter_shapes(variant, width, num_classes, input_size))


def linear_steps(variant: str) -> dict[str, tuple[bool, bool, bool]]:
    """Per fc layer, as the Triton path fuses the table: (a standalone dropout on its input, the ReLU after it,
    the dropout after that ReLU in its epilogue). Each dropout is one or the other, never both: torchvision's
    fc7-input dropout is fc6's epilogue."""
    check_variant(variant)
    layers, steps, dropout_in = LAYERS[variant], {}, False
    for i, layer in enumerate(layers):
        following = [other.kind for other in layers[i + 1:i + 3]] + [None, None]
        if layer.kind == "dropout":
            fused = i >= 2 and layers[i - 2].kind == "linear" and layers[i - 1].kind == "relu"
            dropout_in = dropout_in or not fused
        elif layer.kind == "linear":
            relu = following[0] == "relu"
            steps[layer.name] = (dropout_in, relu, relu and following[1] == "dropout")
            dropout_in = False
    return steps
