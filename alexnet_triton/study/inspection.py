"""Ahead-of-time compile inspection: what each GPU target's compiler makes of every kernel, without a GPU.

``collect`` runs each op's launchers on AlexNet's full-size shapes (batch 128)
with launches captured instead of run (split-K slice counts as on an H100's
132 SMs), and binds each launch with the target's own backend, so every kernel
is specialised as a real launch there would be
(16-byte alignment and divisibility hints; on AMD also the 32-bit pointer-range
hint that turns loads into buffer loads). ``inspect_kernels`` compiles every
(kernel, specialisation, config, target) once and reads the binary: NVIDIA
cubins with the ``cuobjdump`` in Triton's wheel, AMD code from the amdgcn
assembly's kernel info and metadata. ``plot_inspection`` and
``summarise_inspection`` turn the table into figures and headline numbers; ``loop_table`` and ``loop_summary``
put each GEMM-like kernel's main loop (``sass_loop``) beside that of a plain Triton matmul
(``reference_gemm``, op "reference_gemm": each conv layer's forward GEMM); ``issue_comparison`` and
``plot_issue_per_tensor`` add the before-state (conv_loops_before.csv: the conv kernels of commit f551264,
measured with the same ``sass_loop``).

Compilation needs a process whose execution mode is ``gpu`` with
``TRITON_INTERPRET`` unset (``experiments/inspect_kernels.py`` sets it up);
reading, plotting and summarising a table work in any process.

Columns of the table, one row per distinct compilation:
  kernel, config, target   the ``@triton.jit`` function, ``runtime.config_name`` of the config, and
                           sm_80 (A100), sm_90 (H100) or gfx942 (MI300, wave size 64)
  dtypes, layouts, cases, example_case   the AlexNet cases (variant/layer/dtype/layout) that launch it
  registers        per thread (NVIDIA, at most 255) or per lane (AMD: architected VGPRs + accumulation
                   AGPRs, which share one 512-entry file per lane, 256 of each at most)
  register_detail  AMD only: "<v> VGPR + <a> AGPR, <s> SGPR; spilled <v> VGPR, <s> SGPR"
  spill_bytes      NVIDIA: stack + local memory per thread; AMD: scratch memory per lane
  shared_bytes     shared memory (NVIDIA) or LDS (AMD) per block / workgroup, dynamic + static; the limit is
                   227 KiB (sm_90), 163 KiB (sm_80), 64 KiB (gfx942)
  occupancy        theoretical fraction of the resident warps a kernel can fill: of 64 per SM (NVIDIA),
                   of 8 waves per SIMD (AMD; see ``amd_occupancy``); 0 when the block cannot launch
  mma              matrix instructions in the binary: HMMA (mma.sync), HGMMA (wgmma), DMMA, MFMA, or none
  async_copy       cp.async (LDGSTS), TMA (UTMALDG), direct-to-LDS loads (AMD: buffer/global_load ... lds;
                   Triton 3.7 emits them for gfx942 only with TRITON_HIP_USE_ASYNC_COPY=1), or none
  compile_s        seconds to compile, from an empty cache
  triton           the Triton version that compiled it
  status           ok; spills (NVIDIA: any stack or local memory; AMD: any scratch memory or spilled VGPR;
                   SGPRs spilled into VGPR lanes cost no memory traffic and are only counted in
                   register_detail); shared memory over the limit; or compile error: <message>
  loop_instructions, mma_count, mma_shapes, mma_input, hgmma_register_a, non_mma_per_mma, loop_scalar_loads,
  loop_vector_loads, loop_cp_async, loop_tma, loop_shared_stores, wgmma_wait_depth, loop_divisions,
  issue_per_tensor
                   the main loop (the backward branch whose body holds the most HMMA / HGMMA / MFMA), per warp
                   (wavefront) and iteration, as ``sass_loop`` defines them: instructions, matrix instructions,
                   global loads by kind, shared stores, the wgmma wait depth, integer divisions, and
                   issue_per_tensor = instructions / the cycles the MMAs keep one SM sub-partition's (SIMD's)
                   tensor unit busy (above 1: the loop cannot feed it). Empty for kernels without an MMA loop
                   (exact fp32 on NVIDIA, element-wise and row kernels)
  case_list        every case that launches it, ";"-separated
"""

from __future__ import annotations

import fnmatch
import importlib
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import triton
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..architecture import CONV_LAYERS, LRN, NUM_CLASSES, POOL, SGD, VARIANTS, ConvLayer, parameter_shapes, shaped
from ..kernels import conv, cross_entropy, dropout, linear, lrn, lrn_max_pool, max_pool, runtime, sgd
from ..kernels.relu import relu_forward, threshold_backward
from . import reference_gemm, sass_loop
from .benchmark_cases import DTYPES as STUDY_DTYPES
from .benchmark_cases import LAYOUTS
from .traffic import H100_SXM_SMS
from .triton_internals import CUOBJDUMP, GPUTarget, Specialiser, compile_for


@dataclass(frozen=True)
class Target:
    """A GPU to compile for, and the limits its compilations are judged against."""

    gpu: GPUTarget
    shared_per_block: int  # bytes of shared memory / LDS one block (workgroup) may use
    shared_per_unit: int  # bytes per SM / CU
    registers: int  # registers per thread (lane) before the compiler must spill


TARGETS = {
    "sm_80": Target(GPUTarget("cuda", 80, 32), shared_per_block=166912, shared_per_unit=167936, registers=255),
    "sm_90": Target(GPUTarget("cuda", 90, 32), shared_per_block=232448, shared_per_unit=233472, registers=255),
    "gfx942": Target(GPUTarget("hip", "gfx942", 64), shared_per_block=65536, shared_per_unit=65536, registers=512),
}
BATCH = 128
# (dtype, precision) of the study's dtype cases, in the inspection table's order.
DTYPES = {name: (STUDY_DTYPES[name].dtype, STUDY_DTYPES[name].precision)
          for name in ("fp16", "bf16", "fp32-ieee", "fp32-tf32")}
# fc6/fc7/fc8 (in_features, out_features): both variants' (fc6 takes 256 x 6 x 6 features).
FC_LAYERS = {s.layer.name: (s.inputs, s.outputs) for s in shaped("2012") if s.layer.kind == "linear"}
Cases = Iterator[tuple[str, Callable[[], None]]]


# ----------------------------------------------------------------------------------------------------------------
# The launches: (case label "variant/layer/dtype/layout", thunk calling the launchers) per op.

def conv_cases() -> Cases:
    """Every AlexNet conv layer, dtype and layout: forward (bias + ReLU), input and weight gradients."""
    for variant, layers in CONV_LAYERS.items():
        for layer in layers:
            for dtype_name, (dtype, precision) in DTYPES.items():
                for layout_name, layout in LAYOUTS.items():
                    def run(layer=layer, dtype=dtype, precision=precision, layout=layout):
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
    """AlexNet's 3x3/2 max pools (after conv1, conv2, conv5), forward and backward."""
    for variant, after, shape in _after("pool"):
        for dtype_name, (dtype, _) in DTYPES.items():
            for layout_name, layout in LAYOUTS.items():
                def run(shape=shape, dtype=dtype, layout=layout):
                    x = torch.empty(shape, dtype=dtype, memory_format=layout)
                    y, window = max_pool.max_pool2d_forward(x, POOL["kernel_size"], POOL["stride"])
                    max_pool.max_pool2d_backward(y, window, x.shape, POOL["kernel_size"], POOL["stride"],
                                                 memory_format=layout)
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
    """The 2012 net's fused LRN + 3x3/2 max-pool after conv1 and conv2, forward and backward."""
    def launch(x):
        y, window = lrn_max_pool.lrn_max_pool2d_forward(x, *LRN.values(), *POOL.values())
        lrn_max_pool.lrn_max_pool2d_backward(y, window, x, *LRN.values(), *POOL.values())
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
    momentum and the paper's hyperparameters (architecture.SGD)."""
    for variant, name, shape in ((v, n, s) for v in VARIANTS for n, s in parameter_shapes(v)):
        name = name.removesuffix(".weight").replace(".bias", "-bias")
        for dtype_name, dtype in {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}.items():
            def run(shape=shape, dtype=dtype):
                param, grad = torch.empty(shape, dtype=dtype), torch.empty(shape, dtype=dtype)
                for update, nesterov in (("pytorch", False), ("pytorch", True), ("paper", False)):
                    hyper = dict(SGD, nesterov=nesterov, update=update)
                    buffer = sgd.sgd_step(param, grad, None, **hyper)
                    sgd.sgd_step(param, grad, buffer, **hyper)
            yield f"{variant}/sgd-{name}/{dtype_name}/contiguous", run


def linear_cases() -> Cases:
    """fc6/fc7/fc8 at batch 128, every dtype: fc6 and fc7 with the 2012 net's fused ReLU + dropout 0.5
    (backward masked by y > 0), fc8 plain, and fc7 with dropout but no ReLU (the backward regenerates the
    mask: the other specialisation of the backward kernels)."""
    layers = [(name, shape, name != "fc8", name != "fc8") for name, shape in FC_LAYERS.items()]
    layers.append(("fc7-dropout-no-relu", FC_LAYERS["fc7"], False, True))
    for name, (fan_in, fan_out), relu, drop in layers:
        for dtype_name, (dtype, precision) in DTYPES.items():
            def run(fan_in=fan_in, fan_out=fan_out, relu=relu, drop=drop, dtype=dtype, precision=precision):
                x = torch.empty(BATCH, fan_in, dtype=dtype)
                w = torch.empty(fan_out, fan_in, dtype=dtype)
                b = torch.empty(fan_out, dtype=dtype)
                p, seed = (0.5, 1234) if drop else (0.0, None)
                y = linear.linear_forward(x, w, b, relu=relu, dropout=p, seed=seed, precision=precision)
                masks = dict(y=y if relu else None, dropout=p, seed=seed, precision=precision)
                linear.linear_input_grad(y, w, **masks)
                linear.linear_weight_grad(y, x, **masks)
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


# ----------------------------------------------------------------------------------------------------------------
# Compilation and reading the binaries.

@dataclass
class Compilation:
    """One distinct (kernel, specialisation, config, target) and the cases that launch it."""

    module: str
    kernel: str
    signature: dict
    constexprs: dict
    attrs: dict
    options: dict
    target: str
    config: str
    cases: list[str] = field(default_factory=list)


def collect(ops: list[str], targets: list[str], patterns: list[str]) -> list[Compilation]:
    """Capture the launches of every case of ``ops`` matching a glob pattern; expand over each launch's configs
    and the targets, deduplicated."""
    if runtime.INTERPRETER:
        raise RuntimeError("compile inspection needs ALEXNET_TRITON_MODE=gpu and TRITON_INTERPRET unset "
                           "before alexnet_triton is imported")
    compilations: dict[tuple, Compilation] = {}
    specialisers = {name: Specialiser(TARGETS[name].gpu) for name in targets}
    for op in ops:
        for case, run in OPS[op]():
            if not any(fnmatch.fnmatch(case, pattern) for pattern in patterns):
                continue
            with runtime.capture_launches() as launches, runtime.target(H100_SXM_SMS):
                run()
            for launch in launches:
                kernel = launch.kernel
                for cuda_config in launch.candidates:
                    for name, specialiser in specialisers.items():
                        config = runtime.for_backend(cuda_config, TARGETS[name].gpu.backend)
                        fitting = launch.configs.fitting(tuple(runtime.for_backend(c, TARGETS[name].gpu.backend)
                                                               for c in launch.candidates),
                                                         launch.operand_bytes, TARGETS[name].shared_per_block)
                        if config not in fitting:  # pruned on this target at launch, as a GPU there would
                            continue
                        kwargs = dict(launch.args, **config.kwargs, num_warps=config.num_warps,
                                      num_stages=config.num_stages)
                        signature, constexprs, attrs, options = specialiser.specialise(kernel, kwargs)
                        key = (kernel.fn.__name__, repr(signature), repr(sorted(constexprs.items())),
                               repr(sorted(attrs.items())), runtime.config_name(config), name)
                        if key not in compilations:
                            compilations[key] = Compilation(kernel.fn.__module__, kernel.fn.__name__, signature,
                                                            constexprs, attrs, options, name,
                                                            runtime.config_name(config))
                        compilations[key].cases.append(case)
    return list(compilations.values())


def nvidia_occupancy(target: Target, registers: int, warps: int, shared: int) -> float:
    """Theoretical fraction of the SM's 64 warp slots a kernel fills: 64K registers, allocated per warp in
    256-register units; shared memory per block plus 1 KiB the system reserves; at most 32 blocks."""
    per_warp_registers = -(-registers * 32 // 256) * 256
    by_registers = 65536 // (per_warp_registers * warps) if registers else 32
    by_shared = target.shared_per_unit // (shared + 1024) if shared else 32
    blocks = min(32, 64 // warps, by_registers, by_shared)
    return blocks * warps / 64


def amd_occupancy(target: Target, compiler_waves: int, warps: int, lds: int) -> float:
    """Theoretical fraction of the 8 wave slots of a SIMD a kernel fills on gfx942.

    ``compiler_waves`` is the LLVM backend's own "; Occupancy" (waves per SIMD as limited by VGPRs + AGPRs,
    SGPRs and the workgroup size). Triton allocates LDS dynamically, which that figure does not see, so the
    LDS limit is applied here: a CU holds 64 KiB // (LDS rounded up to 512 bytes) workgroups, and each
    workgroup puts ceil(warps / 4) waves on every one of the CU's 4 SIMDs.
    """
    by_lds = target.shared_per_unit // (-(-lds // 512) * 512) * -(-warps // 4) if lds else 8
    return min(8, compiler_waves, by_lds) / 8


def _loop_columns(loop: sass_loop.MainLoop | None) -> dict:
    return dict.fromkeys(sass_loop.LOOP_COLUMNS) if loop is None else vars(loop)


def _read_cubin(compiled, target: Target, warps: int) -> dict:
    """Registers, spills, shared memory, occupancy, HMMA/HGMMA, async copies and the main loop of an NVIDIA
    kernel."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(compiled.asm["cubin"])
        cubin.flush()
        usage = subprocess.run([CUOBJDUMP, "--dump-resource-usage", cubin.name], capture_output=True,
                               text=True, check=True).stdout
        sass = subprocess.run([CUOBJDUMP, "--dump-sass", cubin.name], capture_output=True, text=True,
                              check=True).stdout
    fields = {name: int(value) for name, value in re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", usage)}
    registers = fields["REG"]
    spills = fields["STACK"] + fields["LOCAL"]
    shared = compiled.metadata.shared + fields["SHARED"]
    mma = [name for name, op in (("HGMMA", "HGMMA"), ("HMMA", "HMMA."), ("DMMA", "DMMA")) if op in sass]
    copies = [name for name, op in (("cp.async", "LDGSTS"), ("TMA", "UTMALDG")) if op in sass]
    return dict(registers=registers, register_detail="", spill_bytes=spills, shared_bytes=shared,
                occupancy=nvidia_occupancy(target, registers, warps, shared), mma=mma, async_copy=copies,
                spilled=spills > 0, **_loop_columns(sass_loop.measure_sass(sass, f"sm_{target.gpu.arch}")))


_DIRECT_TO_LDS = re.compile(r"\b(?:global_load_lds_\w+|buffer_load_\w+ [^\n;]*\blds\b)")


def _read_amdgcn(compiled, target: Target, warps: int) -> dict:
    """Registers, spills, LDS, occupancy, MFMA, direct-to-LDS loads and the main loop of an AMD kernel, from its
    assembly."""
    asm = compiled.asm["amdgcn"]
    info = {name: int(value) for name, value in re.findall(r"^; (\w+): (\d+)", asm.split("; Kernel info:")[1],
                                                          re.MULTILINE)}
    spilled = {kind: int(count) for kind, count in re.findall(r"\.(vgpr|sgpr)_spill_count:\s+(\d+)", asm)}
    lds = compiled.metadata.shared + info["LDSByteSize"]
    detail = (f"{info['NumVgprs']} VGPR + {info['NumAgprs']} AGPR, {info['TotalNumSgprs']} SGPR; "
              f"spilled {spilled['vgpr']} VGPR, {spilled['sgpr']} SGPR")
    mma = ["MFMA"] if "v_mfma" in asm else []
    copies = ["direct-to-LDS"] if _DIRECT_TO_LDS.search(asm) else []
    return dict(registers=info["TotalNumVgprs"], register_detail=detail, spill_bytes=info["ScratchSize"],
                shared_bytes=lds, occupancy=amd_occupancy(target, info["Occupancy"], warps, lds), mma=mma,
                async_copy=copies, spilled=info["ScratchSize"] > 0 or spilled["vgpr"] > 0,
                **_loop_columns(sass_loop.measure_amdgcn(asm, target.gpu.arch)))


_READERS = {"cuda": _read_cubin, "hip": _read_amdgcn}


def compile_one(job: Compilation) -> dict:
    """Compile one job and read its binary; returns a table row (a failure is a row with its status)."""
    kernel = getattr(importlib.import_module(job.module), job.kernel)
    target = TARGETS[job.target]
    row = dict(kernel=job.kernel, config=job.config, target=job.target,
               dtypes=" ".join(sorted({c.split("/")[2] for c in job.cases})),
               layouts=" ".join(sorted({c.split("/")[3] for c in job.cases})),
               cases=len(job.cases), example_case=job.cases[0], case_list=";".join(job.cases),
               triton=triton.__version__)
    start = time.perf_counter()
    try:
        compiled = compile_for(kernel, job.signature, job.constexprs, job.attrs, target.gpu, job.options)
    except Exception as error:  # every failure goes into the table
        return dict(row, status=f"compile error: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
    row["compile_s"] = round(time.perf_counter() - start, 2)
    found = _READERS[target.gpu.backend](compiled, target, job.options["num_warps"])
    status = "spills" if found.pop("spilled") else "ok"
    if found["shared_bytes"] > target.shared_per_block:
        status = "shared memory over the limit"
    found.update(occupancy=round(found["occupancy"], 3), mma="+".join(found["mma"]) or "none",
                 async_copy="+".join(found["async_copy"]) or "none")
    return dict(row, **found, status=status)


COLUMNS = ["kernel", "config", "target", "dtypes", "layouts", "registers", "register_detail", "spill_bytes",
           "shared_bytes", "occupancy", "mma", "async_copy", "compile_s", "cases", "example_case", "triton", "status",
           *sass_loop.LOOP_COLUMNS, "case_list"]


def inspect_kernels(ops: list[str], targets: list[str], patterns: list[str], jobs: int) -> pd.DataFrame:
    """Collect and compile (``jobs`` processes) every matching case for ``targets``; the table, sorted."""
    with ProcessPoolExecutor(jobs) as pool:
        rows = list(pool.map(compile_one, collect(ops, targets, patterns)))
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.sort_values(["kernel", "target", "dtypes", "layouts", "config"], ignore_index=True)


# ----------------------------------------------------------------------------------------------------------------
# Figures and headline numbers.

def _conditions(table: pd.DataFrame) -> str:
    versions = ", ".join(sorted(set(table.triton.astype(str))))
    return (f"Triton {versions}; compiled ahead of time for {', '.join(_targets(table))}, not run; "
            f"AlexNet layers at batch {BATCH}, full size")


def _targets(table: pd.DataFrame) -> list[str]:
    return [t for t in TARGETS if t in set(table.target)]


def _short(kernel: str) -> str:
    return kernel.strip("_").removesuffix("_kernel")


def _dtype_colour(dtypes: str) -> str:
    """One colour per dtype; grey for compilations shared by several dtypes (kernels without dots)."""
    colours = {"fp16": "tab:blue", "bf16": "tab:green", "fp32-ieee": "tab:orange", "fp32-tf32": "tab:purple",
               "fp32": "tab:orange"}
    names = dtypes.split()
    return colours.get(names[0], "tab:grey") if len(names) == 1 else "tab:grey"


FAILURE_MARKERS = {"spills": "x", "shared memory over the limit": "^", "compile error": "s"}


def _strip_figure(table: pd.DataFrame, column: str, scale: float, label: str,
                  limits: Callable[[Target], float] | None, title: str, path: Path) -> Path:
    """One panel per target: ``column`` / ``scale`` of every compilation per kernel (a point per config, dtype and
    layout, coloured by dtype), the target's limit as a dashed line, failures in red (compile errors on the
    limit)."""
    kernels = sorted(table.kernel.unique(), key=_short, reverse=True)
    targets = _targets(table)
    fig = Figure(figsize=(5.2 * len(targets), 0.3 * len(kernels) + 2.4), layout="constrained")
    axes = fig.subplots(1, len(targets), sharey=True, squeeze=False)[0]
    rng = np.random.default_rng(0)
    for ax, name in zip(axes, targets, strict=True):
        limit = limits(TARGETS[name]) / scale if limits else None
        rows = table[table.target == name]
        y = rows.kernel.map({k: i for i, k in enumerate(kernels)}) + rng.uniform(-0.25, 0.25, len(rows))
        x = rows[column].astype(float) / scale
        ok = rows.status == "ok"
        ax.scatter(x[ok], y[ok], s=14, alpha=0.6, c=[_dtype_colour(d) for d in rows["dtypes"][ok]], linewidths=0)
        for failure, marker in FAILURE_MARKERS.items():
            failed = rows.status.str.startswith(failure)
            if failed.any():
                ax.scatter(x[failed].fillna(limit or 0.0), y[failed], s=36, marker=marker, c="red",
                           label=f"{failure} ({failed.sum()})")
        if limit is not None:
            ax.axvline(limit, color="black", linestyle="--", linewidth=1, label=f"limit {limit:g}")
        ax.set_title(name)
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlim(left=0)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=8)
    axes[0].set_yticks(range(len(kernels)), [_short(k) for k in kernels], fontsize=8)
    axes[0].set_ylim(-0.6, len(kernels) - 0.4)
    handles = [axes[0].scatter([], [], s=14, c=_dtype_colour(d), label=d)
               for d in ("fp16", "bf16", "fp32-ieee", "fp32-tf32")]
    handles.append(axes[0].scatter([], [], s=14, c="tab:grey", label="several dtypes (one compilation)"))
    fig.legend(handles=handles, loc="outside lower center", ncols=5, fontsize=8, frameon=False)
    fig.suptitle(f"{title}\n{_conditions(table)}", fontsize=10)
    fig.savefig(path, dpi=110)
    return path


def _matrix_unit_figure(table: pd.DataFrame, path: Path) -> Path:
    """Kernels with a dot x (target, dtype): which matrix instructions and asynchronous copies the binaries hold,
    and in how many of the compilations (configs x layouts x layers, spilling ones included)."""
    compiled = table[table.registers.notna()]
    dot_kernels = sorted(compiled.kernel[compiled.mma != "none"].unique(), key=_short)
    targets = _targets(table)
    dtypes = [d for d in DTYPES if compiled["dtypes"].str.contains(d).any()]
    columns = [(t, d) for t in targets for d in dtypes]
    share = np.full((len(dot_kernels), len(columns)), np.nan)
    fig = Figure(figsize=(1.15 * len(columns) + 2.5, 0.6 * len(dot_kernels) + 2.2), layout="constrained")
    ax = fig.subplots()
    for i, kernel in enumerate(dot_kernels):
        for j, (target, dtype) in enumerate(columns):
            rows = compiled[(compiled.kernel == kernel) & (compiled.target == target)
                            & compiled["dtypes"].str.split().apply(lambda names, d=dtype: d in names)]
            if rows.empty:
                continue
            share[i, j] = (rows.mma != "none").mean()
            text = "\n".join(f"{'+'.join(sorted(set(rows[c]) - {'none'})) or '-'} {(rows[c] != 'none').sum()}/"
                             f"{len(rows)}" for c in ("mma", "async_copy"))
            ax.text(j, i, text, ha="center", va="center", fontsize=7)
    ax.imshow(share, cmap="Greens", vmin=-0.1, vmax=2.5, aspect="auto")
    ax.set_xticks(range(len(columns)), [f"{t}\n{d}" for t, d in columns], fontsize=8)
    ax.set_yticks(range(len(dot_kernels)), [_short(k) for k in dot_kernels], fontsize=8)
    for boundary in range(len(dtypes), len(columns), len(dtypes)):
        ax.axvline(boundary - 0.5, color="black", linewidth=1.5)
    ax.tick_params(length=0)
    fig.suptitle("Matrix instructions (line 1) and asynchronous copies (line 2) in the binaries: compilations using "
                 f"them / compiled (green: matrix units)\n{_conditions(table)}", fontsize=10)
    fig.savefig(path, dpi=110)
    return path


def plot_inspection(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write the inspection figures (PNG) to ``out_dir``: registers, occupancy, shared memory / LDS, matrix-unit
    and async-copy use, and, when the table has conv main loops, their issue per tensor-core cycle
    (``plot_issue_per_tensor``, with the before-state of ``out_dir``/conv_loops_before.csv if there); returns
    their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        _strip_figure(table, "registers", 1, "registers per thread (lane)", lambda t: t.registers,
                      "Registers per thread (AMD: per lane, VGPRs + AGPRs, at most 256 + 256); dashed: the most "
                      "before spilling to memory", out_dir / "registers.png"),
        _strip_figure(table, "occupancy", 1, "theoretical occupancy", None,
                      "Theoretical occupancy: resident warps of 64 per SM (NVIDIA), waves of 8 per SIMD (AMD)",
                      out_dir / "occupancy.png"),
        _strip_figure(table, "shared_bytes", 1024, "KiB per block (workgroup)", lambda t: t.shared_per_block,
                      "Shared memory (NVIDIA) / LDS (AMD) per block; dashed: the most a block may use",
                      out_dir / "shared_memory.png"),
        _matrix_unit_figure(table, out_dir / "matrix_units.png"),
    ] + ([plot_issue_per_tensor(table, read_before(out_dir), out_dir / "issue_per_tensor.png")]
         if has_main_loops(table) else [])


def _failure_counts(rows: pd.DataFrame) -> dict:
    return dict(kernels=int(rows.kernel.nunique()), compilations=len(rows), failing=int((rows.status != "ok").sum()),
                compile_errors=int(rows.status.str.startswith("compile error").sum()),
                spilling=int((rows.status == "spills").sum()),
                shared_over_limit=int((rows.status == "shared memory over the limit").sum()))


def _target_summary(rows: pd.DataFrame) -> dict:
    compiled = rows[rows.registers.notna()]
    heaviest = compiled.loc[compiled.registers.idxmax()] if len(compiled) else None
    return dict(
        _failure_counts(rows),
        max_registers=None if heaviest is None else int(heaviest.registers),
        max_registers_at=None if heaviest is None else " ".join(heaviest[["kernel", "config", "example_case"]]),
        min_occupancy=float(compiled.occupancy[compiled.occupancy > 0].min()) if len(compiled) else None,
        kernels_using_mma=int(rows.kernel[rows.mma.fillna("none") != "none"].nunique()),
        mma=sorted({m for value in rows.mma.dropna() for m in value.split("+")} - {"none"}),
        kernels_using_async_copy=int(rows.kernel[rows.async_copy.fillna("none") != "none"].nunique()))


def summarise_inspection(table: pd.DataFrame) -> dict:
    """Headline numbers of an inspection table: kernels, compilations and failures (compile errors, spills,
    shared memory over the limit) in all and per target; per target also the largest register count and
    where, the lowest occupancy of the compilations that can launch, the matrix instructions used and how
    many kernels use them and asynchronous copies."""
    return dict(_failure_counts(table), triton=sorted(set(table.triton.astype(str))),
                per_target={name: _target_summary(table[table.target == name]) for name in _targets(table)})


# ----------------------------------------------------------------------------------------------------------------
# Main loops, and the conv kernels' against the reference GEMM's.

LOOP_TABLE_COLUMNS = {"kernel": "kernel", "config": "config", "target": "target", "dtypes": "dtypes",
                      "layouts": "layouts", "registers": "regs", "spill_bytes": "spill", "shared_bytes": "smem",
                      "loop_instructions": "loop", "mma_count": "mma", "mma_shapes": "shape",
                      "issue_per_tensor": "issue/tc", "wgmma_wait_depth": "wait", "hgmma_register_a": "regA",
                      "loop_scalar_loads": "ldg_scalar", "loop_cp_async": "cp.async", "loop_divisions": "div"}
CONV_PASSES = {"_conv2d_forward_kernel": "forward", "_conv2d_input_grad_kernel": "input grad",
               "_conv2d_weight_grad_kernel": "weight grad"}
REFERENCE_KERNEL = "_reference_matmul_kernel"


def loop_table(table: pd.DataFrame) -> pd.DataFrame:
    """The compiled rows with a main loop, main-loop columns under short headers (issue/tc: issue_per_tensor),
    kernels without their leading underscore and ``_kernel``; sorted by kernel, target, dtypes, config."""
    rows = table[table.loop_instructions.notna()].assign(kernel=lambda t: t.kernel.map(_short))
    rows = rows.sort_values(["kernel", "target", "dtypes", "layouts", "config"])
    integers = ["registers", "spill_bytes", "shared_bytes", "loop_instructions", "mma_count", "wgmma_wait_depth",
                "hgmma_register_a", "loop_scalar_loads", "loop_cp_async", "loop_divisions"]
    rows[integers] = rows[integers].astype("Int64")
    return rows[list(LOOP_TABLE_COLUMNS)].rename(columns=LOOP_TABLE_COLUMNS).reset_index(drop=True)


def _rows_per_case(table: pd.DataFrame) -> pd.DataFrame:
    """Compiled rows with a main loop, one per case each serves, with the case's variant, layer, dtype, layout."""
    rows = table[(table.status == "ok") & table.issue_per_tensor.notna()]
    rows = rows.assign(case=rows.case_list.str.split(";")).explode("case", ignore_index=True)
    parts = pd.DataFrame(rows.case.str.split("/").tolist(), index=rows.index,
                         columns=["variant", "layer", "dtype", "layout"])
    return rows.join(parts).query("variant != @DROP_IN")


def loop_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per conv (variant, layer, pass, target, dtype, layout): the shipped config with the least issue_per_tensor,
    its registers, spills, shared memory and main-loop columns; the reference GEMM's least issue_per_tensor on the
    same layer's forward GEMM, dtype and target, and its config; issue_vs_reference = the conv's / the
    reference's. Only compilations with status ok and an MMA loop count. Also the config's occupancy."""
    rows = _rows_per_case(table)
    keys = ["variant", "layer", "target", "dtype"]
    best = rows.sort_values(["issue_per_tensor", "config"]).drop_duplicates([*keys, "kernel", "layout"])
    reference = best[best.kernel == REFERENCE_KERNEL][[*keys, "config", "issue_per_tensor"]].rename(
        columns={"config": "reference_config", "issue_per_tensor": "reference_issue_per_tensor"})
    conv_rows = best[best.kernel.isin(CONV_PASSES)].merge(reference, on=keys, how="left")
    conv_rows["pass"] = conv_rows.kernel.map(CONV_PASSES)
    conv_rows["issue_vs_reference"] = (conv_rows.issue_per_tensor / conv_rows.reference_issue_per_tensor).round(2)
    columns = ["variant", "layer", "pass", "target", "dtype", "layout", "kernel", "config", "registers",
               "spill_bytes", "shared_bytes", "occupancy", *sass_loop.LOOP_COLUMNS, "reference_config",
               "reference_issue_per_tensor", "issue_vs_reference"]
    order = {name: i for i, name in enumerate(CONV_PASSES.values())}
    return conv_rows[columns].sort_values(["variant", "layer", "pass", "target", "dtype", "layout"],
                                          key=lambda c: c.map(order) if c.name == "pass" else c, ignore_index=True)


# ----------------------------------------------------------------------------------------------------------------
# The conv kernels' issue per tensor-core cycle: now, against the reference GEMM and the before-state.

BEFORE_FILE = "conv_loops_before.csv"
BEFORE_COMMIT = "f551264"
# Below 1 the schedulers could keep the tensor cores busy; the goals of the conv rewrite (the reference GEMM's
# range, with room for the conv's address work) per target.
ISSUE_GOALS = {"sm_90": 0.5, "sm_80": 0.6}
VARIANT_ORDER = list(CONV_LAYERS)


def has_main_loops(table: pd.DataFrame) -> bool:
    """Whether an inspection table holds the main-loop columns and a conv kernel measured with them."""
    return "issue_per_tensor" in table and bool(
        (table.kernel.isin(CONV_PASSES) & table.issue_per_tensor.notna()).any())


def read_before(folder: Path) -> pd.DataFrame | None:
    """The committed before-state (``conv_loops_before.csv``: the conv kernels of commit f551264 measured with
    today's ``sass_loop``) in ``folder``, or None."""
    path = Path(folder) / BEFORE_FILE
    return pd.read_csv(path) if path.is_file() else None


def issue_comparison(table: pd.DataFrame, before: pd.DataFrame | None = None, dtype: str = "bf16",
                     layout: str = "channels_last") -> pd.DataFrame:
    """Per target, variant, layer and pass of ``dtype``/``layout``: the best shipped config and its
    issue_per_tensor (``loop_summary``), the reference GEMM's best and the quotient, and the before-state's
    best (``before``: rows of conv_loops_before.csv) as before_config, before_issue_per_tensor; a pass with no
    compilation of status ok now but one before keeps its row, with an empty config. Sorted by target
    (``TARGETS`` order), variant, layer, pass."""
    summary = loop_summary(table)
    summary = summary[(summary.dtype == dtype) & (summary.layout == layout)]
    columns = ["target", "variant", "layer", "pass", "config", "issue_per_tensor", "reference_config",
               "reference_issue_per_tensor", "issue_vs_reference"]
    out = summary[columns].copy()
    keys = ["target", "variant", "layer", "pass"]
    if before is not None and len(before):
        rows = before[(before.dtype == dtype) & (before.layout == layout) & before.issue_per_tensor.notna()]
        rows = rows.assign(variant=rows.variant.astype(str))
        best = rows.sort_values(["issue_per_tensor", "config"]).drop_duplicates(keys)
        out = out.merge(best[[*keys, "config", "issue_per_tensor"]].rename(
            columns={"config": "before_config", "issue_per_tensor": "before_issue_per_tensor"}), on=keys, how="outer")
    else:
        out = out.assign(before_config=None, before_issue_per_tensor=float("nan"))
    order = {name: i for i, name in enumerate([*TARGETS, *VARIANT_ORDER, *CONV_PASSES.values()])}
    return out.sort_values(keys, key=lambda c: c.map(lambda v: order.get(v, v)) if c.name != "layer" else c,
                           ignore_index=True)


def plot_issue_per_tensor(table: pd.DataFrame, before: pd.DataFrame | None, path: Path, dtype: str = "bf16",
                          layout: str = "channels_last") -> Path:
    """Issue slots per tensor-core cycle of each conv layer x pass's best shipped config (``loop_summary``), a
    panel per NVIDIA target, against the reference GEMM's best on the layer's forward GEMM and the before-state
    (dashed); log scale, with 1.0 (above it the tensor cores cannot be kept busy) and the goal
    (``ISSUE_GOALS``). Static analysis of compiled SASS, not a GPU measurement."""
    data = issue_comparison(table, before, dtype, layout)
    targets = [t for t in ISSUE_GOALS if t in set(data.target)]
    slots = [(v, layer, p) for v in VARIANT_ORDER for layer in (c.name for c in CONV_LAYERS[v])
             for p in CONV_PASSES.values()]
    x = {slot: i + 0.8 * (i // 3) for i, slot in enumerate(slots)}  # a gap after each layer's three passes
    fig = Figure(figsize=(15, 4.2 * max(len(targets), 1) + 1.2), layout="constrained")
    axes = fig.subplots(max(len(targets), 1), 1, squeeze=False)[:, 0]
    pass_colours = dict(zip(CONV_PASSES.values(), ("tab:blue", "tab:orange", "tab:green"), strict=True))
    for ax, target in zip(axes, targets, strict=False):
        rows = data[data.target == target]
        for (variant, layer), group in rows.groupby(["variant", "layer"], sort=False):
            xs = [x[(variant, layer, p)] for p in group["pass"]]
            ax.plot(xs, group.issue_per_tensor, color="tab:blue", lw=1, zorder=3)
            ax.scatter(xs, group.issue_per_tensor, c=[pass_colours[p] for p in group["pass"]], s=40, zorder=4,
                       edgecolors="black", linewidths=0.5)
            for slot_x, value in zip(xs, group.issue_per_tensor, strict=True):
                if pd.isna(value):  # no compilation of status ok (spills, too much shared memory)
                    ax.text(slot_x, 0.04, "none ok", transform=ax.get_xaxis_transform(), rotation=90, ha="center",
                            va="bottom", fontsize=7, color="red")
            if group.before_issue_per_tensor.notna().any():
                ax.plot(xs, group.before_issue_per_tensor, color="tab:red", ls="--", lw=1, marker="s",
                        markerfacecolor="none", markersize=6, zorder=2)
            reference = group.reference_issue_per_tensor.dropna()
            if len(reference):
                ax.hlines(reference.iloc[0], min(xs) - 0.35, max(xs) + 0.35, color="black", lw=2, zorder=3)
        ax.axhline(1.0, color="0.3", lw=1)
        ax.text(0.002, 1.0, " 1.0: tensor cores cannot be kept busy above", transform=ax.get_yaxis_transform(),
                va="bottom", fontsize=8, color="0.3")
        goal = ISSUE_GOALS[target]
        ax.axhline(goal, color="tab:green", lw=1, ls=":")
        ax.text(0.002, goal, f" goal {goal:g}", transform=ax.get_yaxis_transform(), va="top", fontsize=8,
                color="tab:green")
        ax.set_yscale("log")
        ax.set_ylabel("issue slots per tensor-core cycle")
        ax.set_title(f"{target} (tensor rates of an {'H100' if target == 'sm_90' else 'A100'})", fontsize=10,
                     loc="left")
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.set_xticks([x[s] for s in slots], [f"{s[1]} {_PASS_SHORT[s[2]]}" for s in slots], rotation=90,
                      fontsize=7)
        middle = len(slots) // 2
        ax.axvline((x[slots[middle - 1]] + x[slots[middle]]) / 2, color="0.5", lw=0.8)
        for variant in VARIANT_ORDER:
            own = [x[s] for s in slots if s[0] == variant]
            ax.text(sum(own) / len(own), 0.97, VARIANT_TITLES[variant], transform=ax.get_xaxis_transform(),
                    ha="center", va="top", fontsize=9)
    handles = [Line2D([], [], color="tab:blue", marker="o", markerfacecolor=colour, markeredgecolor="black",
                      label=f"now, best shipped config: {name}") for name, colour in pass_colours.items()]
    handles += [Line2D([], [], color="tab:red", ls="--", marker="s", markerfacecolor="none",
                       label=f"before (commit {BEFORE_COMMIT}), best config"),
                Line2D([], [], color="black", lw=2, label="reference GEMM, best config (the layer's forward GEMM)")]
    fig.legend(handles=handles, loc="outside lower center", ncols=5, fontsize=8, frameon=False)
    versions = ", ".join(sorted(set(table.triton.astype(str))))
    fig.suptitle(f"Conv main loops, {dtype} {layout}, AlexNet layers at batch {BATCH}: issue slots per tensor-core "
                 f"cycle = loop instructions per warp / its MMAs' tensor cycles\nStatic analysis of compiled SASS "
                 f"(Triton {versions}, compiled ahead of time, not run): not a GPU measurement. Lower is better.",
                 fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


_PASS_SHORT = {"forward": "fwd", "input grad": "dgrad", "weight grad": "wgrad"}
VARIANT_TITLES = {"2012": "AlexNet 2012", "torchvision": "torchvision AlexNet"}
