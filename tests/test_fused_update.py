"""The SGD step fused into the linear weight-gradient kernel (``optim.SGD.fuse_into``): bitwise the unfused step
(kernel, layers, scaled nets, both update forms, the first step), resumable from a checkpoint, its launches (no dW,
no separate update of the fused parameters), and every error of its contract."""

from __future__ import annotations

import copy
import io
from dataclasses import replace

import pytest
import test_graph_safe as graph_safe
import torch
import torch.distributed as dist

from alexnet_triton import nn, ops, optim
from alexnet_triton.checkpoint import read_checkpoint
from alexnet_triton.kernels import cross_entropy, linear, runtime, sgd
from alexnet_triton.model import AlexNet
from alexnet_triton.training import BACKEND_PARTS, ConfigError, Run, RunConfig
from alexnet_triton.training.parts import build_optimizer

HYPER = [
    pytest.param(dict(momentum=0.9, weight_decay=5e-4), id="pytorch-momentum-weight-decay"),
    pytest.param(dict(momentum=0.9, weight_decay=1e-2, nesterov=True, maximize=True), id="nesterov-maximize"),
    pytest.param(dict(momentum=0.0, weight_decay=1e-2), id="no-momentum"),
    pytest.param(dict(momentum=0.9, weight_decay=5e-4, update="paper"), id="paper"),
]


def _randn(*shape, dtype=torch.float32, gen=None):
    return torch.randn(*shape, generator=gen).to(dtype)


# ---- the kernel: bitwise linear_weight_grad + sgd_steps (the same fp32 sequence: dw is stored in fp32) ----

@pytest.mark.parametrize("first_step", [True, False], ids=["first-step", "later-step"])
@pytest.mark.parametrize("hyper", HYPER)
@pytest.mark.parametrize("case", ["relu-dropout", "dropout-strided", "bf16-master-no-bias"])
def test_the_fused_kernel_is_bitwise_the_unfused_step(case, hyper, first_step, no_torch_fallback):
    gen = torch.Generator().manual_seed(hash((case, first_step)) % 2**31)
    m, n, k = 37, 29, 45  # no tile divides them
    x_dtype = torch.bfloat16 if case == "bf16-master-no-bias" else torch.float32
    x = _randn(m, 2 * k, dtype=x_dtype, gen=gen)[:, ::2] if case == "dropout-strided" else \
        _randn(m, k, dtype=x_dtype, gen=gen)
    dy = _randn(m, n, dtype=x_dtype, gen=gen)
    y = _randn(m, n, dtype=x_dtype, gen=gen) if case == "relu-dropout" else None
    dropout, seed = (0.0, None) if case == "bf16-master-no-bias" else (0.3, 1234)
    weight, bias = _randn(n, k, gen=gen), (None if case == "bf16-master-no-bias" else _randn(n, gen=gen))
    params = [p for p in (weight, bias) if p is not None]
    momentum = hyper["momentum"]
    buffers = [_randn(*p.shape, gen=gen) if momentum else None for p in params]
    fused = [p.clone() for p in params], [b.clone() if b is not None else None for b in buffers]
    with no_torch_fallback():
        dw, db = linear.linear_weight_grad(dy, x, y, dropout, seed, bias_grad=bias is not None,
                                           grad_dtype=torch.float32)
        sgd.sgd_steps(params, [g for g in (dw, db) if g is not None], buffers, lr=0.05, first_step=first_step,
                      **hyper)
        (w2, *b2), (wb2, *bb2) = fused
        linear.linear_weight_grad_sgd_(dy, x, w2, b2[0] if b2 else None, wb2, bb2[0] if bb2 else None, y, dropout,
                                       seed, lr=torch.tensor([0.05]), first_step=first_step, **hyper)
    for expected, actual in zip(params + buffers, fused[0] + fused[1], strict=True):
        assert (expected is None) == (actual is None)
        if expected is not None:
            assert torch.equal(expected, actual)


@pytest.mark.parametrize("config", linear.UPDATE_CONFIGS.shipped(), ids=runtime.config_name)
def test_every_shipped_tile_gives_the_unfused_step(config):
    """The fused launch at each GPU tile (the pick takes one; a forced config any), against the plain kernel at the
    same tile: bitwise (the column sets of the epilogue cover the tile once)."""
    gen = torch.Generator().manual_seed(3)
    dy, x, weight, bias = _randn(37, 29, gen=gen), _randn(37, 45, gen=gen), _randn(29, 45, gen=gen), _randn(29, gen=gen)
    buffers = [_randn(29, 45, gen=gen), _randn(29, gen=gen)]
    fused = [weight.clone(), bias.clone(), *(b.clone() for b in buffers)]
    dw, db = linear.linear_weight_grad(dy, x, config=config)
    sgd.sgd_steps([weight, bias], [dw, db], buffers, lr=0.05, momentum=0.9, weight_decay=5e-4)
    linear.linear_weight_grad_sgd_(dy, x, *fused, lr=0.05, momentum=0.9, weight_decay=5e-4, config=config)
    for expected, actual in zip([weight, bias, *buffers], fused, strict=True):
        assert torch.equal(expected, actual)


def test_an_empty_batch_steps_a_zero_gradient_weight_decay_only():
    weight, bias = _randn(6, 5), _randn(6)
    expected = [p - torch.tensor(0.1) * (torch.tensor(0.5) * p) for p in (weight, bias)]  # w -= lr * (0 + wd * w)
    linear.linear_weight_grad_sgd_(torch.empty(0, 6), torch.empty(0, 5), weight, bias, None, None, lr=0.1,
                                   weight_decay=0.5)
    assert torch.equal(weight, expected[0]) and torch.equal(bias, expected[1])


# ---- layers and nets: the fused step against the unfused one, same seeds ----

def _train(model, optimizer, steps, batch, size, seed):
    """``steps`` SGD steps of ``model`` on fresh random batches (the same for every call with this seed)."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        images = torch.randn(batch, *size, generator=gen)
        torch.manual_seed(int(torch.randint(2**31, (1,), generator=gen)))  # the dropout seeds
        optimizer.zero_grad(set_to_none=True)
        model(images).square().mean().backward()
        optimizer.step()


def _assert_same_state(model_a, opt_a, model_b, opt_b):
    for (name, a), b in zip(model_a.named_parameters(), model_b.parameters(), strict=True):
        assert torch.equal(a, b), name
        if "momentum_buffer" in opt_a.state[a]:
            assert torch.equal(opt_a.state[a]["momentum_buffer"], opt_b.state[b]["momentum_buffer"]), name


def _pair(make, hyper, lr=0.05):
    """(unfused model, its SGD, fused model, its SGD) from the same initial weights."""
    plain = make()
    fused = copy.deepcopy(plain)
    plain_opt, fused_opt = optim.SGD(plain.parameters(), lr=lr, **hyper), optim.SGD(fused.parameters(), lr=lr, **hyper)
    return plain, plain_opt, fused, fused_opt


def _mlp(dropout=0.3):
    torch.manual_seed(0)
    return torch.nn.Sequential(nn.Linear(23, 17, relu=True, dropout=dropout), nn.Linear(17, 9, relu=True),
                               nn.Linear(9, 5, bias=False))


@pytest.mark.parametrize("hyper", HYPER)
def test_linear_layers_fused_step_is_bitwise_the_unfused_one(hyper, no_torch_fallback):
    plain, plain_opt, fused, fused_opt = _pair(_mlp, hyper)
    assert fused_opt.fuse_into(fused) == ["0", "1", "2"]
    with no_torch_fallback():
        for model, opt in ((plain, plain_opt), (fused, fused_opt)):
            _train(model, opt, 3, 7, (23,), seed=1)
    _assert_same_state(plain, plain_opt, fused, fused_opt)
    assert all(p.grad is None for p in fused.parameters())


NETS = {"2012": dict(width=0.125, input_size=67), "torchvision": dict(width=0.125, input_size=63)}


@pytest.mark.parametrize("variant,hyper", [("2012", dict(momentum=0.9, weight_decay=5e-4)),
                                           ("torchvision", dict(momentum=0.9, weight_decay=5e-4, update="paper"))])
def test_a_scaled_alexnet_trains_bitwise_as_without_fusion(variant, hyper):
    def make():
        torch.manual_seed(0)
        return AlexNet(variant, num_classes=10, dropout=0.5, init="torch", **NETS[variant])
    plain, plain_opt, fused, fused_opt = _pair(make, hyper)
    linears = [name for name, module in fused.named_modules() if isinstance(module, nn.Linear)]
    assert len(linears) == 3 and fused_opt.fuse_into(fused) == linears  # fc6, fc7, fc8
    size = (3, NETS[variant]["input_size"], NETS[variant]["input_size"])
    for model, opt in ((plain, plain_opt), (fused, fused_opt)):
        _train(model, opt, 2, 2, size, seed=2)  # the first step (buffers written) and a later one
    _assert_same_state(plain, plain_opt, fused, fused_opt)


def test_an_lr_change_reaches_the_fused_kernel_through_the_device_tensor():
    hyper = dict(momentum=0.9, weight_decay=5e-4, update="paper")
    plain, plain_opt, fused, fused_opt = _pair(_mlp, hyper)
    fused_opt.fuse_into(fused)
    for model, opt in ((plain, plain_opt), (fused, fused_opt)):
        _train(model, opt, 1, 5, (23,), seed=3)
        opt.param_groups[0]["lr"] = 0.01
        _train(model, opt, 1, 5, (23,), seed=4)
    _assert_same_state(plain, plain_opt, fused, fused_opt)


def test_a_checkpoint_resumes_the_fused_run_identically():
    hyper = dict(momentum=0.9, weight_decay=5e-4)
    model = _mlp()
    opt = optim.SGD(model.parameters(), lr=0.05, **hyper)
    opt.fuse_into(model)
    _train(model, opt, 2, 5, (23,), seed=5)
    saved = io.BytesIO()
    torch.save(dict(model=model.state_dict(), optimizer=opt.state_dict()), saved)
    _train(model, opt, 2, 5, (23,), seed=6)
    saved.seek(0)
    state = torch.load(saved)
    resumed = _mlp()
    resumed.load_state_dict(state["model"])
    resumed_opt = optim.SGD(resumed.parameters(), lr=0.05, **hyper)
    resumed_opt.load_state_dict(state["optimizer"])
    assert len(resumed_opt.state) == 5  # every fused parameter's momentum buffer was saved
    resumed_opt.fuse_into(resumed)
    _train(resumed, resumed_opt, 2, 5, (23,), seed=6)
    _assert_same_state(model, opt, resumed, resumed_opt)


# ---- the launches ----

def test_the_step_launches_no_gradient_and_no_separate_update_of_fused_parameters():
    torch.manual_seed(0)
    model = torch.nn.Sequential(nn.Linear(11, 7, relu=True), nn.Linear(7, 3))
    other = torch.nn.Parameter(torch.randn(4))  # not a Linear's: stepped by the multi-tensor launch
    opt = optim.SGD([*model.parameters(), other], lr=0.1, momentum=0.9)
    opt.fuse_into(model)
    for p in (*model.parameters(), other):  # the buffers of a steady-state step
        opt.state[p]["momentum_buffer"] = torch.zeros_like(p)
    records = []
    with runtime.capture_launches(records.append):
        x = torch.randn(5, 11, requires_grad=True)
        (model(x).sum() + other.sum()).backward()
        opt.step()
    names = [r.kernel.fn.__name__ for r in records]
    fused = "_linear_weight_grad_sgd_kernel"
    assert names == ["_linear_forward_kernel"] * 2 + ["_linear_input_grad_kernel", fused] * 2 + ["_sgd_step_kernel"]
    params = {id(p) for p in model.parameters()}
    for r in records:
        if r.kernel.fn.__name__ == fused:  # stores only to the parameters and their buffers: no dW anywhere
            assert id(r.args["w_ptr"]) in params and id(r.args["b_ptr"]) in params
            assert not {"dw_ptr", "db_ptr"} & set(r.args)
    (step,) = (r for r in records if r.kernel.fn.__name__ == "_sgd_step_kernel")
    assert [id(p) for p in step.args["param_ptrs"]] == [id(other)]
    # the input gradient (which reads the old weight) is launched before the weight's update
    assert names.index("_linear_input_grad_kernel") < names.index(fused)


# ---- the contract's errors ----

def _fused():
    model = _mlp()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt.fuse_into(model)
    return model, opt


def test_a_second_backward_before_step_is_an_error():
    model, opt = _fused()
    model(torch.randn(3, 23)).sum().backward()
    with pytest.raises(RuntimeError, match="second backward .* before optimizer.step.*no gradient accumulation"):
        model(torch.randn(3, 23)).sum().backward()


def test_a_fused_parameter_with_a_grad_is_an_error_at_step():
    model, opt = _fused()
    model.eval()  # eval mode: no fused update, so the parameters get a .grad
    model(torch.randn(3, 23)).sum().backward()
    with pytest.raises(RuntimeError, match="fused into its Linear .* has a .grad"):
        opt.step()


@pytest.mark.parametrize("wrapper", ["DataParallel", "world of 2"])
def test_fusion_refuses_several_processes(wrapper, monkeypatch):
    model = _mlp()
    opt = optim.SGD(model.parameters(), lr=0.1)
    if wrapper == "DataParallel":
        model = torch.nn.DataParallel(model)
        match = "DataParallel is not supported"
    else:
        monkeypatch.setattr(dist, "is_initialized", lambda: True)
        monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
        match = "2 processes: the fused update runs in one process"
    with pytest.raises(ValueError, match=match):
        opt.fuse_into(model)


def test_frozen_parameters_are_not_stepped_and_half_frozen_ones_are_an_error():
    model = _mlp()
    model[0].requires_grad_(False)  # frozen before: not fused, never stepped
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    assert opt.fuse_into(model) == ["1", "2"]
    model[1].requires_grad_(False)  # frozen after: the backward steps nothing
    frozen = [p.detach().clone() for p in (*model[0].parameters(), *model[1].parameters())]
    _train(model, opt, 1, 3, (23,), seed=8)
    assert all(torch.equal(a, b) for a, b in zip(frozen, (*model[0].parameters(), *model[1].parameters()),
                                                 strict=True))
    model[1].bias.requires_grad_(True)  # half frozen
    with pytest.raises(RuntimeError, match="one of the Linear's weight and bias was frozen after fuse_into"):
        _train(model, opt, 1, 3, (23,), seed=9)


def test_fusion_errors_name_the_linear_and_the_reason():
    model = _mlp()
    with pytest.raises(ValueError, match="no alexnet_triton.nn.Linear whose parameters this optimizer holds"):
        optim.SGD([torch.nn.Parameter(torch.randn(3))], lr=0.1).fuse_into(model)
    with pytest.raises(ValueError, match="no alexnet_triton.nn.Linear"):
        optim.SGD(torch.nn.Linear(3, 2).parameters(), lr=0.1).fuse_into(torch.nn.Linear(3, 2))
    layer = model[0]
    split = optim.SGD([{"params": [layer.weight]}, {"params": [layer.bias], "lr": 0.5}], lr=0.1)
    with pytest.raises(ValueError, match="Linear '0': its weight and bias must be in one parameter group"):
        split.fuse_into(model)
    double = _mlp().double()
    with pytest.raises(ValueError, match="Linear '0': parameters torch.float64, torch.float64: .* float32"):
        optim.SGD(double.parameters(), lr=0.1).fuse_into(double)
    opt = optim.SGD(model.parameters(), lr=0.1)
    opt.fuse_into(model)
    with pytest.raises(ValueError, match="already fused"):
        opt.fuse_into(model)


def test_an_update_of_other_parameters_is_refused():
    model, _ = _fused()
    with pytest.raises(ValueError, match="update is the fused SGD step of other parameters"):
        ops.linear(torch.randn(2, 17), model[1].weight, model[1].bias, update=model[0].fused_update)


@pytest.mark.parametrize("mistake,match", [
    (dict(weight=torch.randn(6, 5).double()), r"weight must be a contiguous float32 tensor of shape \(6, 5\)"),
    (dict(weight=torch.randn(5, 6).t()), r"weight must be a contiguous float32 .* strides \(1, 6\)"),
    (dict(bias=torch.randn(5)), r"bias must be a contiguous float32 tensor of shape \(6,\)"),
    (dict(weight_buffer=None), "weight's momentum buffer must be given exactly when momentum != 0"),
    (dict(weight_buffer=torch.randn(6, 5).double()), "momentum_buffer .* must match param"),
    (dict(bias=None), "a bias momentum buffer without a bias"),
    (dict(update="adam"), "update must be one of"),
    (dict(lr=torch.tensor([0.1, 0.2])), "a tensor lr must be one floating-point element"),
])
def test_kernel_errors_name_the_argument(mistake, match):
    args = dict(dy=torch.randn(4, 6), x=torch.randn(4, 5), weight=torch.randn(6, 5), bias=torch.randn(6),
                weight_buffer=torch.randn(6, 5), bias_buffer=torch.randn(6), lr=0.1, momentum=0.9)
    args.update(mistake)
    with pytest.raises((ValueError, TypeError), match=match):
        linear.linear_weight_grad_sgd_(**args)


# ---- train.py --fused-update ----

TINY_RUN = RunConfig.preset("cpu", num_classes=4, batch_size=4, lr=0.01, epochs=3, train_count=12, val_count=4,
                            dropout=0.5, max_steps=4)


def test_a_fused_run_resumed_midway_ends_bitwise_as_the_unfused_run(tmp_path):
    """train.py's engine: --fused-update (with a checkpoint after 2 steps and a resume, across an epoch boundary and
    the cosine schedule's lr change) gives the unfused run's weights and momentum buffers bit for bit."""
    plain = Run(replace(TINY_RUN, out=str(tmp_path / "plain")))
    plain.train()
    first = Run(replace(TINY_RUN, out=str(tmp_path / "fused"), fused_update=True, max_steps=2))
    assert "SGD fused into the linear weight gradients" in first.describe()
    first.train()
    fused = Run(replace(TINY_RUN, out=str(tmp_path / "fused"), fused_update=True),
                read_checkpoint(tmp_path / "fused", "--resume"))
    fused.train()
    _assert_same_state(plain.model, plain.optimizer, fused.model, fused.optimizer)


@pytest.mark.parametrize("change,processes,message", [
    (dict(backend="torch"), 1, "--fused-update needs --backend triton"),
    (dict(amp="fp16"), 1, "--fused-update does not go with --amp fp16"),
    ({}, 2, "--fused-update runs in one process, not 2"),
])
def test_train_refuses_fused_update_where_its_contract_does_not_hold(change, processes, message):
    config = replace(TINY_RUN, fused_update=True, **change)
    model = _mlp()
    with pytest.raises(ConfigError, match=message):
        build_optimizer(config, BACKEND_PARTS[config.backend], model, processes)


def test_torch_compile_runs_the_fused_linear_eagerly_and_fullgraph_refuses_it():
    """The fused Linear and its backward are torch.compiler.disable'd: a graph break (the backward steps the
    optimizer's Python state), the same numbers as eager (no dropout, a sum as the loss: compiled code draws its
    seeds and rounds a loss's gradient otherwise); fullgraph=True raises, naming the reason."""
    plain, plain_opt, fused, fused_opt = _pair(lambda: _mlp(dropout=0.0), dict(momentum=0.9, weight_decay=5e-4))
    fused_opt.fuse_into(fused)
    x = torch.randn(5, 23)
    with pytest.raises(torch._dynamo.exc.Unsupported, match="the fused SGD update"):
        torch.compile(lambda x: fused(x).sum(), fullgraph=True)(x)
    torch._dynamo.reset()
    for model, opt, run in ((plain, plain_opt, model_step := lambda m, x: m(x).sum().backward()),
                            (fused, fused_opt, torch.compile(model_step))):
        torch.manual_seed(7)
        for _ in range(2):
            opt.zero_grad(set_to_none=True)
            run(model, x)
            opt.step()
    _assert_same_state(plain, plain_opt, fused, fused_opt)


# ---- graph capture: what tests/test_graph_safe.py proves of the plain step, in fused mode ----

def test_consecutive_fused_steps_launch_the_same_kernels_with_the_same_non_tensor_arguments_and_read_nothing_back(
        monkeypatch):
    """Steps 2 and 3 (after the first, which makes the momentum buffers) with a schedule changing lr between them:
    the same launches, configs and non-tensor arguments (lr reaches the fused kernels as the optimizer's device
    tensor); then a step, kernels run, reads no tensor value into Python."""
    model, sgd_ = graph_safe.scaled_net()
    sgd_.fuse_into(model)
    steps = []
    with runtime.capture_launches() as records:
        for step in range(3):
            sgd_.param_groups[0]["lr"] = 0.01 / (step + 1)
            graph_safe.train_step(model, sgd_, *graph_safe.batch(step))
            steps.append(graph_safe.record_signatures(records))
            del records[:]
    kernels = [name for name, *_ in steps[1]]
    assert kernels.count("_linear_weight_grad_sgd_kernel") == 3 and "_linear_weight_grad_kernel" not in kernels
    assert graph_safe.first_difference(steps[1], steps[2]) is None, graph_safe.first_difference(steps[1], steps[2])
    monkeypatch.setattr(runtime, "poison_outputs", False)
    model, sgd_ = graph_safe.scaled_net()
    sgd_.fuse_into(model)
    with cross_entropy.device_target_check():
        graph_safe.train_step(model, sgd_, *graph_safe.batch(0))
        with graph_safe.FailOnHostRead():
            loss = graph_safe.train_step(model, sgd_, *graph_safe.batch(1))
    assert torch.isfinite(loss)
