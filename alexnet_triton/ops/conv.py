"""conv2d with fused bias and ReLU, differentiable in x, weight and bias; a stride-b conv with few channels (AlexNet's
conv1) runs as its space-to-depth form (``kernels.conv.Depth``)."""

from __future__ import annotations

import torch

from ..kernels import checks
from ..kernels.conv import (
    Depth,
    conv2d_depth,
    conv2d_forward,
    conv2d_geometry,
    conv2d_input_grad,
    conv2d_input_grad_and_bias_grad,
    conv2d_output_grad,
    conv2d_weight_grad,
)
from ..kernels.runtime import memory_format_of
from ..precision import autocast_dtype, autocast_master_operands, compute_copy, master_parameters
from .library import kernel_op


def _padding(padding: list[int], padding_name: str):
    """The launchers' padding from the operators' pair and name ("same", "valid"; "" for the pair)."""
    return padding_name or tuple(padding)


def _layout(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def _is_channels_last(t: torch.Tensor) -> bool:
    return memory_format_of(t) is torch.channels_last


def _read_weight(weight: torch.Tensor, weight_copy: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """The weight the kernels read for a conv computing in ``dtype``: its compute copy (checked: ``dtype``, the
    weight's shape), else the weight, cast when it is the fp32 master weight of a 16-bit conv (a launch, each call,
    until the optimizer writes the copy)."""
    if weight_copy is not None:
        checks.check_weight_copy("conv2d", weight_copy, weight, dtype)
        return weight_copy
    return weight.to(dtype) if checks.is_master(weight.dtype, dtype) else weight


@kernel_op("conv2d")
def _conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: list[int], padding: list[int],
            padding_name: str, dilation: list[int], groups: int, relu: bool, precision: str, relu_input: bool,
            relu_masked_by_next: bool, weight_copy: torch.Tensor | None, relu_input_bias: torch.Tensor | None,
            bias_grad_by_next: bool) -> torch.Tensor:
    """The conv (the flags and relu_input_bias only change its backward: ``conv2d``). weight, bias: x's dtype, or
    fp32 master parameters of a 16-bit x; weight_copy: None, or the weight's compute copy
    (``precision.compute_copy``)."""
    return conv2d_forward(x, _read_weight(weight, weight_copy, x.dtype), bias, stride,
                          _padding(padding, padding_name), dilation, groups, relu, precision)


@kernel_op("conv2d_output_grad")
def _conv2d_output_grad(dy: torch.Tensor, y: torch.Tensor | None, bias_grad: bool, bias_dtype: torch.dtype
                        ) -> list[torch.Tensor]:
    """[dy * (y > 0)] when y is given, then [db] (of ``bias_dtype``) when ``bias_grad``: what was computed, in that
    order."""
    masked, db = conv2d_output_grad(dy, y, bias_grad, bias_dtype)
    return [t for t in (masked if y is not None else None, db) if t is not None]


@kernel_op("conv2d_input_grad")
def _conv2d_input_grad(dy: torch.Tensor, weight: torch.Tensor, x_shape: list[int], stride: list[int],
                       padding: list[int], padding_name: str, dilation: list[int], groups: int, channels_last: bool,
                       precision: str, relu_input: torch.Tensor | None) -> torch.Tensor:
    return conv2d_input_grad(dy, weight, x_shape, stride, _padding(padding, padding_name), dilation, groups,
                             _layout(channels_last), precision, relu_input=relu_input)


@kernel_op("conv2d_input_grad_and_bias_grad")
def _conv2d_input_grad_and_bias_grad(dy: torch.Tensor, weight: torch.Tensor, relu_input: torch.Tensor,
                                     bias_dtype: torch.dtype, stride: list[int], padding: list[int],
                                     padding_name: str, dilation: list[int], groups: int, channels_last: bool,
                                     precision: str) -> list[torch.Tensor]:
    """[dx masked by relu_input > 0, db of ``bias_dtype``: dx summed over N, H, W]."""
    return list(conv2d_input_grad_and_bias_grad(dy, weight, relu_input, bias_dtype, stride,
                                                _padding(padding, padding_name), dilation, groups,
                                                _layout(channels_last), precision))


@kernel_op("conv2d_weight_grad")
def _conv2d_weight_grad(dy: torch.Tensor, x: torch.Tensor, weight_shape: list[int], stride: list[int],
                        padding: list[int], padding_name: str, dilation: list[int], groups: int,
                        channels_last: bool, precision: str, grad_dtype: torch.dtype) -> torch.Tensor:
    """dw of dtype ``grad_dtype`` (the weight's)."""
    return conv2d_weight_grad(dy, x, weight_shape, stride, _padding(padding, padding_name), dilation, groups,
                              _layout(channels_last), precision, dtype=grad_dtype)


def _depth_fields(depth: Depth) -> list[int]:
    """A ``Depth`` as an operator argument: [block, pad, extent, size, taps] flattened."""
    return [depth.block, *depth.pad, *depth.extent, *depth.size, *depth.taps]


def _depth(fields: list[int]) -> Depth:
    block, *pairs = fields
    pad, extent, size, taps = (tuple(pairs[i:i + 2]) for i in range(0, 8, 2))
    return Depth(block=block, pad=pad, extent=extent, size=size, taps=taps)


@kernel_op("conv2d_depth")
def _conv2d_depth(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, depth: list[int],
                  dtype: torch.dtype, relu: bool, precision: str) -> list[torch.Tensor]:
    """[y, x_d]: the conv through its space-to-depth form, and x's form (saved for the weight gradient)."""
    return list(_depth(depth).forward(x, weight, bias, relu, precision, dtype))


@kernel_op("conv2d_depth_formed")
def _conv2d_depth_formed(x_d: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, depth: list[int],
                         relu: bool, precision: str) -> torch.Tensor:
    """y (channels_last) from x's space-to-depth form x_d, made before the call (``Depth.convolve``)."""
    return _depth(depth).convolve(x_d, weight, bias, relu, precision, torch.channels_last)


@kernel_op("conv2d_depth_input_grad")
def _conv2d_depth_input_grad(dy: torch.Tensor, weight: torch.Tensor, depth: list[int], x_shape: list[int],
                             channels_last: bool, dtype: torch.dtype, precision: str) -> torch.Tensor:
    return _depth(depth).input_grad(dy, weight, x_shape, _layout(channels_last), dtype, precision)


@kernel_op("conv2d_depth_weight_grad")
def _conv2d_depth_weight_grad(dy: torch.Tensor, x_d: torch.Tensor, depth: list[int], weight_shape: list[int],
                              channels_last: bool, dtype: torch.dtype, precision: str) -> torch.Tensor:
    return _depth(depth).weight_grad(dy, x_d, weight_shape, _layout(channels_last), dtype, precision)


def _output_grad(ctx, dy: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dy ReLU-masked by the saved output y, or dy itself without one; db if the bias needs it): one pass."""
    bias_grad = ctx.bias_dtype is not None and ctx.needs_input_grad[2]
    if y is None and not bias_grad:
        return dy, None
    computed = _conv2d_output_grad(dy, y, bias_grad, ctx.bias_dtype or dy.dtype)
    return computed[0] if y is not None else dy, computed[-1] if bias_grad else None


RELU_INPUT_BIAS = 13  # the index of _conv2d's input relu_input_bias


def _save(ctx, inputs, output) -> None:
    (x, weight, bias, *ctx.geometry, relu, ctx.precision, ctx.relu_input, relu_masked_by_next, weight_copy,
     relu_input_bias, bias_grad_by_next) = inputs
    ctx.save_for_backward(x, weight, weight_copy, output if relu and not relu_masked_by_next else None)
    ctx.bias_dtype = None if bias is None or bias_grad_by_next else bias.dtype
    ctx.relu_input_bias_dtype = None if relu_input_bias is None else relu_input_bias.dtype


def _backward(ctx, dy):
    x, weight, weight_copy, y = ctx.saved_tensors
    dy, db = _output_grad(ctx, dy, y)
    need_x, need_w = ctx.needs_input_grad[:2]
    dx = db_before = None
    if need_x and ctx.relu_input_bias_dtype is not None and ctx.needs_input_grad[RELU_INPUT_BIAS]:
        dx, db_before = _conv2d_input_grad_and_bias_grad(dy, _read_weight(weight, weight_copy, x.dtype), x,
                                                         ctx.relu_input_bias_dtype, *ctx.geometry,
                                                         _is_channels_last(x), ctx.precision)
    elif need_x:
        dx = _conv2d_input_grad(dy, _read_weight(weight, weight_copy, x.dtype), list(x.shape), *ctx.geometry,
                                _is_channels_last(x), ctx.precision, x if ctx.relu_input else None)
    dw = _conv2d_weight_grad(dy, x, list(weight.shape), *ctx.geometry, _is_channels_last(weight), ctx.precision,
                             weight.dtype) if need_w else None
    return dx, dw, db, None, None, None, None, None, None, None, None, None, None, db_before, None


def _save_depth(ctx, inputs, output) -> None:
    x, weight, bias, ctx.depth, _, relu, ctx.precision = inputs
    y, x_d = output
    _save_depth_context(ctx, x_d, weight, bias, y if relu else None)
    ctx.mark_non_differentiable(x_d)
    ctx.set_materialize_grads(False)  # no zero-filled gradient for x_d
    ctx.x_like = (list(x.shape), _is_channels_last(x), x.dtype)


def _save_formed(ctx, inputs, output) -> None:
    x_d, weight, bias, ctx.depth, relu, ctx.precision = inputs
    _save_depth_context(ctx, x_d, weight, bias, output if relu else None)


def _save_depth_context(ctx, x_d: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                        y: torch.Tensor | None) -> None:
    ctx.save_for_backward(x_d, weight, y)
    ctx.bias_dtype = None if bias is None else bias.dtype
    ctx.weight_like = (list(weight.shape), _is_channels_last(weight), weight.dtype)


def _depth_grads(ctx, dy: torch.Tensor, need_x: bool) -> tuple[torch.Tensor | None, ...]:
    """(dx, dw, db) of a conv run in space-to-depth form, from y's gradient; dx only with ``need_x``."""
    x_d, weight, y = ctx.saved_tensors
    dy, db = _output_grad(ctx, dy, y)
    dx = _conv2d_depth_input_grad(dy, weight, ctx.depth, *ctx.x_like, ctx.precision) if need_x else None
    dw = _conv2d_depth_weight_grad(dy, x_d, ctx.depth, *ctx.weight_like, ctx.precision) \
        if ctx.needs_input_grad[1] else None
    return dx, dw, db


def _backward_depth(ctx, grads):
    dy = grads[0]  # x_d's gradient: none (not differentiable)
    if dy is None:
        return None, None, None, None, None, None, None
    return *_depth_grads(ctx, dy, ctx.needs_input_grad[0]), None, None, None, None


def _backward_formed(ctx, dy):
    """No gradient for x_d: ``conv2d`` refuses one that needs it (the images' form, made before the step)."""
    return *_depth_grads(ctx, dy, False), None, None, None


_conv2d.register_autograd(_backward, setup_context=_save)
_conv2d_depth.register_autograd(_backward_depth, setup_context=_save_depth)
_conv2d_depth_formed.register_autograd(_backward_formed, setup_context=_save_formed)


def input_form(weight_shape, image_size: tuple[int, int], stride=1, padding=0, dilation=1, groups: int = 1, *,
               dtype: torch.dtype, precision: str = "ieee") -> Depth | None:
    """The space-to-depth form (``kernels.conv.Depth``) in which ``conv2d`` computes channels_last images of
    ``image_size`` (H, W) with a weight of ``weight_shape`` in ``dtype`` at ``precision``, or None where it runs
    on the images themselves. ``conv2d(..., depth_form_of=image_size)`` takes that form made beforehand
    (``alexnet_triton.data.space_to_depth_images``: the loaders make it on the host)."""
    images = torch.empty((1, weight_shape[1] * groups, *image_size), device="meta",
                         memory_format=torch.channels_last)
    return conv2d_depth(images, weight_shape, stride, padding, dilation, groups, dtype, precision)


def _conv2d_formed(x_d: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride, padding, dilation,
                   groups: int, image_size: tuple[int, int], relu: bool, precision: str) -> torch.Tensor:
    """``conv2d`` of images of ``image_size`` given as their space-to-depth form x_d (``input_form``)."""
    dtype = autocast_dtype(x_d)
    depth = input_form(weight.shape, image_size, stride, padding, dilation, groups, dtype=dtype, precision=precision)
    where = f"conv2d: depth_form_of={tuple(image_size)}"
    if depth is None:
        raise checks.ArgumentError(f"{where}: a weight {tuple(weight.shape)} with stride {stride}, padding "
                                   f"{padding}, groups {groups} in {dtype} at precision {precision!r} runs on the "
                                   f"images themselves (no space-to-depth form); pass the images")
    expected = depth.form_shape(x_d.shape[0], weight.shape[1] * groups) if x_d.dim() == 4 else None
    if tuple(x_d.shape) != expected or memory_format_of(x_d) != torch.channels_last or x_d.dtype != dtype:
        raise checks.ArgumentError(f"{where}: input must be the images' space-to-depth form, shape [N, "
                                   f"{weight.shape[1] * groups * depth.block ** 2}, {depth.size[0]}, "
                                   f"{depth.size[1]}] channels_last in {dtype} (alexnet_triton.data."
                                   f"space_to_depth_images), got {tuple(x_d.shape)} "
                                   f"{'channels_last' if memory_format_of(x_d) == torch.channels_last else 'NCHW'} "
                                   f"{x_d.dtype}")
    if x_d.requires_grad:
        raise checks.ArgumentError(f"{where}: the input's form takes no gradient (images made before the step); "
                                   "pass the images to differentiate through them")
    (bias,) = master_parameters(x_d, dtype, bias)
    checks.check_layer_operands("conv2d", x_d, weight.new_empty(0, dtype=autocast_dtype(weight)), bias,
                                weight.shape[0], master_bias=True)
    checks.check_precision("conv2d", precision)
    return _conv2d_depth_formed(x_d, weight, bias, _depth_fields(depth), relu, precision)


def conv2d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0,
           dilation=1, groups: int = 1, *, relu: bool = False, precision: str = "ieee", relu_input: bool = False,
           relu_masked_by_next: bool = False, relu_input_bias: torch.Tensor | None = None,
           bias_grad_by_next: bool = False, depth_form_of: tuple[int, int] | None = None) -> torch.Tensor:
    """``F.conv2d(input, weight, bias, stride, padding, dilation, groups)``, then ReLU if ``relu``.

    input [N, C_in, H, W] (NCHW or channels_last; the output keeps it) or unbatched [C_in, H, W], weight
    [C_out, C_in/groups, R, S], bias [C_out] -> [N, C_out, OH, OW] (unbatched: [C_out, OH, OW]).
    stride, dilation: int or pair; padding: int, pair, "valid" or "same" (stride 1; an odd total puts the extra
    row/column below/right, as PyTorch does). N may be 0. precision: "ieee" (exact fp32 products) or "tf32"
    (fp32 on tensor cores, GPU only). Under torch.autocast, input is cast to its dtype and the result has it, as
    with F.conv2d, but an fp32 bias is read as it is, rounded to that dtype in the kernel, and fp32 weight and
    bias get fp32 gradients from the fp32 sums (alexnet_triton.precision.autocast_master_operands); the kernels
    read the weight in that dtype: a weight that is an nn.Parameter asks for its compute copy
    (``precision.compute_copy``), which the optimizer's next update writes, and is cast until it matches (on the
    space-to-depth path the rearranging passes cast x and the weight).

    A conv + ReLU feeding a conv can hand the ReLU's backward to the conv after it, which masks the input gradient
    it writes anyway, so no pass over this conv's output gradient masks it (only a bias's gradient, if any, is
    summed from it): ``relu_masked_by_next`` on the first (relu=True; its output is saved for no mask), and
    ``relu_input`` on the second, whose input must be that output and nothing else's. The gradient the second
    returns for its input is then the gradient of the ReLU's input (0 where the input is 0), which is what the
    first takes as its output's gradient: a hook on the tensor between them sees it so. Neither runs in
    space-to-depth form. The second can sum the first's bias gradient too, in the epilogue that writes that input
    gradient, so the first makes no pass over its output gradient at all: ``bias_grad_by_next`` on the first (with
    relu_masked_by_next and a bias), ``relu_input_bias`` = the first's bias on the second (with relu_input): the
    bias's gradient arrives through the second's backward. Each flag assumes the other: a bias_grad_by_next conv
    whose next conv does not take its bias leaves the bias without a gradient.

    ``depth_form_of`` (H, W): input is not images [N, C_in, H, W] but their space-to-depth form, made beforehand
    (``input_form`` gives its geometry, ``alexnet_triton.data.space_to_depth_images`` makes it; train.py's loaders
    do, on the host), channels_last in the dtype the conv computes in, needing no gradient; y is what the images
    give, bit for bit, without the rearranging pass over them.
    """
    if depth_form_of is not None:
        if relu_input or relu_masked_by_next or relu_input_bias is not None or bias_grad_by_next:
            raise checks.ArgumentError("conv2d: depth_form_of takes no relu_input, relu_masked_by_next, "
                                       "relu_input_bias or bias_grad_by_next (a conv in space-to-depth form)")
        return _conv2d_formed(input, weight, bias, stride, padding, dilation, groups, depth_form_of, relu,
                              precision)
    if relu_masked_by_next and not relu:
        raise checks.ArgumentError("conv2d: relu_masked_by_next needs relu=True (the ReLU the next conv masks for)")
    if input.dim() not in (3, 4):
        raise checks.ArgumentError(f"conv2d: input must be 3-D [C_in, H, W] or 4-D [N, C_in, H, W], got shape "
                                   f"{tuple(input.shape)}")
    if bias_grad_by_next and (not relu_masked_by_next or bias is None):
        raise checks.ArgumentError("conv2d: bias_grad_by_next needs relu_masked_by_next=True and a bias (whose "
                                   "gradient the next conv sums)")
    if relu_input_bias is not None:
        if not relu_input or relu_input_bias.shape != input.shape[-3:-2]:
            raise checks.ArgumentError(f"conv2d: relu_input_bias must be the bias of the conv before, shape [C_in] = "
                                       f"[{input.shape[-3]}], with relu_input=True; got shape "
                                       f"{tuple(relu_input_bias.shape)}, relu_input={relu_input}")
        checks.check_grad_dtype("conv2d", "relu_input_bias", relu_input_bias.dtype, autocast_dtype(input))
        checks.check_device("conv2d", input=input, relu_input_bias=relu_input_bias)
    x = input.unsqueeze(0) if input.dim() == 3 else input  # unbatched: a batch of one (a view, no copy)
    g = conv2d_geometry(x.shape, weight.shape, stride, padding, dilation, groups)  # the clear errors first
    padding_name = padding if isinstance(padding, str) else ""
    geometry = ([g.stride_h, g.stride_w], [0, 0] if padding_name else list(checks.int_pair(
        padding, "conv2d", "padding")), padding_name, [g.dilation_h, g.dilation_w], groups)
    dtype = autocast_dtype(x)  # the dtype the conv computes in (x's, or autocast's)
    depth = conv2d_depth(x, weight.shape, stride, padding, dilation, groups, dtype, precision)
    if depth is None:
        x, weight, bias = autocast_master_operands(x, weight, bias)
        y = _conv2d(x, weight, bias, *geometry, relu, precision, relu_input, relu_masked_by_next,
                    compute_copy(weight, x.dtype), relu_input_bias, bias_grad_by_next)
    elif relu_input or relu_masked_by_next:
        raise checks.ArgumentError(f"conv2d: relu_input and relu_masked_by_next are not supported by a conv that "
                                   f"runs in space-to-depth form (input {tuple(x.shape)}, weight "
                                   f"{tuple(weight.shape)}, stride {stride})")
    else:  # the dtypes autocast gives x and the weight, checked on empty stand-ins (they are cast on the way)
        x_like, weight_like = x.new_empty(0, dtype=dtype), weight.new_empty(0, dtype=autocast_dtype(weight))
        (bias,) = master_parameters(x, dtype, bias)
        checks.check_layer_operands("conv2d", x_like, weight_like, bias, weight.shape[0], master_bias=True)
        checks.check_precision("conv2d", precision)
        y = _conv2d_depth(x, weight, bias, _depth_fields(depth), dtype, relu, precision)[0]
    return y.squeeze(0) if input.dim() == 3 else y
