"""The Triton-backend model under torch.compile (one graph, no break) and torch.export: the same logits and
gradients as the uncompiled model; each Triton op is one operator of the graph."""

from __future__ import annotations

import pytest
import torch

from alexnet_triton import ops
from alexnet_triton.data import space_to_depth_images
from alexnet_triton.model import VARIANTS, AlexNet
from alexnet_triton.parity import assert_close

SIZES = {"2012": 67, "torchvision": 63}


def _model(variant: str) -> AlexNet:
    torch.manual_seed(0)
    return AlexNet(variant, num_classes=5, width=0.125, input_size=SIZES[variant], init="kaiming", dropout=0.5)


def _step(model, forward, images, labels, seed: int):
    """Loss and every parameter's gradient of one ``forward`` (the model or its compiled form) + backward, dropout
    masks drawn from ``seed``."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = ops.cross_entropy(forward(images), labels)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("variant", VARIANTS)
def test_compiled_training_step_is_one_graph_and_matches_eager(variant):
    model = _model(variant)
    images, labels = torch.randn(2, 3, SIZES[variant], SIZES[variant]), torch.tensor([1, 4])
    loss, grads = _step(model, model, images, labels, seed=7)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)  # a graph break raises
    compiled_loss, compiled_grads = _step(model, compiled, images, labels, seed=7)
    assert_close(compiled_loss, loss, "loss")
    for name, grad in grads.items():
        assert_close(compiled_grads[name], grad, name)
    explained = torch._dynamo.explain(model)(images)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)


def test_compiled_step_on_images_in_depth_form_is_one_graph_and_matches_eager():
    """conv1's images in the space-to-depth form it computes in (float64 channels_last: the interpreter's dtype
    that takes it; train.py's loaders under --amp): one graph through alexnet_triton::conv2d_depth_formed."""
    model = _model("2012").double().to(memory_format=torch.channels_last)
    form = model.take_images_in_depth_form(torch.float64)
    images = space_to_depth_images(torch.randn(2, 3, 67, 67, dtype=torch.float64), form)
    labels = torch.tensor([1, 4])
    loss, grads = _step(model, model, images, labels, seed=7)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    compiled_loss, compiled_grads = _step(model, compiled, images, labels, seed=7)
    assert_close(compiled_loss, loss, "loss")
    for name, grad in grads.items():
        assert_close(compiled_grads[name], grad, name)
    program = torch.export.export(model.eval(), (images,))
    called = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert "alexnet_triton.conv2d_depth_formed.default" in called
    assert_close(program.module()(images), model(images), "logits")


@pytest.mark.parametrize("variant", VARIANTS)
def test_exported_forward_reproduces_the_logits(variant):
    model = _model(variant).eval()
    images = torch.randn(2, 3, SIZES[variant], SIZES[variant])
    program = torch.export.export(model, (images,))
    assert_close(program.module()(images), model(images), "logits")
    called = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert {"alexnet_triton.conv2d.default", "alexnet_triton.linear.default"} <= called
    assert not any(name.startswith("aten.convolution") or name.startswith("aten.addmm") for name in called)
