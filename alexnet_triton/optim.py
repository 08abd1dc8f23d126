"""SGD with momentum and weight decay: one fused multi-tensor Triton launch per parameter group (kernels/sgd.py)."""

from __future__ import annotations

import torch

from .kernels import runtime
from .kernels.sgd import UPDATES, learning_rate_tensor, sgd_steps
from .ops.library import kernel_op


@kernel_op("sgd_step_", mutates_args=("params", "momentum_buffers"))
def _sgd_step_(params: list[torch.Tensor], grads: list[torch.Tensor], momentum_buffers: list[torch.Tensor],
               lr: torch.Tensor, momentum: float, weight_decay: float, nesterov: bool, maximize: bool, update: str,
               first_step: bool) -> None:
    """Update params (and momentum_buffers, one per parameter when momentum != 0, else none) in place:
    ``kernels.sgd.sgd_steps``, one launch per dtype; first_step: the buffers are written, not read."""
    sgd_steps(params, grads, momentum_buffers or [None] * len(params), lr=lr, momentum=momentum,
              weight_decay=weight_decay, nesterov=nesterov, maximize=maximize, update=update, first_step=first_step)


class SGD(torch.optim.Optimizer):
    """``torch.optim.SGD`` (dampening 0) whose step runs one Triton launch per parameter group (and dtype).

    update="pytorch" (default) is torch's update, the same numbers step for step, including the first
    step, where the momentum buffer starts as the (weight-decayed) gradient. update="paper" is the form
    of Krizhevsky et al. 2012 (who used momentum 0.9, weight decay 5e-4):
        v <- momentum * v - weight_decay * lr * w - lr * grad ;  w <- w + v   (v starts at 0)
    With a constant lr it matches "pytorch" (v = -lr * buffer); after an lr change it does not: v keeps
    the old lr's scale, as in the paper. nesterov needs update="pytorch".

    State: state[p]["momentum_buffer"] (only when momentum != 0), shaped and typed like p, as in torch,
    so a torch.optim.SGD state dict loads into this optimizer and back. Under "paper" the buffer
    holds v rather than torch's b. Parameters whose grad is None are skipped; sparse gradients are not supported.

    The kernel reads lr from a device tensor: a group's lr may be a 1-element tensor on the parameters' device
    (updated in place by a schedule), or a float, mirrored into a per-group device tensor that ``sync_lr`` writes
    only when the float changed. A step thus launches no per-step Python number and reads nothing back: a CUDA
    graph of it replays with the current lr once ``sync_lr`` ran before the replay.
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False,
                 update: str = "pytorch"):
        if not isinstance(lr, torch.Tensor) and lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if dampening != 0.0:
            raise ValueError(f"SGD: dampening {dampening} is not supported (only 0)")
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        if update not in UPDATES:
            raise ValueError(f"SGD: update must be one of {UPDATES}, got {update!r}")
        if nesterov and update != "pytorch":
            raise ValueError("SGD: nesterov momentum is only defined for update='pytorch'")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize, update=update)
        super().__init__(params, defaults)
        self._lr_mirrors: dict[tuple[int, torch.device], tuple[float, torch.Tensor]] = {}

    def __setstate__(self, state):
        """Fill in the keys a torch.optim.SGD state dict lacks (it always uses torch's update)."""
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)
            group.setdefault("maximize", False)
            group.setdefault("update", "pytorch")
        self._lr_mirrors = {}

    def _lr_tensor(self, index: int, device: torch.device) -> torch.Tensor:
        """Group ``index``'s lr as the kernel reads it on ``device`` (see ``sync_lr``)."""
        lr = self.param_groups[index]["lr"]
        if isinstance(lr, torch.Tensor):
            return learning_rate_tensor("SGD", lr, device)
        written, mirror = self._lr_mirrors.get((index, device), (None, None))
        if mirror is None:
            mirror = learning_rate_tensor("SGD", lr, device)
        elif written != lr:
            mirror.fill_(float(lr))
        self._lr_mirrors[index, device] = (lr, mirror)
        return mirror

    def sync_lr(self) -> None:
        """Write every group's float lr into the device tensor its launch reads, where it changed (host floats
        compared, nothing read back): call it before replaying a captured step after a schedule changed lr."""
        for (index, device) in list(self._lr_mirrors):
            self._lr_tensor(index, device)

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns closure's loss if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for index, group in enumerate(self.param_groups):
            if group["dampening"] != 0:
                raise ValueError(f"SGD: dampening {group['dampening']} is not supported (only 0)")
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            momentum = group["momentum"]
            fresh = {p for p in params if momentum != 0 and "momentum_buffer" not in self.state[p]}
            for p in fresh:  # written by the first step, not read
                self.state[p]["momentum_buffer"] = runtime.new_output(p.shape, device=p.device, dtype=p.dtype,
                                                                      memory_format=runtime.memory_format_of(p))
            for first_step in (True, False):
                stepped = [p for p in params if (p in fresh) == first_step]
                if stepped:
                    _sgd_step_(stepped, [p.grad for p in stepped],
                               [self.state[p]["momentum_buffer"] for p in stepped] if momentum != 0 else [],
                               self._lr_tensor(index, stepped[0].device), momentum, group["weight_decay"],
                               group["nesterov"], group["maximize"], group["update"], first_step)
        return loss
