"""The Triton ops as custom operators: torch.library.opcheck (schema, fake tensor, autograd registration,
AOT dispatch) for every operator of the alexnet_triton namespace, on AlexNet-shaped and odd inputs."""

from __future__ import annotations

import itertools

import pytest
import torch

from alexnet_triton import ops  # noqa: F401  (registers the operators)
from alexnet_triton.kernels import conv
from alexnet_triton.ops import conv as conv_op
from alexnet_triton.ops import library

OPS = torch.ops.alexnet_triton


def _x(*shape, channels_last=False, requires_grad=False, dtype=torch.float32):
    x = torch.randn(*shape, dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return x.requires_grad_(requires_grad)


def _window(op, x, *pool):
    """The window offsets the forward op returns for x."""
    return op(x.detach(), *pool)[1]


def _samples():
    """(label, operator, args): AlexNet's shapes scaled down, and odd ones."""
    pool = ([3, 3], [2, 2], [0, 0], [1, 1], False)
    odd_pool = ([2, 3], [1, 2], [1, 1], [2, 1], True)
    block = (5, 1e-4, 0.75, 2.0, [3, 3], [2, 2], [0, 0])
    for (label, x), relu in itertools.product((("pool1", _x(2, 12, 13, 13, requires_grad=True)),
                                               ("pool1-cl", _x(2, 12, 13, 13, channels_last=True, requires_grad=True))),
                                              (False, True)):
        # the pools of relu(x + bias): AlexNet's ReLU before a pool and its conv's bias
        label += "-bias-relu" * relu
        bias = _x(12, requires_grad=True) if relu else None
        detached = None if bias is None else bias.detach()
        yield f"max_pool2d/{label}", OPS.max_pool2d, (x, bias, *pool, relu, False)
        window = _window(OPS.max_pool2d, x, detached, *pool, relu, False)
        yield f"max_pool2d_backward/{label}", OPS.max_pool2d_backward, (
            _x(2, 12, 6, 6), window, [2, 12, 13, 13], *pool, False, None if bias is None else torch.float32)
        yield f"max_pool2d_indices/{label}", OPS.max_pool2d_indices, (window, [2, 12, 13, 13], *pool)
        yield f"lrn_max_pool2d/{label}", OPS.lrn_max_pool2d, (x, bias, *block, relu)
        window = OPS.lrn_max_pool2d(x.detach(), detached, *block, relu)[1]
        yield f"lrn_max_pool2d_backward/{label}", OPS.lrn_max_pool2d_backward, (
            _x(2, 12, 6, 6), window, x.detach(), detached, *block, relu, bias is not None)
    odd = _x(3, 5, 7, 6, requires_grad=True)
    yield "max_pool2d/odd", OPS.max_pool2d, (odd, None, *odd_pool, False, False)
    yield "max_pool2d/odd-bias", OPS.max_pool2d, (odd, _x(5, requires_grad=True), *odd_pool, False, False)
    yield "max_pool2d/pool5-cl-contiguous-output", OPS.max_pool2d, (
        _x(2, 12, 13, 13, channels_last=True, requires_grad=True), _x(12, requires_grad=True), *pool, True, True)
    yield "local_response_norm/conv1", OPS.local_response_norm, (_x(2, 12, 9, 9, requires_grad=True), 5, 1e-4,
                                                                 0.75, 2.0)
    yield "local_response_norm/odd-size", OPS.local_response_norm, (_x(1, 7, 5, 3, requires_grad=True), 4, 2e-3,
                                                                    0.5, 1.0)
    yield "local_response_norm_backward", OPS.local_response_norm_backward, (_x(2, 12, 9, 9), _x(2, 12, 9, 9), 5,
                                                                             1e-4, 0.75, 2.0)


def _seed():
    return torch.tensor([2012], dtype=torch.int64)


def _gemm_samples():
    """linear (fc6/fc7 scaled down: ReLU + dropout; a plain odd one; bf16 with fp32 master parameters and the
    weight's compute copy; one handing its ReLU to the next and taking the one before's), its gradients, dropout,
    cross-entropy, SGD (also writing compute copies)."""
    x, w, b = _x(4, 40, requires_grad=True), _x(24, 40, requires_grad=True), _x(24, requires_grad=True)
    yield "linear/fc6", OPS.linear, (x, w, b, True, 0.5, _seed(), "ieee", None, False, None)
    yield "linear/odd", OPS.linear, (_x(3, 5, 7, requires_grad=True), _x(9, 7, requires_grad=True), None, False,
                                     0.0, None, "ieee", None, False, None)
    yield "linear/fc6-bf16-copy", OPS.linear, (x.detach().bfloat16().requires_grad_(), w, b, True, 0.5, _seed(),
                                               "ieee", w.detach().bfloat16(), False, None)
    yield "linear/fc7-relu-hand-over", OPS.linear, (x.relu(), w, b, True, 0.5, _seed(), "ieee", None, True, 0.5)
    y = OPS.linear(x.detach(), w.detach(), b.detach(), True, 0.5, _seed(), "ieee", None, False, None)
    yield "linear_input_grad", OPS.linear_input_grad, (_x(4, 24), w.detach(), y, 0.5, _seed(), "ieee", None, 0.0)
    yield "linear_input_grad/relu-input", OPS.linear_input_grad, (_x(4, 24), w.detach(), None, 0.0, None, "ieee",
                                                                  x.detach().relu(), 0.5)
    yield "linear_weight_grad", OPS.linear_weight_grad, (_x(4, 24), x.detach(), y, 0.5, _seed(), True, "ieee",
                                                                torch.float32)
    yield "linear_weight_grad_sgd_", OPS.linear_weight_grad_sgd_, (
        _x(4, 24), x.detach(), y, 0.5, _seed(), "ieee", w.detach().clone(), b.detach().clone(), _x(24, 40), _x(24),
        None, torch.tensor([0.1]), 0.9, 5e-4, True, False, "pytorch", False)
    yield "linear_weight_grad_sgd_/copy", OPS.linear_weight_grad_sgd_, (
        _x(4, 24, dtype=torch.bfloat16), x.detach().bfloat16(), None, 0.0, None, "ieee", w.detach().clone(), None,
        None, None, _x(24, 40, dtype=torch.bfloat16), torch.tensor([0.1]), 0.0, 0.0, False, False, "paper", False)
    yield "dropout", OPS.dropout, (_x(3, 17, requires_grad=True), 0.5, _seed())
    yield "dropout_backward", OPS.dropout_backward, (_x(3, 17), 0.25, _seed())
    logits, target = _x(6, 10, requires_grad=True), torch.tensor([0, 3, 9, -100, 2, 2])
    soft = torch.softmax(_x(6, 10), 1).requires_grad_()
    yield "cross_entropy/mean", OPS.cross_entropy, (logits, target, None, -100, "mean", 0.0, torch.float32)
    yield "cross_entropy/weighted-smoothed-none", OPS.cross_entropy, (logits, target, _x(10).abs(), -100, "none", 0.1,
                                                                      torch.float32)
    yield "cross_entropy/soft-sum", OPS.cross_entropy, (logits, soft, None, -100, "sum", 0.0, torch.float32)
    yield "cross_entropy/fp16-logits-fp32-loss", OPS.cross_entropy, (
        logits.detach().half().requires_grad_(), target, None, -100, "mean", 0.1, torch.float32)
    loss, *saved = OPS.cross_entropy(logits.detach(), soft.detach(), None, -100, "mean", 0.2, torch.float32)
    yield "cross_entropy_backward", OPS.cross_entropy_backward, (torch.ones(()), logits.detach(), soft.detach(),
                                                                 None, saved, True, -100, "mean", 0.2, True)
    params, grads, buffers = ([_x(5, 3), _x(7).to(torch.float16)] for _ in range(3))
    yield "sgd_step_", OPS.sgd_step_, (params, grads, buffers, [], torch.tensor([0.1]), 0.9, 5e-4, False, False,
                                       "pytorch", False)
    params, grads, buffers = ([_x(5, 3), _x(7), _x(2)] for _ in range(3))
    yield "sgd_step_/copies", OPS.sgd_step_, (params, grads, buffers, [_x(5, 3, dtype=torch.float16)],
                                              torch.tensor([0.1]), 0.9, 5e-4, True, False, "pytorch", False)


def _conv_samples():
    """conv2 of the 2012 net scaled down (groups, padding, ReLU; bf16 with fp32 master parameters, with and without
    the weight's compute copy), an odd strided one, "same" padding, and conv1's space-to-depth form; each backward
    operator on the forward's tensors."""
    geometry = ([1, 1], [2, 2], "", [1, 1], 2)
    x, w, b = (_x(2, 8, 9, 9, channels_last=True, requires_grad=True), _x(12, 4, 5, 5, requires_grad=True),
               _x(12, requires_grad=True))
    yield "conv2d/conv2", OPS.conv2d, (x, w, b, *geometry, True, "ieee", False, False, None, None, False)
    x16 = x.detach().bfloat16().requires_grad_()
    yield "conv2d/conv2-bf16-master", OPS.conv2d, (x16, w, b, *geometry, True, "ieee", False, False, None, None, False)
    yield "conv2d/conv2-bf16-copy", OPS.conv2d, (x16, w, b, *geometry, True, "ieee", False, False,
                                                 w.detach().bfloat16(), None, False)
    yield "conv2d/odd-strided", OPS.conv2d, (_x(1, 3, 11, 8, requires_grad=True), _x(5, 3, 3, 2, requires_grad=True),
                                              None, [2, 3], [1, 0], "", [1, 2], 1, False, "ieee", False, False, None,
                                              None, False)
    yield "conv2d/same", OPS.conv2d, (_x(1, 4, 7, 7, requires_grad=True), _x(4, 4, 4, 4, requires_grad=True), None,
                                      [1, 1], [0, 0], "same", [1, 1], 1, False, "ieee", False, False, None, None, False)
    yield "conv2d/relu-masked-by-next", OPS.conv2d, (x, w, b, *geometry, True, "ieee", False, True, None, None, False)
    yield "conv2d/relu-input", OPS.conv2d, (torch.relu(x.detach()).requires_grad_(), w, b, *geometry, True, "ieee",
                                            True, False, None, None, False)
    yield "conv2d/bias-grad-by-next", OPS.conv2d, (x, w, b, *geometry, True, "ieee", False, True, None, None, True)
    yield "conv2d/relu-input-bias", OPS.conv2d, (torch.relu(x.detach()).requires_grad_(), w, b, *geometry, True,
                                                 "ieee", True, False, None, _x(8, requires_grad=True), False)
    y = OPS.conv2d(x.detach(), w.detach(), b.detach(), *geometry, True, "ieee", False, False, None, None, False)
    dy = _x(*y.shape, channels_last=True)
    yield "conv2d_output_grad", OPS.conv2d_output_grad, (dy, y, True, torch.float32)
    yield "conv2d_output_grad/fp32-of-bf16", OPS.conv2d_output_grad, (dy.bfloat16(), y.bfloat16(), True,
                                                                      torch.float32)
    yield "conv2d_input_grad", OPS.conv2d_input_grad, (dy, w.detach(), [2, 8, 9, 9], *geometry, True, "ieee", None)
    yield "conv2d_input_grad/relu-input", OPS.conv2d_input_grad, (dy, w.detach(), [2, 8, 9, 9], *geometry, True,
                                                                  "ieee", torch.relu(x.detach()))
    yield "conv2d_input_grad_and_bias_grad", OPS.conv2d_input_grad_and_bias_grad, (
        dy, w.detach(), torch.relu(x.detach()), torch.float32, *geometry, True, "ieee")
    yield "conv2d_weight_grad", OPS.conv2d_weight_grad, (dy, x.detach(), [12, 4, 5, 5], *geometry, False, "ieee",
                                                          torch.float32)
    yield "conv2d_weight_grad/fp32-of-bf16", OPS.conv2d_weight_grad, (dy.bfloat16(), x16.detach(), [12, 4, 5, 5],
                                                                      *geometry, False, "ieee", torch.float32)
    x1, w1 = _x(2, 3, 31, 31, channels_last=True, requires_grad=True), _x(8, 3, 11, 11, requires_grad=True)
    depth = conv_op._depth_fields(conv.conv2d_depth(x1, w1.shape, 4, 0, 1, 1, torch.float32, "tf32"))
    yield "conv2d_depth/conv1", OPS.conv2d_depth, (x1, w1, _x(8, requires_grad=True), depth, torch.float32, True,
                                                    "tf32")
    y1, x_d = OPS.conv2d_depth(x1.detach(), w1.detach(), None, depth, torch.float32, True, "tf32")
    yield "conv2d_depth_formed/conv1", OPS.conv2d_depth_formed, (x_d, w1, _x(8, requires_grad=True), depth, True,
                                                                  "tf32")
    dy1 = _x(*y1.shape, channels_last=True)
    yield "conv2d_depth_input_grad", OPS.conv2d_depth_input_grad, (dy1, w1.detach(), depth, [2, 3, 31, 31], True,
                                                                   torch.float32, "tf32")
    yield "conv2d_depth_weight_grad", OPS.conv2d_depth_weight_grad, (dy1, x_d, depth, [8, 3, 11, 11], False,
                                                                     torch.float32, "tf32")


SAMPLES = [*_samples(), *_gemm_samples(), *_conv_samples()]


@pytest.mark.parametrize("label,op,args", SAMPLES, ids=[s[0] for s in SAMPLES])
def test_opcheck(label, op, args):
    torch.library.opcheck(op, args)


def test_every_operator_is_checked():
    checked = {op._qualified_op_name.split("::")[1] for _, op, _ in SAMPLES}
    assert checked == set(library.IMPLEMENTATIONS)


@pytest.mark.parametrize("name", sorted(n for n in library.IMPLEMENTATIONS if n.endswith(("_grad", "_backward"))))
def test_a_backward_passs_operator_refuses_its_own_gradient(name):
    """The gradient operators have no derivative of their own: differentiating through one raises, never a silent
    zero (their Python autograd kernel; without one PyTorch would only warn)."""
    label, op, args = next(s for s in SAMPLES if s[1]._qualified_op_name.endswith(f"::{name}"))
    args = tuple(a.detach().clone().requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point()
                 else a for a in args)
    output = op(*args)
    output = output if isinstance(output, torch.Tensor) else output[0]
    with pytest.raises(RuntimeError, match=f"backward through alexnet_triton.{name}.* no autograd formula"):
        output.sum().backward()
