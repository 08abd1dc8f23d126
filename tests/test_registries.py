"""The study's two registries: a new layer kind and a new provider are one entry each. A dummy kind and a dummy
provider, registered for the test only, run through the plans, the smoke harness, the cost model, the roofline,
the figures, the summary and the report."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from alexnet_triton import ops
from alexnet_triton.study.benchmarks import benchmark
from alexnet_triton.study.measure import memory, traffic
from alexnet_triton.study.models import cost, roofline
from alexnet_triton.study.presentation import benchmark_plots, report
from alexnet_triton.study.registries import benchmark_cases, layer_kinds
from alexnet_triton.study.registries.gpus import GPUS
from alexnet_triton.study.registries.layer_kinds import KINDS, LayerKind
from alexnet_triton.study.registries.providers import PROVIDERS, Provider

SCALE = 3.0  # the dummy kind: y = SCALE * relu(x), one read and one write per element


def _dummy_inputs(layer, batch, dtype, gen, memory_format):
    x = torch.randn(batch, layer.channels, layer.size, layer.size, generator=gen, device=gen.device).to(dtype)
    return [x.contiguous(memory_format=memory_format)], [True]


DUMMY_KIND = LayerKind(
    "dummy", spatial=True, gemm=False,
    flops=lambda layer, forward, batch: 2 * batch * layer.channels * layer.size ** 2,
    minimum_bytes=lambda layer, forward, batch, element_size: (2 if forward else 3) * element_size * batch
    * layer.channels * layer.size ** 2,
    shape=lambda layer, n: f"{n}x{layer.channels}x{layer.size}x{layer.size}",
    shrink=lambda layer, s: replace(layer, channels=layer.channels // s.divisor),
    inputs=_dummy_inputs,
    functions=lambda layer, precision: dict(triton=lambda x: ops.dropout(F.relu(x), 0.0) * SCALE,
                                            torch=lambda x: F.relu(x) * SCALE))
DUMMY_PROVIDER = Provider("dummy", "Dummy baseline", "tab:red", backend="torch", compiles=False, every_case=False,
                          loss=F.cross_entropy, optimizer=torch.optim.SGD)


@pytest.fixture
def registered(monkeypatch):
    """The dummy kind and provider registered, and a dummy layer after each variant's SGD step."""
    monkeypatch.setitem(KINDS, "dummy", DUMMY_KIND)
    monkeypatch.setitem(PROVIDERS, "dummy", DUMMY_PROVIDER)
    study_layers = layer_kinds.study_layers

    def with_dummy(variant):
        return [*study_layers(variant), layer_kinds.StudyLayer(variant, "dummy", "dummy", channels=64, size=13)]

    monkeypatch.setattr(layer_kinds, "study_layers", with_dummy)
    monkeypatch.setattr(benchmark, "SMOKE_REPEATS", 1)


def test_plans_take_the_new_entries(registered):
    layers = benchmark_cases.layer_plan()
    dummies = [case for case in layers if case.kernel.endswith("/dummy")]
    assert {(c.kernel, c.layout) for c in dummies} == {(f"{v}/dummy", layout) for v in benchmark_cases.VARIANTS
                                                       for layout in benchmark_cases.LAYOUTS}
    assert all(c.layer.channels == 64 // benchmark_cases.SMOKE_DIVISOR for c in dummies)
    assert all("dummy" in case.providers for case in layers + benchmark_cases.model_plan())
    assert cost.flops(dummies[0].layer, "full", 2) == 2 * 2 * 2 * 4 * 13 ** 2


def test_smoke_harness_figures_summary_and_report(registered, tmp_path):
    """The dummy kind timed by every provider; a real layer and the network timed by the dummy provider."""
    dummy = next(c for c in benchmark_cases.layer_plan() if c.kernel == "2012/dummy" and c.layout == "nchw")
    pool = next(c for c in benchmark_cases.layer_plan() if c.kernel == "2012/pool5" and c.layout == "nchw")
    network = next(c for c in benchmark_cases.model_plan() if c.variant == "2012" and c.layout == "nchw")
    cases = [dummy, replace(pool, providers=("triton", "dummy")), replace(network, providers=("triton", "dummy"))]
    csv = tmp_path / "rows.csv"
    outcome = benchmark.run(cases, csv, progress=False)
    assert outcome.failures == [] and outcome.skipped == []
    rows = benchmark_cases.read_benchmarks(csv)
    assert set(zip(rows.kernel, rows.provider, rows.phase, strict=True)) == (
        {("2012/dummy", p, phase) for p in PROVIDERS for phase in ("forward", "backward", "full")}
        | {("2012/pool5", p, phase) for p in ("triton", "dummy") for phase in ("forward", "backward", "full")}
        | {("2012/model", p, phase) for p in ("triton", "dummy") for phase in benchmark_cases.MODEL_PHASES})
    for row in rows[rows.kernel == "2012/dummy"].itertuples():
        flops = cost.flops(dummy.layer, row.phase, 2)
        assert row.shape == "2x4x13x13" and row.tflops == pytest.approx(flops / row.ms_p50 * 1e3 / 1e12, rel=1e-4)

    summary = benchmark_plots.summarise_benchmarks(rows, allow_smoke=True)
    assert "| 2012/dummy |" in summary and "Dummy baseline ms (full)" in summary
    assert "Triton/Dummy baseline full" in summary and "| Dummy baseline |" in summary
    figures = [*benchmark_plots.plot_layer_benchmarks(rows, tmp_path / "figures", allow_smoke=True),
               *benchmark_plots.plot_model_benchmarks(rows, tmp_path / "figures", allow_smoke=True)]
    assert all(path.stat().st_size > 10_000 for path in figures)

    table = roofline.roofline_table("h100-sxm", "bf16", 128)
    dummy_rows = table[table.layer == "dummy"]
    assert len(dummy_rows) == 2 * 3 and (dummy_rows.peak_tflops == GPUS["h100-sxm"].fp32).all()
    as_if_measured = rows.assign(run_kind="gpu", device="a test's relabelled smoke rows")  # never a measurement
    text = report._benchmark_section(tmp_path, as_if_measured)
    assert "| 2012/dummy |" in text and "Dummy baseline" in text and (tmp_path / "benchmarks").is_dir()


def test_memory_and_traffic_count_the_new_provider_by_its_backend(registered):
    """The dummy provider runs the torch backend uncompiled: its saved bytes and launches are eager's."""
    scaled = dict(width=0.125, input_size=67, num_classes=10)
    steps = {p: traffic.count_training_step("2012", p, 2, **scaled) for p in ("eager", "dummy")}
    columns = ["phase", "source", "name", "bytes", "target"]
    assert steps["dummy"][columns].equals(steps["eager"][columns])
    summary = traffic.summarise(pd.concat(steps.values())).set_index(["provider", "phase"])
    assert summary.loc[("dummy", "step"), "launches"] == summary.loc[("eager", "step"), "launches"]
    saved = memory.measure_network("2012", 1, **scaled).set_index(["provider", "group"]).xs(memory.NETWORK, level=1)
    assert saved.saved_bytes_per_image["dummy"] == saved.saved_bytes_per_image["eager"]
    assert saved.ratio_to_dummy["triton"] == saved.ratio_to_eager["triton"]


def test_the_registries_are_checked():
    with pytest.raises(ValueError, match="give inputs and functions, or step"):
        replace(DUMMY_KIND, functions=None)
    assert set(KINDS) == {"conv", "lrn_pool", "pool", "linear", "cross_entropy", "sgd"}
    assert set(PROVIDERS) == {"triton", "eager", "compiled"}
    assert pd.Series([p.colour for p in PROVIDERS.values()]).is_unique
