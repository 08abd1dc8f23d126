"""Kernel launches and bytes of one AlexNet training step, Triton path vs PyTorch eager: counted, not timed.

Both variants, full size, fp32 NCHW, dropout on, SGD with momentum and weight decay. Writes, under --out:
launches.csv (launches and bytes per kernel / ATen op and phase), summary.csv (per phase and for the whole
step, with Triton / eager ratios) and traffic.png. What is counted and how:
``alexnet_triton/study/traffic.py``. Runs on the CPU: the Triton kernels are captured, not run; the eager
step runs for real (under a minute for both variants at batch 128 on 2 cores).

    python experiments/traffic.py [--batch 128] [--variants 2012 torchvision] [--out reports/traffic]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from _checkout import REPO

from alexnet_triton.model import VARIANTS
from alexnet_triton.study.traffic import PATHS, count_training_step, launches_by_name, plot_traffic, summarise


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "traffic")
    args = parser.parse_args(argv)
    launches = pd.concat([count_training_step(variant, path, args.batch)
                          for variant in args.variants for path in PATHS], ignore_index=True)
    summary = summarise(launches)
    args.out.mkdir(parents=True, exist_ok=True)
    launches_by_name(launches).to_csv(args.out / "launches.csv", index=False)
    summary.to_csv(args.out / "summary.csv", index=False)
    plot_traffic(summary, args.out / "traffic.png")
    print(summary.to_string(index=False))
    print(f"wrote {args.out / 'launches.csv'}, {args.out / 'summary.csv'}, {args.out / 'traffic.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
