"""The Triton ops as custom operators: torch.library.opcheck (schema, fake tensor, autograd registration,
AOT dispatch) for every operator of the alexnet_triton namespace, on AlexNet-shaped and odd inputs."""

from __future__ import annotations

import pytest
import torch

from alexnet_triton import ops  # noqa: F401  (registers the operators)
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
    for label, x in (("pool1", _x(2, 12, 13, 13, requires_grad=True)),
                     ("pool1-cl", _x(2, 12, 13, 13, channels_last=True, requires_grad=True))):
        yield f"max_pool2d/{label}", OPS.max_pool2d, (x, *pool)
        yield f"max_pool2d_backward/{label}", OPS.max_pool2d_backward, (
            _x(2, 12, 6, 6), _window(OPS.max_pool2d, x, *pool), [2, 12, 13, 13], *pool, False)
        yield f"max_pool2d_indices/{label}", OPS.max_pool2d_indices, (
            _window(OPS.max_pool2d, x, *pool), [2, 12, 13, 13], *pool)
        yield f"lrn_max_pool2d/{label}", OPS.lrn_max_pool2d, (x, *block)
        window = OPS.lrn_max_pool2d(x.detach(), *block)[1]
        yield f"lrn_max_pool2d_backward/{label}", OPS.lrn_max_pool2d_backward, (_x(2, 12, 6, 6), window,
                                                                                 x.detach(), *block)
    odd = _x(3, 5, 7, 6, requires_grad=True)
    yield "max_pool2d/odd", OPS.max_pool2d, (odd, *odd_pool)
    yield "local_response_norm/conv1", OPS.local_response_norm, (_x(2, 12, 9, 9, requires_grad=True), 5, 1e-4,
                                                                 0.75, 2.0)
    yield "local_response_norm/odd-size", OPS.local_response_norm, (_x(1, 7, 5, 3, requires_grad=True), 4, 2e-3,
                                                                    0.5, 1.0)
    yield "local_response_norm_backward", OPS.local_response_norm_backward, (_x(2, 12, 9, 9), _x(2, 12, 9, 9), 5,
                                                                             1e-4, 0.75, 2.0)


SAMPLES = list(_samples())


@pytest.mark.parametrize("label,op,args", SAMPLES, ids=[s[0] for s in SAMPLES])
def test_opcheck(label, op, args):
    torch.library.opcheck(op, args)


def test_every_operator_is_checked():
    checked = {op._qualified_op_name.split("::")[1] for _, op, _ in SAMPLES}
    assert checked == set(library.IMPLEMENTATIONS)
