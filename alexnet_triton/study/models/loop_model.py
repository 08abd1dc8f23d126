"""A modelled lower bound on each conv kernel's time, from its own machine code: a MODEL, not a measurement.

For each AlexNet conv layer x pass (forward, input grad, weight grad) at batch 128, one dtype and layout (the
report: bf16, channels_last) and one GPU (the report: H100 SXM), each shipped config the inspection compiled is
priced, and the least bound kept (the autotuner launches one of them): one launch of a config takes at least the
largest of three terms:

  roofline   max(FLOPs / tensor peak, minimum bytes / DRAM bandwidth): ``cost.flops`` and
             ``cost.minimum_bytes`` of the layer's forward; for the two gradients the benchmark's own per-phase
             cost (the conv kind's ``gradient_cost``: one GEMM the forward's size; dy, the ReLU output y, w or x ->
             dx or dw, db), so that a measured "input grad" / "weight grad" time (which also runs the
             ReLU-mask / bias-grad pass) stands against the same work. Peaks and bandwidth: ``gpus.GPUS``.
  issue      the schedulers' work: the busiest SM runs ceil(programs / SMs) programs, each of ``iterations``
             main-loop iterations of ``loop_instructions`` per warp, for ``warps`` warps, and its 4 warp
             schedulers issue at most one instruction per clock each:
               issue cycles = ceil(programs / SMs) x iterations x loop_instructions x warps / 4
  tensor     the tensor units' work the same way, with each warp's MMA clocks per iteration
             (loop_instructions / issue_per_tensor, ``sass_loop``: the dense rate of one SM sub-partition):
               tensor cycles = ceil(programs / SMs) x iterations x (loop_instructions / issue_per_tensor) x warps / 4
             It exceeds the roofline's compute term by the tiles' padding (a tile past the problem's edge
             multiplies zeros) and by wave quantisation: the last, partial wave costs a whole program on the
             busiest SM. issue / tensor = issue_per_tensor exactly, so the issue term binds iff that is above 1.
bound_us = max of the three; bound_by names it. Cycles become time at the clock implied by the tensor peak:
clock = tensor16 peak / (SMs x 4 sub-partitions x ``sass_loop.TENSOR_RATES`` bf16 rate); for H100 SXM
989.4 TFLOP/s / (132 x 4 x 1024 flop/clk) = 1.83 GHz (the clock of NVIDIA's published peak; the board's
1.98 GHz maximum boost is not what the peak assumes), A100 SXM 312 / (108 x 4 x 512) = 1.41 GHz.

``waves`` = ceil(programs / (SMs x resident programs per SM)), resident programs per SM = occupancy x 64 / warps
(occupancy: the inspection's theoretical value from registers and shared memory). With one resident program
per SM (the large tiles) waves x 1 is the busiest SM's program count; with more, co-resident programs share
the SM's schedulers and tensor units, so the bound counts programs per SM, not waves.

What the model leaves out (each makes the real time longer, never shorter): the prologue and epilogue outside
the main loop, latency the pipeline does not hide, instructions a branch skips (every loop instruction counts
once per iteration), uneven split-K slices, and, for a measured gradient, the separate ReLU-mask / bias-grad pass.

Programs and iterations come from the launch arguments, captured as ``cases.conv_cases`` captures them
(full-size tensors, launches recorded, not run; split-K slices as on the GPU's SM count) with the GPU path's
reduction order (``conv.gpu_flat_reduction``: flat for few channels per group, and for channels_last 2012 conv2's
48; the weight gradient's ``conv.gpu_weight_grad_flat``, flat also where its plan is modelled faster: 192 output
channels per group). conv1 where it takes its
space-to-depth form (``conv.conv2d_depth``: channels_last, not exact fp32) is priced as launched: the conv
kernels on x_d (48 channels, 3x3 taps; the zero taps' multiply-adds in the issue and tensor terms, the roofline
the layer's own) and the flat reduction of its forward and weight gradient; its input gradient (no training step
runs it) takes the execution mode's order (``conv.flat_reduction``), and the space-to-depth passes themselves
are not priced. ``programs`` evaluates the
launcher's own grid (``LaunchRecord.grid``) at the config; ``iterations`` computes each kernel's trip count from
the captured arguments and the config, as kernels/conv.py's loops run:
  forward      R*S*cdiv(C/G, BK) (channel blocks) or cdiv(C/G*R*S, BK) (flat)
  input grad   taps of the program's stride phase x cdiv(K/G, BK) (or cdiv(K/G * taps, BK) flat), averaged over
               the phases
  weight grad  cdiv(cdiv(N*OH*OW, splits), BK)
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path

import pandas as pd
import torch

from ...architecture import CONV_LAYERS, ConvLayer
from ...kernels import conv, runtime
from ..inspection import cases, figures, sass_loop, tables
from ..registries import layer_kinds
from ..registries.benchmark_cases import DTYPES as STUDY_DTYPES
from ..registries.benchmark_cases import LAYOUTS, read_benchmarks
from ..registries.gpus import CAPTURED, GPUS, gpu_named
from ..registries.layer_kinds import KINDS
from ..registries.providers import SUBJECT
from ..vocabulary import CONV_PASSES, FORWARD, INPUT_GRAD, WEIGHT_GRAD
from . import cost

SCHEDULERS = 4  # warp schedulers (= tensor-core sub-partitions) per SM
WARP_SLOTS = 64  # resident warps per SM on sm_80 / sm_90 (``compilation.nvidia_occupancy``)
BATCH = cases.BATCH
COLUMNS = ["gpu", "target", "variant", "layer", "pass", "dtype", "layout", "config", "configs", "warps", "resident",
           "programs",
           "waves", "iterations", "loop_instructions", "issue_per_tensor", "roofline_us", "issue_us", "tensor_us",
           "bound_us", "bound_by", "measured_p50_us"]
MODEL_LABEL = "a model (static analysis of the compiled SASS), not a measurement"
LOWER_BOUND_FILE = "conv_lower_bound.csv"


def clock_hz(gpu: str) -> float:
    """The clock implied by the GPU's published fp16/bf16 tensor peak and the per-sub-partition tensor rate."""
    machine = GPUS[gpu]
    rate = sass_loop.TENSOR_RATES[(machine.target, "bf16")]
    return GPUS[gpu].tensor16 * 1e12 / (machine.sms * SCHEDULERS * rate)


# ----------------------------------------------------------------------------------------------------------------
# Launch arguments, grids and trip counts.

def parse_config(name: str) -> dict[str, int]:
    """"BM128_BN256_BK64_w8_s3" -> {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "num_warps": 8, "num_stages": 3}."""
    meta = {f"BLOCK_{axis}": int(size) for axis, size in re.findall(r"B([MNK])(\d+)", name)}
    warps, stages = re.search(r"_w(\d+)_s(\d+)$", name).groups()
    return dict(meta, num_warps=int(warps), num_stages=int(stages))


@functools.cache
def launch_args(variant: str, layer_name: str, dtype: str = "bf16", layout: str = "channels_last",
                sms: int = CAPTURED.sms) -> dict[str, dict]:
    """{pass: the scalar keyword arguments of its kernel launch, and ``grid``: the launch's grid callable} for one
    layer at batch ``BATCH``, as a GPU with ``sms`` SMs would launch it (launches captured, not run; any
    execution mode)."""
    layer = next(c for c in CONV_LAYERS[variant] if c.name == layer_name)
    torch_dtype, precision = cases.DTYPES[dtype]
    memory_format = LAYOUTS[layout]
    x = torch.empty(BATCH, layer.in_channels, layer.size, layer.size, dtype=torch_dtype, memory_format=memory_format)
    w = torch.empty(layer.out_channels, layer.in_channels // layer.groups, layer.kernel, layer.kernel,
                    dtype=torch_dtype, memory_format=memory_format)
    b = torch.empty(layer.out_channels, dtype=torch_dtype)
    geometry = dict(stride=layer.stride, padding=layer.padding, groups=layer.groups, precision=precision)
    # the GPU path's reduction orders (``conv.flat_reduction`` outside the interpreter)
    c_flat = conv.gpu_flat_reduction(layer.in_channels // layer.groups, memory_format == torch.channels_last)
    k_flat = conv.gpu_flat_reduction(layer.out_channels // layer.groups, False)
    depth = conv.conv2d_depth(x, w.shape, layer.stride, layer.padding, 1, layer.groups, torch_dtype, precision)
    with runtime.capture_launches() as launches, runtime.target(sms):
        if depth is not None:  # conv1: its space-to-depth form, as alexnet_triton.ops launches it
            y, x_d = depth.forward(x, w, b, True, precision, torch_dtype)
            depth.input_grad(y, w, x.shape, memory_format, torch_dtype, precision)
            depth.weight_grad(y, x_d, w.shape, memory_format, torch_dtype, precision)
        else:
            y = conv.conv2d_forward(x, w, b, relu=True, flat_crs=c_flat, **geometry)
            conv.conv2d_input_grad(y, w, x.shape, memory_format=memory_format, flat_krs=k_flat, **geometry)
            g = conv.conv2d_geometry(x.shape, w.shape, layer.stride, layer.padding, 1, layer.groups)
            conv.conv2d_weight_grad(y, x, w.shape, memory_format=memory_format, **geometry,
                                    flat_crs=conv.gpu_weight_grad_flat(y, x, g, precision))
    found = {}
    for launch in launches:
        name = launch.kernel.fn.__name__
        if name in tables.CONV_PASSES:
            args = {k: v for k, v in launch.args.items() if not isinstance(v, torch.Tensor)}
            found[tables.CONV_PASSES[name]] = dict(args, grid=launch.grid)
    return found


def _phases(a: dict) -> list[tuple[int, int]]:
    """(taps_h, taps_w) of each stride phase of the input gradient (the kernel's taps_h, taps_w)."""
    sh, sw, R, S = a["stride_h"], a["stride_w"], a["R"], a["S"]
    return [((R - ph + sh - 1) // sh, (S - pw + sw - 1) // sw) for ph in range(sh) for pw in range(sw)]


def programs(a: dict, meta: dict) -> int:
    """Programs in the launch grid of launch arguments ``a`` (``launch_args``: with its ``grid``) at config
    ``meta`` (BLOCK_M/N/K)."""
    return math.prod(a["grid"]({**a, **meta}))


def iterations(pass_: str, a: dict, meta: dict) -> float:
    """Main-loop trip count of one program of ``pass_`` (the input gradient of a strided conv: the mean over
    its stride phases, whose tap counts differ)."""
    bk = meta["BLOCK_K"]
    if pass_ == FORWARD:
        return conv.crs_blocks(a["C_per_group"], a["R"], a["S"], bk, a["FLAT_CRS"])
    if pass_ == INPUT_GRAD:
        counts = [conv.crs_blocks(a["K_per_group"], th, tw, bk, a["FLAT_KRS"]) for th, tw in _phases(a)]
        return sum(counts) / len(counts)
    if pass_ == WEIGHT_GRAD:
        return runtime.cdiv(runtime.cdiv(a["N"] * a["OH"] * a["OW"], a["splits"]), bk)
    raise ValueError(f"pass must be one of {CONV_PASSES}, got {pass_!r}")


# ----------------------------------------------------------------------------------------------------------------
# The bound.

def kernel_bound(*, programs: int, iterations: float, loop_instructions: float, issue_per_tensor: float,
                 warps: int, resident: int, sms: int, clock: float, roofline_us: float) -> dict:
    """The modelled lower bound of one launch (see the module docstring): waves, issue_us, tensor_us, bound_us
    and bound_by ("roofline", "issue" or "tensor"; ties go to the earlier)."""
    per_sm = runtime.cdiv(programs, sms)
    per_program = iterations * loop_instructions * max(warps, SCHEDULERS) / SCHEDULERS  # issue cycles, one SM
    issue_us = per_sm * per_program / clock * 1e6
    tensor_us = issue_us / issue_per_tensor
    terms = {"roofline": roofline_us, "issue": issue_us, "tensor": tensor_us}
    bound_by = max(terms, key=terms.get)
    return dict(waves=runtime.cdiv(programs, sms * max(resident, 1)), issue_us=issue_us, tensor_us=tensor_us,
                bound_us=terms[bound_by], bound_by=bound_by)


def roofline_us(layer: ConvLayer, variant: str, pass_: str, dtype: str, gpu: str, batch: int = BATCH) -> float:
    """max(FLOPs / matrix peak, bytes / bandwidth) of one pass, from the project's cost model (module docstring)."""
    study = next(s for s in layer_kinds.study_layers(variant) if s.kind == "conv" and s.conv == layer)
    case, spec = STUDY_DTYPES[dtype], GPUS[gpu]
    if pass_ == FORWARD:
        work, traffic = cost.flops(study, "forward", batch), cost.minimum_bytes(study, "forward", batch,
                                                                                  case.element_size)
    else:
        work, traffic = KINDS["conv"].gradient_cost(study, pass_, batch, case.element_size)
    return max(work / (getattr(spec, case.matrix_peak) * 1e12), traffic / (spec.bandwidth * 1e12)) * 1e6


def measured_p50_us(benchmarks: pd.DataFrame | None, gpu: str, variant: str, layer: str, pass_: str, dtype: str,
                    layout: str, batch: int = BATCH) -> float | None:
    """The median ms_p50 (in µs) of the GPU benchmark rows of this Triton layer and phase on ``gpu``; None
    without any."""
    if benchmarks is None or benchmarks.empty:
        return None
    rows = benchmarks[(benchmarks.run_kind == "gpu") & (benchmarks.provider == SUBJECT)
                      & (benchmarks.kernel == f"{variant}/{layer}") & (benchmarks.phase == pass_)
                      & (benchmarks.dtype == dtype) & (benchmarks.layout == layout) & (benchmarks.batch == batch)]
    rows = rows[rows.device.astype(str).map(gpu_named) == gpu]
    return float(rows.ms_p50.median()) * 1e3 if len(rows) else None


def lower_bound_table(table: pd.DataFrame, gpu: str = "h100-sxm", dtype: str = "bf16", layout: str = "channels_last",
                      benchmarks: pd.DataFrame | None = None) -> pd.DataFrame:
    """The modelled lower bound (``COLUMNS``) of each conv layer x pass of an inspection table with main-loop
    columns, at batch ``BATCH`` on the GPU's target. Every shipped config the table compiled for the case (status
    ok) is priced and the least bound kept, with its config: the autotuner launches one of them, so the launch
    takes at least the least of their bounds (configs counts them; the least-issue/tensor config of
    ``tables.loop_summary`` can lose to a smaller tile that pads less). Passes a training step does not run
    (conv1's input gradient) are left out; measured_p50_us is filled from ``benchmarks`` rows measured on that
    GPU, else empty."""
    machine, clock = GPUS[gpu], clock_hz(gpu)
    rows = tables.rows_per_case(table)
    rows = rows[rows.kernel.isin(tables.CONV_PASSES) & (rows.target == machine.target) & (rows.dtype == dtype)
                & (rows.layout == layout)]
    priced = []
    for row in rows.to_dict("records"):
        variant, name, pass_ = row["variant"], row["layer"], tables.CONV_PASSES[row["kernel"]]
        layer = next(c for c in CONV_LAYERS[variant] if c.name == name)
        if pass_ == INPUT_GRAD and not _needs_input_grad(variant, layer):
            continue
        meta = parse_config(row["config"])
        args = launch_args(variant, name, dtype, layout, machine.sms)[pass_]
        warps = meta["num_warps"]
        occupancy = row.get("occupancy")
        resident = max(1, round(float(occupancy) * WARP_SLOTS / warps)) if pd.notna(occupancy) else 1
        count, trips = programs(args, meta), iterations(pass_, args, meta)
        roof = roofline_us(layer, variant, pass_, dtype, gpu)
        bound = kernel_bound(programs=count, iterations=trips, loop_instructions=float(row["loop_instructions"]),
                             issue_per_tensor=float(row["issue_per_tensor"]), warps=warps, resident=resident,
                             sms=machine.sms, clock=clock, roofline_us=roof)
        priced.append({"gpu": gpu, "target": machine.target, "variant": variant, "layer": name, "pass": pass_,
                       "dtype": dtype, "layout": layout, "config": row["config"], "warps": warps,
                       "resident": resident, "programs": count, "iterations": trips,
                       "loop_instructions": int(row["loop_instructions"]),
                       "issue_per_tensor": float(row["issue_per_tensor"]), "roofline_us": roof, **bound})
    keys = ["variant", "layer", "pass"]
    out = pd.DataFrame(priced, columns=[c for c in COLUMNS if c not in ("configs", "measured_p50_us")])
    counts = out.groupby(keys).config.nunique().rename("configs")
    out = out.sort_values(["bound_us", "issue_per_tensor", "config"]).drop_duplicates(keys).join(counts, on=keys)
    out["measured_p50_us"] = [measured_p50_us(benchmarks, gpu, r["variant"], r["layer"], r["pass"], dtype, layout)
                              for r in out.to_dict("records")]
    order = {name: i for i, name in enumerate([*CONV_LAYERS, *CONV_PASSES])}
    out = out.sort_values(keys, key=lambda c: c.map(lambda v: order.get(v, v)) if c.name != "layer" else c)
    out = out.reindex(columns=COLUMNS).reset_index(drop=True)
    for column in ("roofline_us", "issue_us", "tensor_us", "bound_us", "measured_p50_us"):
        out[column] = out[column].astype(float).round(1)
    out["iterations"] = out["iterations"].astype(float).round(2)
    return out


def _needs_input_grad(variant: str, layer: ConvLayer) -> bool:
    return next(s for s in layer_kinds.study_layers(variant) if s.kind == "conv" and s.conv == layer).needs_input_grad


def write_lower_bound(table: pd.DataFrame, folder: Path, benchmarks: pd.DataFrame | None = None,
                      gpu: str = "h100-sxm") -> Path | None:
    """``folder``/conv_lower_bound.csv from an inspection table (``lower_bound_table``); None (nothing written)
    when the table has no conv main loops."""
    if not tables.has_main_loops(table):
        return None
    path = Path(folder) / LOWER_BOUND_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    lower_bound_table(table, gpu, benchmarks=benchmarks).to_csv(path, index=False)
    return path


def write_loop_outputs(reports: Path, gpu: str | None = None) -> list[Path]:
    """From the committed ``reports/kernels/inspection.csv`` (and conv_loops_before.csv; GPU rows of
    ``reports/benchmarks/layers.csv`` if any): the issue-per-tensor figure and conv_lower_bound.csv next to
    them; nothing when the table has no conv main loops. Returns the paths written. ``gpu``: default the GPU the
    latest conv benchmark rows were measured on when ``GPUS`` has it (an H200: the H100's SMs and clock,
    more bandwidth), else "h100-sxm"."""
    folder = Path(reports) / "kernels"
    path = folder / "inspection.csv"
    if not path.is_file():
        return []
    table = pd.read_csv(path)
    if not tables.has_main_loops(table):
        return []
    figure = figures.plot_issue_per_tensor(table, tables.read_before(folder), folder / "issue_per_tensor.png")
    benchmarks = layer_benchmarks(reports)
    return [figure, write_lower_bound(table, folder, benchmarks, gpu or measured_gpu(benchmarks))]


def measured_gpu(benchmarks: pd.DataFrame | None) -> str:
    """The ``GPUS`` key of the GPU the latest Triton conv rows of ``benchmarks`` ran on; "h100-sxm" without
    any (or on a GPU the model does not know)."""
    if benchmarks is None:
        return "h100-sxm"
    rows = benchmarks[(benchmarks.run_kind == "gpu") & benchmarks.phase.isin(CONV_PASSES)]
    rows = rows.assign(gpu=rows.device.astype(str).map(gpu_named)).dropna(subset=["gpu"])
    rows = rows[rows.gpu.isin(GPUS)]
    return rows.sort_values("timestamp").gpu.iloc[-1] if len(rows) else "h100-sxm"


def layer_benchmarks(reports: Path) -> pd.DataFrame | None:
    """The rows of ``reports/benchmarks/layers.csv`` (``measured_p50_us`` keeps the GPU ones), or None."""
    layers = Path(reports) / "benchmarks" / "layers.csv"
    return read_benchmarks(layers) if layers.is_file() else None
