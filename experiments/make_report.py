"""Regenerate reports/: rerun the analyses that need no GPU, draw the benchmark figures if GPU rows exist, and
write reports/README.md.

Each analysis runs as its own script, in a fresh process (the compile inspection needs its own execution mode):
  inspection  experiments/inspect_kernels.py   ~15 min on 2 cores (sm_80, sm_90, gfx942)
  memory      experiments/memory.py            saved-for-backward bytes per image, both variants
  traffic     experiments/traffic.py           launches and bytes of one training step
  roofline    experiments/roofline.py          the model, with the measured points of benchmarks/layers.csv if any
  training    experiments/train.py, default CPU run (forced into the interpreter: the same 2-3 minute run on a
              GPU machine), copied to reports/training/
GPU benchmarks are never run here: experiments/gpu_study.py runs them, then this script.

    python experiments/make_report.py                            # everything (~20 min on a 2-core CPU)
    python experiments/make_report.py --reuse inspection training  # keep those outputs, rerun the rest
    python experiments/make_report.py --reuse all                # only reports/README.md (and benchmark figures)
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import triton

from alexnet_triton.study.report import write_report

REPO = Path(__file__).resolve().parents[1]
REPORTS = REPO / "reports"
EXPERIMENTS = REPO / "experiments"
ANALYSES = {"inspection": "inspect_kernels.py", "memory": "memory.py", "traffic": "traffic.py",
            "roofline": "roofline.py"}
TRAINING_FILES = ("metrics.csv", "curves.png")


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
        held_out = [line for line in result.stdout.splitlines() if line.startswith("held-out:")]
        if result.returncode or not held_out:
            return result.returncode or 1
        out.mkdir(parents=True, exist_ok=True)
        for name in TRAINING_FILES:
            shutil.copy2(Path(run_dir) / name, out / name)
    result_line = held_out[-1].split("; run directory")[0]  # the run directory was temporary
    (out / "held_out.txt").write_text(f"$ python experiments/train.py   # {wall:.0f} s wall on {os.cpu_count()} CPU "
                                      f"cores ({platform.processor() or platform.machine()})\n{result_line}\n")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--reuse", nargs="+", default=[], choices=[*ANALYSES, "training", "all"],
                        help="keep these analyses' committed outputs instead of rerunning them")
    args = parser.parse_args(argv)
    reuse = set(ANALYSES) | {"training"} if "all" in args.reuse else set(args.reuse)
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
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    conditions = (f"Built {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on a machine with {os.cpu_count()} CPU "
                  f"cores and {device}; torch {torch.__version__}, triton {triton.__version__}.")
    path = write_report(REPORTS, conditions)
    print(f"wrote {path}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
