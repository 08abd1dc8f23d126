"""AlexNet, the 2012 grouped net with LRN and torchvision's variant, on the Triton kernels or on PyTorch.

The backend, fixed at construction, picks one of two module trees with one state_dict (the same keys and shapes
and, from the same seed, the same initial values), so each loads the other's weights:
  backend="torch"   a torch.nn module per layer, run by PyTorch (cuDNN on a GPU): the reference and the baseline.
  backend="triton"  alexnet_triton.nn modules, each fused block one module at its first layer's index: ReLU +
                    LRN + max-pool (LRNMaxPool2d(relu=True)), ReLU + max-pool (MaxPool2d(relu=True)), conv + ReLU
                    where a conv follows (Conv2d(relu=True)), linear + ReLU + dropout (Linear(relu=True,
                    dropout=p)); the layers it absorbs have no index, and nothing falls back to PyTorch. A ReLU
                    before a pool is the pool's, not the conv's: the pool's backward masks the gradient it makes
                    anyway, and the conv's needs no mask pass (RELU_BEFORE). Such a pool block also adds the conv's
                    bias (``take_bias_of``: the conv runs without it; its backward sums the bias gradient in the
                    pass that writes its input gradient, so the conv's backward makes no pass over its output
                    gradient for it). The bias stays the conv's parameter (``features.<i>.bias``), the pool block
                    holds the conv unregistered: the state_dict is the torch tree's. fp32 computes the same bits;
                    fp16/bf16 round the conv's output before the bias add as well as after. A conv + ReLU
                    followed by a conv (conv3, conv4) gives its ReLU's backward to that conv (``mask_relu_of``),
                    which masks the input gradient it writes and sums the first conv's bias gradient from it: the
                    first conv's backward reads no saved output and makes no pass over its output gradient.
                    Likewise a linear + ReLU (+ dropout) followed by a linear (fc6, fc7): the next one's input
                    gradient applies that ReLU and dropout in its epilogue, and neither of the first's backward GEMMs
                    masks the gradient it reads.
Both run features -> avgpool -> flatten -> classifier, under torch.autocast for mixed precision
(alexnet_triton.precision). The Triton tree's last pool writes NCHW whatever the layout (``contiguous_output``), so
the flatten is a view, not a copy. ``take_images_in_depth_form`` has conv1 take its images in the space-to-depth
form it computes them in, made beforehand (by train.py's loaders, on the host).

Layer names (``features.<i>`` / ``classifier.<i>``):
  "torchvision"  exactly torchvision.models.alexnet's, so its state_dict loads into torchvision and back.
  "2012"         features: conv1 0, relu 1, lrn 2, pool 3, conv2 4, relu 5, lrn 6, pool 7, conv3 8, relu 9,
                 conv4 10, relu 11, conv5 12, relu 13, pool 14; classifier: fc6 0, relu 1, dropout 2,
                 fc7 3, relu 4, dropout 5, fc8 6 (Caffe's order).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from . import nn as triton_nn
from . import ops
from .architecture import (
    DROPOUT,
    INPUT_SIZES,
    LRN,
    NUM_CLASSES,
    PAPER_BIAS_ONE,
    PAPER_INIT_STD,
    POOL,
    Shaped,
    check_variant,
    shaped,
)
from .architecture import VARIANTS as VARIANTS  # re-exported: the model's choices
from .kernels.conv import Depth

BACKENDS = ("triton", "torch")
INITS = ("paper", "kaiming", "torch")
# What the Triton tree fuses into a layer's module: the layers of these kinds that follow it, in this order.
FUSED = {"conv": ("relu",), "lrn": ("pool",), "linear": ("relu", "dropout")}
# A ReLU right before these layers is fused into their module (before its first layer), not into the conv before it.
RELU_BEFORE = (("lrn", "pool"), ("pool",))
# A layer of one of these kinds right after a layer of the same kind + one of its runs of fused layers takes the
# ReLU's (and dropout's) backward of that block into its input gradient (``Conv2d`` / ``Linear.mask_relu_of``): the
# mask comes from its saved input, so the block before reads no output and masks no gradient.
RELU_MASKED_BY_NEXT = {"conv": (("relu",),), "linear": (("relu",), ("relu", "dropout"))}


def relu_masked_after(kind: str, after: tuple[str, ...]) -> bool:
    """Whether a layer of ``kind``, followed by layers of the kinds ``after``, hands its ReLU's backward to the
    layer after them (RELU_MASKED_BY_NEXT)."""
    return any(after[:len(run) + 1] == (*run, kind) for run in RELU_MASKED_BY_NEXT.get(kind, ()))


def masks_relu_before(layers: list[Shaped], i: int) -> bool:
    """Whether layers[i] takes the ReLU's backward of the block right before it (RELU_MASKED_BY_NEXT)."""
    kind = layers[i].layer.kind
    return any(i > len(run) and tuple(s.layer.kind for s in layers[i - len(run) - 1:i]) == (kind, *run)
               for run in RELU_MASKED_BY_NEXT.get(kind, ()))


def _leads(layers: list[Shaped], i: int) -> bool:
    """Whether layers[i] is a ReLU that RELU_BEFORE fuses into the module of the layers after it."""
    after = tuple(s.layer.kind for s in layers[i + 1:i + 3])
    return layers[i].layer.kind == "relu" and any(after[:len(run)] == run for run in RELU_BEFORE)


def _blocks(layers: list[Shaped], fuse: bool) -> Iterator[tuple[int, list[Shaped]]]:
    """(index of its first layer, its layers) of each module of a Sequential: one layer each, or (``fuse``) a
    layer with the ones FUSED lets it absorb, after the ReLU RELU_BEFORE gives it."""
    i = 0
    while i < len(layers):
        lead = fuse and _leads(layers, i)
        block = layers[i:i + 1 + lead]
        for kind in FUSED.get(block[-1].layer.kind, ()) if fuse else ():
            j = i + len(block)
            if j == len(layers) or layers[j].layer.kind != kind or _leads(layers, j):
                break
            block.append(layers[j])
        yield i, block
        i += len(block)


def main_layer(block: list[Shaped]) -> Shaped:
    """The layer whose module a block of ``_blocks`` is: its first, after a ReLU fused before it."""
    return block[1] if len(block) > 1 and block[0].layer.kind == "relu" else block[0]


def _conv(block: list[Shaped], lib, fused: dict, dropout: float) -> nn.Module:
    first, conv = block[0], block[0].layer.conv
    return lib.Conv2d(first.inputs, first.outputs, conv.kernel, conv.stride, conv.padding, groups=conv.groups, **fused)


def _linear(block: list[Shaped], lib, fused: dict, dropout: float) -> nn.Module:
    if fused:
        fused["dropout"] = dropout if any(s.layer.kind == "dropout" for s in block) else 0.0
    return lib.Linear(block[0].inputs, block[0].outputs, **fused)


def _lrn(block: list[Shaped], lib, fused: dict, dropout: float) -> nn.Module:
    if any(s.layer.kind == "pool" for s in block):
        return triton_nn.LRNMaxPool2d(**LRN, **POOL, relu=fused["relu"])
    return lib.LocalResponseNorm(**LRN)


def _pool(block: list[Shaped], lib, fused: dict, dropout: float) -> nn.Module:
    return lib.MaxPool2d(**POOL, relu=fused["relu"]) if fused else lib.MaxPool2d(**POOL)


def _relu(block: list[Shaped], lib, fused: dict, dropout: float) -> nn.Module:
    if lib is not nn:  # the Triton tree's ReLUs are in its convs, linears and pools (FUSED, RELU_BEFORE)
        raise ValueError(f"AlexNet: {block[0].layer.name} is a ReLU no layer around it fuses")
    return nn.ReLU(inplace=True)


# The module of each kind's block: (its layers, the module library, the Triton tree's fused options, the dropout
# probability) -> module.
MODULES = {"conv": _conv, "linear": _linear, "lrn": _lrn, "relu": _relu, "pool": _pool,
           "dropout": lambda block, lib, fused, dropout: lib.Dropout(dropout)}


def _module(block: list[Shaped], dropout: float, precision: str | None) -> nn.Module:
    """The module of a block of sized layers of the network table: torch.nn's for a single layer (precision
    None), else alexnet_triton.nn's with the block's ReLU, dropout or pool fused."""
    kinds = tuple(s.layer.kind for s in block)
    lib, fused = (nn, {}) if precision is None else (triton_nn, dict(relu="relu" in kinds, precision=precision))
    return MODULES[main_layer(block).layer.kind](block, lib, fused, dropout)


class AlexNet(nn.Module):
    """AlexNet for images [N, 3, input_size, input_size] -> logits [N, num_classes].

    variant: "2012" (227 input, groups=2 in conv2/4/5, ReLU -> LRN -> overlapping pool after conv1 and conv2,
        dropout on the fc6/fc7 outputs) or "torchvision" (224 input, no LRN or groups, adaptive average pool to
        6x6, dropout on the fc6/fc7 inputs).
    backend: "triton" or "torch" (the module tree; read-only afterwards).
    width: multiplier of every conv and fc width (a scaled-down copy of the same topology for CPU runs).
    input_size: image side; smaller inputs shrink the map that reaches fc6 (at least 1x1 after pool5).
    dropout: the dropout probability (0 turns dropout off). init: "paper" (N(0, 0.01) weights, bias 1 in
        conv2, conv4, conv5, fc6, fc7, else 0), "kaiming" (He normal weights, zero biases: trains a narrow
        scaled-down net with SGD, where the paper's std 0.01 stalls) or "torch" (PyTorch's defaults).
    precision: "ieee" (exact fp32 products) or "tf32", held by the Triton tree's convs and linears.
    """

    def __init__(self, variant: str = "2012", num_classes: int = NUM_CLASSES, backend: str = "triton",
                 width: float = 1.0, input_size: int | None = None, dropout: float = DROPOUT, init: str = "paper",
                 precision: str = "ieee"):
        super().__init__()
        check_variant(variant)
        if backend not in BACKENDS:
            raise ValueError(f"AlexNet: backend must be one of {BACKENDS}, got {backend!r}")
        if init not in INITS:
            raise ValueError(f"AlexNet: init must be one of {INITS}, got {init!r}")
        self.variant, self.input_size, self._backend = variant, input_size or INPUT_SIZES[variant], backend
        layers, avgpool, by_name = {"features": [], "classifier": []}, nn.Identity(), {}
        for layer in shaped(variant, width, num_classes, self.input_size):
            if layer.layer.kind == "avgpool":
                # torchvision pools adaptively to 6x6; here to the map's own size, an identity (224 input: 6x6 as
                # in torchvision): nn.Identity in the Triton tree.
                if backend == "torch":
                    avgpool = nn.AdaptiveAvgPool2d((layer.side, layer.side))
                elif layer.side != layer.in_side:
                    raise NotImplementedError(f"AlexNet: no Triton average pool ({layer.in_side} -> {layer.side})")
            elif layer.layer.kind != "flatten":
                layers["classifier" if layer.side == 0 else "features"].append(layer)
        module_precision, trees = precision if backend == "triton" else None, {}  # None: torch.nn modules
        for part, part_layers in layers.items():
            trees[part], previous = nn.Sequential(), None
            for i, block in _blocks(part_layers, fuse=backend == "triton"):
                module = by_name[main_layer(block).layer.name] = _module(block, dropout, module_precision)
                if block[0].layer.kind == "relu" and isinstance(previous, triton_nn.Conv2d):  # RELU_BEFORE's pool
                    module.take_bias_of(previous)
                elif backend == "triton" and masks_relu_before(part_layers, i):
                    module.mask_relu_of(previous)
                trees[part].add_module(str(i), module)  # the torch tree's index of the block's first layer
                previous = module
        if backend == "triton":  # the flatten right after it reads a contiguous map: a view
            trees["features"][-1].contiguous_output = True
        self.features, self.avgpool, self.classifier = trees["features"], avgpool, trees["classifier"]
        self.depth_form: Depth | None = None
        if init != "torch":
            self._initialise(init, by_name)

    @property
    def backend(self) -> str:
        return self._backend

    @staticmethod
    def _initialise(init: str, by_name: dict[str, nn.Module]) -> None:
        for name, module in by_name.items():
            if not isinstance(module, nn.Conv2d | nn.Linear):
                continue
            if init == "paper":
                nn.init.normal_(module.weight, 0.0, PAPER_INIT_STD)
                nn.init.constant_(module.bias, 1.0 if name in PAPER_BIAS_ONE else 0.0)
            else:
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def take_images_in_depth_form(self, dtype: torch.dtype) -> Depth | None:
        """From now on, take channels_last images computed in ``dtype`` (autocast's, or theirs) in the
        space-to-depth form conv1 computes them in (``ops.conv2d``'s depth_form_of), and return that form
        (``kernels.conv.Depth``: ``data.space_to_depth_images`` makes it). None, and nothing changes, where conv1
        runs on the images themselves: the torch tree, exact fp32."""
        conv1 = self.features[0]
        if self.backend != "triton":
            return None
        image_size = (self.input_size, self.input_size)
        self.depth_form = ops.input_form(conv1.weight.shape, image_size, conv1.stride, conv1.padding,
                                         conv1.dilation, conv1.groups, dtype=dtype, precision=conv1.precision)
        conv1.depth_form_of = image_size if self.depth_form else None
        return self.depth_form

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0] if x.dim() else 0
        expected = self.depth_form.form_shape(batch, 3) if self.depth_form else (
            batch, 3, self.input_size, self.input_size)
        if x.dim() != 4 or tuple(x.shape) != expected:
            form = " in space-to-depth form" if self.depth_form else ""
            raise ValueError(f"AlexNet: expected images{form} [N, {', '.join(map(str, expected[1:]))}], "
                             f"got {tuple(x.shape)}")
        # torch.flatten reads the map in NCHW order whatever its layout: the order fc6's weight expects.
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


