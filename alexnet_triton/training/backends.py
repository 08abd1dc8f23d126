"""What a run's ``--backend`` picks besides the net's modules (``model.AlexNet`` takes the name itself): the loss,
the optimiser and how the step runs, one ``Backend`` per ``model.BACKENDS`` name."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import ops, optim
from ..kernels import runtime


@dataclass(frozen=True)
class Backend:
    """cross_entropy: ``F.cross_entropy``'s signature, (logits (N, C), labels (N,)) -> loss; sgd: the optimiser
    class (``torch.optim.SGD``'s arguments); float_logits: the training loss takes the logits in fp32 (under
    --amp they come in the amp dtype); mode: how the step runs, as the first line says; interpreted: the step
    runs in Triton's CPU interpreter."""

    cross_entropy: Callable[..., torch.Tensor]
    sgd: type[torch.optim.Optimizer]
    float_logits: bool
    mode: Callable[[], str]
    interpreted: Callable[[], bool]

    def loss(self, label_smoothing: float = 0.0) -> Callable[..., torch.Tensor]:
        """This backend's cross-entropy with ``label_smoothing``."""
        return functools.partial(self.cross_entropy, label_smoothing=label_smoothing)


BACKEND_PARTS = {
    "triton": Backend(ops.cross_entropy, optim.SGD, float_logits=False,
                      mode=lambda: "Triton interpreter" if runtime.INTERPRETER else "compiled Triton",
                      interpreted=lambda: runtime.INTERPRETER),
    "torch": Backend(F.cross_entropy, torch.optim.SGD, float_logits=True, mode=lambda: "PyTorch",
                     interpreted=lambda: False),
}
