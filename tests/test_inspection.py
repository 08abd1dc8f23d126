"""Ahead-of-time GPU compilation of the conv, pool, LRN, loss and SGD kernels (sm_80, sm_90) without a GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
from alexnet_triton.kernels import runtime

REPO = Path(__file__).resolve().parents[1]
CONV_KERNELS = {"_conv2d_forward_kernel": runtime.CONV_FORWARD, "_conv2d_input_grad_kernel": runtime.CONV_INPUT_GRAD,
                "_conv2d_weight_grad_kernel": runtime.CONV_WEIGHT_GRAD}
ROW_KERNELS = ("_max_pool2d_forward_kernel", "_max_pool2d_backward_kernel", "_lrn_forward_kernel",
               "_lrn_backward_kernel", "_cross_entropy_forward_kernel", "_sum_row_losses_kernel",
               "_cross_entropy_backward_kernel", "_sgd_step_kernel")


# conv1 takes the flat reduction (3 channels, stride 4), conv4 the channel
# blocks (grouped); between them every dtype/precision and both layouts. The
# first pool and LRN: every dtype and layout.
CASES = ["2012/conv1/fp16/channels_last", "2012/conv1/fp32-ieee/nchw", "2012/conv4/bf16/nchw",
         "2012/conv4/fp32-tf32/channels_last", "2012/pool-after-conv1/*", "2012/lrn-after-conv1/*",
         # the loss at fp16 and fp32; SGD on fc8's bias, whose 1000 elements defeat 16-wide vector hints
         "2012/cross-entropy-fc8/fp16/*", "2012/cross-entropy-fc8/fp32-ieee/*", "2012/sgd-fc8-bias/bf16/*"]


def test_every_shipped_config_compiles_for_sm80_and_sm90_without_spills(tmp_path):
    out = tmp_path / "inspection.csv"
    result = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "inspect_kernels.py"), "--ops", "conv", "pool", "lrn",
         "cross_entropy", "sgd",
         "--cases", *CASES, "--out", str(out)],
        capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = pd.read_csv(out)
    assert (table.status == "ok").all() and (table.spill_bytes == 0).all()
    for kernel, configs in CONV_KERNELS.items():
        rows = table[table.kernel == kernel]
        for target in ("sm_80", "sm_90"):
            on_target = rows[rows.target == target]
            assert set(on_target.config) == {runtime.config_name(c) for c in configs.shipped()}, (kernel, target)
            tensor_core_rows = on_target[[("fp32-ieee" not in d) for d in on_target["dtypes"]]]
            assert set(tensor_core_rows.config) == {runtime.config_name(c) for c in configs.tensor_core}
            # Hopper's wgmma (HGMMA) needs 64-row tiles; 32-row tiles use mma.sync (HMMA) there too.
            allowed = {"HMMA", "HGMMA"} if target == "sm_90" else {"HMMA"}
            assert set(tensor_core_rows.mma) <= allowed, (kernel, target, set(tensor_core_rows.mma))
    for kernel in ROW_KERNELS:
        assert set(table[table.kernel == kernel].target) == {"sm_80", "sm_90"}, kernel


LINEAR_KERNELS = {"_linear_forward_kernel": runtime.LINEAR_FORWARD,
                  "_linear_input_grad_kernel": runtime.LINEAR_INPUT_GRAD,
                  "_linear_weight_grad_kernel": runtime.LINEAR_WEIGHT_GRAD}
# fc6 (fused ReLU + dropout, backward masked by y) at fp16, fc8 (plain, 1000 outputs) at bf16 and exact fp32,
# fc7 with dropout but no ReLU (backward regenerates the mask) at TF32, the standalone dropout at fp16.
LINEAR_CASES = ["2012/fc6/fp16/*", "2012/fc8/bf16/*", "2012/fc8/fp32-ieee/*", "2012/fc7-dropout-no-relu/fp32-tf32/*",
                "torchvision/dropout-before-fc6/fp16/*"]


def test_linear_and_dropout_kernels_compile_for_sm80_and_sm90_without_spills(tmp_path):
    out = tmp_path / "inspection.csv"
    result = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "inspect_kernels.py"), "--ops", "linear", "dropout",
         "--cases", *LINEAR_CASES, "--out", str(out)],
        capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = pd.read_csv(out)
    assert (table.status == "ok").all() and (table.spill_bytes == 0).all()
    for kernel, configs in LINEAR_KERNELS.items():
        rows = table[table.kernel == kernel]
        for target in ("sm_80", "sm_90"):
            on_target = rows[rows.target == target]
            assert set(on_target.config) == {runtime.config_name(c) for c in configs.shipped()}, (kernel, target)
            tensor_core_rows = on_target[[("fp32-ieee" not in d) for d in on_target["dtypes"]]]
            assert set(tensor_core_rows.config) == {runtime.config_name(c) for c in configs.tensor_core}
            allowed = {"HMMA", "HGMMA"} if target == "sm_90" else {"HMMA"}
            assert set(tensor_core_rows.mma) <= allowed, (kernel, target, set(tensor_core_rows.mma))
    assert set(table[table.kernel == "_dropout_kernel"].target) == {"sm_80", "sm_90"}
