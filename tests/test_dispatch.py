"""Unmodified PyTorch models on the Triton kernels (alexnet_triton.use_kernels): the same step as PyTorch's,
with no PyTorch compute kernel; what the kernels do not take falls through visibly; PyTorch's errors stay
PyTorch's."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import alexnet_triton
from alexnet_triton import dispatch
from alexnet_triton.model import AlexNet
from alexnet_triton.parity import assert_close

SIZES = {"torchvision": 63, "2012": 67}
PYTORCH_LRN = F.local_response_norm


@pytest.fixture(autouse=True)
def fresh_counters():
    dispatch.FALLBACKS.clear()
    dispatch.HANDLED.clear()
    yield
    assert dispatch._Active.depth == 0, "a test left the kernels enabled"


def _model(variant: str, dropout: float = 0.0) -> torch.nn.Module:
    """The plain torch.nn tree of the variant (torchvision's own module tree and names for "torchvision")."""
    return AlexNet(variant, num_classes=5, backend="torch", width=0.125, input_size=SIZES[variant],
                   init="kaiming", dropout=dropout)


def _step(model, images, labels, lr=0.05):
    """Forward, cross-entropy, backward and one fused torch.optim.SGD step; returns (logits, loss)."""
    sgd = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, fused=True)
    logits = model(images)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    sgd.step()
    return logits.detach(), loss.detach()


@pytest.mark.parametrize("variant", ["torchvision", "2012"])
def test_unmodified_model_trains_a_step_on_the_kernels_alone(variant, no_torch_compute):
    torch.manual_seed(0)
    model = _model(variant)
    ours = copy.deepcopy(model)
    images = torch.randn(3, 3, SIZES[variant], SIZES[variant])
    labels = torch.tensor([0, 3, 4])
    logits, loss = _step(model, images, labels)
    with dispatch.use_kernels(strict=True), no_torch_compute():
        our_logits, our_loss = _step(ours, images, labels)
    assert not dispatch.FALLBACKS
    expected = {"conv2d": 5, "linear": 3, "cross_entropy_loss": 1, "relu_": 7, "threshold_backward": 7,
                "_fused_sgd_": 1}
    expected.update(local_response_norm=2) if variant == "2012" else expected.update(adaptive_avg_pool2d=1)
    assert {name: dispatch.HANDLED[name] for name in expected} == expected
    assert dispatch.HANDLED["max_pool2d"] == 3
    assert_close(our_logits, logits, "logits")
    assert_close(our_loss, loss, "loss")
    for (name, param), our_param in zip(model.named_parameters(), ours.parameters(), strict=True):
        assert_close(our_param, param, name)


def test_dropout_and_inference_mode_run_on_the_kernels(no_torch_compute):
    torch.manual_seed(1)
    model = _model("torchvision", dropout=0.5)
    images = torch.randn(2, 3, 63, 63)
    with dispatch.use_kernels(strict=True):
        with no_torch_compute():
            model(images).sum().backward()
        assert dispatch.HANDLED["dropout"] == 2
        # inference mode skips autograd: the backend key's overrides run (below the dispatch mode a guard would
        # use, so the counters prove it)
        with torch.inference_mode():
            evaluated = model.eval()(images)
    assert dispatch.HANDLED["conv2d"] == 10 and dispatch.HANDLED["linear"] == 6 and not dispatch.FALLBACKS
    assert_close(evaluated, model(images), "inference")


def test_what_the_kernels_do_not_take_falls_through_visibly():
    x = torch.randn(1, 2, 8, 8)
    with dispatch.use_kernels():
        pooled = F.adaptive_avg_pool2d(x, (2, 2))  # an average over 4x4 windows: no kernel here
        as_int = F.max_pool2d(torch.arange(64).view(1, 1, 8, 8), 2)  # integer input
    assert_close(pooled, F.adaptive_avg_pool2d(x, (2, 2)), "pooled")
    assert torch.equal(as_int, F.max_pool2d(torch.arange(64).view(1, 1, 8, 8), 2))
    assert dispatch.FALLBACKS[("adaptive_avg_pool2d", "output (2, 2) is not the input's size")] == 1
    assert dispatch.FALLBACKS[("max_pool2d", "dtype torch.int64")] == 1
    with alexnet_triton.use_kernels(strict=True), pytest.raises(dispatch.KernelFallback, match="adaptive_avg_pool2d"):
        F.adaptive_avg_pool2d(x, (2, 2))


def test_pytorch_errors_stay_pytorch_errors():
    x, w = torch.randn(1, 4, 8, 8), torch.randn(6, 3, 3, 3)  # 4 input channels, a weight for 3
    with pytest.raises(Exception) as theirs:
        F.conv2d(x, w)
    with dispatch.use_kernels(), pytest.raises(Exception) as ours:
        F.conv2d(x, w)
    assert type(ours.value) is type(theirs.value) and str(ours.value) == str(theirs.value)
    assert not dispatch.FALLBACKS and not dispatch.HANDLED


def test_enable_disable_nest_and_restore_pytorch(no_torch_compute):
    x, w = torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3)
    alexnet_triton.enable()
    alexnet_triton.enable(strict=True)
    alexnet_triton.disable()
    with no_torch_compute():
        F.conv2d(x, w)  # still on the kernels after the inner disable
    alexnet_triton.disable()
    assert F.local_response_norm is PYTORCH_LRN
    with no_torch_compute(), pytest.raises(AssertionError, match="ran inside the Triton path"):
        F.conv2d(x, w)  # PyTorch's own kernel again
    with pytest.raises(RuntimeError, match="not enabled"):
        alexnet_triton.disable()
