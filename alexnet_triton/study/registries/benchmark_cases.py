"""What the benchmarks measure: the table's columns, phases, dtypes, layouts, and the sweep as cases.

The sweep (``layer_plan``, ``model_plan``; counts and time estimate in ``experiments/gpu_study.py``):
  layers   every layer of both variants at the headline batch, every dtype x layout x phase, the providers timed in
           every case (``providers.every_case``: triton and eager); the batch sweep (BATCH_SWEEP) of the paper's net
           at the headline dtype and layout; the other providers (torch.compile: tens of seconds of max-autotune per
           compile) on the paper's net at the headline batch and layout, for COMPILE_DTYPES.
  network  both variants at the headline batch and layout, every dtype, the every-case providers (and the others
           on the paper's net for COMPILE_DTYPES); the other layout at the headline dtype; the batch sweep of the
           paper's net at the headline dtype and layout.
``quick``: the headline conditions only, on the paper's net, every provider. Without a GPU the plans are the smoke
test's: tiny scaled-down shapes (``smoke_layers``, SMOKE_MODEL), batch 2, fp32.
``study_steps``: the GPU study's headline-first order (experiments/gpu_study.py).
Providers and layer kinds come from their registries (``providers.PROVIDERS``, ``layer_kinds.KINDS``), read when
a plan is made.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch

from ...kernels import runtime
from ..vocabulary import CONV_PASSES, FUSED_GRAPHED_STEP, GRAPHED_STEP, INFERENCE, INPUT_GRAD, TRAIN_STEP, VARIANTS
from . import layer_kinds
from .layer_kinds import KINDS, Shrink
from .providers import PROVIDERS, SUBJECT, every_case

# The benchmark table's columns, in order (alexnet_triton/study/benchmarks/benchmark.py says what each holds).
COLUMNS = ["kernel", "provider", "phase", "shape", "batch", "dtype", "layout", "ms_p20", "ms_p50", "ms_p80",
           "tflops", "gbps", "images_per_s", "peak_memory_mb", "device", "torch", "triton", "cudnn", "timestamp",
           "run_kind", "compile_mode", "correctness"]
MODEL_PHASES = (INFERENCE, TRAIN_STEP)  # inference first: it then runs before gradients and momentum exist


@dataclass(frozen=True)
class StudyDtype:
    """A dtype case: the tensors' dtype, the Triton dots' precision ("ieee" or "tf32"; PyTorch's TF32 switches
    follow it), which of a GPU's peaks its GEMMs reach (a ``roofline.GPU`` field) and its marker in figures."""

    dtype: torch.dtype
    precision: str
    matrix_peak: str
    marker: str

    @property
    def element_size(self) -> int:
        return self.dtype.itemsize


DTYPES = {"fp32-ieee": StudyDtype(torch.float32, "ieee", "fp32", "o"),
          "fp32-tf32": StudyDtype(torch.float32, "tf32", "tf32", "s"),
          "fp16": StudyDtype(torch.float16, "ieee", "tensor16", "^"),
          "bf16": StudyDtype(torch.bfloat16, "ieee", "tensor16", "D")}
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}

HEADLINE = dict(batch=128, dtype="bf16", layout="channels_last")
BATCH_SWEEP = (1, 32, 64, 256)
COMPILE_DTYPES = ("bf16", "fp32-tf32")
SWEEP_VARIANT = "2012"
# Smoke shapes: channels and features / SMOKE_DIVISOR, maps / SMOKE_MAP_DIVISOR; the network is a scaled-down copy.
SMOKE_DIVISOR, SMOKE_MAP_DIVISOR, SMOKE_BATCH = 16, 4, 2
SMOKE_MODEL = {"2012": dict(width=1 / 16, input_size=67, num_classes=10),
               "torchvision": dict(width=1 / 16, input_size=63, num_classes=10)}
# The GPU study's steps after "network" (study_steps): the layer kinds each times, the phases, and whether the
# providers outside the every-case set get a step of their own right after it.
STUDY_STEPS = {"conv": (("conv",), CONV_PASSES, True),
               "blocks": (("lrn_pool", "pool", "linear"), ("forward", "backward"), False)}


def smoke() -> bool:
    """Whether this process runs the CPU smoke test (no GPU: Triton's interpreter)."""
    if not runtime.INTERPRETER and not torch.cuda.is_available():
        raise RuntimeError(f"benchmarks: {runtime.MODE_VARIABLE}=gpu but CUDA is not available")
    return runtime.INTERPRETER


@dataclass(frozen=True)
class LayerCase:
    """One layer at one batch, dtype and layout ("" for non-spatial layers), timed for each provider and phase on
    the same inputs. parameters: for an optimiser step, the shapes of the variant's weights and biases."""

    layer: layer_kinds.StudyLayer
    batch: int
    dtype: str
    layout: str
    providers: tuple[str, ...]
    phases: tuple[str, ...]
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
    phases: tuple[str, ...]
    scale: dict | None = field(default=None, hash=False)

    @property
    def kernel(self) -> str:
        return f"{self.variant}/model"


def parameter_shapes(layers: list[layer_kinds.StudyLayer]) -> tuple[tuple[int, ...], ...]:
    """Weight and bias shapes of the layers that have them, in network order."""
    return tuple(shape for layer in layers for shape in layer.parameter_shapes)


def smoke_layers(variant: str) -> list[layer_kinds.StudyLayer]:
    """``layer_kinds.study_layers(variant)`` shrunk for the interpreter by each kind's rule: channels and features /
    SMOKE_DIVISOR, maps / SMOKE_MAP_DIVISOR (each layer on its own: shapes do not chain)."""
    layers: list[layer_kinds.StudyLayer] = []
    for layer in layer_kinds.study_layers(variant):
        layers.append(KINDS[layer.kind].shrink(layer, Shrink(SMOKE_DIVISOR, SMOKE_MAP_DIVISOR, tuple(layers))))
    return layers


def _layer_cases(layers: list[layer_kinds.StudyLayer], batches, dtypes, layouts,
                 providers: Callable[[str, str], tuple[str, ...]]) -> list[LayerCase]:
    """Cases of ``layers`` over batches x dtypes x layouts (spatial layers; the others get ""), with
    providers(dtype, layout)."""
    shapes = parameter_shapes(layers)
    cases = []
    for layer in layers:
        kind = KINDS[layer.kind]
        for batch in batches:
            for dtype in dtypes:
                for layout in layouts if kind.spatial else ("",):
                    cases.append(LayerCase(layer, batch, dtype, layout, providers(dtype, layout), kind.phases,
                                           shapes if kind.step else ()))
    return cases


def layer_plan(quick: bool = False) -> list[LayerCase]:
    """The per-layer study (GPU), its ``quick`` subset, or the smoke test's (CPU)."""
    batch, dtype, layout = (HEADLINE["batch"],), (HEADLINE["dtype"],), (HEADLINE["layout"],)
    everyone, usual = tuple(PROVIDERS), every_case()
    if smoke():
        return [case for variant in VARIANTS for case in _layer_cases(
            smoke_layers(variant), (SMOKE_BATCH,), ("fp32-ieee",), tuple(LAYOUTS), lambda *_: everyone)]
    if quick:
        return _layer_cases(layer_kinds.study_layers(SWEEP_VARIANT), batch, dtype, layout, lambda *_: everyone)

    def headline_or_usual(dtype_name: str, layout_name: str) -> tuple[str, ...]:
        headline = dtype_name in COMPILE_DTYPES and layout_name in ("", HEADLINE["layout"])
        return everyone if headline else usual

    cases = []
    for variant in VARIANTS:
        layers = layer_kinds.study_layers(variant)
        cases += _layer_cases(layers, batch, tuple(DTYPES), tuple(LAYOUTS),
                              headline_or_usual if variant == SWEEP_VARIANT else lambda *_: usual)
    swept = [layer for layer in layer_kinds.study_layers(SWEEP_VARIANT) if KINDS[layer.kind].batched]
    return cases + _layer_cases(swept, BATCH_SWEEP, dtype, layout, lambda *_: usual)


def model_plan(quick: bool = False) -> list[ModelCase]:
    """The whole-network study (GPU), its ``quick`` subset, or the smoke test's (CPU)."""
    batch, dtype, layout = HEADLINE["batch"], HEADLINE["dtype"], HEADLINE["layout"]
    everyone, usual = tuple(PROVIDERS), every_case()
    if smoke():
        return [ModelCase(v, SMOKE_BATCH, "fp32-ieee", layout, everyone, MODEL_PHASES, SMOKE_MODEL[v])
                for v in VARIANTS for layout in LAYOUTS]
    if quick:
        return [ModelCase(SWEEP_VARIANT, batch, dtype, layout, everyone, MODEL_PHASES)]
    other_layout = next(name for name in LAYOUTS if name != layout)
    cases = [ModelCase(v, batch, d, layout, everyone if v == SWEEP_VARIANT and d in COMPILE_DTYPES else usual,
                       MODEL_PHASES) for v in VARIANTS for d in DTYPES]
    cases += [ModelCase(v, batch, dtype, other_layout, usual, MODEL_PHASES) for v in VARIANTS]
    return cases + [ModelCase(SWEEP_VARIANT, b, dtype, layout, usual, MODEL_PHASES) for b in BATCH_SWEEP]


def study_steps() -> dict[str, list]:
    """The GPU study's benchmark steps at the headline conditions of the paper's net (smoke: its smoke plan's
    batch, dtype and shapes), in order: "network" (inference and training step, every provider), then per
    STUDY_STEPS entry its layers timed by the every-case providers ("conv": each conv's forward, input and weight
    gradient; "blocks": LRN + pool blocks, pools, fc layers, forward and backward), "<step>-others" (the same by
    the other providers, e.g. torch.compile), "rest" (the other cases of ``model_plan`` and ``layer_plan``, the
    network first)."""
    headline = dict(HEADLINE, dtype="fp32-ieee", batch=SMOKE_BATCH) if smoke() else HEADLINE
    batch, dtype, layout = headline["batch"], headline["dtype"], headline["layout"]
    layers = smoke_layers(SWEEP_VARIANT) if smoke() else layer_kinds.study_layers(SWEEP_VARIANT)
    usual = every_case()
    others = tuple(p for p in PROVIDERS if p not in usual)
    network = [ModelCase(SWEEP_VARIANT, batch, dtype, layout, tuple(PROVIDERS), MODEL_PHASES,
                         SMOKE_MODEL[SWEEP_VARIANT] if smoke() else None)]
    if not smoke():  # (the smoke test has no GPU to capture on)
        # the GPU study's network only, by the providers that do not compile (torch.compile's max-autotune mode
        # replays graphs of its own, which do not nest in another capture)
        graphing = tuple(name for name, provider in PROVIDERS.items() if not provider.compiles)
        network.append(ModelCase(SWEEP_VARIANT, batch, dtype, layout, graphing, (GRAPHED_STEP,)))
        # the fused update (alexnet_triton.optim.SGD.fuse_into) exists on the Triton tree only
        network.append(ModelCase(SWEEP_VARIANT, batch, dtype, layout, (SUBJECT,), (FUSED_GRAPHED_STEP,)))
    steps: dict[str, list] = dict(network=network)

    def cases(kinds, providers, phases):
        return [LayerCase(layer, batch, dtype, layout if KINDS[layer.kind].spatial else "", providers,
                          tuple(p for p in phases if p != INPUT_GRAD or layer.needs_input_grad))
                for layer in layers if layer.kind in kinds]

    for name, (kinds, phases, with_others) in STUDY_STEPS.items():
        steps[name] = cases(kinds, usual, phases)
        if with_others and others:
            steps[f"{name}-others"] = cases(kinds, others, phases)
    done = {(c.kernel, c.batch, c.dtype, c.layout) for step in steps.values() for c in step}
    steps["rest"] = [c for c in model_plan() + layer_plan() if (c.kernel, c.batch, c.dtype, c.layout) not in done]
    return steps


def select(cases: list, kernels=None, providers=None, phases=None, dtypes=None, layouts=None, batches=None) -> list:
    """The cases, and their providers and phases, matching every filter given: kernels are fnmatch patterns
    ("2012/conv*"); a layout filter keeps the non-spatial layers."""
    chosen = []
    for case in cases:
        if ((kernels and not any(fnmatch.fnmatch(case.kernel, k) for k in kernels))
                or (dtypes and case.dtype not in dtypes) or (batches and case.batch not in batches)
                or (layouts and case.layout and case.layout not in layouts)):
            continue
        case = replace(case, providers=tuple(p for p in case.providers if not providers or p in providers),
                       phases=tuple(p for p in case.phases if not phases or p in phases))
        if case.providers and case.phases:
            chosen.append(case)
    return chosen


def timings_in(cases: list) -> int:
    """Number of measurements (rows) the cases make."""
    return sum(len(case.providers) * len(case.phases) for case in cases)


BENCHMARK_FILES = ("model.csv", "layers.csv")  # the harness's CSVs (``COLUMNS``): the network's, the layers'


def read_benchmarks(*paths: Path) -> pd.DataFrame:
    """The rows of one or more benchmark CSVs; the text columns keep empty cells as ""."""
    text = ("kernel", "provider", "phase", "shape", "dtype", "layout", "device", "torch", "triton", "cudnn",
            "timestamp", "run_kind", "compile_mode", "correctness")
    table = pd.concat([pd.read_csv(p, dtype=dict.fromkeys(text, str)) for p in paths], ignore_index=True)
    table = table.reindex(columns=COLUMNS)  # files written before a column existed leave it empty
    table[list(text)] = table[list(text)].astype(object).fillna("")  # a column added empty is float
    return table
