"""AlexNet: sizes and names of both variants, the two backends' module trees and their one state_dict, Triton vs
PyTorch backends from the same weights (fp32 and under autocast), and a training step on the Triton path that
leaves no floating-point computation to PyTorch."""

from __future__ import annotations

import contextlib
from copy import deepcopy

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close, assert_low_precision_close
from test_autocast import RecordAten  # the ops a step dispatches, inside this project's operators too
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from alexnet_triton import nn as triton_nn
from alexnet_triton import ops, optim
from alexnet_triton.data import space_to_depth_images
from alexnet_triton.kernels import runtime
from alexnet_triton.model import VARIANTS, AlexNet
from alexnet_triton.ops import library
from alexnet_triton.precision import forward_context

# Scaled-down copies of each topology (width 1/8) at the smallest input that keeps a 1x1 map after pool5.
SCALED = {"2012": dict(width=0.125, input_size=67), "torchvision": dict(width=0.125, input_size=63)}


@pytest.mark.parametrize("variant, count", [("2012", 60_965_224), ("torchvision", 61_100_840)])
def test_full_size_parameter_counts(variant, count):
    assert sum(p.numel() for p in AlexNet(variant, init="torch").parameters()) == count


def test_torchvision_variant_has_torchvision_names_and_shapes():
    shapes = {name: tuple(t.shape) for name, t in AlexNet("torchvision", init="torch").state_dict().items()}
    assert shapes == {
        "features.0.weight": (64, 3, 11, 11), "features.0.bias": (64,),
        "features.3.weight": (192, 64, 5, 5), "features.3.bias": (192,),
        "features.6.weight": (384, 192, 3, 3), "features.6.bias": (384,),
        "features.8.weight": (256, 384, 3, 3), "features.8.bias": (256,),
        "features.10.weight": (256, 256, 3, 3), "features.10.bias": (256,),
        "classifier.1.weight": (4096, 9216), "classifier.1.bias": (4096,),
        "classifier.4.weight": (4096, 4096), "classifier.4.bias": (4096,),
        "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,)}


def test_paper_initialisation():
    model = AlexNet("2012", width=0.25, input_size=99, init="paper")
    biases = {name: module.bias for name, module in model.named_modules() if hasattr(module, "bias")
              and module.bias is not None}
    ones = {"features.4", "features.10", "features.12", "classifier.0", "classifier.3"}
    for name, bias in biases.items():
        assert torch.all(bias == (1.0 if name in ones else 0.0)), name
    assert abs(model.get_submodule("classifier.3").weight.std().item() - 0.01) < 1e-3


@pytest.mark.parametrize("init", ["paper", "kaiming", "torch"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_both_backends_have_one_state_dict_and_the_same_initial_weights(variant, init):
    states = []
    for backend in ("triton", "torch"):
        torch.manual_seed(0)
        states.append(AlexNet(variant, 10, backend, init=init, **SCALED[variant]).state_dict())
    assert list(states[0]) == list(states[1])
    for name, tensor in states[0].items():
        assert torch.equal(tensor, states[1][name]), name


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_triton_tree_holds_only_triton_modules(variant):
    def torch_modules(backend):
        model = AlexNet(variant, 10, backend, init="torch", **SCALED[variant])
        return [f"{name}: {type(module).__name__}" for name, module in model.named_modules() if name and
                type(module).__module__ != "alexnet_triton.nn" and type(module) not in (nn.Sequential, nn.Identity)]

    assert not torch_modules("triton"), torch_modules("triton")
    assert "features.1: ReLU" in torch_modules("torch")


def test_the_backend_is_fixed_at_construction():
    model = AlexNet("2012", 10, "torch", **SCALED["2012"])
    assert model.backend == "torch"
    with pytest.raises(AttributeError, match="backend"):
        model.backend = "triton"


def pair(variant: str, num_classes: int = 10, dropout: float = 0.0):
    """(triton model, torch model) with the same random weights: the torch model's, loaded into the other."""
    torch.manual_seed(0)
    torch_model = AlexNet(variant, num_classes, "torch", dropout=dropout, init="kaiming", **SCALED[variant])
    triton_model = AlexNet(variant, num_classes, "triton", dropout=dropout, init="torch", **SCALED[variant])
    triton_model.load_state_dict(torch_model.state_dict())
    return triton_model, torch_model


def images(variant: str, batch: int = 3, channels_last: bool = False, seed: int = 1):
    size = SCALED[variant]["input_size"]
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("variant", ["2012", "torchvision"])
def test_triton_backend_matches_torch_backend(variant, channels_last, no_torch_fallback):
    """Logits, loss and every parameter gradient, fp32, from the same weights (dropout off)."""
    triton_model, torch_model = pair(variant)
    x, target = images(variant, channels_last=channels_last), torch.tensor([3, 0, 7])
    with no_torch_fallback():
        logits = triton_model(x)
        loss = ops.cross_entropy(logits, target)
        loss.backward()
    logits_ref = torch_model(x)
    loss_ref = F.cross_entropy(logits_ref, target)
    loss_ref.backward()
    assert_close(logits, logits_ref, "logits")
    assert_close(loss, loss_ref, "loss")
    reference = dict(torch_model.named_parameters())
    for name, parameter in triton_model.named_parameters():
        assert_close(parameter.grad, reference[name].grad, name)


def test_a_channels_last_map_larger_than_1x1_flattens_in_nchw_order(no_torch_fallback):
    """Input 99: a 2x2 map after pool5 (torch tree: a 2x2 adaptive average pool, the Triton tree's identity)."""
    torch.manual_seed(0)
    torch_model = AlexNet("torchvision", 10, "torch", width=0.125, input_size=99, dropout=0.0, init="kaiming")
    triton_model = AlexNet("torchvision", 10, "triton", width=0.125, input_size=99, dropout=0.0, init="torch")
    triton_model.load_state_dict(torch_model.state_dict())
    assert torch_model.avgpool.output_size == (2, 2)
    x = torch.randn(2, 3, 99, 99, generator=torch.Generator().manual_seed(1)).contiguous(
        memory_format=torch.channels_last)
    with no_torch_fallback(), torch.no_grad():
        logits = triton_model(x)
    with torch.no_grad():
        assert_close(logits, torch_model(x), "logits")


CONV_OUTPUT_GRAD = "_conv2d_output_grad_kernel"
POOL_FORWARDS = ("_max_pool2d_forward_kernel", "_lrn_max_pool_forward_kernel")


POOL_BACKWARDS = ("_max_pool2d_backward_kernel", "_lrn_max_pool_backward_kernel")


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_relu_before_a_pool_is_the_pool_s_and_so_is_its_conv_s_bias(variant):
    """conv1, conv2 and conv5 (a pool after their ReLU) run without their ReLU and bias, and their pools (LRN + pool
    in the 2012 net) with both: the pools' backward passes sum those convs' bias gradients. conv3 and conv4 (a conv
    after their ReLU) hand their ReLU's mask and their bias gradient to the next conv's input gradient: a training
    step's backward launches no output-grad pass at all."""
    model = AlexNet(variant, 10, "triton", init="kaiming", **SCALED[variant])
    convs = [m for m in model.features if isinstance(m, triton_nn.Conv2d)]
    assert [conv.relu for conv in convs] == [False, False, True, True, False]
    assert [conv.bias_added_after for conv in convs] == [True, True, False, False, True]
    assert [conv.relu_masked_by_next for conv in convs] == [False, False, True, True, False]
    assert [conv.relu_input for conv in convs] == [False, False, False, True, True]
    assert [conv.bias_grad_by_next for conv in convs] == [False, False, True, True, False]
    with runtime.capture_launches() as records:
        ops.cross_entropy(model(images(variant)), torch.tensor([3, 0, 7])).backward()
    pools = [(r.args["RELU"], r.args["bias_ptr"].shape[0]) for r in records if r.kernel.fn.__name__ in POOL_FORWARDS]
    assert pools == [(True, conv.out_channels) for conv in convs if not conv.relu]
    bias_grads = [(r.args["BIAS_GRAD"], r.args["bias_partial_ptr"].shape[1]) for r in records
                  if r.kernel.fn.__name__ in POOL_BACKWARDS]  # backward: pool5 first
    assert bias_grads == [(True, conv.out_channels) for conv in reversed(convs) if not conv.relu]
    assert not [r for r in records if r.kernel.fn.__name__ == CONV_OUTPUT_GRAD]
    masking = [(r.args["INPUT_RELU"], r.args["BIAS_GRAD"], r.args["bias_partial_ptr"] is not None and
                r.args["bias_partial_ptr"].shape[1]) for r in records
               if r.kernel.fn.__name__ == "_conv2d_input_grad_kernel"]  # backward: conv5's first
    assert masking == [(conv.relu_input, conv.relu_input, conv.relu_input and conv.in_channels)
                       for conv in reversed(convs[1:])]  # conv1's input gradient: not launched


@pytest.mark.parametrize("variant", VARIANTS)
def test_fc6_and_fc7_hand_their_relu_and_dropout_to_the_next_linear(variant):
    """fc6 and fc7 (ReLU, then a dropout in their epilogue or on the next one's input) hand both backwards to the
    next linear's input gradient, which masks the dx it writes by its input > 0 and scales it by the dropout the
    layer before applied (2012: fc6's and fc7's; torchvision: fc6's, fc7's none): no backward GEMM of a training
    step masks its dy."""
    model = AlexNet(variant, 10, "triton", init="kaiming", **SCALED[variant])
    linears = [m for m in model.classifier if isinstance(m, triton_nn.Linear)]
    assert [m.relu_masked_by_next for m in linears] == [True, True, False]
    assert [m._masks_relu_of for m in linears] == [None, *linears[:2]]
    with runtime.capture_launches() as records:
        ops.cross_entropy(model(images(variant)), torch.tensor([3, 0, 7])).backward()
    backward = [r for r in records if r.kernel.fn.__name__ in ("_linear_input_grad_kernel",
                                                                "_linear_weight_grad_kernel")]
    assert not [r for r in backward if r.args["RELU_MASK"] or r.args["DROPOUT_MASK"]]
    input_grads = [(r.args["INPUT_RELU"], r.args["input_scale"]) for r in backward
                   if r.kernel.fn.__name__ == "_linear_input_grad_kernel"]  # fc8's first
    scales = {"2012": [2.0, 2.0], "torchvision": [1.0, 2.0]}[variant]  # dropout 0.5 after fc7 (2012) and fc6
    assert input_grads == [(True, scales[0]), (True, scales[1]), (False, 1.0)]


def test_the_pools_hold_their_conv_unregistered():
    """The bias stays the conv's one parameter: the pool module has no parameter or submodule of its own, the
    state_dict keys are the torch tree's, a deep copy keeps the link to its own conv, and a loaded bias is the one
    the pool adds."""
    model = AlexNet("torchvision", 10, "triton", init="kaiming", **SCALED["torchvision"])
    conv, pool = model.features[0], model.features[1]  # the pool block at its ReLU's index
    assert isinstance(pool, triton_nn.MaxPool2d) and pool._bias_of is conv
    assert not list(pool.parameters()) and not list(pool.children())
    assert [name for name in model.state_dict() if name.startswith("features.1.")] == []
    copy = deepcopy(model)
    assert copy.features[1]._bias_of is copy.features[0] and copy.features[0] is not conv
    state = {name: torch.randn_like(t) for name, t in model.state_dict().items()}
    model.load_state_dict(state, assign=True)
    assert torch.equal(pool._conv_bias(), state["features.0.bias"])


def test_triton_weights_load_into_the_torch_tree():
    triton_model, _ = pair("torchvision")
    torch_model = AlexNet("torchvision", 10, "torch", init="paper", **SCALED["torchvision"])
    torch_model.load_state_dict(triton_model.state_dict())
    for name, tensor in triton_model.state_dict().items():
        assert torch.equal(torch_model.state_dict()[name], tensor), name


def test_mixed_precision_is_autocast_on_both_backends(no_torch_fallback):
    """fp16 autocast (the CPU interpreter's low dtype): fp16 logits from fp32 weights and images on both backends,
    as close to the fp64 logits as PyTorch's."""
    triton_model, torch_model = pair("2012")
    x = images("2012")
    with no_torch_fallback(), forward_context("cpu", torch.float16), torch.no_grad():
        logits = triton_model(x)
    with forward_context("cpu", torch.float16), torch.no_grad():
        logits_ref = torch_model(x)
    assert logits.dtype == logits_ref.dtype == torch.float16
    assert all(p.dtype == torch.float32 for p in triton_model.parameters())
    with torch.no_grad():
        logits64 = torch_model.double()(x.double())
    assert_low_precision_close(logits, logits_ref, logits64, "logits")


def test_eval_mode_has_no_dropout(no_torch_fallback):
    triton_model, torch_model = pair("2012", dropout=0.5)
    triton_model.eval()
    torch_model.eval()
    x = images("2012")
    with no_torch_fallback(), torch.no_grad():
        logits = triton_model(x)
    assert_close(logits, torch_model(x), "logits")


def test_five_sgd_steps_match_on_both_backends(no_torch_fallback):
    """The same batches from the same start: losses and parameters after 5 steps with momentum and decay."""
    triton_model, torch_model = pair("2012")
    sgd = dict(lr=0.01, momentum=0.9, weight_decay=5e-4)
    triton_sgd = optim.SGD(triton_model.parameters(), **sgd)
    torch_sgd = torch.optim.SGD(torch_model.parameters(), **sgd)
    for step in range(5):
        x, target = images("2012", batch=4, seed=10 + step), torch.randint(10, (4,))
        with no_torch_fallback():
            loss = ops.cross_entropy(triton_model(x), target)
            triton_sgd.zero_grad()
            loss.backward()
            triton_sgd.step()
        loss_ref = F.cross_entropy(torch_model(x), target)
        torch_sgd.zero_grad()
        loss_ref.backward()
        torch_sgd.step()
        assert_close(loss, loss_ref, f"loss at step {step}")
    reference = dict(torch_model.named_parameters())
    for name, parameter in triton_model.named_parameters():
        assert_close(parameter, reference[name], name)


# What a Triton training step may still ask of PyTorch: allocation and views, the backward's seed gradient, the
# dropout seeds drawn on the device (randint), the lr's device tensor on the first step (full), and integer or
# 0-d work (the dropout scale, once per (p, dtype); the targets' range check, which reads back to the host unless
# cross_entropy.device_target_check: tests/test_graph_safe.py); copy_/set_ are Triton's interpreter staging its
# arguments in place.
DATA_OPS = {"empty", "new_empty", "view", "reshape", "expand", "detach", "set_", "ones_like", "randint", "full",
            "_record_function_enter_new", "_record_function_exit"}


class _RecordFloatingCompute(TorchDispatchMode):
    """Records ATen ops that compute on floating-point tensors with elements (not 0-d scalars)."""

    def __init__(self):
        super().__init__()
        self.offending: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = library.run_under(self, func, args, kwargs)  # this project's operators: what they dispatch
        name = func.overloadpacket.__name__
        if name in DATA_OPS or func.namespace == library.NAMESPACE:
            return result
        tensors = [t for t in (*args, *(kwargs or {}).values(), result) if isinstance(t, torch.Tensor)]
        if name == "copy_" and args[0].untyped_storage().data_ptr() == args[1].untyped_storage().data_ptr():
            return result  # the interpreter writing a kernel argument back onto itself
        if any(t.is_floating_point() and t.dim() > 0 for t in tensors):
            self.offending.add(name)
        return result


@pytest.mark.parametrize("variant", ["2012", "torchvision"])
def test_a_triton_training_step_leaves_no_floating_point_compute_to_pytorch(variant, monkeypatch):
    monkeypatch.setattr(runtime, "poison_outputs", False)  # the tests' NaN fill is not part of a step
    torch.manual_seed(0)
    model = AlexNet(variant, 10, "triton", dropout=0.5, init="kaiming", **SCALED[variant])
    sgd = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x, target = images(variant), torch.tensor([3, 0, 7])
    for _ in range(2):  # the second step has momentum buffers
        with _RecordFloatingCompute() as recorder:
            loss = ops.cross_entropy(model(x), target)
            sgd.zero_grad()
            loss.backward()
            sgd.step()
        assert not recorder.offending, recorder.offending


@pytest.mark.parametrize("variant", ["2012", "torchvision"])
def test_an_autocast_step_casts_nothing_once_the_optimizer_wrote_the_copies(variant, no_torch_fallback):
    """fp16 autocast, channels_last (conv1 in space-to-depth form: its pass casts the images): the first step casts
    the conv weights where kernels read them (no compute copy yet); from the second on, a step dispatches no cast
    at all: the layers read the copies the update wrote, take fp32 biases, write fp32 gradients, and the loss
    reads the fp16 logits."""
    torch.manual_seed(0)
    model = AlexNet(variant, 10, "triton", dropout=0.5, init="kaiming", **SCALED[variant])
    model.to(memory_format=torch.channels_last)
    sgd = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x, target = images(variant, channels_last=True), torch.tensor([3, 0, 7])
    casts = []
    for _ in range(3):
        record = RecordAten()
        with no_torch_fallback(), record:
            with forward_context("cpu", torch.float16):
                loss = ops.cross_entropy(model(x), target)
            sgd.zero_grad(set_to_none=True)
            loss.backward()
            sgd.step()
        assert {"conv2d_depth", "conv2d", "linear", "cross_entropy", "sgd_step_"} <= set(record.names)
        casts.append(sum(name in ("to", "_to_copy") for name in record.names))
    assert casts[0] > 0 and casts[1:] == [0, 0], casts


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_images_in_the_autocast_dtype_give_the_step_of_their_fp32_originals(backend, channels_last,
                                                                           no_torch_fallback):
    """fp16 autocast: images the loader cast to fp16 (train.py with --amp) give bitwise the logits, loss and every
    parameter gradient of the fp32 images they were cast from (conv1 would make the same cast), on both backends
    (channels_last: the Triton conv1 in space-to-depth form, whose pass then reads 2-byte images)."""
    torch.manual_seed(0)
    model = AlexNet("2012", 10, backend, init="kaiming", **SCALED["2012"])
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    x, target = images("2012", channels_last=channels_last), torch.tensor([3, 0, 7])
    runs = []
    for batch in (x, x.to(torch.float16)):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same dropout masks
        with no_torch_fallback() if backend == "triton" else contextlib.nullcontext():
            with forward_context("cpu", torch.float16):
                logits = model(batch)
                loss = F.cross_entropy(logits, target) if backend == "torch" else ops.cross_entropy(logits, target)
            loss.backward()
        runs.append((logits, loss, {name: p.grad for name, p in model.named_parameters()}))
    (logits, loss, grads), (logits16, loss16, grads16) = runs
    assert torch.equal(logits16, logits) and torch.equal(loss16, loss)
    for name, grad in grads.items():
        assert torch.equal(grads16[name], grad), name


@pytest.mark.parametrize("variant", ["2012", "torchvision"])
def test_images_in_depth_form_give_the_step_of_the_images(variant, no_torch_fallback, monkeypatch):
    """fp16 autocast, channels_last (train.py's loaders under --amp): the images in the space-to-depth form conv1
    computes in (take_images_in_depth_form, data.space_to_depth_images) give bitwise the logits, loss and every
    parameter gradient of the images, with one launch fewer (no pass over the images: only the weight's)."""
    torch.manual_seed(0)
    model = AlexNet(variant, 10, "triton", init="kaiming", **SCALED[variant]).to(memory_format=torch.channels_last)
    x, target = images(variant, channels_last=True).to(torch.float16), torch.tensor([3, 0, 7])
    launch = runtime.launch

    def step(batch):
        model.zero_grad(set_to_none=True)
        launched = []
        monkeypatch.setattr(runtime, "launch", lambda kernel, *a, **k: (launched.append(kernel.__name__),
                                                                         launch(kernel, *a, **k)))
        torch.manual_seed(1)  # the same dropout masks
        with no_torch_fallback(), forward_context("cpu", torch.float16):
            logits = model(batch)
            loss = ops.cross_entropy(logits, target)
        loss.backward()
        return logits, loss, {name: p.grad for name, p in model.named_parameters()}, launched

    runs = [step(x)]
    batch = space_to_depth_images(x, model.take_images_in_depth_form(torch.float16))
    runs.append(step(batch))
    (logits, loss, grads, launched), (logits_d, loss_d, grads_d, launched_d) = runs
    assert model.depth_form is not None and batch.shape == (3, 48, *model.depth_form.size)
    assert torch.equal(logits_d, logits) and torch.equal(loss_d, loss)
    for name, grad in grads.items():
        assert torch.equal(grads_d[name], grad), name
    assert launched.count("_space_to_depth_kernel") == 2 and launched_d.count("_space_to_depth_kernel") == 1
    assert len(launched_d) == len(launched) - 1


def test_images_in_depth_form_only_where_conv1_computes_in_it():
    """No form (None, the images expected) for exact fp32 or the torch tree; a form, then a batch of the images
    themselves, is refused with the shape it expects."""
    for backend, dtype in (("triton", torch.float32), ("torch", torch.float16)):
        model = AlexNet("2012", 10, backend, **SCALED["2012"])
        assert model.take_images_in_depth_form(dtype) is None and model.depth_form is None
    model = AlexNet("2012", 10, **SCALED["2012"])
    assert model.take_images_in_depth_form(torch.float16) is not None
    assert model.features[0].depth_form_of == (67, 67)
    with pytest.raises(ValueError, match=r"expected images in space-to-depth form \[N, 48, 17, 17\], got "
                                         r"\(2, 3, 67, 67\)"):
        model(torch.randn(2, 3, 67, 67))


def test_the_recorder_sees_pytorch_compute():
    with _RecordFloatingCompute() as recorder:
        F.relu(torch.randn(4, 4)).sum()
    assert {"relu", "sum"} <= recorder.offending


@pytest.mark.parametrize("kwargs, message", [
    (dict(variant="2013"), "variant must be one of"),
    (dict(backend="cudnn"), "backend must be one of"),
    (dict(init="xavier"), "init must be one of"),
    (dict(input_size=40), "input_size 40 is too small"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AlexNet(**kwargs)


def test_wrong_image_size_is_named():
    model = AlexNet("2012", 10, **SCALED["2012"])
    with pytest.raises(ValueError, match=r"expected images \[N, 3, 67, 67\], got \(2, 3, 64, 64\)"):
        model(torch.randn(2, 3, 64, 64))
