"""Time AlexNet's training step (forward, loss, backward, SGD) and inference on the Triton kernels, PyTorch eager
(cuDNN) and torch.compile of the PyTorch model: images/s and peak memory per batch and dtype (columns:
``alexnet_triton.study.benchmark``).

On a GPU: the whole-network part of the study (``benchmark_cases.model_plan``; sweep and time estimate in
experiments/gpu_study.py) into reports/benchmarks/model.csv. Without a GPU: the smoke test (a scaled-down net,
the Triton interpreter, rows marked cpu-smoke) into runs/bench-smoke/model.csv; it checks the harness, not speed.

    python experiments/bench_model.py [--quick] [--kernels "2012/*"] [--providers triton eager]
        [--modes train-step] [--dtypes bf16] [--layouts nchw] [--batches 128] [--out PATH] [--plot]
"""

from __future__ import annotations

from _checkout import REPO

from alexnet_triton.study import benchmark, benchmark_cases, benchmark_plots


def main(argv=None) -> int:
    return benchmark.command_line(argv, __doc__, benchmark_cases.model_plan, "model.csv",
                                  benchmark_plots.plot_model_benchmarks, REPO)


if __name__ == "__main__":
    raise SystemExit(main())
