"""The roofline model of AlexNet's layers on named GPUs: a model from the shapes, no GPU needed.

Writes reports/roofline/roofline.csv (every GPU of ``gpus.GPUS`` in bf16,
fp32-tf32 and fp32-ieee) and the H100 SXM plots in bf16 and fp32-tf32, then
prints the H100 bf16 summary. A benchmark table's GPU rows (run_kind "gpu")
are overlaid on the plots when the file given by --measured exists.

    python experiments/roofline.py [--batch 128] [--out reports/roofline]
                                   [--measured reports/benchmarks/layers.csv]
"""

from __future__ import annotations

import argparse
from _checkout import REPO
from pathlib import Path

from alexnet_triton.study.models.roofline import (
    plot_roofline,
    roofline_table,
    roofline_tables,
    summarise_roofline,
)
from alexnet_triton.study.registries.benchmark_cases import read_benchmarks
from alexnet_triton.study.registries.gpus import GPUS

TABLE_DTYPES = ("bf16", "fp32-tf32", "fp32-ieee")
PLOTS = (("h100-sxm", "bf16"), ("h100-sxm", "fp32-tf32"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "roofline")
    parser.add_argument("--measured", type=Path, default=REPO / "reports" / "benchmarks" / "layers.csv",
                        help="long-format benchmark CSV; only its run_kind == 'gpu' rows are plotted")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    table = roofline_tables(tuple(GPUS), TABLE_DTYPES, args.batch)
    table.to_csv(args.out / "roofline.csv", index=False, float_format="%.6g")
    print(f"wrote {args.out / 'roofline.csv'} ({len(table)} rows)")
    measured = read_benchmarks(args.measured) if args.measured.is_file() else None
    if measured is None:
        print(f"no measured points: {args.measured} does not exist")
    else:
        print(f"{args.measured}: {(measured['run_kind'] == 'gpu').sum()} GPU rows (cpu-smoke rows are never plotted)")
    for gpu, dtype in PLOTS:
        path = plot_roofline(roofline_table(gpu, dtype, args.batch),
                             args.out / f"roofline-{gpu}-{dtype}-b{args.batch}.png", measured)
        print(f"wrote {path}")
    print()
    print(summarise_roofline(roofline_table(*PLOTS[0], args.batch)))


if __name__ == "__main__":
    main()
