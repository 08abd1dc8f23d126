"""How far the ops and modules agree with PyTorch on PyTorch's own samples (its OpInfo and ModuleInfo tests).

Each sample is run twice from the same seed, once through PyTorch and once through ``alexnet_triton`` (the
functional op or the ``alexnet_triton.nn`` module with the torch module's state_dict), forward and, where
PyTorch's result is differentiable, backward with one random cotangent. Its outcome:

  ``same``           outputs and every gradient agree within ``parity.TOLERANCES`` (integer outputs exactly);
  ``refused``        ours raised ValueError, TypeError or NotImplementedError (a clear refusal);
  ``different``      ours returned another answer (a bug);
  ``failed``         ours raised anything else (a crash: a bug too);
  ``torch refuses``  PyTorch itself raised: not counted.

Dropout is random: its result is "same" when every output is 0 or x/(1-p) (exactly x when p = 0 or not
training) and the input gradient is the cotangent through that mask.

Needs ``torch.testing._internal``, which imports ``expecttest`` (in the ``test`` extra).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F

from ... import nn as triton_nn
from ... import ops
from ...parity import TOLERANCES
from ..vocabulary import storage_name

FUNCTIONS: dict[str, Callable] = {
    "nn.functional.conv2d": ops.conv2d,
    "nn.functional.max_pool2d": ops.max_pool2d,
    "nn.functional.local_response_norm": ops.local_response_norm,
    "nn.functional.linear": ops.linear,
    "nn.functional.dropout": ops.dropout,
    "nn.functional.cross_entropy": ops.cross_entropy,
}
# The modules PyTorch has samples for (its module_db has none for nn.Dropout: tests/test_dropout.py covers it).
MODULES = ("Conv2d", "MaxPool2d", "LocalResponseNorm", "Linear", "CrossEntropyLoss")
DTYPES = (torch.float32, torch.float64)
CLEAR_REFUSALS = (ValueError, TypeError, NotImplementedError)
OUTCOMES = ("same", "refused", "different", "failed", "torch refuses")
SEED = 0


class Different(AssertionError):
    """Ours returned another answer than PyTorch."""


@dataclass
class Prepared:
    """A sample made twice from one seed: PyTorch's call and ours (None: no such module), and the tensors to
    differentiate; for dropout, (x before the call, p, training)."""

    call_theirs: Callable
    call_ours: Callable | None
    leaves_theirs: list[torch.Tensor]
    leaves_ours: list[torch.Tensor]
    dropout: tuple[torch.Tensor, float, bool] | None = None


@dataclass(frozen=True)
class Case:
    """One PyTorch sample; ``prepare()`` makes fresh tensors for it."""

    kind: str  # "function" or "module"
    name: str
    dtype: torch.dtype
    index: int
    description: str
    prepare: Callable[[], Prepared]


def _describe(value) -> str:
    if torch.is_tensor(value):
        return f"T{list(value.shape)}" + ("" if value.is_contiguous() else "nc")
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_describe(v) for v in value) + ")"
    return repr(value)


def _grad_leaves(values) -> list[torch.Tensor]:
    flat = list(values.values()) if isinstance(values, dict) else list(values)
    return [v for v in flat if torch.is_tensor(v) and v.requires_grad]


def _databases():
    """PyTorch's OpInfo and ModuleInfo lists. Importing its test suite calls ``torch.backends.
    disable_global_flags()``, which would make every later plain assignment of a cuDNN flag in this process
    raise (the benchmarks' numeric settings): the flags are left as mutable as they were."""
    frozen = torch.backends.flags_frozen()
    from torch.testing._internal.common_methods_invocations import op_db
    from torch.testing._internal.common_modules import module_db
    if not frozen:  # torch.backends has no public inverse of disable_global_flags: reset the flag it sets
        torch.backends.flags_frozen.__globals__["__allow_nonbracketed_mutation_flag"] = True
    return op_db, module_db


def _op_info(name: str):
    op_db, _ = _databases()
    return next(op for op in op_db if op.name == name and op.variant_test_name == "")


def _module_info(name: str):
    _, module_db = _databases()
    return next((m for m in module_db if m.module_cls.__name__ == name), None)


def function_cases(name: str, dtype: torch.dtype) -> list[Case]:
    """PyTorch's OpInfo samples of ``name`` (a key of FUNCTIONS) at ``dtype``, with gradients."""
    info = _op_info(name)

    def samples():
        torch.manual_seed(SEED)
        return list(info.sample_inputs("cpu", dtype, requires_grad=info.supports_autograd))

    theirs_all, ours_all = samples(), samples()  # two copies from one seed: each side gets its own tensors

    def prepare(index: int) -> Prepared:
        ours, theirs = ours_all[index], theirs_all[index]
        prepared = Prepared(lambda: info.op(theirs.input, *theirs.args, **theirs.kwargs),
                            lambda: FUNCTIONS[name](ours.input, *ours.args, **ours.kwargs),
                            _grad_leaves([theirs.input, *theirs.args, *theirs.kwargs.values()]),
                            _grad_leaves([ours.input, *ours.args, *ours.kwargs.values()]))
        if name == "nn.functional.dropout":
            bound = inspect.signature(F.dropout).bind(ours.input, *ours.args, **ours.kwargs)
            bound.apply_defaults()
            prepared.dropout = (ours.input.detach().clone(), bound.arguments["p"], bound.arguments["training"])
        return prepared

    return [Case("function", name, dtype, i, _describe((s.input, *s.args)) + " " + _describe(s.kwargs),
                 lambda i=i: prepare(i)) for i, s in enumerate(theirs_all)]


def module_cases(name: str, dtype: torch.dtype) -> list[Case]:
    """PyTorch's ModuleInfo samples of ``torch.nn.<name>`` at ``dtype`` against ``alexnet_triton.nn.<name>``."""
    info = _module_info(name)
    if info is None:
        return []

    def samples():
        torch.manual_seed(SEED)
        return info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True, training=True)

    theirs_all, ours_all = samples(), samples()

    def prepare(index: int) -> Prepared:
        ours, theirs = ours_all[index], theirs_all[index]
        constructor = theirs.constructor_input
        torch_module = info.module_cls(*constructor.args, **constructor.kwargs).to(dtype)
        call_theirs = lambda: torch_module(*theirs.forward_input.args, **theirs.forward_input.kwargs)
        leaves_theirs = _grad_leaves([*theirs.forward_input.args, *theirs.forward_input.kwargs.values()])
        our_class = getattr(triton_nn, name, None)
        if our_class is None:
            return Prepared(call_theirs, None, leaves_theirs + list(torch_module.parameters()), [])
        try:
            our_module = our_class(*constructor.args, **constructor.kwargs).to(dtype)
            our_module.load_state_dict(torch_module.state_dict())
        except Exception as error:  # noqa: BLE001 (our constructor's refusal is the sample's outcome)
            def refuse(error=error):
                raise error
            return Prepared(call_theirs, refuse, leaves_theirs + list(torch_module.parameters()), [])
        call_ours = lambda: our_module(*ours.forward_input.args, **ours.forward_input.kwargs)
        leaves_ours = _grad_leaves([*ours.forward_input.args, *ours.forward_input.kwargs.values()])
        return Prepared(call_theirs, call_ours, leaves_theirs + list(torch_module.parameters()),
                        leaves_ours + list(our_module.parameters()))

    cases = []
    for i, s in enumerate(theirs_all):
        constructor, forward = s.constructor_input, s.forward_input
        description = (f"{name}{_describe(tuple(constructor.args))} {_describe(constructor.kwargs)} "
                       f"{_describe(tuple(forward.args))} {_describe(forward.kwargs)}")
        cases.append(Case("module", name, dtype, i, description, lambda i=i: prepare(i)))
    return cases


def all_cases(functions=tuple(FUNCTIONS), modules=MODULES, dtypes=DTYPES) -> Iterator[Case]:
    """Every sample of the given functions and modules at the given dtypes."""
    for dtype in dtypes:
        for name in functions:
            yield from function_cases(name, dtype)
        for name in modules:
            yield from module_cases(name, dtype)


def _tensors(result) -> list[torch.Tensor]:
    return [result] if torch.is_tensor(result) else [t for t in result if torch.is_tensor(t)]


def _compare(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    if actual.shape != expected.shape or actual.dtype != expected.dtype:
        raise Different(f"{what}: {actual.dtype}{list(actual.shape)} vs PyTorch's {expected.dtype}"
                        f"{list(expected.shape)}")
    if not expected.is_floating_point():
        if not torch.equal(actual, expected):
            raise Different(f"{what}: integer values differ")
        return
    atol, rtol = TOLERANCES[expected.dtype]
    try:
        torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, equal_nan=True)
    except AssertionError as error:
        raise Different(f"{what}: {str(error).splitlines()[0]}") from None


def _cotangents(outputs: list[torch.Tensor]) -> list[torch.Tensor | None]:
    """A random cotangent per floating-point output (None for integer ones: max-pool indices)."""
    generator = torch.Generator().manual_seed(SEED + 1)
    return [torch.randn(o.shape, generator=generator, dtype=o.dtype) if o.is_floating_point() else None
            for o in outputs]


def _gradients(outputs, cotangents, leaves) -> list[torch.Tensor | None]:
    differentiable = [(o, c) for o, c in zip(outputs, cotangents, strict=True) if o.requires_grad and c is not None]
    if not differentiable or not leaves:
        return []
    grads = torch.autograd.grad([o for o, _ in differentiable], leaves, [c for _, c in differentiable],
                                allow_unused=True)
    return [torch.zeros_like(leaf) if g is None else g for leaf, g in zip(leaves, grads, strict=True)]


def _check_dropout(actual, leaves_ours, x: torch.Tensor, p: float, training: bool) -> None:
    """Dropout's result without its random bits: each output 0 or x/(1-p), the gradient through that mask."""
    (out,) = _tensors(actual)
    if p == 0 or not training:
        _compare(out, x, "output")
        return
    kept = x / (1 - p) if p < 1 else torch.zeros_like(x)
    mask = out != 0
    if out.shape != x.shape or not torch.all((~mask) | torch.isclose(out, kept)):
        raise Different("output: an element is neither 0 nor x/(1-p)")
    if out.requires_grad and leaves_ours:
        (dy,) = _cotangents([out])
        (dx,) = _gradients([out], [dy], leaves_ours[:1])
        expected = torch.where(mask, dy / (1 - p), torch.zeros_like(dy)) if p < 1 else torch.zeros_like(dy)
        readable = x != 0  # where x is 0 the mask cannot be read from the output
        _compare(dx[readable], expected[readable], "input gradient")


def _check_same(actual, expected_tensors, cotangents, expected_grads, leaves_ours) -> None:
    actual_tensors = _tensors(actual)
    if len(actual_tensors) != len(expected_tensors):
        raise Different(f"{len(actual_tensors)} outputs vs PyTorch's {len(expected_tensors)}")
    for i, (a, e) in enumerate(zip(actual_tensors, expected_tensors, strict=True)):
        _compare(a, e, f"output {i}")
    actual_grads = _gradients(actual_tensors, cotangents, leaves_ours)
    if len(actual_grads) != len(expected_grads):
        raise Different("not differentiable in the same operands as PyTorch")
    for i, (a, e) in enumerate(zip(actual_grads, expected_grads, strict=True)):
        _compare(a, e, f"gradient {i}")


def run_case(case: Case, guard: Callable[[], AbstractContextManager] = nullcontext) -> tuple[str, str]:
    """(outcome, message) of one sample; see the module docstring. ``guard()`` is entered around our forward
    and backward (the tests pass one that forbids PyTorch's compute kernels)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            prepared = case.prepare()
            expected = _tensors(prepared.call_theirs())
            cotangents = _cotangents(expected)
            expected_grads = _gradients(expected, cotangents, prepared.leaves_theirs)
        except Exception as error:  # noqa: BLE001 (whatever PyTorch refuses is out of scope)
            return "torch refuses", f"{type(error).__name__}: {error}"
        if prepared.call_ours is None:
            return "refused", f"alexnet_triton.nn has no {case.name}"
        try:
            with guard():
                actual = prepared.call_ours()
                if prepared.dropout is not None:
                    _check_dropout(actual, prepared.leaves_ours, *prepared.dropout)
                else:
                    _check_same(actual, expected, cotangents, expected_grads, prepared.leaves_ours)
        except Different as error:
            return "different", str(error)
        except CLEAR_REFUSALS as error:
            return "refused", f"{type(error).__name__}: {error}"
        except Exception as error:  # noqa: BLE001 (a crash is an outcome to report, not to raise)
            return "failed", f"{type(error).__name__}: {error}"
    return "same", ""


def conformance(cases, progress: Callable | None = None) -> pd.DataFrame:
    """One row per case: kind, name, dtype, index, description, outcome, message."""
    rows = []
    for case in progress(cases) if progress else cases:
        outcome, message = run_case(case)
        rows.append(dict(kind=case.kind, name=case.name, dtype=storage_name(case.dtype),
                         index=case.index, description=case.description, outcome=outcome,
                         message=message.splitlines()[0][:300] if message else ""))
    return pd.DataFrame(rows)


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Outcome counts per kind, name and dtype, and the share "same" of the cases PyTorch accepts."""
    counts = results.pivot_table(index=["kind", "name", "dtype"], columns="outcome", values="index",
                                 aggfunc="count", fill_value=0)
    counts = counts.reindex(columns=list(OUTCOMES), fill_value=0)
    total = counts.drop(columns="torch refuses").sum(axis=1)
    counts["share_same"] = (counts["same"] / total.where(total > 0)).round(4)
    return counts.reset_index()
