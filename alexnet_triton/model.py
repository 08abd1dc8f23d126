"""AlexNet, the 2012 grouped net with LRN and torchvision's variant, on the Triton kernels or on PyTorch.

Both backends hold the same torch.nn layers (so the same parameter names and
state_dict); only ``forward`` differs:
  backend="torch"   runs the layers as PyTorch does (cuDNN on a GPU): the reference and the baseline.
  backend="triton"  runs every layer on this project's kernels, fused where it removes memory traffic:
                    conv + ReLU, LRN + max-pool, linear + ReLU + dropout, and nothing falls back to PyTorch.

Layer names (``features.<i>`` / ``classifier.<i>``):
  "torchvision"  exactly torchvision.models.alexnet's, so its state_dict loads into torchvision and back.
  "2012"         features: conv1 0, relu 1, lrn 2, pool 3, conv2 4, relu 5, lrn 6, pool 7, conv3 8, relu 9,
                 conv4 10, relu 11, conv5 12, relu 13, pool 14; classifier: fc6 0, relu 1, dropout 2,
                 fc7 3, relu 4, dropout 5, fc8 6 (Caffe's order).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

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

BACKENDS = ("triton", "torch")
INITS = ("paper", "kaiming", "torch")


def _module(layer: Shaped, dropout: float) -> nn.Module:
    """The torch.nn module of one sized layer of the network table (not flatten or avgpool)."""
    kind, conv = layer.layer.kind, layer.layer.conv
    if kind == "conv":
        return nn.Conv2d(layer.inputs, layer.outputs, conv.kernel, conv.stride, conv.padding, groups=conv.groups)
    if kind == "linear":
        return nn.Linear(layer.inputs, layer.outputs)
    return {"relu": lambda: nn.ReLU(inplace=True), "lrn": lambda: nn.LocalResponseNorm(**LRN),
            "pool": lambda: nn.MaxPool2d(**POOL), "dropout": lambda: nn.Dropout(dropout)}[kind]()


def _take(layers: list[nn.Module], kind: type) -> nn.Module | None:
    """Pop and return layers[0] if it is a ``kind``, else None."""
    return layers.pop(0) if layers and isinstance(layers[0], kind) else None


class AlexNet(nn.Module):
    """AlexNet for images [N, 3, input_size, input_size] -> logits [N, num_classes].

    variant: "2012" (227 input, groups=2 in conv2/4/5, ReLU -> LRN -> overlapping pool after conv1 and conv2,
        dropout on the fc6/fc7 outputs) or "torchvision" (224 input, no LRN or groups, adaptive average pool to
        6x6, dropout on the fc6/fc7 inputs).
    width: multiplier of every conv and fc width (a scaled-down copy of the same topology for CPU runs).
    input_size: image side; smaller inputs shrink the map that reaches fc6 (at least 1x1 after pool5).
    dropout: the dropout probability (0 turns dropout off). init: "paper" (N(0, 0.01) weights, bias 1 in
        conv2, conv4, conv5, fc6, fc7, else 0), "kaiming" (He normal weights, zero biases: trains a narrow
        scaled-down net with SGD, where the paper's std 0.01 stalls) or "torch" (PyTorch's defaults).
    precision: "ieee" (exact fp32 products) or "tf32", for the Triton convs and linears.
    """

    def __init__(self, variant: str = "2012", num_classes: int = NUM_CLASSES, backend: str = "triton",
                 width: float = 1.0, input_size: int | None = None, dropout: float = DROPOUT, init: str = "paper",
                 precision: str = "ieee"):
        super().__init__()
        check_variant(variant)
        if init not in INITS:
            raise ValueError(f"AlexNet: init must be one of {INITS}, got {init!r}")
        self.variant, self.input_size = variant, input_size or INPUT_SIZES[variant]
        self.backend = backend
        self.precision = precision
        features, classifier, avgpool, by_name = [], [], nn.Identity(), {}
        for layer in shaped(variant, width, num_classes, self.input_size):
            if layer.layer.kind == "avgpool":
                # torchvision pools adaptively to 6x6; here to the map's own size, so the pool is an identity
                # (224 input: 6x6 as in torchvision) and the Triton path needs no average-pool kernel.
                avgpool = nn.AdaptiveAvgPool2d((layer.side, layer.side))
            elif layer.layer.kind != "flatten":
                module = by_name[layer.layer.name] = _module(layer, dropout)
                (classifier if layer.side == 0 else features).append(module)
        self.features, self.avgpool, self.classifier = nn.Sequential(*features), avgpool, nn.Sequential(*classifier)
        if init != "torch":
            self._initialise(init, by_name)
        self._triton_steps = self._fuse(list(self.features)) + [self._flatten] + self._fuse(list(self.classifier))

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, backend: str) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"AlexNet: backend must be one of {BACKENDS}, got {backend!r}")
        self._backend = backend

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

    def _fuse(self, layers: list[nn.Module]) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        """The Triton path's steps: each layer followed by the ReLU / dropout / pool it absorbs. Weights are
        cast to the activations' dtype (a no-op in fp32; the mixed-precision path feeds bf16/fp16 images)."""
        steps = []
        while layers:
            layer = layers.pop(0)
            if isinstance(layer, nn.Conv2d):
                relu = _take(layers, nn.ReLU) is not None
                steps.append(lambda x, conv=layer, relu=relu: ops.conv2d(
                    x, conv.weight.to(x.dtype), conv.bias.to(x.dtype), conv.stride, conv.padding, conv.dilation,
                    conv.groups, relu=relu, precision=self.precision))
            elif isinstance(layer, nn.LocalResponseNorm) and (pool := _take(layers, nn.MaxPool2d)) is not None:
                steps.append(lambda x, lrn=layer, pool=pool: ops.lrn_max_pool2d(
                    x, lrn.size, lrn.alpha, lrn.beta, lrn.k, pool.kernel_size, pool.stride, pool.padding))
            elif isinstance(layer, nn.MaxPool2d):
                steps.append(lambda x, pool=layer: ops.max_pool2d(x, pool.kernel_size, pool.stride, pool.padding))
            elif isinstance(layer, nn.Linear):
                relu = _take(layers, nn.ReLU) is not None
                dropout = _take(layers, nn.Dropout) if relu else None
                steps.append(lambda x, fc=layer, relu=relu, dropout=dropout: ops.linear(
                    x, fc.weight.to(x.dtype), fc.bias.to(x.dtype), relu,
                    dropout.p if dropout is not None and self.training else 0.0, precision=self.precision))
            elif isinstance(layer, nn.Dropout):
                steps.append(lambda x, dropout=layer: ops.dropout(x, dropout.p, self.training))
            else:
                raise TypeError(f"AlexNet: no Triton step for {layer!r}")
        return steps

    def _flatten(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, S, S] -> [N, C*S*S] in NCHW order (what fc6's weight expects, whatever x's layout)."""
        return x.reshape(x.shape[0], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2:] != (self.input_size, self.input_size):
            raise ValueError(f"AlexNet: expected images [N, 3, {self.input_size}, {self.input_size}], "
                             f"got {tuple(x.shape)}")
        if self.backend == "torch":
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))
        for step in self._triton_steps:
            x = step(x)
        return x


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def loss_function(backend: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Mean cross-entropy on the given backend's kernels."""
    return ops.cross_entropy if backend == "triton" else F.cross_entropy

