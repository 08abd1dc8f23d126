"""Ahead-of-time compile inspection: what each GPU target's compiler makes of every kernel, without a GPU.

``collect`` runs each op's launchers (``cases``) on AlexNet's full-size shapes (batch 128)
with launches captured instead of run (split-K slice counts as on an H100's SMs), and binds each launch with the
target's own backend, so every kernel is specialised as a real launch there would be
(16-byte alignment and divisibility hints; on AMD also the 32-bit pointer-range
hint that turns loads into buffer loads). ``inspect_kernels`` compiles every
(kernel, specialisation, config, target) once and reads the binary: NVIDIA
cubins with the ``cuobjdump`` in Triton's wheel, AMD code from the amdgcn
assembly's kernel info and metadata. ``tables`` and ``figures`` turn the table into headline numbers, main-loop
tables and figures.

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
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import pandas as pd
import triton

from ...kernels import runtime
from ..registries.gpus import CAPTURED
from . import sass_loop
from .cases import OPS
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
            with runtime.capture_launches() as launches, runtime.target(CAPTURED.sms):
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


def inspect_kernels(ops: list[str], targets: list[str], patterns: list[str], jobs: int,
                    kernels: list[str] | None = None) -> pd.DataFrame:
    """Collect and compile (``jobs`` processes) every matching case for ``targets``, of the kernels named in
    ``kernels`` (function names; None: every kernel); the table, sorted. ValueError naming any kernel in
    ``kernels`` that no matching case launches."""
    collected = collect(ops, targets, patterns)
    unknown = sorted(set(kernels or ()) - {job.kernel for job in collected})
    if unknown:
        raise ValueError(f"no case of {', '.join(ops)} matching {' '.join(patterns)} launches "
                         f"{', '.join(unknown)}")
    jobs_to_compile = [job for job in collected if kernels is None or job.kernel in kernels]
    with ProcessPoolExecutor(jobs) as pool:
        rows = list(pool.map(compile_one, jobs_to_compile))
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.sort_values(["kernel", "target", "dtypes", "layouts", "config"], ignore_index=True)
