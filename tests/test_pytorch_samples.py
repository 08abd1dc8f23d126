"""PyTorch's own samples for the drop-in ops and modules: no sample may give another answer than PyTorch's or
crash; a refusal must be a clear ValueError/TypeError/NotImplementedError. The whole set (about 3,300 samples)
runs in experiments/pytorch_samples.py (reports/conformance); here every sample of the small sets, float64, and
a stride through max_pool2d's 1,440 at float32."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from alexnet_triton.study.measure.pytorch_samples import (
    FUNCTIONS,
    MODULES,
    Case,
    Prepared,
    function_cases,
    module_cases,
    run_case,
    summarise,
)

MAX_POOL_STRIDE = 24  # 60 of 1,440 max_pool2d samples


def _assert_agrees(cases: list[Case], guard) -> None:
    assert cases
    problems = []
    for case in cases:
        outcome, message = run_case(case, guard)
        if outcome in ("different", "failed"):
            problems.append(f"{case.name} {case.dtype} #{case.index} {case.description}: {outcome}: {message}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", [n for n in FUNCTIONS if n != "nn.functional.max_pool2d"])
def test_function_samples(name, no_torch_fallback):
    _assert_agrees(function_cases(name, torch.float64), no_torch_fallback)


def test_max_pool2d_samples(no_torch_fallback):
    _assert_agrees(function_cases("nn.functional.max_pool2d", torch.float32)[::MAX_POOL_STRIDE], no_torch_fallback)


@pytest.mark.parametrize("name", MODULES)
def test_module_samples(name, no_torch_fallback):
    _assert_agrees(module_cases(name, torch.float64), no_torch_fallback)


def _case(ours, theirs=lambda: torch.ones(3)) -> Case:
    return Case("function", "fake", torch.float32, 0, "fake", lambda: Prepared(theirs, ours, [], []))


def _raise(error):
    def call():
        raise error
    return call


@pytest.mark.parametrize(("ours", "outcome"), [
    (lambda: torch.ones(3), "same"),
    (lambda: torch.ones(3) + 1e-3, "different"),
    (lambda: torch.ones(4), "different"),
    (lambda: torch.ones(3, dtype=torch.float64), "different"),
    (_raise(ValueError("fake: x is wrong")), "refused"),
    (_raise(NotImplementedError("fake: not yet")), "refused"),
    (_raise(RuntimeError("deep inside")), "failed"),
    (_raise(IndexError("deep inside")), "failed"),
])
def test_outcomes(ours, outcome):
    assert run_case(_case(ours))[0] == outcome


def test_torch_refusal_not_counted():
    assert run_case(_case(lambda: torch.ones(3), theirs=_raise(RuntimeError("no"))))[0] == "torch refuses"
    frame = pd.DataFrame([dict(kind="function", name="fake", dtype="float32", index=i, outcome=o)
                          for i, o in enumerate(["same", "same", "refused", "torch refuses"])])
    row = summarise(frame).iloc[0]
    assert (row["same"], row["refused"], row["torch refuses"]) == (2, 1, 1)
    assert row["share_same"] == pytest.approx(2 / 3, abs=1e-4)


def test_gradients_compared():
    """Same forward values, another gradient (3 instead of 2): "different", named as a gradient."""
    x_theirs, x_ours = torch.ones(3, requires_grad=True), torch.ones(3, requires_grad=True)
    prepared = Prepared(lambda: x_theirs * 2, lambda: x_ours * 2 + (x_ours - x_ours.detach()), [x_theirs], [x_ours])
    outcome, message = run_case(Case("function", "fake", torch.float32, 0, "fake", lambda: prepared))
    assert outcome == "different" and message.startswith("gradient 0")


def test_pytorch_error_samples_raise_pytorch_error_classes():
    """PyTorch's own error inputs (OpInfo.error_inputs) of the functions that have them: ours raise an exception of
    the class PyTorch's test expects (ours are ValueError/TypeError and RuntimeError at once), so a user's
    ``except RuntimeError`` catches both."""
    from torch.testing._internal.common_methods_invocations import op_db

    checked = 0
    for info in op_db:
        if info.name not in FUNCTIONS or info.variant_test_name or info.error_inputs_func is None:
            continue
        for error in info.error_inputs(torch.device("cpu")):
            sample = error.sample_input
            with pytest.raises(error.error_type):
                FUNCTIONS[info.name](sample.input, *sample.args, **sample.kwargs)
            checked += 1
    assert checked >= 17
