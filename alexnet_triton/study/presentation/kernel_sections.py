"""The report's compile-inspection section: the per-target summary, the conv main loops against the reference GEMM
and the before-state, the modelled lower bound per conv kernel and per training step."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ..inspection import cases, tables
from ..models import loop_model, step_model
from ..registries.gpus import GPUS
from ..vocabulary import INPUT_GRAD, VARIANT_NAMES, WEIGHT_GRAD
from .markdown import image


def _inspection_summary(table: pd.DataFrame) -> list[str]:
    summary = tables.summarise_inspection(table)
    lines = [f"Every kernel compiled ahead of time with each config it can be launched with, on AlexNet's "
             f"full-size shapes (batch 128), every dtype and layout, and on one AlexNet-sized case of each "
             f"specialisation the ops compile for PyTorch's other arguments (cases "
             f"`{cases.DROP_IN}/...`: a dilated conv, a dilated ceil_mode pool and its indices, the cross-entropy "
             f"options): {summary['kernels']} kernels, "
             f"{summary['compilations']} compilations (Triton {', '.join(summary['triton'])}), "
             f"{summary['failing']} failing. Data: `kernels/inspection.csv`.", "",
             "| target | kernels | compilations | failing | spilling | max registers | lowest occupancy "
             "| kernels with matrix instructions | kernels with async copies |", "|---" * 9 + "|"]
    for target, t in summary["per_target"].items():
        mma = f"{t['kernels_using_mma']} ({'/'.join(t['mma']) or 'none'})"
        lines.append(f"| {target} | {t['kernels']} | {t['compilations']} | {t['failing']} | {t['spilling']} | "
                     f"{t['max_registers']} | {t['min_occupancy']:.3f} | {mma} | {t['kernels_using_async_copy']} |")
    return lines + ["", "Registers are per thread (NVIDIA) or per lane, VGPR + AGPR (AMD); occupancy is the "
                    "theoretical fraction of resident warps (waves) the registers and shared memory allow."]


def _issue_cell(row: dict) -> str:
    """One conv pass's best issue/tensor: "**0.439** (1.76× ref; before 16.56)"; "none ok" when no config of
    the pass compiled with status ok."""
    if pd.isna(row["issue_per_tensor"]):
        cell = "none ok"  # every config spilled or overflowed shared memory
    else:
        cell = f"**{row['issue_per_tensor']:.3f}**"
    notes = []
    if pd.notna(row["issue_vs_reference"]):
        notes.append(f"{row['issue_vs_reference']:.2f}× ref")
    if pd.notna(row["before_issue_per_tensor"]):
        notes.append(f"before {row['before_issue_per_tensor']:.2f}")
    return cell + (f" ({'; '.join(notes)})" if notes else "")


def _main_loop_lines(reports: Path, table: pd.DataFrame) -> list[str]:
    """Per NVIDIA target, each conv layer x pass's best issue/tensor (bf16, channels_last) against the reference
    GEMM and the before-state; the figure; the modelled lower bound of kernels/conv_lower_bound.csv."""
    if not tables.has_main_loops(table):
        return ["", "_This inspection table has no main-loop columns: `python experiments/inspect_kernels.py` "
                "adds them (issue slots per tensor-core cycle of every GEMM-like kernel)._"]
    folder = reports / "kernels"
    before = tables.read_before(folder)
    data = tables.issue_comparison(table, before)
    lines = ["", "### Conv main loops: issue slots per tensor-core cycle (static analysis of the SASS)", "",
             "Each conv pass's main loop as compiled for sm_90 / sm_80 (bf16, channels_last, the shipped config "
             "with the least issue/tensor): instructions per warp and iteration / the tensor-core cycles its MMAs "
             "take (`alexnet_triton/study/inspection/sass_loop.py`). One scheduler issues about one instruction per "
             "clock, so above 1 the tensor cores cannot be kept busy; counted from the machine code, not measured. "
             "\"ref\": the conv's value / the reference GEMM's best on the layer's forward GEMM (a plain Triton "
             "matmul, column \"reference GEMM\"); \"before\": the conv kernels of commit "
             f"{tables.before_commit(before)}, "
             f"measured once with the same analysis (`kernels/{tables.BEFORE_FILE}`). Goals: "
             + ", ".join(f"{goal:g} on {target}" for target, goal in tables.ISSUE_GOALS.items()) + "."]
    for target, rows in data.groupby("target", sort=False):
        lines += ["", f"**{target}**", "", "| network | layer | reference GEMM | forward | input grad | weight grad |",
                  "|---" * 6 + "|"]
        for (variant, layer), group in rows.groupby(["variant", "layer"], sort=False):
            cells = {row["pass"]: _issue_cell(row) for row in group.to_dict("records")}
            reference = group.reference_issue_per_tensor.dropna()
            lines.append(f"| {VARIANT_NAMES.get(str(variant), variant)} | {layer} | "
                         f"{f'{reference.iloc[0]:.3f}' if len(reference) else '–'} | "
                         + " | ".join(cells.get(p, "–") for p in tables.CONV_PASSES.values()) + " |")
    figure = folder / "issue_per_tensor.png"
    if figure.is_file():
        lines += ["", image(figure, reports, "issue per tensor")]
    lines += _lower_bound_lines(reports)
    if (step_table := step_model.read_step_table(reports)) is not None:
        lines += step_model.report_lines(step_table)  # its figure: among the inspection section's
    return lines


def _lower_bound_lines(reports: Path) -> list[str]:
    path = reports / "kernels" / loop_model.LOWER_BOUND_FILE
    if not path.is_file():
        return []
    table = pd.read_csv(path, dtype={"variant": str})
    if table.empty:
        return []
    gpu = table.gpu.iloc[0]
    lines = ["", f"### A modelled lower bound per conv kernel, {GPUS[gpu].name} (a model, not a measurement)", "",
             f"Batch {cases.BATCH}, {table.dtype.iloc[0]}, {table.layout.iloc[0]}. Each "
             "launch takes at least the largest of: the roofline time (FLOPs and minimum bytes of the pass against the "
             "published peaks), the issue time (the busiest SM's programs x main-loop iterations x loop "
             "instructions x warps, issued by 4 schedulers one instruction per clock) and the tensor time (the "
             "same with the MMAs' tensor-core cycles, so with tile padding and wave quantisation), at "
             f"{loop_model.clock_hz(gpu) / 1e9:.2f} GHz (the clock of the published tensor peak) on "
             f"{GPUS[gpu].sms} SMs "
             "(`alexnet_triton/study/models/loop_model.py`). Prologue, epilogue and unhidden latency are left out, so "
             "the real time is longer. Every shipped config is priced and the least bound kept (\"configs\": how "
             "many; the autotuner launches one of them), so the config may differ from the least-issue one above. "
             f"conv1 has no input gradient in training. A measured gradient (\"{INPUT_GRAD}\", \"{WEIGHT_GRAD}\" "
             "benchmark modes) also runs the ReLU-mask / bias-grad pass. Data: `kernels/conv_lower_bound.csv`."
             + ("" if table.measured_p50_us.notna().any() else " No GPU measurement of these kernels yet: the "
                "measured column is empty."), "",
             "| network | layer | pass | config (of configs) | programs | waves | iterations | roofline µs | issue µs "
             "| tensor µs | **bound µs** | bound by | measured p50 µs |", "|---" * 13 + "|"]
    for row in table.to_dict("records"):
        measured = f"{row['measured_p50_us']:.1f}" if pd.notna(row["measured_p50_us"]) else ""
        lines.append(f"| {VARIANT_NAMES.get(row['variant'], row['variant'])} | {row['layer']} | {row['pass']} | "
                     f"{row['config']} ({row['configs']}) | {row['programs']} | {row['waves']} | "
                     f"{row['iterations']:g} | "
                     f"{row['roofline_us']:.1f} | {row['issue_us']:.1f} | {row['tensor_us']:.1f} | "
                     f"**{row['bound_us']:.1f}** | {row['bound_by']} | {measured} |")
    return lines


def inspection_body(reports: Path) -> Callable[[pd.DataFrame], list[str]]:
    """The compile-inspection section: the per-target summary, then the conv main loops and the lower bound."""
    def body(table: pd.DataFrame) -> list[str]:
        return _inspection_summary(table) + _main_loop_lines(reports, table)
    return body
