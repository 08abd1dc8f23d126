"""The benchmark harness: each AlexNet layer and the whole network, Triton vs PyTorch eager vs torch.compile.

One long-format table, one row per measurement, with the columns of ``COLUMNS``:
  kernel          "2012/conv1", ... (``layer_kinds.study_layers``), or "2012/model" for the whole network
  provider        a ``providers.PROVIDERS`` name: "triton" (this project's ops and ``optim.SGD``), "eager"
                  (PyTorch eager: cuDNN, cuBLAS, ``cudnn.benchmark`` on, ``torch.optim.SGD``), "compiled"
                  (``torch.compile`` of the eager code: Inductor; ``LAYER_COMPILE_MODE`` per layer,
                  ``MODEL_COMPILE_MODE`` for the network)
  phase           layers: "forward" (as in training: autograd records the graph), "backward" (autograd backward
                  alone, the graph kept: ``torch.autograd.grad(retain_graph=True)``), "full" (both; the SGD step
                  has only this phase), "input grad" / "weight grad" (the backward of a graph whose only input
                  needing a gradient is x / the weight and bias: one kernel each, cuDNN's dgrad / wgrad);
                  the network: "train-step" (forward, loss, backward, SGD), "inference", and in the GPU study
                  "train-step-graphed" (that step captured in one CUDA graph after warm-up steps and replayed:
                  alexnet_triton.graphs; not torch.compile's, whose max-autotune mode replays graphs of its own)
                  and, Triton only, "train-step-fused-graphed" (that graph with the fc layers' SGD step in their
                  weight-gradient kernels: ``optim.SGD.fuse_into``, train.py --fused-update)
  shape, batch    the input's shape ("128x96x55x55"; the SGD step: its parameter count) and the batch
  dtype           "fp32-ieee" (exact fp32 products: Triton precision="ieee", TF32 off in cuBLAS and cuDNN),
                  "fp32-tf32" (TF32 on both sides), "fp16", "bf16". For the network fp16/bf16 are mixed
                  precision as ``experiments/train.py --amp`` runs it: fp32 parameters, the forward under
                  ``torch.autocast`` on both backends (``alexnet_triton.precision``); no loss scaling. The SGD
                  step runs on fp32 parameters and state in every case, as that training keeps them
  layout          "nchw" or "channels_last" (the activations and the 4-D weights); empty for non-spatial layers
  ms_p20/50/80    quantiles of the time per call (GPU: ``triton.testing.do_bench``, L2 flushed before each call;
                  CUDA events around each call, so for tiny calls, e.g. batch 1, host-side launch work that
                  outlasts the GPU's shows in the time: that is the cost a user pays too)
  tflops          ``cost.flops`` / median time (the network: its full-size layers' sum; train-step counts
                  forward, backward and SGD, inference the forward without the loss)
  gbps            ``cost.minimum_bytes`` / median time: effective bandwidth against the minimum traffic (an
                  ideal fused kernel's), not the DRAM traffic measured
  images_per_s    batch / median time (empty for the SGD step)
  peak_memory_mb  ``torch.cuda.max_memory_allocated`` over one call, everything alive counted (inputs too)
  device, torch, triton, cudnn, timestamp   the conditions of the row
  run_kind        "gpu", or "cpu-smoke"
  compile_mode    providers that compile: the torch.compile mode the row ran with (a mode whose CUDA graphs failed
                  falls back to its no-cudagraphs twin; smoke: "aot_eager")
  correctness     the GPU study's correctness check of that kernel (``gpu_check``): "passed", "failed", or empty
                  (not checked)

Each layer computes what the model computes there (its ``layer_kinds.KINDS`` entry): conv + bias + ReLU, LRN +
max-pool (2012) or max-pool, fc with the model's ReLU and dropout (``architecture.linear_steps``), cross-entropy over
1000 classes, the SGD step (the paper's momentum and weight decay) over every parameter of the variant; every provider
gets the same seeded inputs.
fp16/bf16 leave PyTorch's reduced-precision-reduction settings at their defaults.

Without a GPU (``runtime.INTERPRETER``) the same code runs as a smoke test: tiny scaled-down shapes, the
Triton kernels in the interpreter, ``torch.compile(backend="aot_eager")``, a wall-clock timer over a few
repetitions; its rows say ``run_kind="cpu-smoke"`` and are not performance measurements. Empty cells
mean "not meaningful here" (no FLOPs for the whole scaled-down network, no CUDA memory statistics on a CPU).
"""

from __future__ import annotations

import contextlib
import csv
import gc
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch._functorch.config
import triton.testing
from tqdm import tqdm

from ... import graphs
from ...architecture import DROPOUT, INPUT_SIZES, NUM_CLASSES, SGD
from ...data import as_the_loaders_give
from ...precision import forward_context
from ..inspection.triton_internals import TRITON_PTXAS
from ..models import cost
from ..registries import layer_kinds
from ..registries.benchmark_cases import (
    COLUMNS,
    DTYPES,
    LAYOUTS,
    LayerCase,
    ModelCase,
    smoke,
    timings_in,
)
from ..registries.layer_kinds import GRADIENT_PHASES, KINDS
from ..registries.providers import PROVIDERS, Provider
from ..vocabulary import FUSED_GRAPHED_STEP, GRAPHED_STEP, INFERENCE, TRAIN_STEP

QUANTILES = (0.2, 0.5, 0.8)
SMOKE_DEVICE = ("CPU, Triton interpreter, torch.compile backend=aot_eager: smoke test, "
                "not a performance measurement")
# Layers: retain_graph backward and CUDA graphs (cudagraph trees) do not compose, and the other providers run
# without CUDA graphs too. The network's steps are ordinary training / inference loops: CUDA graphs included.
LAYER_COMPILE_MODE = "max-autotune-no-cudagraphs"
MODEL_COMPILE_MODE = "max-autotune"
COMPILE_FALLBACK = {"max-autotune": "max-autotune-no-cudagraphs", "reduce-overhead": "default"}
# Timing: WARMUP_CALLS untimed calls first: the first ones compile (Triton specialisations such as the SGD step's
# first-step variant, dynamo's recompile once optimizer state exists, autotuning, cuDNN's search). Then do_bench
# runs for max(MIN_REP_MS, MIN_SAMPLES x one call), at most MAX_REP_MS, so that slow calls still give samples.
WARMUP_CALLS = 3
MIN_REP_MS = {"layer": 100.0, "model": 500.0}
MAX_REP_MS = 5000.0
MIN_SAMPLES = 10
SMOKE_REPEATS = 5


def device() -> torch.device:
    return torch.device("cpu" if smoke() else "cuda")


# torch's inductor sets TRITON_PTXAS_PATH to the ptxas in torch's wheel (torch/bin/ptxas) when that file exists
# and the variable is unset: torch/_inductor/runtime/compile_tasks.py, _set_triton_ptxas_path(), called before
# each Triton compile of torch.compile's kernels (async_compile.py, in this process, and in its compile workers)
# and cached, so once torch.compile has run, every later Triton compile in the process would use torch's ptxas.
# This project's kernels always compile with Triton's own: the variable is set around their launches only.
@contextlib.contextmanager
def triton_ptxas():
    """Within the block, Triton compiles with the ptxas bundled with Triton (whatever torch.compile set)."""
    saved = os.environ.get("TRITON_PTXAS_PATH")
    os.environ["TRITON_PTXAS_PATH"] = str(TRITON_PTXAS)
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TRITON_PTXAS_PATH"]
        else:
            os.environ["TRITON_PTXAS_PATH"] = saved


@dataclass(frozen=True)
class Conditions:
    """The columns every row of this process shares."""

    device: str
    torch: str
    triton: str
    cudnn: str
    run_kind: str


def conditions() -> Conditions:
    if smoke():
        return Conditions(SMOKE_DEVICE, torch.__version__, triton.__version__, "", "cpu-smoke")
    major, minor = torch.cuda.get_device_capability()
    return Conditions(f"{torch.cuda.get_device_name()} (sm_{major}{minor})", torch.__version__, triton.__version__,
                      str(torch.backends.cudnn.version() or ""), "gpu")


@contextlib.contextmanager
def numeric_settings(dtype: str):
    """cuDNN autotuning on, TF32 in cuBLAS and cuDNN exactly when the dtype case's Triton dots use it; restored
    after. Set as ``torch.backends.cudnn.flags`` sets them, so that it also works after something in the process
    imported PyTorch's test suite, which freezes plain assignments of cuDNN flags (``disable_global_flags``)."""
    backends = torch.backends
    with backends.__allow_nonbracketed_mutation():
        saved = backends.cudnn.benchmark, backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32
        backends.cudnn.benchmark = True
        backends.cuda.matmul.allow_tf32 = backends.cudnn.allow_tf32 = DTYPES[dtype].precision == "tf32"
    try:
        yield
    finally:
        with backends.__allow_nonbracketed_mutation():
            backends.cudnn.benchmark, backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32 = saved


@dataclass(frozen=True)
class Timing:
    """Quantiles of the time per call (ms) and the CUDA peak memory of one call (MiB; None on the CPU)."""

    p20: float
    p50: float
    p80: float
    peak_memory_mb: float | None


def measure(fn: Callable[[], object], scope: str) -> Timing:
    """Time ``fn`` after WARMUP_CALLS calls (compilation, autotuning and cuDNN's algorithm search are not timed).

    GPU: peak memory of one call, then ``triton.testing.do_bench`` (warm-up, L2 flushed before each call) for at
    least MIN_REP_MS[scope] and MIN_SAMPLES calls, at most MAX_REP_MS. Smoke: SMOKE_REPEATS wall-clock calls.
    """
    for _ in range(WARMUP_CALLS):
        fn()
    if smoke():
        times = []
        for _ in range(SMOKE_REPEATS):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return Timing(*np.quantile(times, QUANTILES).tolist(), None)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    once_ms = (time.perf_counter() - start) * 1e3
    peak = torch.cuda.max_memory_allocated() / 2**20
    rep = min(MAX_REP_MS, max(MIN_REP_MS[scope], MIN_SAMPLES * once_ms))
    p20, p50, p80 = triton.testing.do_bench(fn, warmup=25, rep=rep, quantiles=list(QUANTILES))
    return Timing(p20, p50, p80, peak)


# ------------------------------------------------------------------------------------------------ layers
def layer_inputs(case: LayerCase, dtype: torch.dtype, gen: torch.Generator) -> tuple[list[torch.Tensor], list[bool]]:
    """The layer's input tensors (random, on the benchmark device, in the case's layout) and which need a grad."""
    memory_format = LAYOUTS.get(case.layout, torch.contiguous_format)
    return KINDS[case.layer.kind].inputs(case.layer, case.batch, dtype, gen, memory_format)


def _layer_function(case: LayerCase, provider: Provider, compile_mode: str) -> Callable:
    """What ``provider`` runs for the case's layer: its backend's function of the layer's tensors."""
    functions = KINDS[case.layer.kind].functions(case.layer, DTYPES[case.dtype].precision)
    return provider.wrap(functions[provider.backend], compile_mode)


def _phase_functions(fn: Callable, inputs: list[torch.Tensor],
                     phases: tuple[str, ...]) -> Iterable[tuple[str, Callable]]:
    """(phase, callable to time) for each phase, after a warm-up of the forward and both kinds of backward.

    The backward keeps the graph of one forward and recomputes the gradient of a fixed random output gradient.
    The warm-up runs a retain_graph backward first: torch.compile builds its backward at the first one.
    """
    wrt = [t for t in inputs if t.requires_grad]
    y = fn(*inputs)
    dy = torch.empty_like(y).normal_(generator=torch.Generator(y.device).manual_seed(1))
    torch.autograd.grad(y, wrt, dy, retain_graph=True)
    torch.autograd.grad(fn(*inputs), wrt, dy)
    del y
    for phase in phases:
        if phase == "forward":
            yield phase, lambda: fn(*inputs)
        elif phase == "full":
            yield phase, lambda: torch.autograd.grad(fn(*inputs), wrt, dy)
        else:
            y = fn(*inputs)
            yield phase, lambda y=y: torch.autograd.grad(y, wrt, dy, retain_graph=True)
            del y


def _layer_timings(case: LayerCase, provider: Provider, compile_mode: str) -> Iterable[tuple[str, Timing]]:
    kind = KINDS[case.layer.kind]
    dtype = kind.dtype_for(DTYPES[case.dtype].dtype)
    gen = torch.Generator(device()).manual_seed(0)  # the same inputs for every provider
    if kind.step is not None:
        step = kind.step(case.layer, provider.optimizer, dtype, gen, case.parameters)
        yield "full", measure(provider.wrap(lambda: step(), compile_mode, fullgraph=False), "layer")
        return
    fn = _layer_function(case, provider, compile_mode)
    tensors, needs_grad = layer_inputs(case, dtype, gen)
    inputs = [t.requires_grad_(need) for t, need in zip(tensors, needs_grad, strict=True)]
    autograd_phases = tuple(p for p in case.phases if p not in GRADIENT_PHASES)
    if autograd_phases:
        for phase, timed in _phase_functions(fn, inputs, autograd_phases):
            yield phase, measure(timed, "layer")
    for phase in case.phases:
        if phase in GRADIENT_PHASES:  # a graph of its own: only these inputs need a gradient
            wrt = [t.detach().requires_grad_(i in GRADIENT_PHASES[phase]) for i, t in enumerate(tensors)]
            for _, timed in _phase_functions(fn, wrt, ("backward",)):
                yield phase, measure(timed, "layer")


def layer_shape(case: LayerCase) -> str:
    """The case's input shape as the table writes it ("128x96x55x55")."""
    return KINDS[case.layer.kind].shape(case.layer, case.batch)


def _layer_metrics(case: LayerCase, phase: str, seconds: float) -> dict:
    layer, kind = case.layer, KINDS[case.layer.kind]
    element_size = kind.dtype_for(DTYPES[case.dtype].dtype).itemsize
    if phase in GRADIENT_PHASES:
        flops, traffic = kind.gradient_cost(layer, phase, case.batch, element_size)
    else:
        flops = cost.flops(layer, phase, case.batch)
        traffic = cost.minimum_bytes(layer, phase, case.batch, element_size)
    return dict(shape=layer_shape(case), tflops=flops / seconds / 1e12 if flops else None,
                gbps=traffic / seconds / 1e9 if traffic else None,
                images_per_s=case.batch / seconds if kind.batched else None)


# ------------------------------------------------------------------------------------------------ network
def _model_functions(case: ModelCase, provider: Provider, compile_mode: str) -> Iterable[tuple[str, Callable]]:
    """(phase, step) for each phase: the network built for ``provider``, on the same random images and labels,
    given as train.py's loaders give them (made before the timing): in the study dtype, and where the network's
    conv1 computes in a space-to-depth form (the Triton one, channels_last, not exact fp32) in that form."""
    study_dtype = DTYPES[case.dtype]
    scale = case.scale or dict(num_classes=NUM_CLASSES)
    torch.manual_seed(0)
    dev = device()
    with dev:  # parameters created and initialised on the device
        model = provider.network(case.variant, dropout=DROPOUT, precision=study_dtype.precision, **scale)
    model.to(memory_format=LAYOUTS[case.layout])
    gen = torch.Generator(dev).manual_seed(0)
    images = torch.randn(case.batch, 3, model.input_size, model.input_size, generator=gen, device=dev)
    images = as_the_loaders_give(model, images.to(study_dtype.dtype, memory_format=LAYOUTS[case.layout]))
    labels = torch.randint(scale["num_classes"], (case.batch,), generator=gen, device=dev)

    def logits(x):  # mixed precision as train.py runs it (alexnet_triton.precision)
        with forward_context(dev.type, study_dtype.dtype):
            return model(x)

    def loss(x, t):
        return provider.loss(logits(x), t)

    logits_fn, loss_fn = provider.wrap(logits, compile_mode), provider.wrap(loss, compile_mode)
    optimizer = provider.optimizer(model.parameters(), **SGD)

    def inference():
        with torch.no_grad():
            logits_fn(images)

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(images, labels).backward()
        optimizer.step()

    for phase in case.phases:
        model.train(phase != INFERENCE)
        if phase == FUSED_GRAPHED_STEP:  # for good: the model's fc layers then step themselves (the last phase)
            optimizer.fuse_into(model)
        yield phase, (inference if phase == INFERENCE else
                      graphs.capture(train_step) if phase in (GRAPHED_STEP, FUSED_GRAPHED_STEP) else train_step)


def _model_timings(case: ModelCase, provider: Provider, compile_mode: str) -> Iterable[tuple[str, Timing]]:
    for phase, step in _model_functions(case, provider, compile_mode):
        yield phase, measure(step, "model")


def _model_metrics(case: ModelCase, phase: str, seconds: float) -> dict:
    """images/s; TFLOP/s from the cost model's layers (full-size net only)."""
    size = case.scale["input_size"] if case.scale else INPUT_SIZES[case.variant]
    tflops = None
    if case.scale is None:
        layers = layer_kinds.study_layers(case.variant)
        training = phase in (TRAIN_STEP, GRAPHED_STEP, FUSED_GRAPHED_STEP)
        flops = (sum(cost.flops(layer, "full", case.batch) for layer in layers) if training else
                 sum(cost.flops(layer, "forward", case.batch) for layer in layers if KINDS[layer.kind].inference))
        tflops = flops / seconds / 1e12
    return dict(shape=f"{case.batch}x3x{size}x{size}", tflops=tflops, gbps=None, images_per_s=case.batch / seconds)


# ------------------------------------------------------------------------------------------------ running
def _format(value) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


@dataclass
class Unmeasured:
    """What ``run`` could not measure: failures (provider errors) and timings skipped at the deadline."""

    failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def run(cases: list, csv_path: Path, progress: bool = True, *, deadline: float | None = None, append: bool = False,
        compile_mode: str | None = None, correctness: Callable[[str], str] = lambda kernel: "") -> Unmeasured:
    """Time every case's providers and modes; write the rows to ``csv_path`` as they come (appended to it when
    ``append``, else a new file).

    deadline: a ``time.perf_counter()`` value; a timing that would start after it is skipped and listed.
    compile_mode: torch.compile's mode for every case (default: LAYER_ / MODEL_COMPILE_MODE); a failing mode with
    a COMPILE_FALLBACK is retried once in it. correctness: the check's status of a kernel, for its rows.
    A failing provider (out of memory, a compile error) is reported and skipped.
    """
    env = conditions()
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    outcome = Unmeasured()
    bar = tqdm(total=timings_in(cases), unit="timing", disable=not progress)
    header = not (append and csv_path.is_file() and csv_path.stat().st_size)
    with open(csv_path, "a" if append else "w", newline="") as f, bar:
        writer = csv.DictWriter(f, COLUMNS)
        if header:
            writer.writeheader()
        for case in cases:
            is_layer = isinstance(case, LayerCase)
            describe = f"{case.kernel} batch {case.batch} {case.dtype} {case.layout}".strip()
            for provider in case.providers:
                mode_used = compile_mode or (LAYER_COMPILE_MODE if is_layer else MODEL_COMPILE_MODE)
                compiles = PROVIDERS[provider].compiles
                written: list[str] = []
                while True:
                    error = _time_provider(case, provider, mode_used, writer, f, bar, written, deadline,
                                           dict(**vars(env), correctness=correctness(case.kernel)))
                    fallback = COMPILE_FALLBACK.get(mode_used) if compiles and not smoke() else None
                    if error is None or written or fallback is None:
                        break
                    print(f"benchmark: {describe} compile mode {mode_used} failed ({error}); retrying in {fallback}",
                          file=sys.stderr)
                    mode_used = fallback
                if error is not None:
                    outcome.failures.append(f"{describe} {provider}: {error}")
                    print(f"benchmark failed: {outcome.failures[-1]}", file=sys.stderr)
                elif len(written) < len(case.phases):
                    outcome.skipped += [f"{describe} {provider} {p}" for p in case.phases if p not in written]
                bar.update(len(case.phases) - len(written))
    return outcome


def _time_provider(case, name: str, compile_mode: str, writer: csv.DictWriter, f, bar, written: list[str],
                   deadline: float | None, columns: dict) -> str | None:
    """Time one provider's phases of ``case`` into ``writer`` (appending each phase to ``written``) until the
    deadline; returns the error that stopped it, if any."""
    if deadline is not None and time.perf_counter() >= deadline:
        return None
    is_layer = isinstance(case, LayerCase)
    bar.set_description(f"{case.kernel} {name} b{case.batch} {case.dtype} {case.layout}".strip())
    provider = PROVIDERS[name]
    timings = (_layer_timings if is_layer else _model_timings)(case, provider, compile_mode)
    # compiled backwards that donate saved buffers refuse the layers' retain_graph backward
    donation = torch._functorch.config.patch(donated_buffer=False) if is_layer else contextlib.nullcontext()
    ptxas = triton_ptxas() if provider.backend == "triton" else contextlib.nullcontext()
    used = ("aot_eager" if smoke() else compile_mode) if provider.compiles else ""
    try:
        with numeric_settings(case.dtype), donation, ptxas:
            for phase, timing in timings:
                metrics = (_layer_metrics if is_layer else _model_metrics)(case, phase, timing.p50 / 1e3)
                writer.writerow({k: _format(v) for k, v in dict(
                    kernel=case.kernel, provider=name, phase=phase, batch=case.batch, dtype=case.dtype,
                    layout=case.layout, ms_p20=timing.p20, ms_p50=timing.p50, ms_p80=timing.p80,
                    peak_memory_mb=timing.peak_memory_mb, **metrics, **columns, compile_mode=used,
                    timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds")).items()})
                f.flush()
                bar.update()
                written.append(phase)
                if deadline is not None and time.perf_counter() >= deadline:
                    break
    except Exception as error:  # noqa: BLE001  (one failing measurement must not end the study)
        traceback.print_exc(limit=-4)
        return f"{type(error).__name__}: {error}"
    finally:
        del timings
        torch._dynamo.reset()
        gc.collect()
        if not smoke():
            torch.cuda.empty_cache()
    return None
