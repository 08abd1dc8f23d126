"""The Triton ops under torch.autocast against PyTorch's under the same autocast (CPU, fp16: bf16 is wrong in the
interpreter): conv2d and linear compute in fp16 from fp32 operands, cross_entropy in fp32; output dtype and
values, and the gradients' dtype and values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close, assert_low_precision_close

from alexnet_triton import ops

LOW = torch.float16


def leaves(*shapes, dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(shape, generator=gen, dtype=dtype).requires_grad_() for shape in shapes]


def both(ours, theirs, operands, no_torch_fallback):
    """(y, grads) of ``ours`` and of ``theirs`` on ``operands`` under fp16 autocast, for the same upstream dy."""
    with torch.autocast("cpu", dtype=LOW):
        with no_torch_fallback():
            y = ours(*operands)
        y_ref = theirs(*operands)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(y.dtype)
    with no_torch_fallback():
        grads = torch.autograd.grad(y, operands, dy)
    return (y, grads), (y_ref, torch.autograd.grad(y_ref, operands, dy)), dy


@pytest.mark.parametrize("op", ["conv2d", "linear"])
def test_conv2d_and_linear_compute_in_the_autocast_dtype(op, no_torch_fallback):
    """fp16 output, fp32 gradients of the fp32 operands, as close to fp64 (on the fp16-rounded operands and dy)
    as PyTorch's."""
    if op == "conv2d":
        operands = leaves((2, 6, 9, 9), (8, 3, 3, 3), (8,))
        ours, theirs = (lambda x, w, b: ops.conv2d(x, w, b, padding=1, groups=2),
                        lambda x, w, b: F.conv2d(x, w, b, padding=1, groups=2))
    else:
        operands = leaves((5, 40), (24, 40), (24,))
        ours, theirs = ops.linear, F.linear
    (y, grads), (y_ref, grads_ref), dy = both(ours, theirs, operands, no_torch_fallback)
    assert y.dtype == y_ref.dtype == LOW
    rounded = [t.detach().to(LOW).double().requires_grad_() for t in operands]
    y64 = theirs(*rounded)
    assert_low_precision_close(y, y_ref, y64, "y")
    for name, a, e, e64 in zip(("dx", "dw", "db"), grads, grads_ref, torch.autograd.grad(y64, rounded, dy.double()),
                               strict=True):
        assert a.dtype == e.dtype == torch.float32, name
        assert_low_precision_close(a.to(LOW), e.to(LOW), e64, name)


@pytest.mark.parametrize("target", ["index", "soft"])
def test_cross_entropy_computes_in_fp32(target, no_torch_fallback):
    """fp16 logits (and soft target, fp32 class weights): an fp32 loss from fp32 copies; fp16 gradients."""
    logits, weight = leaves((6, 10), (10,))
    logits = logits.detach().to(LOW).requires_grad_()
    weight = weight.detach().abs() + 0.1
    if target == "index":
        labels, operands = torch.tensor([3, 0, 7, 9, 1, 3]), (logits,)
    else:
        labels = torch.softmax(leaves((6, 10))[0].detach(), 1).to(LOW).requires_grad_()
        operands = (logits, labels)
    (loss, grads), (loss_ref, grads_ref), _ = both(lambda *_: ops.cross_entropy(logits, labels, weight),
                                                   lambda *_: F.cross_entropy(logits, labels, weight), operands,
                                                   no_torch_fallback)
    assert loss.dtype == loss_ref.dtype == torch.float32
    assert_close(loss, loss_ref, "loss")
    for name, a, e in zip(("dlogits", "dtarget"), grads, grads_ref, strict=False):
        assert a.dtype == e.dtype == LOW, name
        assert_close(a, e, name)


def test_float64_is_not_cast(no_torch_fallback):
    x, w, b = leaves((3, 8), (4, 8), (4,), dtype=torch.float64)
    target = torch.tensor([0, 3, 1])
    with torch.autocast("cpu", dtype=LOW), no_torch_fallback():
        y = ops.linear(x, w, b)
        loss = ops.cross_entropy(y, target)
    assert y.dtype == loss.dtype == torch.float64
    assert_close(loss, F.cross_entropy(F.linear(x, w, b), target), "loss")
