"""cross_entropy on the Triton kernels against torch.nn.functional.cross_entropy: loss and dlogits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close, assert_low_precision_close

from alexnet_triton import ops
from alexnet_triton.kernels import cross_entropy as kernels

REDUCTIONS = ["mean", "sum", "none"]
# fc8's 1000 classes (batch scaled down), odd class counts below, at and just over one 1024-wide chunk.
SHAPES = [
    pytest.param((6, 1000), id="alexnet-fc8"),
    pytest.param((5, 7), id="7-classes"),
    pytest.param((3, 1001), id="1001-classes-two-chunks"),
    pytest.param((1, 1), id="one-class"),
]


def make(shape, dtype=torch.float32, scale=3.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(shape, generator=gen) * scale).to(dtype).requires_grad_()
    target = torch.randint(0, shape[1], (shape[0],), generator=gen)
    return logits, target


def upstream(loss: torch.Tensor, seed=1) -> torch.Tensor:
    """A random incoming gradient shaped like the loss."""
    return torch.randn(loss.shape, generator=torch.Generator().manual_seed(seed)).to(loss.dtype)


def run(logits, target, reduction, dloss, no_torch_fallback):
    with no_torch_fallback():
        loss = ops.cross_entropy(logits, target, reduction)
        dlogits, = torch.autograd.grad(loss, logits, dloss)
    return loss, dlogits


def reference(logits, target, reduction, dloss):
    loss = F.cross_entropy(logits, target, reduction=reduction)
    dlogits, = torch.autograd.grad(loss, logits, dloss)
    return loss, dlogits


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_torch_fp32(shape, reduction, no_torch_fallback):
    logits, target = make(shape)
    before = logits.detach().clone()
    dloss = upstream(F.cross_entropy(logits.detach(), target, reduction=reduction))
    loss_ref, dlogits_ref = reference(logits, target, reduction, dloss)
    loss, dlogits = run(logits, target, reduction, dloss, no_torch_fallback)
    assert loss.shape == loss_ref.shape and loss.dtype == torch.float32
    assert_close(loss, loss_ref, "loss")
    assert_close(dlogits, dlogits_ref, "dlogits")
    # the gradient is a new tensor; the saved logits are untouched
    assert dlogits.data_ptr() != logits.data_ptr() and torch.equal(logits.detach(), before)


def test_strided_logits_and_broadcast_upstream_gradient(no_torch_fallback):
    """Logits as a transposed view (class stride != 1); "none" followed by .sum() sends a stride-0 dloss."""
    gen = torch.Generator().manual_seed(2)
    logits = (torch.randn(37, 9, generator=gen) * 2).t().requires_grad_()
    target = torch.randint(0, 37, (9,), generator=gen)
    with no_torch_fallback():
        loss = ops.cross_entropy(logits, target, "none").sum()
        dlogits, = torch.autograd.grad(loss, logits)
    loss_ref, dlogits_ref = reference(logits, target, "sum", None)
    assert_close(loss, loss_ref, "loss")
    assert_close(dlogits, dlogits_ref, "dlogits")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_large_logits_are_stable(reduction, no_torch_fallback):
    """Logits ~1e4, a row spanning -3e4..3e4, and 2500 classes (three chunks) whose maximum sits in the
    first, middle or last chunk: the online log-sum-exp must rescale, never overflow."""
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 2500, generator=gen) * 1e4
    logits[0, 5] = logits[1, 1500] = logits[2, 2499] = 3e4
    logits[3] = torch.linspace(-3e4, 3e4, 2500)
    logits.requires_grad_()
    target = torch.tensor([5, 7, 2499, 0])
    dloss = upstream(F.cross_entropy(logits, target, reduction=reduction))
    loss, dlogits = run(logits, target, reduction, dloss, no_torch_fallback)
    loss_ref, dlogits_ref = reference(logits, target, reduction, dloss)
    assert loss.isfinite().all() and dlogits.isfinite().all()
    assert_close(loss, loss_ref, "loss")
    assert_close(dlogits, dlogits_ref, "dlogits")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_low_precision_against_fp64(dtype, reduction, no_torch_fallback):
    logits, target = make((6, 1001), dtype=dtype, scale=4.0, seed=4)
    dloss = upstream(F.cross_entropy(logits.detach().float(), target, reduction=reduction)).to(dtype)
    loss, dlogits = run(logits, target, reduction, dloss, no_torch_fallback)
    assert loss.dtype == dtype and dlogits.dtype == dtype
    loss_torch, dlogits_torch = reference(logits, target, reduction, dloss)
    logits64 = logits.detach().double().requires_grad_()
    loss64, dlogits64 = reference(logits64, target, reduction, dloss.double())
    assert_low_precision_close(loss, loss_torch, loss64, "loss")
    assert_low_precision_close(dlogits, dlogits_torch, dlogits64, "dlogits")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_float64(reduction):
    logits, target = make((4, 7), dtype=torch.float64, seed=5)
    assert torch.autograd.gradcheck(lambda x: ops.cross_entropy(x, target, reduction), (logits,), fast_mode=True)


def test_float64_matches_torch(no_torch_fallback):
    logits, target = make((5, 1001), dtype=torch.float64, seed=6)
    loss, dlogits = run(logits, target, "mean", None, no_torch_fallback)
    loss_ref, dlogits_ref = reference(logits, target, "mean", None)
    assert_close(loss, loss_ref, "loss")
    assert_close(dlogits, dlogits_ref, "dlogits")


def test_mean_and_sum_are_deterministic(no_torch_fallback):
    logits, target = make((9, 1000), seed=7)
    with no_torch_fallback():
        first = [ops.cross_entropy(logits, target, r) for r in ("mean", "sum")]
        second = [ops.cross_entropy(logits, target, r) for r in ("mean", "sum")]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_backward_launcher_alone():
    """The backward launcher recomputes the softmax from logits and lse (no softmax saved)."""
    logits, target = make((3, 10), seed=8)
    loss, lse = kernels.cross_entropy_forward(logits.detach(), target, "sum")
    assert lse.dtype == torch.float32 and lse.shape == (3,)
    torch.testing.assert_close(lse, torch.logsumexp(logits.detach(), 1))
    dlogits = kernels.cross_entropy_backward(torch.tensor(2.0), logits.detach(), target, lse, "sum")
    expected = (torch.softmax(logits.detach(), 1) - F.one_hot(target, 10)) * 2.0
    assert_close(dlogits, expected, "dlogits")


BAD_INPUTS = [
    ("target too large", (4, 7), torch.tensor([0, 7, 1, 2]), "mean", ValueError, r"class index 7.*C=7"),
    ("negative target", (4, 7), torch.tensor([0, 3, -1, 2]), "sum", ValueError, r"class index -1.*C=7"),
    ("ignore_index", (2, 7), torch.tensor([-100, 1]), "mean", ValueError, r"-100.*ignore_index is not supported"),
    ("float target", (4, 7), torch.zeros(4), "mean", TypeError, r"target must hold int64.*torch.float32"),
    ("int32 target", (4, 7), torch.zeros(4, dtype=torch.int32), "mean", TypeError, r"int64.*torch.int32"),
    ("target shape", (4, 7), torch.zeros(4, 1, dtype=torch.long), "mean", ValueError,
     r"target must have shape \(4,\).*\(4, 1\)"),
    ("target length", (4, 7), torch.zeros(3, dtype=torch.long), "mean", ValueError, r"shape \(4,\).*\(3,\)"),
    ("1-D logits", (7,), torch.zeros(1, dtype=torch.long), "mean", ValueError, r"logits must be 2-D.*\(7,\)"),
    ("3-D logits", (2, 7, 3), torch.zeros(2, dtype=torch.long), "mean", ValueError, r"2-D.*\(2, 7, 3\)"),
    ("empty batch", (0, 7), torch.zeros(0, dtype=torch.long), "mean", ValueError, r"at least one row"),
    ("unknown reduction", (4, 7), torch.zeros(4, dtype=torch.long), "avg", ValueError, r"reduction.*'avg'"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_rejected_with_a_clear_error(case):
    _, shape, target, reduction, error, message = case
    with pytest.raises(error, match=message):
        ops.cross_entropy(torch.randn(shape), target, reduction)


def test_integer_logits_are_rejected():
    with pytest.raises(TypeError, match="logits has dtype torch.int64"):
        ops.cross_entropy(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, dtype=torch.long))
