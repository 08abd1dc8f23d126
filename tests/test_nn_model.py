"""alexnet_triton.nn.Linear's fused dropout, as AlexNet's Triton tree uses it (fc6/fc7: ReLU, then dropout):
the standalone dropout op's mask and seed draw, in training mode only."""

from __future__ import annotations

import pytest
import torch

from alexnet_triton import nn, ops


def module_and_input(p: float):
    torch.manual_seed(0)
    return nn.Linear(40, 24, relu=True, dropout=p), torch.randn(6, 40, requires_grad=True)


def test_training_mode_is_linear_then_the_dropout_op_with_the_same_seed_draw(no_torch_fallback):
    """Output and gradients bitwise equal to ops.dropout(ops.linear(relu)) after the same torch.manual_seed."""
    module, x = module_and_input(0.5)
    operands = (x, module.weight, module.bias)
    with no_torch_fallback():
        torch.manual_seed(7)
        fused = module(x)
        torch.manual_seed(7)
        composed = ops.dropout(ops.linear(*operands, relu=True), 0.5, True)
        dy = torch.randn(fused.shape, generator=torch.Generator().manual_seed(1))
        grads, grads_ref = (torch.autograd.grad(y, operands, dy) for y in (fused, composed))
    assert torch.equal(fused, composed)
    assert 0.1 < (fused == 0).float().mean().item() < 0.9  # some outputs dropped, some kept
    for name, a, e in zip(("dx", "dw", "db"), grads, grads_ref, strict=True):
        assert torch.equal(a, e), name


def test_eval_mode_has_no_dropout_and_draws_no_seed(no_torch_fallback):
    module, x = module_and_input(0.5)
    module.eval()
    with no_torch_fallback():
        torch.manual_seed(7)
        y = module(x)
        after = torch.randint(0, 2**62, ())
        torch.manual_seed(7)
        assert torch.equal(y, ops.linear(x, module.weight, module.bias, relu=True))
    assert after == torch.randint(0, 2**62, ())


def test_bad_dropout_probability_is_named():
    with pytest.raises(ValueError, match="Linear: dropout probability has to be between 0 and 1, but got 1.5"):
        nn.Linear(4, 2, dropout=1.5)
