"""The modelled lower bound per conv kernel (``loop_model``) and the issue-per-tensor figure, on hand-made rows:
no compilation."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from alexnet_triton.study.inspection import compilation, figures, tables
from alexnet_triton.study.models import loop_model

CONV3 = ["2012/conv3/bf16/channels_last"]


def bound(**overrides) -> dict:
    arguments = dict(programs=132, iterations=100, loop_instructions=200, issue_per_tensor=0.5, warps=8, resident=1,
                     sms=132, clock=1e9, roofline_us=1.0)
    return loop_model.kernel_bound(**{**arguments, **overrides})


def test_lower_bound_of_a_hand_made_launch():
    # one program per SM: 100 iterations x 200 instructions x 8 warps / 4 schedulers = 40,000 clocks = 40 µs at
    # 1 GHz; the MMAs take 200 / 0.5 = 400 tensor clocks per warp and iteration: twice that
    found = bound()
    assert found["issue_us"] == pytest.approx(40.0) and found["tensor_us"] == pytest.approx(80.0)
    assert found["waves"] == 1 and found["bound_us"] == pytest.approx(80.0) and found["bound_by"] == "tensor"


def test_wave_quantisation():
    full, one_more = bound(programs=132), bound(programs=133)
    assert (full["waves"], one_more["waves"]) == (1, 2)
    assert one_more["tensor_us"] == pytest.approx(2 * full["tensor_us"])
    # two resident programs per SM: 264 fill one wave, sharing the SM's schedulers and tensor units
    assert bound(programs=264, resident=2)["waves"] == 1 and bound(programs=265, resident=2)["waves"] == 2
    assert bound(programs=264, resident=2)["tensor_us"] == pytest.approx(2 * full["tensor_us"])


def test_bound_by_chooses_the_largest_term():
    assert bound(issue_per_tensor=2.0)["bound_by"] == "issue"  # the loop cannot feed the tensor cores
    assert bound(issue_per_tensor=2.0)["bound_us"] == pytest.approx(40.0)
    assert bound(roofline_us=500.0)["bound_by"] == "roofline" and bound(roofline_us=500.0)["bound_us"] == 500.0


def test_grid_and_trip_counts_follow_the_launchers():
    conv3 = dict(N=128, H=13, W=13, OH=13, OW=13, C_per_group=256, K_per_group=384, R=3, S=3, stride_h=1,
                 stride_w=1, FLAT_CRS=False, FLAT_KRS=False, splits=10)
    meta = loop_model.parse_config("BM128_BN256_BK64_w8_s3")
    assert meta == dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, num_warps=8, num_stages=3)
    captured = loop_model.launch_args("2012", "conv3")  # the launchers' own grids
    splits = captured["weight grad"]["splits"]
    assert loop_model.programs(captured["forward"], meta) == 169 * 2  # cdiv(128*169, 128) x cdiv(384, 256)
    assert loop_model.iterations("forward", conv3, meta) == 9 * 4  # taps x channel blocks
    assert loop_model.programs(captured["input grad"], meta) == 169 * 1
    assert loop_model.iterations("input grad", conv3, meta) == 9 * 6
    # K blocks x taps x C blocks x splits
    assert loop_model.programs(captured["weight grad"], meta) == 3 * 9 * 1 * splits
    assert loop_model.iterations("weight grad", conv3, meta) == 34  # cdiv(cdiv(21632, 10), 64)
    flat = dict(conv3, C_per_group=3, R=11, S=11, FLAT_CRS=True)
    assert loop_model.iterations("forward", flat, meta) == 6  # cdiv(363, 64)
    strided = dict(conv3, stride_h=4, stride_w=4, R=11, S=11)  # phases hold 3, 3, 3, 2 taps per axis
    assert loop_model.iterations("input grad", strided, meta) == pytest.approx(2.75 ** 2 * 6)


def test_conv1_is_captured_in_its_space_to_depth_form():
    # channels_last bf16: the launched loops run over x_d [128, 48, 57, 57] with 3x3 taps at stride 1, flat;
    # NCHW keeps the direct 11x11 / 4 conv over 3 channels
    meta = loop_model.parse_config("BM128_BN128_BK32_w4_s3")
    depth = loop_model.launch_args("2012", "conv1")
    for pass_ in ("forward", "weight grad"):
        a = depth[pass_]
        assert (a["C_per_group"], a["R"], a["S"], a["stride_h"], a["H"], a["FLAT_CRS"]) == (48, 3, 3, 1, 57, True)
    assert loop_model.programs(depth["forward"], meta) == 3025  # cdiv(128*55*55, 128) x cdiv(96, 128)
    assert loop_model.iterations("forward", depth["forward"], meta) == 14  # cdiv(48*9, 32)
    splits = depth["weight grad"]["splits"]
    assert loop_model.programs(depth["weight grad"], meta) == 4 * splits  # cdiv(96, 128) x cdiv(432, 128) x splits
    per_slice = math.ceil(128 * 55 * 55 / splits)  # pixels
    assert loop_model.iterations("weight grad", depth["weight grad"], meta) == math.ceil(per_slice / 32)
    direct = loop_model.launch_args("2012", "conv1", layout="nchw")["forward"]
    assert (direct["C_per_group"], direct["R"], direct["stride_h"], direct["H"]) == (3, 11, 4, 227)


def conv_table() -> pd.DataFrame:
    """A fixture inspection table: 2012 conv3's three passes and its reference GEMM on sm_90 and sm_80."""
    rows = []
    for target, scale in (("sm_90", 1.0), ("sm_80", 1.3)):
        for kernel, config, issue in (("_conv2d_forward_kernel", "BM128_BN256_BK64_w8_s3", 0.40),
                                      ("_conv2d_forward_kernel", "BM128_BN128_BK64_w8_s3", 0.55),
                                      ("_conv2d_input_grad_kernel", "BM128_BN256_BK64_w8_s3", 0.45),
                                      ("_conv2d_weight_grad_kernel", "BM256_BN128_BK64_w8_s3", 0.44)):
            rows.append(dict(kernel=kernel, config=config, target=target, status="ok", occupancy=0.125,
                             issue_per_tensor=issue * scale, loop_instructions=230, case_list=";".join(CONV3),
                             triton="3.7.1"))
        rows.append(dict(kernel="_reference_matmul_kernel", config="BM128_BN128_BK64_w8_s4", target=target,
                         status="ok", occupancy=0.125, issue_per_tensor=0.25 * scale, loop_instructions=120,
                         case_list="2012/conv3/bf16/rowmajor", triton="3.7.1"))
    return pd.DataFrame(rows).reindex(columns=compilation.COLUMNS)


def before_table() -> pd.DataFrame:
    return pd.DataFrame([dict(variant="2012", layer="conv3", **{"pass": name}, target=target, dtype="bf16",
                              layout="channels_last", config="BM64_BN64_BK16_w8_s3", issue_per_tensor=issue,
                              commit="f551264")
                         for target in ("sm_90", "sm_80")
                         for name, issue in (("forward", 3.53), ("input grad", 5.0), ("weight grad", 16.56))])


def test_lower_bound_table_of_a_fixture_inspection():
    benchmarks = pd.DataFrame([dict(kernel="2012/conv3", provider="triton", phase="weight grad", batch=128,
                                    dtype="bf16", layout="channels_last", ms_p50=0.2, run_kind="gpu",
                                    device="NVIDIA H100 80GB HBM3 (sm_90)")])
    table = loop_model.lower_bound_table(conv_table(), "h100-sxm", benchmarks=benchmarks).set_index("pass")
    assert list(table.index) == ["forward", "input grad", "weight grad"]
    assert list(table.columns) == [c for c in loop_model.COLUMNS if c != "pass"]
    forward = table.loc["forward"]
    # both forward configs priced: 128x256 has the lower issue/tensor (0.40 against 0.55), but its 384-channel
    # tiles pad to 512 and its 338 programs take 3 programs per SM; 128x128's 507 take 4: the lesser bound wins
    assert forward.configs == 2 and forward.config == "BM128_BN128_BK64_w8_s3"
    assert forward.programs == 507 and forward.iterations == 36 and forward.resident == 1 and forward.waves == 4
    clock = loop_model.clock_hz("h100-sxm")
    assert clock == pytest.approx(1.83e9, rel=1e-3)
    issue_us = 4 * 36 * 230 * 8 / 4 / clock * 1e6  # busiest SM: 4 programs x 36 iterations x 230 x 8 warps / 4
    assert forward.issue_us == pytest.approx(issue_us, abs=0.05)
    assert forward.tensor_us == pytest.approx(issue_us / 0.55, abs=0.05)
    assert forward.tensor_us < 3 * 36 * 230 * 8 / 4 / clock * 1e6 / 0.40  # the 128x256 tile's bound
    assert forward.bound_by == "tensor" and forward.bound_us == max(forward[["roofline_us", "issue_us", "tensor_us"]])
    assert table.loc["weight grad", "measured_p50_us"] == pytest.approx(200.0)
    assert table.loc[["forward", "input grad"], "measured_p50_us"].isna().all()


def test_issue_comparison_and_figure_from_fixture_tables(tmp_path):
    comparison = tables.issue_comparison(conv_table(), before_table())
    assert list(comparison.target) == ["sm_80"] * 3 + ["sm_90"] * 3
    sm90 = comparison[comparison.target == "sm_90"].set_index("pass")
    assert sm90.loc["forward", "config"] == "BM128_BN256_BK64_w8_s3"
    assert sm90.loc["forward", "issue_vs_reference"] == pytest.approx(1.6)
    assert sm90.loc["weight grad", "before_issue_per_tensor"] == 16.56
    path = figures.plot_issue_per_tensor(conv_table(), before_table(), tmp_path / "issue_per_tensor.png")
    assert path.is_file() and path.stat().st_size > 10_000
    before_table().to_csv(tmp_path / tables.BEFORE_FILE, index=False)
    drawn = figures.plot_inspection(conv_table().assign(registers=128, shared_bytes=147456, mma="HGMMA",
                                                        async_copy="cp.async", dtypes="bf16", layouts="channels_last"),
                                    tmp_path)
    assert tmp_path / "issue_per_tensor.png" in drawn


def test_a_table_without_main_loops_gets_no_loop_outputs(tmp_path):
    table = conv_table().assign(issue_per_tensor=float("nan"))
    assert not tables.has_main_loops(table) and loop_model.write_lower_bound(table, tmp_path) is None
    (tmp_path / "kernels").mkdir()
    table.drop(columns=["issue_per_tensor"]).to_csv(tmp_path / "kernels" / "inspection.csv", index=False)
    assert loop_model.write_loop_outputs(tmp_path) == []
