"""Run PyTorch's own samples for the six drop-in functions and their modules through alexnet_triton and PyTorch,
and count how many give the same answer (``alexnet_triton/study/measure/pytorch_samples.py`` says how).

Writes, under --out: samples.csv (one row per sample: its shapes and arguments, outcome, message) and
summary.csv (outcomes per function or module and dtype). Runs in whatever mode the package chose (on a CPU:
Triton's interpreter; a few minutes for about 3,300 samples).

    python experiments/pytorch_samples.py [--functions ...] [--modules ...] [--out reports/conformance]
"""

from __future__ import annotations

import argparse
from _checkout import REPO
from pathlib import Path

from tqdm import tqdm

from alexnet_triton.study.measure.pytorch_samples import FUNCTIONS, MODULES, all_cases, conformance, summarise


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--functions", nargs="*", choices=list(FUNCTIONS), default=list(FUNCTIONS),
                        help="OpInfo names (default: all six)")
    parser.add_argument("--modules", nargs="*", choices=MODULES, default=list(MODULES),
                        help="torch.nn module names (default: all)")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "conformance", help="output directory")
    args = parser.parse_args(argv)
    cases = list(all_cases(args.functions, args.modules))
    results = conformance(cases, progress=lambda c: tqdm(c, desc="samples", unit="sample"))
    summary = summarise(results)
    args.out.mkdir(parents=True, exist_ok=True)
    results.to_csv(args.out / "samples.csv", index=False)
    summary.to_csv(args.out / "summary.csv", index=False)
    print(summary.to_string(index=False))
    counted = results[results.outcome != "torch refuses"]
    print(f"same: {(counted.outcome == 'same').sum()} of {len(counted)} samples PyTorch accepts "
          f"({(counted.outcome == 'same').mean():.1%}); different: {(counted.outcome == 'different').sum()}, "
          f"failed: {(counted.outcome == 'failed').sum()}")
    print(f"wrote {args.out / 'samples.csv'}, {args.out / 'summary.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
