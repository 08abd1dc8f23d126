"""Figures and a Markdown summary from the benchmark table (``COLUMNS``), a separate step from timing.

Only GPU rows are performance measurements: every function here drops ``run_kind="cpu-smoke"`` rows and refuses a
table with nothing else (ValueError), unless ``allow_smoke=True``, which draws the smoke rows under a "SMOKE TEST"
title (tests exercise the plotting that way). A table holding several devices is drawn for the device of its
latest row. Every title states the device, versions, batch, dtype and layout it shows.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from ..registries.benchmark_cases import DTYPES, HEADLINE, MODEL_PHASES
from ..registries.providers import PROVIDERS, SUBJECT, baselines
from ..vocabulary import INPUT_GRAD, LAYER_PASSES, WEIGHT_GRAD

SMOKE_TITLE = "SMOKE TEST (CPU, Triton interpreter), not a performance measurement\n"
LAYER_PHASES = (*LAYER_PASSES, INPUT_GRAD, WEIGHT_GRAD)  # the panels' order


def _measurements(table: pd.DataFrame, allow_smoke: bool, network: bool) -> tuple[pd.DataFrame, str]:
    """(rows of the layers or of the network, title prefix): GPU rows of the latest device, or smoke rows if
    allowed; ValueError when there are none."""
    rows = table[table.kernel.str.endswith("/model") == network]
    gpu = rows[rows.run_kind == "gpu"]
    if len(gpu):
        latest = gpu.sort_values("timestamp").device.iloc[-1]
        return gpu[gpu.device == latest], ""
    if allow_smoke and len(rows):
        return rows, SMOKE_TITLE
    what = "network" if network else "per-layer"
    raise ValueError(f"no GPU {what} benchmark rows (found {len(rows)} cpu-smoke rows: smoke tests are not "
                     "performance measurements); pass allow_smoke=True to draw them under a SMOKE TEST title")


def _conditions(rows: pd.DataFrame) -> str:
    first = rows.iloc[0]
    cudnn = f", cuDNN {first.cudnn}" if first.cudnn else ""
    return f"{first.device}; torch {first.torch}, triton {first.triton}{cudnn}"


def _preferred(rows: pd.DataFrame, column: str, wanted):
    """``wanted`` if some row has it, else the column's most frequent value."""
    values = rows[column]
    return wanted if (values == wanted).any() else values.mode().iloc[0]


def _headline(rows: pd.DataFrame) -> tuple[pd.DataFrame, int, str]:
    """Rows at the headline batch and layout (non-spatial layers: their only layout), with that batch and layout."""
    batch = _preferred(rows, "batch", HEADLINE["batch"])
    spatial = rows[rows.layout != ""]
    layout = _preferred(spatial, "layout", HEADLINE["layout"]) if len(spatial) else ""
    return rows[(rows.batch == batch) & rows.layout.isin(("", layout))], batch, layout


def _finish(fig: Figure, title: str, path: Path) -> Path:
    """Title the figure and save it as a PNG at ``path``."""
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _label_layer_axes(ax, layers: list[str], ylabel: str, title: str) -> None:
    """Layer names under the bars, a log y axis, labels and legend."""
    ax.set_xticks(range(len(layers)), [k.split("/")[1] for k in layers], rotation=45, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)


def _layer_time_figure(rows: pd.DataFrame, title: str, path: Path) -> Path:
    """Median time per call of each layer and provider (bars p20-p80), one panel per phase and variant."""
    variants = sorted({k.split("/")[0] for k in rows.kernel})
    phases = [p for p in LAYER_PHASES if (rows.phase == p).any()]
    fig = Figure(figsize=(7 * len(variants), 3.2 * len(phases)))
    axes = fig.subplots(len(phases), len(variants), squeeze=False)
    for (phase, variant), ax in zip([(p, v) for p in phases for v in variants], axes.flat, strict=True):
        panel = rows[(rows.phase == phase) & rows.kernel.str.startswith(f"{variant}/")]
        layers = list(dict.fromkeys(panel.kernel))
        providers = [p for p in PROVIDERS if (panel.provider == p).any()]
        width = 0.8 / max(1, len(providers))
        for i, provider in enumerate(providers):
            data = panel[panel.provider == provider].set_index("kernel").reindex(layers)
            x = [j + (i - (len(providers) - 1) / 2) * width for j in range(len(layers))]
            ax.bar(x, data.ms_p50, width, color=PROVIDERS[provider].colour, label=provider,
                   yerr=[data.ms_p50 - data.ms_p20, data.ms_p80 - data.ms_p50], capsize=2)
        _label_layer_axes(ax, layers, "ms per call", f"{variant}, {phase}")
    return _finish(fig, title, path)


def _speedup_figure(rows: pd.DataFrame, title: str, path: Path) -> Path | None:
    """Baseline time / Triton time per layer (above 1: Triton faster), bars per dtype; phase "full"."""
    full = rows[rows.phase == "full"]
    times = full.pivot_table(index=["kernel", "dtype"], columns="provider", values="ms_p50", sort=False)
    compared = [p for p in baselines() if p in times and SUBJECT in times]
    if not compared:
        return None
    variants = sorted({k.split("/")[0] for k in full.kernel})
    fig = Figure(figsize=(7 * len(variants), 3.4 * len(compared)))
    axes = fig.subplots(len(compared), len(variants), squeeze=False)
    for (baseline, variant), ax in zip([(b, v) for b in compared for v in variants], axes.flat, strict=True):
        ratio = (times[baseline] / times[SUBJECT]).dropna()
        ratio = ratio[[k.startswith(f"{variant}/") for k, _ in ratio.index]]
        layers = list(dict.fromkeys(k for k, _ in ratio.index))
        dtypes = [d for d in DTYPES if d in {d for _, d in ratio.index}]
        width = 0.8 / max(1, len(dtypes))
        for i, dtype in enumerate(dtypes):
            values = [ratio.get((k, dtype), float("nan")) for k in layers]
            ax.bar([j + (i - (len(dtypes) - 1) / 2) * width for j in range(len(layers))], values, width, label=dtype)
        ax.axhline(1.0, color="black", linewidth=0.8)
        _label_layer_axes(ax, layers, f"{baseline} time / triton time",
                          f"{variant}: above 1, Triton is faster than {baseline}")
    return _finish(fig, title, path)


def _batch_sweep_figure(rows: pd.DataFrame, title: str, path: Path) -> Path | None:
    """Time per image vs batch (phase "full") of each layer timed at several batches, a line per provider; None
    without such layers."""
    full = rows[(rows.phase == "full") & rows.images_per_s.notna()]
    batches = full.groupby("kernel").batch.nunique()
    layers = [kernel for kernel in dict.fromkeys(full.kernel) if batches[kernel] > 1]
    if not layers:
        return None
    columns = 5
    lines = -(-len(layers) // columns)
    fig = Figure(figsize=(3.4 * columns, 2.8 * lines))
    axes = fig.subplots(lines, columns, squeeze=False)
    for ax in axes.flat[len(layers):]:
        ax.set_visible(False)
    for kernel, ax in zip(layers, axes.flat, strict=False):
        for provider, data in full[full.kernel == kernel].groupby("provider", sort=False):
            data = data.sort_values("batch")
            ax.plot(data.batch, 1e3 * data.ms_p50 / data.batch, marker="o", color=PROVIDERS[provider].colour,
                    label=provider)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(kernel, fontsize=9)
        ax.set_xlabel("batch", fontsize=8)
        ax.set_ylabel("µs per image", fontsize=8)
        ax.legend(fontsize=7)
    return _finish(fig, title, path)


def plot_layer_benchmarks(table: pd.DataFrame, out_dir: Path, allow_smoke: bool = False) -> list[Path]:
    """Per-layer figures (PNG) in ``out_dir``: time per provider at the headline batch and layout for each dtype,
    the speed-up over each baseline provider per dtype, time per image vs batch; returns their paths."""
    rows, prefix = _measurements(table, allow_smoke, network=False)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    conditions = _conditions(rows)
    headline, batch, layout = _headline(rows)
    paths = [_layer_time_figure(headline[headline.dtype == dtype],
                                f"{prefix}Per-layer time per call (median; bars p20-p80), batch {batch}, {dtype}, "
                                f"{layout or 'n/a'}\n{conditions}", out_dir / f"layers_{dtype}.png")
             for dtype in DTYPES if (headline.dtype == dtype).any()]
    paths.append(_speedup_figure(headline, f"{prefix}Speed-up of the Triton layers, forward + backward, batch {batch}, "
                                           f"{layout or 'n/a'}\n{conditions}", out_dir / "layers_speedup.png"))
    dtype = _preferred(rows, "dtype", HEADLINE["dtype"])
    sweep = rows[(rows.dtype == dtype) & rows.layout.isin(("", layout))]
    paths.append(_batch_sweep_figure(sweep, f"{prefix}Per-layer time per image vs batch, forward + backward, "
                                            f"{dtype}, {layout or 'n/a'}\n{conditions}", out_dir / "layers_batch.png"))
    return [p for p in paths if p is not None]


def _model_figure(rows: pd.DataFrame, column: str, label: str, title: str, path: Path) -> Path:
    """``column`` vs batch, a panel per variant and phase, a line per provider (colour) and dtype (marker)."""
    variants = sorted(rows.kernel.unique())
    phases = [p for p in MODEL_PHASES if (rows.phase == p).any()]
    fig = Figure(figsize=(6 * len(phases), 3.6 * len(variants)))
    axes = fig.subplots(len(variants), len(phases), squeeze=False)
    for (kernel, phase), ax in zip([(k, p) for k in variants for p in phases], axes.flat, strict=True):
        panel = rows[(rows.kernel == kernel) & (rows.phase == phase)]
        for (provider, dtype), data in panel.groupby(["provider", "dtype"], sort=False):
            data = data.sort_values("batch")
            ax.plot(data.batch, data[column], marker=DTYPES[dtype].marker, color=PROVIDERS[provider].colour,
                    linestyle="-" if dtype == HEADLINE["dtype"] else ":", label=f"{provider} {dtype}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch")
        ax.set_ylabel(label)
        ax.set_title(f"{kernel.split('/')[0]}, {phase}", fontsize=10)
        ax.legend(fontsize=7, ncol=2)
    return _finish(fig, title, path)


def plot_model_benchmarks(table: pd.DataFrame, out_dir: Path, allow_smoke: bool = False) -> list[Path]:
    """Whole-network figures (PNG) in ``out_dir``: images/s and peak memory vs batch per provider and dtype, at the
    headline layout; returns their paths."""
    rows, prefix = _measurements(table, allow_smoke, network=True)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    layout = _preferred(rows, "layout", HEADLINE["layout"])
    rows = rows[rows.layout == layout]
    conditions = f"{layout}; fp16/bf16: mixed precision\n{_conditions(rows)}"
    paths = [_model_figure(rows, "images_per_s", "images/s", f"{prefix}AlexNet throughput, {conditions}",
                           out_dir / "model_throughput.png")]
    if rows.peak_memory_mb.notna().any():
        paths.append(_model_figure(rows, "peak_memory_mb", "peak CUDA memory (MiB)",
                                   f"{prefix}AlexNet peak memory per step, {conditions}", out_dir / "model_memory.png"))
    return paths


def _cell(value: float, digits: str = ".3g") -> str:
    return "–" if pd.isna(value) else format(value, digits)


def summarise_benchmarks(table: pd.DataFrame, allow_smoke: bool = False) -> str:
    """Markdown: per-layer times of every provider and the subject's time ratios to each baseline at the headline
    batch, dtype and layout, and the whole network's images/s at the headline batch."""
    lines = []
    subject = PROVIDERS[SUBJECT].label
    layers = table[~table.kernel.str.endswith("/model")]
    if len(layers):
        rows, prefix = _measurements(table, allow_smoke, network=False)
        rows, batch, layout = _headline(rows)
        dtype = _preferred(rows, "dtype", HEADLINE["dtype"])
        times = rows[rows.dtype == dtype].pivot_table(index="kernel", columns=["phase", "provider"],
                                                      values="ms_p50", sort=False)
        present = [p for p in PROVIDERS if p in set(rows.provider)]
        compared = [p for p in baselines() if p in present]

        def median(phase: str, provider: str) -> pd.Series:
            return times.get((phase, provider), pd.Series(float("nan"), index=times.index))

        headers = [f"{PROVIDERS[p].label} ms (full)" for p in present] + [
            f"{subject}/{PROVIDERS[b].label} {phase}" for b in compared for phase in ("full", "forward", "backward")]
        lines += [f"{prefix}**Per layer**, batch {batch}, {dtype}, {layout or 'n/a'} (non-spatial layers in their only "
                  f"layout); {_conditions(rows)}. Median ms per call; ratios are {subject} time / baseline time "
                  f"(below 1: {subject} is faster). full = forward + backward; the SGD step is full only.", "",
                  "| layer | " + " | ".join(headers) + " |", "|---" * (len(headers) + 1) + "|"]
        for kernel in times.index:
            cells = [median("full", p)[kernel] for p in present] + [
                median(phase, SUBJECT)[kernel] / median(phase, b)[kernel]
                for b in compared for phase in ("full", "forward", "backward")]
            lines.append(f"| {kernel} | " + " | ".join(_cell(c) for c in cells) + " |")
        lines.append("")
    if table.kernel.str.endswith("/model").any():
        rows, prefix = _measurements(table, allow_smoke, network=True)
        batch = _preferred(rows, "batch", HEADLINE["batch"])
        layout = _preferred(rows, "layout", HEADLINE["layout"])
        rows = rows[(rows.batch == batch) & (rows.layout == layout)]
        speed = rows.pivot_table(index=["kernel", "dtype", "phase"], columns="provider", values="images_per_s",
                                 sort=False)
        present = [p for p in PROVIDERS if p in speed]
        compared = [p for p in baselines() if p in present]
        headers = [PROVIDERS[p].label for p in present] + [f"{subject}/{PROVIDERS[b].label}" for b in compared]
        lines += [f"{prefix}**Whole network**, batch {batch}, {layout}; {_conditions(rows)}. Images/s (train-step: "
                  f"forward, loss, backward, SGD; fp16/bf16: mixed precision); {subject}/baseline is the time ratio.",
                  "", "| net | dtype | phase | " + " | ".join(headers) + " |", "|---" * (len(headers) + 3) + "|"]
        for (kernel, dtype, phase), values in speed.iterrows():
            cells = [_cell(values.get(p, float("nan")), ",.0f") for p in present]
            cells += [_cell(values.get(b, float("nan")) / values.get(SUBJECT, float("nan"))) for b in compared]
            lines.append(f"| {kernel.split('/')[0]} | {dtype} | {phase} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
