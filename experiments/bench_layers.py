"""Time every AlexNet layer, forward, backward and both, on the Triton kernels, PyTorch eager (cuDNN) and
torch.compile; one CSV row per measurement (columns: ``alexnet_triton.study.benchmark``).

On a GPU: the per-layer part of the study (``benchmark_cases.layer_plan``; sweep and time estimate in
experiments/gpu_study.py) into reports/benchmarks/layers.csv. Without a GPU: the smoke test (tiny shapes, the
Triton interpreter, rows marked cpu-smoke) into runs/bench-smoke/layers.csv; it checks the harness, not speed.

    python experiments/bench_layers.py [--quick] [--kernels "2012/conv*"] [--providers triton eager]
        [--modes forward] [--dtypes bf16] [--layouts nchw] [--batches 128] [--out PATH] [--plot]
"""

from __future__ import annotations

from _checkout import REPO

from alexnet_triton.study import benchmark, benchmark_cases, benchmark_plots


def main(argv=None) -> int:
    return benchmark.command_line(argv, __doc__, benchmark_cases.layer_plan, "layers.csv",
                                  benchmark_plots.plot_layer_benchmarks, REPO)


if __name__ == "__main__":
    raise SystemExit(main())
