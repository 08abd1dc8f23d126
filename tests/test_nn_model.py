"""alexnet_triton.nn.Linear's fused dropout, as AlexNet's Triton tree uses it (fc6/fc7: ReLU, then dropout):
the standalone dropout op's mask and seed draw, in training mode only; the pool blocks that take the bias of the
conv before them."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close

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


@pytest.mark.parametrize("block", ["pool", "lrn-pool"])
def test_a_pool_block_that_takes_its_conv_s_bias_is_the_composition(block, no_torch_fallback):
    """conv (no ReLU) -> pool block (relu=True) after ``take_bias_of``: the conv runs without its bias, the block adds
    it; output and every gradient (the bias's from the block's backward) as PyTorch's conv -> ReLU -> (LRN ->) pool.
    The bias stays the conv's only: the block's state_dict is empty, the conv's unchanged."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    pool = nn.MaxPool2d(3, 2, relu=True) if block == "pool" else nn.LRNMaxPool2d(5, k=2.0, relu=True)
    keys = list(conv.state_dict())
    pool.take_bias_of(conv)
    assert conv.bias_added_after and list(conv.state_dict()) == keys and not pool.state_dict()
    assert "bias_added_after=True" in repr(conv) and "bias=the conv's before it" in repr(pool)
    x = torch.randn(2, 3, 11, 11, requires_grad=True)
    with no_torch_fallback():
        y = pool(conv(x))
        dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
        grads = torch.autograd.grad(y, (x, conv.weight, conv.bias), dy)
    z = torch.relu(torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1))
    if block == "lrn-pool":
        z = torch.nn.functional.local_response_norm(z, 5, k=2.0)
    y_ref = torch.nn.functional.max_pool2d(z, 3, 2)
    grads_ref = torch.autograd.grad(y_ref, (x, conv.weight, conv.bias), dy)
    assert_close(y, y_ref, "y")
    for name, ours, ref in zip(("dx", "dw", "db"), grads, grads_ref, strict=True):
        assert_close(ours, ref, name)


@pytest.mark.parametrize("conv", [dict(bias=False), dict(relu=True)], ids=["no-bias", "relu-in-the-conv"])
def test_a_conv_without_a_bias_or_with_its_own_relu_gives_no_bias(conv):
    with pytest.raises(ValueError, match="MaxPool2d: the conv before it must have a bias and no ReLU of its own"):
        nn.MaxPool2d(3, 2, relu=True).take_bias_of(nn.Conv2d(3, 8, 3, **conv))
