"""Compile every Triton kernel ahead of time for NVIDIA and AMD GPUs and record what the compiler made of it.

Runs without a GPU. Each op's launchers run on AlexNet's full-size shapes
(batch 128) with launches captured, each kernel is compiled with every config
it can be launched with for each target (sm_80, sm_90, gfx942), and the
binaries are read: registers, spills, shared memory / LDS, occupancy,
tensor-core / matrix-core instructions (HMMA, HGMMA, MFMA), asynchronous
copies. ``alexnet_triton.study.inspection`` does the work (its ``compilation`` documents
the columns).

Writes reports/kernels/inspection.csv, one row per distinct compilation, and
the figures (registers.png, occupancy.png, shared_memory.png,
matrix_units.png; issue_per_tensor.png when conv kernels were compiled for
sm_80/sm_90: their main loops against the reference GEMM, if compiled too, and
the committed before-state conv_loops_before.csv) next to it, with
conv_lower_bound.csv (``alexnet_triton.study.models.loop_model``: a modelled lower bound
per conv kernel on an H100 SXM from its main loop; not a measurement). Exits 1 when any config fails to compile,
spills, or needs more shared memory / LDS than its target has. ``--loop``
also prints each compilation's main loop (instructions, MMAs, issue per
tensor-core cycle, wgmma wait depth, scalar loads, divisions) and, when the
reference GEMM (op "reference_gemm", each conv layer's forward GEMM) was compiled
with the conv kernels, each conv kernel's best loop against the GEMM's.

    python experiments/inspect_kernels.py [--ops conv] [--cases '2012/conv1/*'] [--targets sm_80 gfx942] [--loop]
        [--kernels _conv2d_weight_grad_kernel]
"""

from __future__ import annotations

import argparse
import atexit
import fnmatch
import os
import shutil
import sys
import tempfile

os.environ.pop("TRITON_INTERPRET", None)  # this process compiles for GPUs: never the interpreter
os.environ["ALEXNET_TRITON_MODE"] = "gpu"
# An empty Triton cache: every kernel is really compiled, and compile times are real.
os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="inspect_kernels_")
atexit.register(shutil.rmtree, os.environ["TRITON_CACHE_DIR"], ignore_errors=True)

import time  # noqa: E402
from _checkout import REPO  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

from alexnet_triton.study.inspection import cases, compilation, figures, tables  # noqa: E402
from alexnet_triton.study.models import loop_model  # noqa: E402

SUMMARY_COLUMNS = ["variant", "layer", "pass", "target", "dtype", "layout", "config", "issue_per_tensor",
                   "reference_config", "reference_issue_per_tensor", "issue_vs_reference"]


def print_loops(table) -> None:
    """The main-loop table of every compilation with one; the conv-vs-reference summary when it has rows."""
    print(tables.loop_table(table).to_string(index=False))
    summary = tables.loop_summary(table)
    if summary.reference_issue_per_tensor.notna().any():
        print()
        print(summary[SUMMARY_COLUMNS].to_string(index=False))


def compiled_again(kept: pd.DataFrame, args: argparse.Namespace) -> pd.Series:
    """The rows of ``kept`` that this ``--kernels`` run compiles again: of those kernels and targets, from a case
    of its ops and patterns (the other ops' and cases' rows of the same kernels stay)."""
    labels = {label for op in args.ops for label, _ in cases.OPS[op]()
              if any(fnmatch.fnmatch(label, pattern) for pattern in args.cases)}
    return (kept.kernel.isin(args.kernels) & kept.target.isin(args.targets)
            & kept.case_list.map(lambda listed: any(case in labels for case in listed.split(";"))))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", nargs="+", default=list(cases.OPS),
                        choices=list(cases.OPS),
                        help="default: every op, reference_gemm too (a yardstick, not a shipped kernel: the "
                             "report's conv-vs-GEMM loop table reads it)")
    parser.add_argument("--cases", nargs="+", default=["*"],
                        help="glob patterns on case labels variant/layer/dtype/layout, e.g. '2012/conv1/*'")
    parser.add_argument("--targets", nargs="+", default=list(compilation.TARGETS), choices=list(compilation.TARGETS))
    parser.add_argument("--kernels", nargs="+", metavar="NAME",
                        help="compile only these kernels (e.g. _conv2d_weight_grad_kernel) and replace their rows in "
                             "--out of the cases compiled (--ops, --cases, --targets), keeping every other row")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "kernels" / "inspection.csv")
    parser.add_argument("--no-plots", action="store_true", help="write the CSV only")
    parser.add_argument("--loop", action="store_true", help="print the main loops and the conv-vs-GEMM summary")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    try:
        table = compilation.inspect_kernels(args.ops, args.targets, args.cases, args.jobs, args.kernels)
    except ValueError as error:
        parser.error(f"--kernels: {error}")
    if args.kernels and args.out.exists():
        kept = pd.read_csv(args.out)
        table = pd.concat([kept[~compiled_again(kept, args)], table]).sort_values(
            ["kernel", "target", "dtypes", "layouts", "config"], ignore_index=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    summary = tables.summarise_inspection(table)
    print(f"wrote {args.out} ({len(table)} rows) in {time.perf_counter() - started:.0f} s; "
          f"{summary['failing']} failing", flush=True)
    for target, numbers in summary["per_target"].items():
        print(f"{target}: {numbers['kernels']} kernels, {numbers['compilations']} compilations, "
              f"{numbers['failing']} failing ({numbers['spilling']} spilling), max registers "
              f"{numbers['max_registers']} ({numbers['max_registers_at']}), min occupancy {numbers['min_occupancy']}, "
              f"{numbers['kernels_using_mma']} kernels with {'/'.join(numbers['mma']) or 'no matrix instructions'}, "
              f"{numbers['kernels_using_async_copy']} with asynchronous copies")
    if not args.no_plots:
        for path in figures.plot_inspection(table, args.out.parent):
            print(f"wrote {path}")
        bounds = loop_model.write_lower_bound(table, args.out.parent, loop_model.layer_benchmarks(REPO / "reports"))
        if bounds:
            print(f"wrote {bounds} (a model: lower bounds of the conv kernels on an H100 SXM from their main loops)")
    if args.loop:
        print_loops(table)
    for row in table[table.status != "ok"].itertuples():
        print(f"FAIL {row.kernel} {row.config} {row.target} {row.example_case}: {row.status}")
    return 1 if summary["failing"] else 0


if __name__ == "__main__":
    sys.exit(main())
