"""What each AlexNet layer must compute and move, from its shapes alone: the study's cost model.

For each layer of ``layer_kinds.study_layers(variant)`` (the layers the benchmarks time and the roofline
plots, at full size), per phase ("forward", "backward",
"full" = both):

  flops(layer, phase, batch)                       multiply-adds count 2; element-wise ops count what they
                                                   compute per element (an approximate model, pow = 1 op)
  minimum_bytes(layer, phase, batch, element_size) every tensor the phase must read or write, once: the
                                                   traffic of an ideal fused kernel (a lower bound)

Each layer kind's formulas are its entry in ``layer_kinds.KINDS``.
"""

from __future__ import annotations

from ..registries.layer_kinds import KINDS, StudyLayer
from ..vocabulary import LAYER_PASSES


def _check_phase(phase: str) -> None:
    if phase not in LAYER_PASSES:
        raise ValueError(f"cost model: phase must be one of {LAYER_PASSES}, got {phase!r}")


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
