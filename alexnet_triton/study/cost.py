"""What each AlexNet layer must compute and move, from its shapes alone: the study's cost model.

``study_layers(variant)`` lists the layers the benchmarks time and the roofline
plots, at full size: the five convs (bias + ReLU fused), the LRN + max-pool
blocks (2012) or plain max-pools (torchvision), fc6-fc8, the cross-entropy and
the SGD step over every parameter. For each, per mode ("forward", "backward",
"full" = both):

  flops(layer, mode, batch)                       multiply-adds count 2; element-wise ops count what they
                                                  compute per element (an approximate model, pow = 1 op)
  minimum_bytes(layer, mode, batch, element_size) every tensor the mode must read or write, once: the
                                                  traffic of an ideal fused kernel (a lower bound)

Backward reads what forward saved (the input, and the output where ReLU's mask
comes from it) and the output gradient, and writes the input, weight and bias
gradients; conv1's input is the image, which needs no gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..architecture import LRN, NUM_CLASSES, POOL, ConvLayer, check_variant, parameter_count, pooled, shaped

MODES = ("forward", "backward", "full")
# Per-element operation counts of the element-wise layers (the model's approximation).
LRN_FLOPS_FORWARD = 2 * LRN["size"] + 4  # window sum of squares, k + alpha/size * s, pow, divide
LRN_FLOPS_BACKWARD = 4 * LRN["size"] + 8  # recompute the denominator, the channel-window sum of the gradient
CROSS_ENTROPY_FLOPS_FORWARD = 4  # max, subtract, exp, add per logit
CROSS_ENTROPY_FLOPS_BACKWARD = 3  # exp(x - lse), subtract the one-hot, scale
SGD_FLOPS = 6  # weight decay, momentum, update: one multiply-add each
SGD_STATE_TENSORS = 5  # read parameter, gradient, momentum; write parameter, momentum
INDEX_BYTES = 8  # int64 targets
LSE_BYTES = 4  # the fp32 log-sum-exp per row the loss saves


@dataclass(frozen=True)
class StudyLayer:
    """One full-size layer of an AlexNet variant, per image.

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
        if self.kind == "conv":
            return self.conv.weight_shape, (self.conv.out_channels,)
        if self.kind == "linear":
            return (self.out_features, self.in_features), (self.out_features,)
        return ()

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


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"cost model: mode must be one of {MODES}, got {mode!r}")


def _gemm(layer: StudyLayer) -> tuple[int, int, int, int]:
    """Per image: (output elements, reduction length, input elements, weight elements) of a conv or linear."""
    if layer.kind == "conv":
        c = layer.conv
        return (c.out_channels * c.out_size ** 2, c.in_channels // c.groups * c.kernel ** 2,
                c.in_channels * c.size ** 2, c.out_channels * c.in_channels // c.groups * c.kernel ** 2)
    return layer.out_features, layer.in_features, layer.in_features, layer.out_features * layer.in_features


def flops(layer: StudyLayer, mode: str, batch: int) -> int:
    """Floating-point operations of ``mode`` for a batch (the SGD step does not depend on the batch)."""
    _check_mode(mode)
    if mode == "full":
        return flops(layer, "forward", batch) + flops(layer, "backward", batch)
    forward = mode == "forward"
    if layer.kind in ("conv", "linear"):
        outputs, reduction, _, _ = _gemm(layer)
        gemms = 1 if forward else 1 + layer.needs_input_grad  # backward: weight grad (+ input grad)
        return 2 * batch * outputs * reduction * gemms
    if layer.kind in ("lrn_pool", "pool"):
        inputs, outputs = layer.channels * layer.size ** 2, layer.channels * layer.pooled_size ** 2
        lrn = (LRN_FLOPS_FORWARD if forward else LRN_FLOPS_BACKWARD) * inputs if layer.kind == "lrn_pool" else 0
        pool = POOL["kernel_size"] ** 2 * outputs  # forward: compare per tap; backward: route per tap
        return batch * (lrn + pool)
    if layer.kind == "cross_entropy":
        per_logit = CROSS_ENTROPY_FLOPS_FORWARD if forward else CROSS_ENTROPY_FLOPS_BACKWARD
        return batch * layer.in_features * per_logit
    return 0 if forward else SGD_FLOPS * layer.in_features  # the SGD step is counted as backward


def minimum_bytes(layer: StudyLayer, mode: str, batch: int, element_size: int) -> int:
    """Bytes ``mode`` must read and write at least, each tensor once (parameters once per batch)."""
    _check_mode(mode)
    if mode == "full":
        return minimum_bytes(layer, "forward", batch, element_size) + minimum_bytes(layer, "backward", batch,
                                                                                    element_size)
    forward = mode == "forward"
    if layer.kind in ("conv", "linear"):
        outputs, _, inputs, weights = _gemm(layer)
        bias = layer.conv.out_channels if layer.kind == "conv" else layer.out_features
        if forward:  # x, w, b -> y
            elements = batch * (inputs + outputs) + weights + bias
        else:  # dy, y (the ReLU mask), x, and w for dx -> dx (if the input needs it), dw, db
            elements = (batch * (outputs * (1 + layer.relu) + inputs * (1 + layer.needs_input_grad))
                        + weights * (1 + layer.needs_input_grad) + bias)
        return element_size * elements
    if layer.kind in ("lrn_pool", "pool"):
        inputs, outputs = layer.channels * layer.size ** 2, layer.channels * layer.pooled_size ** 2
        # forward: x -> y; backward: dy and the saved x -> dx
        return element_size * batch * (inputs + outputs if forward else 2 * inputs + outputs)
    if layer.kind == "cross_entropy":
        # forward: logits, targets -> per-row log-sum-exp (fp32); backward: logits, targets, lse -> dlogits
        logits = element_size * batch * layer.in_features
        return logits * (1 if forward else 2) + (INDEX_BYTES + LSE_BYTES) * batch
    # the SGD step is counted as backward: it runs after it, once per batch
    return 0 if forward else SGD_STATE_TENSORS * element_size * layer.in_features
