"""cross_entropy on the Triton kernels against torch.nn.functional.cross_entropy: loss, dlogits and, for
class-probability targets, dtarget."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close, assert_low_precision_close

from alexnet_triton import nn, ops
from alexnet_triton.kernels import cross_entropy as kernels

REDUCTIONS = ["mean", "sum", "none"]
# the interpreter computes "mean"'s 0 / 0 with numpy, which warns
NAN_EXPECTED = pytest.mark.filterwarnings("ignore:(invalid value|divide by zero) encountered in divide:RuntimeWarning")
GRADIENTS = ("dlogits", "dtarget")  # w.r.t. the logits and, for soft targets that need one, the target


def make(shape, kind="index", dtype=torch.float32, seed=0, weighted=False, ignore_index=None, scale=3.0):
    """(logits, target, kwargs): logits of ``shape`` ((N, C, d1, ..., dk) or (C,)) that need a gradient; a target
    of ``kind`` ("index": int64 class indices, a third of them ``ignore_index`` when given; "uint8"; "soft":
    probabilities of the logits' shape that need a gradient); kwargs: weight [C] (when ``weighted``) and
    ignore_index."""
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(shape, generator=gen) * scale).to(dtype).requires_grad_()
    classes = shape[1] if len(shape) > 1 else shape[0]
    positions = (shape[0], *shape[2:]) if len(shape) > 1 else ()
    kwargs = {}
    if kind == "soft":
        target = torch.rand(shape, generator=gen).to(dtype).requires_grad_()
    else:
        target = torch.randint(0, classes, positions, generator=gen)
        if ignore_index is not None:
            target = target.masked_fill(torch.rand(positions, generator=gen) < 1 / 3, ignore_index)
            kwargs["ignore_index"] = ignore_index
        target = target.to(torch.uint8 if kind == "uint8" else torch.int64)
    if weighted:
        kwargs["weight"] = (torch.rand(classes, generator=gen) + 0.1).to(dtype)
    return logits, target, kwargs


def upstream(loss: torch.Tensor, seed=1) -> torch.Tensor:
    """A random incoming gradient shaped like the loss."""
    return torch.randn(loss.shape, generator=torch.Generator().manual_seed(seed)).to(loss.dtype)


def differentiable(logits, target):
    return (logits, target) if target.requires_grad else (logits,)


def reference(logits, target, dloss, **kwargs):
    """PyTorch's loss and gradients (w.r.t. the logits, and a soft target that needs one)."""
    loss = F.cross_entropy(logits, target, **kwargs)
    return loss, torch.autograd.grad(loss, differentiable(logits, target), dloss)


def run(logits, target, dloss, no_torch_fallback, **kwargs):
    """The Triton loss and gradients, with PyTorch's loss kernels forbidden."""
    with no_torch_fallback():
        loss = ops.cross_entropy(logits, target, **kwargs)
        return loss, torch.autograd.grad(loss, differentiable(logits, target), dloss)


def check_against_torch(logits, target, no_torch_fallback, **kwargs):
    """Loss (shape, dtype, values) and every gradient against PyTorch's, for a random incoming gradient."""
    dloss = upstream(F.cross_entropy(logits.detach(), target.detach(), **kwargs))
    loss_ref, grads_ref = reference(logits, target, dloss, **kwargs)
    loss, grads = run(logits, target, dloss, no_torch_fallback, **kwargs)
    assert loss.shape == loss_ref.shape and loss.dtype == loss_ref.dtype
    assert_close(loss, loss_ref, "loss")
    for name, grad, grad_ref in zip(GRADIENTS[:len(grads_ref)], grads, grads_ref, strict=True):
        assert grad.shape == grad_ref.shape and grad.dtype == grad_ref.dtype
        assert_close(grad, grad_ref, name)


# fc8's 1000 classes (batch scaled down), odd class counts below, at and just over one 1024-wide chunk.
SHAPES = [
    pytest.param((6, 1000), id="alexnet-fc8"),
    pytest.param((5, 7), id="7-classes"),
    pytest.param((3, 1001), id="1001-classes-two-chunks"),
    pytest.param((1, 1), id="one-class"),
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_torch_fp32(shape, reduction, no_torch_fallback):
    logits, target, _ = make(shape)
    before = logits.detach().clone()
    check_against_torch(logits, target, no_torch_fallback, reduction=reduction)
    assert torch.equal(logits.detach(), before)  # the saved logits are untouched


# (logits shape, target kind, make's options, F.cross_entropy's other arguments): each argument and shape class.
FEATURES = [
    pytest.param((8, 7), "index", dict(ignore_index=2), {}, id="ignore_index-in-range"),
    pytest.param((8, 7), "index", dict(weighted=True, ignore_index=-100), {}, id="weight-ignore_index"),
    pytest.param((6, 7), "index", {}, dict(label_smoothing=0.1), id="label_smoothing"),
    pytest.param((8, 7), "index", dict(weighted=True, ignore_index=-100), dict(label_smoothing=0.25),
                 id="label_smoothing-weight-ignore_index"),
    pytest.param((3, 1001), "index", dict(weighted=True), dict(label_smoothing=0.3),
                 id="label_smoothing-weight-1001-classes"),
    pytest.param((4, 7), "index", {}, dict(label_smoothing=1.0), id="label_smoothing-1"),
    pytest.param((4, 7), "index", {}, dict(label_smoothing=-0.5), id="label_smoothing-negative-is-none"),
    pytest.param((6, 7), "soft", {}, {}, id="soft"),
    pytest.param((6, 7), "soft", dict(weighted=True), dict(label_smoothing=0.2), id="soft-weight-label_smoothing"),
    pytest.param((2, 1100), "soft", dict(weighted=True), {}, id="soft-weight-1100-classes"),
    pytest.param((2, 5, 4), "index", dict(weighted=True, ignore_index=-100), dict(label_smoothing=0.1),
                 id="3d-weight-ignore_index-label_smoothing"),
    pytest.param((2, 3, 2, 1, 2), "index", dict(ignore_index=1), {}, id="5d-ignore_index"),
    pytest.param((2, 5, 2, 2), "soft", dict(weighted=True), dict(label_smoothing=0.1),
                 id="4d-soft-weight-label_smoothing"),
    pytest.param((7,), "index", dict(weighted=True), {}, id="unbatched"),
    pytest.param((7,), "soft", {}, dict(label_smoothing=0.1), id="unbatched-soft"),
    pytest.param((5, 7), "uint8", dict(weighted=True), {}, id="uint8-target"),
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("shape", "kind", "options", "kwargs"), FEATURES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_feature_matches_torch(dtype, shape, kind, options, kwargs, reduction, no_torch_fallback):
    logits, target, extra = make(shape, kind, dtype=dtype, seed=10, **options)
    check_against_torch(logits, target, no_torch_fallback, reduction=reduction, **extra, **kwargs)


@pytest.mark.parametrize(("shape", "kind", "options", "kwargs"), FEATURES)
def test_feature_gradcheck_float64(shape, kind, options, kwargs, reduction="mean"):
    """Each feature's gradient against finite differences of its own forward (the other reductions' gradients
    are compared with PyTorch's above)."""
    logits, target, extra = make(shape, kind, dtype=torch.float64, seed=11, **options)
    assert torch.autograd.gradcheck(
        lambda *xs: ops.cross_entropy(xs[0], xs[1] if len(xs) > 1 else target, reduction=reduction, **extra, **kwargs),
        differentiable(logits, target), fast_mode=True)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kwargs", [{}, dict(label_smoothing=0.2), dict(label_smoothing=0.2, weighted=True)],
                         ids=["plain", "label_smoothing", "label_smoothing-weight"])
@NAN_EXPECTED
def test_every_target_ignored(kwargs, reduction, no_torch_fallback):
    """PyTorch: "mean" is nan (0 / 0), "sum" 0, "none" zeros; every gradient is 0, never nan."""
    kwargs = dict(kwargs)
    logits, target, extra = make((4, 5), seed=12, weighted=kwargs.pop("weighted", False))
    target = torch.full_like(target, -100)
    dloss = torch.ones(target.shape if reduction == "none" else ())
    loss_ref, (dlogits_ref,) = reference(logits, target, dloss, reduction=reduction, **extra, **kwargs)
    loss, (dlogits,) = run(logits, target, dloss, no_torch_fallback, reduction=reduction, **extra, **kwargs)
    if reduction == "mean":
        assert loss.isnan() and loss_ref.isnan()
    else:
        assert_close(loss, loss_ref, "loss")
    assert torch.equal(dlogits, torch.zeros_like(dlogits)) and torch.equal(dlogits_ref, dlogits)


@NAN_EXPECTED
def test_unbatched_ignored_target_is_nan(no_torch_fallback):
    logits, target, _ = make((5,), seed=13)
    with no_torch_fallback():
        loss = ops.cross_entropy(logits, torch.tensor(3), ignore_index=3)
    assert loss.isnan() and F.cross_entropy(logits, torch.tensor(3), ignore_index=3).isnan()


EMPTY = [
    pytest.param((0, 7), "index", id="no-rows"),
    pytest.param((0, 7), "soft", id="no-rows-soft"),
    pytest.param((3, 7, 0), "index", id="no-positions"),
    pytest.param((0, 7, 4, 2), "soft", id="no-rows-4d-soft"),
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("shape", "kind"), EMPTY)
@NAN_EXPECTED
def test_empty_batch(shape, kind, reduction, no_torch_fallback):
    """PyTorch: "mean" of nothing is nan, "sum" 0, "none" an empty tensor; gradients are empty."""
    logits, target, _ = make(shape, kind, seed=14, weighted=True)
    loss_ref = F.cross_entropy(logits, target, reduction=reduction, label_smoothing=0.1)
    dloss = torch.ones(loss_ref.shape)
    loss_ref, grads_ref = reference(logits, target, dloss, reduction=reduction, label_smoothing=0.1)
    loss, grads = run(logits, target, dloss, no_torch_fallback, reduction=reduction, label_smoothing=0.1)
    assert loss.shape == loss_ref.shape
    if reduction == "mean":
        assert loss.isnan() and loss_ref.isnan()
    else:
        assert torch.equal(loss, loss_ref)
    assert [g.shape for g in grads] == [g.shape for g in grads_ref]


def noncontiguous(t: torch.Tensor) -> torch.Tensor:
    """``t``'s values in a view with the dimensions' order reversed and every other element of a wider buffer:
    no stride is the contiguous one (the classes of a logits view are neither stride 1 nor innermost)."""
    if t.dim() == 0:
        return t
    wide = t.detach().new_zeros([2 * s for s in reversed(t.shape)])
    view = wide[tuple(slice(None, None, 2) for _ in t.shape)].permute(*reversed(range(t.dim())))
    view.copy_(t.detach())
    assert view.numel() < 2 or not view.is_contiguous()
    return view.requires_grad_(t.requires_grad)


STRIDED = [
    pytest.param((9, 37), "index", id="2d"),
    pytest.param((3, 6, 5), "index", id="3d-classes-in-dim-1"),
    pytest.param((2, 6, 3, 4), "index", id="4d-spatial-dims-not-mergeable"),
    pytest.param((3, 6, 5), "soft", id="3d-soft"),
]


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize(("shape", "kind"), STRIDED)
def test_every_operand_strided(shape, kind, reduction, no_torch_fallback):
    """Logits, target, weight and the incoming gradient ("none") as non-contiguous views."""
    logits, target, kwargs = make(shape, kind, seed=15, weighted=True, ignore_index=None if kind == "soft" else 1)
    logits, target, weight = noncontiguous(logits), noncontiguous(target), noncontiguous(kwargs.pop("weight"))
    assert weight.stride() == (2,)
    dloss = noncontiguous(upstream(F.cross_entropy(logits.detach(), target.detach(), reduction=reduction,
                                                   weight=weight, label_smoothing=0.1, **kwargs)))
    loss_ref, grads_ref = reference(logits, target, dloss, reduction=reduction, weight=weight, label_smoothing=0.1,
                                    **kwargs)
    loss, grads = run(logits, target, dloss, no_torch_fallback, reduction=reduction, weight=weight,
                      label_smoothing=0.1, **kwargs)
    assert_close(loss, loss_ref, "loss")
    for name, grad, grad_ref in zip(GRADIENTS[:len(grads_ref)], grads, grads_ref, strict=True):
        assert_close(grad, grad_ref, name)


def test_channels_last_logits_and_broadcast_upstream_gradient(no_torch_fallback):
    """(N, C, H, W) logits in channels_last (class stride 1); "none" followed by .sum() sends a stride-0 dloss."""
    logits, target, _ = make((2, 5, 3, 4), seed=16)
    logits = logits.detach().to(memory_format=torch.channels_last).requires_grad_()
    with no_torch_fallback():
        loss = ops.cross_entropy(logits, target, reduction="none").sum()
        dlogits, = torch.autograd.grad(loss, logits)
    loss_ref, (dlogits_ref,) = reference(logits, target, None, reduction="sum")
    assert_close(loss, loss_ref, "loss")
    assert_close(dlogits, dlogits_ref, "dlogits")


@pytest.mark.parametrize("kwargs", [{}, dict(label_smoothing=0.1)], ids=["plain", "label_smoothing"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_large_logits_are_stable(reduction, kwargs, no_torch_fallback):
    """Logits ~1e4, a row spanning -3e4..3e4, and 2500 classes (three chunks) whose maximum sits in the
    first, middle or last chunk: the online log-sum-exp must rescale, never overflow."""
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 2500, generator=gen) * 1e4
    logits[0, 5] = logits[1, 1500] = logits[2, 2499] = 3e4
    logits[3] = torch.linspace(-3e4, 3e4, 2500)
    logits.requires_grad_()
    target = torch.tensor([5, 7, 2499, 0])
    dloss = upstream(F.cross_entropy(logits, target, reduction=reduction))
    loss, (dlogits,) = run(logits, target, dloss, no_torch_fallback, reduction=reduction, **kwargs)
    loss_ref, (dlogits_ref,) = reference(logits, target, dloss, reduction=reduction, **kwargs)
    assert loss.isfinite().all() and dlogits.isfinite().all()
    assert_close(loss, loss_ref, "loss")
    assert_close(dlogits, dlogits_ref, "dlogits")


LOW_PRECISION = [
    pytest.param((6, 1001), "index", dict(weighted=True, ignore_index=-100), dict(label_smoothing=0.1),
                 id="weight-ignore_index-label_smoothing"),
    pytest.param((3, 9, 4), "soft", dict(weighted=True), dict(label_smoothing=0.1), id="3d-soft"),
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("shape", "kind", "options", "kwargs"), LOW_PRECISION)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_low_precision_against_fp64(dtype, shape, kind, options, kwargs, reduction, no_torch_fallback):
    logits, target, extra = make(shape, kind, dtype=dtype, scale=4.0, seed=4, **options)
    kwargs = dict(reduction=reduction, **kwargs)
    dloss = upstream(F.cross_entropy(logits.detach().float(), target.detach().float() if kind == "soft" else target,
                                     **{k: v.float() if k == "weight" else v for k, v in extra.items()},
                                     **kwargs)).to(dtype)
    loss, grads = run(logits, target, dloss, no_torch_fallback, **extra, **kwargs)
    assert loss.dtype == dtype and all(g.dtype == dtype for g in grads)
    loss_torch, grads_torch = reference(logits, target, dloss, **extra, **kwargs)
    logits64 = logits.detach().double().requires_grad_()
    target64 = target.detach().double().requires_grad_() if kind == "soft" else target
    loss64, grads64 = reference(logits64, target64, dloss.double(),
                                **{k: v.double() if k == "weight" else v for k, v in extra.items()}, **kwargs)
    assert_low_precision_close(loss, loss_torch, loss64, "loss")
    for name, grad, grad_torch, grad64 in zip(GRADIENTS[:len(grads64)], grads, grads_torch, grads64, strict=True):
        assert_low_precision_close(grad, grad_torch, grad64, name)


@pytest.mark.parametrize(("shape", "kind", "options", "kwargs"), [
    pytest.param((9, 1000), "index", {}, {}, id="alexnet"),
    pytest.param((2, 9, 3), "index", dict(weighted=True, ignore_index=-100), dict(label_smoothing=0.1),
                 id="3d-weight-ignore_index-label_smoothing"),
    pytest.param((2, 9, 3), "soft", dict(weighted=True), {}, id="3d-soft-weight"),
])
def test_mean_and_sum_are_deterministic(shape, kind, options, kwargs, no_torch_fallback):
    logits, target, extra = make(shape, kind, seed=7, **options)
    with no_torch_fallback():
        first, second = ([ops.cross_entropy(logits, target, reduction=r, **extra, **kwargs) for r in ("mean", "sum")]
                         for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_backward_launcher_alone():
    """The backward launcher recomputes the softmax from logits and the saved lse (no softmax saved), also from a
    strided lse."""
    logits, target, _ = make((3, 10), seed=8)
    logits = logits.detach()
    loss, saved = kernels.cross_entropy_forward(logits, target, "sum")
    assert saved.lse.dtype == torch.float32 and saved.lse.shape == (3,) and saved.mass is None
    torch.testing.assert_close(saved.lse, torch.logsumexp(logits, 1))
    expected = (torch.softmax(logits, 1) - F.one_hot(target, 10)) * 2.0
    for lse in (saved.lse, noncontiguous(saved.lse)):
        dlogits, dtarget = kernels.cross_entropy_backward(torch.tensor(2.0), logits, target, saved._replace(lse=lse),
                                                          "sum")
        assert_close(dlogits, expected, "dlogits")
        assert dtarget is None


def test_soft_target_gradient_alone(no_torch_fallback):
    """Logits that need no gradient, a soft target that does: only dtarget comes back."""
    logits, target, _ = make((4, 6), "soft", seed=17)
    logits = logits.detach()
    with no_torch_fallback():
        dtarget, = torch.autograd.grad(ops.cross_entropy(logits, target, label_smoothing=0.2), target)
    dtarget_ref, = torch.autograd.grad(F.cross_entropy(logits, target, label_smoothing=0.2), target)
    assert_close(dtarget, dtarget_ref, "dtarget")


@pytest.mark.parametrize(("legacy", "reduction"), [
    (dict(size_average=False), "sum"), (dict(reduce=False), "none"), (dict(size_average=True, reduce=True), "mean"),
])
def test_deprecated_size_average_and_reduce_map_to_reduction(legacy, reduction, no_torch_fallback):
    """As PyTorch: mapped to ``reduction``, with its deprecation warning."""
    logits, target, _ = make((4, 5), seed=18)
    with pytest.warns(UserWarning, match=f"reduction='{reduction}'"), no_torch_fallback():
        loss = ops.cross_entropy(logits, target, **legacy)
    assert_close(loss, F.cross_entropy(logits, target, reduction=reduction), "loss")


def test_second_derivative_is_refused():
    """First derivatives only: the gradient is not differentiable again, so a second derivative raises (PyTorch's
    error) instead of coming back as a silent 0."""
    logits, target, _ = make((4, 5), "soft", seed=21)
    dlogits, = torch.autograd.grad(ops.cross_entropy(logits, target), logits, create_graph=True)
    with pytest.raises(RuntimeError, match="backward through alexnet_triton.cross_entropy_backward.* no autograd"):
        torch.autograd.grad(dlogits.sum(), logits)


def test_weight_gradient_is_refused():
    logits, target, kwargs = make((4, 5), seed=19, weighted=True)
    with pytest.raises(NotImplementedError, match=r"gradient w.r.t. weight.*weight.detach\(\)"):
        ops.cross_entropy(logits, target, weight=kwargs["weight"].requires_grad_())


@pytest.mark.parametrize("kwargs", [{}, dict(weight=torch.rand(5) + 0.1, ignore_index=1, label_smoothing=0.15,
                                             reduction="none")], ids=["default", "every-argument"])
def test_cross_entropy_loss_module(kwargs, no_torch_fallback):
    """nn.CrossEntropyLoss: torch's constructor arguments, state_dict and results."""
    torch_module = torch.nn.CrossEntropyLoss(**kwargs)
    module = nn.CrossEntropyLoss(**kwargs)
    module.load_state_dict(torch_module.state_dict())
    logits, target, _ = make((3, 5, 4), seed=20)
    with no_torch_fallback():
        loss = module(logits, target)
    assert_close(loss, torch_module(logits, target), "loss")


BAD_INPUTS = [
    ("target too large", (4, 7), torch.tensor([0, 7, 1, 2]), {}, ValueError, r"class index 7.*C=7"),
    ("negative target", (4, 7), torch.tensor([0, 3, -1, 2]), {}, ValueError, r"class index -1.*ignore_index=-100"),
    ("int32 target", (4, 7), torch.zeros(4, dtype=torch.int32), {}, TypeError, r"class indices.*torch.int32"),
    ("target shape", (4, 7), torch.zeros(4, 1, dtype=torch.long), {}, ValueError,
     r"target must have shape \(4,\).*\(4, 1\)"),
    ("k-dim target shape", (2, 7, 3), torch.zeros(2, 4, dtype=torch.long), {}, ValueError, r"\(2, 3\).*\(2, 4\)"),
    ("unbatched target", (7,), torch.zeros(1, dtype=torch.long), {}, ValueError, r"shape \(\).*\(1,\)"),
    ("soft target shape", (4, 7), torch.rand(4, 6), {}, ValueError, r"logits' shape \(4, 7\).*\(4, 6\)"),
    ("soft target dtype", (4, 7), torch.rand(4, 7, dtype=torch.float64), {}, TypeError, r"torch.float64.*one dtype"),
    ("soft target ignore_index", (4, 7), torch.rand(4, 7), dict(ignore_index=1), ValueError,
     r"ignore_index \(1\) is not supported with class-probability"),
    ("weight shape", (4, 7), torch.zeros(4, dtype=torch.long), dict(weight=torch.rand(6)), ValueError,
     r"weight must have shape \(7,\).*\(6,\)"),
    ("weight dtype", (4, 7), torch.zeros(4, dtype=torch.long), dict(weight=torch.rand(7, dtype=torch.float64)),
     TypeError, r"weight has dtype torch.float64.*logits' dtype torch.float32"),
    ("label_smoothing above 1", (4, 7), torch.zeros(4, dtype=torch.long), dict(label_smoothing=1.5), ValueError,
     r"label_smoothing must be at most 1.0, got 1.5"),
    ("ignore_index type", (4, 7), torch.zeros(4, dtype=torch.long), dict(ignore_index=1.0), TypeError,
     r"ignore_index must be an int"),
    ("0-d logits", (), torch.zeros((), dtype=torch.long), {}, ValueError, r"C >= 1.*\(\)"),
    ("no classes", (3, 0), torch.zeros(3, dtype=torch.long), {}, ValueError, r"C >= 1.*\(3, 0\)"),
    ("unknown reduction", (4, 7), torch.zeros(4, dtype=torch.long), dict(reduction="avg"), ValueError,
     r"reduction.*'avg'"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_rejected_with_a_clear_error(case):
    _, shape, target, kwargs, error, message = case
    with pytest.raises(error, match=message):
        ops.cross_entropy(torch.randn(shape), target, **kwargs)


def test_integer_logits_are_rejected():
    with pytest.raises(TypeError, match="logits has dtype torch.int64"):
        ops.cross_entropy(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, dtype=torch.long))

