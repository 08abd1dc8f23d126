"""linear with fused bias, ReLU and dropout, differentiable in x, weight and bias; optionally with the SGD step of
weight and bias fused into its weight-gradient kernel (``optim.SGD.fuse_into``)."""

from __future__ import annotations

import torch

from ..kernels import checks
from ..kernels.dropout import check_probability, seed_tensor
from ..kernels.linear import linear_forward, linear_input_grad, linear_weight_grad, linear_weight_grad_sgd_
from ..precision import autocast_master_operands, compute_copy
from .library import kernel_op


@kernel_op("linear")
def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, relu: bool, dropout: float,
            seed: torch.Tensor | None, precision: str, weight_copy: torch.Tensor | None, relu_masked_by_next: bool,
            relu_input_dropout: float | None) -> torch.Tensor:
    """weight_copy: None, or weight's compute copy, read instead of it (``precision.compute_copy``). The last two
    only change the backward (``linear``'s relu_masked_by_next; relu_input_dropout: None, or its relu_input's
    dropout)."""
    return linear_forward(x, weight, bias, relu, dropout, seed, precision, weight_copy=weight_copy)


@kernel_op("linear_input_grad")
def _linear_input_grad(dy: torch.Tensor, weight: torch.Tensor, y: torch.Tensor | None, dropout: float,
                       seed: torch.Tensor | None, precision: str, relu_input: torch.Tensor | None,
                       relu_input_dropout: float) -> torch.Tensor:
    return linear_input_grad(dy, weight, y, dropout, seed, precision, relu_input=relu_input,
                             relu_input_dropout=relu_input_dropout)


@kernel_op("linear_weight_grad")
def _linear_weight_grad(dy: torch.Tensor, x: torch.Tensor, y: torch.Tensor | None, dropout: float,
                        seed: torch.Tensor | None, bias_grad: bool, precision: str, grad_dtype: torch.dtype
                        ) -> list[torch.Tensor]:
    """[dw] or, with ``bias_grad``, [dw, db], of dtype ``grad_dtype`` (the parameters')."""
    dw, db = linear_weight_grad(dy, x, y, dropout, seed, bias_grad, precision, grad_dtype)
    return [dw, db] if bias_grad else [dw]


@kernel_op("linear_weight_grad_sgd_", mutates_args=("weight", "bias", "weight_buffer", "bias_buffer", "weight_copy"))
def _linear_weight_grad_sgd_(dy: torch.Tensor, x: torch.Tensor, y: torch.Tensor | None, dropout: float,
                             seed: torch.Tensor | None, precision: str, weight: torch.Tensor, bias: torch.Tensor | None,
                             weight_buffer: torch.Tensor | None, bias_buffer: torch.Tensor | None,
                             weight_copy: torch.Tensor | None, lr: torch.Tensor, momentum: float, weight_decay: float,
                             nesterov: bool, maximize: bool, update: str, first_step: bool) -> None:
    """One SGD step of weight and bias (and their momentum buffers, and the weight's compute copy) in place from the
    weight-gradient kernel's accumulators: ``kernels.linear.linear_weight_grad_sgd_``; no gradient is stored."""
    linear_weight_grad_sgd_(dy, x, weight, bias, weight_buffer, bias_buffer, y, dropout, seed, precision, lr=lr,
                            momentum=momentum, weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                            update=update, first_step=first_step, weight_copy=weight_copy)


def _save(ctx, inputs, output) -> None:
    x, weight, bias, relu, dropout, seed, precision, weight_copy, relu_masked_by_next, relu_input_dropout = inputs
    if relu_masked_by_next:  # dy comes as d(pre-activation): no mask to apply
        relu, dropout, seed = False, 0.0, None
    ctx.save_for_backward(x, weight, weight_copy, output if relu else None, seed)
    ctx.linear = dict(dropout=dropout, precision=precision)
    ctx.relu_input_dropout = relu_input_dropout
    ctx.has_bias = bias is not None


def _input_grad(ctx, dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, weight_copy: torch.Tensor | None,
                y: torch.Tensor | None, seed: torch.Tensor | None) -> torch.Tensor:
    """dx, masked by the ReLU (and dropout) that made x when the forward had relu_input_dropout."""
    masked = ctx.relu_input_dropout is not None
    return _linear_input_grad(dy, _read_weight(weight, weight_copy), y, ctx.linear["dropout"], seed,
                              ctx.linear["precision"], x if masked else None,
                              ctx.relu_input_dropout if masked else 0.0)


def _read_weight(weight: torch.Tensor, weight_copy: torch.Tensor | None) -> torch.Tensor:
    """The weight the input gradient reads: the one the forward read (its compute copy when it had one)."""
    return weight if weight_copy is None else weight_copy


def _backward(ctx, dy):
    x, weight, weight_copy, y, seed = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    dx = dw = db = None
    if need_x:
        dx = _input_grad(ctx, dy, x, weight, weight_copy, y, seed)
    if need_w or need_b:
        grads = _linear_weight_grad(dy, x, y, ctx.linear["dropout"], seed, ctx.has_bias and need_b,
                                    ctx.linear["precision"], weight.dtype)
        dw, db = grads[0] if need_w else None, grads[1] if len(grads) > 1 else None
    return dx, dw, db, None, None, None, None, None, None, None


_linear.register_autograd(_backward, setup_context=_save)


class _LinearWithUpdate(torch.autograd.Function):
    """``_linear`` whose backward gives dx and applies ``update`` (an ``optim.FusedUpdate``: the SGD step of weight
    and bias in the weight-gradient kernel) instead of returning dw and db: weight and bias get no .grad."""

    @staticmethod
    def forward(ctx, x, weight, bias, relu, dropout, seed, precision, weight_copy, relu_masked_by_next,
                relu_input_dropout, update):
        inputs = (x, weight, bias, relu, dropout, seed, precision, weight_copy, relu_masked_by_next,
                  relu_input_dropout)
        output = _linear(*inputs)
        _save(ctx, inputs, output)
        ctx.update = update
        return output

    @staticmethod
    @torch.compiler.disable(reason="the fused SGD update (SGD.fuse_into)")
    def backward(ctx, dy):
        x, weight, weight_copy, y, seed = ctx.saved_tensors
        dropout, precision = ctx.linear["dropout"], ctx.linear["precision"]
        dx = _input_grad(ctx, dy, x, weight, weight_copy, y, seed) if ctx.needs_input_grad[0] else None
        # Launched after dx's kernel on the same stream (a graph edge when captured): dx reads the old weight.
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:  # (frozen parameters: no step, as without fusion)
            ctx.update(dy, x, y, dropout, seed, precision)
        return dx, None, None, None, None, None, None, None, None, None, None


# torch.compile runs it and its backward eagerly (a graph break; fullgraph=True raises): the backward steps the
# optimizer's Python state (FusedUpdate.applied, the momentum buffers' creation), which a traced one would not replay.
_linear_with_update = torch.compiler.disable(_LinearWithUpdate.apply, reason="the fused SGD update (SGD.fuse_into)")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, relu: bool = False,
           dropout: float = 0.0, seed: int | torch.Tensor | None = None, precision: str = "ieee",
           update=None, *, relu_input: bool = False, relu_input_dropout: float = 0.0,
           relu_masked_by_next: bool = False) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, then ReLU if ``relu``, then dropout of the result, in one kernel.

    x [*, in_features], weight [out_features, in_features], bias [out_features] -> [*, out_features]; as
    F.linear also: a 1-D weight [in_features] (one output feature, whose dimension the result drops: [*]), a
    bias of one element ([] or [1]) added to every output feature, and empty operands (in_features = 0: the
    output is the bias). x's leading dimensions are read as one through a view, or a copy of x when they do not
    merge into one stride.
    dropout: probability p of zeroing an output (0 = off; pass 0 in eval mode); kept outputs are scaled
    by 1/(1-p). seed: the mask's seed (an int in [0, 2**63) or an int64 tensor of one element on x's device, which
    the kernels read; None draws one on x's device from torch's generator: no host read, graph-capturable),
    with the mask of ``ops.dropout`` on the output's shape: ``linear(x, w, b, relu=True, dropout=p, seed=s)``
    equals ``dropout(linear(x, w, b, relu=True), p, True, seed=s)`` exactly. This is the 2012 net's fc6/fc7
    (ReLU, then dropout); the torchvision net drops fc6's and fc7's inputs instead, i.e. its first dropout
    is the standalone op and the second the fused epilogue of fc6.
    Backward saves x, weight and, with ReLU, y (the next layer's input anyway): y > 0 gives the ReLU and
    dropout masks together; dropout without ReLU regenerates its mask from the seed.
    precision: "ieee" (exact fp32 products) or "tf32" (fp32 on tensor cores, GPU only). Under torch.autocast, x is
    cast to its dtype and the result has it, as with F.linear, but fp32 weight and bias are read as they are and
    rounded to that dtype in the kernels (the same values; no cast launch), and their gradients are fp32 from the
    fp32 accumulator (alexnet_triton.precision.autocast_master_operands). There a weight that is an
    nn.Parameter asks for its compute copy (``precision.compute_copy``), which the optimizer's next update writes:
    once it matches the weight, forward and input gradient read it instead (half the bytes, the same results).
    update: an ``optim.FusedUpdate`` of exactly this weight and bias (``optim.SGD.fuse_into`` sets it on a
    ``nn.Linear``): the backward applies their SGD step in the weight-gradient kernel (after the input gradient,
    which reads the old weight) instead of giving them a gradient.

    A linear + ReLU (+ dropout) feeding a linear can hand the ReLU's and dropout's backward to the linear after
    it, whose input gradient applies them in its epilogue (masked by its input x > 0, scaled by the dropout's
    1/(1-p)), so that neither of the first's backward GEMMs masks its output gradient on every load:
    ``relu_masked_by_next`` on the first (relu=True; its output is saved for no mask), and ``relu_input`` on the
    second, with ``relu_input_dropout`` = the first's dropout probability in this call (0 in eval mode), whose
    input must be the first's output and nothing else's. The gradient the second returns for its input is then
    the gradient of the first's pre-activation, which is what the first takes as its output's gradient (a hook on
    the tensor between them sees it so). Each flag assumes the other.
    """
    if relu_masked_by_next and not relu:
        raise checks.ArgumentError("linear: relu_masked_by_next needs relu=True (the ReLU the next linear masks for)")
    relu_input_dropout = check_probability("linear", relu_input_dropout)
    if relu_input_dropout > 0 and not relu_input:
        raise checks.ArgumentError(f"linear: relu_input_dropout={relu_input_dropout} needs relu_input=True (the "
                                   "dropout after the ReLU that made x)")
    flags = (relu_masked_by_next, relu_input_dropout if relu_input else None)
    x, weight, bias = autocast_master_operands(x, weight, bias)
    if update is not None and (weight is not update.weight or bias is not update.bias):
        raise ValueError("linear: update is the fused SGD step of other parameters than this weight and bias")
    if weight.ndim == 1:
        return linear(x, weight.unsqueeze(0), bias, relu, dropout, seed, precision, relu_input=relu_input,
                      relu_input_dropout=relu_input_dropout, relu_masked_by_next=relu_masked_by_next).squeeze(-1)
    if bias is not None and bias.ndim <= 1 and bias.numel() == 1 and weight.ndim == 2:
        bias = bias.expand(weight.shape[0])  # a stride-0 view; autograd sums its gradient back to one element
    dropout = check_probability("linear", dropout)
    seed = seed_tensor("linear", seed, x.device) if dropout > 0 else None
    weight_copy = compute_copy(weight, x.dtype)
    if update is not None:
        return _linear_with_update(x, weight, bias, relu, dropout, seed, precision, weight_copy, *flags, update)
    return _linear(x, weight, bias, relu, dropout, seed, precision, weight_copy, *flags)
