"""The benchmark harness in its CPU smoke mode (tiny shapes, Triton interpreter): CSV schema and conditions,
consistency with the cost model, the study's sweep, the figures (gpu_study.py: tests/test_gpu_study.py)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from alexnet_triton import data, optim
from alexnet_triton.architecture import parameter_count
from alexnet_triton.data import space_to_depth_images
from alexnet_triton.study.benchmarks import benchmark, cli
from alexnet_triton.study.models import cost
from alexnet_triton.study.presentation import benchmark_plots
from alexnet_triton.study.registries import benchmark_cases, layer_kinds
from alexnet_triton.study.registries.layer_kinds import KINDS
from alexnet_triton.study.registries.providers import PROVIDERS
from alexnet_triton.study.vocabulary import FUSED_GRAPHED_STEP, TRAIN_STEP

REPO = Path(__file__).resolve().parents[1]
SCHEMA = ["kernel", "provider", "phase", "shape", "batch", "dtype", "layout", "ms_p20", "ms_p50", "ms_p80", "tflops",
          "gbps", "images_per_s", "peak_memory_mb", "device", "torch", "triton", "cudnn", "timestamp", "run_kind",
          "compile_mode", "correctness"]
LAYERS = ("2012/conv2", "torchvision/fc6", "2012/sgd")  # grouped conv; dropout + linear + ReLU + dropout; SGD


def _bench():
    spec = importlib.util.spec_from_file_location("bench_experiment", REPO / "experiments" / "bench.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def smoke_run(tmp_path: Path, scope: str, argv: list[str], repeats: int) -> pd.DataFrame:
    """Run ``experiments/bench.py scope``'s smoke test in this process; its rows, after the schema check."""
    out = tmp_path / f"{scope}.csv"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(benchmark, "SMOKE_REPEATS", repeats)
        assert _bench().main([scope, *argv, "--out", str(out)]) == 0
    assert out.read_text().splitlines()[0] == ",".join(SCHEMA)
    return benchmark_cases.read_benchmarks(out)


def _check_common(rows: pd.DataFrame) -> None:
    assert list(rows.columns) == SCHEMA == benchmark.COLUMNS
    assert (rows.run_kind == "cpu-smoke").all()
    assert rows.device.str.contains("smoke test, not a performance measurement").all()
    times = rows[["ms_p20", "ms_p50", "ms_p80"]]
    assert (times > 0).all().all() and times.map(math.isfinite).all().all()
    assert ((rows.ms_p20 <= rows.ms_p50) & (rows.ms_p50 <= rows.ms_p80)).all()
    assert rows.peak_memory_mb.isna().all() and (rows.cudnn == "").all()  # no CUDA statistics on the CPU


def _check_plots_refuse_smoke_rows(rows: pd.DataFrame, draw, out_dir: Path) -> None:
    for refused in (lambda: draw(rows, out_dir), lambda: benchmark_plots.summarise_benchmarks(rows)):
        with pytest.raises(ValueError, match="not performance measurements"):
            refused()
    assert not out_dir.exists()


def _check_pngs(paths: list[Path], names: list[str]) -> None:
    assert sorted(p.name for p in paths) == names
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000 for p in paths)


def test_bench_layers_smoke(tmp_path):
    """Three small layers, every provider and phase: rows, cost-model consistency, figures (SMOKE only if asked)."""
    rows = smoke_run(tmp_path, "layers", ["--kernels", *LAYERS, "--layouts", "channels_last"], repeats=2)
    _check_common(rows)
    layers = {str(layer): layer for variant in benchmark_cases.VARIANTS
              for layer in benchmark_cases.smoke_layers(variant)}
    expected = {(k, p, phase) for k in LAYERS for p in PROVIDERS for phase in KINDS[layers[k].kind].phases}
    assert set(zip(rows.kernel, rows.provider, rows.phase, strict=True)) == expected and len(rows) == len(expected)
    for row in rows.itertuples():
        layer, seconds = layers[row.kernel], row.ms_p50 / 1e3
        assert row.batch == benchmark_cases.SMOKE_BATCH and row.dtype == "fp32-ieee"
        assert row.tflops == pytest.approx(cost.flops(layer, row.phase, row.batch) / seconds / 1e12, rel=1e-4)
        assert row.gbps == pytest.approx(cost.minimum_bytes(layer, row.phase, row.batch, 4) / seconds / 1e9,
                                         rel=1e-4)
        if layer.kind == "sgd":
            assert math.isnan(row.images_per_s) and row.shape == f"{layer.in_features} params"
        else:
            assert row.images_per_s == pytest.approx(row.batch / seconds, rel=1e-4)
        assert row.layout == ("channels_last" if layer.kind == "conv" else "")
    conv = layers["2012/conv2"].conv
    assert set(rows[rows.kernel == "2012/conv2"]["shape"]) == {f"2x{conv.in_channels}x{conv.size}x{conv.size}"}

    _check_plots_refuse_smoke_rows(rows, benchmark_plots.plot_layer_benchmarks, tmp_path / "refused")
    # a second batch (copied rows) exercises the batch-sweep figure; all of it is smoke data
    sweep = pd.concat([rows, rows.assign(batch=4, ms_p50=rows.ms_p50 * 1.5)], ignore_index=True)
    _check_pngs(benchmark_plots.plot_layer_benchmarks(sweep, tmp_path / "figures", allow_smoke=True),
                ["layers_batch.png", "layers_fp32-ieee.png", "layers_speedup.png"])
    summary = benchmark_plots.summarise_benchmarks(rows, allow_smoke=True)
    assert summary.startswith("SMOKE TEST") and all(f"| {kernel} |" in summary for kernel in LAYERS)


def test_bench_model_smoke(tmp_path):
    """The scaled-down 2012 net, inference and training step, every provider: rows and figures."""
    rows = smoke_run(tmp_path, "model", ["--kernels", "2012/model", "--layouts", "nchw"], repeats=1)
    _check_common(rows)
    assert set(zip(rows.provider, rows.phase, strict=True)) == {
        (p, phase) for p in PROVIDERS for phase in benchmark_cases.MODEL_PHASES} and len(rows) == 6
    size = benchmark_cases.SMOKE_MODEL["2012"]["input_size"]
    assert (rows.kernel == "2012/model").all() and (rows["shape"] == f"2x3x{size}x{size}").all()
    assert rows.images_per_s.to_numpy() == pytest.approx((2 / (rows.ms_p50 / 1e3)).to_numpy(), rel=1e-4)
    assert rows.tflops.isna().all()  # the cost model describes the full-size net only
    _check_plots_refuse_smoke_rows(rows, benchmark_plots.plot_model_benchmarks, tmp_path / "refused")
    _check_pngs(benchmark_plots.plot_model_benchmarks(rows, tmp_path / "figures", allow_smoke=True),
                ["model_throughput.png"])
    summary = benchmark_plots.summarise_benchmarks(rows, allow_smoke=True)
    assert summary.startswith("SMOKE TEST") and "| 2012 | fp32-ieee | train-step |" in summary


@pytest.mark.parametrize("provider, formed", [("triton", True), ("eager", False)])
def test_the_network_benchmark_gives_each_network_its_images_as_train_py_does(provider, formed, monkeypatch):
    """channels_last fp16: the Triton network takes conv1's images in its space-to-depth form (train.py's loaders
    make it), PyTorch's the images; made once, before any timed step, which runs on them."""
    made = []
    monkeypatch.setattr(data, "space_to_depth_images", lambda images, form: _record(made, images, form))
    case = benchmark_cases.ModelCase("2012", 2, "fp16", "channels_last", (provider,), (TRAIN_STEP,),
                                     scale=benchmark_cases.SMOKE_MODEL["2012"])
    for _, step in benchmark._model_functions(case, PROVIDERS[provider], "default"):
        step()
    assert len(made) == formed


def _record(made: list, images: torch.Tensor, form) -> torch.Tensor:
    made.append(form)
    return space_to_depth_images(images, form)


def test_smoke_rows_never_go_to_reports():
    assert cli.output_path(None, REPO, "layers.csv") == REPO / "runs" / "bench-smoke" / "layers.csv"
    with pytest.raises(ValueError, match="never go to reports"):
        cli.output_path(REPO / "reports" / "benchmarks" / "layers.csv", REPO, "layers.csv")


def test_study_sweep(monkeypatch):
    """The GPU plan has the size experiments/gpu_study.py states; compile only where the budget allows it."""
    for variant in benchmark_cases.VARIANTS:
        shapes = benchmark_cases.parameter_shapes(layer_kinds.study_layers(variant))
        assert sum(math.prod(s) for s in shapes) == parameter_count(variant)
    monkeypatch.setattr(benchmark_cases, "smoke", lambda: False)
    layers, network = benchmark_cases.layer_plan(), benchmark_cases.model_plan()
    assert (benchmark_cases.timings_in(layers), benchmark_cases.timings_in(network)) == (1338, 60)
    assert (benchmark_cases.timings_in(benchmark_cases.layer_plan(quick=True)),
            benchmark_cases.timings_in(benchmark_cases.model_plan(quick=True))) == (111, 6)
    headline = benchmark_cases.HEADLINE
    for case in layers + network:
        assert case.providers[:2] == ("triton", "eager")
        if "compiled" in case.providers:
            assert case.kernel.startswith("2012/") and case.batch == headline["batch"]
            assert case.dtype in benchmark_cases.COMPILE_DTYPES and case.layout in ("", headline["layout"])
    study = {(str(layer), dtype, layout) for v in benchmark_cases.VARIANTS for layer in layer_kinds.study_layers(v)
             for dtype in benchmark_cases.DTYPES
             for layout in (benchmark_cases.LAYOUTS if KINDS[layer.kind].spatial else [""])}
    assert {(c.kernel, c.dtype, c.layout) for c in layers if c.batch == headline["batch"]} == study


def test_select_keeps_non_spatial_layers_under_a_layout_filter():
    cases = benchmark_cases.select(benchmark_cases.layer_plan(), kernels=["2012/*"], layouts=["nchw"],
                                   providers=["eager"], phases=["full"])
    assert {c.kernel for c in cases} == {str(layer) for layer in layer_kinds.study_layers("2012")}
    assert all(c.providers == ("eager",) and c.phases == ("full",) and c.layout in ("", "nchw") for c in cases)


def test_the_fused_graphed_step_fuses_the_update_and_trains(monkeypatch):
    # the phase of the GPU study's network that times the fused update (optim.SGD.fuse_into) in one CUDA graph: on
    # the CPU the capture is the call itself; the step must run with the fc layers stepping themselves
    monkeypatch.setattr(benchmark.graphs, "capture", lambda call: call)
    fusions = []
    fuse_into = optim.SGD.fuse_into
    monkeypatch.setattr(optim.SGD, "fuse_into", lambda self, model: fusions.append(self) or fuse_into(self, model))
    case = benchmark_cases.ModelCase("2012", 2, "fp32-ieee", "channels_last", ("triton",),
                                     (TRAIN_STEP, FUSED_GRAPHED_STEP), benchmark_cases.SMOKE_MODEL["2012"])
    phases = benchmark._model_functions(case, PROVIDERS["triton"], "default")
    phase, step = next(phases)
    step()
    assert phase == TRAIN_STEP and not fusions
    phase, step = next(phases)
    (optimizer,) = fusions
    fused = list(optimizer._fused)  # the fc layers' weights and biases
    assert phase == FUSED_GRAPHED_STEP and len(fused) == 6
    before = [p.detach().clone() for p in fused]
    step()
    assert all(p.grad is None and not torch.equal(p, old) for p, old in zip(fused, before, strict=True))


def test_numeric_settings_work_after_pytorch_froze_the_cudnn_flags(monkeypatch):
    # importing PyTorch's test suite (opcheck, OpInfo samples) in the same process calls disable_global_flags();
    # the benchmarks' settings must still apply and be restored (it failed in CI when xdist ordered tests so)
    monkeypatch.setitem(torch.backends.flags_frozen.__globals__, "__allow_nonbracketed_mutation_flag", False)
    assert torch.backends.flags_frozen()
    before = torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    with benchmark.numeric_settings("fp32-tf32"):
        assert torch.backends.cudnn.benchmark and torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32
    with benchmark.numeric_settings("fp32-ieee"):
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
            torch.backends.cuda.matmul.allow_tf32) == before
