"""What each AlexNet layer must compute and move, from its shapes alone: the study's cost model.

``study_layers(variant)`` lists the layers the benchmarks time and the roofline
plots, at full size: the five convs (bias + ReLU fused), the LRN + max-pool
blocks (2012) or plain max-pools (torchvision), fc6-fc8, the cross-entropy and
the SGD step over every parameter. For each, per phase ("forward", "backward",
"full" = both):

  flops(layer, phase, batch)                       multiply-adds count 2; element-wise ops count what they
                                                   compute per element (an approximate model, pow = 1 op)
  minimum_bytes(layer, phase, batch, element_size) every tensor the phase must read or write, once: the
                                                   traffic of an ideal fused kernel (a lower bound)

Each layer kind's formulas are its entry in ``layer_kinds.KINDS``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..architecture import NUM_CLASSES, ConvLayer, check_variant, parameter_count, pooled, shaped
from .layer_kinds import KINDS

PHASES = ("forward", "backward", "full")


@dataclass(frozen=True)
class StudyLayer:
    """One full-size layer of an AlexNet variant, per image; ``kind`` names its ``layer_kinds.KINDS`` entry.

    kind "conv": ``conv`` holds the geometry. "lrn_pool" / "pool": ``channels`` maps of ``size`` x ``size``
    (LRN size 5, then 3x3 stride-2 pooling). "linear": ``in_features`` -> ``out_features``.
    "cross_entropy": ``in_features`` logits per image. "sgd": ``in_features`` parameters in all.
    """

    variant: str
    name: str
    kind: str
    conv: ConvLayer | None = None
    channels: int = 0
    size: int = 0
    in_features: int = 0
    out_features: int = 0
    needs_input_grad: bool = True
    relu: bool = True  # conv / linear: a fused ReLU, whose mask the backward reads from the saved output

    @property
    def pooled_size(self) -> int:
        return pooled(self.size)

    @property
    def parameter_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Weight and bias shapes (conv, linear), else none."""
        return KINDS[self.kind].parameter_shapes(self)

    def __str__(self) -> str:
        return f"{self.variant}/{self.name}"


def study_layers(variant: str) -> list[StudyLayer]:
    """The variant's layers in network order (full size: 227 input for "2012", 224 for "torchvision"): each
    conv and fc of ``architecture.LAYERS`` with the ReLU after it, each pool with the LRN before it."""
    check_variant(variant, "cost model")
    sized = list(shaped(variant))
    kinds = [s.layer.kind for s in sized] + [None]
    layers = []
    for i, s in enumerate(sized):
        name, relu = s.layer.name, kinds[i + 1] == "relu"
        if s.layer.kind == "conv":
            first = not any(layer.kind == "conv" for layer in layers)
            layers.append(StudyLayer(variant, name, "conv", conv=s.layer.conv, needs_input_grad=not first, relu=relu))
        elif s.layer.kind == "pool":
            lrn = kinds[i - 1] == "lrn"
            layers.append(StudyLayer(variant, f"lrn-{name}" if lrn else name, "lrn_pool" if lrn else "pool",
                                     channels=s.inputs, size=s.in_side))
        elif s.layer.kind == "linear":
            layers.append(StudyLayer(variant, name, "linear", in_features=s.inputs, out_features=s.outputs,
                                     relu=relu))
    layers.append(StudyLayer(variant, "cross-entropy", "cross_entropy", in_features=NUM_CLASSES))
    layers.append(StudyLayer(variant, "sgd", "sgd", in_features=parameter_count(variant)))
    return layers


def _check_phase(phase: str) -> None:
    if phase not in PHASES:
        raise ValueError(f"cost model: phase must be one of {PHASES}, got {phase!r}")


def flops(layer: StudyLayer, phase: str, batch: int) -> int:
    """Floating-point operations of ``phase`` for a batch (the SGD step does not depend on the batch)."""
    _check_phase(phase)
    if phase == "full":
        return flops(layer, "forward", batch) + flops(layer, "backward", batch)
    return KINDS[layer.kind].flops(layer, phase == "forward", batch)


def minimum_bytes(layer: StudyLayer, phase: str, batch: int, element_size: int) -> int:
    """Bytes ``phase`` must read and write at least, each tensor once (parameters once per batch)."""
    _check_phase(phase)
    if phase == "full":
        return (minimum_bytes(layer, "forward", batch, element_size)
                + minimum_bytes(layer, "backward", batch, element_size))
    return KINDS[layer.kind].minimum_bytes(layer, phase == "forward", batch, element_size)
