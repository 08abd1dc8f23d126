"""Measure the host's share of a training step on this CPU: Python microseconds per step and per launch before
Triton's launcher (``alexnet_triton.study.measure.host_cost``), for both variants (the tests' scaled nets: the same
launches as at full size, with PyTorch's few CPU copies kept small).

Runs without a GPU (GPU mode, launches stopped before Triton's launcher); the CSV's rows say so in ``measured_on``.

    python experiments/host_cost.py [--steps 20] [--variants 2012] [--out reports/host/host_cost.csv]
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.pop("TRITON_INTERPRET", None)  # the GPU path's dispatch is measured: never the interpreter
os.environ["ALEXNET_TRITON_MODE"] = "gpu"

from _checkout import REPO  # noqa: E402

import pandas as pd  # noqa: E402

from alexnet_triton.study.measure.host_cost import COLUMNS, REPORT, measure_host_cost  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps (after 2 warm-up steps)")
    parser.add_argument("--variants", nargs="+", choices=("2012", "torchvision"), default=["2012", "torchvision"])
    parser.add_argument("--out", default=str(REPO / "reports" / REPORT))
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    rows = [measure_host_cost(variant, steps=args.steps) for variant in args.variants]
    table = pd.DataFrame(rows, columns=COLUMNS)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    table.to_csv(args.out, index=False)
    for row in rows:
        print(f"{row['variant']}: {row['step_us']:.0f} us of Python per step ({row['launches_per_step']} launches, "
              f"{row['step_us_per_launch']:.1f} us each; {row['launch_us']:.0f} us inside runtime.launch, "
              f"{row['allocation_us']:.0f} us allocating outputs) [{row['measured_on']}]")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
