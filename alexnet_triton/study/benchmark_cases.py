"""What the benchmarks measure: the table's columns, providers, modes, dtypes, layouts, and the sweep as cases.

The sweep (``layer_plan``, ``model_plan``; counts and time estimate in ``experiments/gpu_study.py``):
  layers   every layer of both variants at the headline batch, every dtype x layout x mode, triton and eager;
           the batch sweep (BATCH_SWEEP) of the paper's net at the headline dtype and layout; torch.compile
           (tens of seconds of max-autotune per compile) on the paper's net at the headline batch and
           layout, for COMPILE_DTYPES.
  network  both variants at the headline batch and layout, every dtype, triton and eager (and compile on the
           paper's net for COMPILE_DTYPES); the other layout at the headline dtype; the batch sweep of the
           paper's net at the headline dtype and layout.
``quick``: the headline conditions only, on the paper's net, all three providers. Without a GPU the plans
are the smoke test's: tiny scaled-down shapes (``smoke_layers``, SMOKE_MODEL), batch 2, fp32.
``study_steps``: the GPU study's headline-first order (experiments/gpu_study.py).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import torch

from ..architecture import POOL
from ..kernels import runtime
from . import cost

# The benchmark table's columns, in order (alexnet_triton/study/benchmark.py says what each holds).
COLUMNS = ["kernel", "provider", "mode", "shape", "batch", "dtype", "layout", "ms_p20", "ms_p50", "ms_p80", "tflops",
           "gbps", "images_per_s", "peak_memory_mb", "device", "torch", "triton", "cudnn", "timestamp", "run_kind",
           "compile_mode", "correctness"]
PROVIDERS = ("triton", "eager", "compile")
LAYER_MODES = cost.MODES
CONV_MODES = ("forward", "input-grad", "weight-grad")  # one kernel each (conv1 has no input gradient)
MODEL_MODES = ("inference", "train-step")  # inference first: it then runs before gradients and momentum exist
DTYPES = {"fp32-ieee": (torch.float32, "ieee"), "fp32-tf32": (torch.float32, "tf32"),
          "fp16": (torch.float16, "ieee"), "bf16": (torch.bfloat16, "ieee")}
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
SPATIAL_KINDS = ("conv", "lrn_pool", "pool")
VARIANTS = ("2012", "torchvision")

HEADLINE = dict(batch=128, dtype="bf16", layout="channels_last")
BATCH_SWEEP = (1, 32, 64, 256)
COMPILE_DTYPES = ("bf16", "fp32-tf32")
SWEEP_VARIANT = "2012"
# Smoke shapes: channels and features / SMOKE_DIVISOR, maps / SMOKE_MAP_DIVISOR; the network is a scaled-down copy.
SMOKE_DIVISOR, SMOKE_MAP_DIVISOR, SMOKE_BATCH = 16, 4, 2
SMOKE_MODEL = {"2012": dict(width=1 / 16, input_size=67, num_classes=10),
               "torchvision": dict(width=1 / 16, input_size=63, num_classes=10)}


def smoke() -> bool:
    """Whether this process runs the CPU smoke test (no GPU: Triton's interpreter)."""
    if not runtime.INTERPRETER and not torch.cuda.is_available():
        raise RuntimeError(f"benchmarks: {runtime.MODE_VARIABLE}=gpu but CUDA is not available")
    return runtime.INTERPRETER


@dataclass(frozen=True)
class LayerCase:
    """One layer at one batch, dtype and layout ("" for non-spatial layers), timed for each provider and mode on
    the same inputs. parameters: for the SGD step, the shapes of the variant's weights and biases."""

    layer: cost.StudyLayer
    batch: int
    dtype: str
    layout: str
    providers: tuple[str, ...]
    modes: tuple[str, ...]
    parameters: tuple[tuple[int, ...], ...] = field(default=(), repr=False)

    @property
    def kernel(self) -> str:
        return str(self.layer)


@dataclass(frozen=True)
class ModelCase:
    """The whole network at one batch, dtype and layout. scale: AlexNet's width, input_size and num_classes
    for a scaled-down copy (smoke), or None for the full-size net with 1000 classes."""

    variant: str
    batch: int
    dtype: str
    layout: str
    providers: tuple[str, ...]
    modes: tuple[str, ...]
    scale: dict | None = field(default=None, hash=False)

    @property
    def kernel(self) -> str:
        return f"{self.variant}/model"


def parameter_shapes(layers: Iterable[cost.StudyLayer]) -> tuple[tuple[int, ...], ...]:
    """Weight and bias shapes of the convs and fc layers among ``layers``, in network order."""
    return tuple(shape for layer in layers for shape in layer.parameter_shapes)


def smoke_layers(variant: str) -> list[cost.StudyLayer]:
    """``cost.study_layers(variant)`` shrunk for the interpreter: channels and features / SMOKE_DIVISOR, maps /
    SMOKE_MAP_DIVISOR (each layer on its own: shapes do not chain)."""
    layers = []
    for layer in cost.study_layers(variant):
        if layer.kind == "conv":
            c = layer.conv
            layer = replace(layer, conv=c.scaled(SMOKE_DIVISOR, max(c.kernel, c.size // SMOKE_MAP_DIVISOR)))
        elif layer.kind in ("lrn_pool", "pool"):
            layer = replace(layer, channels=layer.channels // SMOKE_DIVISOR,
                            size=max(POOL["kernel_size"], layer.size // SMOKE_MAP_DIVISOR))
        elif layer.kind in ("linear", "cross_entropy"):
            layer = replace(layer, in_features=layer.in_features // SMOKE_DIVISOR,
                            out_features=layer.out_features // SMOKE_DIVISOR)
        else:  # the SGD step over the scaled layers' parameters
            layer = replace(layer, in_features=sum(math.prod(s) for s in parameter_shapes(layers)))
        layers.append(layer)
    return layers


def layer_modes(layer: cost.StudyLayer) -> tuple[str, ...]:
    """The SGD step has no forward/backward split: "full" only."""
    return ("full",) if layer.kind == "sgd" else LAYER_MODES


def _layer_cases(layers: list[cost.StudyLayer], batches, dtypes, layouts,
                 providers: Callable[[str, str], tuple[str, ...]]) -> list[LayerCase]:
    """Cases of ``layers`` over batches x dtypes x layouts (spatial layers; the others get ""), with
    providers(dtype, layout)."""
    shapes = parameter_shapes(layers)
    return [LayerCase(layer, batch, dtype, layout, providers(dtype, layout), layer_modes(layer),
                      shapes if layer.kind == "sgd" else ())
            for layer in layers for batch in batches for dtype in dtypes
            for layout in (layouts if layer.kind in SPATIAL_KINDS else ("",))]


def layer_plan(quick: bool = False) -> list[LayerCase]:
    """The per-layer study (GPU), its ``quick`` subset, or the smoke test's (CPU)."""
    batch, dtype, layout = (HEADLINE["batch"],), (HEADLINE["dtype"],), (HEADLINE["layout"],)
    if smoke():
        return [case for variant in VARIANTS for case in _layer_cases(
            smoke_layers(variant), (SMOKE_BATCH,), ("fp32-ieee",), tuple(LAYOUTS), lambda *_: PROVIDERS)]
    if quick:
        return _layer_cases(cost.study_layers(SWEEP_VARIANT), batch, dtype, layout, lambda *_: PROVIDERS)

    def with_compile(dtype_name: str, layout_name: str) -> tuple[str, ...]:
        return PROVIDERS if dtype_name in COMPILE_DTYPES and layout_name in ("", HEADLINE["layout"]) else PROVIDERS[:2]

    cases = []
    for variant in VARIANTS:
        layers = cost.study_layers(variant)
        cases += _layer_cases(layers, batch, tuple(DTYPES), tuple(LAYOUTS),
                              with_compile if variant == SWEEP_VARIANT else lambda *_: PROVIDERS[:2])
    swept = [layer for layer in cost.study_layers(SWEEP_VARIANT) if layer.kind != "sgd"]  # SGD has no batch
    return cases + _layer_cases(swept, BATCH_SWEEP, dtype, layout, lambda *_: PROVIDERS[:2])


def model_plan(quick: bool = False) -> list[ModelCase]:
    """The whole-network study (GPU), its ``quick`` subset, or the smoke test's (CPU)."""
    batch, dtype, layout = HEADLINE["batch"], HEADLINE["dtype"], HEADLINE["layout"]
    if smoke():
        return [ModelCase(v, SMOKE_BATCH, "fp32-ieee", layout, PROVIDERS, MODEL_MODES, SMOKE_MODEL[v])
                for v in VARIANTS for layout in LAYOUTS]
    if quick:
        return [ModelCase(SWEEP_VARIANT, batch, dtype, layout, PROVIDERS, MODEL_MODES)]
    other_layout = next(name for name in LAYOUTS if name != layout)
    cases = [ModelCase(v, batch, d, layout, PROVIDERS if v == SWEEP_VARIANT and d in COMPILE_DTYPES else PROVIDERS[:2],
                       MODEL_MODES) for v in VARIANTS for d in DTYPES]
    cases += [ModelCase(v, batch, dtype, other_layout, PROVIDERS[:2], MODEL_MODES) for v in VARIANTS]
    return cases + [ModelCase(SWEEP_VARIANT, b, dtype, layout, PROVIDERS[:2], MODEL_MODES) for b in BATCH_SWEEP]


def study_steps() -> dict[str, list]:
    """The GPU study's benchmark steps at the headline conditions of the paper's net (smoke: its smoke plan's
    batch, dtype and shapes), in order: "network" (inference and training step, all providers), "conv" (each conv's
    forward, input and weight gradient, triton and eager), "conv-compile" (the same, torch.compile), "blocks"
    (LRN + pool blocks, pool, fc layers: forward and backward, triton and eager), "rest" (the other cases of
    ``model_plan`` and ``layer_plan``, the network first)."""
    headline = dict(HEADLINE, dtype="fp32-ieee", batch=SMOKE_BATCH) if smoke() else HEADLINE
    batch, dtype, layout = headline["batch"], headline["dtype"], headline["layout"]
    layers = smoke_layers(SWEEP_VARIANT) if smoke() else cost.study_layers(SWEEP_VARIANT)
    network = [ModelCase(SWEEP_VARIANT, batch, dtype, layout, PROVIDERS, MODEL_MODES,
                         SMOKE_MODEL[SWEEP_VARIANT] if smoke() else None)]

    def cases(kinds, providers, modes):
        return [LayerCase(layer, batch, dtype, layout if layer.kind in SPATIAL_KINDS else "", providers,
                          tuple(m for m in modes if m != "input-grad" or layer.needs_input_grad))
                for layer in layers if layer.kind in kinds]

    steps = dict(network=network, conv=cases(("conv",), PROVIDERS[:2], CONV_MODES),
                 **{"conv-compile": cases(("conv",), PROVIDERS[2:], CONV_MODES)},
                 blocks=cases(("lrn_pool", "pool", "linear"), PROVIDERS[:2], ("forward", "backward")))
    done = {(c.kernel, c.batch, c.dtype, c.layout) for step in steps.values() for c in step}
    steps["rest"] = [c for c in model_plan() + layer_plan() if (c.kernel, c.batch, c.dtype, c.layout) not in done]
    return steps


def select(cases: list, kernels=None, providers=None, modes=None, dtypes=None, layouts=None, batches=None) -> list:
    """The cases, and their providers and modes, matching every filter given: kernels are fnmatch patterns
    ("2012/conv*"); a layout filter keeps the non-spatial layers."""
    chosen = []
    for case in cases:
        if ((kernels and not any(fnmatch.fnmatch(case.kernel, k) for k in kernels))
                or (dtypes and case.dtype not in dtypes) or (batches and case.batch not in batches)
                or (layouts and case.layout and case.layout not in layouts)):
            continue
        case = replace(case, providers=tuple(p for p in case.providers if not providers or p in providers),
                       modes=tuple(m for m in case.modes if not modes or m in modes))
        if case.providers and case.modes:
            chosen.append(case)
    return chosen


def timings_in(cases: list) -> int:
    """Number of measurements (rows) the cases make."""
    return sum(len(case.providers) * len(case.modes) for case in cases)
