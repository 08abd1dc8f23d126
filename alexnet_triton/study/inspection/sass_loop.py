"""The main loop of a compiled GEMM-like kernel, measured from its machine code.

Input: the SASS of one NVIDIA kernel (``cuobjdump --dump-sass`` with absolute branch addresses, or ``nvdisasm``
with ``.L_x_N:`` labels) or the amdgcn assembly of one AMD kernel. The main loop is the backward branch (its
target comes earlier in the code) whose body, the instructions from the target to the branch inclusive, holds
the most matrix instructions: HMMA (sm_80, mma.sync), HGMMA (sm_90, wgmma), v_mfma (gfx942); of loops with
equally many, the shortest (the innermost). A kernel without matrix instructions in a loop has no main loop.
Counts are static: every instruction of the body once, including ones a forward branch inside the loop may
skip on some iterations, and NOPs (issued like any other instruction).

Fields of ``MainLoop`` (also the inspection's columns), per warp (AMD: per wavefront) and loop iteration:
  loop_instructions   instructions in the body
  mma_count           matrix instructions in the body
  mma_shapes          their distinct M x N x K shapes, e.g. "64x64x16" (HGMMA.64x64x16.F32.BF16),
                      "16x8x16" (HMMA.16816), "16x8x8" (HMMA.1688.F32.TF32), "32x32x8" (v_mfma_f32_32x32x8_bf16);
                      an AMD multi-block MFMA appends its blocks: "4x4x1x16b"
  mma_input           their operand type: f16, bf16, tf32 (NVIDIA; SASS writes fp16 inputs with no suffix:
                      HMMA.16816.F32), xf32 (AMD's TF32-like type), f32 (AMD: exact fp32 MFMA)
  hgmma_register_a    HGMMAs whose A operand comes from registers (``HGMMA... R24, R56, gdesc[UR4]...``, against
                      ``R24, gdesc[UR4]...`` with both operands in shared memory); empty without HGMMA
  non_mma_per_mma     (loop_instructions - mma_count) / mma_count
  loop_scalar_loads   global loads of at most 4 bytes per thread: NVIDIA LDG without a .64/.128 modifier
                      (LDG.E.U16, LDG.E); AMD buffer_/global_load_ of a byte, short or dword
  loop_vector_loads   global loads of 8 or 16 bytes: LDG.E.64, LDG.E.128; buffer_/global_load_dwordx2..4
  loop_cp_async       asynchronous global -> shared copies: LDGSTS (cp.async); AMD direct-to-LDS loads
  loop_tma            TMA loads (UTMALDG); 0 off sm_90
  loop_shared_stores  shared memory stores: STS* (NVIDIA), ds_write* / ds_store* (AMD)
  wgmma_wait_depth    least N of ``WARPGROUP.DEPBAR.LE gsb0, 0xN`` in the loop: wgmma groups left in flight
                      across the wait (0: the loop waits for its own HGMMAs); empty without such a wait
  loop_divisions      runtime integer divisions / remainders: one ``I2F[.U32].RP`` (NVIDIA) or
                      ``v_rcp_iflag_f32`` (AMD) starts each reciprocal-based division sequence. On AMD, LLVM
                      hoists the reciprocal of a loop-invariant divisor out of the loop and leaves a
                      ``s/v_mul_hi_u32`` + correction sequence in it, which is not counted
  issue_per_tensor    loop_instructions / tensor cycles, where tensor cycles = sum over the loop's MMAs of
                      (2*M*N*K / warps issuing it jointly) / rate; HGMMA is issued by a warpgroup (4 warps),
                      HMMA by one warp, an MFMA by one wavefront (2*M*N*K*blocks). One scheduler issues about one
                      instruction per clock, so above 1 the loop cannot keep the tensor unit busy. Empty when the
                      rate is unknown.

Rates (``TENSOR_RATES``), dense flop per clock per SM sub-partition (NVIDIA: one of 4 warp schedulers) or per
SIMD (AMD: one of 4 per CU), from peak throughput / (units x boost clock):
  sm_90 (H100 SXM: 989 TFLOP/s bf16, 132 SMs, 1.83 GHz): f16/bf16 1024, tf32 512. HMMA (mma.sync) on sm_90
        uses the same rate, though it is not known to reach it: the ratio of such a loop is a lower bound.
  sm_80 (A100: 312 TFLOP/s bf16, 108 SMs, 1.41 GHz): f16/bf16 512, tf32 256.
  gfx942 (MI300X: 1307 TFLOP/s f16/bf16, 654 xf32, 163 f32 matrix; 304 CUs, 2.1 GHz): per CU 2048, 1024, 256,
        per SIMD f16/bf16 512, xf32 256, f32 64 (the f32 figure matches the 16 four-cycle passes the CDNA3
        ISA gives v_mfma_f32_32x32x2_f32: 4096 flop / 64 clk).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields

TENSOR_RATES = {
    ("sm_80", "f16"): 512, ("sm_80", "bf16"): 512, ("sm_80", "tf32"): 256,
    ("sm_90", "f16"): 1024, ("sm_90", "bf16"): 1024, ("sm_90", "tf32"): 512,
    ("gfx942", "f16"): 512, ("gfx942", "bf16"): 512, ("gfx942", "xf32"): 256, ("gfx942", "f32"): 64,
}


@dataclass(frozen=True)
class MainLoop:
    """Measures of a kernel's main loop (see the module docstring)."""

    loop_instructions: int
    mma_count: int
    mma_shapes: str
    mma_input: str
    hgmma_register_a: int | None
    non_mma_per_mma: float
    loop_scalar_loads: int
    loop_vector_loads: int
    loop_cp_async: int
    loop_tma: int
    loop_shared_stores: int
    wgmma_wait_depth: int | None
    loop_divisions: int
    issue_per_tensor: float | None


LOOP_COLUMNS = [f.name for f in fields(MainLoop)]


@dataclass(frozen=True)
class Instruction:
    opcode: str  # "HGMMA.64x64x16.F32.BF16", "v_mfma_f32_32x32x8_bf16"
    operands: str  # the rest, predicate removed
    branch_to: str | None  # a branch's target label (NVIDIA: "0x1940" or ".L_x_3")


@dataclass(frozen=True)
class Mma:
    shape: str
    input: str
    flops_per_warp: float  # 2*M*N*K(*blocks) / warps issuing it jointly


# ----------------------------------------------------------------------------------------------------------------
# Parsing: instructions in order, and label -> index of the instruction it names.

_SASS_LINE = re.compile(r"^\s*(?:/\*(?P<address>[0-9a-f]+)\*/)?\s*(?P<text>[@A-Z][^;]*?)\s*;")
_SASS_LABEL = re.compile(r"^\s*(?P<label>\.L\w+):")
_SASS_TARGET = re.compile(r"`\((?P<label>\.L\w+)\)|\b(?P<address>0x[0-9a-f]+)\b")


def parse_sass(sass: str) -> tuple[list[Instruction], dict[str, int]]:
    """SASS text -> instructions and labels (each instruction's address, as "0x1940", and any .L_x_N label)."""
    instructions: list[Instruction] = []
    labels: dict[str, int] = {}
    for line in sass.splitlines():
        if label := _SASS_LABEL.match(line):
            labels[label["label"]] = len(instructions)
            continue
        if not (match := _SASS_LINE.match(line)):
            continue
        if match["address"]:
            labels[hex(int(match["address"], 16))] = len(instructions)
        words = match["text"].split(None, 1)
        if words[0].startswith("@"):
            words = words[1].split(None, 1)
        opcode, operands = words[0], words[1] if len(words) > 1 else ""
        target = None
        if opcode.split(".")[0] == "BRA" and (found := list(_SASS_TARGET.finditer(operands))):
            target = found[-1]["label"] or hex(int(found[-1]["address"], 16))
        instructions.append(Instruction(opcode, operands, target))
    return instructions, labels


_AMDGCN_LINE = re.compile(r"^\s+(?P<opcode>[a-z][a-z0-9_]*)(?:\s+(?P<operands>[^;]*))?")
_AMDGCN_LABEL = re.compile(r"^(?P<label>[.\w$]+):")


def parse_amdgcn(asm: str) -> tuple[list[Instruction], dict[str, int]]:
    """amdgcn assembly -> instructions (directives and comments dropped) and labels."""
    instructions: list[Instruction] = []
    labels: dict[str, int] = {}
    for line in asm.splitlines():
        if label := _AMDGCN_LABEL.match(line):
            labels[label["label"]] = len(instructions)
        elif match := _AMDGCN_LINE.match(line):
            opcode, operands = match["opcode"], (match["operands"] or "").strip()
            target = operands.split(",")[0].strip() if opcode.startswith(("s_branch", "s_cbranch")) else None
            instructions.append(Instruction(opcode, operands, target))
    return instructions, labels


def find_main_loop(instructions: list[Instruction], labels: dict[str, int],
                   is_mma: Callable[[Instruction], bool]) -> list[Instruction] | None:
    """The body of the backward branch holding the most ``is_mma`` instructions (ties: the shortest body);
    None when no loop holds one."""
    best, best_key = None, (0, 0)
    for end, instruction in enumerate(instructions):
        start = labels.get(instruction.branch_to) if instruction.branch_to else None
        if start is None or start > end:
            continue
        body = instructions[start:end + 1]
        key = (sum(map(is_mma, body)), -len(body))
        if key[0] > 0 and key > best_key:
            best, best_key = body, key
    return best


# ----------------------------------------------------------------------------------------------------------------
# NVIDIA

_HMMA_SHAPES = {"16816": (16, 8, 16), "1688": (16, 8, 8), "1684": (16, 8, 4), "884": (8, 8, 4)}
_NVIDIA_INPUTS = {"F16": "f16", "BF16": "bf16", "TF32": "tf32"}


def _is_nvidia_mma(instruction: Instruction) -> bool:
    return instruction.opcode.split(".")[0] in ("HMMA", "HGMMA")


def nvidia_mma(opcode: str) -> Mma:
    """HGMMA.64x64x16.F32.BF16 -> 64x64x16 bf16, 2*64*64*16/4 flop per warp; HMMA.16816.F32 -> 16x8x16 f16."""
    name, shape, *types = opcode.split(".")
    m, n, k = (int(d) for d in shape.split("x")) if name == "HGMMA" else _HMMA_SHAPES[shape]
    inputs = [_NVIDIA_INPUTS[t] for t in types[1:] if t in _NVIDIA_INPUTS]
    warps = 4 if name == "HGMMA" else 1
    return Mma(f"{m}x{n}x{k}", inputs[-1] if inputs else "f16", 2 * m * n * k / warps)


def _nvidia_counts(body: list[Instruction]) -> dict:
    parts = [i.opcode.split(".") for i in body]
    hgmma = [i for i in body if i.opcode.startswith("HGMMA.")]
    waits = [int(i.operands.split(",")[-1], 16) for i in body
             if i.opcode == "WARPGROUP.DEPBAR.LE" and i.operands.startswith("gsb0")]
    return dict(
        hgmma_register_a=sum(i.operands.split(",")[1].strip().startswith("R") for i in hgmma) if hgmma else None,
        loop_scalar_loads=sum(p[0] == "LDG" and not {"64", "128"} & set(p) for p in parts),
        loop_vector_loads=sum(p[0] == "LDG" and bool({"64", "128"} & set(p)) for p in parts),
        loop_cp_async=sum(p[0] == "LDGSTS" for p in parts),
        loop_tma=sum(p[0] == "UTMALDG" for p in parts),
        loop_shared_stores=sum(p[0] == "STS" for p in parts),
        wgmma_wait_depth=min(waits) if waits else None,
        loop_divisions=sum(p[0] == "I2F" and p[-1] == "RP" for p in parts))


def measure_sass(sass: str, target: str) -> MainLoop | None:
    """The main loop of one kernel's SASS compiled for ``target`` ("sm_80", "sm_90"); None without one."""
    body = find_main_loop(*parse_sass(sass), _is_nvidia_mma)
    if body is None:
        return None
    return _measure(body, [nvidia_mma(i.opcode) for i in body if _is_nvidia_mma(i)], target, _nvidia_counts(body))


# ----------------------------------------------------------------------------------------------------------------
# AMD

_MFMA = re.compile(r"v_mfma_[a-z]\d+_(?P<m>\d+)x(?P<n>\d+)x(?P<k>\d+)(?:_(?P<blocks>\d+)b)?_?(?P<input>[a-z]+\d+)")


def _is_mfma(instruction: Instruction) -> bool:
    return instruction.opcode.startswith("v_mfma_")


def amd_mma(opcode: str) -> Mma:
    """v_mfma_f32_32x32x8_bf16 -> 32x32x8 bf16, 2*32*32*8 flop per wavefront; v_mfma_f32_4x4x1_16b_f32 ->
    4x4x1x16b f32, 2*4*4*1*16 (gfx942 spellings)."""
    match = _MFMA.match(opcode)
    m, n, k = int(match["m"]), int(match["n"]), int(match["k"])
    blocks = int(match["blocks"] or 1)
    shape = f"{m}x{n}x{k}" + (f"x{blocks}b" if blocks > 1 else "")
    return Mma(shape, match["input"], 2 * m * n * k * blocks)


def _amd_counts(body: list[Instruction]) -> dict:
    loads = [i for i in body if i.opcode.startswith(("buffer_load_", "global_load_"))]
    direct = [i for i in loads if "_lds_" in i.opcode or re.search(r"\blds\b", i.operands)]
    vector = [i for i in loads if i not in direct and re.search(r"dwordx\d|_b(?:64|96|128)$", i.opcode)]
    return dict(
        hgmma_register_a=None, loop_scalar_loads=len(loads) - len(direct) - len(vector),
        loop_vector_loads=len(vector), loop_cp_async=len(direct), loop_tma=0,
        loop_shared_stores=sum(i.opcode.startswith(("ds_write", "ds_store")) for i in body),
        wgmma_wait_depth=None, loop_divisions=sum(i.opcode.startswith("v_rcp_iflag_f32") for i in body))


def measure_amdgcn(asm: str, target: str = "gfx942") -> MainLoop | None:
    """The main loop of one kernel's amdgcn assembly; None without one."""
    body = find_main_loop(*parse_amdgcn(asm), _is_mfma)
    if body is None:
        return None
    return _measure(body, [amd_mma(i.opcode) for i in body if _is_mfma(i)], target, _amd_counts(body))


def _measure(body: list[Instruction], mmas: list[Mma], target: str, counts: dict) -> MainLoop:
    rates = [TENSOR_RATES.get((target, mma.input)) for mma in mmas]
    tensor_cycles = None if None in rates else sum(m.flops_per_warp / r for m, r in zip(mmas, rates, strict=True))
    return MainLoop(
        loop_instructions=len(body), mma_count=len(mmas),
        mma_shapes=" ".join(Counter(m.shape for m in mmas)), mma_input=" ".join(Counter(m.input for m in mmas)),
        non_mma_per_mma=round((len(body) - len(mmas)) / len(mmas), 2),
        issue_per_tensor=None if tensor_cycles is None else round(len(body) / tensor_cycles, 3), **counts)
