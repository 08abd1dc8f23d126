"""Main-loop measures from hand-made SASS and amdgcn snippets, in the formats cuobjdump, nvdisasm and LLVM print."""

from __future__ import annotations

import pytest

from alexnet_triton.study.inspection import sass_loop


def cuobjdump(lines: list[str]) -> str:
    """``cuobjdump --dump-sass`` text: each instruction at its address, its encoding on a comment line after."""
    out = ["\tcode for sm_90a", "\t\tFunction : _kernel"]
    for index, line in enumerate(lines):
        out.append(f"        /*{16 * index:04x}*/                   {line} ;    /* 0x000fe20000000f00 */")
        out.append("                                                          /* 0x000fe20000000f00 */")
    return "\n".join(out)


# A wgmma loop from 0x0030 to the branch at 0x00e0 (12 instructions), after an MMA-free prologue and before an
# epilogue; the A operand of the first HGMMA comes from registers.
HGMMA_KERNEL = cuobjdump([
    "LDC R1, c[0x0][0x28]",
    "LDGSTS.E.BYPASS.128 [R100], [R10.64], P1",
    "LDGDEPBAR",
    "DEPBAR.LE SB0, 0x1",  # 0x0030: loop head
    "@P3 LDG.E.U16 R29, [R18.64]",
    "I2F.U32.RP R14, R15",
    "STS.U16 [R76+0x4000], R29",
    "WARPGROUP.ARRIVE",
    "HGMMA.64x64x16.F32.BF16 R24, R56, gdesc[UR20].tnspB, R24",
    "HGMMA.64x64x16.F32.BF16 R24, gdesc[UR8].tnspB, R24, gsb0",
    "WARPGROUP.DEPBAR.LE gsb0, 0x1",
    "LDGSTS.E.BYPASS.128 [R27], [R14.64], P2",
    "LDG.E.128 R4, [R2.64]",
    "NOP",
    "@P0 BRA 0x30",  # 0x00e0
    "STG.E [R2.64], R24",
    "EXIT",
    "BRA 0x110",  # the trap loop at the end: backward, but no MMA
])


def test_hgmma_loop_counts_and_issue_per_tensor():
    loop = sass_loop.measure_sass(HGMMA_KERNEL, "sm_90")
    assert loop.loop_instructions == 12 and loop.mma_count == 2
    assert (loop.mma_shapes, loop.mma_input, loop.hgmma_register_a) == ("64x64x16", "bf16", 1)
    assert loop.non_mma_per_mma == 5.0
    assert (loop.loop_scalar_loads, loop.loop_vector_loads, loop.loop_cp_async, loop.loop_tma) == (1, 1, 1, 0)
    assert (loop.loop_shared_stores, loop.wgmma_wait_depth, loop.loop_divisions) == (1, 1, 1)
    # 2 HGMMAs x 2*64*64*16 flop / 4 warps / 1024 flop/clk = 64 clk per warp
    assert loop.issue_per_tensor == pytest.approx(12 / 64, abs=1e-3)


# nvdisasm style: labels and branches to them; fp16 HMMA has no input-type suffix. An outer loop holds the
# MMA loop and an MMA-free loop comes first: the innermost loop with the most MMAs is the main loop.
NVDISASM_KERNEL = """
        /*0000*/                   MOV R2, RZ ;
.L_x_0:
        /*0010*/                   IADD3 R2, R2, 0x1, RZ ;
        /*0020*/                   ISETP.GE.AND P0, PT, R2, 0x4, PT ;
        /*0030*/                   IMAD R3, R2, R2, RZ ;
        /*0040*/                   IMAD R4, R3, R2, RZ ;
        /*0050*/                   IMAD R5, R4, R2, RZ ;
        /*0060*/              @!P0 BRA `(.L_x_0) ;
.L_x_1:
        /*0070*/                   MOV R6, RZ ;
.L_x_2:
        /*0080*/                   LDSM.16.M88.4 R8, [R20] ;
        /*0090*/                   HMMA.16816.F32 R40, R8, R12, R40 ;
        /*00a0*/                   HMMA.16816.F32 R44, R8, R14, R44 ;
        /*00b0*/                   I2F.RP R16, R9 ;
        /*00c0*/                   LDG.E R17, [R18.64] ;
        /*00d0*/               @P1 BRA `(.L_x_2) ;
        /*00e0*/                   IADD3 R6, R6, 0x1, RZ ;
        /*00f0*/               @P2 BRA `(.L_x_1) ;
        /*0100*/                   EXIT ;
"""


def test_hmma_loop_in_nvdisasm_format_is_the_innermost_with_the_most_mma():
    loop = sass_loop.measure_sass(NVDISASM_KERNEL, "sm_80")
    assert (loop.loop_instructions, loop.mma_count, loop.mma_shapes, loop.mma_input) == (6, 2, "16x8x16", "f16")
    assert (loop.hgmma_register_a, loop.wgmma_wait_depth) == (None, None)
    assert (loop.loop_scalar_loads, loop.loop_divisions) == (1, 1)
    # 2 HMMAs x 2*16*8*16 flop / 1 warp / 512 flop/clk = 16 clk
    assert loop.issue_per_tensor == pytest.approx(6 / 16, abs=1e-3)


def test_no_main_loop_without_mma_in_a_loop():
    straight = cuobjdump(["HMMA.16816.F32.BF16 R40, R8, R12, R40", "@P0 BRA 0x30", "NOP", "EXIT"])
    assert sass_loop.measure_sass(straight, "sm_80") is None
    assert sass_loop.measure_sass(cuobjdump(["IADD3 R2, R2, 0x1, RZ", "@P0 BRA 0x0", "EXIT"]), "sm_90") is None


@pytest.mark.parametrize("opcode, shape, dtype, flops", [
    ("HGMMA.64x64x16.F32.BF16", "64x64x16", "bf16", 2 * 64 * 64 * 16 / 4),
    ("HGMMA.64x32x16.F32", "64x32x16", "f16", 2 * 64 * 32 * 16 / 4),
    ("HGMMA.64x64x8.F32.TF32", "64x64x8", "tf32", 2 * 64 * 64 * 8 / 4),
    ("HMMA.16816.F32.BF16", "16x8x16", "bf16", 2 * 16 * 8 * 16),
    ("HMMA.1688.F32.TF32", "16x8x8", "tf32", 2 * 16 * 8 * 8),
])
def test_nvidia_mma_shapes(opcode, shape, dtype, flops):
    assert sass_loop.nvidia_mma(opcode) == sass_loop.Mma(shape, dtype, flops)


@pytest.mark.parametrize("opcode, shape, dtype, flops", [
    ("v_mfma_f32_32x32x8_bf16", "32x32x8", "bf16", 2 * 32 * 32 * 8),
    ("v_mfma_f32_16x16x16_f16", "16x16x16", "f16", 2 * 16 * 16 * 16),
    ("v_mfma_f32_32x32x4_xf32", "32x32x4", "xf32", 2 * 32 * 32 * 4),
    ("v_mfma_f32_32x32x2_f32", "32x32x2", "f32", 2 * 32 * 32 * 2),
    ("v_mfma_f32_4x4x1_16b_f32", "4x4x1x16b", "f32", 2 * 4 * 4 * 1 * 16),
])
def test_amd_mma_shapes(opcode, shape, dtype, flops):
    assert sass_loop.amd_mma(opcode) == sass_loop.Mma(shape, dtype, flops)


AMDGCN_KERNEL = """_kernel:                                ; @_kernel
; %bb.0:
\ts_load_dwordx2 s[0:1], s[0:1], 0x0
\ts_mov_b32 s72, 0
.LBB0_5:                                ; =>This Inner Loop Header: Depth=1
.Ltmp32:
\t.loc\t1 54 23                         ; conv.py:54:23
\ts_add_i32 s72, s72, 1
\tbuffer_load_ushort v36, v32, s[44:47], 0 offen
\tbuffer_load_dwordx4 v[20:23], v20, s[36:39], 0 offen
\tbuffer_load_dword v24, v22, s[36:39], 0 offen lds
\tv_rcp_iflag_f32_e32 v3, v3
\tds_write_b64 v41, v[46:47] offset:8192
\tds_read_b64 v[46:47], v42 offset:8192
\ts_waitcnt lgkmcnt(0)
\tv_mfma_f32_32x32x8_bf16 v[0:15], v[46:47], v[56:57], v[0:15]
\tv_mfma_f32_32x32x8_bf16 v[0:15], v[48:49], v[58:59], v[0:15]
\ts_cmp_lg_u32 s72, s60
\ts_cbranch_scc1 .LBB0_5
; %bb.6:
\tglobal_store_dwordx4 v[0:1], v[0:3], off
\ts_endpgm
"""


def test_amdgcn_loop():
    loop = sass_loop.measure_amdgcn(AMDGCN_KERNEL)
    assert (loop.loop_instructions, loop.mma_count, loop.mma_shapes, loop.mma_input) == (12, 2, "32x32x8", "bf16")
    assert (loop.loop_scalar_loads, loop.loop_vector_loads, loop.loop_cp_async, loop.loop_shared_stores) == (1, 1, 1, 1)
    assert (loop.loop_divisions, loop.hgmma_register_a, loop.wgmma_wait_depth) == (1, None, None)
    # 2 MFMAs x 2*32*32*8 flop / 512 flop/clk per SIMD = 64 clk
    assert loop.issue_per_tensor == pytest.approx(12 / 64, abs=1e-3)
