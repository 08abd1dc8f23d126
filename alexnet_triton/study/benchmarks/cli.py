"""experiments/bench.py's command line: time one scope's plan (every layer, or the whole network) into a CSV with
``benchmark.run``, print its summary, optionally draw its figures."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..presentation.benchmark_plots import plot_layer_benchmarks, plot_model_benchmarks, summarise_benchmarks
from ..registries.benchmark_cases import (
    DTYPES,
    LAYOUTS,
    MODEL_PHASES,
    layer_plan,
    model_plan,
    read_benchmarks,
    select,
    smoke,
    timings_in,
)
from ..registries.providers import PROVIDERS
from ..vocabulary import INPUT_GRAD, LAYER_PASSES, WEIGHT_GRAD
from .benchmark import SMOKE_DEVICE, run

# What experiments/bench.py times: scope -> (plan(quick), CSV name, figures of its table).
SCOPES = {"layers": (layer_plan, "layers.csv", plot_layer_benchmarks),
          "model": (model_plan, "model.csv", plot_model_benchmarks)}


def output_path(out: Path | None, repo: Path, csv_name: str) -> Path:
    """``out``, by default reports/benchmarks/<csv_name> on a GPU and runs/bench-smoke/<csv_name> for the smoke test;
    ValueError for smoke rows in reports/."""
    out = (out or repo / ("runs/bench-smoke" if smoke() else "reports/benchmarks") / csv_name).resolve()
    if smoke() and (repo / "reports").resolve() in out.parents:
        raise ValueError(f"{out}: CPU smoke rows are not measurements and never go to reports/")
    return out


def command_line(argv: list[str] | None, description: str, repo: Path) -> int:
    """experiments/bench.py: time a scope's plan (``SCOPES``; narrowed by the filters) into a CSV, print the summary,
    optionally draw the figures. GPU rows go to reports/benchmarks/, smoke rows to runs/bench-smoke/ and never to
    reports/. Returns 1 if a measurement failed."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scope", choices=tuple(SCOPES), help="every layer on its own, or the whole network")
    parser.add_argument("--quick", action="store_true", help="the headline conditions only (GPU)")
    parser.add_argument("--out", type=Path, help="CSV to write (default: reports/benchmarks/ on a GPU, "
                                                 "runs/bench-smoke/ for the CPU smoke test)")
    parser.add_argument("--kernels", nargs="+", help='fnmatch patterns, e.g. "2012/conv*" "*/fc6"')
    parser.add_argument("--providers", nargs="+", choices=tuple(PROVIDERS))
    parser.add_argument("--phases", nargs="+", choices=(*LAYER_PASSES, INPUT_GRAD, WEIGHT_GRAD, *MODEL_PHASES))
    parser.add_argument("--dtypes", nargs="+", choices=tuple(DTYPES))
    parser.add_argument("--layouts", nargs="+", choices=tuple(LAYOUTS))
    parser.add_argument("--batches", nargs="+", type=int)
    parser.add_argument("--plot", action="store_true", help="also draw the figures next to the CSV")
    args = parser.parse_args(argv)
    plan, csv_name, plot = SCOPES[args.scope]
    smoke_test = smoke()
    try:
        out = output_path(args.out, repo, csv_name)
    except ValueError as error:
        parser.error(str(error))
    cases = select(plan(args.quick), args.kernels, args.providers, args.phases, args.dtypes, args.layouts,
                   args.batches)
    if not cases:
        parser.error("no case of the plan matches these filters")
    print(f"{timings_in(cases)} timings in {len(cases)} cases -> {out}"
          + (f"\n{SMOKE_DEVICE}: tiny scaled-down shapes" if smoke_test else ""), flush=True)
    failures = run(cases, out).failures
    table = read_benchmarks(out)
    if len(table):
        print(summarise_benchmarks(table, allow_smoke=smoke_test))
    if args.plot and len(table):
        for path in plot(table, out.parent, allow_smoke=smoke_test):
            print(f"wrote {path}")
    print(f"wrote {out}")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0
