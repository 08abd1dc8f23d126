"""The launches the compile inspection captures: per op, (case label "variant/layer/dtype/layout", a thunk calling
the launchers on AlexNet's full-size shapes at batch ``BATCH``). ``OPS`` names them; ``DROP_IN`` labels the
specialisations AlexNet itself never launches."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from ...architecture import CONV_LAYERS, LRN, NUM_CLASSES, POOL, SGD, VARIANTS, ConvLayer, parameter_shapes, shaped
from ...kernels import checks, conv, cross_entropy, dropout, linear, lrn, lrn_max_pool, max_pool, sgd
from ...kernels.relu import relu_forward, threshold_backward
from ...model import masks_relu_before
from ..registries.benchmark_cases import DTYPES as STUDY_DTYPES
from ..registries.benchmark_cases import LAYOUTS
from . import reference_gemm

BATCH = 128
# (dtype, precision) of the study's dtype cases, narrowest first (the inspection table's order).
DTYPES = {name: (STUDY_DTYPES[name].dtype, STUDY_DTYPES[name].precision)
          for name in sorted(STUDY_DTYPES, key=lambda name: STUDY_DTYPES[name].element_size)}
# fc6/fc7/fc8 (in_features, out_features): both variants' (fc6 takes 256 x 6 x 6 features).
FC_LAYERS = {s.layer.name: (s.inputs, s.outputs) for s in shaped("2012") if s.layer.kind == "linear"}
Cases = Iterator[tuple[str, Callable[[], None]]]


def conv_cases() -> Cases:
    """Every AlexNet conv layer, dtype and layout: forward (bias + ReLU), input and weight gradients; the input
    gradient masked by the ReLU before the conv, summing the gradient of the bias under it, where the model's conv
    takes that mask (``masks_relu_before``)."""
    for variant, layers in CONV_LAYERS.items():
        network = list(shaped(variant))
        masking = {s.layer.name for i, s in enumerate(network) if masks_relu_before(network, i)}
        for layer in layers:
            for dtype_name, (dtype, precision) in DTYPES.items():
                for layout_name, layout in LAYOUTS.items():
                    def run(layer=layer, dtype=dtype, precision=precision, layout=layout,
                            relu_input=layer.name in masking):
                        x = torch.empty(BATCH, layer.in_channels, layer.size, layer.size, dtype=dtype,
                                        memory_format=layout)
                        w = torch.empty(layer.out_channels, layer.in_channels // layer.groups, layer.kernel,
                                        layer.kernel, dtype=dtype, memory_format=layout)  # as the model keeps it
                        b = torch.empty(layer.out_channels, dtype=dtype)
                        geometry = dict(stride=layer.stride, padding=layer.padding, groups=layer.groups,
                                        precision=precision)
                        depth = conv.conv2d_depth(x, w.shape, layer.stride, layer.padding, 1, layer.groups,
                                                  dtype, precision)
                        if depth is not None:  # conv1: its space-to-depth form, as alexnet_triton.ops runs it
                            y, x_d = depth.forward(x, w, b, True, precision, dtype)
                            dy, _ = conv.conv2d_output_grad(y, y, bias_grad=True)
                            depth.input_grad(dy, w, x.shape, layout, dtype, precision)
                            depth.weight_grad(dy, x_d, w.shape, layout, dtype, precision)
                            return
                        y = conv.conv2d_forward(x, w, b, relu=True, **geometry)
                        dy, _ = conv.conv2d_output_grad(y, y, bias_grad=True)
                        if relu_input:
                            conv.conv2d_input_grad_and_bias_grad(dy, w, x, dtype, memory_format=layout, **geometry)
                        else:
                            conv.conv2d_input_grad(dy, w, x.shape, memory_format=layout, **geometry)
                        conv.conv2d_weight_grad(dy, x, w.shape, memory_format=layout, **geometry)
                    yield f"{variant}/{layer.name}/{dtype_name}/{layout_name}", run


def _after(kind: str, variants=VARIANTS) -> Iterator[tuple[str, str, tuple[int, int, int, int]]]:
    """(variant, the conv before it, input shape at BATCH) of each ``kind`` layer of the network table."""
    for variant in variants:
        before = None
        for s in shaped(variant):
            before = s.layer.name if s.layer.kind == "conv" else before
            if s.layer.kind == kind:
                yield variant, before, (BATCH, s.inputs, s.in_side, s.in_side)


def pool_cases() -> Cases:
    """AlexNet's 3x3/2 max pools (after conv1, conv2, conv5), forward and backward; where no LRN comes between, of
    the conv's bias and ReLU (relu=True, the bias and its gradient, as the model fuses them)."""
    after_lrn = {(variant, after) for variant, after, _ in _after("lrn")}
    for variant, after, shape in _after("pool"):
        for dtype_name, (dtype, _) in DTYPES.items():
            for layout_name, layout in LAYOUTS.items():
                def run(shape=shape, dtype=dtype, layout=layout, fused=(variant, after) not in after_lrn):
                    x = torch.empty(shape, dtype=dtype, memory_format=layout)
                    bias = torch.empty(shape[1], dtype=dtype) if fused else None
                    y, window = max_pool.max_pool2d_forward(x, POOL["kernel_size"], POOL["stride"], relu=fused,
                                                            bias=bias)
                    max_pool.max_pool2d_backward(y, window, x.shape, POOL["kernel_size"], POOL["stride"],
                                                 memory_format=layout, bias_dtype=dtype if fused else None)
                yield f"{variant}/pool-after-{after}/{dtype_name}/{layout_name}", run


def _after_lrn_layers(label: str, launch: Callable[[torch.Tensor], None]) -> Cases:
    """``launch(x)`` for x = the conv1 and conv2 outputs of the 2012 net (where its LRN runs), every dtype and
    layout."""
    for variant, after, shape in _after("lrn"):
        for dtype_name, (dtype, _) in DTYPES.items():
            for layout_name, layout in LAYOUTS.items():
                def run(shape=shape, dtype=dtype, layout=layout):
                    launch(torch.empty(shape, dtype=dtype, memory_format=layout))
                yield f"{variant}/{label}-after-{after}/{dtype_name}/{layout_name}", run


def lrn_cases() -> Cases:
    """The 2012 net's LRN (size 5) after conv1 and conv2, forward and backward."""
    def launch(x):
        lrn.lrn_backward(lrn.lrn_forward(x, *LRN.values()), x, *LRN.values())
    yield from _after_lrn_layers("lrn", launch)


def lrn_pool_cases() -> Cases:
    """The 2012 net's fused bias + ReLU + LRN + 3x3/2 max-pool after conv1 and conv2 (relu=True, the conv's bias
    and its gradient, as the model fuses them), forward and backward."""
    def launch(x):
        bias = torch.empty(x.shape[1], dtype=x.dtype)
        y, window = lrn_max_pool.lrn_max_pool2d_forward(x, *LRN.values(), *POOL.values(), relu=True, bias=bias)
        lrn_max_pool.lrn_max_pool2d_backward(y, window, x, *LRN.values(), *POOL.values(), relu=True, bias=bias,
                                             bias_grad=True)
    yield from _after_lrn_layers("lrn-pool", launch)


def cross_entropy_cases() -> Cases:
    """The loss on fc8's logits [128, 1000], every dtype, all reductions, forward and backward."""
    for dtype_name, (dtype, _) in DTYPES.items():
        def run(dtype=dtype):
            logits = torch.empty(BATCH, NUM_CLASSES, dtype=dtype)
            target = torch.zeros(BATCH, dtype=torch.int64)
            for reduction in cross_entropy.REDUCTIONS:
                loss, lse = cross_entropy.cross_entropy_forward(logits, target, reduction)
                cross_entropy.cross_entropy_backward(torch.empty_like(loss), logits, target, lse, reduction)
        yield f"2012/cross-entropy-fc8/{dtype_name}/rows", run


def sgd_cases() -> Cases:
    """Two SGD steps (first and later) of every AlexNet parameter: torch's update with and without Nesterov
    momentum and the paper's hyperparameters (architecture.SGD); and of the fp32 fc weights with their fp16/bf16
    compute copy (layer "sgd-fc6-copy", dtype: the copy's), as the autocast step updates them."""
    for variant, name, shape in ((v, n, s) for v in VARIANTS for n, s in parameter_shapes(v)):
        name = name.removesuffix(".weight").replace(".bias", "-bias")
        copied = variant == "2012" and name in FC_LAYERS  # (torchvision's fc weights: the same shapes)
        for dtype_name, dtype in {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}.items():
            for copy_dtype in (None, dtype) if copied and dtype != torch.float32 else (None,):
                def run(shape=shape, dtype=dtype, copy_dtype=copy_dtype):
                    param_dtype = dtype if copy_dtype is None else torch.float32
                    param, grad = torch.empty(shape, dtype=param_dtype), torch.empty(shape, dtype=param_dtype)
                    copies = None if copy_dtype is None else [torch.empty(shape, dtype=copy_dtype)]
                    for update, nesterov in (("pytorch", False), ("pytorch", True), ("paper", False)):
                        hyper = dict(SGD, nesterov=nesterov, update=update, copies=copies)
                        buffer = sgd.sgd_steps([param], [grad], [None], **hyper)[0]
                        sgd.sgd_steps([param], [grad], [buffer], **hyper)
                yield f"{variant}/sgd-{name}{'' if copy_dtype is None else '-copy'}/{dtype_name}/contiguous", run


def linear_cases() -> Cases:
    """fc6/fc7/fc8 at batch 128, every dtype (fp16/bf16 with fp32 master parameters and the weight's compute copy in
    that dtype, as the autocast step runs them after its first: forward and input gradient read the copy, the
    fused step writes it), as the model launches them: fc6 and fc7 with the 2012 net's fused ReLU + dropout 0.5,
    whose backward the next linear's input gradient applies in its epilogue (``model.masks_relu_before``: fc7's and
    fc8's input gradients, masked by their input > 0), so that no backward GEMM masks the dy it reads; fc8 plain.
    Also fc7 masking its own dy in both backward GEMMs, by y > 0 ("fc7-relu-masked-here") and by the regenerated
    mask of dropout without ReLU ("fc7-dropout-no-relu"): the other specialisations of the backward kernels (a
    linear without a linear after it). The weight gradient also with the SGD step fused (``train.py
    --fused-update``: the paper's hyperparameters, a later step)."""
    layers = [(name, shape, name != "fc8", False, name != "fc6") for name, shape in FC_LAYERS.items()]
    layers += [("fc7-relu-masked-here", FC_LAYERS["fc7"], True, True, False),
               ("fc7-dropout-no-relu", FC_LAYERS["fc7"], False, True, False)]
    for name, (fan_in, fan_out), relu, masks_own, relu_input in layers:
        for dtype_name, (dtype, precision) in DTYPES.items():
            def run(fan_in=fan_in, fan_out=fan_out, relu=relu, masks_own=masks_own, relu_input=relu_input,
                    dtype=dtype, precision=precision):
                x = torch.empty(BATCH, fan_in, dtype=dtype)
                w = torch.empty(fan_out, fan_in, dtype=torch.float32 if dtype in checks.LOW_DTYPES else dtype)
                b = torch.empty(fan_out, dtype=w.dtype)
                copy = torch.empty_like(w, dtype=dtype) if dtype in checks.LOW_DTYPES else None
                p, seed = (0.5, 1234) if relu or masks_own else (0.0, None)
                y = linear.linear_forward(x, w, b, relu=relu, dropout=p, seed=seed, precision=precision,
                                          weight_copy=copy)
                masks = dict(y=y if relu else None, dropout=p, seed=seed) if masks_own else {}
                linear.linear_input_grad(y, w if copy is None else copy, **masks, precision=precision,
                                         relu_input=x if relu_input else None,
                                         relu_input_dropout=0.5 if relu_input else 0.0)
                linear.linear_weight_grad(y, x, **masks, precision=precision, grad_dtype=w.dtype)
                linear.linear_weight_grad_sgd_(y, x, w, b, torch.empty_like(w), torch.empty_like(b), **masks,
                                               precision=precision, **SGD, weight_copy=copy)
            yield f"2012/{name}/{dtype_name}/rowmajor", run


def dropout_cases() -> Cases:
    """The torchvision net's standalone dropout (fc6's input), every dtype, forward and backward."""
    for dtype_name, (dtype, _) in DTYPES.items():
        def run(dtype=dtype):
            x = torch.empty(BATCH, FC_LAYERS["fc6"][0], dtype=dtype)
            dropout.dropout_backward(dropout.dropout_forward(x, 0.5, 1234), 0.5, 1234)
        yield f"torchvision/dropout-before-fc6/{dtype_name}/rowmajor", run


def relu_cases() -> Cases:
    """The element-wise ReLU and its gradient (a model whose ReLU is a module of its own) on the torchvision net's
    conv1 output, every dtype and layout."""
    conv1 = CONV_LAYERS["torchvision"][0]
    for dtype_name, (dtype, _) in DTYPES.items():
        for layout_name, layout in LAYOUTS.items():
            def run(dtype=dtype, layout=layout):
                x = torch.empty(BATCH, conv1.out_channels, conv1.out_size, conv1.out_size, dtype=dtype,
                                memory_format=layout)
                y = relu_forward(x)
                threshold_backward(torch.empty_like(y), y)
            yield f"torchvision/relu-after-{conv1.name}/{dtype_name}/{layout_name}", run


def conv_forward_gemm(layer: ConvLayer) -> tuple[int, int, int]:
    """(M, N, K) of one group of a conv layer's forward at batch ``BATCH``: M = N * OH * OW pixels,
    N = output channels / groups, K = input channels / groups * R * S."""
    return (BATCH * layer.out_size ** 2, layer.out_channels // layer.groups,
            layer.in_channels // layer.groups * layer.kernel ** 2)


def reference_gemm_cases() -> Cases:
    """Each conv layer's forward GEMM as a plain matmul (``reference_gemm``), fp16, bf16 and TF32: a [M, K] and
    b [K, N] contiguous, at the conv forward's tensor-core tiles and the GEMM's own. K is padded to a multiple of
    8, as a tuned GEMM would pad it (conv1's K = 363 left rows misaligned for vector loads, and spilled)."""
    for variant, layers in CONV_LAYERS.items():
        for layer in layers:
            m, n, k = conv_forward_gemm(layer)
            k = -(-k // 8) * 8
            for dtype_name in ("fp16", "bf16", "fp32-tf32"):
                def run(m=m, n=n, k=k, dtype=DTYPES[dtype_name][0]):
                    reference_gemm.reference_matmul(torch.empty(m, k, dtype=dtype), torch.empty(k, n, dtype=dtype))
                yield f"{variant}/{layer.name}/{dtype_name}/rowmajor", run


DROP_IN = "drop-in"  # the case labels' "variant" of the specialisations AlexNet does not launch


def drop_in_cases() -> Cases:
    """The specialisations the ops compile for PyTorch's arguments that AlexNet never passes (README "Ops"), at
    AlexNet-sized shapes: conv3 dilated by 2 (bf16 and exact fp32, channels_last: the tensor-core and CUDA-core
    tiles); a 3x3/2 max-pool with padding 1, dilation 2 and ceil_mode, forward, backward and its int64 indices,
    every dtype and layout; cross-entropy with class weights, ignore_index and label smoothing, with probability
    targets (and their gradient), and over extra dimensions [8, 21, 16, 16] (a segmentation-shaped loss), every
    dtype. Labelled ``DROP_IN``/..., apart from the AlexNet rows (the loop summaries keep AlexNet's only)."""
    conv3 = next(layer for layer in CONV_LAYERS["2012"] if layer.name == "conv3")
    for dtype_name in ("bf16", "fp32-ieee"):
        dtype, precision = DTYPES[dtype_name]

        def conv_run(dtype=dtype, precision=precision, layout=torch.channels_last):
            x = torch.empty(BATCH, conv3.in_channels, conv3.size, conv3.size, dtype=dtype, memory_format=layout)
            w = torch.empty(conv3.out_channels, conv3.in_channels // conv3.groups, conv3.kernel, conv3.kernel,
                            dtype=dtype, memory_format=layout)
            geometry = dict(stride=conv3.stride, padding=2, dilation=2, groups=conv3.groups, precision=precision)
            y = conv.conv2d_forward(x, w, torch.empty(conv3.out_channels, dtype=dtype), relu=True, **geometry)
            conv.conv2d_input_grad(y, w, x.shape, memory_format=layout, **geometry)
            conv.conv2d_weight_grad(y, x, w.shape, memory_format=layout, **geometry)
        yield f"{DROP_IN}/conv3-dilation2/{dtype_name}/channels_last", conv_run
    _, _, shape = next(_after("pool", ("2012",)))
    pool = dict(kernel_size=POOL["kernel_size"], stride=POOL["stride"], padding=1, dilation=2, ceil_mode=True)
    for dtype_name, (dtype, _) in DTYPES.items():
        for layout_name, layout in LAYOUTS.items():
            def pool_run(dtype=dtype, layout=layout):
                x = torch.empty(shape, dtype=dtype, memory_format=layout)
                y, window = max_pool.max_pool2d_forward(x, **pool)
                max_pool.max_pool2d_backward(y, window, x.shape, **pool, memory_format=layout)
                max_pool.max_pool2d_indices(window, x.shape, **pool)
            yield f"{DROP_IN}/pool-dilation2-ceil/{dtype_name}/{layout_name}", pool_run
    for dtype_name, (dtype, _) in DTYPES.items():
        def loss_run(dtype=dtype):
            for logits, target, target_grad in (
                    (torch.empty(BATCH, NUM_CLASSES, dtype=dtype), torch.zeros(BATCH, dtype=torch.int64), False),
                    (torch.empty(BATCH, NUM_CLASSES, dtype=dtype), torch.empty(BATCH, NUM_CLASSES, dtype=dtype), True),
                    (torch.empty(8, 21, 16, 16, dtype=dtype), torch.zeros(8, 16, 16, dtype=torch.int64), False)):
                options = dict(weight=torch.empty(logits.shape[1], dtype=dtype), label_smoothing=0.1,
                               ignore_index=-100 if target_grad else 0)  # probability targets take no ignore_index
                loss, saved = cross_entropy.cross_entropy_forward(logits, target, "mean", **options)
                cross_entropy.cross_entropy_backward(torch.empty_like(loss), logits, target, saved, "mean",
                                                     target_grad=target_grad, **options)
        yield f"{DROP_IN}/cross-entropy-options/{dtype_name}/rows", loss_run


OPS: dict[str, Callable[[], Cases]] = {
    "conv": conv_cases, "pool": pool_cases, "lrn": lrn_cases, "lrn_pool": lrn_pool_cases,
    "cross_entropy": cross_entropy_cases, "sgd": sgd_cases, "linear": linear_cases, "dropout": dropout_cases,
    "relu": relu_cases, "drop_in": drop_in_cases, "reference_gemm": reference_gemm_cases}
