"""experiments/gpu_study.py: its CPU rehearsal (the file set, the summary, smoke labels, a small budget's skips),
its refusal without a GPU, the GPU plan's steps, and the correctness check's status of a timed kernel."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from alexnet_triton.study.benchmarks import gpu_check
from alexnet_triton.study.registries import benchmark_cases
from alexnet_triton.study.registries.benchmark_cases import read_benchmarks

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "experiments" / "gpu_study.py"
FILES = ["correctness.csv", "layers.csv", "model.csv", "summary.txt"]
BUDGET = 30  # seconds: every step gets a few, most of the plan is skipped


def _study(*argv: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(STUDY), *argv], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout)


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory) -> tuple[Path, float, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("rehearsal")
    started = time.perf_counter()
    result = _study("--rehearse", "--budget", str(BUDGET), "--out", str(out))
    return out, time.perf_counter() - started, result


def test_rehearsal_writes_the_study_files(rehearsal):
    out, _, result = rehearsal
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == FILES and len(FILES) <= 8
    rows = read_benchmarks(out / "model.csv", out / "layers.csv")
    assert len(rows) and (rows.run_kind == "cpu-smoke").all()
    assert rows.device.str.contains("not a performance measurement").all()
    assert set(rows[rows.provider == "compiled"].compile_mode) <= {"aot_eager"}
    assert set(rows.correctness) <= {"passed", ""} and (rows.correctness == "passed").any()
    check = pd.read_csv(out / "correctness.csv")
    assert list(check.columns) == gpu_check.COLUMNS and check.passed.all()
    assert set(check.tier) >= {"headline"} and (check.dtype == "bf16").any()


def test_summary_states_what_ran_and_what_was_skipped(rehearsal):
    out, _, _ = rehearsal
    summary = (out / "summary.txt").read_text()
    assert summary.startswith("gpu_study: REHEARSAL on the CPU") and "no number here is a GPU measurement" in summary
    for line in ("device: CPU, Triton interpreter", "versions: python", "plan (budget 30 s", "ran:", "  check:",
                 "skipped (cap reached):", "total wall time"):
        assert line in summary
    for step in ("check", "network", "conv", "conv-others", "blocks", "rest"):
        assert f"  {step} " in summary.split("ran:")[0], step  # the plan names every step with its cap
    skipped = summary.split("skipped (cap reached):")[1]
    assert "rest:" in skipped and "timings skipped" in skipped and "nothing" not in skipped.split("\n")[1]


def test_a_small_budget_is_kept(rehearsal):
    """Caps are checked between timings: the run ends within the budget plus one timing and the start-up."""
    _, wall, _ = rehearsal
    assert wall < BUDGET + 40


def test_without_a_gpu_it_says_what_to_run_instead(tmp_path):
    result = _study("--budget", "480", "--out", str(tmp_path), timeout=120)
    assert result.returncode == 2 and not list(tmp_path.iterdir())
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "needs a CUDA GPU" in errors[0] and "--rehearse" in errors[0]


def test_rehearsal_rows_never_go_to_reports():
    result = _study("--rehearse", "--out", str(REPO / "reports" / "benchmarks"), timeout=120)
    assert result.returncode == 2 and "error:" in result.stderr and "never go to reports" in result.stderr


def test_gpu_plan_is_headline_first(monkeypatch):
    monkeypatch.setattr(benchmark_cases, "smoke", lambda: False)
    steps = benchmark_cases.study_steps()
    assert list(steps) == ["network", "conv", "conv-others", "blocks", "rest"]
    counts = {step: benchmark_cases.timings_in(cases) for step, cases in steps.items() if step != "rest"}
    assert counts == {"network": 8, "conv": 28, "conv-others": 14, "blocks": 24}  # network: 2 graphed steps too
    for step in ("network", "conv", "conv-others", "blocks"):
        assert all((c.batch, c.dtype, c.layout) == (128, "bf16", "channels_last" if c.layout else "")
                   for c in steps[step])
    assert isinstance(steps["rest"][0], benchmark_cases.ModelCase)


def test_check_status_marks_the_kernel_and_its_network():
    outcome = gpu_check.Outcome(rows=[dict(kernel="2012/conv1", passed=True), dict(kernel="2012/fc6", passed=False)])
    assert [outcome.status(k) for k in ("2012/conv1", "2012/fc6", "2012/conv2", "2012/model", "torchvision/model")] \
        == ["passed", "failed", "", "failed", ""]
