"""The Triton ops as PyTorch custom operators (``torch.ops.alexnet_triton.*``), so that torch.compile,
torch.export and the dispatcher see each one as a single op.

Each operator is opaque to the compiler (not ``triton_op``): its implementation is a launcher of
``alexnet_triton.kernels``, whose config choice, autotuning and launch capture are Python that Inductor cannot
trace. Its fake (meta) implementation is the same launcher with its launches captured, not run
(``runtime.capture_launches``): output shapes, dtypes and strides (channels_last kept) come from the code that
allocates the real outputs, never from a second description of them.

A functional operator is registered a level below ``torch.library.custom_op`` (``torch.library.Library``: a schema
inferred from the function's annotations, a CompositeExplicitAutograd implementation, ``register_fake`` and
``register_autograd``), whose per-call wrapper (argument checks, the dynamo guard, the alias check) cost ~15 us
per call and ~41 us with autograd, against ~6 and ~34 (measured on this 2-core CPU, a trivial body). An operator
that mutates an argument keeps ``custom_op``, which also bumps the mutated tensors' version counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext

import torch

from ..kernels import runtime

NAMESPACE = "alexnet_triton"
# operator name -> its Python implementation (the launcher call), for code that runs it outside the dispatcher
IMPLEMENTATIONS: dict[str, Callable] = {}


def _discard(record: runtime.LaunchRecord) -> None:
    """A captured launch of a fake implementation: nothing to run."""


_LIBRARY = torch.library.Library(NAMESPACE, "FRAGMENT")


class KernelOp:
    """A functional operator alexnet_triton::``name`` (module docstring): call it as the function it was made of
    (positional or by the schema's names); ``register_autograd`` as ``torch.library.register_autograd``."""

    def __init__(self, name: str, fn: Callable):
        _LIBRARY.define(name + torch.library.infer_schema(fn, mutates_args=()))
        _LIBRARY.impl(name, fn, "CompositeExplicitAutograd")
        self.name, self.overload = f"{NAMESPACE}::{name}", getattr(getattr(torch.ops, NAMESPACE), name).default

    def __call__(self, *args, **kwargs):
        return self.overload(*args, **kwargs)

    def register_fake(self, fake: Callable) -> None:
        torch.library.register_fake(self.name, fake, lib=_LIBRARY)

    def register_autograd(self, backward: Callable, *, setup_context: Callable) -> None:
        torch.library.register_autograd(self.name, backward, setup_context=setup_context, lib=_LIBRARY)


def kernel_op(name: str, mutates_args: Iterable[str] = (),
              fake_context: Callable[[], AbstractContextManager] = nullcontext
              ) -> Callable[[Callable], KernelOp | torch.library.CustomOpDef]:
    """Decorator: ``fn`` (typed arguments, tensors out) becomes the operator alexnet_triton::``name``
    (``KernelOp``, or ``torch.library.custom_op`` when it mutates ``mutates_args``), with ``fn`` under launch
    capture (and ``fake_context()``: e.g. no host read of a fake tensor's data) as its fake implementation."""
    def define(fn: Callable) -> KernelOp | torch.library.CustomOpDef:
        mutates = tuple(mutates_args)
        op = torch.library.custom_op(f"{NAMESPACE}::{name}", fn, mutates_args=mutates) if mutates else \
            KernelOp(name, fn)
        IMPLEMENTATIONS[name] = fn

        @op.register_fake
        def _fake(*args, **kwargs):
            with runtime.capture_launches(_discard), fake_context():
                return fn(*args, **kwargs)

        return op
    return define


def run_under(mode, func: torch._ops.OpOverload, args: tuple, kwargs: dict | None):
    """From a TorchDispatchMode's ``__torch_dispatch__``: ``func`` as the dispatcher would run it, except that
    this project's operators run their implementation with ``mode`` active again (a mode is off inside its own
    ``__torch_dispatch__``), so it also sees the ATen operators the implementation dispatches."""
    kwargs = kwargs or {}
    if func.namespace != NAMESPACE:
        return func(*args, **kwargs)
    with mode:
        return IMPLEMENTATIONS[func.overloadpacket.__name__](*args, **kwargs)
