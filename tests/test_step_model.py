"""The whole-step lower-bound model (alexnet_triton.study.models.step_model) against hand counts, and its coverage of a
captured training step."""

from __future__ import annotations

import contextlib
import math

import pandas as pd
import pytest
import torch
import triton.language as tl

from alexnet_triton.kernels import dropout, linear, runtime
from alexnet_triton.study.measure import host_cost, kernel_access, traffic
from alexnet_triton.study.models import step_model
from alexnet_triton.study.models.roofline import roofline_table
from alexnet_triton.study.registries import layer_kinds
from alexnet_triton.study.registries.gpus import GPUS
from alexnet_triton.study.registries.providers import PROVIDERS, SUBJECT

GPU = "h100-sxm"
SMS, TARGET = GPUS[GPU].sms, GPUS[GPU].target
HOST_US = 61.5  # any µs per Triton launch
SCALED = {"2012": dict(width=0.125, input_size=67, num_classes=10),
          "torchvision": dict(width=0.125, input_size=63, num_classes=10)}


def _captured(layer: str, run) -> list[step_model.StepLaunch]:
    """The StepLaunches of ``run()``'s Triton launches, planned for an H100 SXM, labelled ``layer``."""
    recorder = step_model._StepRecorder(step_model.TARGETS[TARGET].shared_per_block)
    recorder.layer = layer
    with runtime.target(SMS), runtime.capture_launches(recorder.triton_launch):
        run()
    return recorder.step


def _loop_table(kernel: str, config: str, loop_instructions: float, issue_per_tensor: float) -> pd.DataFrame:
    """An inspection-like main-loop table with one compilation: ``kernel`` at ``config`` for fc6, bf16, sm_90."""
    return pd.DataFrame([dict(kernel=kernel, config=config, target=TARGET, variant="2012", layer="fc6",
                              dtype="bf16", layout="rowmajor", loop_instructions=loop_instructions,
                              issue_per_tensor=issue_per_tensor, occupancy=0.125)])


@pytest.mark.parametrize("issue_per_tensor", [0.5, 2.0])
def test_a_linear_forward_against_a_hand_count(issue_per_tensor):
    m, n, k = 300, 130, 200  # no tile divides them: partial tiles at every edge
    x, w, b = (torch.empty(m, k, dtype=torch.bfloat16), torch.empty(n, k, dtype=torch.bfloat16),
               torch.empty(n, dtype=torch.bfloat16))
    (launch,) = _captured("fc6", lambda: linear.linear_forward(x, w, b, relu=True))
    choice = launch.choices[0]
    meta = choice.meta
    loops = _loop_table("_linear_forward_kernel", choice.config, 100.0, issue_per_tensor)
    row = step_model.price_launch(launch, GPU, "bf16", "2012", loops, HOST_US)
    assert row["config"] == choice.config  # the only config with a main loop
    programs = math.ceil(m / meta["BLOCK_M"]) * math.ceil(n / meta["BLOCK_N"])
    iterations = math.ceil(k / meta["BLOCK_K"])
    assert (row["programs"], row["iterations"]) == (programs, iterations)
    clock = GPUS[GPU].tensor16 * 1e12 / (SMS * 4 * 1024)  # bf16 tensor peak / (SMs x 4 x 1024 flop/clk)
    issue_us = math.ceil(programs / SMS) * iterations * 100.0 * choice.warps / 4 / clock * 1e6
    moved = (m * k + n * k + n) * 2 + m * n * 2  # x, w, b loaded; y stored
    memory_us = moved / (GPUS[GPU].bandwidth * 1e12) * 1e6
    assert row["bytes"] == moved
    assert row["issue_us"] == pytest.approx(issue_us)
    assert row["tensor_us"] == pytest.approx(issue_us / issue_per_tensor)
    expected = max(memory_us, issue_us, issue_us / issue_per_tensor)
    assert row["bound_us"] == pytest.approx(expected)
    assert row["bound_by"] == ("issue" if issue_per_tensor > 1 else "tensor")
    assert row["host_us"] == HOST_US


def test_a_gemm_without_a_main_loop_is_priced_by_its_bytes():
    """... streamed through as many SMs as it has programs (one here), each at its share of the bandwidth."""
    x, w = torch.empty(64, 96, dtype=torch.bfloat16), torch.empty(32, 96, dtype=torch.bfloat16)
    (launch,) = _captured("fc6", lambda: linear.linear_forward(x, w))
    row = step_model.price_launch(launch, GPU, "bf16", "2012", _loop_table("_linear_forward_kernel", "none", 1, 1),
                                  HOST_US)
    assert row["bound_by"] == "memory" and pd.isna(row.get("issue_us")) and row["programs"] == 1
    assert row["bound_us"] == pytest.approx(row["bytes"] / (GPUS[GPU].bandwidth * 1e12 / GPUS[GPU].sms) * 1e6)


def test_dropout_is_priced_by_the_bytes_it_loads_and_stores():
    x = torch.empty(1000, 37)
    (launch,) = _captured("dropout-fc6", lambda: dropout.dropout_forward(x, 0.5, 1234))
    moved = 2 * x.numel() * 4 + 8  # x loaded, y stored, the int64 seed loaded
    assert launch.bytes == moved
    row = step_model.price_launch(launch, "a100-sxm", "fp32-tf32", "torchvision", _loop_table("x", "x", 1, 1), HOST_US)
    assert row["bound_by"] == "memory" and row["programs"] == math.ceil(x.numel() / launch.choices[0].meta["BLOCK"])
    share = min(1.0, row["programs"] / GPUS["a100-sxm"].sms)  # of the SMs its programs stream through
    assert row["bound_us"] == pytest.approx(moved / (GPUS["a100-sxm"].bandwidth * 1e12 * share) * 1e6)


def test_an_in_place_update_counts_its_tensor_twice():
    def kernel_fn(a_ptr, b_ptr, c_ptr, n):  # a read and written, b read, c untouched
        a, b = a_ptr + n, b_ptr + n  # parsed, never run
        tl.store(a, tl.load(a) + tl.load(b))
    kernel = type("Jit", (), {"fn": staticmethod(kernel_fn)})()
    a, b, c = torch.empty(10), torch.empty(3), torch.empty(7)
    assert kernel_access.launch_bytes(kernel, dict(a_ptr=a, b_ptr=b, c_ptr=c, n=1)) == (2 * 10 + 3 + 7) * 4
    assert kernel_access.launch_bytes(kernel, dict(a_ptr=a, b_ptr=a, c_ptr=c, n=1)) == (2 * 10 + 7) * 4  # aliases


def test_a_branch_under_a_flag_the_launch_turns_off_moves_nothing():
    def kernel_fn(a_ptr, b_ptr, c_ptr, SUM: tl.constexpr, COPY: tl.constexpr):  # parsed, never run
        a = tl.load(a_ptr)
        if SUM:
            tl.store(b_ptr, tl.load(b_ptr) + a)
        if not COPY:
            pass
        else:
            tl.store(c_ptr, a)
    kernel = type("Jit", (), {"fn": staticmethod(kernel_fn)})()
    a, b, c = torch.empty(10), torch.empty(3), torch.empty(7)
    args = dict(a_ptr=a, b_ptr=b, c_ptr=c)
    assert kernel_access.launch_bytes(kernel, dict(args, SUM=True, COPY=True)) == (10 + 2 * 3 + 7) * 4
    assert kernel_access.launch_bytes(kernel, dict(args, SUM=False, COPY=True)) == (10 + 3 + 7) * 4  # b untouched
    assert kernel_access.launch_bytes(kernel, dict(args, SUM=False, COPY=False)) == (10 + 3 + 7) * 4


@pytest.mark.parametrize("variant", ["2012", "torchvision"])
def test_the_step_covers_every_captured_launch(variant):
    """Every launch of a training step, conv1's images in the space-to-depth form it computes in (train.py's
    loaders'), in the step model's capture: conv1's forward makes one space-to-depth pass, the weight's."""
    spec = PROVIDERS[SUBJECT]
    model, optimizer, images, target = traffic.steady_state(spec, variant, 2, precision="tf32",
                                                            memory_format=torch.channels_last, **SCALED[variant])
    assert images.shape == (2, 48, *model.depth_form.size)
    with runtime.target(SMS), runtime.capture_launches() as records:
        traffic.training_step(spec, model, optimizer, images, target, lambda phase: contextlib.nullcontext())
    launches = step_model.capture_step(variant, "fp32-tf32", GPU, batch=2, **SCALED[variant])
    triton = [launch for launch in launches if launch.source == "triton"]
    assert [launch.kernel for launch in triton] == [r.kernel.fn.__name__ for r in records]
    layers = {s.name for s in layer_kinds.study_layers(variant)} | {"dropout-fc6"}
    assert {launch.layer for launch in launches} <= layers
    assert {launch.phase for launch in launches} == set(traffic.PHASES)
    conv1_forward = [launch.kernel for launch in triton if (launch.layer, launch.phase) == ("conv1", "forward")]
    assert conv1_forward == ["_space_to_depth_kernel", "_conv2d_forward_kernel"]
    assert {launch.layer for launch in launches if launch.phase == "optimizer"} == {"sgd"}
    assert {launch.layer for launch in triton if launch.kernel.startswith("_conv2d")} == {
        s.name for s in layer_kinds.study_layers(variant) if s.kind == "conv"}
    table = step_model.step_table(launches, GPU, "fp32-tf32", variant, step_model.loop_rows(pd.DataFrame()),
                                  HOST_US)
    kernels, step = table[~table.kernel.isin(["all"]) & (table.layer != "step")], table[table.layer == "step"]
    assert kernels.launches.sum() == len(launches) == step.launches.item()
    # each row is rounded to 0.01 us: their sum may differ from the step's by half a hundredth per row
    assert step.bound_us.item() == pytest.approx(kernels.bound_us.sum(), abs=0.005 * len(kernels) + 1e-9)
    assert step.host_us.item() == pytest.approx(len(triton) * HOST_US)


def test_the_host_term_is_the_measured_python_per_launch(tmp_path):
    """The mean of host_cost.csv's step_us_per_launch over its variants; a clear error without the file."""
    with pytest.raises(FileNotFoundError, match="host_cost.csv: missing"):
        step_model.measured_host_us(tmp_path)
    (tmp_path / host_cost.REPORT).parent.mkdir()
    pd.DataFrame(dict(variant=["2012", "torchvision"], step_us_per_launch=[60.8, 59.7])).to_csv(
        tmp_path / host_cost.REPORT, index=False)
    assert step_model.measured_host_us(tmp_path) == 60.2  # (60.8 + 59.7) / 2, rounded to 0.1 µs


def test_the_fused_update_step_moves_no_gradient_of_the_linear_layers():
    """update="fused" (train.py --fused-update): fc6-fc8's weight gradients become the fused kernel, which loads
    and stores the parameters and momentum buffers (fp32) but never a gradient, and the SGD launch keeps the
    conv parameters only: the Triton launches move 8 bytes per fused parameter fewer in all (dw stored and loaded
    back), less the lr each fused launch loads. Priced beside the fused roofline."""
    variant, scaled = "2012", SCALED["2012"]
    separate = step_model.capture_step(variant, "fp32-tf32", GPU, batch=2, **scaled)
    fused = step_model.capture_step(variant, "fp32-tf32", GPU, batch=2, update="fused", **scaled)
    kernels = [launch.kernel for launch in fused]
    assert "_linear_weight_grad_kernel" not in kernels
    steps = [launch for launch in fused if launch.kernel == "_linear_weight_grad_sgd_kernel"]
    assert [(s.layer, s.phase) for s in steps] == [("fc8", "backward"), ("fc7", "backward"), ("fc6", "backward")]
    parameters = sum(s.args["N"] * s.args["K"] + s.args["N"] for s in steps)
    moved = [sum(s.bytes for s in launches if s.source == "triton") for launches in (separate, fused)]
    assert moved[0] - moved[1] == 8 * parameters - 4 * len(steps)
    fc8 = steps[0]
    n, k, m = fc8.args["N"], fc8.args["K"], fc8.args["M"]  # fc8: no ReLU, no dropout; dy, x loaded
    assert fc8.bytes == 4 * (m * n + m * k) + 4 * 2 * 2 * (n * k + n) + 4  # w, b and their buffers twice, lr
    table = step_model.step_table(fused, GPU, "fp32-tf32", variant, step_model.loop_rows(pd.DataFrame()), HOST_US,
                                  batch=2, update="fused")
    step = table[table.layer == "step"].iloc[0]
    assert step["update"] == "fused" and step.launches == len(fused)
    lowered = roofline_table(GPU, "fp32-tf32", 2, fused_update=True)
    assert step.roofline_us == pytest.approx(lowered.set_index(["variant", "layer"]).time_ms[variant, "step"] * 1e3,
                                             abs=0.01)
    plain = step_model.step_table(separate, GPU, "fp32-tf32", variant, step_model.loop_rows(pd.DataFrame()),
                                  HOST_US, batch=2)
    both = pd.concat([plain, table], ignore_index=True)
    (line,) = [line for line in step_model.headline_lines(both, GPU) if line]
    assert f"(`train.py --fused-update`: their gradients never written nor read back): 2012 fp32-tf32: modelled " \
           f"step {step.bound_us / 1e3:.2f} ms = {step.bound_us / step.roofline_us:.2f} x its roofline" in line
    assert f"the roofline lowered to {step.roofline_us / 1e3:.2f} ms" in line
    assert sum("step, SGD fused" in line for line in step_model.report_lines(both, GPU, "fp32-tf32")) == 1
