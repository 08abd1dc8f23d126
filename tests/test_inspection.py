"""Ahead-of-time GPU compilation of the conv, pool and LRN kernels (sm_80, sm_90) on this CPU-only machine."""

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
               "_lrn_backward_kernel")


# conv1 takes the flat reduction (3 channels, stride 4), conv4 the channel
# blocks (grouped); between them every dtype/precision and both layouts. The
# first pool and LRN: every dtype and layout.
CASES = ["2012/conv1/fp16/channels_last", "2012/conv1/fp32-ieee/nchw", "2012/conv4/bf16/nchw",
         "2012/conv4/fp32-tf32/channels_last", "2012/pool-after-conv1/*", "2012/lrn-after-conv1/*"]


def test_every_shipped_config_compiles_for_sm80_and_sm90_without_spills(tmp_path):
    out = tmp_path / "inspection.csv"
    result = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "inspect_kernels.py"), "--ops", "conv", "pool", "lrn",
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
