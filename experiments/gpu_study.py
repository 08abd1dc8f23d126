"""The benchmark study on one CUDA GPU, headline first, in one process: a correctness check of the kernels on the
GPU, the whole network's training step, each layer, then the rest of the plan, Triton vs PyTorch eager (cuDNN) vs
torch.compile. Rows are flushed to DIR as they are measured (a killed run leaves what it measured).

    python experiments/gpu_study.py --budget 480 --out DIR   # headline first, within 480 s of wall time
    python experiments/gpu_study.py                          # the whole plan into reports/benchmarks, then the report
    python experiments/gpu_study.py --rehearse [--out DIR]   # the same plan on the CPU (smoke, under 2 minutes)
    python experiments/make_report.py --benchmarks DIR       # afterwards, on any machine: DIR into reports/

DIR receives summary.txt (device, driver, versions, clocks, the plan, what ran, what was skipped and why),
correctness.csv (``gpu_check.COLUMNS``), model.csv and layers.csv (``benchmark.COLUMNS``): 4 files.

The plan; each step's cap is a share of the budget (unspent time passes to the next step), and a timing or check
case that would start after its step's cap is skipped and listed in summary.txt. Expected times, one H100/H200
from empty caches (an estimate: written without a GPU):
  check          min(90 s, 19%): ~65 s. The headline tier compiles and autotunes every kernel at batch 128, bf16,
                 channels_last (~52 specialisations: 5 convs x 5 conv candidates, 3 fc layers x 8 linear
                 candidates over 2 epilogues, ~12 element-wise kernels; ~1 s each, then ~0.15 s of do_bench per
                 autotuning candidate, fp64 references ~2 s); the configs tier reruns those compiled candidates
                 (~50 launches, ~3 s); the dtypes tier gets what is left. Its compiles and autotuning are the
                 benchmark's: the Triton timings below start warm.
  network        25%: ~60 s. Triton and eager, inference and training step, eager-launched and replayed from
                 one CUDA graph (train-step-graphed): 6 timings of ~1.5 s (3 warm-up steps, 1 for peak memory,
                 do_bench >= 500 ms) + cuDNN's search ~5 s; torch.compile: 2 graphs
                 (inference, training) at ~20 s each in the default mode. max-autotune (~90 s a graph, with
                 CUDA graphs) is used only when the cap holds 240 s (a budget of ~960 s or more).
  conv           6%: ~15 s. conv1..conv5: forward, input gradient, weight gradient (14 phases), Triton and cuDNN:
                 28 timings of ~0.3 s (3 warm-up calls, do_bench >= 100 ms) + cuDNN's search.
  conv-others    20%: ~60 s. The same by the other providers (torch.compile): 3 graphs per conv (15 compiles,
                 ~4 s each in the default mode); max-autotune-no-cudagraphs (~20 s a graph) only when the cap
                 holds 300 s.
  blocks         5%: ~10 s. LRN + pool blocks, pool5, fc6..fc8: forward and backward, Triton and eager (24 timings).
  rest           what is left: the rest of the full plan (benchmark_cases.layer_plan / model_plan), network first.
So --budget 480 delivers the check and steps 2-3 in ~240 s of ~410 s of caps (startup ~10 s and a 10 s reserve
for the summary outside them): room for each estimate to be 1.5x off. Unknown until a GPU runs it: the compile
times (inductor's, Triton's on sm_90), cuDNN's search, and how long do_bench's L2 flush adds per sample.

Without --budget no cap applies (the check's 90 s excepted), the whole plan runs into reports/benchmarks
(~30-45 minutes), then experiments/make_report.py rebuilds the report. Environment: nothing to set; the kernels
compile with the ptxas bundled with Triton whatever torch.compile sets (benchmark.triton_ptxas).
"""

from __future__ import annotations

import time

START = time.perf_counter()  # the budget counts the imports

import argparse  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from _checkout import REPO  # noqa: E402
from pathlib import Path  # noqa: E402

OUT = REPO / "reports" / "benchmarks"
CHECK_CAP_S = 90.0
REHEARSAL_BUDGET_S = 90.0
RESERVE_S = 10.0  # kept at the end of a budget for the summary
# step -> (share of the budget, what it runs, expected seconds on an H100/H200 as in the docstring)
STEPS = {
    "check": (0.19, "correctness: Triton vs PyTorch on this device, headline tier first", 65),
    "network": (0.25, "2012 net, inference + training step (and graphed), triton / eager / compiled", 60),
    "conv": (0.06, "conv1-5 forward, input grad, weight grad, triton / eager", 15),
    "conv-others": (0.20, "conv1-5 forward, input grad, weight grad, torch.compile", 60),
    "blocks": (0.05, "LRN + pool blocks, pool5, fc6-8, forward / backward, triton / eager", 10),
    "rest": (None, "the rest of the full plan, network first", None),
}
# torch.compile's mode per step: the first whose estimate fits the step's cap (else the last)
COMPILE_MODES = {"network": (("max-autotune", 240), ("default", 0)),
                 "conv-others": (("max-autotune-no-cudagraphs", 300), ("default", 0)),
                 "rest": (("max-autotune", 600), ("default", 0))}
FILES = ("summary.txt", "correctness.csv", "model.csv", "layers.csv")


def _device_lines() -> list[str]:
    """Device, driver, versions and clocks (nvidia-smi where there is one)."""
    import torch
    import triton

    from alexnet_triton.study.benchmarks import benchmark

    lines = [f"device: {benchmark.conditions().device}",
             f"versions: python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
             f"triton {triton.__version__}, cuDNN {torch.backends.cudnn.version()}"]
    query = "driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.limit,temperature.gpu"
    try:
        smi = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv"], capture_output=True, text=True,
                             timeout=20)
        lines += [f"nvidia-smi: {line}" for line in smi.stdout.strip().splitlines()]
    except (OSError, subprocess.SubprocessError) as error:
        lines.append(f"nvidia-smi: not available ({type(error).__name__})")
    return lines


class Study:
    """The steps' clock, results and summary.txt (rewritten after every step, so a killed run leaves one)."""

    def __init__(self, out: Path, budget: float | None, rehearsal: bool):
        self.out, self.budget, self.rehearsal = out, budget, rehearsal
        self.end = None if budget is None else START + budget - RESERVE_S
        self.header: list[str] = []
        self.ran: list[str] = []
        self.skipped: list[str] = []
        self.problems: list[str] = []

    def elapsed(self) -> float:
        return time.perf_counter() - START

    def cap(self, step: str) -> float | None:
        """Seconds this step may take from now: its share of the budget, within what is left."""
        share = STEPS[step][0]
        if self.end is None:
            return CHECK_CAP_S if step == "check" else None
        left = max(0.0, self.end - time.perf_counter())
        cap = left if share is None else min(left, share * self.budget)
        return min(cap, CHECK_CAP_S) if step == "check" else cap

    def plan(self) -> list[str]:
        budget = "no budget (the whole plan)" if self.budget is None else f"budget {self.budget:.0f} s"
        lines = [f"plan ({budget}; expected seconds on an H100/H200, from experiments/gpu_study.py's docstring):"]
        for step, (share, what, expected) in STEPS.items():
            cap = ("rest of the budget" if share is None else f"cap {share * self.budget:.0f} s") \
                if self.budget is not None else "no cap"
            if step == "check":
                cap = f"cap {min(CHECK_CAP_S, share * self.budget if self.budget else CHECK_CAP_S):.0f} s"
            lines.append(f"  {step:13} {cap:20} expected {'-' if expected is None else f'~{expected} s':7} {what}")
        return lines

    def write(self) -> None:
        kind = ("REHEARSAL on the CPU (smoke: tiny shapes, Triton interpreter, compile backend aot_eager; rows "
                "say run_kind=cpu-smoke): no number here is a GPU measurement") if self.rehearsal else "GPU study"
        lines = [f"gpu_study: {kind}", f"command: {' '.join(sys.argv)}", *self.header, *self.plan(), "", "ran:",
                 *self.ran, "", "skipped (cap reached):", *(self.skipped or ["  nothing"])]
        if self.problems:
            lines += ["", "failures:", *self.problems]
        lines.append(f"\ntotal wall time {self.elapsed():.0f} s" + (f" of a {self.budget:.0f} s budget"
                                                                    if self.budget is not None else ""))
        (self.out / "summary.txt").write_text("\n".join(lines) + "\n")


def _compile_mode(step: str, cap: float | None) -> str:
    choices = COMPILE_MODES[step]
    return next((compile_mode for compile_mode, needs in choices if cap is None or cap >= needs), choices[-1][0])


def _listed(step: str, items: list[str], limit: int = 20) -> list[str]:
    more = f"\n    ... and {len(items) - limit} more" if len(items) > limit else ""
    return [f"  {step}: {len(items)} timings skipped:"] + [f"    {item}" for item in items[:limit]] + \
        ([more.strip("\n")] if more else [])


def run_study(study: Study) -> int:
    from alexnet_triton.study.benchmarks import benchmark, gpu_check
    from alexnet_triton.study.registries import benchmark_cases

    study.header = _device_lines()
    print("\n".join(study.header + study.plan()), flush=True)
    study.write()

    cap = study.cap("check")
    started = time.perf_counter()
    print(f"== check (cap {cap:.0f} s)", flush=True)
    check = gpu_check.run_check(cap, study.out / "correctness.csv")
    study.ran += [f"  check: {time.perf_counter() - started:.0f} s"] + check.summary()
    study.skipped += [f"  check: {n} {tier} cases" for tier, n in check.skipped.items() if n]
    study.problems += [line for line in check.summary() if "FAILED" in line or "ERROR" in line]
    study.write()

    steps = benchmark_cases.study_steps()
    for step, cases in steps.items():
        csv_name = "model.csv" if step == "network" else "layers.csv"
        cap = study.cap(step)
        compile_mode = _compile_mode(step, cap) if step in COMPILE_MODES else None
        count = benchmark_cases.timings_in(cases)
        print(f"== {step}: {count} timings" + ("" if cap is None else f", cap {cap:.0f} s")
              + (f", compile mode {compile_mode}" if compile_mode else ""), flush=True)
        started = time.perf_counter()
        if step == "rest":  # the network's cases first, into model.csv
            network = [c for c in cases if isinstance(c, benchmark_cases.ModelCase)]
            parts = [(network, "model.csv"), ([c for c in cases if c not in network], "layers.csv")]
        else:
            parts = [(cases, csv_name)]
        outcome = benchmark.Outcome()
        for part, name in parts:
            result = benchmark.run(part, study.out / name, progress=False, append=True, compile_mode=compile_mode,
                                   deadline=None if cap is None else started + cap, correctness=check.status)
            outcome.failures += result.failures
            outcome.skipped += result.skipped
        study.ran.append(f"  {step}: {count - len(outcome.skipped) - len(outcome.failures)} of {count} timings "
                         f"in {time.perf_counter() - started:.0f} s"
                         + (f", compile mode {compile_mode}" if compile_mode else ""))
        if outcome.skipped:
            study.skipped += _listed(step, outcome.skipped)
        study.problems += [f"  {step}: {failure}" for failure in outcome.failures]
        study.write()
    print((study.out / "summary.txt").read_text(), flush=True)
    return 1 if study.problems else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--budget", type=float, metavar="SECONDS", help="wall-time budget of the whole run")
    parser.add_argument("--out", type=Path, metavar="DIR", help="output folder (default: reports/benchmarks; "
                                                                "--rehearse: a new temporary folder)")
    parser.add_argument("--rehearse", action="store_true", help="the same plan on the CPU, smoke mode")
    args = parser.parse_args(argv)
    if args.budget is not None and args.budget <= 0:
        parser.error("--budget must be positive")
    if args.rehearse:
        os.environ["ALEXNET_TRITON_MODE"] = "interpreter"  # read when the package is first imported
    import torch

    from alexnet_triton.kernels import runtime

    if args.rehearse and not runtime.INTERPRETER:
        parser.error("--rehearse: the package was already imported in GPU mode in this process")
    if not args.rehearse and (runtime.INTERPRETER or not torch.cuda.is_available()):
        print(f"error: gpu_study.py needs a CUDA GPU (execution mode here: {runtime.MODE}, CUDA available: "
              f"{torch.cuda.is_available()}); without one, rehearse the same plan on the CPU: "
              "python experiments/gpu_study.py --rehearse", file=sys.stderr)
        return 2
    out = args.out or (Path(tempfile.mkdtemp(prefix="gpu_study_rehearsal_")) if args.rehearse else OUT)
    out = out.resolve()
    if args.rehearse and (REPO / "reports").resolve() in (out, *out.parents):
        parser.error(f"--out {out}: rehearsal rows are not measurements and never go to reports/")
    out.mkdir(parents=True, exist_ok=True)
    stale = [out / name for name in FILES if (out / name).exists()]
    for path in stale:  # the study appends to its CSVs: start from empty ones
        path.unlink()
    budget = args.budget if args.budget is not None else (REHEARSAL_BUDGET_S if args.rehearse else None)
    if args.rehearse:  # one timed call per smoke timing (after the warm-up calls): more of the plan rehearsed
        from alexnet_triton.study.benchmarks import benchmark

        benchmark.SMOKE_REPEATS = 1
    print(f"gpu_study ({runtime.MODE} mode) -> {out}", flush=True)
    status = run_study(Study(out, budget, args.rehearse))
    if not args.rehearse and args.budget is None and out == OUT.resolve():
        report = subprocess.run([sys.executable, str(REPO / "experiments" / "make_report.py"), "--reuse",
                                 "inspection", "memory", "traffic", "training"], cwd=REPO)
        status = status or report.returncode
    print(f"gpu_study: {time.perf_counter() - START:.0f} s; files in {out}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
