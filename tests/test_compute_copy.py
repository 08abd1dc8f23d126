"""Compute copies of fp32 master weights (``precision.compute_copy``): the SGD update writes a fp16/bf16 copy of
each fc and conv weight beside it (multi-tensor and fused), the linear and conv forward and input gradient read it
once it matches the weight. Bitwise the run without copies (kernels, layers, scaled nets, both update modes),
never stale (every in-place change of the weight is seen at once), graph-safe, not in any state dict; errors name
the operand."""

from __future__ import annotations

import gc
import importlib

import pytest
import test_graph_safe as graph_safe
import torch
from test_fused_update import HYPER, _randn  # the SGD settings and random tensors both files test with

from alexnet_triton import nn, optim, precision
from alexnet_triton.kernels import checks, conv, linear, runtime, sgd
from alexnet_triton.model import AlexNet

linear_ops = importlib.import_module("alexnet_triton.ops.linear")  # (alexnet_triton.ops.linear is the function)
conv_ops = importlib.import_module("alexnet_triton.ops.conv")

LOW = [pytest.param(torch.bfloat16, id="bf16"), pytest.param(torch.float16, id="fp16")]


# ---- kernels: the copy is the weight rounded to nearest even, and reading it changes no bit ----

@pytest.mark.parametrize("first_step", [True, False], ids=["first-step", "later-step"])
@pytest.mark.parametrize("hyper", HYPER)
def test_the_multi_tensor_step_writes_each_copy_from_the_new_weight(hyper, first_step, no_torch_fallback):
    """40 parameters (two launches of at most MAX_TENSORS), fc-like, odd and channels_last ones, with bf16, fp16 or
    no copy, in shuffled order: the parameters and buffers bitwise those of the step without copies, each copy the
    new weight rounded to its dtype (copies start as NaN: every element written)."""
    gen = torch.Generator().manual_seed(11)
    shapes = [(24, 40), (37,), (5, 3, 3, 2), (1,), (9, 7)] * 8
    params = [_randn(*s, gen=gen) for s in shapes]
    params[2] = params[2].contiguous(memory_format=torch.channels_last)
    grads = [_randn(*s, gen=gen).contiguous(memory_format=runtime.memory_format_of(p))
             for s, p in zip(shapes, params, strict=True)]
    buffers = [None if first_step else torch.randn_like(p) for p in params]
    copy_dtypes = [(torch.bfloat16, None, torch.float16)[i % 3] for i in range(len(params))]
    copies = [None if d is None else torch.full_like(p, float("nan"), dtype=d)
              for p, d in zip(params, copy_dtypes, strict=True)]
    plain = [p.clone() for p in params]
    plain_buffers = [None if b is None else b.clone() for b in buffers]
    with no_torch_fallback():
        new_buffers = sgd.sgd_steps(params, grads, buffers, lr=0.05, copies=copies, **hyper)
        plain_new_buffers = sgd.sgd_steps(plain, grads, plain_buffers, lr=0.05, **hyper)
    for i, (p, q, c) in enumerate(zip(params, plain, copies, strict=True)):
        assert torch.equal(p, q), i
        if c is not None:
            assert c.stride() == p.stride() and torch.equal(c, p.to(c.dtype)), i
    for a, b in zip(new_buffers, plain_new_buffers, strict=True):
        assert (a is None and b is None) or torch.equal(a, b)


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("hyper", HYPER)
def test_the_fused_step_writes_the_copy_from_the_new_weight(hyper, dtype, no_torch_fallback):
    gen = torch.Generator().manual_seed(12)
    dy, x = _randn(13, 33, dtype=dtype, gen=gen), _randn(13, 70, dtype=dtype, gen=gen)
    weight, bias = _randn(33, 70, gen=gen), _randn(33, gen=gen)
    buffers = [torch.randn_like(weight), torch.randn_like(bias)] if hyper["momentum"] else [None, None]
    weight_copy = torch.full_like(weight, float("nan"), dtype=dtype)
    plain = [t.clone() for t in (weight, bias)], [None if b is None else b.clone() for b in buffers]
    with no_torch_fallback():
        linear.linear_weight_grad_sgd_(dy, x, weight, bias, *buffers, lr=0.05, weight_copy=weight_copy, **hyper)
        linear.linear_weight_grad_sgd_(dy, x, *plain[0], *plain[1], lr=0.05, **hyper)
    assert torch.equal(weight, plain[0][0]) and torch.equal(bias, plain[0][1])
    assert torch.equal(weight_copy, weight.to(dtype))


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("shape", [(6, 96, 80), (3, 5, 7, 9)], ids=["fc-like", "odd-3d"])
def test_forward_and_input_grad_reading_the_copy_give_the_masters_bits(shape, dtype, no_torch_fallback):
    """x and dy strided views, the copy a transposed view (read through its own strides), ReLU and dropout: the
    output and the input gradient bitwise those computed from the fp32 master."""
    gen = torch.Generator().manual_seed(13)
    *rows, k, n = shape
    x = _randn(*rows, 2 * k, dtype=dtype, gen=gen)[..., ::2]
    weight, bias = _randn(n, k, gen=gen), _randn(n, gen=gen)
    weight_copy = weight.to(dtype).t().contiguous().t()
    dy = _randn(*rows, n, 3, dtype=dtype, gen=gen)[..., 1]
    with no_torch_fallback():
        y_master = linear.linear_forward(x, weight, bias, relu=True, dropout=0.3, seed=5)
        y_copy = linear.linear_forward(x, weight, bias, relu=True, dropout=0.3, seed=5, weight_copy=weight_copy)
        dx_master = linear.linear_input_grad(dy, weight, y_master, dropout=0.3, seed=5)
        dx_copy = linear.linear_input_grad(dy, weight_copy, y_master, dropout=0.3, seed=5)
    assert torch.equal(y_copy, y_master) and torch.equal(dx_copy, dx_master)


@pytest.mark.parametrize("mistake,match", [
    (lambda x, w, b: linear.linear_forward(x, w, b, weight_copy=w.to(torch.float16)), "weight_copy .* torch.float16"),
    (lambda x, w, b: linear.linear_forward(x, w, b, weight_copy=w[:, :-1].bfloat16()), r"weight_copy \(4, 5\)"),
    (lambda x, w, b: linear.linear_forward(x.float(), w, b, weight_copy=w.bfloat16()), "fp32 master weight"),
    (lambda x, w, b: sgd.sgd_steps([w], [w], [None], lr=0.1, copies=[w.t().bfloat16()]), r"compute copy \(6, 4\)"),
    (lambda x, w, b: conv_ops._conv2d(x.view(3, 6, 1, 1), w.view(4, 6, 1, 1), b, [1, 1], [0, 0], "", [1, 1], 1,
                                      False, "ieee", False, False, w.view(4, 3, 2, 1).bfloat16(), None, False),
     r"conv2d: weight_copy \(4, 3, 2, 1\)"),
    (lambda x, w, b: conv_ops._conv2d(x.view(3, 6, 1, 1), w.view(4, 6, 1, 1), b, [1, 1], [0, 0], "", [1, 1], 1,
                                      False, "ieee", False, False, w.view(4, 6, 1, 1).half(), None, False),
     "torch.float16"),
    (lambda x, w, b: sgd.sgd_steps([w.double()], [w.double()], [None], lr=0.1, copies=[w.bfloat16()]),
     "float32 param"),
    (lambda x, w, b: linear.linear_weight_grad_sgd_(torch.ones(3, 4, dtype=torch.bfloat16), x, w, b, None, None,
                                                    lr=0.1, weight_copy=b.bfloat16()), r"compute copy \(4,\)"),
])
def test_a_bad_copy_is_an_error_naming_it(mistake, match):
    x, w, b = torch.randn(3, 6, dtype=torch.bfloat16), torch.randn(4, 6), torch.randn(4)
    with pytest.raises(checks.ArgumentError, match=match):
        mistake(x, w, b)


# ---- layers and nets: training with copies is bitwise training without ----

def _no_copies(monkeypatch):
    """Linear and conv layers read their fp32 master weights as without compute copies (none is ever asked for)."""
    monkeypatch.setattr(linear_ops, "compute_copy", lambda weight, dtype: None)
    monkeypatch.setattr(conv_ops, "compute_copy", lambda weight, dtype: None)


def _count_copy_reads(monkeypatch) -> tuple[list[torch.dtype | None], list[torch.dtype | None]]:
    """The dtype of the copy each linear forward launch reads, and each conv reads in forward or input gradient
    (None: none, the fp32 master), appended as they run."""
    reads, conv_reads, forward, read_weight = [], [], linear_ops.linear_forward, conv_ops._read_weight

    def spy(*args, weight_copy=None, **kwargs):
        reads.append(None if weight_copy is None else weight_copy.dtype)
        return forward(*args, weight_copy=weight_copy, **kwargs)

    def conv_spy(weight, weight_copy, dtype):
        conv_reads.append(None if weight_copy is None else weight_copy.dtype)
        return read_weight(weight, weight_copy, dtype)
    monkeypatch.setattr(linear_ops, "linear_forward", spy)
    monkeypatch.setattr(conv_ops, "_read_weight", conv_spy)
    return reads, conv_reads


def _train(model, optimizer, steps, batch, size, seed, dtype):
    """``steps`` SGD steps under autocast to ``dtype`` on fresh random batches (the same for every call with this
    seed); their losses."""
    gen, losses = torch.Generator().manual_seed(seed), []
    for _ in range(steps):
        images = torch.randn(batch, *size, generator=gen)
        torch.manual_seed(int(torch.randint(2**31, (1,), generator=gen)))  # the dropout seeds
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=dtype):
            loss = model(images).float().square().mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def _assert_same_state(model_a, opt_a, model_b, opt_b):
    for (name, a), b in zip(model_a.named_parameters(), model_b.parameters(), strict=True):
        assert torch.equal(a, b), name
        if "momentum_buffer" in opt_a.state[a]:
            assert torch.equal(opt_a.state[a]["momentum_buffer"], opt_b.state[b]["momentum_buffer"]), name


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(nn.Linear(23, 17, relu=True, dropout=0.3), nn.Linear(17, 9, relu=True),
                               nn.Linear(9, 5, bias=False))


def _both_runs(make, hyper, fused, train, monkeypatch):
    """(losses, model, optimizer) with compute copies, then the same without; ``train(model, optimizer)`` -> losses."""
    runs = []
    for copies in (True, False):
        model = make()
        optimizer = optim.SGD(model.parameters(), lr=0.05, **hyper)
        if fused:
            optimizer.fuse_into(model)
        with monkeypatch.context() as patch:
            if not copies:
                _no_copies(patch)
            runs.append((train(model, optimizer), model, optimizer))
    return runs


@pytest.mark.parametrize("fused", [False, True], ids=["separate", "fused"])
@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("hyper", HYPER)
def test_linear_layers_train_bitwise_as_without_copies(hyper, dtype, fused, monkeypatch, no_torch_fallback):
    reads, _ = _count_copy_reads(monkeypatch)
    with no_torch_fallback():
        (losses, model, opt), (plain_losses, plain, plain_opt) = _both_runs(
            _mlp, hyper, fused, lambda m, o: _train(m, o, 3, 7, (23,), 1, dtype), monkeypatch)
    assert losses == plain_losses
    _assert_same_state(model, opt, plain, plain_opt)
    assert reads[:9] == [None] * 3 + [dtype] * 6, "the first step reads the masters, the later ones the copies"
    for layer in model:
        assert torch.equal(precision.compute_copy(layer.weight, dtype), layer.weight.to(dtype))


NETS = {"2012": dict(width=0.125, input_size=67), "torchvision": dict(width=0.125, input_size=63)}


@pytest.mark.parametrize("fused", [False, True], ids=["separate", "fused"])
@pytest.mark.parametrize("variant,hyper", [("2012", dict(momentum=0.9, weight_decay=5e-4)),
                                           ("torchvision", dict(momentum=0.9, weight_decay=5e-4, update="paper"))])
def test_a_scaled_alexnet_trains_bitwise_as_without_copies(variant, hyper, fused, monkeypatch):
    def make():
        torch.manual_seed(0)
        return AlexNet(variant, num_classes=10, dropout=0.5, init="torch", **NETS[variant])
    size = (3, NETS[variant]["input_size"], NETS[variant]["input_size"])
    reads, conv_reads = _count_copy_reads(monkeypatch)
    (losses, model, opt), (plain_losses, plain, plain_opt) = _both_runs(
        make, hyper, fused, lambda m, o: _train(m, o, 3, 2, size, 2, torch.bfloat16), monkeypatch)
    assert losses == plain_losses
    _assert_same_state(model, opt, plain, plain_opt)
    assert reads[:9] == [None] * 3 + [torch.bfloat16] * 6  # fc6, fc7, fc8 of three steps
    # conv1-conv5 forward, conv5-conv2 input gradients (none for conv1's input, the images), three steps
    assert conv_reads[:27] == [None] * 9 + [torch.bfloat16] * 18


def _scale_first_weight(model, plain):
    with torch.no_grad():
        model[0].weight.mul_(0.5)
        plain[0].weight.mul_(0.5)
    return {0}


def _load_other_weights(model, plain):
    other = _mlp().state_dict()
    model.load_state_dict(other)
    plain.load_state_dict(other)
    return {0, 1, 2}


def _replace_data(model, plain):
    new = torch.randn_like(model[1].weight)
    model[1].weight.data = new.clone()
    plain[1].weight.data = new.clone()
    return {1}


@pytest.mark.parametrize("edit", [_scale_first_weight, _load_other_weights, _replace_data],
                         ids=["no-grad-mul", "load-state-dict", "data-replaced"])
@pytest.mark.parametrize("fused", [False, True], ids=["separate", "fused"])
def test_an_edit_of_the_weight_between_steps_is_seen_at_once(edit, fused, monkeypatch):
    """After two steps with copies, an in-place change of weights: the next forward reads the changed masters and
    the other layers' copies (bitwise the model without copies); the next step rewrites the copies, which the
    forward after it reads."""
    hyper = dict(momentum=0.9, weight_decay=5e-4)
    model, plain = _mlp(), _mlp()
    opt, plain_opt = optim.SGD(model.parameters(), lr=0.05, **hyper), optim.SGD(plain.parameters(), lr=0.05, **hyper)
    if fused:
        opt.fuse_into(model)
        plain_opt.fuse_into(plain)
    x = torch.randn(4, 23)
    _train(model, opt, 2, 5, (23,), 3, torch.bfloat16)
    with monkeypatch.context() as patch:
        _no_copies(patch)
        _train(plain, plain_opt, 2, 5, (23,), 3, torch.bfloat16)
    edited = edit(model, plain)
    reads, _ = _count_copy_reads(monkeypatch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model.eval()(x)
    assert reads == [None if layer in edited else torch.bfloat16 for layer in range(3)]
    losses = _train(model.train(), opt, 2, 5, (23,), 4, torch.bfloat16)
    assert reads[-3:] == [torch.bfloat16] * 3, "the copies the step after the edit wrote"
    with monkeypatch.context() as patch:
        _no_copies(patch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y_plain = plain.eval()(x)
        plain_losses = _train(plain.train(), plain_opt, 2, 5, (23,), 4, torch.bfloat16)
    assert torch.equal(y, y_plain) and losses == plain_losses
    _assert_same_state(model, opt, plain, plain_opt)


def test_copies_are_in_no_state_dict_and_dropped_with_their_weight():
    model = _mlp()
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    keys = set(model.state_dict())
    _train(model, opt, 2, 5, (23,), 5, torch.bfloat16)
    assert all(precision.compute_copy(layer.weight, torch.bfloat16) is not None for layer in model)
    assert set(model.state_dict()) == keys
    assert {key for state in opt.state_dict()["state"].values() for key in state} == {"momentum_buffer"}
    gc.collect()
    copies = len(precision._COMPUTE_COPIES)
    del model, opt
    gc.collect()
    assert len(precision._COMPUTE_COPIES) == copies - 3


# ---- graph capture: the copies' launches are those of consecutive steps, their tensors the same ----

LAYERS = {kernel.fn for kernel in (linear._linear_forward_kernel, linear._linear_input_grad_kernel,
                                   linear._linear_weight_grad_sgd_kernel, sgd._sgd_step_kernel,
                                   conv._conv2d_forward_kernel, conv._conv2d_input_grad_kernel)}


@pytest.mark.parametrize("fused", [False, True], ids=["separate", "fused"])
def test_consecutive_steps_with_copies_launch_the_same_kernels_on_the_same_copy_tensors(fused):
    """Steps 2 and 3 under bf16 autocast (the first asks for the copies, its update allocates and writes them): the
    same launch signatures (graph_safe's comparison), and the copies each launch reads or writes are the same tensors
    (the pointers a captured graph holds)."""
    model, sgd_ = graph_safe.scaled_net()
    if fused:
        sgd_.fuse_into(model)
    steps, copy_pointers = [], []
    with runtime.capture_launches() as records:
        for step in range(3):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                graph_safe.train_step(model, sgd_, *graph_safe.batch(step))
            steps.append(graph_safe.record_signatures(records))
            copy_pointers.append([(r.kernel.fn.__name__, name, t.data_ptr()) for r in records if r.kernel.fn in LAYERS
                                  for name, value in r.args.items() if name in ("w_ptr", "copy_ptrs", "w_copy_ptr")
                                  for t in (value if isinstance(value, tuple) else (value,))
                                  if t.dtype == torch.bfloat16])
            del records[:]
    assert graph_safe.first_difference(steps[1], steps[2]) is None, graph_safe.first_difference(steps[1], steps[2])
    assert copy_pointers[1] == copy_pointers[2]
    kernels = [kernel for kernel, *_ in copy_pointers[1]]
    assert kernels.count("_linear_forward_kernel") == 3 and kernels.count("_linear_input_grad_kernel") == 3
    assert kernels.count("_conv2d_forward_kernel") == 5 and kernels.count("_conv2d_input_grad_kernel") == 4
    # the multi-tensor step writes the conv weights' copies, and the fc weights' unless their step is fused
    assert kernels.count("_sgd_step_kernel") == (5 if fused else 8)
    assert kernels.count("_linear_weight_grad_sgd_kernel") == (3 if fused else 0)
