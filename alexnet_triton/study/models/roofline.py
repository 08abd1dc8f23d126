"""The roofline model of AlexNet's layers: what each could reach on a named GPU, from the cost model alone.

``roofline_table(gpu, dtype, batch)`` prices every layer of both variants
(``layer_kinds.study_layers``) against a GPU's published peaks: for each pass, the
arithmetic intensity (FLOP per minimum byte), the attainable TFLOP/s
min(peak, intensity x bandwidth), the bound, and the time lower bound
max(flops / peak, bytes / bandwidth). The convolutions and linears run on the
dtype's matrix peak; the element-wise layers (pooling, LRN, cross-entropy,
SGD) compute in fp32 on the CUDA cores, so their peak is the fp32 one. The
SGD step reads and writes fp32 state in every case (mixed precision keeps fp32
master weights and momentum), so the conv and linear backward passes write their
weight and bias gradients in fp32 too, the dtype of the parameters whose ``grad``
they are and the one the SGD step reads (``master_gradient_bytes``; the cost
model alone counts them at the case's element size, as the per-layer benchmarks
of all-bf16 layers write them). In 16-bit cases the kernels read 16-bit weights, which the SGD step writes
as it updates the fp32 masters (``compute_copy_bytes``: the cheapest way to have them, 2 bytes a weight where
reading the fp32 master in the forward and the input gradient would cost 4). One "step" row per variant sums a
training step: forward and backward are separate kernels, so its lower bound is the sum of every pass's bound,
and batch / that bound is a ceiling on images per second.

``fused_update=True`` prices the step of ``train.py --fused-update`` (``optim.SGD.fuse_into``: the SGD step of
the linear layers' weights and biases in their weight-gradient kernels' epilogue): its lowered bound, without the
gradient round trip of those parameters, their update's state traffic moved from the SGD row to their layer's
backward (``fused_update_bytes``), with their compute copies' write.

Nothing here is measured: ``plot_roofline`` says so in its title, and overlays
a benchmark's points only from rows with run_kind "gpu".
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import Bbox

from ...architecture import CONV_LAYERS
from ..registries import layer_kinds
from ..registries.benchmark_cases import DTYPES, StudyDtype
from ..registries.gpus import GPU, GPUS
from ..registries.layer_kinds import KINDS
from ..registries.providers import PROVIDERS
from ..vocabulary import BACKWARD, FORWARD, FULL, VARIANT_NAMES
from . import cost

PASSES = (FORWARD, BACKWARD)
PLOT_INTENSITIES = (0.1, 1e4)  # FLOP/byte, the x range of the plot
VARIANT_DETAILS = {"2012": "227 input, groups, LRN", "torchvision": "224 input"}


def _check(gpu: str, dtype: str) -> None:
    if gpu not in GPUS:
        raise ValueError(f"roofline: gpu must be one of {tuple(GPUS)}, got {gpu!r}")
    if dtype not in DTYPES:
        raise ValueError(f"roofline: dtype must be one of {tuple(DTYPES)}, got {dtype!r}")


def master_gradient_bytes(layer: layer_kinds.StudyLayer, element_size: int) -> int:
    """What writing ``layer``'s weight and bias gradients in the master parameters' dtype (fp32, the SGD state's)
    adds to its backward bytes over the cost model's ``element_size`` ones; 0 for layers without parameters and
    for fp32 cases."""
    state = KINDS["sgd"].state_dtype.itemsize
    return (state - element_size) * sum(math.prod(shape) for shape in layer.parameter_shapes)


def fused_update_bytes(layer: layer_kinds.StudyLayer, fused_parameters: int) -> int:
    """What the fused update adds to ``layer``'s backward bytes (negative: removes). A linear layer no longer
    writes its weight and bias gradients (fp32, ``master_gradient_bytes``) but reads and writes the parameters
    and their momentum buffers (the SGD state, fp32); the SGD step no longer touches the ``fused_parameters`` at
    all (their gradient, parameter and buffer). In all, the gradients' round trip is gone; 0 for the other
    layers."""
    state = KINDS["sgd"].state_dtype.itemsize
    if layer.kind == "linear":
        own = sum(math.prod(shape) for shape in layer.parameter_shapes)
        return ((layer_kinds.SGD_STATE_TENSORS - 1) * state - state) * own
    if layer.kind == "sgd":
        return -layer_kinds.SGD_STATE_TENSORS * state * fused_parameters
    return 0


def _weights(layer: layer_kinds.StudyLayer) -> int:
    """Elements of ``layer``'s weight (its first parameter; 0 for layers without one)."""
    return math.prod(layer.parameter_shapes[0]) if layer.parameter_shapes else 0


def compute_copy_bytes(layer: layer_kinds.StudyLayer, layers: list[layer_kinds.StudyLayer], element_size: int,
                       fused_update: bool) -> int:
    """What writing the compute copies of the weights (``precision.compute_copy``: each fp32 master weight in the
    case's 16-bit dtype, ``element_size`` bytes, written once an update) adds to ``layer``'s backward bytes: the SGD
    step writes those of all ``layers``, or with ``fused_update`` those of the convs, each linear layer's backward
    its own; 0 in fp32 cases (the kernels read the masters) and for biases (read in fp32, rounded in the kernel)."""
    if element_size >= KINDS["sgd"].state_dtype.itemsize:
        return 0
    if layer.kind == "sgd":
        return element_size * sum(_weights(other) for other in layers
                                  if other.kind == "conv" or other.kind == "linear" and not fused_update)
    return element_size * _weights(layer) if layer.kind == "linear" and fused_update else 0


def roofline_table(gpu: str, dtype: str, batch: int, fused_update: bool = False) -> pd.DataFrame:
    """One row per (variant, layer, phase) with work, plus one "step" row per variant (phase "full");
    ``fused_update``: the step with the linear layers' SGD step fused (module docstring).

    Columns: gpu, dtype, batch, variant, layer, kind, phase, flops, bytes, intensity (FLOP/byte), peak_tflops,
    bandwidth_tbs, attainable_tflops, bound ("compute" / "memory"), compute_ms, memory_ms, time_ms (lower
    bound), images_per_s (batch / time_ms: a ceiling). A step row sums its passes' flops, bytes, compute_ms,
    memory_ms and time_ms; its attainable_tflops is flops / time_ms and its bound what most of that time is.
    """
    _check(gpu, dtype)
    spec, case = GPUS[gpu], DTYPES[dtype]
    rows = []
    for variant in CONV_LAYERS:
        passes, layers = [], layer_kinds.study_layers(variant)
        fused = sum(math.prod(shape) for layer in layers if layer.kind == "linear" for shape in layer.parameter_shapes)
        for layer in layers:
            kind = KINDS[layer.kind]
            element_size = kind.dtype_for(case.dtype).itemsize
            peak = getattr(spec, case.matrix_peak if kind.gemm else "fp32")
            for phase in (*PASSES, FULL):
                work, traffic = cost.flops(layer, phase, batch), cost.minimum_bytes(layer, phase, batch, element_size)
                if phase != FORWARD:
                    traffic += master_gradient_bytes(layer, element_size)
                    traffic += fused_update_bytes(layer, fused) if fused_update else 0
                    traffic += compute_copy_bytes(layer, layers, case.dtype.itemsize, fused_update)
                if work == 0 and traffic == 0:  # the SGD step has no forward
                    continue
                compute_ms, memory_ms = work / peak / 1e9, traffic / spec.bandwidth / 1e9
                intensity = work / traffic
                row = dict(variant=variant, layer=layer.name, kind=layer.kind, phase=phase, flops=work,
                           bytes=traffic, intensity=intensity, peak_tflops=peak,
                           attainable_tflops=min(peak, intensity * spec.bandwidth),
                           bound="compute" if compute_ms >= memory_ms else "memory", compute_ms=compute_ms,
                           memory_ms=memory_ms, time_ms=max(compute_ms, memory_ms))
                rows.append(row)
                if phase in PASSES:
                    passes.append(row)
        rows.append(_step_row(variant, passes, getattr(spec, case.matrix_peak)))
    table = pd.DataFrame(rows)
    table.insert(0, "gpu", gpu)
    table.insert(1, "dtype", dtype)
    table.insert(2, "batch", batch)
    table.insert(table.columns.get_loc("attainable_tflops"), "bandwidth_tbs", spec.bandwidth)
    table["images_per_s"] = batch / table["time_ms"] * 1e3
    return table


def roofline_tables(gpus: tuple[str, ...], dtypes: tuple[str, ...], batch: int) -> pd.DataFrame:
    """``roofline_table`` of every gpu x dtype, one after another."""
    return pd.concat([roofline_table(gpu, dtype, batch) for gpu in gpus for dtype in dtypes], ignore_index=True)


def _step_row(variant: str, passes: list[dict], matrix_peak: float) -> dict:
    """A training step: every layer's forward and backward pass (and the SGD step), one after another."""
    work, traffic = sum(p["flops"] for p in passes), sum(p["bytes"] for p in passes)
    time_ms = sum(p["time_ms"] for p in passes)
    compute_bound_ms = sum(p["time_ms"] for p in passes if p["bound"] == "compute")
    return dict(variant=variant, layer="step", kind="step", phase="full", flops=work, bytes=traffic,
                intensity=work / traffic, peak_tflops=matrix_peak, attainable_tflops=work / time_ms / 1e9,
                bound="compute" if compute_bound_ms >= time_ms / 2 else "memory",
                compute_ms=sum(p["compute_ms"] for p in passes), memory_ms=sum(p["memory_ms"] for p in passes),
                time_ms=time_ms)


def measured_points(measured: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """The benchmark rows that belong on ``table``'s plot, each at the model's intensity of its kernel and phase.

    Keeps rows with run_kind "gpu" only (a CPU smoke run's numbers mean nothing on a GPU roofline), of the
    table's dtype (named as in ``DTYPES``) and batch, forward or backward, of a kernel "<variant>/<layer>" the
    table has, and, when the benchmark has a ``device`` column, measured on the table's GPU. Adds the column
    ``intensity``.
    """
    gpu, dtype, batch = (table[column].iloc[0] for column in ("gpu", "dtype", "batch"))
    keep = (measured["run_kind"] == "gpu") & (measured["dtype"] == dtype) & (measured["batch"] == batch)
    keep &= measured["phase"].isin(PASSES)
    if "device" in measured.columns:
        keep &= measured["device"].astype(str).str.contains(GPUS[gpu].device_pattern, regex=False)
    model = table[table["phase"].isin(PASSES)].assign(kernel=lambda t: t["variant"] + "/" + t["layer"])
    return measured[keep].merge(model[["kernel", "phase", "variant", "layer", "intensity"]], on=["kernel", "phase"])


def plot_roofline(table: pd.DataFrame, path: str | Path, measured: pd.DataFrame | None = None) -> Path:
    """Log-log roofline of one (gpu, dtype, batch) table, a panel per variant; returns the PNG's path.

    Each layer's forward (dot) and backward (ring) pass sits at its attainable TFLOP/s, joined by a line and
    labelled once; a star marks the whole training step at its lower-bound throughput. ``measured``: a
    benchmark table (columns kernel, provider, phase, batch, dtype, tflops, run_kind; optionally layout, device);
    its GPU rows are drawn in each provider's colour at the model's intensity of the same kernel and phase,
    squares for NCHW.
    """
    gpu, dtype, batch = (table[column].iloc[0] for column in ("gpu", "dtype", "batch"))
    spec = GPUS[gpu]
    points = measured_points(measured, table) if measured is not None else None
    if points is not None:  # a benchmark may time a spatial layer in both layouts: NCHW gets squares
        points["marker"] = "D"
        if "layout" in points:
            points.loc[points["layout"].eq("nchw"), "marker"] = "s"
    providers = [p for p in PROVIDERS if p in set(points["provider"])] if points is not None else []
    colours = {provider: PROVIDERS[provider].colour for provider in providers}
    variants = list(dict.fromkeys(table["variant"]))
    figure = Figure(figsize=(8 * len(variants), 7.5))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(variants), sharey=True, squeeze=False)[0]
    figure.subplots_adjust(left=0.06, right=0.99, top=0.86, bottom=0.17, wspace=0.05)
    for ax, variant in zip(axes, variants, strict=True):
        ax.set(xscale="log", yscale="log", xlim=PLOT_INTENSITIES, ylim=(0.3, 5 * table["peak_tflops"].max()),
               title=f"{VARIANT_NAMES[variant]} ({VARIANT_DETAILS[variant]})",
               xlabel="arithmetic intensity (FLOP per byte of minimum DRAM traffic)")
        ax.grid(True, which="major", color="0.88", lw=0.6)
        ax.grid(True, which="minor", color="0.95", lw=0.4)
        obstacles = _draw_roofs(ax, spec, DTYPES[dtype], dtype)
        rows = table[table["variant"] == variant]
        labels, markers = [], []
        for layer, passes in rows[rows["phase"].isin(PASSES)].groupby("layer", sort=False):
            ax.plot(passes["intensity"], passes["attainable_tflops"], color="0.55", lw=0.8, zorder=2)
            for phase, size, face in (("forward", 22, "0.1"), ("backward", 80, "none")):
                point = passes[passes["phase"] == phase]
                ax.scatter(point["intensity"], point["attainable_tflops"], s=size, facecolor=face,
                           edgecolor="0.1", linewidths=1.1, zorder=3)
            labels.append((passes["intensity"].iloc[0], passes["attainable_tflops"].iloc[0], layer))
            markers += [_marker_box(ax, x, y) for x, y in passes[["intensity", "attainable_tflops"]].to_numpy()]
        step = rows[rows["layer"] == "step"].iloc[0]
        ax.scatter(step["intensity"], step["attainable_tflops"], s=180, marker="*", color="crimson", zorder=4)
        markers.append(_marker_box(ax, step["intensity"], step["attainable_tflops"]))
        labels.append((step["intensity"], step["attainable_tflops"],
                       f"training step: {step['time_ms']:.2f} ms,\n{step['images_per_s']:,.0f} images/s"))
        if points is not None:
            groups = points[points["variant"] == variant].groupby(["provider", "phase", "marker"])
            for (provider, phase, marker), group in groups:
                ax.scatter(group["intensity"], group["tflops"], s=44, marker=marker, linewidths=1.4, zorder=5,
                           facecolor=colours[provider] if phase == "forward" else "white", edgecolor=colours[provider])
                markers += [_marker_box(ax, x, y) for x, y in group[["intensity", "tflops"]].to_numpy()]
        _place_labels(ax, labels, obstacles + markers)
    axes[0].set_ylabel("attainable performance (TFLOP/s)")
    handles = [Line2D([], [], marker="o", ls="", color="0.1", markersize=5, label="forward pass"),
               Line2D([], [], marker="o", ls="", markerfacecolor="none", markeredgecolor="0.1", markersize=9,
                      label="backward pass"),
               Line2D([], [], marker="*", ls="", color="crimson", markersize=13,
                      label="training step (all passes + SGD): lower-bound time, effective TFLOP/s")]
    handles += [Line2D([], [], marker="D", ls="", color=colours[p], label=f"measured, {p} (hollow: backward)")
                for p in providers]
    if points is not None and points["marker"].eq("s").any():
        handles.append(Line2D([], [], marker="s", ls="", color="0.4",
                              label="measured in NCHW (diamonds: channels_last)"))
    figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 3), frameon=False)
    figure.suptitle(f"AlexNet roofline — a MODEL, not a measurement: FLOPs and minimum bytes from the layer shapes\n"
                    f"against the published peaks of {spec.name}, {dtype}, batch {batch}", fontsize=13)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=130)
    return path


def _draw_roofs(ax, spec: GPU, case: StudyDtype, dtype: str) -> list[Bbox]:
    """The dtype's GEMM roof (solid) and, if it differs, the fp32 CUDA-core roof of the element-wise layers;
    returns the display boxes of their captions."""
    roofs = [(getattr(spec, case.matrix_peak), f"{dtype} GEMM peak", "-")]
    if case.matrix_peak != "fp32":
        roofs.append((spec.fp32, "fp32 CUDA-core peak (element-wise layers)", "--"))
    left, right = PLOT_INTENSITIES
    captions = []
    for peak, name, style in roofs:
        ridge = peak / spec.bandwidth
        xs = [left, ridge, right]
        ax.plot(xs, [min(peak, x * spec.bandwidth) for x in xs], ls=style, color="steelblue", lw=1.5, zorder=1)
        above = style == "-"
        captions.append(ax.annotate(f"{name}: {peak:g} TFLOP/s\nridge at {ridge:.0f} FLOP/B", (right, peak),
                                    xytext=(-4, 4 if above else -4), textcoords="offset points", ha="right",
                                    va="bottom" if above else "top", fontsize=8, color="steelblue"))
    # the bandwidth caption runs along the slope, just above it, a twentieth of the way below the lowest ridge
    x = min(roof[0] for roof in roofs) / spec.bandwidth / 20
    (x0, y0), (x1, y1) = ax.transData.transform([(x, x * spec.bandwidth), (10 * x, 10 * x * spec.bandwidth)])
    captions.append(ax.annotate(f"DRAM {spec.bandwidth:g} TB/s", (x, x * spec.bandwidth), xytext=(-7, 7),
                                textcoords="offset points", rotation=math.degrees(math.atan2(y1 - y0, x1 - x0)),
                                rotation_mode="anchor", ha="center", va="bottom", fontsize=8, color="steelblue"))
    renderer = ax.figure.canvas.get_renderer()
    return [caption.get_window_extent(renderer) for caption in captions]


def _marker_box(ax, x: float, y: float) -> Bbox:
    """The display box a point's marker covers."""
    px, py = ax.transData.transform((x, y))
    return Bbox.from_bounds(px - 5, py - 5, 10, 10)


def _place_labels(ax, labels: list[tuple[float, float, str]], obstacles: list[Bbox]) -> None:
    """Label each point at the first of a few offsets (points) whose text box overlaps no obstacle or earlier
    label (else at the first offset); far offsets get a leader line."""
    offsets = [(7, 3), (7, -11), (-7, 3), (-7, -11), (0, 10), (0, -18), (16, 18), (-16, 18), (16, -26),
               (-16, -26), (0, 30), (0, -38), (30, 30), (-30, 30), (30, -38), (-30, -38)]
    renderer = ax.figure.canvas.get_renderer()
    placed = list(obstacles)
    for x, y, text in sorted(labels, key=lambda label: (label[0], label[1])):
        chosen, box = offsets[0], None
        for dx, dy in offsets:
            trial = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=8,
                                ha=_alignment(dx))
            trial_box = trial.get_window_extent(renderer).expanded(1.04, 1.15)
            trial.remove()
            if not any(trial_box.overlaps(other) for other in placed):
                chosen, box = (dx, dy), trial_box
                break
        dx, dy = chosen
        leader = dict(arrowstyle="-", color="0.6", lw=0.6, shrinkA=0, shrinkB=4) if abs(dx) + abs(dy) > 20 else None
        annotation = ax.annotate(text, (x, y), xytext=chosen, textcoords="offset points", fontsize=8,
                                 ha=_alignment(dx), zorder=6, arrowprops=leader)
        placed.append(box if box is not None else annotation.get_window_extent(renderer))


def _alignment(dx: float) -> str:
    return "left" if dx > 0 else "right" if dx < 0 else "center"


def summarise_roofline(table: pd.DataFrame) -> str:
    """Markdown: per (gpu, dtype, batch), each layer's bound and lower-bound time per pass, then the step."""
    sections = []
    for (gpu, dtype, batch), group in table.groupby(["gpu", "dtype", "batch"], sort=False):
        lines = [f"**{GPUS[gpu].name}, {dtype}, batch {batch}** (model: lower bounds from the published peaks)",
                 "", "| variant | layer | forward | backward |", "|---|---|---|---|"]
        for (variant, layer), rows in group[group["phase"].isin(PASSES)].groupby(["variant", "layer"], sort=False):
            cells = {row["phase"]: f"{row['bound']}, {_ms(row['time_ms'])}" for _, row in rows.iterrows()}
            lines.append(f"| {variant} | {layer} | {cells.get('forward', '—')} | {cells.get('backward', '—')} |")
        lines.append("")
        for _, step in group[group["layer"] == "step"].iterrows():
            lines.append(f"- {step['variant']} training step (every pass + SGD): at least {_ms(step['time_ms'])}, "
                         f"at most {step['images_per_s']:,.0f} images/s")
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"


def _ms(milliseconds: float) -> str:
    """Three significant digits, in ms."""
    return f"{milliseconds:.{max(0, 2 - math.floor(math.log10(milliseconds)))}f} ms"
