"""Kernel launches and bytes of one AlexNet training step, Triton vs PyTorch eager vs torch.compile: counted, not
timed.

Both variants, full size, fp32 NCHW, dropout on, SGD with momentum and weight decay. Writes, under --out:
launches.csv (launches and bytes per kernel / ATen op / Inductor kernel and phase), summary.csv (per phase and
for the whole step, with the ratios to eager and to torch.compile), compiled_functions.csv (torch.compile: its
generated kernels per phase and the C++ functions that hold them) and traffic.png. What is counted and how:
``alexnet_triton/study/measure/traffic.py``. Runs on the CPU: the Triton kernels are captured, not run; the eager step
runs for real; torch.compile generates C++ for the CPU target (labelled target=cpu, never CUDA) and runs it
(about 10 minutes for both variants at batch 128 on 2 busy cores, mostly C++ compilation).

    python experiments/traffic.py [--batch 128] [--variants 2012 torchvision] [--out reports/traffic]
"""

from __future__ import annotations

import argparse
from _checkout import REPO
from pathlib import Path

import pandas as pd

from alexnet_triton.model import VARIANTS
from alexnet_triton.study.measure.traffic import count_training_step, launches_by_name, plot_traffic, summarise
from alexnet_triton.study.registries.providers import PROVIDERS


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "traffic")
    args = parser.parse_args(argv)
    steps = [count_training_step(variant, provider, args.batch) for variant in args.variants for provider in PROVIDERS]
    launches = pd.concat(steps, ignore_index=True)
    # cpp_functions: per phase, for the providers that compile (empty for the others)
    functions = pd.DataFrame([dict(variant=step.variant.iloc[0], phase=phase, generated_kernels=int(
        ((step.phase == phase) & (step.source == "inductor")).sum()), cpp_functions=count)
        for step in steps for phase, count in step.attrs["cpp_functions"].items()])
    summary = summarise(launches)
    args.out.mkdir(parents=True, exist_ok=True)
    launches_by_name(launches).to_csv(args.out / "launches.csv", index=False)
    summary.to_csv(args.out / "summary.csv", index=False)
    functions.to_csv(args.out / "compiled_functions.csv", index=False)
    plot_traffic(summary, args.out / "traffic.png")
    print(summary.to_string(index=False))
    print(functions.to_string(index=False))
    names = ("launches.csv", "summary.csv", "compiled_functions.csv", "traffic.png")
    print(f"wrote {', '.join(str(args.out / name) for name in names)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
