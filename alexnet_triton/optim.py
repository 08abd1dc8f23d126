"""SGD with momentum and weight decay: one fused multi-tensor Triton launch per parameter group (kernels/sgd.py)."""

from __future__ import annotations

import torch

from .kernels.sgd import UPDATES, learning_rate_tensor, sgd_steps


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
            states = [self.state[p] for p in params]
            buffers = sgd_steps(params, [p.grad for p in params], [s.get("momentum_buffer") for s in states],
                                lr=self._lr_tensor(index, params[0].device), momentum=group["momentum"],
                                weight_decay=group["weight_decay"], nesterov=group["nesterov"],
                                maximize=group["maximize"], update=group["update"])
            for p, state, buffer in zip(params, states, buffers, strict=True):
                # the kernel wrote p behind autograd's back: bump its version as an in-place op would
                torch.autograd.graph.increment_version(p)
                if buffer is not None:
                    state["momentum_buffer"] = buffer
        return loss
