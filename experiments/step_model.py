"""The modelled lower bound of one whole training step, kernel by kernel: a model from the SASS, no GPU needed.

Captures the launches of one training step of the Triton network (both variants, batch 128, channels_last, bf16
mixed precision and fp32-TF32; the SGD step separate, and fused into the linear weight gradients as with
``train.py --fused-update``) as an H100 / H200 SXM and an A100 SXM would launch them, prices each from its
grid, its main loop in reports/kernels/inspection.csv (GEMM-like kernels) and the bytes it moves
(``alexnet_triton.study.models.step_model``), and writes reports/kernels/step_lower_bound.csv and
step_lower_bound.png. Prints the step rows and, on the H100 SXM, each layer x pass. Not a measurement.

    python experiments/step_model.py [--host-us US] [--reports reports]
"""

from __future__ import annotations

import argparse
import os

os.environ.pop("TRITON_INTERPRET", None)  # the GPU path's launches: never the interpreter's
os.environ["ALEXNET_TRITON_MODE"] = "gpu"

from _checkout import REPO  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

from alexnet_triton.study.models import step_model  # noqa: E402

PASS_COLUMNS = ["variant", "dtype", "update", "layer", "pass", "launches", "roofline_us", "bound_us", "host_us"]
STEP_COLUMNS = ["gpu", "dtype", "variant", "update", "launches", "roofline_us", "bound_us", "ratio", "images_per_s",
                "host_us", "measured_us"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=Path, default=REPO / "reports", help="the reports folder")
    parser.add_argument("--host-us", type=float,
                        help="µs of Python per Triton launch in a training step (default: measured on this CPU, "
                             "the reports folder's host/host_cost.csv from experiments/host_cost.py)")
    args = parser.parse_args(argv)
    if args.host_us is not None and args.host_us < 0:
        parser.error(f"--host-us must be >= 0, got {args.host_us}")
    try:
        paths = step_model.write_step_outputs(args.reports, args.host_us)
    except FileNotFoundError as error:
        parser.error(str(error))
    if not paths:
        parser.error(f"{args.reports / 'kernels' / 'inspection.csv'}: missing or without main-loop columns "
                     "(run experiments/inspect_kernels.py first)")
    table = pd.read_csv(paths[0])
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(step_model.step_rows(table)[STEP_COLUMNS].round(2).to_string(index=False))
        passes = table[(table.kernel == "all") & (table.gpu == "h100-sxm")]
        print(passes[PASS_COLUMNS].to_string(index=False))
    print("\n".join(f"wrote {path}" for path in paths) + f"  ({step_model.MODEL_LABEL})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
