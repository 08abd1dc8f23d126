"""The study's report: ``reports/README.md`` built from the CSVs and figures under ``reports/``.

``write_report(reports)`` reads what the analyses wrote (each section is built from its own files and says
so when they are missing) and draws the benchmark figures when GPU measurements exist. Layout of ``reports/``:
  kernels/inspection.csv + PNGs      ``experiments/inspect_kernels.py`` (compile inspection, no GPU)
  kernels/conv_loops_before.csv      the conv kernels of commit f551264 read the same way (committed once)
  kernels/conv_lower_bound.csv       ``loop_model`` (a model from the SASS), with issue_per_tensor.png
                                     rewritten by ``experiments/make_report.py`` from inspection.csv
  kernels/step_lower_bound.csv + PNG ``experiments/step_model.py`` (``step_model``: every kernel of a training
                                     step, a model from the SASS, the grids and the bytes)
  memory/network.csv, blocks.csv,    ``experiments/memory.py`` (saved-for-backward bytes per image: Triton,
    compiled_modes.csv               eager, torch.compile)
  traffic/summary.csv, launches.csv, ``experiments/traffic.py`` (launches and bytes of one training step: Triton,
    compiled_functions.csv           eager, torch.compile for the CPU target)
  roofline/roofline.csv + PNGs       ``experiments/roofline.py`` (a model from the shapes and published peaks)
  training/metrics.csv, curves.png,  the default CPU run of ``experiments/train.py`` (interpreter)
    held_out.txt
  benchmarks/layers.csv, model.csv   ``experiments/bench.py layers`` / ``bench.py model`` on a GPU only
  benchmarks/torchvision.csv,        ``experiments/gpu_study.py`` on a GPU only (two_gpus: rows only on two GPUs),
    two_gpus.csv                     copied in by ``experiments/make_report.py --benchmarks DIR``
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ..inspection import tables
from ..measure.memory import DTYPE, MIB, NETWORK
from ..models import step_model
from ..models.roofline import summarise_roofline
from ..registries.benchmark_cases import BENCHMARK_FILES, HEADLINE, read_benchmarks
from ..registries.gpus import GPUS
from ..registries.providers import PROVIDERS, SUBJECT, baselines
from ..vocabulary import TRAIN_STEP, VARIANT_NAMES
from .benchmark_plots import plot_layer_benchmarks, plot_model_benchmarks, summarise_benchmarks
from .kernel_sections import inspection_body
from .markdown import COMPILED, image, images, markdown_table, provider_cells, ratio_headers, read_csv
from .memory_sections import memory_body, traffic_body

HEADLINE_ROOFLINE = ("h100-sxm", "bf16")  # the roofline condition the headline table quotes
GPU_STUDY = "python experiments/gpu_study.py"


def _missing(data: str, script: str) -> str:
    return f"_Not generated yet: `{data}` (`python experiments/make_report.py` runs `experiments/{script}`)._"


def _gpu_benchmarks(reports: Path) -> pd.DataFrame | None:
    """The GPU rows of reports/benchmarks/'s model.csv and layers.csv (smoke rows never count), or None."""
    paths = [p for p in (reports / "benchmarks" / name for name in BENCHMARK_FILES) if p.is_file()]
    table = read_benchmarks(*paths) if paths else None
    return None if table is None or not (table.run_kind == "gpu").any() else table[table.run_kind == "gpu"]


HEADLINE_COLUMNS = ("quantity", "network", *(p.label for p in PROVIDERS.values()), *ratio_headers(), "conditions")
COMPILED_CPU = "torch.compile: Inductor's code for the CPU target"


def headline_rows(reports: Path, benchmarks: pd.DataFrame | None) -> list[tuple[str, ...]]:
    """One tuple of HEADLINE_COLUMNS for every headline number found; ``benchmarks``: the GPU benchmark rows,
    if any."""
    rows = []
    memory = reports / "memory" / "network.csv"
    if memory.is_file():
        table = read_csv(memory)
        whole = table[(table.group == NETWORK) & (table.dtype == DTYPE)]
        for variant, group in whole.groupby("variant", sort=False):
            per_provider = group.set_index("provider").saved_bytes_per_image / MIB
            rows.append(("saved for backward, MiB per image", VARIANT_NAMES[variant],
                         *provider_cells(per_provider, ".2f"),
                         f"whole network, {DTYPE}, counted on the CPU (torch.compile: Inductor's partition)"))
    traffic = reports / "traffic" / "summary.csv"
    if traffic.is_file():
        table = read_csv(traffic)
        for variant, group in table[table.phase == "step"].groupby("variant", sort=False):
            per_provider = group.set_index("provider")
            conditions = (f"one training step, batch {group.batch.iloc[0]}, {group.dtype.iloc[0]}, counted on the "
                          f"CPU{f' ({COMPILED_CPU})' if COMPILED in per_provider.index else ''}")
            rows.append(("kernel launches", VARIANT_NAMES[variant], *provider_cells(per_provider.launches, "d"),
                         conditions))
            rows.append(("MB read + written (compulsory)", VARIANT_NAMES[variant],
                         *provider_cells(per_provider.mb, ",.0f"), conditions))
    if benchmarks is not None:
        batch = HEADLINE["batch"]
        steps = benchmarks[(benchmarks.phase == TRAIN_STEP) & (benchmarks.batch == batch)]
        for (kernel, dtype, layout), group in steps.groupby(["kernel", "dtype", "layout"], sort=False):
            speed = group.groupby("provider").images_per_s.median()
            if SUBJECT in speed.index and speed.index.isin(baselines()).any():
                # images/s: above 1 is better, so the ratios are subject / baseline as for the other rows
                rows.append((f"training images/s (measured), {dtype}, {layout}", VARIANT_NAMES[kernel.split("/")[0]],
                             *provider_cells(speed, ",.0f"),
                             f"batch {batch}, {group.device.iloc[0]}, torch {group.torch.iloc[0]}"))
    return rows


def _headline_section(reports: Path, benchmarks: pd.DataFrame | None) -> str:
    rows = headline_rows(reports, benchmarks)
    lines = ["## Headline", "", "| " + " | ".join(HEADLINE_COLUMNS) + " |", "|---" * len(HEADLINE_COLUMNS) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", "Ratios are of the quantity in the row: below 1 is better for memory, launches and bytes, above 1 "
              "for images/s."]
    if benchmarks is None:
        lines += ["", "No GPU measurements yet: no time, throughput or speed-up in this report was measured. "
                  f"On a CUDA GPU, `{GPU_STUDY}` adds them."]
    inspection_csv = reports / "kernels" / "inspection.csv"
    if inspection_csv.is_file():
        summary = tables.summarise_inspection(pd.read_csv(inspection_csv))
        targets = summary["per_target"]
        lines += ["", f"Compile inspection: {summary['kernels']} kernels × {len(targets)} targets "
                  f"({', '.join(targets)}), {summary['compilations']} compilations, {summary['failing']} failing, "
                  f"{summary['spilling']} spilling; matrix instructions ("
                  + ", ".join(f"{'/'.join(t['mma'])} on {name}" for name, t in targets.items())
                  + f") in {max(t['kernels_using_mma'] for t in targets.values())} GEMM kernels."]
    roofline = reports / "roofline" / "roofline.csv"
    if roofline.is_file():
        table = pd.read_csv(roofline)
        gpu, dtype = HEADLINE_ROOFLINE
        steps = table[(table.gpu == gpu) & (table.dtype == dtype) & (table.layer == "step")]
        bounds = "; ".join(f"{VARIANT_NAMES[s.variant]} at least {s.time_ms:.2f} ms (at most {s.images_per_s:,.0f} "
                           f"images/s)" for s in steps.itertuples())
        if bounds:
            lines += ["", f"Roofline model (not a measurement), {GPUS[gpu].name}, {dtype}, batch "
                      f"{steps.batch.iloc[0]}: one training step takes {bounds}."]
    if (step_table := step_model.read_step_table(reports)) is not None:
        lines += step_model.headline_lines(step_table)
    return "\n".join(lines)


def _benchmark_section(reports: Path, table: pd.DataFrame | None) -> str:
    lines = ["## Benchmarks: " + " vs ".join(p.label for p in PROVIDERS.values()), ""]
    if table is None:
        lines += ["**No GPU measurements.** This report was built on a machine without a GPU, and a GPU figure "
                  "appears here only if it was measured on one. The harness is exercised on the CPU by a smoke mode "
                  "(`python experiments/bench.py layers`, `python experiments/bench.py model`; tiny shapes, "
                  "interpreter) whose rows go to `runs/bench-smoke/`, never to `reports/`.", "",
                  f"On a CUDA GPU, `{GPU_STUDY}` times every layer (both variants; forward, backward, full; "
                  "fp32 IEEE and TF32, fp16, bf16; NCHW and channels_last; a batch sweep) and the whole network "
                  "(training step and inference images/s, peak memory), writes `benchmarks/layers.csv` and "
                  "`benchmarks/model.csv`, puts the measured points on the roofline plots and rebuilds this report."]
        return "\n".join(lines)
    out = reports / "benchmarks"
    figures = []
    if (~table.kernel.str.endswith("/model")).any():
        figures += plot_layer_benchmarks(table, out)
    if table.kernel.str.endswith("/model").any():
        figures += plot_model_benchmarks(table, out)
    lines += [summarise_benchmarks(table), "", *(image(p, reports, p.stem) for p in figures)]
    return "\n".join(lines)


# gpu_study's tables of their own: file -> (what it measures, the columns shown)
STUDY_TABLES = {
    "torchvision.csv": ("torchvision.models.alexnet() under use_kernels(), eager and torch.compile",
                        ["model", "provider", "phase", "batch", "dtype", "layout", "ms_p50", "images_per_s",
                         "peak_memory_mb", "device"]),
    "two_gpus.csv": ("the 2012 net's training step on two GPUs: the split, the hybrid, DDP",
                     ["scheme", "batch", "dtype", "layout", "ranks", "ms_per_step", "images_per_s", "peak_memory_mb",
                      "mb_sent_per_rank", "device"])}


def _study_tables_section(reports: Path) -> str:
    """gpu_study's torchvision.csv and two_gpus.csv: their GPU rows as tables, or a line saying there are none."""
    lines = ["## torchvision's AlexNet and two GPUs (measured on a GPU only)", ""]
    for name, (what, columns) in STUDY_TABLES.items():
        path = reports / "benchmarks" / name
        rows = read_csv(path) if path.is_file() else pd.DataFrame(columns=["run_kind"])
        rows = rows[rows.run_kind == "gpu"]
        if rows.empty:
            lines += [f"**No GPU rows** for {what} (`benchmarks/{name}`): `{GPU_STUDY}` measures it on a CUDA GPU "
                      "and `python experiments/make_report.py --benchmarks DIR` copies it here.", ""]
        else:
            lines += [f"{what} (`benchmarks/{name}`, measured):", "", *markdown_table(rows[columns]), ""]
    return "\n".join(lines).rstrip()


def _section(reports: Path, title: str, data: str, script: str, body: Callable[[pd.DataFrame], list[str]]) -> str:
    """A section built by ``body`` from the CSV ``reports/<data>``, then the figures of its folder; when the CSV is
    missing, a line naming the script that makes it. A figure the body already shows is not repeated."""
    path = reports / data
    if not path.is_file():
        return f"## {title}\n\n{_missing(data, script)}"
    lines = body(read_csv(path))
    figures = [shown for shown in images(reports, path.parent.name) if shown not in lines]  # not shown twice
    return "\n".join([f"## {title}", "", *lines, "", *figures])


def _roofline_body(table: pd.DataFrame) -> list[str]:
    gpu, dtype = HEADLINE_ROOFLINE
    return ["FLOPs and minimum bytes of each layer from its shapes, against a GPU's published peaks: lower bounds "
            "on time, not measurements. Measured points join the plots once `benchmarks/layers.csv` holds GPU "
            f"rows. Data: `roofline/roofline.csv` ({', '.join(GPUS[g].name for g in table.gpu.unique())}; "
            f"{', '.join(table.dtype.unique())}).", "",
            summarise_roofline(table[(table.gpu == gpu) & (table.dtype == dtype)])]


def _training_body(reports: Path) -> Callable[[pd.DataFrame], list[str]]:
    """The CPU run's section body; its held-out line comes from training/held_out.txt."""
    def body(metrics: pd.DataFrame) -> list[str]:
        held_out = reports / "training" / "held_out.txt"
        return ["The default `python experiments/train.py` on a CPU-only machine: the 2012 topology at width 1/8 on "
                "67×67 images of the built-in dataset (2 classes, chance 0.5), every layer on the Triton kernels in "
                f"Triton's CPU interpreter, {(metrics.kind == 'step').sum()} SGD steps. A correctness demonstration: "
                "its speed says nothing about a GPU. Data: `training/metrics.csv` (per step and per epoch).", "",
                f"```\n{held_out.read_text().strip()}\n```" if held_out.is_file() else ""]
    return body


def _reproduce_section() -> str:
    return "\n".join([
        "## Reproduce", "",
        "```bash",
        "python experiments/make_report.py                        # every CPU-side analysis, then this file",
        "python experiments/make_report.py --reuse inspection     # keep the compile inspection (~15 min, 2 cores)",
        f"{GPU_STUDY}                         # on a CUDA GPU: the benchmarks, then make_report",
        "```"])


def write_report(reports: Path, conditions: str) -> Path:
    """Write ``reports/README.md`` from what ``reports`` holds (``conditions``: where and with what it was built)."""
    reports = Path(reports)
    header = ("# AlexNet on hand-written Triton kernels: the performance study\n\n"
              f"Generated by `python experiments/make_report.py`; do not edit. {conditions}\n\n"
              "Every number says how it was obtained: *counted* or *modelled* on the CPU, or *measured* on a named "
              "GPU. A GPU time appears only if it was measured on a GPU.")
    benchmarks = _gpu_benchmarks(reports)
    sections = [
        header, _headline_section(reports, benchmarks), _benchmark_section(reports, benchmarks),
        _study_tables_section(reports),
        _section(reports, "Compile inspection (sm_80, sm_90, gfx942; no GPU needed)", "kernels/inspection.csv",
                 "inspect_kernels.py", inspection_body(reports)),
        _section(reports, "Memory saved for backward (no GPU needed)", "memory/network.csv", "memory.py",
                 memory_body(reports)),
        _section(reports, "Launches and traffic of one training step (no GPU needed)", "traffic/summary.csv",
                 "traffic.py", traffic_body(reports)),
        _section(reports, "Roofline (a model, no GPU needed)", "roofline/roofline.csv", "roofline.py", _roofline_body),
        _section(reports, "Training on the CPU (Triton interpreter)", "training/metrics.csv", "train.py",
                 _training_body(reports)),
        _reproduce_section()]
    path = reports / "README.md"
    path.write_text("\n\n".join(sections) + "\n")
    return path
