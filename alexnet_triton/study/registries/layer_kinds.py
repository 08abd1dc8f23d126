"""The study's layer kinds: one entry per kind holds everything the cost model, the benchmarks, the roofline and the
smoke test need of a layer of that kind (``StudyLayer``). A new kind is one ``LayerKind`` in ``KINDS``.

Kinds: "conv" (conv + bias + ReLU), "lrn_pool" (2012's LRN + overlapping max-pool block), "pool" (max-pool),
"linear" (fc with the model's ReLU and dropout, ``architecture.linear_steps``), "cross_entropy" (the loss over
``in_features`` logits), "sgd" (the SGD step over ``in_features`` parameters).

Costs are per phase ("forward" / "backward"): FLOPs count multiply-adds as 2 and element-wise ops as what they
compute per element (an approximate model, pow = 1 op); minimum bytes count every tensor the phase must read or
write once, the traffic of an ideal fused kernel (a lower bound). Backward reads what forward saved (the input, and
the output where ReLU's mask comes from it) and the output gradient; conv1's input is the image, which needs no
gradient. A ReLU right before a pool block (``model.RELU_BEFORE``) gives its mask to the pool: the conv before it
reads no output in its backward, a max-pool's backward reads dy and the window offset of each output (one byte) in
place of x, and the LRN block reads the x it reads anyway. A ReLU right before a conv, or a ReLU (+ dropout)
between two linears (``model.RELU_MASKED_BY_NEXT``), gives its mask to the next layer's input gradient, read from
the input its weight gradient reads anyway: the layer before it reads no output either. The SGD step is counted as
backward: it runs after it, once per batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ... import ops
from ...architecture import (
    DROPOUT,
    LRN,
    NUM_CLASSES,
    POOL,
    SGD,
    ConvLayer,
    Shaped,
    check_variant,
    linear_steps,
    parameter_count,
    pooled,
    shaped,
)
from ...kernels import conv as conv_kernels
from ...kernels import linear as linear_kernels
from ...kernels import max_pool as max_pool_kernels
from ...kernels import runtime
from ...model import RELU_BEFORE, relu_masked_after
from ..vocabulary import INPUT_GRAD, WEIGHT_GRAD

LRN_FLOPS_FORWARD = 2 * LRN["size"] + 4  # window sum of squares, k + alpha/size * s, pow, divide
LRN_FLOPS_BACKWARD = 4 * LRN["size"] + 8  # recompute the denominator, the channel-window sum of the gradient
CROSS_ENTROPY_FLOPS_FORWARD = 4  # max, subtract, exp, add per logit
CROSS_ENTROPY_FLOPS_BACKWARD = 3  # exp(x - lse), subtract the one-hot, scale
SGD_FLOPS = 6  # weight decay, momentum, update: one multiply-add each
SGD_STATE_TENSORS = 5  # read parameter, gradient, momentum; write parameter, momentum
INDEX_BYTES = 8  # int64 targets
LSE_BYTES = 4  # the fp32 log-sum-exp per row the loss saves
# a max-pool's saved window offset per output (its backward routes dy by it)
POOL_OFFSET_BYTES = max_pool_kernels.window_offset_dtype(dict(KH=POOL["kernel_size"], KW=POOL["kernel_size"])).itemsize
# Phases that time one backward kernel: the inputs (x, weight, bias) that need a gradient in that graph.
GRADIENT_PHASES = {INPUT_GRAD: (0,), WEIGHT_GRAD: (1, 2)}

Inputs = tuple[list[torch.Tensor], list[bool]]


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
    relu: bool = True  # conv / linear: a ReLU whose mask the backward reads from the saved output

    @property
    def pooled_size(self) -> int:
        return pooled(self.size)

    @property
    def parameter_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Weight and bias shapes (conv, linear), else none."""
        return KINDS[self.kind].parameter_shapes(self)

    def __str__(self) -> str:
        return f"{self.variant}/{self.name}"


@dataclass(frozen=True)
class Shrink:
    """How the CPU smoke test scales a full-size layer down: channels and features / ``divisor``, maps /
    ``map_divisor``; ``before``: the layers already scaled (the SGD step counts their parameters)."""

    divisor: int
    map_divisor: int
    before: tuple[StudyLayer, ...] = ()


@dataclass(frozen=True)
class GemmParts:
    """What the GPU check takes apart in a GEMM kind (its ``functions`` are the whole layer).

    pre_activation(layer): PyTorch's GEMM before the activation, (x, w, b) -> y. activation(layer): (the ReLU, the
    dropout after it) of the model's epilogue. launchers(layer, x, w, b, precision): the Triton launchers of its three
    kernels with a config forced (None: the autotuner's), {"forward": f(config), "input_grad": f(config, y, dy),
    "weight_grad": f(config, y, dy)}, dy the gradient of the forward's output y.
    """

    pre_activation: Callable[[StudyLayer], Callable]
    activation: Callable[[StudyLayer], tuple[bool, bool]]
    launchers: Callable[[StudyLayer, torch.Tensor, torch.Tensor, torch.Tensor, str], dict[str, Callable]]


@dataclass(frozen=True)
class LayerKind:
    """One kind of study layer.

    spatial: its input is a feature map with a layout (NCHW / channels_last). gemm: it runs on the matrix units
    (the roofline prices it at the dtype's matrix peak; else fp32 CUDA cores). batched: its work grows with the
    batch (the SGD step's does not). inference: part of an inference forward (the loss is not).
    flops(layer, forward, batch), minimum_bytes(layer, forward, batch, element_size): the phase's costs.
    gradient_cost(layer, phase, batch, element_size): (FLOPs, bytes) of a GRADIENT_PHASES phase, for kinds whose
    backward is one kernel per gradient. state_dtype: the dtype of its state whatever the dtype case (the SGD step's:
    fp32, as training keeps its parameters under mixed precision), else None (the case's dtype: ``dtype_for``).
    shape(layer, batch): the benchmark's shape label. shrink(layer, Shrink): the
    smoke test's copy. parameter_shapes(layer): its weight and bias shapes.
    inputs(layer, batch, dtype, generator, memory_format): random input tensors and which need a gradient;
    functions(layer, precision): {"triton": fn, "torch": fn} of those tensors, computing what the model computes
    there. Or, for kinds that are not a function of tensors (the optimiser step), step(layer, optimizer class,
    dtype, generator, parameter_shapes): a callable doing one step.
    The GPU check's: gemm_parts (GEMM kinds); reference(layer, dtype, precision): PyTorch's function it compares
    with (default: functions' "torch") and reference_dtype, the dtype PyTorch computes it in (None: the case's);
    quantities: the names of the output and of the inputs' gradients; lrn: the block starts with an LRN, also
    checked alone.
    """

    name: str
    spatial: bool
    gemm: bool
    flops: Callable[[StudyLayer, bool, int], int]
    minimum_bytes: Callable[[StudyLayer, bool, int, int], int]
    shape: Callable[[StudyLayer, int], str]
    shrink: Callable[[StudyLayer, Shrink], StudyLayer]
    inputs: Callable[[StudyLayer, int, torch.dtype, torch.Generator, torch.memory_format], Inputs] | None = None
    functions: Callable[[StudyLayer, str], dict[str, Callable]] | None = None
    step: Callable[..., Callable[[], object]] | None = None
    gradient_cost: Callable[[StudyLayer, str, int, int], tuple[int, int]] | None = None
    parameter_shapes: Callable[[StudyLayer], tuple[tuple[int, ...], ...]] = lambda layer: ()
    batched: bool = True
    inference: bool = True
    state_dtype: torch.dtype | None = None
    gemm_parts: GemmParts | None = None
    reference: Callable[[StudyLayer, torch.dtype, str], Callable] | None = None
    reference_dtype: torch.dtype | None = None
    quantities: tuple[str, ...] = ("y", "dx", "dw", "db")
    lrn: bool = False

    def reference_function(self, layer: StudyLayer, dtype: torch.dtype, precision: str) -> Callable:
        """PyTorch's function the GPU check compares this kind's Triton function with."""
        return (self.reference or (lambda layer, dtype, precision: self.functions(layer, precision)["torch"]))(
            layer, dtype, precision)

    def dtype_for(self, case_dtype: torch.dtype) -> torch.dtype:
        """The dtype this kind computes in for a dtype case's ``case_dtype``."""
        return self.state_dtype or case_dtype

    def __post_init__(self):
        if (self.step is None) == (self.functions is None or self.inputs is None):
            raise ValueError(f"layer kind {self.name!r}: give inputs and functions, or step")

    @property
    def phases(self) -> tuple[str, ...]:
        """The benchmark phases of the layer plan: an optimiser step has no forward/backward split."""
        return ("full",) if self.step is not None else ("forward", "backward", "full")


def _randn(gen: torch.Generator, dtype: torch.dtype, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(shape, generator=gen, device=gen.device) * scale).to(dtype)


# ------------------------------------------------------------------------------------ GEMMs: conv and linear
def _gemm(layer: StudyLayer) -> tuple[int, int, int, int, int]:
    """Per image: (output elements, reduction length, input elements, weight elements, bias elements)."""
    if layer.conv is not None:
        c = layer.conv
        reduction = c.in_channels // c.groups * c.kernel ** 2
        return c.out_channels * c.out_size ** 2, reduction, c.in_channels * c.size ** 2, c.out_channels * reduction, \
            c.out_channels
    return layer.out_features, layer.in_features, layer.in_features, layer.out_features * layer.in_features, \
        layer.out_features


def _gemm_flops(layer: StudyLayer, forward: bool, batch: int) -> int:
    outputs, reduction, *_ = _gemm(layer)
    return 2 * batch * outputs * reduction * (1 if forward else 1 + layer.needs_input_grad)  # weight (+ input) grad


def _gemm_bytes(layer: StudyLayer, forward: bool, batch: int, element_size: int) -> int:
    outputs, _, inputs, weights, bias = _gemm(layer)
    if forward:  # x, w, b -> y
        return element_size * (batch * (inputs + outputs) + weights + bias)
    # dy, y (the ReLU mask), x, and w for dx -> dx (if the input needs it), dw, db
    return element_size * (batch * (outputs * (1 + layer.relu) + inputs * (1 + layer.needs_input_grad))
                           + weights * (1 + layer.needs_input_grad) + bias)


def _gemm_gradient_cost(layer: StudyLayer, phase: str, batch: int, element_size: int) -> tuple[int, int]:
    """The input gradient (dy, y, w -> dx) or weight gradient (dy, y, x -> dw, db): one GEMM the forward's size."""
    outputs, _, inputs, weights, bias = _gemm(layer)
    read_written = batch * (outputs * (1 + layer.relu) + inputs) + weights + (0 if phase == INPUT_GRAD else bias)
    return _gemm_flops(layer, True, batch), element_size * read_written


def _conv_inputs(layer: StudyLayer, batch: int, dtype: torch.dtype, gen: torch.Generator,
                 memory_format: torch.memory_format) -> Inputs:
    c = layer.conv
    fan_in = c.in_channels // c.groups * c.kernel ** 2
    x = _randn(gen, dtype, batch, c.in_channels, c.size, c.size).contiguous(memory_format=memory_format)
    w = _randn(gen, dtype, c.out_channels, fan_in // c.kernel ** 2, c.kernel, c.kernel, scale=fan_in ** -0.5)
    return [x, w.contiguous(memory_format=memory_format), _randn(gen, dtype, c.out_channels, scale=0.01)], \
        [layer.needs_input_grad, True, True]


def _conv_functions(layer: StudyLayer, precision: str) -> dict[str, Callable]:
    c = layer.conv
    return dict(triton=lambda x, w, b: ops.conv2d(x, w, b, c.stride, c.padding, groups=c.groups, relu=True,
                                                  precision=precision),
                torch=lambda x, w, b: F.relu(F.conv2d(x, w, b, c.stride, c.padding, groups=c.groups), inplace=True))


def _linear_inputs(layer: StudyLayer, batch: int, dtype: torch.dtype, gen: torch.Generator,
                   memory_format: torch.memory_format) -> Inputs:
    return [_randn(gen, dtype, batch, layer.in_features),
            _randn(gen, dtype, layer.out_features, layer.in_features, scale=layer.in_features ** -0.5),
            _randn(gen, dtype, layer.out_features, scale=0.01)], [True, True, True]


def _linear_functions(layer: StudyLayer, precision: str) -> dict[str, Callable]:
    dropout_in, relu, dropout_out = linear_steps(layer.variant)[layer.name]

    def triton_linear(x, w, b):
        x = ops.dropout(x, DROPOUT) if dropout_in else x
        return ops.linear(x, w, b, relu, DROPOUT if dropout_out else 0.0, precision=precision)

    def torch_linear(x, w, b):
        y = F.linear(F.dropout(x, DROPOUT) if dropout_in else x, w, b)
        y = F.relu(y, inplace=True) if relu else y
        return F.dropout(y, DROPOUT) if dropout_out else y

    return dict(triton=triton_linear, torch=torch_linear)


def _conv_launchers(layer: StudyLayer, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
                    precision: str) -> dict[str, Callable]:
    """The conv's kernels; the GEMM gradients read dy masked by the ReLU (conv2d_output_grad's dy')."""
    c = layer.conv
    geometry = dict(stride=c.stride, padding=c.padding, groups=c.groups, precision=precision)
    return dict(
        forward=lambda config: conv_kernels.conv2d_forward(x, w, b, relu=True, config=config, **geometry),
        input_grad=lambda config, y, dy: conv_kernels.conv2d_input_grad(
            dy * (y != 0), w, x.shape, memory_format=runtime.memory_format_of(x), config=config, **geometry),
        weight_grad=lambda config, y, dy: conv_kernels.conv2d_weight_grad(
            dy * (y != 0), x, w.shape, memory_format=runtime.memory_format_of(w), config=config, **geometry))


def _linear_launchers(layer: StudyLayer, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
                      precision: str) -> dict[str, Callable]:
    """The fc layer's kernels with its epilogue's ReLU and dropout."""
    relu, dropout = linear_steps(layer.variant)[layer.name][1:]
    masks = dict(dropout=DROPOUT if dropout else 0.0, seed=1234, precision=precision)
    return dict(
        forward=lambda config: linear_kernels.linear_forward(x, w, b, relu, config=config, **masks),
        input_grad=lambda config, y, dy: linear_kernels.linear_input_grad(dy, w, y=y if relu else None,
                                                                           config=config, **masks),
        weight_grad=lambda config, y, dy: linear_kernels.linear_weight_grad(dy, x, y=y if relu else None,
                                                                             config=config, **masks))


def _conv_pre_activation(layer: StudyLayer) -> Callable:
    c = layer.conv
    return lambda x, w, b: F.conv2d(x, w, b, c.stride, c.padding, groups=c.groups)


def _shrink_features(layer: StudyLayer, shrink: Shrink) -> StudyLayer:
    return replace(layer, in_features=layer.in_features // shrink.divisor,
                   out_features=layer.out_features // shrink.divisor)


CONV = LayerKind(
    "conv", spatial=True, gemm=True, flops=_gemm_flops, minimum_bytes=_gemm_bytes,
    shape=lambda layer, n: f"{n}x{layer.conv.in_channels}x{layer.conv.size}x{layer.conv.size}",
    shrink=lambda layer, s: replace(layer, conv=layer.conv.scaled(
        s.divisor, max(layer.conv.kernel, layer.conv.size // s.map_divisor))),
    inputs=_conv_inputs, functions=_conv_functions, gradient_cost=_gemm_gradient_cost,
    parameter_shapes=lambda layer: (layer.conv.weight_shape, (layer.conv.out_channels,)),
    gemm_parts=GemmParts(_conv_pre_activation, lambda layer: (True, False), _conv_launchers))
LINEAR = LayerKind(
    "linear", spatial=False, gemm=True, flops=_gemm_flops, minimum_bytes=_gemm_bytes,
    shape=lambda layer, n: f"{n}x{layer.in_features}", shrink=_shrink_features, inputs=_linear_inputs,
    functions=_linear_functions, gradient_cost=_gemm_gradient_cost,
    parameter_shapes=lambda layer: ((layer.out_features, layer.in_features), (layer.out_features,)),
    gemm_parts=GemmParts(lambda layer: F.linear, lambda layer: linear_steps(layer.variant)[layer.name][1:],
                         _linear_launchers))


# ------------------------------------------------------------------------------------ pools: LRN + pool, pool
def _pool_flops(layer: StudyLayer, forward: bool, batch: int, lrn: bool) -> int:
    inputs, outputs = layer.channels * layer.size ** 2, layer.channels * layer.pooled_size ** 2
    normalise = (LRN_FLOPS_FORWARD if forward else LRN_FLOPS_BACKWARD) * inputs if lrn else 0
    return batch * (normalise + POOL["kernel_size"] ** 2 * outputs)  # forward: compare per tap; backward: route


def _pool_bytes(layer: StudyLayer, forward: bool, batch: int, element_size: int, lrn: bool) -> int:
    """forward: x -> y. backward: LRN block dy, x -> dx; max-pool dy, the window offsets -> dx."""
    inputs, outputs = layer.channels * layer.size ** 2, layer.channels * layer.pooled_size ** 2
    if forward:
        return element_size * batch * (inputs + outputs)
    if lrn:
        return element_size * batch * (2 * inputs + outputs)
    return element_size * batch * (inputs + outputs) + batch * outputs * POOL_OFFSET_BYTES


def _pool_inputs(layer: StudyLayer, batch: int, dtype: torch.dtype, gen: torch.Generator,
                 memory_format: torch.memory_format) -> Inputs:
    x = _randn(gen, dtype, batch, layer.channels, layer.size, layer.size).relu()  # the input is a ReLU output
    return [x.contiguous(memory_format=memory_format)], [True]


def _lrn_reference(layer: StudyLayer, dtype: torch.dtype, precision: str) -> Callable:
    """LRN + max-pool with the LRN output rounded to ``dtype`` (straight-through), as the fused kernel rounds it
    before the pool."""
    def block(x):
        normalised = F.local_response_norm(x, **LRN)
        normalised = normalised + (normalised.to(dtype).to(x.dtype) - normalised).detach()
        return F.max_pool2d(normalised, **POOL)
    return block


def _pool_kind(name: str, lrn: bool, functions: dict[str, Callable]) -> LayerKind:
    # PyTorch has no CPU fp16/bf16 LRN: the check's reference computes the LRN block in fp32, then rounds
    checks = dict(lrn=True, reference=_lrn_reference, reference_dtype=torch.float32) if lrn else {}
    return LayerKind(
        name, spatial=True, gemm=False, flops=lambda layer, forward, batch: _pool_flops(layer, forward, batch, lrn),
        minimum_bytes=lambda layer, forward, batch, element_size: _pool_bytes(layer, forward, batch, element_size,
                                                                              lrn),
        shape=lambda layer, n: f"{n}x{layer.channels}x{layer.size}x{layer.size}",
        shrink=lambda layer, s: replace(layer, channels=layer.channels // s.divisor,
                                        size=max(POOL["kernel_size"], layer.size // s.map_divisor)),
        inputs=_pool_inputs, functions=lambda layer, precision: functions, **checks)


LRN_POOL = _pool_kind("lrn_pool", True, dict(triton=lambda x: ops.lrn_max_pool2d(x, **LRN, **POOL),
                                             torch=lambda x: F.max_pool2d(F.local_response_norm(x, **LRN), **POOL)))
POOL_KIND = _pool_kind("pool", False, dict(triton=lambda x: ops.max_pool2d(x, **POOL),
                                           torch=lambda x: F.max_pool2d(x, **POOL)))


# ------------------------------------------------------------------------------------ the loss
def _cross_entropy_bytes(layer: StudyLayer, forward: bool, batch: int, element_size: int) -> int:
    # forward: logits, targets -> per-row log-sum-exp (fp32); backward: logits, targets, lse -> dlogits
    logits = element_size * batch * layer.in_features
    return logits * (1 if forward else 2) + (INDEX_BYTES + LSE_BYTES) * batch


def _cross_entropy_inputs(layer: StudyLayer, batch: int, dtype: torch.dtype, gen: torch.Generator,
                          memory_format: torch.memory_format) -> Inputs:
    target = torch.randint(layer.in_features, (batch,), generator=gen, device=gen.device)
    return [_randn(gen, dtype, batch, layer.in_features), target], [True, False]


CROSS_ENTROPY = LayerKind(
    "cross_entropy", spatial=False, gemm=False,
    flops=lambda layer, forward, batch: batch * layer.in_features * (
        CROSS_ENTROPY_FLOPS_FORWARD if forward else CROSS_ENTROPY_FLOPS_BACKWARD),
    minimum_bytes=_cross_entropy_bytes, shape=lambda layer, n: f"{n}x{layer.in_features}",
    shrink=lambda layer, s: replace(layer, in_features=layer.in_features // s.divisor),
    inputs=_cross_entropy_inputs, functions=lambda layer, precision: dict(triton=ops.cross_entropy,
                                                                          torch=F.cross_entropy),
    inference=False, quantities=("loss", "dlogits"))


# ------------------------------------------------------------------------------------ the optimiser step
def _sgd_step(layer: StudyLayer, optimizer: type[torch.optim.Optimizer], dtype: torch.dtype, gen: torch.Generator,
              parameter_shapes: tuple[tuple[int, ...], ...]) -> Callable[[], object]:
    """One step of ``optimizer`` (an SGD class; the paper's momentum and weight decay) over random parameters of
    the given shapes, with random gradients."""
    params = [_randn(gen, dtype, *s).requires_grad_() for s in parameter_shapes]
    for p in params:
        p.grad = _randn(gen, dtype, *p.shape)
    return optimizer(params, **SGD).step


SGD_STEP = LayerKind(
    "sgd", spatial=False, gemm=False,
    flops=lambda layer, forward, batch: 0 if forward else SGD_FLOPS * layer.in_features,
    minimum_bytes=lambda layer, forward, batch, element_size: (
        0 if forward else SGD_STATE_TENSORS * element_size * layer.in_features),
    shape=lambda layer, n: f"{layer.in_features} params",
    shrink=lambda layer, s: replace(layer, in_features=sum(
        math.prod(shape) for before in s.before for shape in KINDS[before.kind].parameter_shapes(before))),
    step=_sgd_step, batched=False, inference=False, state_dtype=torch.float32)

KINDS: dict[str, LayerKind] = {kind.name: kind for kind in (CONV, LRN_POOL, POOL_KIND, LINEAR, CROSS_ENTROPY,
                                                            SGD_STEP)}


def _conv_layer(variant: str, s: Shaped, before: str | None, after: tuple[str, ...],
                layers: list[StudyLayer]) -> StudyLayer:
    first = not any(layer.conv for layer in layers)  # the image needs no gradient
    mask_elsewhere = any(after[1:1 + len(run)] == run for run in RELU_BEFORE) or relu_masked_after("conv", after)
    return StudyLayer(variant, s.layer.name, "conv", conv=s.layer.conv, needs_input_grad=not first,
                      relu=after[:1] == ("relu",) and not mask_elsewhere)


def _pool_layer(variant: str, s: Shaped, before: str | None, after: tuple[str, ...],
                layers: list[StudyLayer]) -> StudyLayer:
    lrn = before == "lrn"
    return StudyLayer(variant, f"lrn-{s.layer.name}" if lrn else s.layer.name, "lrn_pool" if lrn else "pool",
                      channels=s.inputs, size=s.in_side)


def _linear_layer(variant: str, s: Shaped, before: str | None, after: tuple[str, ...],
                  layers: list[StudyLayer]) -> StudyLayer:
    return StudyLayer(variant, s.layer.name, "linear", in_features=s.inputs, out_features=s.outputs,
                      relu=after[:1] == ("relu",) and not relu_masked_after("linear", after))


# The study layer each network layer kind starts (``architecture.KINDS``; the others are fused into one of these):
# (variant, the sized layer, the kind before it, the kinds after it, the study layers so far) -> its study layer.
STUDY_LAYER_OF = {"conv": _conv_layer, "pool": _pool_layer, "linear": _linear_layer}


def study_layers(variant: str) -> list[StudyLayer]:
    """The variant's layers in network order (full size: 227 input for "2012", 224 for "torchvision"): each
    conv and fc of ``architecture.LAYERS`` with the ReLU after it, each pool with the LRN before it
    (``STUDY_LAYER_OF``), then the loss and the SGD step over every parameter."""
    check_variant(variant, "cost model")
    sized = list(shaped(variant))
    kinds = [None, *(s.layer.kind for s in sized), None]
    layers = []
    for i, s in enumerate(sized):
        if (make := STUDY_LAYER_OF.get(s.layer.kind)) is not None:
            layers.append(make(variant, s, kinds[i], tuple(t.layer.kind for t in sized[i + 1:]), layers))
    layers.append(StudyLayer(variant, "cross-entropy", "cross_entropy", in_features=NUM_CLASSES))
    layers.append(StudyLayer(variant, "sgd", "sgd", in_features=parameter_count(variant)))
    return layers
