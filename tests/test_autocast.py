"""The Triton ops under torch.autocast against PyTorch's under the same autocast (CPU, fp16: bf16 is wrong in the
interpreter): conv2d and linear compute in fp16 from fp32 operands (their fp32 parameters read uncast, or through
compute copies, their gradients fp32), cross_entropy in fp32; output dtype and values, and the gradients' dtype and
values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close, assert_low_precision_close
from torch.utils._python_dispatch import TorchDispatchMode

from alexnet_triton import ops
from alexnet_triton.ops import library

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


def fc_leaves(shape, strided):
    """x [batch, in], fp32 weight [out, in] and bias [out] for ``shape`` (batch, in, out); ``strided``: x a column
    slice and the weight a transposed view (read through their strides)."""
    batch, fan_in, fan_out = shape
    if not strided:
        return leaves((batch, fan_in), (fan_out, fan_in), (fan_out,))
    x, w_t, b = leaves((batch, fan_in + 5), (fan_in, fan_out), (fan_out,))
    return [x[:, 2:2 + fan_in], w_t.t(), b]


@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "strided"])
@pytest.mark.parametrize("epilogue", [dict(), dict(relu=True), dict(relu=True, dropout=0.5), dict(dropout=0.25)],
                         ids=["plain", "relu", "relu+dropout", "dropout"])
@pytest.mark.parametrize("shape", [(1, 37, 23), (3, 40, 24), (130, 131, 9)], ids=str)
def test_linear_reads_fp32_parameters_as_their_autocast_copies(shape, epilogue, strided, no_torch_fallback):
    """Under autocast, fp32 weight and bias reach the kernels uncast, and the results are those of the op on fp16
    copies, bitwise: y; dx (cast up by the x cast's backward); dw and db stored from the same fp32 accumulators
    in fp32, so they round to the fp16 run's exactly."""
    operands = fc_leaves(shape, strided)
    options = dict(epilogue, seed=torch.tensor([99]) if "dropout" in epilogue else None)
    (y, grads), _, dy = both(lambda *t: ops.linear(*t, **options), F.linear, operands, no_torch_fallback)
    copies = [t.detach().to(LOW).requires_grad_() for t in operands]
    with no_torch_fallback():
        y_copies = ops.linear(*copies, **options)
        grads_copies = torch.autograd.grad(y_copies, copies, dy)
    assert y.dtype == LOW and torch.equal(y, y_copies)
    for name, ours, theirs in zip(("dx", "dw", "db"), grads, grads_copies, strict=True):
        assert ours.dtype == torch.float32 and torch.equal(ours.to(LOW), theirs), name


def test_gradients_of_fp32_parameters_are_not_rounded_to_the_autocast_dtype(no_torch_fallback):
    """dw and db of fp32 parameters under autocast are fp32 sums of exact fp16 products: within fp32's tolerance of
    the fp64 gradient, which the fp16-rounded gradient (PyTorch autocast's, cast up) is not."""
    x, w, b = leaves((130, 131), (9, 131), (9,))
    with torch.autocast("cpu", dtype=LOW), no_torch_fallback():
        y = ops.linear(x, w, b)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(LOW)
    with no_torch_fallback():
        dw, db = torch.autograd.grad(y, (w, b), dy)
    dw64, db64 = dy.double().t() @ x.detach().to(LOW).double(), dy.double().sum(0)
    assert_close(dw, dw64.float(), "dw")
    assert_close(db, db64.float(), "db")
    with pytest.raises(AssertionError):
        assert_close(dw.to(LOW).float(), dw64.float(), "dw rounded to fp16")


class RecordAten(TorchDispatchMode):
    """The names of the ATen ops dispatched, inside this project's operators too."""

    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.overloadpacket.__name__)
        return library.run_under(self, func, args, kwargs)


def test_an_autocast_step_of_the_fc_layers_casts_nothing(no_torch_fallback):
    """fc6-fc8 (scaled down) with fp32 parameters on an fp16 input (the pooled features under autocast), forward
    with the 2012 net's ReLU and dropout, then backward: no ATen cast anywhere (no weight or bias cast to fp16
    before the kernels, no gradient cast to fp32 after them); the parameters' gradients are fp32."""
    x = leaves((4, 72))[0].detach().to(LOW).requires_grad_()
    params = leaves((32, 72), (32,), (32, 32), (32,), (10, 32), (10,))
    record = RecordAten()
    with torch.autocast("cpu", dtype=LOW), no_torch_fallback(), record:
        h = ops.linear(x, *params[:2], relu=True, dropout=0.5)
        h = ops.linear(h, *params[2:4], relu=True, dropout=0.5)
        y = ops.linear(h, *params[4:])
        grads = torch.autograd.grad(y, [x, *params], torch.ones_like(y))
    assert {"linear", "linear_input_grad", "linear_weight_grad"} <= set(record.names)  # it sees the step
    assert "_to_copy" not in record.names  # what .to(dtype) dispatches (the interpreter's copy_ of launch
    # arguments back to them is not a cast)
    assert y.dtype == grads[0].dtype == LOW and all(g.dtype == torch.float32 for g in grads[1:])


def test_conv2d_reads_fp32_parameters_as_their_autocast_copies(no_torch_fallback):
    """2012 conv2 scaled (groups, padding, ReLU), channels_last: under autocast the fp32 bias reaches the kernel
    uncast (rounded in its epilogue) and the weight is cast inside the op; y and dx are bitwise those of the op on
    fp16 copies, and dw and db, written in fp32 from the same fp32 sums, round to that run's exactly."""
    x, w, b = leaves((2, 8, 9, 9), (12, 4, 5, 5), (12,))
    x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    conv = lambda *t: ops.conv2d(*t, padding=2, groups=2, relu=True)  # noqa: E731
    (y, grads), _, dy = both(conv, lambda *t: F.relu(F.conv2d(*t, padding=2, groups=2)), (x, w, b),
                             no_torch_fallback)
    copies = [t.detach().to(LOW).requires_grad_() for t in (x, w, b)]
    with no_torch_fallback():
        y_copies = conv(*copies)
        grads_copies = torch.autograd.grad(y_copies, copies, dy)
    assert y.dtype == LOW and torch.equal(y, y_copies)
    for name, ours, theirs in zip(("dx", "dw", "db"), grads, grads_copies, strict=True):
        assert ours.dtype == torch.float32 and torch.equal(ours.to(LOW), theirs), name


def test_an_autocast_step_of_conv_layers_casts_only_until_the_optimizer_wrote_the_copies(no_torch_fallback):
    """conv3 -> ReLU -> conv4 of the 2012 net (scaled; the mask handed to conv4), nn.Parameters: the first step
    casts each weight where a kernel reads it (both forwards, conv4's input gradient, which sums conv3's bias
    gradient too); after an SGD step, which writes the compute copies, a step casts nothing, neither parameters nor
    gradients (fp32 from the kernels)."""
    from alexnet_triton import nn, optim

    torch.manual_seed(0)
    conv3 = nn.Conv2d(16, 24, 3, padding=1, relu=True)
    conv4 = nn.Conv2d(24, 24, 3, padding=1, groups=2)
    conv4.mask_relu_of(conv3)
    sgd = optim.SGD([*conv3.parameters(), *conv4.parameters()], lr=0.01, momentum=0.9)
    x, dy = torch.randn(2, 16, 7, 7, dtype=LOW), torch.randn(2, 24, 7, 7, dtype=LOW)  # (autocast casts neither)
    casts = []
    for _ in range(2):
        record = RecordAten()
        sgd.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=LOW), no_torch_fallback(), record:
            conv4(conv3(x)).backward(dy)
        with no_torch_fallback():
            sgd.step()
        assert {"conv2d", "conv2d_input_grad_and_bias_grad", "conv2d_weight_grad"} <= set(record.names)  # the step
        casts.append(sum(name in ("to", "_to_copy") for name in record.names))  # (inside an op, a cast is "to")
        assert all(p.grad.dtype == torch.float32 for p in sgd.param_groups[0]["params"])
    assert casts == [3, 0]


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


@pytest.mark.parametrize("options", [dict(), dict(reduction="sum", label_smoothing=0.1),
                                     dict(reduction="none", ignore_index=3), dict(weight="logits' dtype")],
                         ids=["mean", "sum-smoothed", "none-ignored", "weighted"])
def test_cross_entropy_reads_low_logits_with_class_indices_uncast(options, no_torch_fallback):
    """fp16 logits, class-index targets: under autocast no cast is dispatched, the loss is fp32 and loss and
    dlogits are bitwise those of the kernels on the fp32 cast of the logits (dlogits rounded to fp16 as the cast's
    backward rounds it)."""
    logits = leaves((6, 10))[0].detach().to(LOW).requires_grad_()
    target = torch.tensor([3, 0, 7, 9, 1, 3])
    if "weight" in options:
        options = dict(weight=torch.rand(10, generator=torch.Generator().manual_seed(2)).to(LOW) + 0.5)
    record = RecordAten()
    with torch.autocast("cpu", dtype=LOW), no_torch_fallback(), record:
        loss = ops.cross_entropy(logits, target, **options)
        (dlogits,) = torch.autograd.grad(loss, logits, torch.ones_like(loss))
    assert not {"to", "_to_copy"} & set(record.names) and "cross_entropy" in record.names
    fp32 = logits.detach().float().requires_grad_()
    fp32_options = {**options, **({"weight": options["weight"].float()} if "weight" in options else {})}
    with no_torch_fallback():
        loss_fp32 = ops.cross_entropy(fp32, target, **fp32_options)
        (dlogits_fp32,) = torch.autograd.grad(loss_fp32, fp32, torch.ones_like(loss_fp32))
    assert loss.dtype == torch.float32 and torch.equal(loss, loss_fp32)
    assert dlogits.dtype == LOW and torch.equal(dlogits, dlogits_fp32.to(LOW))


def test_float64_is_not_cast(no_torch_fallback):
    x, w, b = leaves((3, 8), (4, 8), (4,), dtype=torch.float64)
    target = torch.tensor([0, 3, 1])
    with torch.autocast("cpu", dtype=LOW), no_torch_fallback():
        y = ops.linear(x, w, b)
        loss = ops.cross_entropy(y, target)
    assert y.dtype == loss.dtype == torch.float64
    assert_close(loss, F.cross_entropy(F.linear(x, w, b), target), "loss")
