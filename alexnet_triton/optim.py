"""SGD with momentum and weight decay: one fused multi-tensor Triton launch per parameter group (kernels/sgd.py),
or, opt-in (``SGD.fuse_into``), the step of each Triton Linear's weight and bias inside its weight-gradient kernel."""

from __future__ import annotations

import torch
import torch.distributed as dist

from . import nn
from .kernels import runtime
from .kernels.sgd import UPDATES, learning_rate_tensor, sgd_steps
from .ops.library import kernel_op
from .ops.linear import _linear_weight_grad_sgd_
from .precision import copy_to_write, copy_written


@kernel_op("sgd_step_", mutates_args=("params", "momentum_buffers", "copies"))
def _sgd_step_(params: list[torch.Tensor], grads: list[torch.Tensor], momentum_buffers: list[torch.Tensor],
               copies: list[torch.Tensor], lr: torch.Tensor, momentum: float, weight_decay: float, nesterov: bool,
               maximize: bool, update: str, first_step: bool) -> None:
    """Update params (and momentum_buffers, one per parameter when momentum != 0, else none) in place:
    ``kernels.sgd.sgd_steps``, one launch per dtype; first_step: the buffers are written, not read. copies: the
    compute copies of the first len(copies) params, written from their new values."""
    sgd_steps(params, grads, momentum_buffers or [None] * len(params), lr=lr, momentum=momentum,
              weight_decay=weight_decay, nesterov=nesterov, maximize=maximize, update=update, first_step=first_step,
              copies=[*copies, *[None] * (len(params) - len(copies))])


class FusedUpdate:
    """The SGD step of one Triton Linear's ``weight`` and ``bias`` (None: no bias), parameters of group ``index``
    of ``optimizer``, applied by its weight-gradient kernel during backward (``SGD.fuse_into``); called by the
    linear's backward with the kernel's operands. ``applied``: since the last ``optimizer.step()``."""

    def __init__(self, optimizer: SGD, index: int, weight: torch.nn.Parameter, bias: torch.nn.Parameter | None):
        self.optimizer, self.index, self.weight, self.bias = optimizer, index, weight, bias
        self.applied = False

    def __call__(self, dy: torch.Tensor, x: torch.Tensor, y: torch.Tensor | None, dropout: float,
                 seed: torch.Tensor | None, precision: str) -> None:
        """The step, from the gradients of ``ops.linear``'s weight-gradient kernel on these operands; RuntimeError
        for a second backward before ``optimizer.step()`` (no gradient accumulation)."""
        if self.applied:
            raise RuntimeError(f"SGD.fuse_into: a second backward through the Linear of weight "
                               f"{tuple(self.weight.shape)} before optimizer.step(): the fused update takes no "
                               "gradient accumulation (each backward applies the step)")
        optimizer, group = self.optimizer, self.optimizer.param_groups[self.index]
        params = [p for p in (self.weight, self.bias) if p is not None]
        if not all(p.requires_grad for p in params):
            raise RuntimeError("SGD.fuse_into: one of the Linear's weight and bias was frozen after fuse_into (one "
                               "launch steps both); freeze both, or fuse after freezing")
        momentum, state = group["momentum"], optimizer.state
        fresh = [momentum != 0 and "momentum_buffer" not in state[p] for p in params]
        if any(fresh) and not all(fresh):
            raise RuntimeError("SGD.fuse_into: the Linear's weight and bias must both have a momentum buffer or "
                               f"neither (weight {not fresh[0]}, bias {not fresh[-1]}): one launch steps both")
        for p in params if any(fresh) else ():  # written by the first step, not read
            state[p]["momentum_buffer"] = runtime.new_output(p.shape, device=p.device, dtype=p.dtype)
        buffers = [state[p]["momentum_buffer"] if momentum != 0 else None for p in params]
        weight_copy = copy_to_write(self.weight)
        _linear_weight_grad_sgd_(dy, x, y, dropout, seed, precision, self.weight, self.bias, buffers[0],
                                 buffers[1] if self.bias is not None else None, weight_copy,
                                 optimizer._lr_tensor(self.index, self.weight.device), momentum,
                                 group["weight_decay"], group["nesterov"], group["maximize"], group["update"],
                                 any(fresh))
        if weight_copy is not None:
            copy_written(self.weight)
        self.applied = True


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

    ``fuse_into(model)`` (opt-in) moves the step of every Triton ``nn.Linear``'s weight and bias into its
    weight-gradient kernel: see there; ``step()`` then updates the other parameters.

    Either update also writes the fp16/bf16 compute copy of each fp32 weight a Triton linear or conv asked for under
    autocast (``precision.compute_copy``), from the new weight in the same pass: allocated at the first step after
    the request, then rewritten in place (stable pointers for a captured graph); not part of ``state``.
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
        self._fused: dict[torch.Tensor, FusedUpdate] = {}

    def fuse_into(self, model: torch.nn.Module) -> list[str]:
        """Hand each Triton ``nn.Linear`` of ``model`` whose parameters this optimizer holds the SGD step of its weight
        and bias (``FusedUpdate``: the group's hyper-parameters, its lr tensor, the momentum buffers of
        ``state``), applied in its weight-gradient kernel's epilogue from the fp32 accumulator during backward
        (after its input gradient, which reads the old weight): the gradient is never written, those parameters
        get no .grad and ``step()`` updates only the others. The same numbers as without it (bitwise in the
        interpreter); state_dict() saves and loads their momentum buffers as usual. Returns the fused modules'
        names.

        Contract (ValueError here, RuntimeError later): one process (no DistributedDataParallel or torch.distributed
        world of several ranks: their gradients would need a reduction first); the modules' weight and bias in one
        parameter group, float32 (fp32 master parameters, also under autocast); one backward per
        ``step()`` (no gradient accumulation), nothing between backward and step that needs the gradients
        (clipping, unscaling: a GradScaler); a fused parameter used by nothing else (a .grad on one at step()
        is an error). Only in training mode: an eval-mode forward with grad gives the parameters a .grad.
        """
        if isinstance(model, torch.nn.parallel.DistributedDataParallel | torch.nn.DataParallel):
            raise ValueError(f"SGD.fuse_into: {type(model).__name__} is not supported: the fused update runs in one "
                             "process, on gradients no other rank contributes to")
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            raise ValueError(f"SGD.fuse_into: {dist.get_world_size()} processes: the fused update runs in one "
                             "process only (its gradients are never reduced across ranks)")
        groups = {p: index for index, group in enumerate(self.param_groups) for p in group["params"]}
        fused = []
        for name, module in model.named_modules():
            if not isinstance(module, nn.Linear) or module.weight not in groups:
                continue
            params = [p for p in (module.weight, module.bias) if p is not None]
            if not all(p.requires_grad for p in params):  # frozen, or half frozen: stepped (or not) by step()
                continue
            where = f"SGD.fuse_into: Linear {name!r}"
            if any(p not in groups or groups[p] != groups[module.weight] for p in params):
                raise ValueError(f"{where}: its weight and bias must be in one parameter group of this optimizer")
            if any(p.dtype != torch.float32 for p in params):
                raise ValueError(f"{where}: parameters {', '.join(str(p.dtype) for p in params)}: the fused update "
                                 "takes float32 (master) parameters only")
            if any(p in self._fused for p in params):
                raise ValueError(f"{where}: its parameters are already fused (into another Linear, or twice)")
            module.fused_update = update = FusedUpdate(self, groups[module.weight], module.weight, module.bias)
            self._fused.update(dict.fromkeys(params, update))
            fused.append(name)
        if not fused:
            raise ValueError(f"SGD.fuse_into: {type(model).__name__} has no alexnet_triton.nn.Linear whose parameters "
                             "this optimizer holds")
        return fused

    def __setstate__(self, state):
        """Fill in the keys a torch.optim.SGD state dict lacks (it always uses torch's update); called by
        load_state_dict too."""
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)
            group.setdefault("maximize", False)
            group.setdefault("update", "pytorch")
        self._lr_mirrors = {}
        self._fused = getattr(self, "_fused", {})  # load_state_dict keeps the fusion (only new state)

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
            params = [p for p in group["params"] if p.grad is not None and p not in self._fused]
            if any(p.grad is not None for p in group["params"] if p in self._fused):
                raise RuntimeError("SGD: a parameter whose update is fused into its Linear (fuse_into) has a .grad: "
                                   "something other than that Linear's training-mode forward used it")
            if not params:
                continue
            momentum = group["momentum"]
            fresh = {p for p in params if momentum != 0 and "momentum_buffer" not in self.state[p]}
            for p in fresh:  # written by the first step, not read
                self.state[p]["momentum_buffer"] = runtime.new_output(p.shape, device=p.device, dtype=p.dtype,
                                                                      memory_format=runtime.memory_format_of(p))
            for first_step in (True, False):
                stepped = [p for p in params if (p in fresh) == first_step]
                copies = {p: copy for p in stepped if (copy := copy_to_write(p)) is not None}
                stepped.sort(key=lambda p: p not in copies)  # those with a compute copy first
                if stepped:
                    _sgd_step_(stepped, [p.grad for p in stepped],
                               [self.state[p]["momentum_buffer"] for p in stepped] if momentum != 0 else [],
                               list(copies.values()), self._lr_tensor(index, stepped[0].device), momentum,
                               group["weight_decay"], group["nesterov"], group["maximize"], group["update"],
                               first_step)
                for p in copies:
                    copy_written(p)
        for update in self._fused.values():
            update.applied = False
        return loss
