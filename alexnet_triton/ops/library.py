"""The Triton ops as PyTorch custom operators (``torch.ops.alexnet_triton.*``), so that torch.compile,
torch.export and the dispatcher see each one as a single op.

Each operator is opaque to the compiler (``torch.library.custom_op``, not ``triton_op``): its implementation
is a launcher of ``alexnet_triton.kernels``, whose config choice, autotuning and launch capture are Python
that Inductor cannot trace. Its fake (meta) implementation is the same launcher with its launches captured,
not run (``runtime.capture_launches``): output shapes, dtypes and strides (channels_last kept) come from the
code that allocates the real outputs, never from a second description of them.
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


def kernel_op(name: str, mutates_args: Iterable[str] = (),
              fake_context: Callable[[], AbstractContextManager] = nullcontext
              ) -> Callable[[Callable], torch.library.CustomOpDef]:
    """Decorator: ``fn`` (typed arguments, tensors out) becomes the operator alexnet_triton::``name``, with
    ``fn`` under launch capture (and ``fake_context()``: e.g. no host read of a fake tensor's data) as its fake
    implementation."""
    def define(fn: Callable) -> torch.library.CustomOpDef:
        op = torch.library.custom_op(f"{NAMESPACE}::{name}", fn, mutates_args=tuple(mutates_args))
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
