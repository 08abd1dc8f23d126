"""The package from a plain checkout, in any import order, and the interpreter fixes (kernels/interpreter.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import triton

from alexnet_triton.kernels import runtime

REPO = Path(__file__).resolve().parents[1]

# A conv + max-pool + dropout step: tl.cdiv in loop bounds, reductions and tl.rand, the library functions that
# fail when Triton built them for the compiler.
SCRIPT = """
import {first}, {second}
import torch
from alexnet_triton import ops
from alexnet_triton.kernels import runtime
from alexnet_triton.parity import assert_close
assert runtime.INTERPRETER, runtime.MODE
x = torch.randn(2, 3, 9, 9, requires_grad=True)
w = torch.randn(4, 3, 3, 3, requires_grad=True)
y = ops.max_pool2d(ops.conv2d(x, w, padding=1), 3, 2)
y.sum().backward()
expected = torch.nn.functional.max_pool2d(torch.nn.functional.conv2d(x, w, padding=1), 3, 2)
assert_close(y, expected, "y")
assert ops.dropout(torch.ones(64), 0.5, True).count_nonzero().item() < 64
print("ok", runtime.INTERPRETER_FIXES)
"""


@pytest.mark.parametrize("user_interpret", [None, "1"])
@pytest.mark.parametrize("first,second", [("triton", "alexnet_triton"), ("alexnet_triton", "triton")])
def test_any_import_order_gets_the_interpreter(first, second, user_interpret):
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "ALEXNET_TRITON_MODE")}
    if user_interpret:
        env["TRITON_INTERPRET"] = user_interpret
    env["PYTHONPATH"] = str(REPO)  # the plain checkout, as `python -c` from the repository root sees it
    result = subprocess.run([sys.executable, "-c", SCRIPT.format(first=first, second=second)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rebuilt = first == "triton" and not user_interpret
    assert ("library rebuilt for the interpreter" in result.stdout) == rebuilt, result.stdout


def test_plain_checkout_script_imports_the_checkout():
    """experiments/ scripts put the repository first on sys.path: the package they get is this checkout's."""
    code = "import _checkout, alexnet_triton.kernels.conv as c; print(c.__file__)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO / "experiments", capture_output=True, text=True,
                            timeout=300, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert Path(result.stdout.split()[-1]).resolve() == (REPO / "kernels" / "conv.py").resolve()


@pytest.mark.skipif(not runtime.INTERPRETER, reason="interpreter fixes apply in interpreter mode")
def test_bf16_dot_and_cast_match_a_gpu():
    """bf16 products exact, fp32 accumulation, round-to-nearest-even casts (ties, NaN) as on a GPU."""
    import triton.language as tl

    @triton.jit
    def dot_kernel(a_ptr, b_ptr, c_ptr, n: tl.constexpr):
        rows = tl.arange(0, n)
        a = tl.load(a_ptr + rows[:, None] * n + rows[None, :])
        b = tl.load(b_ptr + rows[:, None] * n + rows[None, :])
        tl.store(c_ptr + rows[:, None] * n + rows[None, :], tl.dot(a, b).to(tl.bfloat16))

    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(16, 16, generator=generator).bfloat16() for _ in range(2))
    c = torch.empty(16, 16, dtype=torch.bfloat16)
    dot_kernel[(1,)](a, b, c, 16)
    assert torch.equal(c, (a.float() @ b.float()).bfloat16())


def test_fixes_follow_the_installed_versions():
    fixes = runtime.INTERPRETER_FIXES if runtime.INTERPRETER else []
    old_triton = tuple(int(p) for p in triton.__version__.split(".")[:2]) < (3, 7)
    new_numpy = np.lib.NumpyVersion(np.__version__) >= "2.4.0"
    assert ("0-d loop bounds for numpy >= 2.4" in fixes) == (runtime.INTERPRETER and old_triton and new_numpy)
