"""Ahead-of-time GPU compilation of every kernel (sm_80, sm_90, gfx942) without a GPU, on a subset of AlexNet's
cases; the inspection's figures and summary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import triton

from alexnet_triton.kernels import conv, linear, runtime
from alexnet_triton.study.inspection import compilation, figures, reference_gemm, tables

REPO = Path(__file__).resolve().parents[1]
CONV_KERNELS = {"_conv2d_forward_kernel": conv.FORWARD_CONFIGS, "_conv2d_input_grad_kernel": conv.INPUT_GRAD_CONFIGS,
                "_conv2d_weight_grad_kernel": conv.WEIGHT_GRAD_CONFIGS}
# A conv launch takes the channel-block set or the gather set (kernels/conv.py), and of it the tiles that fit the
# target's shared memory at the operands' size (the first only, for the untuned weight gradient).
CONV_GATHER_KERNELS = {"_conv2d_forward_kernel": conv.FORWARD_GATHER_CONFIGS,
                       "_conv2d_input_grad_kernel": conv.INPUT_GRAD_GATHER_CONFIGS,
                       "_conv2d_weight_grad_kernel": conv.WEIGHT_GRAD_GATHER_CONFIGS}
# conv1's space-to-depth form and 2012 conv2 (channels_last): their forward and weight gradient take a set of their
# own (the flat reduction over channel vectors; conv1's weight gradient adds a transposed tile at 16-bit operands, a
# 64-row one at 4-byte ones).
CONV_FLAT_VECTOR_CONFIGS = {
    "_conv2d_forward_kernel": (conv.FORWARD_FLAT_VECTOR_CONFIGS,),
    "_conv2d_weight_grad_kernel": (conv.WEIGHT_GRAD_WINDOW_INSIDE_CONFIGS, conv.WEIGHT_GRAD_WINDOW_INSIDE_TF32_CONFIGS)}
ROW_KERNELS = ("_max_pool2d_forward_kernel", "_max_pool2d_backward_kernel", "_lrn_forward_kernel",
               "_lrn_backward_kernel", "_cross_entropy_forward_kernel", "_sum_row_losses_kernel",
               "_cross_entropy_backward_kernel", "_sgd_step_kernel", "_lrn_max_pool_forward_kernel",
               "_lrn_max_pool_backward_kernel")


# conv1 takes its space-to-depth form (flat over channel vectors), conv4 the channel
# blocks (grouped; its channels_last weight gradient the flat 192-row tiles; its input gradient masked by the ReLU
# before it, which launches fewer gather tiles: conv3's NCHW input gradient takes them all); between them every
# dtype/precision and both layouts. The
# first pool and LRN: every dtype and layout; the fused LRN + pool at its most register-hungry (conv2, fp32)
# and in bf16.
CASES = ["2012/conv1/fp16/channels_last", "2012/conv1/fp32-ieee/nchw", "2012/conv3/fp16/nchw", "2012/conv4/bf16/nchw",
         "2012/conv4/fp32-tf32/channels_last", "2012/pool-after-conv1/*", "2012/lrn-after-conv1/*",
         "2012/lrn-pool-after-conv2/fp32-ieee/*", "2012/lrn-pool-after-conv1/bf16/*",
         # the loss at fp16 and fp32; SGD on fc8's bias, whose 1000 elements defeat 16-wide vector hints
         "2012/cross-entropy-fc8/fp16/*", "2012/cross-entropy-fc8/fp32-ieee/*", "2012/sgd-fc8-bias/bf16/*"]


def inspect(tmp_path, ops: list[str], cases: list[str], targets=("sm_80", "sm_90"),
            options=()) -> tuple[pd.DataFrame, str]:
    """Run experiments/inspect_kernels.py on some ops, cases and targets; its table, after checking it has no
    failures, and its standard output."""
    out = tmp_path / "inspection.csv"
    result = subprocess.run([sys.executable, str(REPO / "experiments" / "inspect_kernels.py"), "--ops", *ops,
                             "--cases", *cases, "--targets", *targets, "--out", str(out), "--no-plots", *options],
                            capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = pd.read_csv(out)
    assert (table.status == "ok").all() and (table.spill_bytes == 0).all()
    assert set(table.target) == set(targets)
    return table, result.stdout


def assert_every_gemm_config_compiled(table: pd.DataFrame, kernels: dict) -> None:
    """Each GEMM-like kernel: every shipped config on both targets, tensor cores wherever the dtype allows."""
    for kernel, configs in kernels.items():
        rows = table[table.kernel == kernel]
        for target in ("sm_80", "sm_90"):
            on_target = rows[rows.target == target]
            assert set(on_target.config) == {runtime.config_name(c) for c in configs.shipped()}, (kernel, target)
            tensor_core_rows = on_target[[("fp32-ieee" not in d) for d in on_target["dtypes"]]]
            assert set(tensor_core_rows.config) == {runtime.config_name(c) for c in configs.tensor_core}
            # Hopper's wgmma (HGMMA) needs 64-row tiles; 32-row tiles use mma.sync (HMMA) there too.
            allowed = {"HMMA", "HGMMA"} if target == "sm_90" else {"HMMA"}
            assert set(tensor_core_rows.mma) <= allowed, (kernel, target, set(tensor_core_rows.mma))
            # every tensor-core compilation has a main loop; exact fp32 (FMA) ones have none on NVIDIA
            assert (tensor_core_rows.issue_per_tensor > 0).all(), (kernel, target)
            assert on_target.drop(tensor_core_rows.index).loop_instructions.isna().all(), (kernel, target)


def assert_conv_configs_compiled(table: pd.DataFrame) -> None:
    """Each conv kernel: only shipped configs, every gather-set tile (the NCHW cases take it) and at least one
    channel-block tile on both targets, tensor cores wherever the dtype allows."""
    for kernel, fast in CONV_KERNELS.items():
        gather = CONV_GATHER_KERNELS[kernel]
        for target in ("sm_80", "sm_90"):
            on_target = table[(table.kernel == kernel) & (table.target == target)]
            flat_vector = tuple(c for configs in CONV_FLAT_VECTOR_CONFIGS.get(kernel, ()) for c in configs.shipped())
            shipped = {runtime.config_name(c) for c in fast.shipped() + gather.shipped() + flat_vector}
            assert set(on_target.config) <= shipped, (kernel, target)
            assert {runtime.config_name(c) for c in gather.tensor_core} <= set(on_target.config), (kernel, target)
            assert set(on_target.config) & {runtime.config_name(c) for c in fast.tensor_core}, (kernel, target)
            tensor_core_rows = on_target[[("fp32-ieee" not in d) for d in on_target["dtypes"]]]
            assert (tensor_core_rows.issue_per_tensor > 0).all(), (kernel, target)


def assert_on_both_targets(table: pd.DataFrame, kernels) -> None:
    for kernel in kernels:
        assert set(table[table.kernel == kernel].target) == {"sm_80", "sm_90"}, kernel


def test_every_shipped_config_compiles_for_sm80_and_sm90_without_spills(tmp_path):
    table, _ = inspect(tmp_path, ["conv", "pool", "lrn", "lrn_pool", "cross_entropy", "sgd"], CASES)
    assert_conv_configs_compiled(table)
    assert_on_both_targets(table, ROW_KERNELS)


LINEAR_KERNELS = {"_linear_forward_kernel": linear.FORWARD_CONFIGS,
                  "_linear_input_grad_kernel": linear.INPUT_GRAD_CONFIGS,
                  "_linear_weight_grad_kernel": linear.WEIGHT_GRAD_CONFIGS}
# fc6 (fused ReLU + dropout, backward masked by y) at fp16, fc8 (plain, 1000 outputs) at bf16 and exact fp32,
# fc7 with dropout but no ReLU (backward regenerates the mask) at TF32, the standalone dropout at fp16, the
# element-wise ReLU at bf16 (both layouts).
LINEAR_CASES = ["2012/fc6/fp16/*", "2012/fc8/bf16/*", "2012/fc8/fp32-ieee/*", "2012/fc7-dropout-no-relu/fp32-tf32/*",
                "torchvision/dropout-before-fc6/fp16/*", "torchvision/relu-after-conv1/bf16/*"]


def test_linear_dropout_and_relu_kernels_compile_for_sm80_and_sm90_without_spills(tmp_path):
    table, _ = inspect(tmp_path, ["linear", "dropout", "relu"], LINEAR_CASES)
    assert_every_gemm_config_compiled(table, LINEAR_KERNELS)
    assert_on_both_targets(table, ["_dropout_kernel", "_relu_kernel", "_threshold_backward_kernel"])
    relu_rows = table[table.kernel.isin(["_relu_kernel", "_threshold_backward_kernel"])]
    assert set(relu_rows.layouts) == {"channels_last nchw"}  # one compilation serves both layouts


def test_conv_linear_and_lrn_compile_for_gfx942_with_mfma_and_no_spills(tmp_path):
    table, _ = inspect(tmp_path, ["conv", "linear", "lrn"], ["2012/conv2/fp16/channels_last", "2012/fc8/fp16/*",
                                                             "2012/lrn-after-conv1/fp16/nchw"], targets=["gfx942"])
    assert (table.registers > 0).all() and table.register_detail.str.contains("VGPR").all()
    assert (table.shared_bytes <= compilation.TARGETS["gfx942"].shared_per_block).all()
    assert ((table.occupancy > 0) & (table.occupancy <= 1)).all()
    for kernel, configs in (CONV_KERNELS | LINEAR_KERNELS).items():
        rows = table[table.kernel == kernel]
        hip = configs.gpu(True, "hip") + CONV_GATHER_KERNELS.get(kernel, configs).gpu(True, "hip") + tuple(
            c for flat in CONV_FLAT_VECTOR_CONFIGS.get(kernel, ()) for c in flat.gpu(True, "hip"))
        assert set(rows.config) <= {runtime.config_name(c) for c in hip}, kernel
        assert (rows.mma == "MFMA").all(), kernel
        assert (rows.mma_input == "f16").all() and (rows.issue_per_tensor > 0).all(), kernel
    row_kernels = table[table.kernel.isin(["_lrn_forward_kernel", "_lrn_backward_kernel", "_sum_partials_kernel"])]
    # sum_partials twice: the weight gradient's few slices and the bias gradient's many rows (two tile shapes)
    assert sorted(row_kernels.kernel) == ["_lrn_backward_kernel", "_lrn_forward_kernel", "_sum_partials_kernel",
                                          "_sum_partials_kernel"] and (row_kernels.mma == "none").all()


def test_main_loops_of_a_conv_and_the_reference_gemm_on_sm90(tmp_path):
    table, stdout = inspect(tmp_path, ["conv", "reference_gemm"],
                            ["2012/conv3/bf16/channels_last", "2012/conv3/bf16/rowmajor"], targets=["sm_90"],
                            options=["--loop"])
    conv_rows = table[table.kernel.isin(CONV_KERNELS)]
    assert set(conv_rows.kernel) == set(CONV_KERNELS)
    assert (conv_rows.mma_count >= 1).all() and (conv_rows.issue_per_tensor > 0).all()
    assert (conv_rows.mma_input == "bf16").all() and conv_rows.mma_shapes.str.match(r"64x\d+x16").all()
    assert conv_rows.wgmma_wait_depth.notna().all() and conv_rows.hgmma_register_a.notna().all()
    assert (conv_rows.loop_instructions > conv_rows.mma_count).all()
    assert table[table.kernel == "_sum_partials_kernel"].loop_instructions.isna().all()
    reference = table[table.kernel == "_reference_matmul_kernel"].set_index("config")
    assert set(reference.index) == {runtime.config_name(c) for c in reference_gemm.reference_configs(
        torch.bfloat16).tensor_core}
    tuned = reference.loc["BM128_BN128_BK64_w8_s4"]
    assert tuned.issue_per_tensor < 0.6 and tuned.loop_scalar_loads == 0 and tuned.loop_divisions == 0
    assert tuned.case_list == "2012/conv3/bf16/rowmajor"

    summary = tables.loop_summary(table)
    assert list(summary["pass"]) == ["forward", "input grad", "weight grad"]
    assert (summary.reference_issue_per_tensor == reference.issue_per_tensor.min()).all()
    assert np.allclose(summary.issue_vs_reference,
                       summary.issue_per_tensor / summary.reference_issue_per_tensor, atol=0.01)
    assert "issue/tc" in stdout and "issue_vs_reference" in stdout


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_reference_gemm_multiplies(dtype):
    """Odd sizes, several k-steps and tile groups (runs in the interpreter here: fp32 exact)."""
    a, b = torch.randn(70, 40).to(dtype), torch.randn(40, 150).to(dtype)
    tile = triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16})
    c = reference_gemm.reference_matmul(a, b, config=tile)
    expected = a.double() @ b.double()
    tolerance = dict(atol=1e-2, rtol=2e-3) if dtype == torch.float16 else dict(atol=1e-4, rtol=1e-6)
    assert c.dtype == dtype and torch.allclose(c.double(), expected, **tolerance)


def test_loop_summary_takes_each_layers_best_config_against_its_reference():
    def row(kernel, config, issue, cases):
        return dict(kernel=kernel, config=config, target="sm_90", status="ok", issue_per_tensor=issue,
                    loop_instructions=100, case_list=";".join(cases))
    table = pd.DataFrame([
        row("_conv2d_forward_kernel", "A", 3.0, ["2012/conv3/bf16/nchw", "2012/conv4/bf16/nchw"]),
        row("_conv2d_forward_kernel", "B", 2.0, ["2012/conv3/bf16/nchw"]),
        row("_reference_matmul_kernel", "R1", 0.4, ["2012/conv3/bf16/rowmajor", "2012/conv4/bf16/rowmajor"]),
        row("_reference_matmul_kernel", "R2", 0.5, ["2012/conv3/bf16/rowmajor"]),
        row("_reference_matmul_kernel", "R3", 0.25, ["2012/conv4/bf16/rowmajor"]),
    ]).reindex(columns=compilation.COLUMNS)
    summary = tables.loop_summary(table).set_index("layer")
    assert list(summary.config) == ["B", "A"] and list(summary.reference_config) == ["R1", "R3"]
    assert list(summary.issue_vs_reference) == [5.0, 12.0]


def synthetic_table() -> pd.DataFrame:
    """A small inspection table: a GEMM and a row kernel on each target, one spilling and one failing row."""
    rows = []
    for target, mma, copy, registers in (("sm_80", "HMMA", "cp.async", 120), ("sm_90", "HGMMA", "TMA", 130),
                                         ("gfx942", "MFMA", "none", 300)):
        for dtypes in ("fp16", "fp32-ieee"):
            rows.append(dict(kernel="_conv2d_forward_kernel", config="BM64_BN64_BK32_w8_s3", target=target,
                             dtypes=dtypes, layouts="nchw", registers=registers, spill_bytes=0, shared_bytes=32768,
                             occupancy=0.25, mma=mma if dtypes == "fp16" else "none", async_copy=copy, status="ok"))
        rows.append(dict(kernel="_lrn_forward_kernel", config="w8_s1", target=target, dtypes="bf16 fp16",
                         layouts="nchw", registers=40, spill_bytes=0, shared_bytes=0, occupancy=1.0, mma="none",
                         async_copy="none", status="ok"))
    rows[1].update(spill_bytes=16, status="spills")
    rows.append(dict(kernel="_lrn_backward_kernel", config="w8_s1", target="gfx942", dtypes="fp16", layouts="nchw",
                     registers=np.nan, status="compile error: RuntimeError: example"))
    table = pd.DataFrame(rows).reindex(columns=compilation.COLUMNS)
    return table.assign(triton="3.7.1", example_case="2012/conv1/fp16/nchw", cases=1)


def test_plot_and_summarise_an_inspection_table(tmp_path):
    table = synthetic_table()
    paths = figures.plot_inspection(table, tmp_path / "figures")
    assert len(paths) == 4 and all(p.suffix == ".png" and p.stat().st_size > 10_000 for p in paths)
    summary = tables.summarise_inspection(table)
    counts = [summary[name] for name in ("compilations", "failing", "spilling", "compile_errors")]
    assert counts == [10, 2, 1, 1]
    assert list(summary["per_target"]) == ["sm_80", "sm_90", "gfx942"]
    gfx942 = summary["per_target"]["gfx942"]
    assert (gfx942["kernels"], gfx942["max_registers"], gfx942["mma"], gfx942["kernels_using_mma"]) == (
        3, 300, ["MFMA"], 1)
    assert summary["per_target"]["sm_90"]["kernels_using_async_copy"] == 1


# What the ops compile for PyTorch's arguments beyond AlexNet's: conv3 dilated by 2 (bf16: tensor cores), the
# dilated ceil_mode pool with its indices kernel and the loss with weights, ignore_index, smoothing, probability
# targets and extra dimensions (fp16).
DROP_IN_CASES = ["drop-in/conv3-dilation2/bf16/*", "drop-in/pool-dilation2-ceil/fp16/*",
                 "drop-in/cross-entropy-options/fp16/*"]


def test_drop_in_specialisations_compile_for_sm80_and_sm90_without_spills(tmp_path):
    table, _ = inspect(tmp_path, ["drop_in"], DROP_IN_CASES)
    assert_on_both_targets(table, [*CONV_KERNELS, "_max_pool2d_forward_kernel", "_max_pool2d_backward_kernel",
                                   "_window_indices_kernel", "_cross_entropy_forward_kernel",
                                   "_cross_entropy_backward_kernel"])
    convs = table[table.kernel.isin(CONV_KERNELS)]
    assert (convs.issue_per_tensor > 0).all() and convs.mma.isin(["HMMA", "HGMMA"]).all()
    assert tables.loop_summary(table).empty  # the AlexNet loop summaries leave these rows out


def test_named_kernels_are_recompiled_and_the_other_rows_kept(tmp_path):
    """``--kernels``: only those kernels compile, their rows of the cases and targets compiled replace theirs in
    --out, every other row stays: other kernels', and those kernels' rows of other cases (another op's)."""
    case = ["2012/sgd-fc8-bias/bf16/*"]
    table, _ = inspect(tmp_path, ["sgd"], case, targets=("sm_90",))
    kept = pd.concat([table.assign(kernel="_kept_kernel"), table.assign(case_list="drop-in/other/bf16/rowmajor")])
    pd.concat([table, kept]).assign(registers=0).to_csv(tmp_path / "inspection.csv", index=False)
    merged, _ = inspect(tmp_path, ["sgd"], case, targets=("sm_90",), options=("--kernels", "_sgd_step_kernel"))
    assert (merged.registers == 0).sum() == len(kept)  # as they were
    recompiled = merged[(merged.kernel == "_sgd_step_kernel") & (merged.registers > 0)]
    assert len(recompiled) == len(table) and sorted(recompiled.case_list) == sorted(table.case_list)


def test_a_kernel_no_case_launches_is_one_error_line(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "experiments" / "inspect_kernels.py"), "--ops", "sgd",
                             "--cases", "2012/sgd-fc8-bias/bf16/*", "--out", str(tmp_path / "inspection.csv"),
                             "--kernels", "_sgd_step_kernal"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and not (tmp_path / "inspection.csv").exists()
    assert result.stderr.strip().splitlines()[-1] == (
        "inspect_kernels.py: error: --kernels: no case of sgd matching 2012/sgd-fc8-bias/bf16/* launches "
        "_sgd_step_kernal")
    assert "Traceback" not in result.stderr
