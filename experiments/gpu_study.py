"""The benchmark study on one CUDA GPU, in one command: every layer and the whole network, Triton vs PyTorch eager
(cuDNN) vs torch.compile, into reports/benchmarks/layers.csv and model.csv, then the report
(experiments/make_report.py), which merges them with the CPU-side analyses.

    python experiments/gpu_study.py            # the study, about 30 minutes on one H100 (estimate below)
    python experiments/gpu_study.py --quick    # headline conditions only, about 10 minutes

The sweep (alexnet_triton/study/benchmark_cases.py); headline conditions: batch 128, bf16, channels_last.
  layers (1,338 timings)
    976  both variants at batch 128: 4 dtypes (fp32-ieee, fp32-tf32, fp16, bf16) x 2 layouts (spatial layers)
         x forward / backward / full, triton and eager;
     74  compile: the 2012 net at batch 128, channels_last, bf16 and fp32-tf32 (26 compile sessions);
    288  the 2012 net's batch sweep (1, 32, 64, 256) at bf16, channels_last, triton and eager (not SGD).
  network (60 timings of inference and train-step = forward, loss, backward, SGD)
     36  both variants at batch 128, channels_last, every dtype, triton and eager, and compile for the 2012 net
         at bf16 and fp32-tf32 (2 sessions, 4 compiles); 8: nchw at bf16; 16: the 2012 net's batch sweep at bf16.

Time estimate for one H100 from empty caches (an estimate: this was written without a GPU):
~0.25 s per timing (do_bench: 25 ms of warm-up, then at least 100 ms of calls; 500 ms for the network) -> ~6 min;
Triton's first compilations (~400 kernel specialisations, ~1 s each) and autotuning (~2.5 configs x ~0.15 s per
GEMM-like kernel and shape) -> ~8 min; cuDNN's algorithm search -> ~1 min; max-autotune (26 per-layer sessions
of ~20 s, forward and backward; 4 network compiles of ~90 s) -> ~14 min. About 30 minutes, possibly 45:
max-autotune also runs coordinate-descent tuning, whose cost was not measured. Triton's and inductor's on-disk
caches make a second run markedly shorter. The progress bars show the time left per part.
--quick: the 2012 net at batch 128, bf16, channels_last, all three providers (111 layer timings in 13 compile
sessions; 6 network timings, 2 compiles): about 10 minutes.

Without a GPU this stops with a message: the CPU smoke test of the same harness is
experiments/bench_layers.py and experiments/bench_model.py.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch
from alexnet_triton.kernels import runtime

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"
OUT = REPO / "reports" / "benchmarks"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="headline conditions only (about 10 minutes)")
    args = parser.parse_args(argv)
    if runtime.INTERPRETER or not torch.cuda.is_available():
        print(f"gpu_study.py measures GPU performance and needs a CUDA GPU (execution mode here: {runtime.MODE}, "
              f"CUDA available: {torch.cuda.is_available()}). Without one, run the CPU smoke test of the same "
              "harness: python experiments/bench_layers.py; python experiments/bench_model.py", file=sys.stderr)
        return 2
    quick = ["--quick"] if args.quick else []
    start = time.perf_counter()
    steps = [("bench_layers.py", "--out", str(OUT / "layers.csv"), *quick),
             ("bench_model.py", "--out", str(OUT / "model.csv"), *quick),
             ("make_report.py", "--reuse", "inspection", "memory", "traffic", "training")]
    failed = []
    for script, *options in steps:
        print(f"== {script} {' '.join(options)}", flush=True)
        if subprocess.run([sys.executable, str(EXPERIMENTS / script), *options], cwd=REPO).returncode:
            failed.append(script)
    print(f"gpu_study: {(time.perf_counter() - start) / 60:.1f} min on {torch.cuda.get_device_name()}; "
          + (f"failures in {', '.join(failed)} (see above)" if failed else f"CSVs in {OUT}, report by make_report.py"))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
