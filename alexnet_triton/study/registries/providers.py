"""Who computes the study's numbers: one entry per provider, used by the benchmarks, their plots and the report.

A provider runs one of the model's backends (``AlexNet(backend=...)``: "triton", this project's kernels, or
"torch", PyTorch's) and may wrap what it runs in ``torch.compile``:
  "triton"    this project's ops, model and ``optim.SGD`` (the study's subject)
  "eager"     PyTorch eager (cuDNN, cuBLAS) and ``torch.optim.SGD``: the vendor baseline
  "compiled"  ``torch.compile`` (Inductor) of the eager code: the compiler baseline
A new provider is one ``Provider`` in ``PROVIDERS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ... import ops, optim
from ...kernels import runtime
from ...model import AlexNet

SUBJECT = "triton"  # the provider the others are compared with


def compiled(fn: Callable, compile_mode: str, fullgraph: bool = True) -> Callable:
    """``torch.compile(fn, mode=compile_mode)``; in the CPU smoke test (the interpreter) the cheap aot_eager
    backend, which checks the graph capture but generates no code."""
    if runtime.INTERPRETER:
        return torch.compile(fn, backend="aot_eager", fullgraph=fullgraph, dynamic=False)
    return torch.compile(fn, mode=compile_mode, fullgraph=fullgraph, dynamic=False)


@dataclass(frozen=True)
class Provider:
    """name: its key in tables and on the command line; label: how prose names it; colour: its matplotlib colour
    in every figure. backend: the model backend and the layer kinds' function set it runs. compiles: wraps them in
    ``torch.compile``. every_case: timed in every case of the plans (False: only where the plans ask for it, as
    for torch.compile's minutes of autotuning). loss(logits, target) and optimizer (an SGD class): what its
    training step runs."""

    name: str
    label: str
    colour: str
    backend: str
    compiles: bool
    every_case: bool
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    optimizer: type[torch.optim.Optimizer]

    def wrap(self, fn: Callable, compile_mode: str, fullgraph: bool = True) -> Callable:
        """``fn`` as this provider runs it."""
        return compiled(fn, compile_mode, fullgraph) if self.compiles else fn

    def network(self, variant: str, **options) -> AlexNet:
        """The AlexNet this provider runs (``options``: AlexNet's other arguments)."""
        return AlexNet(variant, backend=self.backend, **options)


def _torch_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PyTorch's cross-entropy in fp32 (as under autocast)."""
    return F.cross_entropy(logits.float(), target)


PROVIDERS: dict[str, Provider] = {provider.name: provider for provider in (
    Provider("triton", "Triton", "tab:orange", "triton", compiles=False, every_case=True, loss=ops.cross_entropy,
             optimizer=optim.SGD),
    Provider("eager", "PyTorch eager", "tab:blue", "torch", compiles=False, every_case=True, loss=_torch_loss,
             optimizer=torch.optim.SGD),
    Provider("compiled", "torch.compile", "tab:green", "torch", compiles=True, every_case=False, loss=_torch_loss,
             optimizer=torch.optim.SGD),
)}


def every_case() -> tuple[str, ...]:
    """The providers timed in every case of the plans."""
    return tuple(name for name, provider in PROVIDERS.items() if provider.every_case)


def baselines() -> tuple[str, ...]:
    """The providers the subject is compared with."""
    return tuple(name for name in PROVIDERS if name != SUBJECT)
