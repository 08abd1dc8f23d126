"""linear (+ fused ReLU and dropout) on the Triton kernels against F.linear: output and every gradient."""

from __future__ import annotations

import copy
import importlib

import pytest
import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from conftest import assert_close, assert_low_precision_close
from test_dropout import philox_keep

from alexnet_triton import nn, ops
from alexnet_triton.kernels import linear as linear_kernels
from alexnet_triton.kernels import runtime
from alexnet_triton.kernels.dropout import dropout_keep, dropout_scale
from alexnet_triton.kernels.linear import _flat_index
from alexnet_triton.parity import assert_tf32_close

linear_op = importlib.import_module("alexnet_triton.ops.linear")  # (alexnet_triton.ops.linear: the function)

# (batch, in_features, out_features): AlexNet's fc6/fc7/fc8 (9216 -> 4096 -> 4096 -> 1000) / 32 at batch 8,
# and odd shapes: batch 1, sizes that are multiples of no block, more rows/features than one interpreter block.
ALEXNET_LAYERS = [pytest.param((8, 9216 // 32, 4096 // 32), id="fc6"),
                  pytest.param((8, 4096 // 32, 4096 // 32), id="fc7"),
                  pytest.param((8, 4096 // 32, 1000 // 32), id="fc8")]
ODD_SHAPES = [pytest.param((1, 37, 23), id="batch1-37to23"),
              pytest.param((3, 37, 23), id="batch3-37to23"),
              pytest.param((130, 131, 9), id="rows-and-features-over-a-block")]


def make_inputs(shape, dtype=torch.float32, seed=0):
    """Fresh random x, weight (scaled by 1/sqrt(in_features)), bias, all requiring grad."""
    batch, fan_in, fan_out = shape
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, fan_in, generator=gen)
    w = torch.randn(fan_out, fan_in, generator=gen) / fan_in ** 0.5
    b = torch.randn(fan_out, generator=gen)
    return [t.to(dtype).requires_grad_() for t in (x, w, b)]


def torch_linear(x, w, b, relu):
    y = F.linear(x, w, b)
    return F.relu(y) if relu else y


def upstream(y):
    return torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(y.dtype)


def run_both(x, w, b, relu, no_torch_fallback, precision="ieee"):
    """(triton outputs, torch outputs, dy): y, dx, dw, db for the same upstream gradient dy."""
    with no_torch_fallback():
        y = ops.linear(x, w, b, relu=relu, precision=precision)
        dy = upstream(y)
        grads = torch.autograd.grad(y, (x, w, b), dy)
    y_ref = torch_linear(x, w, b, relu)
    return (y, *grads), (y_ref, *torch.autograd.grad(y_ref, (x, w, b), dy)), dy


@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@pytest.mark.parametrize("shape", ALEXNET_LAYERS + ODD_SHAPES)
def test_fp32_against_f_linear(shape, relu, no_torch_fallback):
    ours, ref, _ = run_both(*make_inputs(shape), relu, no_torch_fallback)
    for name, a, e in zip(("y", "dx", "dw", "db"), ours, ref, strict=True):
        assert_close(a, e, name)


def test_without_bias_and_with_strided_operands(no_torch_fallback):
    """No bias; x a column slice and weight a transpose (indexed through strides, never copied)."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(6, 50, generator=gen)[:, 3:40].requires_grad_()
    w = torch.randn(37, 23, generator=gen).t().requires_grad_()
    with no_torch_fallback():
        y = ops.linear(x, w, relu=True)
        grads = torch.autograd.grad(y, (x, w), upstream(y))
    y_ref = torch_linear(x, w, None, True)
    grads_ref = torch.autograd.grad(y_ref, (x, w), upstream(y))
    for name, a, e in zip(("y", "dx", "dw"), (y, *grads), (y_ref, *grads_ref), strict=True):
        assert_close(a, e, name)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("shape", [ALEXNET_LAYERS[0], ALEXNET_LAYERS[2], ODD_SHAPES[0]])
def test_low_precision_against_fp64(shape, dtype, no_torch_fallback):
    """fp16/bf16 (tensor-core path) forward with ReLU and backward without it, vs an fp64 reference.

    Backward runs without the ReLU: where a rounded output sits at 0 the mask
    legitimately differs between precisions (the mask is tested below).
    """
    x, w, b = make_inputs(shape, dtype)
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    with no_torch_fallback():
        y_relu = ops.linear(x, w, b, relu=True)
    assert_low_precision_close(y_relu, torch_linear(x, w, b, True), torch_linear(x64, w64, b64, True), "y")
    ours, ref, dy = run_both(x, w, b, False, no_torch_fallback)
    y64 = torch_linear(x64, w64, b64, False)
    refs64 = (y64, *torch.autograd.grad(y64, (x64, w64, b64), dy.double()))
    for name, a, e, e64 in zip(("y", "dx", "dw", "db"), ours, ref, refs64, strict=True):
        assert a.dtype == dtype
        assert_low_precision_close(a, e, e64, name)


def test_tf32_precision_runs_and_stays_close(no_torch_fallback):
    """precision="tf32" (tensor cores on a GPU; exact in the interpreter) within TF32's error."""
    x, w, b = make_inputs((8, 288, 128))
    ours, ref, _ = run_both(x, w, b, True, no_torch_fallback, precision="tf32")
    for name, a, e in zip(("y", "dx", "dw", "db"), ours, ref, strict=True):
        assert_tf32_close(a, e, name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
def test_masks_in_backward_kernels(dtype):
    """dx, dw, db use dy' = dy * scale * (y > 0) with y given exactly (ReLU, with and without dropout), and
    dy * scale * keep with the mask regenerated from the seed (dropout alone), at every dtype."""
    x, w, _ = (t.detach() for t in make_inputs((8, 96, 40), dtype))
    gen = torch.Generator().manual_seed(5)
    dy = torch.randn(8, 40, generator=gen).to(dtype)
    y = torch.randn(8, 40, generator=gen).to(dtype)  # about half positive
    p, seed = 0.25, 77
    keep = ops.dropout(torch.ones(8, 40), p, True, seed=seed) != 0
    scale = 1 / (1 - p)
    cases = {"relu": (dict(y=y), dy.double() * (y > 0)),
             "relu+dropout": (dict(y=y, dropout=p, seed=seed), dy.double() * (y > 0) * scale),
             "dropout": (dict(dropout=p, seed=seed), dy.double() * keep * scale)}
    for case, (masks, masked64) in cases.items():
        dx = linear_kernels.linear_input_grad(dy, w, **masks)
        dw, db = linear_kernels.linear_weight_grad(dy, x, **masks)
        for name, ours, ref64 in (("dx", dx, masked64 @ w.double()), ("dw", dw, masked64.t() @ x.double()),
                                  ("db", db, masked64.sum(0))):
            scale64 = ref64.abs().max().item()
            error = (ours.double() - ref64).abs().max().item()
            tolerance = 1e-5 if dtype == torch.float32 else 2 * torch.finfo(dtype).eps
            assert error <= tolerance * scale64, f"{case} {name}: error {error:.3g} vs scale {scale64:.3g}"


@pytest.mark.parametrize("relu", [False, True], ids=["dropout", "relu+dropout"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
def test_fused_dropout_equals_the_standalone_op(dtype, relu, no_torch_fallback):
    """linear(relu, dropout=p, seed=s) == dropout(linear(relu), p, seed=s) bitwise, output and gradients; the
    fused kernels read s from a tensor (as a drawn seed reaches them), the standalone op gets it as an int."""
    x, w, b = make_inputs((6, 72, 40), dtype)
    p, seed = 0.5, 4242
    with no_torch_fallback():
        fused = ops.linear(x, w, b, relu=relu, dropout=p, seed=torch.tensor([seed]))
        composed = ops.dropout(ops.linear(x, w, b, relu=relu), p, True, seed=seed)
        dy = upstream(fused)
        fused_grads = torch.autograd.grad(fused, (x, w, b), dy)
        composed_grads = torch.autograd.grad(composed, (x, w, b), dy)
    assert torch.equal(fused, composed)
    for name, a, e in zip(("dx", "dw", "db"), fused_grads, composed_grads, strict=True):
        assert torch.equal(a, e), name
    kept = (fused != 0).float().mean().item()
    assert 0.3 < kept * (2 if relu else 1) < 0.7, kept  # about half kept (and, with ReLU, half positive)


def test_fused_dropout_against_pytorch_with_the_same_mask(no_torch_fallback):
    """fp32 parity with F.relu(F.linear) * keep / (1-p), the mask taken from the standalone op."""
    x, w, b = make_inputs((8, 288, 128))
    p, seed = 0.3, 99
    with no_torch_fallback():
        y = ops.linear(x, w, b, relu=True, dropout=p, seed=seed)
        dy = upstream(y)
        grads = torch.autograd.grad(y, (x, w, b), dy)
        keep = ops.dropout(torch.ones(y.shape), p, True, seed=seed) != 0
    y_ref = torch_linear(x, w, b, True) * keep / (1 - p)
    grads_ref = torch.autograd.grad(y_ref, (x, w, b), dy)
    for name, a, e in zip(("y", "dx", "dw", "db"), (y, *grads), (y_ref, *grads_ref), strict=True):
        assert_close(a, e, name)


@triton.jit
def _dropout_index_kernel(seed_ptr, flat_ptr, keep_ptr, row0, N, p, SMALL_Y: tl.constexpr, ROWS: tl.constexpr,
                          COLS: tl.constexpr):
    """flat_ptr (int64), keep_ptr (int8) [ROWS, COLS]: the forward epilogue's dropout index of rows row0.. and
    columns 0.. of a [*, N] output, and its keep mask."""
    n = tl.arange(0, COLS)
    flat = _flat_index(row0 + tl.arange(0, ROWS), n, N, SMALL_Y)
    tile = tl.arange(0, ROWS)[:, None] * COLS + n[None, :]
    tl.store(flat_ptr + tile, flat)
    tl.store(keep_ptr + tile, dropout_keep(tl.load(seed_ptr), flat, p).to(tl.int8))


def test_dropout_index_beyond_int32(no_torch_fallback):
    """The forward's int64 dropout indices (y of 2**31 elements or more), on rows of a [*, 4099] y around
    2**31: y's exact flat index, and the standalone op's mask there (its numpy Philox, a seed above 2**32);
    the int32 indices (SMALL_Y) would wrap."""
    N, rows, cols, p, seed = 4099, 4, 16, 0.5, 2**33 + 5
    row0 = 2**31 // N - 1
    expected = (row0 + torch.arange(rows))[:, None] * N + torch.arange(cols)[None, :]
    assert expected.min() < 2**31 < expected.max()
    found = {}
    for small_y in (False, True):
        flat, keep = torch.empty(rows, cols, dtype=torch.int64), torch.empty(rows, cols, dtype=torch.int8)
        _dropout_index_kernel[(1,)](torch.tensor([seed]), flat, keep, row0, N, p, SMALL_Y=small_y, ROWS=rows,
                                    COLS=cols)
        found[small_y] = flat, keep
    assert torch.equal(found[False][0], expected)
    assert torch.equal(found[False][1] != 0, philox_keep(seed, expected, p))
    assert not torch.equal(found[True][0], expected)


def test_dropout_seed_drawn_from_torch_generator(no_torch_fallback):
    x, w, b = (t.detach() for t in make_inputs((4, 37, 23)))
    with no_torch_fallback():
        torch.manual_seed(1)
        first = ops.linear(x, w, b, relu=True, dropout=0.5)
        torch.manual_seed(1)
        again = ops.linear(x, w, b, relu=True, dropout=0.5)
    assert torch.equal(first, again)


@pytest.mark.parametrize("case", ["relu", "relu+dropout", "dropout"])
def test_gradcheck_float64(case):
    x, w, b = make_inputs((3, 7, 5), torch.float64, seed=7)
    options = dict(relu="relu" in case, dropout=0.4 if "dropout" in case else 0.0, seed=13)
    assert torch.autograd.gradcheck(lambda x, w, b: ops.linear(x, w, b, **options), (x, w, b), fast_mode=True)


SHIPPED_CONFIGS = [
    pytest.param(kernel, config, id=f"{kernel}-{runtime.config_name(config)}")
    for kernel, configs in (("forward", linear_kernels.FORWARD_CONFIGS),
                            ("input_grad", linear_kernels.INPUT_GRAD_CONFIGS),
                            ("weight_grad", linear_kernels.WEIGHT_GRAD_CONFIGS))
    for config in configs.shipped()]


@pytest.mark.parametrize("kernel, config", SHIPPED_CONFIGS)
def test_every_shipped_config(kernel, config):
    """Each GPU config of each linear kernel computes the right result (several tiles and swizzle groups)."""
    x, w, b = (t.detach() for t in make_inputs((70, 100, 150)))
    y_ref = torch_linear(x, w, b, True)
    dy = upstream(y_ref)
    dy_masked = dy * (y_ref > 0)
    if kernel == "forward":
        assert_close(linear_kernels.linear_forward(x, w, b, relu=True, config=config), y_ref, "y")
    elif kernel == "input_grad":
        assert_close(linear_kernels.linear_input_grad(dy, w, y=y_ref, config=config), dy_masked @ w, "dx")
        relu_x = x.relu()  # the tile's epilogue masking dx by its input (``relu_input``)
        assert_close(linear_kernels.linear_input_grad(dy, w, y=y_ref, config=config, relu_input=relu_x,
                                                      relu_input_dropout=0.5), (dy_masked @ w) * (relu_x > 0) * 2,
                     "dx masked")
    else:
        dw, db = linear_kernels.linear_weight_grad(dy, x, y=y_ref, config=config)
        assert_close(dw, dy_masked.t() @ x, "dw")
        assert_close(db, dy_masked.sum(0), "db")


@pytest.mark.parametrize("dropout", [0.0, 0.5], ids=["relu", "relu+dropout"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=["fp32", "bf16", "fp64"])
@pytest.mark.parametrize("shape", [ALEXNET_LAYERS[1], ODD_SHAPES[2]])
def test_input_grad_masked_by_a_relu_input(shape, dtype, dropout):
    """``relu_input``: dx masked by x > 0 and scaled by the dropout's 1/(1-p) in the input gradient's epilogue (x a
    ReLU's output, half of it 0): bitwise the unmasked dx masked as the layer before's backward masks its dy, and
    PyTorch's within its dtype's rounding; dy, weight and relu_input strided views."""
    batch, fan_in, fan_out = shape
    gen = torch.Generator().manual_seed(11)
    dy = torch.randn(fan_out, batch, generator=gen).to(dtype).t()
    w = (torch.randn(fan_out, 2 * fan_in, generator=gen) / fan_in ** 0.5).to(dtype)[:, ::2]
    x = torch.randn(batch, fan_in + 3, generator=gen).relu().to(dtype)[:, 3:]
    plain = linear_kernels.linear_input_grad(dy, w)
    dx = linear_kernels.linear_input_grad(dy, w, relu_input=x, relu_input_dropout=dropout)
    scale = dropout_scale(dropout, dtype)
    accumulated = torch.float64 if dtype == torch.float64 else torch.float32
    assert torch.equal(dx, torch.where(x > 0, plain.to(accumulated) * scale, 0.0).to(dtype))
    reference = (dy.double() @ w.double()) * (x > 0) / (1 - dropout)
    error = (dx.double() - reference).abs().max().item()
    tolerance = {torch.float64: 1e-12, torch.float32: 1e-5}.get(dtype, 2 * torch.finfo(dtype).eps)
    assert error <= tolerance * reference.abs().max().item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("dropout", [0.0, 0.5], ids=["relu", "relu+dropout"])
def test_a_linear_relu_hands_its_mask_to_the_next_linear(dropout, dtype, monkeypatch, no_torch_fallback):
    """fc6 -> ReLU (-> dropout) -> fc7 -> ReLU -> fc8 (scaled), each hand-over with ``relu_masked_by_next`` on the
    first and ``relu_input`` on the second: output and all seven gradients bitwise those without the hand-over and
    as PyTorch's (the same dropout mask); with it, no backward GEMM reads y or regenerates a mask (fc6's and fc7's
    masks are applied in fc7's and fc8's input-gradient epilogues)."""
    gen = torch.Generator().manual_seed(21)
    sizes = [9216 // 64, 4096 // 64, 4096 // 64, 1000 // 64]
    x = torch.randn(6, sizes[0], generator=gen).to(dtype).requires_grad_()
    params = [t.to(dtype).requires_grad_() for fan_in, fan_out in zip(sizes, sizes[1:], strict=False)
              for t in (torch.randn(fan_out, fan_in, generator=gen) / fan_in ** 0.5,
                        torch.randn(fan_out, generator=gen))]
    seeds = [torch.tensor([6]), torch.tensor([7])]
    masks, input_grad, weight_grad = [], linear_op._linear_input_grad, linear_op._linear_weight_grad
    monkeypatch.setattr(linear_op, "_linear_input_grad", lambda dy, w, y, p, seed, precision, relu_input, input_p:
                        masks.append((y is not None or p > 0, relu_input is not None, input_p))
                        or input_grad(dy, w, y, p, seed, precision, relu_input, input_p))
    monkeypatch.setattr(linear_op, "_linear_weight_grad", lambda dy, x, y, p, seed, *rest:
                        masks.append((y is not None or p > 0,)) or weight_grad(dy, x, y, p, seed, *rest))

    def net(hand_over):
        w6, b6, w7, b7, w8, b8 = params
        h = ops.linear(x, w6, b6, relu=True, dropout=dropout, seed=seeds[0], relu_masked_by_next=hand_over)
        h = ops.linear(h, w7, b7, relu=True, dropout=dropout, seed=seeds[1], relu_input=hand_over,
                       relu_input_dropout=dropout if hand_over else 0.0, relu_masked_by_next=hand_over)
        return ops.linear(h, w8, b8, relu_input=hand_over, relu_input_dropout=dropout if hand_over else 0.0)
    dy = torch.randn(6, sizes[-1], generator=gen).to(dtype)
    results = {}
    for hand_over in (False, True):
        masks.clear()
        with no_torch_fallback():
            y = net(hand_over)
            results[hand_over] = (y, *torch.autograd.grad(y, (x, *params), dy))
        launched = list(masks)
    # backward, fc8 first: input gradient (masks dy?, masks dx?, its dropout), weight gradient (masks dy?)
    assert launched == [(False, True, dropout), (False,), (False, True, dropout), (False,), (False, False, 0.0),
                        (False,)]
    for name, a, e in zip(("y", "dx", "dw6", "db6", "dw7", "db7", "dw8", "db8"), results[True], results[False],
                          strict=True):
        assert torch.equal(a, e), name

    def reference(x, w6, b6, w7, b7, w8, b8):
        keeps = [ops.dropout(torch.ones(6, w.shape[0]), dropout, True, seed=s).double() if dropout else 1.0
                 for w, s in ((w6, seeds[0]), (w7, seeds[1]))]  # kept: 1/(1-p)
        h = F.relu(F.linear(x, w6, b6)) * keeps[0]
        return F.linear(F.relu(F.linear(h, w7, b7)) * keeps[1], w8, b8)
    operands64 = [t.detach().double().requires_grad_() for t in (x, *params)]
    y64 = reference(*operands64)
    grads64 = torch.autograd.grad(y64, operands64, dy.double())
    for name, a, e64 in zip(("y", "dx", "dw6", "db6", "dw7", "db7", "dw8", "db8"), results[True], (y64, *grads64),
                            strict=True):
        error = (a.double() - e64).abs().max().item()
        tolerance = 1e-5 if dtype == torch.float32 else 8 * torch.finfo(dtype).eps
        assert error <= tolerance * e64.abs().max().item(), name


def test_linear_relu_hand_over_refuses_what_it_cannot_do():
    """relu_masked_by_next without a ReLU, relu_input_dropout without relu_input or out of [0, 1], a relu_input of
    the wrong shape or dtype: one clear error each."""
    x, w = torch.randn(3, 5), torch.randn(4, 5)
    with pytest.raises(ValueError, match=r"^linear: relu_masked_by_next needs relu=True"):
        ops.linear(x, w, relu_masked_by_next=True)
    with pytest.raises(ValueError, match=r"^linear: relu_input_dropout=0.5 needs relu_input=True"):
        ops.linear(x, w, relu_input_dropout=0.5)
    with pytest.raises(ValueError, match=r"between 0 and 1, but got 1.5"):
        ops.linear(x, w, relu_input=True, relu_input_dropout=1.5)
    dy = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"^linear_input_grad: relu_input must have shape \(3, 5\) and dtype "
                                         r"torch.float32, got \(3, 4\) torch.float32"):
        linear_kernels.linear_input_grad(dy, w, relu_input=x[:, :4])
    with pytest.raises(ValueError, match=r"^linear_input_grad: relu_input must have .* got \(3, 5\) torch.float64"):
        linear_kernels.linear_input_grad(dy, w, relu_input=x.double())


def test_the_module_hands_its_relu_to_the_next_linear_in_training_and_eval(no_torch_fallback):
    """nn.Linear.mask_relu_of: the dropout the next layer's epilogue scales by is the one the first applied in this
    call (none in eval mode); the gradients are those of the same modules without the hand-over, in both modes."""
    torch.manual_seed(3)
    plain = torch.nn.Sequential(nn.Linear(12, 10, relu=True, dropout=0.5), nn.Linear(10, 4))
    handed = copy.deepcopy(plain)
    handed[1].mask_relu_of(handed[0])
    assert handed[0].relu_masked_by_next and not list(handed[1].children())
    assert "relu_input=True" in repr(handed[1]) and "relu_masked_by_next=True" in repr(handed[0])
    x = torch.randn(5, 12)
    for training in (True, False):
        grads = []
        for model in (plain, handed):
            model.train(training)
            torch.manual_seed(8)  # the same dropout seeds drawn
            with no_torch_fallback():
                y = model(x)
                grads.append([y, *torch.autograd.grad(y.square().sum(), list(model.parameters()))])
        for a, e in zip(*grads, strict=True):
            assert torch.equal(a, e)
    with pytest.raises(ValueError, match=r"^Linear.mask_relu_of: the linear before it must have relu=True"):
        nn.Linear(4, 4).mask_relu_of(nn.Linear(4, 4))


def test_weight_and_bias_grads_are_deterministic():
    x, w, _ = (t.detach() for t in make_inputs((130, 131, 9)))
    dy = torch.randn(130, 9, generator=torch.Generator().manual_seed(4))
    first = linear_kernels.linear_weight_grad(dy, x)
    again = linear_kernels.linear_weight_grad(dy, x)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


def test_only_needed_gradients_are_computed(monkeypatch):
    """An input that needs no gradient gets no input-gradient launch."""
    calls = []
    monkeypatch.setattr(importlib.import_module("alexnet_triton.ops.linear"), "linear_input_grad",
                        lambda *a, **k: calls.append(1))
    x, w, b = make_inputs((4, 37, 23))
    ops.linear(x.detach(), w, b, relu=True).sum().backward()
    assert calls == [] and w.grad is not None and b.grad is not None


def test_guard_catches_torch_linear_and_dropout(no_torch_fallback):
    """The fallback guard itself works: PyTorch's matmul and dropout inside it fail."""
    x, w = torch.randn(2, 3), torch.randn(4, 3)
    for fallback in (lambda: F.linear(x, w), lambda: torch.nn.Linear(3, 4)(x), lambda: x @ w.t(),
                     lambda: F.dropout(x, 0.5), lambda: torch.nn.Dropout(0.5)(x)):
        with no_torch_fallback(), pytest.raises(AssertionError, match="inside the Triton path"):
            fallback()


BAD_INPUTS = [
    ("feature mismatch", dict(x=(2, 5)), ValueError, r"x shape \(2, 5\) has 5 features, but weight shape \(4, 3\)"),
    ("feature mismatch 3-D", dict(x=(2, 2, 5)), ValueError, r"x shape \(2, 2, 5\) has 5 features"),
    ("0-D x", dict(x=()), ValueError, r"x must have at least 1 dimension"),
    ("3-D weight", dict(w=(1, 4, 3)), ValueError, r"weight must be 2-D"),
    ("bias of two dims", dict(b=(2, 4)), ValueError, r"bias must have shape \(4,\), got \(2, 4\)"),
    ("integer x", dict(x_dtype=torch.int64, w_dtype=torch.int64), TypeError, r"x has dtype torch.int64"),
    ("dtype mismatch", dict(w_dtype=torch.float16), TypeError, r"float32.*float16"),
    ("bias shape", dict(b=(5,)), ValueError, r"bias must have shape \(4,\), got \(5,\)"),
    ("device", dict(device="meta"), ValueError, r"x \(meta\), weight \(cpu\) and bias \(cpu\) must be on one device"),
    ("dropout above 1", dict(dropout=1.2), ValueError, r"between 0 and 1, but got 1.2"),
    ("dropout below 0", dict(dropout=-0.5), ValueError, r"between 0 and 1, but got -0.5"),
    ("bad seed", dict(dropout=0.5, seed=-3), ValueError, r"seed must be in"),
    ("bad precision", dict(precision="fp8"), ValueError, r"precision must be one of"),
    ("fp32 master weight, fp16 bias", dict(x_dtype=torch.float16, b_dtype=torch.float16), TypeError,
     r"x \(torch.float16\), weight \(torch.float32\) and bias \(torch.float16\) must have one dtype"),
    ("fp32 master weight, device", dict(x_dtype=torch.float16, device="meta"), ValueError,
     r"x \(meta\) and weight \(cpu\) must be on one device"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_rejected_with_a_clear_error(case):
    _, spec, error, message = case
    x = torch.randn(spec.get("x", (2, 3))).to(spec.get("x_dtype", torch.float32))
    w = torch.randn(spec.get("w", (4, 3))).to(spec.get("w_dtype", torch.float32))
    b = torch.randn(spec.get("b", (4,))).to(spec.get("b_dtype", torch.float32))
    if "device" in spec:
        x = x.to(spec["device"])
    with pytest.raises(error, match=message):
        ops.linear(x, w, b, dropout=spec.get("dropout", 0.0), seed=spec.get("seed"),
                   precision=spec.get("precision", "ieee"))


def test_fp32_gradients_only_for_low_precision_inputs():
    """grad_dtype float32 (master parameters) needs an fp16/bf16 x; a master weight needs an fp16/bf16 dy."""
    dy, x, w = torch.randn(3, 4), torch.randn(3, 5), torch.randn(4, 5)
    with pytest.raises(TypeError, match=r"grad_dtype must be x's dtype \(torch.float32\) or, with an fp16/bf16 x"):
        linear_kernels.linear_weight_grad(dy, x, grad_dtype=torch.float16)
    with pytest.raises(ValueError, match=r"dy must have shape \(3, 4\) and dtype torch.float16"):
        linear_kernels.linear_input_grad(dy.double(), w.half())


def test_strided_bias(no_torch_fallback):
    """A bias that is a view with stride 2 is read through its stride (it was read as contiguous once)."""
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(5, 12, generator=gen, requires_grad=True)
    w = torch.randn(9, 12, generator=gen, requires_grad=True)
    b = torch.randn(9, 2, generator=gen)[:, 1].requires_grad_()
    with no_torch_fallback():
        y = ops.linear(x, w, b, relu=True)
        grads = torch.autograd.grad(y, (x, w, b), upstream(y))
    y_ref = torch_linear(x, w, b, True)
    grads_ref = torch.autograd.grad(y_ref, (x, w, b), upstream(y))
    for name, a, e in zip(("y", "dx", "dw", "db"), (y, *grads), (y_ref, *grads_ref), strict=True):
        assert_close(a, e, name)


# x shapes [*, in_features] that F.linear takes beyond a matrix; each with 3 input features.
LEADING_DIMS = [pytest.param((3,), id="1d"), pytest.param((2, 5, 3), id="3d"),
                pytest.param((2, 1, 2, 1, 3), id="5d"), pytest.param((2, 0, 3), id="3d-empty-batch")]


def leaf(shape, dtype=torch.float32, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype).requires_grad_()


def check_against_f_linear(x, w, b, no_torch_fallback, **options):
    """ops.linear against F.linear (+ ReLU): output shape and values, and every gradient, with a random dy."""
    leaves = [t for t in (x, w, b) if t is not None]
    with no_torch_fallback():
        y = ops.linear(x, w, b, **options)
        dy = upstream(y)
        grads = torch.autograd.grad(y, leaves, dy)
    y_ref = torch_linear(x, w, b, options.get("relu", False))
    grads_ref = torch.autograd.grad(y_ref, leaves, dy)
    assert y.shape == y_ref.shape
    for name, a, e in zip(("y", "dx", "dw", "db")[:1 + len(leaves)], (y, *grads), (y_ref, *grads_ref), strict=True):
        assert_close(a, e, name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@pytest.mark.parametrize("x_shape", LEADING_DIMS)
def test_leading_dimensions(x_shape, relu, dtype, no_torch_fallback):
    check_against_f_linear(leaf(x_shape, dtype), leaf((4, 3), dtype, 1), leaf((4,), dtype, 2), no_torch_fallback,
                           relu=relu)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("x_shape, w_shape, b_shape", [
    pytest.param((0, 3), (4, 3), (4,), id="no-rows"),
    pytest.param((2, 3), (0, 3), (0,), id="no-outputs"),
    pytest.param((2, 0), (4, 0), (4,), id="no-inputs-is-the-bias"),
    pytest.param((2, 3, 0), (4, 0), None, id="no-inputs-no-bias"),
    pytest.param((0, 0), (4, 0), (4,), id="nothing"),
])
def test_empty_operands(x_shape, w_shape, b_shape, dtype, no_torch_fallback):
    b = None if b_shape is None else leaf(b_shape, dtype, 2)
    check_against_f_linear(leaf(x_shape, dtype), leaf(w_shape, dtype, 1), b, no_torch_fallback)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("x_shape, w_shape, b_shape", [
    pytest.param((2, 5), (5,), None, id="vector-weight"),
    pytest.param((5,), (5,), None, id="vector-x-vector-weight"),
    pytest.param((2, 3, 5), (4, 5), (), id="0d-bias"),
    pytest.param((2, 5), (4, 5), (1,), id="one-element-bias"),
])
def test_broadcast_weight_and_bias(x_shape, w_shape, b_shape, dtype, no_torch_fallback):
    """F.linear's 1-D weight (one output feature, dimension dropped) and a one-element bias."""
    b = None if b_shape is None else leaf(b_shape, dtype, 2)
    check_against_f_linear(leaf(x_shape, dtype), leaf(w_shape, dtype, 1), b, no_torch_fallback, relu=True)


@pytest.mark.parametrize("case", ["relu", "relu+dropout", "dropout"])
@pytest.mark.parametrize("x_shape", [(2, 3, 7), (7,)], ids=["3d", "1d"])
def test_gradcheck_float64_leading_dimensions(x_shape, case):
    x, w, b = leaf(x_shape, torch.float64), leaf((5, 7), torch.float64, 1), leaf((5,), torch.float64, 2)
    options = dict(relu="relu" in case, dropout=0.4 if "dropout" in case else 0.0, seed=13)
    assert torch.autograd.gradcheck(lambda x, w, b: ops.linear(x, w, b, **options), (x, w, b), fast_mode=True)


def test_gradcheck_float64_empty_and_vector_weight():
    x, w, b = leaf((3, 0), torch.float64), leaf((4, 0), torch.float64, 1), leaf((4,), torch.float64, 2)
    assert torch.autograd.gradcheck(lambda x, w, b: ops.linear(x, w, b, relu=True), (x, w, b), fast_mode=True)
    x, w = leaf((2, 3, 5), torch.float64), leaf((5,), torch.float64, 1)
    assert torch.autograd.gradcheck(lambda x, w: ops.linear(x, w), (x, w), fast_mode=True)


@pytest.mark.parametrize("relu", [False, True], ids=["dropout", "relu+dropout"])
def test_fused_dropout_with_leading_dimensions_equals_the_standalone_op(relu, no_torch_fallback):
    """The fused mask is ops.dropout's on the output's shape [*, out_features], bitwise."""
    x, w, b = leaf((2, 3, 72)), leaf((40, 72), seed=1), leaf((40,), seed=2)
    with no_torch_fallback():
        fused = ops.linear(x, w, b, relu=relu, dropout=0.5, seed=31)
        composed = ops.dropout(ops.linear(x, w, b, relu=relu), 0.5, True, seed=31)
        dy = upstream(fused)
        fused_grads = torch.autograd.grad(fused, (x, w, b), dy)
        composed_grads = torch.autograd.grad(composed, (x, w, b), dy)
    assert fused.shape == (2, 3, 40) and torch.equal(fused, composed)
    for name, a, e in zip(("dx", "dw", "db"), fused_grads, composed_grads, strict=True):
        assert torch.equal(a, e), name


def test_strided_operands_with_leading_dimensions(no_torch_fallback):
    """x a 3-D view whose leading dimensions do not merge (read through a copy), weight a transpose, bias every
    other element, dy a transposed cotangent: all read through their strides or copied, never as contiguous."""
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(5, 2, 40, generator=gen).transpose(0, 1)[:, :, 3:40].requires_grad_()
    w = torch.randn(37, 23, generator=gen).t().requires_grad_()
    b = torch.randn(23, 2, generator=gen)[:, 1].requires_grad_()
    dy = torch.randn(23, 5, 2, generator=gen).permute(2, 1, 0)
    assert not (x.is_contiguous() or w.is_contiguous() or b.is_contiguous() or dy.is_contiguous())
    with no_torch_fallback():
        y = ops.linear(x, w, b, relu=True)
        grads = torch.autograd.grad(y, (x, w, b), dy)
    y_ref = torch_linear(x, w, b, True)
    grads_ref = torch.autograd.grad(y_ref, (x, w, b), dy)
    for name, a, e in zip(("y", "dx", "dw", "db"), (y, *grads), (y_ref, *grads_ref), strict=True):
        assert_close(a, e, name)


def test_stride_zero_gradient(no_torch_fallback):
    """The cotangent of a sum is an expanded (stride-0) dy: read through its zero strides."""
    x, w, b = leaf((2, 3, 7)), leaf((5, 7), seed=1), leaf((5,), seed=2)
    with no_torch_fallback():
        grads = torch.autograd.grad(ops.linear(x, w, b, relu=True).sum(), (x, w, b))
    grads_ref = torch.autograd.grad(torch_linear(x, w, b, True).sum(), (x, w, b))
    for name, a, e in zip(("dx", "dw", "db"), grads, grads_ref, strict=True):
        assert_close(a, e, name)


def test_backward_launchers_read_a_strided_saved_output():
    """y (the ReLU mask's source) and dy given to the backward launchers as non-contiguous views."""
    x, w, _ = (t.detach() for t in make_inputs((6, 20, 9)))
    gen = torch.Generator().manual_seed(6)
    dy = torch.randn(9, 6, generator=gen).t()
    y = torch.randn(6, 18, generator=gen)[:, ::2]  # about half positive
    masked = dy * (y > 0)
    assert_close(linear_kernels.linear_input_grad(dy, w, y=y), masked @ w, "dx")
    dw, db = linear_kernels.linear_weight_grad(dy, x, y=y)
    assert_close(dw, masked.t() @ x, "dw")
    assert_close(db, masked.sum(0), "db")


def test_module_is_a_drop_in(no_torch_fallback):
    """nn.Linear: torch.nn.Linear's constructor and state_dict, the same answers on a 3-D input."""
    reference = torch.nn.Linear(6, 4)
    ours = nn.Linear(6, 4)
    ours.load_state_dict(reference.state_dict())
    x = leaf((2, 3, 6))
    with no_torch_fallback():
        y = ours(x)
        grads = torch.autograd.grad(y, (x, ours.weight, ours.bias), upstream(y))
    y_ref = reference(x)
    grads_ref = torch.autograd.grad(y_ref, (x, reference.weight, reference.bias), upstream(y))
    for name, a, e in zip(("y", "dx", "dw", "db"), (y, *grads), (y_ref, *grads_ref), strict=True):
        assert_close(a, e, name)
    assert nn.Linear(6, 4, bias=False).state_dict().keys() == torch.nn.Linear(6, 4, bias=False).state_dict().keys()
