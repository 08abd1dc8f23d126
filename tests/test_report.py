"""The report build: reports/README.md from the analyses' outputs, honest about what is missing or not measured."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from alexnet_triton.study.benchmarks import benchmark
from alexnet_triton.study.measure.memory import NETWORK
from alexnet_triton.study.presentation import report
from alexnet_triton.study.registries import benchmark_cases
from alexnet_triton.study.registries.providers import PROVIDERS

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ["## Headline", "## Benchmarks", "## torchvision's AlexNet and two GPUs", "## Compile inspection",
            "## Memory saved for backward", "## Launches and traffic", "## Roofline", "## Training on the CPU",
            "## Reproduce"]
FIXTURE_DEVICE = "TEST FIXTURE GPU (made-up rows, not a measurement)"


@pytest.fixture
def reports(tmp_path) -> Path:
    """A copy of the committed reports/ without its README."""
    copy = tmp_path / "reports"
    shutil.copytree(REPO / "reports", copy, ignore=shutil.ignore_patterns("README.md", "benchmarks"))
    return copy


def _links_resolve(text: str, folder: Path) -> list[str]:
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert all((folder / link).is_file() for link in links), links
    return links


def _benchmark_rows(run_kind: str) -> pd.DataFrame:
    """Made-up rows in the harness's schema: two layers and the network, every provider."""
    rows = []
    for kernel, phases, layout in (("2012/conv2", ("forward", "backward", "full"), "channels_last"),
                                   ("2012/sgd", ("full",), ""), ("2012/model", ("inference", "train-step"),
                                                                 "channels_last")):
        for batch in (64, 128):
            for speed, provider in enumerate(PROVIDERS, start=1):
                for phase in phases:
                    ms = batch / 100 * speed
                    rows.append(dict(kernel=kernel, provider=provider, phase=phase, shape="", batch=batch, dtype="bf16",
                                     layout=layout, ms_p20=0.9 * ms, ms_p50=ms, ms_p80=1.1 * ms, tflops=1.0, gbps=1.0,
                                     images_per_s=batch / ms * 1e3, peak_memory_mb=100.0, device=FIXTURE_DEVICE,
                                     torch="0", triton="0", cudnn="0", timestamp="2026-01-01T00:00:00+00:00",
                                     run_kind=run_kind))
    return pd.DataFrame(rows, columns=benchmark_cases.COLUMNS)


def test_report_of_the_committed_analyses(reports):
    text = report.write_report(reports, "conditions line").read_text()
    assert [s for s in SECTIONS if s not in text] == [] and "conditions line" in text
    network = pd.read_csv(reports / "memory" / "network.csv")
    saved = network.query("group == @NETWORK and variant == '2012' and dtype == 'float32'").set_index("provider")
    triton, eager, compiled = (saved.saved_bytes_per_image[p] / 2**20 for p in ("triton", "eager", "compiled"))
    row = (f"| saved for backward, MiB per image | AlexNet 2012 | {triton:.2f} | {eager:.2f} | {compiled:.2f} | "
           f"{triton / eager:.2f}× | {triton / compiled:.2f}× |")
    assert row in text
    step = pd.read_csv(reports / "traffic" / "summary.csv").query("phase == 'step' and variant == '2012'")
    launches = step.set_index("provider").launches
    assert (f"| kernel launches | AlexNet 2012 | {launches['triton']} | {launches['eager']} | {launches['compiled']} "
            f"| {launches['triton'] / launches['eager']:.2f}× | {launches['triton'] / launches['compiled']:.2f}× |") \
        in text
    assert "Inductor's code for the CPU target" in text  # torch.compile's kernels are labelled with their target
    assert "**No GPU measurements.**" in text and "(measured)" not in text
    links = _links_resolve(text, reports)
    assert {"kernels/registers.png", "memory/network.png", "traffic/traffic.png"} <= set(links)


def _memory_rows() -> pd.DataFrame:
    """Made-up memory/network.csv rows: one variant, one group, every provider; torch.compile keeps the least."""
    rows = [dict(variant="torchvision", provider=provider, group=group, dtype="float32", batch=2, saved_tensors=1,
                 saved_bytes_per_image=mib * 2**20, parameter_bytes=0, tensors=tensors)
            for provider, mib, tensors in (("triton", 2.0, "2x64x55x55 float32"), ("eager", 4.0, "2x64x55x55 int64"),
                                           ("compiled", 1.0, "2x64x55x55 bool"))
            for group in ("conv1", NETWORK)]
    return pd.DataFrame(rows)


def _summary_rows() -> pd.DataFrame:
    """Made-up traffic/summary.csv rows: torch.compile launches fewer kernels than Triton in the backward."""
    rows = [dict(variant="2012", provider=provider, target=target, batch=128, dtype="float32", phase=phase,
                 launches=launches, mb=100.0)
            for phase in ("forward", "backward", "optimizer", "step")
            for provider, target, launches in (("triton", "cuda", 10 if phase != "backward" else 30),
                                               ("eager", "cpu", 40), ("compiled", "cpu", 20))]
    return pd.DataFrame(rows)


def test_the_torch_compile_column_and_where_it_wins(reports):
    _memory_rows().to_csv(reports / "memory" / "network.csv", index=False)
    (reports / "memory" / "compiled_modes.csv").unlink(missing_ok=True)
    _summary_rows().to_csv(reports / "traffic" / "summary.csv", index=False)
    launches = pd.DataFrame([dict(variant="2012", provider=provider, target="cpu", batch=128, dtype="float32",
                                  phase="backward", source="x", name=name, launches=n, bytes=50e6)
                             for provider, name, n in (("triton", "conv2d_output_grad", 30), ("compiled", "mm", 20))])
    launches.to_csv(reports / "traffic" / "launches.csv", index=False)
    text = report.write_report(reports, "").read_text()
    headline = text.split("## Headline")[1].split("\n## ")[0]
    assert "| Triton | PyTorch eager | torch.compile | Triton / PyTorch eager | Triton / torch.compile |" in headline
    assert "| saved for backward, MiB per image | torchvision AlexNet | 2.00 | 4.00 | 1.00 | 0.50× | 2.00× |" \
        in headline
    memory = text.split("## Memory")[1].split("\n## ")[0]
    assert "| torchvision AlexNet | float32 | conv1 | 2.000 | 4.000 | 1.000 | 0.50× | 2.00× |" in memory
    assert "Whole network: torchvision AlexNet float32" in memory
    assert "| torchvision AlexNet | conv1 | 2x64x55x55 float32 | 2x64x55x55 bool |" in memory
    traffic = text.split("## Launches and traffic")[1].split("\n## ")[0]
    assert "| AlexNet 2012 | backward | 30 | 40 | 20 | 100 | 100 | 100 | 0.75× | 1.50× | 1.00× | 1.00× |" in traffic
    assert "AlexNet 2012 backward: launches 20 vs Triton 30" in traffic
    assert "| AlexNet 2012 | backward | conv2d_output_grad ×30 (50 MB) | mm ×20 (50 MB) |" in traffic


def test_analyses_without_torch_compile_leave_its_column_empty(reports):
    network = pd.read_csv(reports / "memory" / "network.csv")
    network[network.provider != "compiled"].drop(columns="ratio_to_compiled").to_csv(
        reports / "memory" / "network.csv", index=False)
    text = report.write_report(reports, "").read_text()
    assert re.search(r"\| saved for backward, MiB per image \| AlexNet 2012 \| [\d.]+ \| [\d.]+ \| – \| [\d.]+× "
                     r"\| – \|", text)
    assert "Where torch.compile keeps less" not in text


def test_missing_analyses_are_named_not_invented(tmp_path):
    text = report.write_report(tmp_path, "").read_text()
    assert [s for s in SECTIONS if s not in text] == []
    assert text.count("_Not generated yet:") == 5 and "**No GPU measurements.**" in text
    assert text.count("**No GPU rows**") == 2 and "`benchmarks/torchvision.csv`" in text
    headline = text.split("## Headline")[1].split("##")[0]
    assert "|---|" in headline and not re.search(r"\d×", headline)


def test_smoke_rows_never_reach_the_report(reports):
    """The harness's CPU smoke rows (here one layer, two providers) do not count as measurements."""
    smoke_csv = reports / "benchmarks" / "layers.csv"
    cases = benchmark_cases.select(benchmark_cases.layer_plan(), kernels=["2012/fc8"], providers=["triton", "eager"],
                                   phases=["forward"])
    assert benchmark.run(cases, smoke_csv, progress=False).failures == []
    assert set(pd.read_csv(smoke_csv).run_kind) == {"cpu-smoke"}
    text = report.write_report(reports, "").read_text()
    assert "**No GPU measurements.**" in text and "smoke test, not a performance measurement" not in text
    assert list((reports / "benchmarks").glob("*.png")) == []


def test_gpu_rows_are_shown_with_their_device(reports):
    (reports / "benchmarks").mkdir()
    _benchmark_rows("gpu").to_csv(reports / "benchmarks" / "layers.csv", index=False)
    text = report.write_report(reports, "").read_text()
    assert "No GPU measurements" not in text
    benchmarks = text.split("## Benchmarks")[1].split("\n## ")[0]
    assert FIXTURE_DEVICE in benchmarks
    # the summary's columns: every provider's label, then Triton's time ratio to each baseline (made-up rows: eager
    # takes twice Triton's time, torch.compile three times)
    assert ("| layer | Triton ms (full) | PyTorch eager ms (full) | torch.compile ms (full) "
            "| Triton/PyTorch eager full | Triton/PyTorch eager forward | Triton/PyTorch eager backward "
            "| Triton/torch.compile full |") in benchmarks
    assert "| 2012/conv2 | 1.28 | 2.56 | 3.84 | 0.5 | 0.5 | 0.5 | 0.333 | 0.333 | 0.333 |" in benchmarks
    assert ("| net | dtype | phase | Triton | PyTorch eager | torch.compile | Triton/PyTorch eager "
            "| Triton/torch.compile |") in benchmarks
    assert "| 2012 | bf16 | train-step | 100,000 | 50,000 | 33,333 | 0.5 | 0.333 |" in benchmarks
    assert {"benchmarks/layers_bf16.png", "benchmarks/model_throughput.png"} <= set(_links_resolve(benchmarks, reports))
    headline = text.split("## Headline")[1].split("\n## ")[0]
    # in the made-up rows Triton takes 1.28 ms per step of 128 images, eager twice as long, torch.compile 3 times
    assert re.search(r"\| training images/s \(measured\), bf16, channels_last \| AlexNet 2012 \| 100,000 \| 50,000 "
                     r"\| 33,333 \| 2\.00× \| 3\.00× \| batch 128, " + re.escape(FIXTURE_DEVICE), headline)


def test_make_report_rebuilds_the_document_from_reused_outputs(reports, monkeypatch):
    spec = importlib.util.spec_from_file_location("make_report_experiment", REPO / "experiments" / "make_report.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "REPORTS", reports)
    figures = ["registers.png", "occupancy.png", "shared_memory.png", "matrix_units.png"]
    for name in figures:
        (reports / "kernels" / name).unlink()
    assert module.main(["--reuse", "all"]) == 0
    assert all((reports / "kernels" / name).is_file() for name in figures)  # redrawn from inspection.csv
    text = (reports / "README.md").read_text()
    assert "Generated by `python experiments/make_report.py`" in text and "no GPU" in text


def test_make_report_merges_a_gpu_study_folder(reports, tmp_path, monkeypatch):
    """--benchmarks DIR: the study's files copied in, its points on the roofline of the device it ran on."""
    study = tmp_path / "study"
    study.mkdir()
    device = "NVIDIA H200 (sm_90), " + FIXTURE_DEVICE
    _benchmark_rows("gpu").assign(device=device).to_csv(study / "layers.csv", index=False)
    (study / "summary.txt").write_text("gpu_study: GPU study\n")
    torchvision = dict(model="torchvision", provider="use_kernels", phase="train-step", batch=128, dtype="bf16",
                       layout="channels_last", ms_p50=1.2345, images_per_s=103685.6, peak_memory_mb=900.0,
                       device=device, run_kind="gpu")
    pd.DataFrame([torchvision]).to_csv(study / "torchvision.csv", index=False)
    pd.DataFrame(columns=report.STUDY_TABLES["two_gpus.csv"][1] + ["run_kind"]).to_csv(study / "two_gpus.csv",
                                                                                      index=False)  # one GPU
    spec = importlib.util.spec_from_file_location("make_report_merge", REPO / "experiments" / "make_report.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    figures = module.merge_benchmarks(study, reports)
    assert sorted(p.name for p in figures) == ["measured-h200-sxm-bf16-b128.png", "measured-h200-sxm-bf16-b64.png"]
    assert sorted(p.name for p in (reports / "benchmarks").iterdir()) == [
        "layers.csv", "summary.txt", "torchvision.csv", "two_gpus.csv"]
    text = report.write_report(reports, "").read_text()
    tables = text.split("## torchvision's AlexNet and two GPUs")[1].split("\n## ")[0]
    assert "| torchvision | use_kernels | train-step | 128 | bf16 | channels_last | 1.23 | 103,686 | 900 |" in tables
    assert "**No GPU rows** for the 2012 net's training step on two GPUs" in tables
    smoke = tmp_path / "rehearsal"
    smoke.mkdir()
    _benchmark_rows("cpu-smoke").to_csv(smoke / "layers.csv", index=False)
    with pytest.raises(ValueError, match="a rehearsal is not a measurement"):
        module.merge_benchmarks(smoke, reports)


def _main_loop_table() -> pd.DataFrame:
    """A made-up inspection table with main-loop columns: 2012 conv3's three conv passes and its reference GEMM
    on sm_90 and sm_80, bf16."""
    from alexnet_triton.study.inspection import compilation

    rows = []
    for target, mma in (("sm_90", "HGMMA"), ("sm_80", "HMMA")):
        for kernel, config, issue, case in (
                ("_conv2d_forward_kernel", "BM128_BN256_BK64_w8_s3", 0.40, "2012/conv3/bf16/channels_last"),
                ("_conv2d_input_grad_kernel", "BM128_BN256_BK64_w8_s3", 0.45, "2012/conv3/bf16/channels_last"),
                ("_conv2d_weight_grad_kernel", "BM256_BN128_BK64_w8_s3", 0.44, "2012/conv3/bf16/channels_last"),
                ("_reference_matmul_kernel", "BM128_BN128_BK64_w8_s4", 0.25, "2012/conv3/bf16/rowmajor")):
            rows.append(dict(kernel=kernel, config=config, target=target, dtypes="bf16",
                             layouts=case.split("/")[-1], registers=200, spill_bytes=0, shared_bytes=147456,
                             occupancy=0.125, mma=mma, async_copy="cp.async", cases=1, example_case=case,
                             triton="3.7.1", status="ok", loop_instructions=200, issue_per_tensor=issue,
                             case_list=case))
    return pd.DataFrame(rows).reindex(columns=compilation.COLUMNS)


def test_compile_inspection_shows_the_conv_main_loops_and_the_modelled_bound(reports):
    from alexnet_triton.study.models import loop_model

    _main_loop_table().to_csv(reports / "kernels" / "inspection.csv", index=False)
    assert {p.name for p in loop_model.write_loop_outputs(reports)} == {"issue_per_tensor.png",
                                                                        "conv_lower_bound.csv"}
    text = report.write_report(reports, "").read_text()
    section = text.split("## Compile inspection")[1].split("\n## ")[0]
    assert "### Conv main loops" in section and "not measured" in section
    # the committed before-state (commit f551264): 2012 conv3's forward at 3.53 issue slots per tensor cycle
    assert "| AlexNet 2012 | conv3 | 0.250 | **0.400** (1.60× ref; before 3.53) |" in section
    assert "**sm_90**" in section and "**sm_80**" in section
    assert "lower bound per conv kernel, NVIDIA H100 SXM5 80GB (a model, not a measurement)" in section
    assert "| AlexNet 2012 | conv3 | forward | BM128_BN256_BK64_w8_s3 (1) | 338 | 3 | 36 |" in section
    assert "the measured column is empty" in section
    links = _links_resolve(section, reports)
    assert links.count("kernels/issue_per_tensor.png") == 1


def test_a_table_without_main_loops_says_how_to_add_them(reports):
    table = _main_loop_table().drop(columns=["issue_per_tensor", "loop_instructions"])
    table.to_csv(reports / "kernels" / "inspection.csv", index=False)
    text = report.write_report(reports, "").read_text()
    assert "has no main-loop columns" in text and "### Conv main loops" not in text
