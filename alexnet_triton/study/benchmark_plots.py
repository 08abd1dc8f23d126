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

from .benchmark_cases import COLUMNS, CONV_MODES, DTYPES, HEADLINE, LAYER_MODES, MODEL_MODES, PROVIDERS

SMOKE_TITLE = "SMOKE TEST (CPU, Triton interpreter), not a performance measurement\n"
COLOURS = dict(zip(PROVIDERS, ("tab:blue", "tab:orange", "tab:green"), strict=True))
MARKERS = dict(zip(DTYPES, ("o", "s", "^", "D"), strict=True))


def read_benchmarks(*paths: Path) -> pd.DataFrame:
    """The rows of one or more benchmark CSVs; the text columns keep empty cells as ""."""
    text = ("kernel", "provider", "mode", "shape", "dtype", "layout", "device", "torch", "triton", "cudnn",
            "timestamp", "run_kind", "compile_mode", "correctness")
    table = pd.concat([pd.read_csv(p, dtype=dict.fromkeys(text, str)) for p in paths], ignore_index=True)
    table = table.reindex(columns=COLUMNS)  # files written before a column existed leave it empty
    table[list(text)] = table[list(text)].fillna("")
    return table


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
    """Median time per call of each layer and provider (bars p20-p80), one panel per mode and variant."""
    variants = sorted({k.split("/")[0] for k in rows.kernel})
    modes = [m for m in dict.fromkeys(LAYER_MODES + CONV_MODES) if (rows["mode"] == m).any()]
    fig = Figure(figsize=(7 * len(variants), 3.2 * len(modes)))
    axes = fig.subplots(len(modes), len(variants), squeeze=False)
    for (mode, variant), ax in zip([(m, v) for m in modes for v in variants], axes.flat, strict=True):
        panel = rows[(rows["mode"] == mode) & rows.kernel.str.startswith(f"{variant}/")]
        layers = list(dict.fromkeys(panel.kernel))
        providers = [p for p in PROVIDERS if (panel.provider == p).any()]
        width = 0.8 / max(1, len(providers))
        for i, provider in enumerate(providers):
            data = panel[panel.provider == provider].set_index("kernel").reindex(layers)
            x = [j + (i - (len(providers) - 1) / 2) * width for j in range(len(layers))]
            ax.bar(x, data.ms_p50, width, color=COLOURS[provider], label=provider,
                   yerr=[data.ms_p50 - data.ms_p20, data.ms_p80 - data.ms_p50], capsize=2)
        _label_layer_axes(ax, layers, "ms per call", f"{variant}, {mode}")
    return _finish(fig, title, path)


def _speedup_figure(rows: pd.DataFrame, title: str, path: Path) -> Path | None:
    """Baseline time / Triton time per layer (above 1: Triton faster), bars per dtype; mode "full"."""
    full = rows[rows["mode"] == "full"]
    times = full.pivot_table(index=["kernel", "dtype"], columns="provider", values="ms_p50", sort=False)
    baselines = [p for p in PROVIDERS[1:] if p in times and "triton" in times]
    if not baselines:
        return None
    variants = sorted({k.split("/")[0] for k in full.kernel})
    fig = Figure(figsize=(7 * len(variants), 3.4 * len(baselines)))
    axes = fig.subplots(len(baselines), len(variants), squeeze=False)
    for (baseline, variant), ax in zip([(b, v) for b in baselines for v in variants], axes.flat, strict=True):
        ratio = (times[baseline] / times["triton"]).dropna()
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
    """Time per image vs batch (mode "full") of each layer timed at several batches, a line per provider; None
    without such layers."""
    full = rows[(rows["mode"] == "full") & ~rows.kernel.str.endswith("/sgd")]
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
            ax.plot(data.batch, 1e3 * data.ms_p50 / data.batch, marker="o", color=COLOURS[provider], label=provider)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(kernel, fontsize=9)
        ax.set_xlabel("batch", fontsize=8)
        ax.set_ylabel("µs per image", fontsize=8)
        ax.legend(fontsize=7)
    return _finish(fig, title, path)


def plot_layer_benchmarks(table: pd.DataFrame, out_dir: Path, allow_smoke: bool = False) -> list[Path]:
    """Per-layer figures (PNG) in ``out_dir``: time per provider at the headline batch and layout for each dtype,
    the speed-up over eager and compile per dtype, time per image vs batch; returns their paths."""
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
    """``column`` vs batch, a panel per variant and mode, a line per provider (colour) and dtype (marker)."""
    variants = sorted(rows.kernel.unique())
    modes = [m for m in MODEL_MODES if (rows["mode"] == m).any()]
    fig = Figure(figsize=(6 * len(modes), 3.6 * len(variants)))
    axes = fig.subplots(len(variants), len(modes), squeeze=False)
    for (kernel, mode), ax in zip([(k, m) for k in variants for m in modes], axes.flat, strict=True):
        panel = rows[(rows.kernel == kernel) & (rows["mode"] == mode)]
        for (provider, dtype), data in panel.groupby(["provider", "dtype"], sort=False):
            data = data.sort_values("batch")
            ax.plot(data.batch, data[column], marker=MARKERS[dtype], color=COLOURS[provider],
                    linestyle="-" if dtype == HEADLINE["dtype"] else ":", label=f"{provider} {dtype}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch")
        ax.set_ylabel(label)
        ax.set_title(f"{kernel.split('/')[0]}, {mode}", fontsize=10)
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
    """Markdown: per-layer Triton / eager and Triton / compile time ratios at the headline batch, dtype and layout,
    and the whole network's images/s at the headline batch."""
    lines = []
    layers = table[~table.kernel.str.endswith("/model")]
    if len(layers):
        rows, prefix = _measurements(table, allow_smoke, network=False)
        rows, batch, layout = _headline(rows)
        dtype = _preferred(rows, "dtype", HEADLINE["dtype"])
        times = rows[rows.dtype == dtype].pivot_table(index="kernel", columns=["mode", "provider"], values="ms_p50",
                                                      sort=False)

        def median(mode: str, provider: str) -> pd.Series:
            return times.get((mode, provider), pd.Series(float("nan"), index=times.index))

        lines += [f"{prefix}**Per layer**, batch {batch}, {dtype}, {layout or 'n/a'} (non-spatial layers in their only "
                  f"layout); {_conditions(rows)}. Median ms per call; ratios are Triton time / baseline time "
                  "(below 1: Triton is faster). full = forward + backward; the SGD step is full only.", "",
                  "| layer | Triton ms (full) | eager ms | compile ms | Triton/eager full | forward | backward "
                  "| Triton/compile full |", "|---|---|---|---|---|---|---|---|"]
        for kernel in times.index:
            full = {p: median("full", p)[kernel] for p in PROVIDERS}
            cells = [*full.values(), full["triton"] / full["eager"],
                     median("forward", "triton")[kernel] / median("forward", "eager")[kernel],
                     median("backward", "triton")[kernel] / median("backward", "eager")[kernel],
                     full["triton"] / full["compile"]]
            lines.append(f"| {kernel} | " + " | ".join(_cell(c) for c in cells) + " |")
        lines.append("")
    if table.kernel.str.endswith("/model").any():
        rows, prefix = _measurements(table, allow_smoke, network=True)
        batch = _preferred(rows, "batch", HEADLINE["batch"])
        layout = _preferred(rows, "layout", HEADLINE["layout"])
        rows = rows[(rows.batch == batch) & (rows.layout == layout)]
        speed = rows.pivot_table(index=["kernel", "dtype", "mode"], columns="provider", values="images_per_s",
                                 sort=False)
        lines += [f"{prefix}**Whole network**, batch {batch}, {layout}; {_conditions(rows)}. Images/s (train-step: "
                  "forward, loss, backward, SGD; fp16/bf16: mixed precision); Triton/eager is the time ratio.", "",
                  "| net | dtype | mode | Triton | eager | compile | Triton/eager |", "|---|---|---|---|---|---|---|"]
        for (kernel, dtype, mode), values in speed.iterrows():
            cells = [values.get(p, float("nan")) for p in PROVIDERS]
            lines.append(f"| {kernel.split('/')[0]} | {dtype} | {mode} | " + " | ".join(_cell(c, ",.0f") for c in cells)
                         + f" | {_cell(cells[1] / cells[0])} |")
    return "\n".join(lines)
