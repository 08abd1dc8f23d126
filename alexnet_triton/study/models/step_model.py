"""A modelled lower bound on one whole training step, kernel by kernel: a MODEL, not a measurement.

The launches are those of a real training step (``traffic.steady_state`` / ``traffic.training_step``: forward
with the loss, backward, the SGD update, momentum buffers already there), captured, not run
(``runtime.capture_launches``), with the ATen ops the step dispatches (``traffic``'s rule for which launch a
kernel). Each launch is attributed to the layer whose module ran it (forward hooks; in backward, a hook on each
module's output fires just before that module's backward runs), the loss ("cross-entropy") or the update
("sgd"). A new kernel is priced without a change here: memory-bound ones at once, GEMM-like ones once
``TRIP_COUNTS`` has its trip count and the inspection its main loop.

Two step dtypes (``STEP_DTYPES``), both channels_last at batch ``BATCH``: "bf16" (fp32 parameters, bf16 images, the
forward under ``torch.autocast`` to bf16: what ``train.py --amp bf16`` runs; the step after a first one, so that the
linear layers read the bf16 compute copies of their weights the update writes, ``precision.compute_copy``) and
"fp32-tf32" (fp32, TF32 dots); in both, conv1's images come in the space-to-depth form conv1 computes in, made by
train.py's loaders on the host (``AlexNet.take_images_in_depth_form``): conv1's forward makes no pass over them.
Each GPU of ``gpus.GPUS`` has its own capture: split-K slices for its SM count, and for each launch the configs its
shared memory lets it launch (``LaunchRecord.choices``: the pick rule's, or the fitting candidates). Two updates
(``UPDATES``, the column ``update``): "separate" (the SGD step one multi-tensor launch after backward) and "fused"
(``train.py --fused-update``: the linear layers' step in their weight-gradient kernels, ``optim.SGD.fuse_into``),
each beside its own roofline (the fused one without the gradient round trip of the fused parameters:
``roofline.fused_update_bytes``).

Per launch and launched config, in µs (cycles at ``loop_model.clock_hz``):
  memory_us   bytes / DRAM bandwidth. A Triton launch's bytes: each tensor it loads from plus each it stores
              to, at numel x element size, read from the kernel's source (``kernel_access``: an in-place update
              counts twice); an ATen op's: each distinct tensor it touches once (``traffic.distinct_bytes``).
              The launch's own traffic, so an intermediate one kernel writes and the next reads counts in both
              (not the layer's compulsory minimum); tile re-reads are taken as cache hits, masked-off lanes
              move nothing. A memory-bound Triton launch (no main loop below) of fewer programs than SMs streams
              through that many SMs, each at its share of the bandwidth (an assumption: one SM can pull more than
              its share, but far from all of it).
  issue_us, tensor_us   GEMM-like kernels (a ``TRIP_COUNTS`` entry and a main loop in the inspection table for
              the GPU's target and the step's dtype): ``loop_model.kernel_bound`` of the grid's programs (the
              launch's own grid callable), the trip count and the main loop's loop_instructions and
              issue_per_tensor, with wave quantisation. The loop row is the inspection's compilation of the
              same kernel and config for this layer's case, else the same layer of another variant or layout
              (torchvision's fc layers: the 2012 cases, same shapes), else any case: an approximation until the
              inspection compiles this one; ``loop_case`` names the case used.
  bound_us    the largest of those; bound_by names it. With several launchable configs (autotuned), the least
              among those with a main loop in the table (all of them when none has).
  host_us     the Python of a training step per Triton launch, measured on this CPU (``measured_host_us``:
              reports/host/host_cost.csv), or a given value (none for ATen ops: PyTorch's own dispatch is not
              modelled).
Kernels run one after another on one stream, so the modelled step is the sum of the bounds; batch / step is a
ceiling on images per second with the host out of the way (CUDA graphs). The "all" row of each layer x pass and
the "step" row carry the roofline of ``roofline.roofline_table`` (cost model: compulsory bytes, useful FLOPs)
beside the summed bounds; kernel rows leave it empty. Left out, each of which makes a real step longer:
prologues and epilogues, unhidden latency, launch gaps, and the host when it is slower than the GPU.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import pandas as pd
import torch
import triton
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ...architecture import VARIANTS
from ...kernels import runtime
from ..inspection import tables
from ..inspection.compilation import TARGETS
from ..measure import host_cost, kernel_access, traffic
from ..registries import layer_kinds
from ..registries.benchmark_cases import read_benchmarks
from ..registries.gpus import GPUS, gpu_named
from ..registries.providers import PROVIDERS, SUBJECT
from ..vocabulary import BACKWARD, FORWARD, FUSED_GRAPHED_STEP, GRAPHED_STEP, OPTIMIZER
from . import loop_model
from .roofline import roofline_table

BATCH = 128
LAYOUT = "channels_last"
UPDATES = ("separate", "fused")
STEP_DTYPES = {"bf16": dict(precision="ieee", autocast=torch.bfloat16),
               "fp32-tf32": dict(precision="tf32", autocast=None)}
FILE = "step_lower_bound.csv"
FIGURE = "step_lower_bound.png"
MODEL_LABEL = loop_model.MODEL_LABEL
COLUMNS = ["gpu", "target", "dtype", "variant", "update", "layer", "pass", "kernel", "source", "launches", "config",
           "configs", "warps", "programs", "iterations", "loop_instructions", "issue_per_tensor", "loop_case", "bytes",
           "memory_us", "issue_us", "tensor_us", "roofline_us", "bound_us", "bound_by", "host_us", "images_per_s",
           "measured_us"]


def _conv(pass_: str) -> Callable[[dict, dict], float]:
    return lambda args, meta: loop_model.iterations(pass_, args, meta)


# Main-loop trip count of one program of each GEMM-like kernel, from its launch arguments and config.
TRIP_COUNTS: dict[str, Callable[[dict, dict], float]] = {
    **{kernel: _conv(pass_) for kernel, pass_ in tables.CONV_PASSES.items()},
    "_linear_forward_kernel": lambda a, meta: triton.cdiv(a["K"], meta["BLOCK_K"]),  # y [M, N] reduces over K
    "_linear_input_grad_kernel": lambda a, meta: triton.cdiv(a["N"], meta["BLOCK_K"]),  # dx [M, K] over N
    "_linear_weight_grad_kernel": lambda a, meta: triton.cdiv(a["M"], meta["BLOCK_K"]),  # dw [N, K] over M
    "_linear_weight_grad_sgd_kernel": lambda a, meta: triton.cdiv(a["M"], meta["BLOCK_K"]),  # the same, fused step
}


# ----------------------------------------------------------------------------------------------------------------
# The captured step.

@dataclass(frozen=True)
class Choice:
    """A config a launch can run with, and its grid's program count."""

    config: str
    meta: dict
    warps: int
    programs: int


@dataclass
class StepLaunch:
    """One launch of the step: its pass, layer, "triton" or "aten", kernel (or op) name and bytes; for a Triton
    launch its ``@triton.jit`` function, scalar arguments and launchable configs."""

    phase: str
    layer: str
    source: str
    name: str
    bytes: int
    kernel: str = ""
    args: dict = field(default_factory=dict)
    choices: tuple[Choice, ...] = ()


class _StepRecorder(traffic._LaunchRecorder):
    """``traffic``'s recorder, keeping each launch's layer, scalar arguments and launchable configs."""

    def __init__(self, shared_limit: int):
        super().__init__("forward", [])
        self.layer, self.shared_limit, self.step = "", shared_limit, []

    def triton_launch(self, record: runtime.LaunchRecord) -> None:
        super().triton_launch(record)
        args = {k: v for k, v in record.args.items() if not traffic.tensors_in(v)}
        choices = tuple(Choice(runtime.config_name(c), dict(c.kwargs), c.num_warps,
                               math.prod(record.grid({**record.args, **c.kwargs})))
                        for c in record.choices(self.shared_limit))
        self._keep(self.launches[-1], kernel_access.launch_bytes(record.kernel, record.args),
                   kernel=record.kernel.fn.__name__, args=args, choices=choices)

    def _keep(self, launch: traffic.Launch, moved: int, **triton) -> None:
        self.step.append(StepLaunch(self.phase, self.layer, launch.source, launch.name, moved, **triton))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        seen = len(self.launches)
        result = super().__torch_dispatch__(func, types, args, kwargs)
        if func.namespace == "aten":  # not a custom op, whose Triton launches are captured one by one
            for launch in self.launches[seen:]:
                if launch.source == "aten":  # not those the op launched
                    self._keep(launch, launch.bytes)
        return result


def layer_names(model: torch.nn.Module, variant: str) -> dict[torch.nn.Module, str]:
    """The cost model's layer name (``layer_kinds.study_layers``: conv1, lrn-pool1, pool5, fc6, ...) of each module of
    the Triton network, in order; a standalone dropout is "dropout-<the layer after it>"."""
    names = iter(s.name for s in layer_kinds.study_layers(variant) if s.kind not in ("cross_entropy", "sgd"))
    modules = [*model.features, *model.classifier]
    named = {m: next(names) for m in modules if not isinstance(m, torch.nn.Dropout)}
    return {m: named.get(m) or f"dropout-{named[modules[i + 1]]}" for i, m in enumerate(modules)}


def capture_step(variant: str, dtype: str, gpu: str, batch: int = BATCH, update: str = "separate",
                 **scaled) -> list[StepLaunch]:
    """Every launch of one training step of the Triton network (``scaled``: width / input_size / num_classes of a
    scaled-down copy, tests), channels_last, as a ``gpu`` would launch it, with the SGD step ``update``
    ("separate" or "fused", ``UPDATES``)."""
    options, machine = STEP_DTYPES[dtype], GPUS[gpu]
    spec = PROVIDERS[SUBJECT]
    model, optimizer, images, target = traffic.steady_state(
        spec, variant, batch, precision=options["precision"], memory_format=torch.channels_last,
        image_dtype=options["autocast"] or torch.float32, **scaled)
    if update == "fused":
        optimizer.fuse_into(model)
    if options["autocast"]:  # a first step, not recorded: the fc weights' compute copies, asked for and written
        def first_phase(name: str):
            return torch.autocast("cpu", dtype=options["autocast"]) if name == "forward" else contextlib.nullcontext()
        with runtime.target(machine.sms), runtime.capture_launches(lambda record: None):
            traffic.training_step(spec, model, optimizer, images, target, first_phase)
        optimizer.zero_grad(set_to_none=True)  # (the recorded backward writes the gradients, as a step's does)
    recorder = _StepRecorder(TARGETS[machine.target].shared_per_block)

    def enter(module, args, name):
        recorder.layer = name

    def leave(module, args, output, name):
        output.register_hook(lambda grad: setattr(recorder, "layer", name))

    hooks = [h for module, name in layer_names(model, variant).items()
             for h in (module.register_forward_pre_hook(lambda m, a, name=name: enter(m, a, name)),
                       module.register_forward_hook(lambda m, a, o, name=name: leave(m, a, o, name)))]
    hooks.append(model.register_forward_hook(lambda *_: setattr(recorder, "layer", "cross-entropy")))

    @contextlib.contextmanager
    def phase(name: str):
        recorder.phase, recorder.layer = name, {"backward": "cross-entropy", "optimizer": "sgd"}.get(name, "")
        autocast = options["autocast"] if name == "forward" else None
        with torch.autocast("cpu", dtype=autocast) if autocast else contextlib.nullcontext():
            yield

    try:
        with runtime.target(machine.sms), runtime.capture_launches(recorder.triton_launch), recorder:
            traffic.training_step(spec, model, optimizer, images, target, phase)
    finally:
        for hook in hooks:
            hook.remove()
    return recorder.step


# ----------------------------------------------------------------------------------------------------------------
# Pricing.

def loop_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The inspection table's compilations with a main loop, one row per case (variant, layer, dtype, layout)."""
    return tables.rows_per_case(table) if tables.has_main_loops(table) else pd.DataFrame(
        columns=["kernel", "config", "target", "variant", "layer", "dtype", "layout"])


def loop_row(loops: pd.DataFrame, kernel: str, config: str, target: str, dtype: str, variant: str,
             layer: str) -> dict | None:
    """The main loop of ``kernel`` at ``config`` on ``target`` for ``dtype``: this case's, else the same layer's
    in another variant or layout, else any case's (module docstring); the least issue_per_tensor among equals.
    None without one."""
    rows = loops[(loops.kernel == kernel) & (loops.config == config) & (loops.target == target)
                 & (loops.dtype == dtype)]
    if rows.empty:
        return None
    rows = rows.assign(rank=-(2 * ((rows.variant == variant) & (rows.layer == layer)) + (rows.layer == layer)
                              + (rows.layout == LAYOUT) / 2))
    return rows.sort_values(["rank", "issue_per_tensor"]).iloc[0].to_dict()


def price_choice(launch: StepLaunch, choice: Choice, gpu: str, dtype: str, variant: str,
                 loops: pd.DataFrame) -> dict:
    """The modelled bound (module docstring) of ``launch`` at one config on ``gpu``."""
    machine = GPUS[gpu]
    memory_us = launch.bytes / (machine.bandwidth * 1e12) * 1e6
    row = dict(config=choice.config, warps=choice.warps, programs=choice.programs, memory_us=memory_us,
               bound_us=memory_us, bound_by="memory")
    trips = TRIP_COUNTS.get(launch.kernel)
    loop = loop_row(loops, launch.kernel, choice.config, machine.target, dtype, variant, launch.layer) \
        if trips else None
    if loop is None:
        streamed_us = memory_us / min(1.0, choice.programs / machine.sms)
        return dict(row, memory_us=streamed_us, bound_us=streamed_us)
    occupancy = loop.get("occupancy")
    resident = max(1, round(float(occupancy) * loop_model.WARP_SLOTS / choice.warps)) if pd.notna(occupancy) else 1
    iterations = trips(launch.args, choice.meta)
    bound = loop_model.kernel_bound(programs=choice.programs, iterations=iterations,
                                    loop_instructions=float(loop["loop_instructions"]),
                                    issue_per_tensor=float(loop["issue_per_tensor"]), warps=choice.warps,
                                    resident=resident, sms=machine.sms, clock=loop_model.clock_hz(gpu),
                                    roofline_us=memory_us)
    return dict(row, iterations=iterations, loop_instructions=float(loop["loop_instructions"]),
                issue_per_tensor=float(loop["issue_per_tensor"]),
                loop_case=f"{loop['variant']}/{loop['layer']}/{loop['dtype']}/{loop['layout']}",
                issue_us=bound["issue_us"], tensor_us=bound["tensor_us"], bound_us=bound["bound_us"],
                bound_by="memory" if bound["bound_by"] == "roofline" else bound["bound_by"])


def price_launch(launch: StepLaunch, gpu: str, dtype: str, variant: str, loops: pd.DataFrame,
                 host_us: float) -> dict:
    """One launch's row: its least bound over its launchable configs (configs counts them), host_us."""
    machine = GPUS[gpu]
    base = dict(gpu=gpu, target=machine.target, dtype=dtype, variant=variant, layer=launch.layer,
                kernel=launch.name, source=launch.source, launches=1, bytes=launch.bytes,
                configs=len(launch.choices), host_us=host_us if launch.source == "triton" else float("nan"),
                **{"pass": launch.phase})
    if not launch.choices:  # an ATen op
        memory_us = launch.bytes / (GPUS[gpu].bandwidth * 1e12) * 1e6
        return dict(base, memory_us=memory_us, bound_us=memory_us, bound_by="memory")
    priced = [price_choice(launch, c, gpu, dtype, variant, loops) for c in launch.choices]
    looped = [r for r in priced if "issue_us" in r]  # a config the inspection did not read cannot win by that
    return dict(base, **min(looped or priced, key=lambda r: (r["bound_us"], r["config"])))


SUMMED = ["launches", "bytes", "memory_us", "issue_us", "tensor_us", "bound_us", "host_us"]


def step_table(launches: list[StepLaunch], gpu: str, dtype: str, variant: str, loops: pd.DataFrame,
               host_us: float, batch: int = BATCH, update: str = "separate") -> pd.DataFrame:
    """``COLUMNS`` rows of one captured step on ``gpu`` (``host_us`` per Triton launch) with the SGD step
    ``update``: one per distinct (layer, pass, kernel, config, grid) with its launches summed, one "all" row per
    layer x pass (the roofline of this update beside the summed bounds) and one "step" row (layer "step", pass
    "all"), whose images_per_s is batch / its bound."""
    rows = pd.DataFrame([price_launch(launch, gpu, dtype, variant, loops, host_us) for launch in launches])
    rows = rows.reindex(columns=COLUMNS).assign(update=update)
    keys = [c for c in COLUMNS if c not in SUMMED and c not in ("roofline_us", "images_per_s", "measured_us")]
    kernels = rows.groupby(keys, dropna=False, sort=False)[SUMMED].sum(min_count=1).reset_index()
    roofline = roofline_table(gpu, dtype, batch, fused_update=update == "fused").set_index(
        ["variant", "layer", "phase"]).time_ms * 1e3
    per_pass = kernels.groupby(["layer", "pass"], sort=False)[SUMMED].sum(min_count=1).reset_index()
    per_pass["roofline_us"] = [roofline.get((variant, r["layer"], BACKWARD if r["pass"] == OPTIMIZER else r["pass"]),
                                            0.0) for r in per_pass.to_dict("records")]
    step = per_pass[SUMMED + ["roofline_us"]].sum().to_frame().T.assign(layer="step", **{"pass": "all"})
    step["roofline_us"] = roofline[(variant, "step", "full")]
    step["images_per_s"] = batch / step.bound_us * 1e6
    common = dict(gpu=gpu, target=GPUS[gpu].target, dtype=dtype, variant=variant, update=update)
    summary = pd.concat([per_pass.assign(kernel="all"), step]).assign(**common)
    out = pd.concat([kernels, summary], ignore_index=True).reindex(columns=COLUMNS)
    for column in ("memory_us", "issue_us", "tensor_us", "roofline_us", "bound_us", "host_us"):
        out[column] = out[column].astype(float).round(2)
    out["images_per_s"] = out.images_per_s.astype(float).round(0)
    out["iterations"] = out.iterations.astype(float).round(2)
    return out


# The timed phase a modelled step stands beside, per update: the step replayed as one CUDA graph (the model's
# bound has no host term; ``host_us`` is the separate one).
MEASURED_PHASE = {"separate": GRAPHED_STEP, "fused": FUSED_GRAPHED_STEP}


def measured_step_us(benchmarks: pd.DataFrame | None, gpu: str, variant: str, dtype: str, update: str = "separate",
                     batch: int = BATCH) -> float:
    """The median ms_p50 (in µs) of the GPU rows of the Triton network on ``gpu`` (model.csv of
    ``experiments/gpu_study.py``) timing the step with this ``update`` graphed (``MEASURED_PHASE``); NaN without
    any."""
    if benchmarks is None or benchmarks.empty:
        return float("nan")
    rows = benchmarks[(benchmarks.run_kind == "gpu") & (benchmarks.provider == SUBJECT)
                      & (benchmarks.kernel == f"{variant}/model") & (benchmarks.phase == MEASURED_PHASE[update])
                      & (benchmarks.dtype == dtype) & (benchmarks.layout == LAYOUT) & (benchmarks.batch == batch)]
    rows = rows[rows.device.astype(str).map(gpu_named) == gpu]
    return float(rows.ms_p50.median()) * 1e3 if len(rows) else float("nan")


def lower_bound_table(inspection_table: pd.DataFrame, host_us: float, benchmarks: pd.DataFrame | None = None,
                      gpus: tuple[str, ...] = tuple(GPUS), dtypes: tuple[str, ...] = tuple(STEP_DTYPES),
                      variants: tuple[str, ...] = VARIANTS, updates: tuple[str, ...] = UPDATES) -> pd.DataFrame:
    """``step_table`` (``host_us`` per Triton launch) of every GPU x step dtype x variant x update at batch
    ``BATCH`` (one capture per variant, dtype, update and distinct ``gpus.GPUS`` entry), with each step row's
    measured_us from ``benchmarks`` where GPU rows exist (``measured_step_us``).
    Needs a process in the "gpu" execution mode (the launchers' GPU reduction orders)."""
    if runtime.INTERPRETER:
        raise RuntimeError("the step model captures the GPU path's launches: it needs ALEXNET_TRITON_MODE=gpu "
                           "and TRITON_INTERPRET unset before alexnet_triton is imported")
    loops, captures, tables = loop_rows(inspection_table), {}, []
    for gpu, dtype, variant, update in itertools.product(gpus, dtypes, variants, updates):
        key = (variant, dtype, update, GPUS[gpu].target, GPUS[gpu].sms)
        if key not in captures:
            captures[key] = capture_step(variant, dtype, gpu, update=update)
        table = step_table(captures[key], gpu, dtype, variant, loops, host_us, update=update)
        table.loc[table.layer == "step", "measured_us"] = measured_step_us(benchmarks, gpu, variant, dtype, update)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def step_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The "step" rows of a lower-bound table, with ratio = bound / roofline."""
    steps = table[table.layer == "step"]
    return steps.assign(ratio=steps.bound_us / steps.roofline_us)


def headline(table: pd.DataFrame, gpu: str = "h100-sxm", dtype: str = "bf16",
             update: str = "separate") -> dict[str, str]:
    """{variant: "modelled step X ms = Y x roofline, <= Z images/s (a model, not a measurement)"} on ``gpu``, with
    the SGD step ``update`` (its own roofline)."""
    steps = step_rows(table)
    steps = steps[(steps.gpu == gpu) & (steps.dtype == dtype) & (steps["update"] == update)]
    return {r["variant"]: f"modelled step {r['bound_us'] / 1e3:.2f} ms = {r['ratio']:.2f} x roofline, "
                          f"<= {r['images_per_s']:,.0f} images/s (a model, not a measurement)"
            for r in steps.to_dict("records")}


HATCHES = {FORWARD: "", BACKWARD: "//", OPTIMIZER: ".."}


def plot_step(table: pd.DataFrame, path: Path, gpu: str = "h100-sxm") -> Path:
    """Per variant x dtype on ``gpu``, with the separate SGD step: the roofline and the modelled bound, each a bar
    stacked from its layer x pass parts (colour: layer, hatch: pass) to the step, with the step's total and ratio
    above."""
    table = table[table["update"] == "separate"]
    rows = table[(table.gpu == gpu) & (table.kernel == "all")]
    steps = step_rows(table).query("gpu == @gpu").set_index(["variant", "dtype"])
    groups = list(steps.index)
    layers = list(dict.fromkeys(rows.layer))
    colours = {layer: matplotlib.colormaps["tab20"](i % 20) for i, layer in enumerate(layers)}
    fig = Figure(figsize=(2.6 * len(groups) + 3, 6.5), layout="constrained")
    ax = fig.subplots()
    for g, (variant, dtype) in enumerate(groups):
        parts = rows[(rows.variant == variant) & (rows.dtype == dtype)]
        for offset, column in ((-0.2, "roofline_us"), (0.2, "bound_us")):
            bottom = 0.0
            for part in parts.to_dict("records"):
                height = part[column] / 1e3
                ax.bar(g + offset, height, 0.36, bottom=bottom, color=colours[part["layer"]],
                       hatch=HATCHES[part["pass"]], edgecolor="white", linewidth=0.3, alpha=0.9)
                bottom += height
            step = steps.loc[(variant, dtype)]
            label = f"{step[column] / 1e3:.2f} ms" + (f"\n{step.ratio:.2f}x" if column == "bound_us" else "")
            ax.text(g + offset, bottom, label, ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(groups)), [f"{v} {d}\nroofline | model" for v, d in groups], fontsize=8)
    ax.set_ylabel("ms per training step (batch 128)")
    ax.margins(y=0.12)
    handles = [Patch(color=colours[layer], label=layer) for layer in layers]
    handles += [Patch(facecolor="white", edgecolor="grey", hatch=h, label=p) for p, h in HATCHES.items()]
    ax.legend(handles=handles, fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(f"One training step on {GPUS[gpu].name}, channels_last: roofline (cost model) vs the modelled "
                 f"bound of every launched kernel\n({MODEL_LABEL}; host time not included)", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def measured_host_us(reports: Path) -> float:
    """µs of Python per Triton launch in a training step, measured on this CPU: the mean of step_us_per_launch
    over the variants of reports/host/host_cost.csv (``experiments/host_cost.py``)."""
    path = Path(reports) / host_cost.REPORT
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (run experiments/host_cost.py, or give the host µs per launch)")
    return round(float(pd.read_csv(path).step_us_per_launch.mean()), 1)


def write_step_outputs(reports: Path, host_us: float | None = None) -> list[Path]:
    """reports/kernels/step_lower_bound.csv and .png from the committed inspection table and the GPU rows of
    reports/benchmarks/model.csv (if any), ``host_us`` per Triton launch (None: ``measured_host_us``); nothing
    without an inspection table with main loops."""
    folder = Path(reports) / "kernels"
    path = folder / "inspection.csv"
    if not path.is_file() or not tables.has_main_loops(table := pd.read_csv(path)):
        return []
    model = Path(reports) / "benchmarks" / "model.csv"
    benchmarks = read_benchmarks(model) if model.is_file() else None
    steps = lower_bound_table(table, measured_host_us(reports) if host_us is None else host_us, benchmarks)
    steps.to_csv(folder / FILE, index=False)
    return [folder / FILE, plot_step(steps, folder / FIGURE)]


def read_step_table(reports: Path) -> pd.DataFrame | None:
    """reports/kernels/step_lower_bound.csv, or None (one written before the update column: all "separate")."""
    path = Path(reports) / "kernels" / FILE
    if not path.is_file():
        return None
    table = pd.read_csv(path, dtype={"variant": str})
    if "update" not in table:
        table.insert(table.columns.get_loc("variant") + 1, "update", "separate")
    return table


def headline_lines(table: pd.DataFrame, gpu: str = "h100-sxm") -> list[str]:
    """The report's headline paragraph: each variant and dtype's modelled step on ``gpu`` (and its twin with the
    fused update, where the table has it), and the host term."""
    steps = step_rows(table).query("gpu == @gpu")
    parts = [f"{variant} {dtype}: {text}" for dtype in dict.fromkeys(steps.dtype)
             for variant, text in headline(table, gpu, dtype).items()]
    roofline = steps.set_index(["variant", "dtype", "update"]).roofline_us / 1e3
    fused = [f"{variant} {dtype}: {text.replace('x roofline', 'x its roofline')} (the roofline lowered to "
             f"{roofline[variant, dtype, 'fused']:.2f} ms from {roofline[variant, dtype, 'separate']:.2f})"
             for dtype in dict.fromkeys(steps.dtype) for variant, text in headline(table, gpu, dtype, "fused").items()]
    host = steps[steps["update"] == "separate"].host_us.max() / 1e3
    triton = table[(table.source == "triton") & (table.gpu == gpu)]
    per_launch = (triton.host_us / triton.launches).max()
    return ["", f"Whole-step model ({GPUS[gpu].name}, batch {BATCH}, {LAYOUT}, every launched kernel priced from its "
            "machine code, grid and bytes; `kernels/step_lower_bound.csv`): " + "; ".join(parts) + "." +
            (" With the linear layers' SGD step fused into their weight-gradient kernels (`train.py --fused-update`: "
             "their gradients never written nor read back): " + "; ".join(fused) + "." if fused else "") +
            f" Without CUDA graphs the host adds up to {host:.2f} ms of Python per step ({per_launch:g} µs per "
            "Triton launch, measured on this CPU: `host/host_cost.csv`)."]


def report_lines(table: pd.DataFrame, gpu: str = "h100-sxm", dtype: str = "bf16") -> list[str]:
    """The report's step-model section: per variant and layer x pass on ``gpu`` in
    ``dtype``, the launched GEMM tiles with their issue/tensor, the summed bound, the roofline and their ratio, with
    the separate SGD step; then the step with the fused one (``UPDATES``), where the table has it."""
    rows = table[(table.gpu == gpu) & (table.dtype == dtype) & (table["update"] == "separate")]
    fused = table[(table.gpu == gpu) & (table.dtype == dtype) & (table["update"] == "fused")]
    lines = ["", f"### The whole training step, kernel by kernel: a modelled lower bound ({MODEL_LABEL})", "",
             "Every launch of one captured training step (forward with the loss, backward, SGD update; launches "
             "recorded, not run) priced on its own: GEMM-like kernels from their main loop in the inspection "
             "(issue and tensor-core cycles x programs of their own grid x trip count, with wave quantisation, "
             "at the launched config: the pick rule's, else the best fitting shipped one), every launch from the "
             "bytes its kernel loads and stores at DRAM bandwidth; kernels run one after another. The images "
             "come as train.py's loaders hand them out: in the step's dtype and, for conv1, in the "
             "space-to-depth form it computes in (made on the host; a model fed plain images adds conv1's "
             "memory-bound pass over them, one read and one write of the images). "
             "`alexnet_triton/study/models/step_model.py` (`experiments/step_model.py`); all GPUs and dtypes in "
             f"`kernels/{FILE}`. Roofline: `roofline.csv`'s layer x pass. {GPUS[gpu].name}, {dtype}, "
             f"{LAYOUT}, batch {BATCH}:", "",
             "| network | layer | pass | launches | launched GEMM tiles (issue/tensor) | bound µs | roofline µs | "
             "ratio |", "|---" * 8 + "|"]
    for (variant, layer, pass_), group in rows.groupby(["variant", "layer", "pass"], sort=False):
        if layer == "step":
            continue
        total = group[group.kernel == "all"].iloc[0]
        gemms = group[group.issue_per_tensor.notna()]
        tiles = "; ".join(f"{r['kernel']} {r['config']} ({r['issue_per_tensor']:.2f})"
                          for r in gemms.to_dict("records"))
        ratio = f"{total.bound_us / total.roofline_us:.2f}" if total.roofline_us else "–"
        lines.append(f"| {variant} | {layer} | {pass_} | {total.launches:g} | {tiles or '–'} | {total.bound_us:.1f} | "
                     f"{total.roofline_us:.1f} | {ratio} |")
    for step in step_rows(rows).to_dict("records"):
        lines.append(f"| {step['variant']} | **step** | all | {step['launches']:g} | | **{step['bound_us']:.0f}** | "
                     f"{step['roofline_us']:.0f} | {step['ratio']:.2f} |")
    for step in step_rows(fused).to_dict("records"):  # its own (lowered) roofline
        lines.append(f"| {step['variant']} | **step, SGD fused into the linear weight gradients** | all | "
                     f"{step['launches']:g} | | **{step['bound_us']:.0f}** | {step['roofline_us']:.0f} | "
                     f"{step['ratio']:.2f} |")
    return lines
