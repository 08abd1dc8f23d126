"""The roofline model (alexnet_triton.study.models.roofline) and its CLI, experiments/roofline.py."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.axes import Axes

from alexnet_triton.study.models.cost import flops
from alexnet_triton.study.models.roofline import (
    measured_points,
    plot_roofline,
    roofline_table,
    summarise_roofline,
)
from alexnet_triton.study.registries.gpus import GPUS
from alexnet_triton.study.registries.layer_kinds import study_layers

_spec = importlib.util.spec_from_file_location(
    "roofline_experiment", Path(__file__).resolve().parents[1] / "experiments" / "roofline.py")
experiment = sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(experiment)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BIASES_2012 = 96 + 256 + 384 + 384 + 256 + 4096 + 4096 + 1000


def row(table: pd.DataFrame, variant: str, layer: str, phase: str) -> pd.Series:
    (index,) = table.index[(table["variant"] == variant) & (table["layer"] == layer) & (table["phase"] == phase)]
    return table.loc[index]


def test_fc7_on_h100_bf16_batch_128_by_hand():
    fc7 = row(roofline_table("h100-sxm", "bf16", 128), "2012", "fc7", "forward")
    work = 2 * 128 * 4096 * 4096
    traffic = 2 * (128 * 4096 + 4096 * 4096 + 4096 + 128 * 4096)  # bf16 x, w, b in; y out
    assert (fc7["flops"], fc7["bytes"]) == (work, traffic) == (4_294_967_296, 35_659_776)
    assert fc7["intensity"] == pytest.approx(120.44, abs=0.01)
    # below the ridge 989.4 / 3.35 = 295 FLOP/B: the DRAM bandwidth bounds it
    assert fc7["bound"] == "memory"
    assert fc7["attainable_tflops"] == pytest.approx(120.44 * 3.35, rel=1e-4)
    assert fc7["time_ms"] == pytest.approx(traffic / 3.35e12 * 1e3) == pytest.approx(0.010645, rel=1e-4)
    assert fc7["compute_ms"] == pytest.approx(work / 989.4e12 * 1e3)


def test_fc7_backward_writes_fp32_gradients_by_hand():
    """Mixed precision: bf16 dy, x and w in, bf16 dx out, and dw, db written in fp32, the dtype of the master
    parameters whose gradient the SGD step reads; fp32 cases count every tensor at 4 bytes. No y: fc7's ReLU and
    dropout backward is fc8's input gradient's epilogue, masked by the x it reads anyway."""
    x, dy, w, b = 128 * 4096, 128 * 4096, 4096 * 4096, 4096
    bf16 = row(roofline_table("h100-sxm", "bf16", 128), "2012", "fc7", "backward")
    assert bf16["bytes"] == 2 * (dy + 2 * x + w) + 4 * (w + b) == 103_825_408
    tf32 = row(roofline_table("h100-sxm", "fp32-tf32", 128), "2012", "fc7", "backward")
    assert tf32["bytes"] == 4 * (dy + 2 * x + 2 * w + b)
    # conv1: dy and the images in (no dx; the LRN + pool's backward applies its ReLU), dw and db out
    conv1 = row(roofline_table("h100-sxm", "bf16", 128), "2012", "conv1", "backward")
    n, c, k, p, q = 128, 96, 3 * 11 * 11, 55, 55
    assert conv1["bytes"] == 2 * (n * c * p * q + n * 3 * 227 * 227) + 4 * (c * k + c)


@pytest.mark.parametrize("layer", ["fc6", "fc7", "fc8"])
def test_fc_layers_turn_compute_bound_as_the_batch_grows(layer):
    for phase in ("forward", "backward"):
        bounds = [row(roofline_table("h100-sxm", "bf16", batch), "2012", layer, phase)["bound"]
                  for batch in (1, 128, 4096)]
        assert bounds == ["memory", "memory", "compute"], (layer, phase)


def test_peaks_and_element_sizes_per_dtype_case():
    h100 = GPUS["h100-sxm"]
    fp32_bytes = row(roofline_table("h100-sxm", "fp32-ieee", 128), "2012", "conv2", "forward")["bytes"]
    for dtype, peak, element_size in (("fp32-ieee", h100.fp32, 4), ("fp32-tf32", h100.tf32, 4),
                                      ("fp16", h100.tensor16, 2), ("bf16", h100.tensor16, 2)):
        table = roofline_table("h100-sxm", dtype, 128)
        conv2 = row(table, "2012", "conv2", "forward")
        assert (conv2["peak_tflops"], conv2["bytes"]) == (peak, fp32_bytes // 4 * element_size), dtype
        # element-wise layers run on the fp32 CUDA cores; the SGD state is fp32 in every case
        assert row(table, "2012", "lrn-pool1", "forward")["peak_tflops"] == h100.fp32
        # and, at 16 bits, the SGD step writes the weights' compute copies (the biases have none)
        copies = element_size * (60_965_224 - BIASES_2012) if element_size == 2 else 0
        assert row(table, "2012", "sgd", "backward")["bytes"] == 5 * 4 * 60_965_224 + copies
    assert (h100.tensor16, h100.tf32, h100.fp32, h100.bandwidth) == (989.4, 494.7, 66.9, 3.35)
    a100 = GPUS["a100-sxm"]
    assert (a100.tensor16, a100.tf32, a100.fp32, a100.bandwidth) == (312.0, 156.0, 19.5, 2.039)


def test_whole_step_rows_for_both_variants():
    table = roofline_table("h100-sxm", "bf16", 128)
    steps = table[table["layer"] == "step"]
    assert list(steps["variant"]) == ["2012", "torchvision"]
    for _, step in steps.iterrows():
        layers = table[(table["variant"] == step["variant"]) & (table["layer"] != "step")]
        passes = layers[layers["phase"].isin(["forward", "backward"])]
        assert step["flops"] == sum(flops(layer, "full", 128) for layer in study_layers(step["variant"]))
        assert step["flops"] == layers.loc[layers["phase"] == "full", "flops"].sum()
        assert step["time_ms"] == pytest.approx(passes["time_ms"].sum())
        assert step["images_per_s"] == pytest.approx(128 / step["time_ms"] * 1e3)
        # a sum of per-pass bounds is at least the bound of the summed work
        assert step["time_ms"] >= max(step["compute_ms"], step["memory_ms"]) - 1e-12
    assert not (table["phase"].eq("forward") & table["layer"].eq("sgd")).any()  # the SGD step has no forward


def test_bad_gpu_or_dtype_raise():
    with pytest.raises(ValueError, match="gpu must be one of"):
        roofline_table("v100", "bf16", 128)
    with pytest.raises(ValueError, match="dtype must be one of"):
        roofline_table("h100-sxm", "int8", 128)


def benchmark(*rows) -> pd.DataFrame:
    columns = ("kernel", "provider", "phase", "batch", "dtype", "tflops", "run_kind")
    return pd.DataFrame([dict(zip(columns, values, strict=True)) for values in rows])


def test_measured_points_keep_gpu_rows_of_the_table_only():
    table = roofline_table("h100-sxm", "bf16", 128)
    measured = benchmark(("2012/conv2", "triton", "forward", 128, "bf16", 600.0, "gpu"),
                         ("2012/conv2", "triton", "forward", 128, "bf16", 0.01, "cpu-smoke"),
                         ("2012/conv2", "cudnn", "forward", 64, "bf16", 500.0, "gpu"),
                         ("2012/conv2", "cudnn", "forward", 128, "fp32-tf32", 300.0, "gpu"),
                         ("2012/conv2", "cudnn", "full", 128, "bf16", 300.0, "gpu"),
                         ("torchvision/fc7", "cudnn", "backward", 128, "bf16", 250.0, "gpu"))
    points = measured_points(measured, table)
    assert list(zip(points["kernel"], points["provider"], points["phase"], strict=True)) == [
        ("2012/conv2", "triton", "forward"), ("torchvision/fc7", "cudnn", "backward")]
    assert list(points["intensity"]) == [row(table, "2012", "conv2", "forward")["intensity"],
                                         row(table, "torchvision", "fc7", "backward")["intensity"]]
    on_an_a100 = measured.assign(device="NVIDIA A100-SXM4-80GB")
    assert measured_points(on_an_a100, table).empty
    assert len(measured_points(on_an_a100, roofline_table("a100-sxm", "bf16", 128))) == 2


def test_plot_is_written_and_draws_no_smoke_rows(tmp_path, monkeypatch):
    drawn = []
    scatter = Axes.scatter

    def recording_scatter(self, *args, **kwargs):
        drawn.append(kwargs.get("marker"))
        return scatter(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "scatter", recording_scatter)
    table = roofline_table("h100-sxm", "bf16", 128)
    smoke = benchmark(("2012/conv1", "triton", "forward", 128, "bf16", 0.02, "cpu-smoke"),
                      ("2012/fc6", "eager", "backward", 128, "bf16", 0.01, "cpu-smoke"))
    path = plot_roofline(table, tmp_path / "plots" / "roofline.png", measured=smoke)
    assert path.read_bytes().startswith(PNG_MAGIC) and path.stat().st_size > 10_000
    assert "D" not in drawn and "*" in drawn  # no measured point; the training-step stars
    drawn.clear()
    plot_roofline(table, tmp_path / "measured.png", measured=smoke.assign(run_kind="gpu", layout=["nchw", ""]))
    assert (drawn.count("s"), drawn.count("D")) == (1, 1)  # conv1 measured in NCHW, fc6 with no layout


def test_summary_lists_bounds_and_the_step():
    summary = summarise_roofline(roofline_table("h100-sxm", "bf16", 128))
    assert summary.startswith("**NVIDIA H100 SXM5 80GB, bf16, batch 128**")
    assert "| 2012 | fc7 | memory, 0.0106 ms | memory, 0.0310 ms |" in summary
    assert "| 2012 | sgd | — | memory," in summary
    assert "- 2012 training step" in summary and "- torchvision training step" in summary


def test_cli_writes_the_table_and_the_plots(tmp_path):
    measured = tmp_path / "layers.csv"
    benchmark(("2012/conv1", "triton", "forward", 128, "bf16", 0.02, "cpu-smoke")).to_csv(measured, index=False)
    experiment.main(["--out", str(tmp_path / "roofline"), "--measured", str(measured)])
    table = pd.read_csv(tmp_path / "roofline" / "roofline.csv")
    assert set(table["gpu"]) == set(GPUS) and set(table["dtype"]) == {"bf16", "fp32-tf32", "fp32-ieee"}
    assert set(table["batch"]) == {128}
    for name in ("roofline-h100-sxm-bf16-b128.png", "roofline-h100-sxm-fp32-tf32-b128.png"):
        assert (tmp_path / "roofline" / name).read_bytes().startswith(PNG_MAGIC)


def test_gpu_named_maps_benchmark_devices():
    from alexnet_triton.study.registries.gpus import gpu_named

    assert gpu_named("NVIDIA H200 (sm_90)") == "h200-sxm"
    assert gpu_named("NVIDIA H100 80GB HBM3 (sm_90)") == "h100-sxm"
    assert gpu_named("CPU, Triton interpreter") is None


def test_the_fused_update_lowers_the_roofline_by_the_linear_gradients_round_trip():
    """--fused-update: fc6-fc8 no longer write dw and db (fp32: 4 bytes each, the master parameters' dtype) but
    read and write their parameters and momentum buffers (fp32: 16 bytes), which the SGD step (20 bytes with the
    gradient) no longer does, and write their weights' bf16 compute copies (2 bytes), which the SGD step no longer
    does either; nothing else changes. Hand counts of the fc parameters."""
    plain, fused = (roofline_table("h100-sxm", "bf16", 128, fused_update=f) for f in (False, True))
    fc_weights = {"fc6": 9216 * 4096, "fc7": 4096 * 4096, "fc8": 4096 * 1000}
    fc = {"fc6": 9216 * 4096 + 4096, "fc7": 4096 * 4096 + 4096, "fc8": 4096 * 1000 + 1000}
    for variant in ("2012", "torchvision"):
        saved = 0
        for layer in [s.name for s in study_layers(variant)] + ["step"]:
            for phase in ("forward", "backward", "full"):
                if layer == "step" and phase != "full" or layer == "sgd" and phase == "forward":
                    continue
                before, after = row(plain, variant, layer, phase), row(fused, variant, layer, phase)
                expected = 0 if phase == "forward" else (4 - 16) * fc.get(layer, 0) - 2 * fc_weights.get(layer, 0) + (
                    20 * sum(fc.values()) + 2 * sum(fc_weights.values())) * (layer == "sgd")
                if layer == "step":
                    expected = saved
                elif phase == "backward":
                    saved += expected
                assert before["bytes"] - after["bytes"] == expected, (variant, layer, phase)
                assert after["flops"] == before["flops"]
        step = row(fused, variant, "step", "full")
        assert step["time_ms"] < row(plain, variant, "step", "full")["time_ms"]
