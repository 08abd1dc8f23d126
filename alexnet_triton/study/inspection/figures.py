"""The inspection figures: per target, every compilation's registers, occupancy and shared memory against the
target's limits, the matrix units and asynchronous copies the binaries use, and each conv pass's issue slots per
tensor-core cycle against the reference GEMM and the before-state. Static analysis of compiled code, not a GPU
measurement."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ...architecture import CONV_LAYERS
from ..vocabulary import FORWARD, INPUT_GRAD, VARIANT_NAMES, WEIGHT_GRAD
from .cases import BATCH, DTYPES
from .compilation import TARGETS, Target
from .tables import (
    CONV_PASSES,
    ISSUE_GOALS,
    before_commit,
    has_main_loops,
    issue_comparison,
    read_before,
    short_name,
    targets_in,
)


def _conditions(table: pd.DataFrame) -> str:
    versions = ", ".join(sorted(set(table.triton.astype(str))))
    return (f"Triton {versions}; compiled ahead of time for {', '.join(targets_in(table))}, not run; "
            f"AlexNet layers at batch {BATCH}, full size")


def _dtype_colour(dtypes: str) -> str:
    """One colour per dtype; grey for compilations shared by several dtypes (kernels without dots)."""
    colours = {"fp16": "tab:blue", "bf16": "tab:green", "fp32-ieee": "tab:orange", "fp32-tf32": "tab:purple",
               "fp32": "tab:orange"}
    names = dtypes.split()
    return colours.get(names[0], "tab:grey") if len(names) == 1 else "tab:grey"


_PASS_SHORT = {FORWARD: "fwd", INPUT_GRAD: "dgrad", WEIGHT_GRAD: "wgrad"}


FAILURE_MARKERS = {"spills": "x", "shared memory over the limit": "^", "compile error": "s"}


def _strip_figure(table: pd.DataFrame, column: str, scale: float, label: str,
                  limits: Callable[[Target], float] | None, title: str, path: Path) -> Path:
    """One panel per target: ``column`` / ``scale`` of every compilation per kernel (a point per config, dtype and
    layout, coloured by dtype), the target's limit as a dashed line, failures in red (compile errors on the
    limit)."""
    kernels = sorted(table.kernel.unique(), key=short_name, reverse=True)
    targets = targets_in(table)
    fig = Figure(figsize=(5.2 * len(targets), 0.3 * len(kernels) + 2.4), layout="constrained")
    axes = fig.subplots(1, len(targets), sharey=True, squeeze=False)[0]
    rng = np.random.default_rng(0)
    for ax, name in zip(axes, targets, strict=True):
        limit = limits(TARGETS[name]) / scale if limits else None
        rows = table[table.target == name]
        y = rows.kernel.map({k: i for i, k in enumerate(kernels)}) + rng.uniform(-0.25, 0.25, len(rows))
        x = rows[column].astype(float) / scale
        ok = rows.status == "ok"
        ax.scatter(x[ok], y[ok], s=14, alpha=0.6, c=[_dtype_colour(d) for d in rows["dtypes"][ok]], linewidths=0)
        for failure, marker in FAILURE_MARKERS.items():
            failed = rows.status.str.startswith(failure)
            if failed.any():
                ax.scatter(x[failed].fillna(limit or 0.0), y[failed], s=36, marker=marker, c="red",
                           label=f"{failure} ({failed.sum()})")
        if limit is not None:
            ax.axvline(limit, color="black", linestyle="--", linewidth=1, label=f"limit {limit:g}")
        ax.set_title(name)
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlim(left=0)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=8)
    axes[0].set_yticks(range(len(kernels)), [short_name(k) for k in kernels], fontsize=8)
    axes[0].set_ylim(-0.6, len(kernels) - 0.4)
    handles = [axes[0].scatter([], [], s=14, c=_dtype_colour(d), label=d) for d in DTYPES]
    handles.append(axes[0].scatter([], [], s=14, c="tab:grey", label="several dtypes (one compilation)"))
    fig.legend(handles=handles, loc="outside lower center", ncols=5, fontsize=8, frameon=False)
    fig.suptitle(f"{title}\n{_conditions(table)}", fontsize=10)
    fig.savefig(path, dpi=110)
    return path


def _matrix_unit_figure(table: pd.DataFrame, path: Path) -> Path:
    """Kernels with a dot x (target, dtype): which matrix instructions and asynchronous copies the binaries hold,
    and in how many of the compilations (configs x layouts x layers, spilling ones included)."""
    compiled = table[table.registers.notna()]
    dot_kernels = sorted(compiled.kernel[compiled.mma != "none"].unique(), key=short_name)
    targets = targets_in(table)
    dtypes = [d for d in DTYPES if compiled["dtypes"].str.contains(d).any()]
    columns = [(t, d) for t in targets for d in dtypes]
    share = np.full((len(dot_kernels), len(columns)), np.nan)
    fig = Figure(figsize=(1.15 * len(columns) + 2.5, 0.6 * len(dot_kernels) + 2.2), layout="constrained")
    ax = fig.subplots()
    for i, kernel in enumerate(dot_kernels):
        for j, (target, dtype) in enumerate(columns):
            rows = compiled[(compiled.kernel == kernel) & (compiled.target == target)
                            & compiled["dtypes"].str.split().apply(lambda names, d=dtype: d in names)]
            if rows.empty:
                continue
            share[i, j] = (rows.mma != "none").mean()
            text = "\n".join(f"{'+'.join(sorted(set(rows[c]) - {'none'})) or '-'} {(rows[c] != 'none').sum()}/"
                             f"{len(rows)}" for c in ("mma", "async_copy"))
            ax.text(j, i, text, ha="center", va="center", fontsize=7)
    ax.imshow(share, cmap="Greens", vmin=-0.1, vmax=2.5, aspect="auto")
    ax.set_xticks(range(len(columns)), [f"{t}\n{d}" for t, d in columns], fontsize=8)
    ax.set_yticks(range(len(dot_kernels)), [short_name(k) for k in dot_kernels], fontsize=8)
    for boundary in range(len(dtypes), len(columns), len(dtypes)):
        ax.axvline(boundary - 0.5, color="black", linewidth=1.5)
    ax.tick_params(length=0)
    fig.suptitle("Matrix instructions (line 1) and asynchronous copies (line 2) in the binaries: compilations using "
                 f"them / compiled (green: matrix units)\n{_conditions(table)}", fontsize=10)
    fig.savefig(path, dpi=110)
    return path


def plot_inspection(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write the inspection figures (PNG) to ``out_dir``: registers, occupancy, shared memory / LDS, matrix-unit
    and async-copy use, and, when the table has conv main loops, their issue per tensor-core cycle
    (``plot_issue_per_tensor``, with the before-state of ``out_dir``/conv_loops_before.csv if there); returns
    their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        _strip_figure(table, "registers", 1, "registers per thread (lane)", lambda t: t.registers,
                      "Registers per thread (AMD: per lane, VGPRs + AGPRs, at most 256 + 256); dashed: the most "
                      "before spilling to memory", out_dir / "registers.png"),
        _strip_figure(table, "occupancy", 1, "theoretical occupancy", None,
                      "Theoretical occupancy: resident warps of 64 per SM (NVIDIA), waves of 8 per SIMD (AMD)",
                      out_dir / "occupancy.png"),
        _strip_figure(table, "shared_bytes", 1024, "KiB per block (workgroup)", lambda t: t.shared_per_block,
                      "Shared memory (NVIDIA) / LDS (AMD) per block; dashed: the most a block may use",
                      out_dir / "shared_memory.png"),
        _matrix_unit_figure(table, out_dir / "matrix_units.png"),
    ] + ([plot_issue_per_tensor(table, read_before(out_dir), out_dir / "issue_per_tensor.png")]
         if has_main_loops(table) else [])


def plot_issue_per_tensor(table: pd.DataFrame, before: pd.DataFrame | None, path: Path, dtype: str = "bf16",
                          layout: str = "channels_last") -> Path:
    """Issue slots per tensor-core cycle of each conv layer x pass's best shipped config (``loop_summary``), a
    panel per NVIDIA target, against the reference GEMM's best on the layer's forward GEMM and the before-state
    (dashed); log scale, with 1.0 (above it the tensor cores cannot be kept busy) and the goal
    (``ISSUE_GOALS``). Static analysis of compiled SASS, not a GPU measurement."""
    data = issue_comparison(table, before, dtype, layout)
    targets = [t for t in ISSUE_GOALS if t in set(data.target)]
    slots = [(v, layer, p) for v in list(CONV_LAYERS) for layer in (c.name for c in CONV_LAYERS[v])
             for p in CONV_PASSES.values()]
    x = {slot: i + 0.8 * (i // 3) for i, slot in enumerate(slots)}  # a gap after each layer's three passes
    fig = Figure(figsize=(15, 4.2 * max(len(targets), 1) + 1.2), layout="constrained")
    axes = fig.subplots(max(len(targets), 1), 1, squeeze=False)[:, 0]
    pass_colours = dict(zip(CONV_PASSES.values(), ("tab:blue", "tab:orange", "tab:green"), strict=True))
    for ax, target in zip(axes, targets, strict=False):
        rows = data[data.target == target]
        for (variant, layer), group in rows.groupby(["variant", "layer"], sort=False):
            xs = [x[(variant, layer, p)] for p in group["pass"]]
            ax.plot(xs, group.issue_per_tensor, color="tab:blue", lw=1, zorder=3)
            ax.scatter(xs, group.issue_per_tensor, c=[pass_colours[p] for p in group["pass"]], s=40, zorder=4,
                       edgecolors="black", linewidths=0.5)
            for slot_x, value in zip(xs, group.issue_per_tensor, strict=True):
                if pd.isna(value):  # no compilation of status ok (spills, too much shared memory)
                    ax.text(slot_x, 0.04, "none ok", transform=ax.get_xaxis_transform(), rotation=90, ha="center",
                            va="bottom", fontsize=7, color="red")
            if group.before_issue_per_tensor.notna().any():
                ax.plot(xs, group.before_issue_per_tensor, color="tab:red", ls="--", lw=1, marker="s",
                        markerfacecolor="none", markersize=6, zorder=2)
            reference = group.reference_issue_per_tensor.dropna()
            if len(reference):
                ax.hlines(reference.iloc[0], min(xs) - 0.35, max(xs) + 0.35, color="black", lw=2, zorder=3)
        ax.axhline(1.0, color="0.3", lw=1)
        ax.text(0.002, 1.0, " 1.0: tensor cores cannot be kept busy above", transform=ax.get_yaxis_transform(),
                va="bottom", fontsize=8, color="0.3")
        goal = ISSUE_GOALS[target]
        ax.axhline(goal, color="tab:green", lw=1, ls=":")
        ax.text(0.002, goal, f" goal {goal:g}", transform=ax.get_yaxis_transform(), va="top", fontsize=8,
                color="tab:green")
        ax.set_yscale("log")
        ax.set_ylabel("issue slots per tensor-core cycle")
        ax.set_title(f"{target} (tensor rates of an {'H100' if target == 'sm_90' else 'A100'})", fontsize=10,
                     loc="left")
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.set_xticks([x[s] for s in slots], [f"{s[1]} {_PASS_SHORT[s[2]]}" for s in slots], rotation=90,
                      fontsize=7)
        middle = len(slots) // 2
        ax.axvline((x[slots[middle - 1]] + x[slots[middle]]) / 2, color="0.5", lw=0.8)
        for variant in list(CONV_LAYERS):
            own = [x[s] for s in slots if s[0] == variant]
            ax.text(sum(own) / len(own), 0.97, VARIANT_NAMES[variant], transform=ax.get_xaxis_transform(),
                    ha="center", va="top", fontsize=9)
    handles = [Line2D([], [], color="tab:blue", marker="o", markerfacecolor=colour, markeredgecolor="black",
                      label=f"now, best shipped config: {name}") for name, colour in pass_colours.items()]
    handles += [Line2D([], [], color="tab:red", ls="--", marker="s", markerfacecolor="none",
                       label=f"before (commit {before_commit(before)}), best config"),
                Line2D([], [], color="black", lw=2, label="reference GEMM, best config (the layer's forward GEMM)")]
    fig.legend(handles=handles, loc="outside lower center", ncols=5, fontsize=8, frameon=False)
    versions = ", ".join(sorted(set(table.triton.astype(str))))
    fig.suptitle(f"Conv main loops, {dtype} {layout}, AlexNet layers at batch {BATCH}: issue slots per tensor-core "
                 f"cycle = loop instructions per warp / its MMAs' tensor cycles\nStatic analysis of compiled SASS "
                 f"(Triton {versions}, compiled ahead of time, not run): not a GPU measurement. Lower is better.",
                 fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
