"""alexnet_triton.optim.SGD against torch.optim.SGD, the paper's update formula, and its state dicts."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import assert_close, assert_low_precision_close
from torch.utils._python_dispatch import TorchDispatchMode

from alexnet_triton import optim
from alexnet_triton.kernels import runtime
from alexnet_triton.kernels import sgd as kernels
from alexnet_triton.ops import library

# AlexNet-like parameters scaled down (conv1 weight, grouped conv weight, fc weight, biases) and odd sizes;
# the fc weight has more elements than one interpreter program's block (kernels.CONFIGS), so the kernel runs 2 programs.
SHAPES = [(8, 3, 11, 11), (16, 4, 5, 5), (96, 181), (37,), (5, 7, 3), (8,)]
HYPER = [
    pytest.param(dict(momentum=0.0, weight_decay=0.0), id="plain"),
    pytest.param(dict(momentum=0.0, weight_decay=1e-2), id="weight-decay"),
    pytest.param(dict(momentum=0.9, weight_decay=0.0), id="momentum"),
    pytest.param(dict(momentum=0.9, weight_decay=5e-4), id="momentum-weight-decay"),
    pytest.param(dict(momentum=0.9, weight_decay=1e-2, nesterov=True), id="nesterov"),
    pytest.param(dict(momentum=0.5, weight_decay=1e-2, maximize=True), id="maximize"),
]
STEPS = 20


def make_params(dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(shape, generator=gen).to(dtype)) for shape in SHAPES]
    # one channels_last weight: its gradient and momentum buffer share that layout
    params.append(torch.nn.Parameter(torch.randn(6, 3, 4, 4, generator=gen).to(dtype,
                                                                                memory_format=torch.channels_last)))
    return params


def clone(params):
    return [torch.nn.Parameter(p.detach().clone(memory_format=torch.preserve_format)) for p in params]


def set_gradients(param_sets, gen, dtype=torch.float32):
    """The same fresh random gradient for each parameter of every set."""
    for same in zip(*param_sets, strict=True):
        g = torch.randn(same[0].shape, generator=gen).to(dtype).contiguous(
            memory_format=runtime.memory_format_of(same[0]))
        for p in same:
            p.grad = g.clone(memory_format=torch.preserve_format)


@pytest.mark.parametrize("hyper", HYPER)
def test_matches_torch_sgd_over_20_steps(hyper, no_torch_fallback):
    ours_params = make_params()
    torch_params = clone(ours_params)
    frozen = torch.nn.Parameter(torch.randn(3))  # grad stays None: skipped
    ours = optim.SGD(ours_params + [frozen], lr=0.05, **hyper)
    reference = torch.optim.SGD(torch_params, lr=0.05, **hyper)
    gen = torch.Generator().manual_seed(1)
    before = frozen.detach().clone()
    for step in range(STEPS):
        set_gradients([ours_params, torch_params], gen)
        with no_torch_fallback():
            ours.step()
        reference.step()
        for i, (p, q) in enumerate(zip(ours_params, torch_params, strict=True)):
            assert_close(p.detach(), q.detach(), f"step {step} param {i}")
            assert p.stride() == q.stride()
            if hyper["momentum"]:
                assert_close(ours.state[p]["momentum_buffer"], reference.state[q]["momentum_buffer"],
                             f"step {step} momentum buffer {i}")
            else:
                assert "momentum_buffer" not in ours.state[p]
    assert torch.equal(frozen.detach(), before) and frozen not in ours.state


def paper_reference(params, grads, velocities, lr, momentum, weight_decay):
    """Krizhevsky et al. 2012, section 5, in plain PyTorch: v <- m v - wd lr w - lr g; w <- w + v."""
    for w, g, v in zip(params, grads, velocities, strict=True):
        v.mul_(momentum).sub_(weight_decay * lr * w).sub_(lr * g)
        w.add_(v)


def test_paper_update_matches_the_formula(no_torch_fallback):
    ours_params = make_params(seed=2)
    plain = [p.detach().clone() for p in ours_params]
    velocities = [torch.zeros_like(p) for p in plain]
    ours = optim.SGD(ours_params, lr=0.01, momentum=0.9, weight_decay=5e-4, update="paper")
    gen = torch.Generator().manual_seed(3)
    for step in range(STEPS):
        lr = 0.01 if step < 10 else 0.001  # the paper's divide-by-10: v keeps the old lr's scale
        for group in ours.param_groups:
            group["lr"] = lr
        grads = [torch.randn(p.shape, generator=gen) for p in plain]
        for p, g in zip(ours_params, grads, strict=True):
            p.grad = g.contiguous(memory_format=runtime.memory_format_of(p))
        with no_torch_fallback():
            ours.step()
        paper_reference(plain, grads, velocities, lr, 0.9, 5e-4)
        for i, (p, w, v) in enumerate(zip(ours_params, plain, velocities, strict=True)):
            assert_close(p.detach(), w, f"step {step} param {i}")
            assert_close(ours.state[p]["momentum_buffer"], v, f"step {step} velocity {i}")


def run_steps(optimizers_and_params, gen, steps):
    for _ in range(steps):
        set_gradients([params for _, params in optimizers_and_params], gen)
        for optimizer, _ in optimizers_and_params:
            optimizer.step()


def test_state_dict_round_trip_with_torch():
    """torch -> ours -> torch: each continues exactly where the other stopped."""
    hyper = dict(lr=0.02, momentum=0.9, weight_decay=5e-4, nesterov=True)
    gen = torch.Generator().manual_seed(4)
    torch_params = make_params(seed=5)
    reference = torch.optim.SGD(torch_params, **hyper)
    run_steps([(reference, torch_params)], gen, 3)

    ours_params = clone(torch_params)
    ours = optim.SGD(ours_params, lr=1.0)  # hyperparameters come from the loaded state dict
    ours.load_state_dict(copy.deepcopy(reference.state_dict()))  # as torch.save + torch.load would
    assert ours.param_groups[0]["update"] == "pytorch" and ours.param_groups[0]["nesterov"]
    run_steps([(ours, ours_params), (reference, torch_params)], gen, 3)
    for p, q in zip(ours_params, torch_params, strict=True):
        assert_close(p.detach(), q.detach(), "param after torch -> ours")

    back_params = clone(ours_params)
    back = torch.optim.SGD(back_params, lr=1.0)
    back.load_state_dict(copy.deepcopy(ours.state_dict()))
    run_steps([(ours, ours_params), (back, back_params)], gen, 3)
    for p, q in zip(ours_params, back_params, strict=True):
        assert_close(p.detach(), q.detach(), "param after ours -> torch")
        assert_close(ours.state[p]["momentum_buffer"], back.state[q]["momentum_buffer"], "buffer")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_low_precision_against_fp64(dtype, no_torch_fallback):
    """fp16/bf16 parameters and buffers; the kernel computes in fp32 and rounds once per stored value."""
    hyper = dict(lr=0.05, momentum=0.9, weight_decay=1e-2, nesterov=True)
    ours_params = make_params(dtype=dtype, seed=6)
    torch_params = clone(ours_params)
    ref64 = [torch.nn.Parameter(p.detach().double()) for p in ours_params]
    optimizers = [optim.SGD(ours_params, **hyper), torch.optim.SGD(torch_params, **hyper),
                  torch.optim.SGD(ref64, **hyper)]
    gen = torch.Generator().manual_seed(7)
    for _ in range(5):
        set_gradients([ours_params, torch_params], gen, dtype)
        for p, q in zip(ours_params, ref64, strict=True):
            q.grad = p.grad.double()
        with no_torch_fallback():
            optimizers[0].step()
        optimizers[1].step()
        optimizers[2].step()
    for p, q, r in zip(ours_params, torch_params, ref64, strict=True):
        assert p.dtype == dtype and optimizers[0].state[p]["momentum_buffer"].dtype == dtype
        assert_low_precision_close(p.detach(), q.detach(), r.detach(), "param")


class _RecordOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "aten":
            self.ops.add(func.overloadpacket.__name__)
        return library.run_under(self, func, args, kwargs)  # this project's operators: what they dispatch


def test_step_runs_no_pytorch_arithmetic():
    """torch's single-tensor SGD uses add/mul_/add_; ours only allocates (and, under test, poisons) buffers, and
    makes the lr's device tensor (full) on the first step. new_empty/copy_/set_ are the interpreter moving kernel
    arguments; the profiler marks the step."""
    params = make_params(seed=8)
    ours = optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3)
    gen = torch.Generator().manual_seed(9)
    set_gradients([params], gen)
    with _RecordOps() as recorder:
        ours.step()
        ours.step()
    allowed = {"empty", "empty_strided", "full", "fill_", "new_empty", "copy_", "set_", "_record_function_enter_new",
               "_record_function_exit"}
    assert recorder.ops <= allowed, recorder.ops - allowed


def test_step_bumps_the_version_counter():
    """Autograd must see the in-place update, as it sees torch's p.add_()."""
    p = torch.nn.Parameter(torch.randn(5))
    p.grad = torch.randn(5)
    version = p._version
    optim.SGD([p], lr=0.1).step()
    assert p._version > version


def test_closure_loss_is_returned():
    p = torch.nn.Parameter(torch.ones(3))
    ours = optim.SGD([p], lr=0.5)

    def closure():
        ours.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    assert ours.step(closure).item() == 3.0
    assert torch.equal(p.detach(), torch.zeros(3))


BAD_HYPERPARAMETERS = [
    (dict(lr=-0.1), r"Invalid learning rate: -0.1"),
    (dict(lr=0.1, momentum=-0.5), r"Invalid momentum value: -0.5"),
    (dict(lr=0.1, weight_decay=-1e-4), r"Invalid weight_decay value: -0.0001"),
    (dict(lr=0.1, nesterov=True), r"Nesterov momentum requires a momentum"),
    (dict(lr=0.1, momentum=0.9, dampening=0.1), r"dampening 0.1 is not supported"),
    (dict(lr=0.1, update="adam"), r"update must be one of .*'adam'"),
    (dict(lr=0.1, momentum=0.9, nesterov=True, update="paper"), r"nesterov .* update='pytorch'"),
]


@pytest.mark.parametrize("kwargs, message", BAD_HYPERPARAMETERS, ids=[m for _, m in BAD_HYPERPARAMETERS])
def test_bad_hyperparameters_raise_like_torch(kwargs, message):
    with pytest.raises(ValueError, match=message):
        optim.SGD([torch.nn.Parameter(torch.randn(2))], **kwargs)


def test_parameter_on_the_wrong_device_is_rejected():
    """By the launcher (through the optimizer, meta tensors take the operator's fake implementation: shapes only,
    as torch.optim.SGD steps meta parameters)."""
    p = torch.empty(4, device="meta")
    with pytest.raises(ValueError, match=r"sgd: param is on meta.*needs cpu tensors"):
        kernels.sgd_steps([p], [torch.empty(4, device="meta")], [None], lr=0.1)
    meta = torch.nn.Parameter(torch.empty(4, device="meta"))
    meta.grad = torch.empty(4, device="meta")
    optim.SGD([meta], lr=0.1, momentum=0.9).step()


def test_sparse_gradient_is_rejected():
    p = torch.nn.Parameter(torch.randn(4, 3))
    p.grad = torch.sparse_coo_tensor(torch.tensor([[0, 2]]), torch.randn(2, 3), (4, 3), check_invariants=True)
    with pytest.raises(TypeError, match="sparse tensors are not supported"):
        optim.SGD([p], lr=0.1).step()


def test_gradient_with_other_strides_is_rejected():
    p = torch.nn.Parameter(torch.randn(4, 6))
    p.grad = torch.randn(6, 4).t()
    with pytest.raises(ValueError, match=r"grad \(4, 6\) torch.float32 strides \(1, 4\) must match param"):
        optim.SGD([p], lr=0.1).step()


def test_integer_parameter_is_rejected():
    with pytest.raises(TypeError, match="param has dtype torch.int64"):
        kernels.sgd_step(torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long), None, lr=0.1)


def _count_launches(monkeypatch) -> list:
    """The kernels runtime.launch runs from now on (the launches still run)."""
    launched, launch = [], runtime.launch
    monkeypatch.setattr(runtime, "launch", lambda kernel, *a, **k: (launched.append(kernel), launch(kernel, *a, **k)))
    return launched


@pytest.mark.parametrize("hyper", [
    pytest.param(dict(momentum=0.9, weight_decay=5e-4), id="momentum-weight-decay"),
    pytest.param(dict(momentum=0.9, weight_decay=1e-2, nesterov=True), id="nesterov"),
    pytest.param(dict(momentum=0.5, weight_decay=1e-2, maximize=True), id="maximize"),
    pytest.param(dict(momentum=0.9, weight_decay=5e-4, update="paper"), id="paper"),
    pytest.param(dict(weight_decay=1e-2), id="no-momentum"),
])
def test_one_launch_per_group_is_bitwise_the_per_tensor_update(hyper, monkeypatch, no_torch_fallback):
    """The optimizer's one multi-tensor launch per group against one sgd_step launch per parameter, step by step:
    the same bits in every parameter and momentum buffer (blocks of several tensors in one grid)."""
    params = make_params(seed=4)
    singles = clone(params)
    ours = optim.SGD(params, lr=0.05, **hyper)
    buffers = [None] * len(singles)
    gen = torch.Generator().manual_seed(5)
    launched = _count_launches(monkeypatch)
    for step in range(3):
        set_gradients([params, singles], gen)
        del launched[:]
        ours.step()
        assert len(launched) == 1, f"step {step}: {len(launched)} launches for one group"
        buffers = [kernels.sgd_step(p, p.grad, b, lr=0.05, **hyper) for p, b in zip(singles, buffers, strict=True)]
        for i, (p, single, buffer) in enumerate(zip(params, singles, buffers, strict=True)):
            assert torch.equal(p, single), f"step {step}: parameter {i}"
            if buffer is not None:
                assert torch.equal(ours.state[p]["momentum_buffer"], buffer), f"step {step}: buffer {i}"


def test_a_group_of_two_dtypes_launches_once_per_dtype(monkeypatch, no_torch_fallback):
    params = make_params(seed=6)[:3] + make_params(torch.float16, seed=7)[:3]
    singles = clone(params)
    ours = optim.SGD(params, lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(8)
    for p, single in zip(params, singles, strict=True):
        p.grad = torch.randn(p.shape, generator=gen).to(p.dtype, memory_format=runtime.memory_format_of(p))
        single.grad = p.grad.clone(memory_format=torch.preserve_format)
    launched = _count_launches(monkeypatch)
    ours.step()
    assert len(launched) == 2
    for p, single in zip(params, singles, strict=True):
        kernels.sgd_step(single, single.grad, None, lr=0.1, momentum=0.9)
        assert torch.equal(p, single)


def test_a_tensor_lr_changed_in_place_is_the_float_schedule(no_torch_fallback):
    """A schedule that writes a tensor lr in place gives the bits of one that sets a float lr; a float lr change
    reaches the same device tensor (one address for a captured graph), written only when it changed."""
    float_params, tensor_params = make_params(seed=10), make_params(seed=10)
    lr = torch.tensor(0.1)
    by_float = optim.SGD(float_params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    by_tensor = optim.SGD(tensor_params, lr=lr, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(11)
    mirrors = []
    for step, value in enumerate((0.1, 0.1, 0.01, 0.003)):
        by_float.param_groups[0]["lr"] = value
        lr.fill_(value)
        set_gradients([float_params, tensor_params], gen)
        by_float.step()
        by_tensor.step()
        for p, q in zip(float_params, tensor_params, strict=True):
            assert torch.equal(p, q), f"step {step}"
        mirrors.append(by_float._lr_tensor(0, torch.device("cpu")))
        assert mirrors[-1].item() == torch.tensor(value, dtype=torch.float32).item()
    assert all(m is mirrors[0] for m in mirrors)
    by_float.param_groups[0]["lr"] = 0.5
    by_float.sync_lr()
    assert mirrors[0].item() == 0.5


def test_a_tensor_lr_on_another_device_or_shape_is_rejected():
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    with pytest.raises(ValueError, match=r"a tensor lr must be one floating-point element .* got shape \(2,\)"):
        optim.SGD([p], lr=torch.ones(2)).step()
    with pytest.raises(ValueError, match="a tensor lr must be one floating-point element"):
        kernels.sgd_step(p, p.grad, None, lr=torch.ones(1, dtype=torch.int64))
