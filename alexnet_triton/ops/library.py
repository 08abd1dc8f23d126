"""The Triton ops as PyTorch custom operators (``torch.ops.alexnet_triton.*``), so that torch.compile,
torch.export and the dispatcher see each one as a single op.

Each operator is opaque to the compiler (not ``triton_op``): its implementation is a launcher of
``alexnet_triton.kernels``, whose config choice, autotuning and launch capture are Python that Inductor cannot
trace. Its fake (meta) implementation is the same launcher with its launches captured, not run
(``runtime.capture_launches``): output shapes, dtypes and strides (channels_last kept) come from the code that
allocates the real outputs, never from a second description of them.

A functional operator is registered a level below ``torch.library.custom_op`` (``KernelOp``: a
``torch.library.Library`` schema inferred from the function's annotations, a CompositeExplicitAutograd
implementation, ``register_fake``, and its own autograd kernel), since custom_op's per-call wrappers (argument
checks, the dynamo guard, the alias check, pytree and default re-filling around autograd) are host time per launch:
a call with a trivial body cost 42-45 us with autograd and 15-16 us without as a custom_op, 18-19 and 10 as a
KernelOp, 1-2 as a plain call (``time.thread_time`` over 4000 calls on this project's 2-core CPU; 6 without a
Python autograd kernel, which would let a second derivative through a backward pass come back as a silent 0).
An operator that mutates an argument keeps ``custom_op``, which also bumps the mutated tensors' version counters.
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
    (positional or by the schema's names). Until ``register_autograd``, a gradient through it raises (a backward
    pass's operator: first derivatives only), as custom_op's does."""

    def __init__(self, name: str, fn: Callable):
        schema = torch.library.infer_schema(fn, mutates_args=())
        _LIBRARY.define(name + schema)
        _LIBRARY.impl(name, fn, "CompositeExplicitAutograd")
        self.name, self.overload = name, getattr(getattr(torch.ops, NAMESPACE), name).default
        self._returns_list = schema.endswith("-> Tensor[]")
        self._function = self._autograd_function(_no_formula(self.overload), lambda ctx, inputs, output: None)
        _LIBRARY.impl(name, self._autograd_kernel, "Autograd")

    def __call__(self, *args, **kwargs):
        return self.overload(*args, **kwargs)

    def register_fake(self, fake: Callable) -> None:
        torch.library.register_fake(f"{NAMESPACE}::{self.name}", fake, lib=_LIBRARY)

    def register_autograd(self, backward: Callable, *, setup_context: Callable) -> None:
        """``torch.library.register_autograd``'s contract (``setup_context(ctx, inputs, output)``; ``backward(ctx,
        grad)``, or ``backward(ctx, grads)`` with a list for an operator that returns a list; one gradient or None
        per input) for operators without default or keyword-only arguments and without tensor-list inputs (all of
        them here: infer_schema gives no defaults; an operator that mutates keeps custom_op), so none of its per-call
        generality (defaults re-filled, arguments flattened through pytree; module docstring)."""
        self._function = self._autograd_function(backward, setup_context)

    def _autograd_function(self, backward: Callable, setup_context: Callable) -> type[torch.autograd.Function]:
        overload, returns_list = self.overload, self._returns_list

        class Function(torch.autograd.Function):
            @staticmethod
            def forward(ctx, *args):
                with torch._C._AutoDispatchBelowAutograd():
                    output = overload(*args)
                setup_context(ctx, args, output)
                return tuple(output) if returns_list else output

            @staticmethod
            def backward(ctx, *grads):
                return backward(ctx, list(grads) if returns_list else grads[0])

        return Function

    def _autograd_kernel(self, *args):
        """The operator at the dispatcher's Autograd key: through ``_function`` where a gradient is recorded, else
        straight below autograd, as the dispatcher would run it."""
        if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
            output = self._function.apply(*args)
            return list(output) if self._returns_list else output
        with torch._C._AutoDispatchBelowAutograd():
            return self.overload(*args)


def _no_formula(overload: torch._ops.OpOverload) -> Callable:
    def backward(ctx, grads):
        raise RuntimeError(f"Trying to backward through {overload} but no autograd formula was registered: it is a "
                           "backward pass (first derivatives only)")
    return backward


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
