"""Time AlexNet on the Triton kernels against every provider of ``alexnet_triton.study.registries.providers``
(PyTorch eager with cuDNN, torch.compile): one CSV row per measurement (columns:
``alexnet_triton.study.benchmarks.benchmark``).

  layers  every layer on its own, forward, backward and both (``benchmark_cases.layer_plan``) -> layers.csv
  model   the training step (forward, loss, backward, SGD) and inference of the whole network: images/s and peak
          memory per batch and dtype (``benchmark_cases.model_plan``) -> model.csv

On a GPU: that part of the study (sweep and time estimate in experiments/gpu_study.py) into reports/benchmarks/.
Without a GPU: the smoke test (tiny shapes or a scaled-down net, the Triton interpreter, rows marked cpu-smoke)
into runs/bench-smoke/; it checks the harness, not speed.

    python experiments/bench.py {layers,model} [--quick] [--kernels "2012/conv*"] [--providers triton eager]
        [--phases forward] [--dtypes bf16] [--layouts nchw] [--batches 128] [--out PATH] [--plot]
"""

from __future__ import annotations

from _checkout import REPO

from alexnet_triton.study.benchmarks import cli


def main(argv=None) -> int:
    return cli.command_line(argv, __doc__, REPO)


if __name__ == "__main__":
    raise SystemExit(main())
