"""experiments/gpu_study.py: its CPU rehearsal (the file set, the summary, smoke labels, a small budget's skips),
its steps of their own (torchvision's model under use_kernels(), the two-GPU schemes on 2 gloo processes, and why
that one is skipped on one GPU), its refusal without a GPU, the GPU plan's steps, and the correctness check's status
of a timed kernel."""

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
from alexnet_triton.study.registries.providers import SUBJECT
from alexnet_triton.study.vocabulary import FUSED_GRAPHED_STEP

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "experiments" / "gpu_study.py"
FILES = ["correctness.csv", "layers.csv", "model.csv", "summary.txt", "torchvision.csv", "two_gpus.csv"]
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
    for step in ("check", "network", "torchvision", "two-gpus", "conv", "conv-others", "blocks", "rest"):
        assert f"  {step} " in summary.split("ran:")[0], step  # the plan names every step with its cap
    skipped = summary.split("skipped (cap reached):")[1]
    assert "rest:" in skipped and "timings skipped" in skipped and "nothing" not in skipped.split("\n")[1]


def test_a_small_budget_skips_the_two_gpu_step_before_its_processes_start(rehearsal):
    out, _, _ = rehearsal
    assert "  two-gpus: its cap" in (out / "summary.txt").read_text()
    assert pd.read_csv(out / "two_gpus.csv").empty


@pytest.fixture(scope="module")
def own_steps(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("own_steps")
    return out, _study("--rehearse", "--steps", "torchvision", "two-gpus", "--budget", "400", "--out", str(out),
                       timeout=600)


def test_torchvision_s_model_runs_under_use_kernels_beside_eager_and_torch_compile(own_steps):
    """torchvision is not installed here: the rows say which model ran (this project's plain-torch copy of its
    module tree); the use_kernels rows ran the kernels and nothing fell through."""
    out, result = own_steps
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["summary.txt", "torchvision.csv", "two_gpus.csv"]
    rows = pd.read_csv(out / "torchvision.csv", keep_default_na=False)
    assert [(r.provider, r.phase) for r in rows.itertuples()] == [
        (provider, phase) for provider in ("use_kernels", "eager", "compiled") for phase in ("inference", "train-step")]
    assert rows.model.str.startswith('AlexNet("torchvision", backend="torch") (the smoke test').all()
    assert (rows.run_kind == "cpu-smoke").all() and (rows.ms_p50.astype(float) > 0).all()
    kernels = rows[rows.provider == "use_kernels"]
    assert (kernels.kernel_calls.astype(int) > 0).all() and (rows.fell_through == "").all()
    assert (rows[rows.provider != "use_kernels"].kernel_calls == "").all()
    assert list(rows.compile_mode) == ["", "", "", "", "aot_eager", "aot_eager"]
    assert "  torchvision: 6 of 6 timings" in (out / "summary.txt").read_text()


def test_the_two_gpu_step_rehearses_the_split_the_hybrid_and_ddp_on_two_cpu_processes(own_steps):
    out, _ = own_steps
    rows = pd.read_csv(out / "two_gpus.csv").set_index("scheme")
    assert list(rows.index) == ["split", "hybrid", "ddp"] and (rows.ranks == 2).all()
    assert (rows.run_kind == "cpu-smoke").all() and (rows.ms_per_step > 0).all()
    # at batch 2 the split's activations are far fewer bytes than DDP's all-reduce of every gradient
    assert 0 < rows.loc["split", "mb_sent_per_rank"] < rows.loc["hybrid", "mb_sent_per_rank"] < \
        rows.loc["ddp", "mb_sent_per_rank"]
    assert "  two-gpus: split, hybrid, ddp in" in (out / "summary.txt").read_text()


def test_on_one_gpu_the_two_gpu_step_says_why_it_measures_nothing(tmp_path, monkeypatch):
    import gpu_study
    import torch

    monkeypatch.setattr(benchmark_cases, "smoke", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    study = gpu_study.Study(tmp_path, budget=480, rehearsal=False)
    gpu_study.two_gpus_step(study, cap=100)
    assert study.ran == ["  two-gpus: skipped: 1 CUDA GPU visible; the split puts one rank on each of 2 GPUs (so does "
                         "its DDP comparison): on a machine with 2, this step measures them"]
    assert pd.read_csv(tmp_path / "two_gpus.csv").empty


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
    # network: 3 graphed steps too (Triton's and eager's, and Triton's with the fused update)
    assert counts == {"network": 9, "conv": 28, "conv-others": 14, "blocks": 24}
    fused = [c for c in steps["network"] if FUSED_GRAPHED_STEP in c.phases]
    assert [(c.providers, c.phases) for c in fused] == [((SUBJECT,), (FUSED_GRAPHED_STEP,))]
    for step in ("network", "conv", "conv-others", "blocks"):
        assert all((c.batch, c.dtype, c.layout) == (128, "bf16", "channels_last" if c.layout else "")
                   for c in steps[step])
    assert isinstance(steps["rest"][0], benchmark_cases.ModelCase)


def test_check_status_marks_the_kernel_and_its_network():
    outcome = gpu_check.CheckResult(rows=[dict(kernel="2012/conv1", passed=True),
                                          dict(kernel="2012/fc6", passed=False)])
    assert [outcome.status(k) for k in ("2012/conv1", "2012/fc6", "2012/conv2", "2012/model", "torchvision/model")] \
        == ["passed", "failed", "", "failed", ""]
