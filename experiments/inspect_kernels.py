"""Compile every Triton kernel ahead of time for real GPUs and record what the compiler made of it.

Runs without a GPU. Each op's launchers are called on AlexNet's full-size
shapes (batch 128) with launches captured instead of run, so every kernel is
specialised exactly as a real launch would be (16-byte alignment, stride-1
and divisibility hints). Each captured kernel is then compiled with every GPU
config it can be launched with, for each target, and its cubin is read with
the ``cuobjdump`` that ships in Triton's wheel.

Writes reports/kernels/inspection.csv, one row per distinct compilation:
kernel, config, target, dtype/layout cases, registers per thread, spill
bytes, shared memory, theoretical occupancy, tensor-core instructions
(HMMA/HGMMA), asynchronous copies (cp.async = LDGSTS, TMA = UTMALDG), compile
time. Exits 1 when a config fails to compile, spills, or needs more shared
memory than the target has.

    python experiments/inspect_kernels.py [--ops conv] [--cases '2012/conv1/*'] [--targets 80 90]
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile

os.environ.pop("TRITON_INTERPRET", None)  # this process compiles for GPUs: never the interpreter
os.environ["ALEXNET_TRITON_MODE"] = "gpu"
# An empty Triton cache: every kernel is really compiled, and compile times are real.
os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="inspect_kernels_")
atexit.register(shutil.rmtree, os.environ["TRITON_CACHE_DIR"], ignore_errors=True)

import csv  # noqa: E402
import fnmatch  # noqa: E402
import importlib  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import triton  # noqa: E402
from alexnet_triton.kernels import conv, cross_entropy, dropout, linear, lrn, lrn_max_pool, max_pool, runtime, sgd  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource, make_backend  # noqa: E402
from triton.runtime.jit import create_function_from_signature  # noqa: E402

from alexnet_triton.architecture import CONV_LAYERS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
BATCH = 128
# (shared memory per SM, per block) in bytes; 64 warps and 64K registers per SM on both.
SHARED_LIMITS = {80: (167936, 166912), 90: (233472, 232448)}
DTYPES = {"fp16": (torch.float16, "ieee"), "bf16": (torch.bfloat16, "ieee"),
          "fp32-ieee": (torch.float32, "ieee"), "fp32-tf32": (torch.float32, "tf32")}
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def conv_cases():
    """Yield (case label, launcher thunk) for every AlexNet conv layer, dtype and layout."""
    for variant, layers in CONV_LAYERS.items():
        for layer in layers:
            for dtype_name, (dtype, precision) in DTYPES.items():
                for layout_name, layout in LAYOUTS.items():
                    def run(layer=layer, dtype=dtype, precision=precision, layout=layout):
                        x = torch.empty(BATCH, layer.in_channels, layer.size, layer.size, dtype=dtype,
                                        memory_format=layout)
                        w = torch.empty(layer.out_channels, layer.in_channels // layer.groups, layer.kernel,
                                        layer.kernel, dtype=dtype)
                        b = torch.empty(layer.out_channels, dtype=dtype)
                        geometry = dict(stride=layer.stride, padding=layer.padding, groups=layer.groups,
                                        precision=precision)
                        y = conv.conv2d_forward(x, w, b, relu=True, **geometry)
                        conv.conv2d_input_grad(y, w, x.shape, y=y, memory_format=layout, **geometry)
                        conv.conv2d_weight_grad(y, x, w.shape, y=y, **geometry)
                    yield f"{variant}/{layer.name}/{dtype_name}/{layout_name}", run


def pool_cases():
    """Yield (case label, launcher thunk) for AlexNet's 3x3/2 max pools (after conv1, conv2, conv5)."""
    for variant, layers in CONV_LAYERS.items():
        for layer in layers:
            if layer.name not in ("conv1", "conv2", "conv5"):
                continue
            for dtype_name, (dtype, _) in DTYPES.items():
                for layout_name, layout in LAYOUTS.items():
                    def run(layer=layer, dtype=dtype, layout=layout):
                        x = torch.empty(BATCH, layer.out_channels, layer.out_size, layer.out_size, dtype=dtype,
                                        memory_format=layout)
                        y, window = max_pool.max_pool2d_forward(x, 3, 2)
                        max_pool.max_pool2d_backward(y, window, x.shape, 3, 2, memory_format=layout)
                    yield f"{variant}/pool-after-{layer.name}/{dtype_name}/{layout_name}", run


def _after_lrn_layers(label: str, launch):
    """Yield (case label, thunk running ``launch(x)``) for x = the conv1 and conv2 outputs of the 2012 net (where
    its LRN runs), every dtype and layout."""
    for layer in CONV_LAYERS["2012"][:2]:
        for dtype_name, (dtype, _) in DTYPES.items():
            for layout_name, layout in LAYOUTS.items():
                def run(layer=layer, dtype=dtype, layout=layout):
                    launch(torch.empty(BATCH, layer.out_channels, layer.out_size, layer.out_size, dtype=dtype,
                                       memory_format=layout))
                yield f"2012/{label}-after-{layer.name}/{dtype_name}/{layout_name}", run


def lrn_cases():
    """Yield (case label, launcher thunk) for the 2012 net's LRN (size 5) after conv1 and conv2."""
    def launch(x):
        lrn.lrn_backward(lrn.lrn_forward(x, 5, 1e-4, 0.75, 2.0), x, 5, 1e-4, 0.75, 2.0)
    yield from _after_lrn_layers("lrn", launch)


def lrn_pool_cases():
    """Yield (case label, launcher thunk) for the 2012 net's fused LRN + 3x3/2 max-pool after conv1 and conv2."""
    def launch(x):
        y, window = lrn_max_pool.lrn_max_pool2d_forward(x, 5, 1e-4, 0.75, 2.0, 3, 2)
        lrn_max_pool.lrn_max_pool2d_backward(y, window, x, 5, 1e-4, 0.75, 2.0, 3, 2)
    yield from _after_lrn_layers("lrn-pool", launch)


def cross_entropy_cases():
    """Yield (case label, launcher thunk) for the loss on fc8's logits [128, 1000], every dtype, all reductions."""
    for dtype_name, (dtype, _) in DTYPES.items():
        def run(dtype=dtype):
            logits = torch.empty(BATCH, 1000, dtype=dtype)
            target = torch.zeros(BATCH, dtype=torch.int64)
            for reduction in cross_entropy.REDUCTIONS:
                loss, lse = cross_entropy.cross_entropy_forward(logits, target, reduction)
                cross_entropy.cross_entropy_backward(torch.empty_like(loss), logits, target, lse, reduction)
        yield f"2012/cross-entropy-fc8/{dtype_name}/rows", run


def _alexnet_parameter_shapes():
    """(variant, name, shape) of every weight and bias of both AlexNet variants (fc6 takes 256 x 6 x 6 features)."""
    for variant, layers in CONV_LAYERS.items():
        for layer in layers:
            yield variant, layer.name, (layer.out_channels, layer.in_channels // layer.groups, layer.kernel,
                                        layer.kernel)
            yield variant, f"{layer.name}-bias", (layer.out_channels,)
        for name, (fan_in, fan_out) in {"fc6": (9216, 4096), "fc7": (4096, 4096), "fc8": (4096, 1000)}.items():
            yield variant, name, (fan_out, fan_in)
            yield variant, f"{name}-bias", (fan_out,)


def sgd_cases():
    """Yield (case label, launcher thunk) for two SGD steps (first and later) of every AlexNet parameter:
    torch's update with and without Nesterov momentum and the paper's, momentum 0.9, weight decay 5e-4."""
    for variant, name, shape in _alexnet_parameter_shapes():
        for dtype_name, dtype in {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}.items():
            def run(shape=shape, dtype=dtype):
                param, grad = torch.empty(shape, dtype=dtype), torch.empty(shape, dtype=dtype)
                for update, nesterov in (("pytorch", False), ("pytorch", True), ("paper", False)):
                    hyper = dict(lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=nesterov, update=update)
                    buffer = sgd.sgd_step(param, grad, None, **hyper)
                    sgd.sgd_step(param, grad, buffer, **hyper)
            yield f"{variant}/sgd-{name}/{dtype_name}/contiguous", run


FC_LAYERS = {"fc6": (9216, 4096), "fc7": (4096, 4096), "fc8": (4096, 1000)}


def linear_cases():
    """Yield (case label, launcher thunk) for fc6/fc7/fc8 at batch 128, every dtype: fc6 and fc7 with the 2012
    net's fused ReLU + dropout 0.5 (backward masked by y > 0), fc8 plain, and fc7 with dropout but no ReLU
    (the backward regenerates the mask: the other specialisation of the backward kernels)."""
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


def dropout_cases():
    """Yield (case label, launcher thunk) for the torchvision net's standalone dropout (fc6's input), every dtype."""
    for dtype_name, (dtype, _) in DTYPES.items():
        def run(dtype=dtype):
            x = torch.empty(BATCH, FC_LAYERS["fc6"][0], dtype=dtype)
            dropout.dropout_backward(dropout.dropout_forward(x, 0.5, 1234), 0.5, 1234)
        yield f"torchvision/dropout-before-fc6/{dtype_name}/rowmajor", run


OPS = {"conv": conv_cases, "pool": pool_cases, "lrn": lrn_cases, "lrn_pool": lrn_pool_cases,
       "cross_entropy": cross_entropy_cases, "sgd": sgd_cases, "linear": linear_cases, "dropout": dropout_cases}


@dataclass
class Compilation:
    """One distinct (kernel, specialisation, config, target) and the cases that launch it."""

    module: str
    kernel: str
    signature: dict
    constexprs: dict
    attrs: dict
    options: dict
    target: int
    config: str
    cases: list[str] = field(default_factory=list)


def collect(ops: list[str], targets: list[int], patterns: list[str]) -> list[Compilation]:
    """Capture the launches of every case matching a pattern; expand over configs and targets, deduplicated."""
    compilations: dict[tuple, Compilation] = {}
    backends = {cap: make_backend(GPUTarget("cuda", cap, 32)) for cap in targets}
    binders = {}
    for op in ops:
        for case, run in OPS[op]():
            if not any(fnmatch.fnmatch(case, pattern) for pattern in patterns):
                continue
            with runtime.capture_launches() as launches:
                run()
            for launch in launches:
                kernel = launch.kernel
                for config in launch.candidates:
                    for cap, backend in backends.items():
                        if (kernel, cap) not in binders:
                            binders[kernel, cap] = create_function_from_signature(
                                kernel.signature, kernel.params, backend)
                        kwargs = dict(launch.args, **config.kwargs, num_warps=config.num_warps,
                                      num_stages=config.num_stages)
                        bound, specialization, options = binders[kernel, cap](**kwargs)
                        options, signature, constexprs, attrs = kernel._pack_args(
                            backend, kwargs, bound, specialization, options)
                        key = (kernel.fn.__name__, repr(signature), repr(sorted(constexprs.items())),
                               repr(sorted(attrs.items())), runtime.config_name(config), cap)
                        if key not in compilations:
                            compilations[key] = Compilation(kernel.fn.__module__, kernel.fn.__name__, signature,
                                                            constexprs, attrs, options.__dict__, cap,
                                                            runtime.config_name(config))
                        compilations[key].cases.append(case)
    return list(compilations.values())


def occupancy(cap: int, registers: int, warps: int, shared: int) -> float:
    """Theoretical fraction of the SM's 64 warp slots a kernel can fill."""
    per_warp_registers = -(-registers * 32 // 256) * 256
    by_registers = 65536 // (per_warp_registers * warps) if registers else 32
    by_shared = SHARED_LIMITS[cap][0] // (shared + 1024) if shared else 32
    blocks = min(32, 64 // warps, by_registers, by_shared)
    return blocks * warps / 64


def compile_one(job: Compilation) -> dict:
    """Compile one job and read its cubin; returns a CSV row."""
    kernel = getattr(importlib.import_module(job.module), job.kernel)
    row = dict(kernel=job.kernel, config=job.config, target=f"sm_{job.target}",
               dtypes=" ".join(sorted({c.split("/")[2] for c in job.cases})),
               layouts=" ".join(sorted({c.split("/")[3] for c in job.cases})),
               cases=len(job.cases), example_case=job.cases[0])
    start = time.perf_counter()
    try:
        compiled = triton.compile(ASTSource(kernel, job.signature, job.constexprs, job.attrs),
                                  target=GPUTarget("cuda", job.target, 32), options=job.options)
    except Exception as error:  # report every failure in the table, then fail the run
        return dict(row, status=f"compile error: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
    row["compile_s"] = round(time.perf_counter() - start, 2)
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(compiled.asm["cubin"])
        cubin.flush()
        usage = subprocess.run([CUOBJDUMP, "--dump-resource-usage", cubin.name], capture_output=True,
                               text=True, check=True).stdout
        sass = subprocess.run([CUOBJDUMP, "--dump-sass", cubin.name], capture_output=True, text=True,
                              check=True).stdout
    fields = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", usage))
    registers = int(fields["REG"])
    spills = int(fields["STACK"]) + int(fields["LOCAL"])
    shared = compiled.metadata.shared + int(fields["SHARED"])
    warps = job.options["num_warps"]
    mma = [name for name, op in (("HGMMA", "HGMMA"), ("HMMA", "HMMA."), ("DMMA", "DMMA")) if op in sass]
    copies = [name for name, op in (("cp.async", "LDGSTS"), ("TMA", "UTMALDG")) if op in sass]
    status = "ok"
    if spills:
        status = "spills"
    if shared > SHARED_LIMITS[job.target][1]:
        status = "shared memory over the limit"
    return dict(row, registers=registers, spill_bytes=spills, shared_bytes=shared,
                occupancy=round(occupancy(job.target, registers, warps, shared), 3),
                mma="+".join(mma) or "none", async_copy="+".join(copies) or "none", status=status)


COLUMNS = ["kernel", "config", "target", "dtypes", "layouts", "registers", "spill_bytes", "shared_bytes",
           "occupancy", "mma", "async_copy", "compile_s", "cases", "example_case", "status"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", nargs="+", default=list(OPS), choices=list(OPS))
    parser.add_argument("--cases", nargs="+", default=["*"],
                        help="glob patterns on case labels variant/layer/dtype/layout, e.g. '2012/conv1/*'")
    parser.add_argument("--targets", nargs="+", type=int, default=[80, 90], choices=sorted(SHARED_LIMITS))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "kernels" / "inspection.csv")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    jobs = collect(args.ops, args.targets, args.cases)
    print(f"{len(jobs)} distinct compilations for ops {args.ops}, targets {args.targets}", flush=True)
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(compile_one, jobs))
    rows.sort(key=lambda r: (r["kernel"], r["target"], r["dtypes"], r["layouts"], r["config"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    bad = [r for r in rows if r["status"] != "ok"]
    print(f"wrote {args.out} ({len(rows)} rows) in {time.perf_counter() - started:.0f} s; "
          f"{len(bad)} failing", flush=True)
    for r in bad:
        print(f"FAIL {r['kernel']} {r['config']} {r['target']} {r['example_case']}: {r['status']}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
