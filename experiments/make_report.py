"""Regenerate reports/: rerun the analyses that need no GPU, draw the benchmark figures if GPU rows exist, and
write reports/README.md.

Each analysis runs as its own script, in a fresh process (the compile inspection needs its own execution mode):
  inspection  experiments/inspect_kernels.py   ~15 min on 2 cores (sm_80, sm_90, gfx942)
  memory      experiments/memory.py            saved-for-backward bytes per image, both variants, Triton vs eager vs
                                               torch.compile (its partition, no code generation; ~1 min)
  traffic     experiments/traffic.py           launches and bytes of one training step, Triton vs eager vs
                                               torch.compile (C++ code generated for the CPU target; ~10 min)
  roofline    experiments/roofline.py          the model, with the measured points of benchmarks/layers.csv if any
  step_model  experiments/step_model.py        every kernel of one training step priced from inspection.csv: a
                                               modelled lower bound per layer x pass and per step (~1 min)
  training    experiments/train.py, default CPU run (forced into the interpreter: the same 2-3 minute run on a
              GPU machine), copied to reports/training/
Then, from reports/kernels/inspection.csv (committed or just rewritten): with the inspection reused, its figures
redrawn without recompiling (registers, occupancy, shared_memory, matrix_units); when it has the main-loop columns,
kernels/issue_per_tensor.png and kernels/conv_lower_bound.csv (alexnet_triton.study.models.loop_model, a model), with
the measured p50 of reports/benchmarks/layers.csv beside each bound where GPU rows exist.
GPU benchmarks are never run here: experiments/gpu_study.py runs them, then this script.

    python experiments/make_report.py                            # everything (~25 min on a 2-core CPU)
    python experiments/make_report.py --reuse inspection training  # keep those outputs, rerun the rest
    python experiments/make_report.py --reuse all                # only reports/README.md (and benchmark figures)
    python experiments/make_report.py --benchmarks DIR           # merge a gpu_study.py folder, redraw, rebuild

--benchmarks DIR: the folder of ``experiments/gpu_study.py --out DIR`` (GPU rows only; a rehearsal's is refused)
is copied into reports/benchmarks/, its measured points drawn on the roofline of the device they ran on
(reports/roofline/measured-<gpu>-<dtype>.png), and the report rebuilt; the slow analyses are reused unless named
by --rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from _checkout import REPO
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch
import triton
from gpu_study import FILES as STUDY_FILES

from alexnet_triton.study.inspection.figures import plot_inspection
from alexnet_triton.study.models.loop_model import write_loop_outputs
from alexnet_triton.study.models.roofline import plot_roofline, roofline_table
from alexnet_triton.study.presentation.report import write_report
from alexnet_triton.study.registries.benchmark_cases import BENCHMARK_FILES, read_benchmarks
from alexnet_triton.study.registries.gpus import gpu_named
from alexnet_triton.training import held_out_line

REPORTS = REPO / "reports"
EXPERIMENTS = REPO / "experiments"
ANALYSES = {"inspection": "inspect_kernels.py", "memory": "memory.py", "traffic": "traffic.py",
            "roofline": "roofline.py", "step_model": "step_model.py"}  # step_model reads inspection.csv
TRAINING_FILES = ("metrics.csv", "curves.png", "result.json")


def merge_benchmarks(folder: Path, reports: Path) -> list[Path]:
    """Copy a GPU study's files into reports/benchmarks/ and draw its per-layer points on its device's roofline;
    ValueError when the folder holds no GPU rows. Returns the roofline figures."""
    found = [folder / name for name in STUDY_FILES if (folder / name).is_file()]
    if not any(p.name in BENCHMARK_FILES for p in found):
        raise ValueError(f"{folder}: no model.csv or layers.csv of experiments/gpu_study.py")
    table = read_benchmarks(*(p for p in found if p.name in BENCHMARK_FILES))
    gpu_rows = table[table.run_kind == "gpu"]
    if gpu_rows.empty:
        raise ValueError(f"{folder}: no GPU rows ({len(table)} cpu-smoke rows: a rehearsal is not a measurement)")
    out = reports / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    for path in found:
        shutil.copy2(path, out / path.name)
    figures = []
    for (device, dtype, batch), rows in gpu_rows.groupby(["device", "dtype", "batch"]):
        gpu = gpu_named(device)
        if gpu is None:
            print(f"no roofline for {device}: not among gpus.GPUS")
            continue
        figures.append(plot_roofline(roofline_table(gpu, dtype, int(batch)), reports / "roofline" /
                                     f"measured-{gpu}-{dtype}-b{batch}.png", rows))
    return figures


def run_training(out: Path) -> int:
    """The README's default CPU run, in the interpreter; its metrics, curves and held-out line go to ``out``."""
    environment = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    environment["ALEXNET_TRITON_MODE"] = "interpreter"
    with tempfile.TemporaryDirectory(prefix="make_report_train_") as run_dir:
        started = time.perf_counter()
        result = subprocess.run([sys.executable, str(EXPERIMENTS / "train.py"), "--out", run_dir], cwd=REPO,
                                env=environment, stdout=subprocess.PIPE, text=True)
        wall = time.perf_counter() - started
        print(result.stdout, end="")
        if result.returncode:
            return result.returncode
        out.mkdir(parents=True, exist_ok=True)
        for name in TRAINING_FILES:
            shutil.copy2(Path(run_dir) / name, out / name)
    final = json.loads((out / "result.json").read_text())
    (out / "held_out.txt").write_text(
        f"$ python experiments/train.py   # {wall:.0f} s wall on {os.cpu_count()} CPU cores "
        f"({platform.processor() or platform.machine()})\n"
        f"{held_out_line(final, final['num_classes'], final['skipped'], final['training_s'])}\n")
    return 0


def main(argv=None) -> int:
    summary, _, details = __doc__.partition("\n\n")  # the first paragraph, then the rest: each printed once
    parser = argparse.ArgumentParser(description=summary, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=details)
    parser.add_argument("--reuse", nargs="+", default=[], choices=[*ANALYSES, "training", "all"],
                        help="keep these analyses' committed outputs instead of rerunning them")
    parser.add_argument("--benchmarks", type=Path, metavar="DIR", help="merge this gpu_study.py output folder")
    parser.add_argument("--rerun", nargs="+", default=[], choices=[*ANALYSES, "training"],
                        help="with --benchmarks: rerun these analyses too (default: only the roofline)")
    args = parser.parse_args(argv)
    reuse = set(ANALYSES) | {"training"} if "all" in args.reuse else set(args.reuse)
    if args.benchmarks:
        reuse |= {"inspection", "memory", "traffic", "training"} - set(args.rerun)  # step_model: the measured steps
        try:
            figures = merge_benchmarks(args.benchmarks, REPORTS)
        except (ValueError, FileNotFoundError) as error:
            parser.error(str(error))
        print("\n".join(f"wrote {path}" for path in figures))
    failed = []
    for name, script in ANALYSES.items():
        if name in reuse:
            continue
        print(f"== {name}: experiments/{script}", flush=True)
        if subprocess.run([sys.executable, str(EXPERIMENTS / script)], cwd=REPO).returncode:
            failed.append(name)
    if "training" not in reuse:
        print("== training: experiments/train.py (CPU default run)", flush=True)
        if run_training(REPORTS / "training"):
            failed.append("training")
    inspection = REPORTS / "kernels" / "inspection.csv"
    if "inspection" in reuse and inspection.is_file():  # its figures redrawn from the table, nothing recompiled
        for path in plot_inspection(pd.read_csv(inspection), inspection.parent):
            print(f"wrote {path}")
    # the conv main loops' figure and modelled lower bound, from the inspection table (committed or just rewritten)
    for path in write_loop_outputs(REPORTS):
        print(f"wrote {path}")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    conditions = (f"Built {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on a machine with {os.cpu_count()} CPU "
                  f"cores and {device}; torch {torch.__version__}, triton {triton.__version__}.")
    path = write_report(REPORTS, conditions)
    print(f"wrote {path}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
