"""SGD with momentum and weight decay on one fused Triton kernel per parameter (kernels/sgd.py)."""

from __future__ import annotations

import torch

from .kernels.sgd import UPDATES, sgd_step


class SGD(torch.optim.Optimizer):
    """``torch.optim.SGD`` (dampening 0) whose step runs one Triton kernel per parameter.

    update="pytorch" (default) is torch's update, the same numbers step for step, including the first
    step, where the momentum buffer starts as the (weight-decayed) gradient. update="paper" is the form
    of Krizhevsky et al. 2012 (who used momentum 0.9, weight decay 5e-4):
        v <- momentum * v - weight_decay * lr * w - lr * grad ;  w <- w + v   (v starts at 0)
    With a constant lr it matches "pytorch" (v = -lr * buffer); after an lr change it does not: v keeps
    the old lr's scale, as in the paper. nesterov needs update="pytorch".

    State: state[p]["momentum_buffer"] (only when momentum != 0), shaped and typed like p, as in torch,
    so a torch.optim.SGD state dict loads into this optimizer and back. Under "paper" the buffer
    holds v rather than torch's b. Parameters whose grad is None are skipped; sparse gradients and
    tensor learning rates are not supported.
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False,
                 update: str = "pytorch"):
        if isinstance(lr, torch.Tensor):
            raise TypeError("SGD: lr must be a float; tensor learning rates are not supported")
        if lr < 0.0:
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

    def __setstate__(self, state):
        """Fill in the keys a torch.optim.SGD state dict lacks (it always uses torch's update)."""
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)
            group.setdefault("maximize", False)
            group.setdefault("update", "pytorch")

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns closure's loss if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["dampening"] != 0:
                raise ValueError(f"SGD: dampening {group['dampening']} is not supported (only 0)")
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                buffer = sgd_step(p, p.grad, state.get("momentum_buffer"), lr=group["lr"],
                                  momentum=group["momentum"], weight_decay=group["weight_decay"],
                                  nesterov=group["nesterov"], maximize=group["maximize"], update=group["update"])
                # the kernel wrote p behind autograd's back: bump its version as an in-place op would
                torch.autograd.graph.increment_version(p)
                if buffer is not None:
                    state["momentum_buffer"] = buffer
        return loss
