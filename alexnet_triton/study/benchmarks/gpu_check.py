"""The GPU study's correctness check: the Triton kernels against PyTorch on the same device, forward and every
gradient, with the tests' tolerances (``alexnet_triton.parity``), in priority order within a time cap.

Tiers, in order; a case starts only while the cap has time left, the rest are counted as skipped:
  headline  every layer of the 2012 net through the ops as the model calls them (the config autotuning picks),
            the study's headline dtype, layout and batch at full size; the standalone dropout and LRN kernels;
            the SGD step on fp32 parameters (two steps: the first-step variant, then momentum)
  configs   every shipped config of the conv and linear kernels (the ``candidates`` of a captured launch),
            forced through the launchers, on the same shapes
  dtypes    fp16, fp32-tf32, fp32-ieee (channels_last), then the headline dtype in NCHW, at batch REDUCED_BATCH
fp32-ieee compares with ``assert_close`` against PyTorch in fp32 (TF32 off); fp16, bf16 and TF32 with
``assert_low_precision_close`` (error vs an fp64 reference at most 2x PyTorch's own + atol). As in the tests,
the ReLU and dropout masks come from the Triton output (a rounded output at 0 may legitimately flip), and the
LRN output is rounded to the dtype before the pool in the references (rounding makes ties); PyTorch's share
of the LRN bound is its fp32 result rounded. Without a GPU the same code runs in the interpreter at the
benchmark's smoke shapes.
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ... import ops, optim
from ...architecture import DROPOUT, LRN, SGD
from ...kernels import runtime
from ...parity import assert_close, assert_low_precision_close
from ..registries import layer_kinds
from ..registries.benchmark_cases import (
    DTYPES,
    HEADLINE,
    SMOKE_BATCH,
    SWEEP_VARIANT,
    LayerCase,
    parameter_shapes,
    smoke,
    smoke_layers,
)
from ..registries.layer_kinds import KINDS
from . import benchmark

COLUMNS = ["tier", "kernel", "config", "dtype", "layout", "shape", "quantity", "max_error", "passed", "message"]
TIERS = ("headline", "configs", "dtypes")
REDUCED_BATCH = 8
OTHER_DTYPES = ("fp16", "fp32-tf32", "fp32-ieee")


@dataclass
class CheckResult:
    """What the check compared (rows of ``COLUMNS``), skipped (cases per tier) and could not run (errors)."""

    rows: list[dict] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def failed(self) -> list[dict]:
        return [row for row in self.rows if not row["passed"]]

    def status(self, kernel: str) -> str:
        """"failed", "passed" or "" (not checked) for a timed row's kernel; "<variant>/model": all its layers."""
        prefix = kernel.removesuffix("model") if kernel.endswith("/model") else None
        rows = [r for r in self.rows if (r["kernel"].startswith(prefix) if prefix else r["kernel"] == kernel)]
        if not rows:
            return ""
        return "failed" if any(not r["passed"] for r in rows) else "passed"

    def summary(self) -> list[str]:
        covered = Counter(row["tier"] for row in self.rows)
        kernels = {tier: len({(r["kernel"], r["config"], r["dtype"], r["layout"]) for r in self.rows
                              if r["tier"] == tier}) for tier in TIERS}
        lines = [f"  {tier}: {kernels[tier]} cases, {covered[tier]} comparisons"
                 + (f", {self.skipped[tier]} cases skipped (cap reached)" if self.skipped[tier] else "")
                 for tier in TIERS]
        lines += [f"  FAILED {r['kernel']} {r['quantity']} config {r['config']} {r['dtype']} {r['layout']}: "
                  f"{r['message']}" for r in self.failed()]
        return lines + [f"  ERROR {e}" for e in self.errors]


# ---------------------------------------------------------------------------------------------------- comparison
def _compare(comparison: tuple, dtype: str) -> tuple[float, bool, str]:
    """(max error, passed, failure message) of (quantity, ours, PyTorch's, fp64) with the tests' tolerances, or
    of a statistical (quantity, error, bound)."""
    if len(comparison) == 3:
        _, error, bound = comparison
        return error, error <= bound, "" if error <= bound else f"error {error:.3g} > bound {bound:.3g}"
    _, ours, same, ref64 = comparison
    error = (ours.double() - ref64).abs().max().item()
    try:
        if dtype == "fp32-ieee":
            assert_close(ours, same)
        else:
            assert_low_precision_close(ours, same, ref64)
    except AssertionError as failure:
        return error, False, " ".join(str(failure).split())[:300]
    return error, True, ""


def _references(fn: Callable, inputs: list[torch.Tensor], dy: torch.Tensor, dtype: str,
                same_dtype: torch.dtype | None = None) -> tuple[list, list]:
    """(PyTorch at the case's precision, fp64) outputs and gradients of ``fn``: [y, *grads of the float inputs].
    same_dtype: compute PyTorch's share in this dtype, then round (LRN: no CPU fp16/bf16 kernels)."""
    results = []
    for reference in (same_dtype or DTYPES[dtype].dtype, torch.float64):
        copies = [t.detach().to(reference).requires_grad_() if t.is_floating_point() else t for t in inputs]
        with benchmark.numeric_settings(dtype):
            y = fn(*copies)
            grads = torch.autograd.grad(y, [t for t in copies if t.is_floating_point()], dy.to(reference))
        results.append([t.detach() for t in (y, *grads)])
    if same_dtype:
        results[0] = [t.to(DTYPES[dtype].dtype) for t in results[0]]
    return results[0], results[1]


def _dy(y: torch.Tensor) -> torch.Tensor:
    gen = torch.Generator(y.device).manual_seed(1)
    return torch.randn(y.shape, generator=gen, device=y.device).to(y.dtype)


def _masked(pre: Callable, mask: torch.Tensor) -> Callable:
    """``pre`` times a fixed mask (the Triton output's ReLU and dropout pattern, dropout's scale included)."""
    return lambda *inputs: pre(*inputs) * mask.to(inputs[0].dtype)


# ---------------------------------------------------------------------------------------------------- layers
def _gemm_reference(layer: layer_kinds.StudyLayer, y: torch.Tensor) -> Callable:
    """PyTorch's GEMM before the activation times the Triton output's ReLU and dropout pattern (dropout's scale
    included)."""
    parts = KINDS[layer.kind].gemm_parts
    relu, dropout = parts.activation(layer)
    mask = (y != 0) * (1 / (1 - DROPOUT) if dropout else 1.0) if relu else torch.ones_like(y)
    return _masked(parts.pre_activation(layer), mask)


def _check_layer(case: LayerCase) -> list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(quantity, ours, PyTorch's, fp64) for the layer's output and each gradient, the ops called as the model does."""
    layer, kind, dtype, precision = case.layer, KINDS[case.layer.kind], DTYPES[case.dtype].dtype, \
        DTYPES[case.dtype].precision
    gen = torch.Generator(benchmark.device()).manual_seed(0)
    tensors, needs_grad = benchmark.layer_inputs(case, dtype, gen)
    inputs = [t.requires_grad_(need) for t, need in zip(tensors, needs_grad, strict=True)]
    with benchmark.triton_ptxas():
        y = kind.functions(layer, precision)["triton"](*inputs)
        dy = _dy(y)
        grads = torch.autograd.grad(y, [t for t in inputs if t.requires_grad], dy)
    ours = [y.detach(), *grads]
    names = [kind.quantities[0], *(n for n, t in zip(kind.quantities[1:], inputs, strict=False) if t.requires_grad)]
    if kind.gemm_parts:
        same, ref64 = _references(_gemm_reference(layer, y.detach()), inputs, dy, case.dtype)
        if not inputs[0].requires_grad:  # conv1: no input gradient
            same, ref64 = [same[0], *same[2:]], [ref64[0], *ref64[2:]]
    else:
        same, ref64 = _references(kind.reference_function(layer, dtype, precision), inputs, dy, case.dtype,
                                  kind.reference_dtype)
    return list(zip(names, ours, same, ref64, strict=True))


def _check_gemm_configs(case: LayerCase) -> dict[str, list]:
    """Every shipped config of the layer's three kernels, forced through the launchers: config name -> comparisons."""
    layer, dtype, precision = case.layer, DTYPES[case.dtype].dtype, DTYPES[case.dtype].precision
    gen = torch.Generator(benchmark.device()).manual_seed(0)
    x, w, b = (t.detach() for t in benchmark.layer_inputs(case, dtype, gen)[0])
    launchers = KINDS[layer.kind].gemm_parts.launchers(layer, x, w, b, precision)
    with benchmark.triton_ptxas():
        y = launchers["forward"](None)
        dy = _dy(y)
    inputs = [x.requires_grad_(layer.needs_input_grad), w.requires_grad_(),
              b.requires_grad_()]
    same, ref64 = _references(_gemm_reference(layer, y), inputs, dy, case.dtype)
    expected = dict(forward=[("y", 0)], input_grad=[("dx", 1)], weight_grad=[("dw", 2), ("db", 3)])
    runs = dict(forward=launchers["forward"],
                **{name: (lambda config, launch=launchers[name]: launch(config, y, dy))
                   for name in ("input_grad", "weight_grad")})
    if not inputs[0].requires_grad:
        runs.pop("input_grad")
    results = {}
    for name, launcher in runs.items():
        with runtime.capture_launches() as records:
            launcher(None)
        for config in records[0].candidates:
            with benchmark.triton_ptxas():
                outputs = launcher(config)
            outputs = [t for t in (outputs if isinstance(outputs, tuple) else (outputs,)) if t is not None]
            results[f"{name} {runtime.config_name(config)}"] = [
                (quantity, out, same[i], ref64[i]) for (quantity, i), out in zip(expected[name], outputs, strict=False)]
    return results


def _check_dropout(shape: tuple[int, ...], dtype: torch.dtype) -> list:
    """ops.dropout: y = x * keep / (1 - p), dx = dy * keep / (1 - p), about 1 - p of the elements kept."""
    x = torch.randn(shape, generator=torch.Generator(benchmark.device()).manual_seed(0),
                    device=benchmark.device()).to(dtype).requires_grad_()
    with benchmark.triton_ptxas():
        y = ops.dropout(x, DROPOUT)
        dy = _dy(y)
        (dx,) = torch.autograd.grad(y, x, dy)
    scale = (y != 0) / (1 - DROPOUT)
    kept = (y != 0).double().mean().item()
    sigma = (DROPOUT * (1 - DROPOUT) / y.numel()) ** 0.5
    return [("y", y.detach(), (x.detach() * scale).to(dtype), (x.detach().double() * scale)),
            ("dx", dx, (dy * scale).to(dtype), dy.double() * scale),
            ("kept fraction", abs(kept - (1 - DROPOUT)), 5 * sigma)]


def _check_lrn(case: LayerCase) -> list:
    """ops.local_response_norm on the LRN block's input."""
    dtype = DTYPES[case.dtype].dtype
    (x,), _ = benchmark.layer_inputs(case, dtype, torch.Generator(benchmark.device()).manual_seed(0))
    x.requires_grad_()
    with benchmark.triton_ptxas():
        y = ops.local_response_norm(x, **LRN)
        dy = _dy(y)
        (dx,) = torch.autograd.grad(y, x, dy)
    same, ref64 = _references(lambda t: F.local_response_norm(t, **LRN), [x], dy, case.dtype, torch.float32)
    return list(zip(("y", "dx"), (y.detach(), dx), same, ref64, strict=True))


def _check_sgd(layers: list[layer_kinds.StudyLayer]) -> list:
    """Two steps of optim.SGD against torch.optim.SGD on the net's fp32 parameters (mixed precision keeps them)."""
    gen = torch.Generator(benchmark.device()).manual_seed(0)
    shapes = parameter_shapes(layers)
    params = [torch.randn(s, generator=gen, device=gen.device) for s in shapes]
    grads = [[torch.randn(s, generator=gen, device=gen.device) for s in shapes] for _ in range(2)]
    ours, theirs = ([p.clone().requires_grad_() for p in params] for _ in range(2))
    optimizers = optim.SGD(ours, **SGD), torch.optim.SGD(theirs, **SGD)
    comparisons = []
    for step, step_grads in enumerate(grads, start=1):
        for p, g in [*zip(ours, step_grads, strict=True), *zip(theirs, step_grads, strict=True)]:
            p.grad = g.clone()
        with benchmark.triton_ptxas():
            optimizers[0].step()
        optimizers[1].step()
        for i, (a, e) in enumerate(zip(ours, theirs, strict=True)):
            comparisons.append((f"step {step} param {i}", a.detach(), e.detach(), e.detach().double()))
    return comparisons


# ---------------------------------------------------------------------------------------------------- the plan
def _layers() -> list[layer_kinds.StudyLayer]:
    return smoke_layers(SWEEP_VARIANT) if smoke() else layer_kinds.study_layers(SWEEP_VARIANT)


def _cases() -> list[tuple[str, str, Callable[[], dict[str, list]], str, str, str]]:
    """(tier, kernel, run -> {config: comparisons}, dtype, layout, shape) in priority order."""
    layers = _layers()
    full_batch = SMOKE_BATCH if smoke() else HEADLINE["batch"]
    reduced = SMOKE_BATCH if smoke() else REDUCED_BATCH
    headline, layout = HEADLINE["dtype"], HEADLINE["layout"]
    cases = []

    def layer_case(layer, batch, dtype, case_layout):
        return LayerCase(layer, batch, dtype, case_layout if KINDS[layer.kind].spatial else "", (), ())

    def add(tier, layer_or_name, run, case):
        cases.append((tier, str(layer_or_name), run, case.dtype, case.layout, benchmark.layer_shape(case)))

    for layer in layers:
        if KINDS[layer.kind].step is not None:  # the optimiser step: checked below on its own
            continue
        case = layer_case(layer, full_batch, headline, layout)
        add("headline", layer, lambda case=case: {"autotuned": _check_layer(case)}, case)
        if KINDS[layer.kind].lrn:
            add("headline", f"{SWEEP_VARIANT}/lrn", lambda case=case: {"autotuned": _check_lrn(case)}, case)
    fc = layer_case(next(layer for layer in layers if layer.out_features), full_batch, headline, "")  # fc6
    add("headline", f"{SWEEP_VARIANT}/dropout", lambda: {"autotuned": _check_dropout(
        (fc.batch, fc.layer.out_features), DTYPES[headline].dtype)}, fc)
    sgd = next(layer for layer in layers if KINDS[layer.kind].step is not None)
    add("headline", sgd, lambda: {"autotuned": _check_sgd(layers)}, layer_case(sgd, full_batch, "fp32-ieee", ""))
    for layer in layers:
        if KINDS[layer.kind].gemm:
            case = layer_case(layer, full_batch, headline, layout)
            add("configs", layer, lambda case=case: _check_gemm_configs(case), case)
    for dtype, case_layout in [*((d, layout) for d in OTHER_DTYPES), (headline, "nchw")]:
        for layer in layers:
            if KINDS[layer.kind].step is None and (case_layout == layout or KINDS[layer.kind].spatial):
                case = layer_case(layer, reduced, dtype, case_layout)
                add("dtypes", layer, lambda case=case: {"autotuned": _check_layer(case)}, case)
    return cases


def run_check(cap_s: float, csv_path: Path, log: Callable[[str], None] = print) -> CheckResult:
    """Run the cases in priority order while ``cap_s`` seconds allow; rows go to ``csv_path`` as they come."""
    deadline = time.perf_counter() + cap_s
    outcome = CheckResult()
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        for tier, kernel, run, dtype, layout, shape in _cases():
            if time.perf_counter() >= deadline:
                outcome.skipped[tier] += 1
                continue
            try:
                results = run()
            except Exception as error:  # noqa: BLE001  (one kernel's error must not end the check)
                outcome.errors.append(f"{tier} {kernel} {dtype} {layout}: {type(error).__name__}: {error}"[:400])
                log(f"check error: {outcome.errors[-1]}")
                continue
            for config, comparisons in results.items():
                for comparison in comparisons:
                    quantity = comparison[0]
                    error, passed, message = _compare(comparison, dtype)
                    row = dict(tier=tier, kernel=kernel, config=config, dtype=dtype, layout=layout, shape=shape,
                               quantity=quantity, max_error=f"{error:.4g}", passed=passed, message=message)
                    writer.writerow(row)
                    outcome.rows.append(row)
                    if not passed:
                        log(f"check FAILED: {kernel} {quantity} config {config} {dtype} {layout}: {message}")
            f.flush()
    return outcome
