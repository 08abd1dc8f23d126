"""The execution-mode decision, each in a fresh process (it happens once, at import)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

SNIPPET = """
import torch, alexnet_triton
from alexnet_triton.kernels import runtime
print("MODE", runtime.MODE)
x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
print("OUT", tuple(alexnet_triton.ops.conv2d(x, w).shape))
"""


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "ALEXNET_TRITON_MODE")}
    environment.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=300)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only default")
def test_default_without_gpu_is_the_interpreter_announced_once():
    result = run_python(SNIPPET)
    assert result.returncode == 0, result.stderr
    assert "MODE interpreter" in result.stdout and "OUT (1, 3, 3, 3)" in result.stdout
    assert result.stderr.count("CPU interpreter") == 1


def test_unknown_mode_is_rejected():
    result = run_python(SNIPPET, ALEXNET_TRITON_MODE="fast")
    assert result.returncode != 0 and "ALEXNET_TRITON_MODE='fast'" in result.stderr


def test_gpu_mode_contradicting_triton_interpret_is_rejected():
    result = run_python(SNIPPET, ALEXNET_TRITON_MODE="gpu", TRITON_INTERPRET="1")
    assert result.returncode != 0 and "contradicts TRITON_INTERPRET=1" in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_forced_gpu_mode_rejects_cpu_tensors_by_name():
    result = run_python(SNIPPET, ALEXNET_TRITON_MODE="gpu")
    assert result.returncode != 0
    assert "MODE gpu" in result.stdout and "x is on cpu, but the Triton kernels run in gpu mode" in result.stderr
