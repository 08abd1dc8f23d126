"""The study's report: ``reports/README.md`` built from the CSVs and figures under ``reports/``.

``write_report(reports)`` reads what the analyses wrote (each section is built from its own files and says
so when they are missing) and draws the benchmark figures when GPU measurements exist. Layout of ``reports/``:
  kernels/inspection.csv + PNGs      ``experiments/inspect_kernels.py`` (compile inspection, no GPU)
  kernels/conv_loops_before.csv      the conv kernels of commit f551264 read the same way (committed once)
  kernels/conv_lower_bound.csv       ``loop_model`` (a model from the SASS), with issue_per_tensor.png
                                     rewritten by ``experiments/make_report.py`` from inspection.csv
  kernels/step_lower_bound.csv + PNG ``experiments/step_model.py`` (``step_model``: every kernel of a training
                                     step, a model from the SASS, the grids and the bytes)
  memory/network.csv, blocks.csv,    ``experiments/memory.py`` (saved-for-backward bytes per image: Triton,
    compiled_modes.csv               eager, torch.compile)
  traffic/summary.csv, launches.csv, ``experiments/traffic.py`` (launches and bytes of one training step: Triton,
    compiled_functions.csv           eager, torch.compile for the CPU target)
  roofline/roofline.csv + PNGs       ``experiments/roofline.py`` (a model from the shapes and published peaks)
  training/metrics.csv, curves.png,  the default CPU run of ``experiments/train.py`` (interpreter)
    held_out.txt
  benchmarks/layers.csv, model.csv   ``experiments/bench.py layers`` / ``bench.py model`` on a GPU only
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from . import inspection, loop_model, step_model
from .benchmark_cases import HEADLINE
from .benchmark_plots import plot_layer_benchmarks, plot_model_benchmarks, read_benchmarks, summarise_benchmarks
from .inspection import DROP_IN, summarise_inspection
from .memory import DTYPE, MIB, NETWORK
from .providers import PROVIDERS, SUBJECT, baselines
from .roofline import GPUS, summarise_roofline
from .traffic import MB

COMPILED = "compiled"  # the provider whose partition and CPU-target code the torch.compile paragraphs describe
VARIANT_NAMES = {"2012": "AlexNet 2012", "torchvision": "torchvision AlexNet"}
HEADLINE_ROOFLINE = ("h100-sxm", "bf16")  # the roofline condition the headline table quotes
GPU_STUDY = "python experiments/gpu_study.py"


def _image(path: Path, reports: Path, alt: str) -> str:
    return f"![{alt}]({path.relative_to(reports).as_posix()})"


def _images(reports: Path, folder: str) -> list[str]:
    return [_image(p, reports, p.stem.replace("_", " ")) for p in sorted((reports / folder).glob("*.png"))]


def _missing(data: str, script: str) -> str:
    return f"_Not generated yet: `{data}` (`python experiments/make_report.py` runs `experiments/{script}`)._"


def _ratio(numerator: float, denominator: float = 1.0) -> str:
    """``numerator / denominator`` as "0.31×"; "–" when the denominator is 0 or either is missing."""
    return f"{numerator / denominator:.2f}×" if denominator and pd.notna(numerator) and pd.notna(denominator) \
        else "–"


def _read_csv(path: Path) -> pd.DataFrame:
    """An analysis' CSV, its variant column as text ("2012" is a name, not a number)."""
    return pd.read_csv(path, dtype={"variant": str})


def _value(per_provider: pd.Series, provider: str, form: str) -> str:
    """``per_provider[provider]`` formatted, or "–" when that provider was not counted."""
    return format(per_provider[provider], form) if provider in per_provider.index else "–"


def _peer_ratios(per_provider: pd.Series) -> list[str]:
    """The subject / each baseline of one quantity indexed by provider ("–" where a provider is missing)."""
    subject = per_provider.get(SUBJECT)
    return [_ratio(subject, per_provider.get(peer, 0)) for peer in baselines()]


def _provider_cells(per_provider: pd.Series, form: str) -> list[str]:
    """Every provider's value of one quantity formatted, then the subject's ratios to the baselines."""
    return [_value(per_provider, p, form) for p in PROVIDERS] + _peer_ratios(per_provider)


def _ratio_headers() -> list[str]:
    """The column headers of ``_peer_ratios``: "Triton / PyTorch eager", ..."""
    return [f"{PROVIDERS[SUBJECT].label} / {PROVIDERS[peer].label}" for peer in baselines()]


# ---------------------------------------------------------------------------------------------------- sections
def _gpu_benchmarks(reports: Path) -> pd.DataFrame | None:
    """The GPU rows of reports/benchmarks/*.csv (smoke rows never count), or None."""
    paths = sorted((reports / "benchmarks").glob("*.csv"))
    table = read_benchmarks(*paths) if paths else None
    return None if table is None or not (table.run_kind == "gpu").any() else table[table.run_kind == "gpu"]


HEADLINE_COLUMNS = ("quantity", "network", *(p.label for p in PROVIDERS.values()), *_ratio_headers(), "conditions")
COMPILED_CPU = "torch.compile: Inductor's code for the CPU target"


def headline_rows(reports: Path, benchmarks: pd.DataFrame | None) -> list[tuple[str, ...]]:
    """One tuple of HEADLINE_COLUMNS for every headline number found; ``benchmarks``: the GPU benchmark rows,
    if any."""
    rows = []
    memory = reports / "memory" / "network.csv"
    if memory.is_file():
        table = _read_csv(memory)
        whole = table[(table.group == NETWORK) & (table.dtype == DTYPE)]
        for variant, group in whole.groupby("variant", sort=False):
            per_provider = group.set_index("provider").saved_bytes_per_image / MIB
            rows.append(("saved for backward, MiB per image", VARIANT_NAMES[variant],
                         *_provider_cells(per_provider, ".2f"),
                         f"whole network, {DTYPE}, counted on the CPU (torch.compile: Inductor's partition)"))
    traffic = reports / "traffic" / "summary.csv"
    if traffic.is_file():
        table = _read_csv(traffic)
        for variant, group in table[table.phase == "step"].groupby("variant", sort=False):
            per_provider = group.set_index("provider")
            conditions = (f"one training step, batch {group.batch.iloc[0]}, {group.dtype.iloc[0]}, counted on the "
                          f"CPU{f' ({COMPILED_CPU})' if COMPILED in per_provider.index else ''}")
            rows.append(("kernel launches", VARIANT_NAMES[variant], *_provider_cells(per_provider.launches, "d"),
                         conditions))
            rows.append(("MB read + written (compulsory)", VARIANT_NAMES[variant],
                         *_provider_cells(per_provider.mb, ",.0f"), conditions))
    if benchmarks is not None:
        batch = HEADLINE["batch"]
        steps = benchmarks[(benchmarks.phase == "train-step") & (benchmarks.batch == batch)]
        for (kernel, dtype, layout), group in steps.groupby(["kernel", "dtype", "layout"], sort=False):
            speed = group.groupby("provider").images_per_s.median()
            if SUBJECT in speed.index and speed.index.isin(baselines()).any():
                # images/s: above 1 is better, so the ratios are subject / baseline as for the other rows
                rows.append((f"training images/s (measured), {dtype}, {layout}", VARIANT_NAMES[kernel.split("/")[0]],
                             *_provider_cells(speed, ",.0f"),
                             f"batch {batch}, {group.device.iloc[0]}, torch {group.torch.iloc[0]}"))
    return rows


def _headline_section(reports: Path, benchmarks: pd.DataFrame | None) -> str:
    rows = headline_rows(reports, benchmarks)
    lines = ["## Headline", "", "| " + " | ".join(HEADLINE_COLUMNS) + " |", "|---" * len(HEADLINE_COLUMNS) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", "Ratios are of the quantity in the row: below 1 is better for memory, launches and bytes, above 1 "
              "for images/s."]
    if benchmarks is None:
        lines += ["", "No GPU measurements yet: no time, throughput or speed-up in this report was measured. "
                  f"On a CUDA GPU, `{GPU_STUDY}` adds them."]
    inspection_csv = reports / "kernels" / "inspection.csv"
    if inspection_csv.is_file():
        summary = summarise_inspection(pd.read_csv(inspection_csv))
        targets = summary["per_target"]
        lines += ["", f"Compile inspection: {summary['kernels']} kernels × {len(targets)} targets "
                  f"({', '.join(targets)}), {summary['compilations']} compilations, {summary['failing']} failing, "
                  f"{summary['spilling']} spilling; matrix instructions ("
                  + ", ".join(f"{'/'.join(t['mma'])} on {name}" for name, t in targets.items())
                  + f") in {max(t['kernels_using_mma'] for t in targets.values())} GEMM kernels."]
    roofline = reports / "roofline" / "roofline.csv"
    if roofline.is_file():
        table = pd.read_csv(roofline)
        gpu, dtype = HEADLINE_ROOFLINE
        steps = table[(table.gpu == gpu) & (table.dtype == dtype) & (table.layer == "step")]
        bounds = "; ".join(f"{VARIANT_NAMES[s.variant]} at least {s.time_ms:.2f} ms (at most {s.images_per_s:,.0f} "
                           f"images/s)" for s in steps.itertuples())
        if bounds:
            lines += ["", f"Roofline model (not a measurement), {GPUS[gpu].name}, {dtype}, batch "
                      f"{steps.batch.iloc[0]}: one training step takes {bounds}."]
    if (step_table := step_model.read_step_table(reports)) is not None:
        lines += step_model.headline_lines(step_table)
    return "\n".join(lines)


def _benchmark_section(reports: Path, table: pd.DataFrame | None) -> str:
    lines = ["## Benchmarks: " + " vs ".join(p.label for p in PROVIDERS.values()), ""]
    if table is None:
        lines += ["**No GPU measurements.** This report was built on a machine without a GPU, and a GPU figure "
                  "appears here only if it was measured on one. The harness is exercised on the CPU by a smoke mode "
                  "(`python experiments/bench.py layers`, `python experiments/bench.py model`; tiny shapes, "
                  "interpreter) whose rows go to `runs/bench-smoke/`, never to `reports/`.", "",
                  f"On a CUDA GPU, `{GPU_STUDY}` times every layer (both variants; forward, backward, full; "
                  "fp32 IEEE and TF32, fp16, bf16; NCHW and channels_last; a batch sweep) and the whole network "
                  "(training step and inference images/s, peak memory), writes `benchmarks/layers.csv` and "
                  "`benchmarks/model.csv`, puts the measured points on the roofline plots and rebuilds this report."]
        return "\n".join(lines)
    out = reports / "benchmarks"
    figures = []
    if (~table.kernel.str.endswith("/model")).any():
        figures += plot_layer_benchmarks(table, out)
    if table.kernel.str.endswith("/model").any():
        figures += plot_model_benchmarks(table, out)
    lines += [summarise_benchmarks(table), "", *(_image(p, reports, p.stem) for p in figures)]
    return "\n".join(lines)


def _section(reports: Path, title: str, data: str, script: str, body: Callable[[pd.DataFrame], list[str]]) -> str:
    """A section built by ``body`` from the CSV ``reports/<data>``, then the figures of its folder; when the CSV is
    missing, a line naming the script that makes it. A figure the body already shows is not repeated."""
    path = reports / data
    if not path.is_file():
        return f"## {title}\n\n{_missing(data, script)}"
    lines = body(_read_csv(path))
    images = [image for image in _images(reports, path.parent.name) if image not in lines]  # not shown twice
    return "\n".join([f"## {title}", "", *lines, "", *images])


def _inspection_summary(table: pd.DataFrame) -> list[str]:
    summary = summarise_inspection(table)
    lines = [f"Every kernel compiled ahead of time with each config it can be launched with, on AlexNet's "
             f"full-size shapes (batch 128), every dtype and layout, and on one AlexNet-sized case of each "
             f"specialisation the ops compile for PyTorch's other arguments (cases `{DROP_IN}/...`: a dilated conv, "
             f"a dilated ceil_mode pool and its indices, the cross-entropy options): {summary['kernels']} kernels, "
             f"{summary['compilations']} compilations (Triton {', '.join(summary['triton'])}), "
             f"{summary['failing']} failing. Data: `kernels/inspection.csv`.", "",
             "| target | kernels | compilations | failing | spilling | max registers | lowest occupancy "
             "| kernels with matrix instructions | kernels with async copies |", "|---" * 9 + "|"]
    for target, t in summary["per_target"].items():
        mma = f"{t['kernels_using_mma']} ({'/'.join(t['mma']) or 'none'})"
        lines.append(f"| {target} | {t['kernels']} | {t['compilations']} | {t['failing']} | {t['spilling']} | "
                     f"{t['max_registers']} | {t['min_occupancy']:.3f} | {mma} | {t['kernels_using_async_copy']} |")
    return lines + ["", "Registers are per thread (NVIDIA) or per lane, VGPR + AGPR (AMD); occupancy is the "
                    "theoretical fraction of resident warps (waves) the registers and shared memory allow."]


def _issue_cell(row: dict) -> str:
    """One conv pass's best issue/tensor: "**0.439** (1.76× ref; before 16.56)"; "none ok" when no config of
    the pass compiled with status ok."""
    if pd.isna(row["issue_per_tensor"]):
        cell = "none ok"  # every config spilled or overflowed shared memory
    else:
        cell = f"**{row['issue_per_tensor']:.3f}**"
    notes = []
    if pd.notna(row["issue_vs_reference"]):
        notes.append(f"{row['issue_vs_reference']:.2f}× ref")
    if pd.notna(row["before_issue_per_tensor"]):
        notes.append(f"before {row['before_issue_per_tensor']:.2f}")
    return cell + (f" ({'; '.join(notes)})" if notes else "")


def _main_loop_lines(reports: Path, table: pd.DataFrame) -> list[str]:
    """Per NVIDIA target, each conv layer x pass's best issue/tensor (bf16, channels_last) against the reference
    GEMM and the before-state; the figure; the modelled lower bound of kernels/conv_lower_bound.csv."""
    if not inspection.has_main_loops(table):
        return ["", "_This inspection table has no main-loop columns: `python experiments/inspect_kernels.py` "
                "adds them (issue slots per tensor-core cycle of every GEMM-like kernel)._"]
    folder = reports / "kernels"
    before = inspection.read_before(folder)
    data = inspection.issue_comparison(table, before)
    lines = ["", "### Conv main loops: issue slots per tensor-core cycle (static analysis of the SASS)", "",
             "Each conv pass's main loop as compiled for sm_90 / sm_80 (bf16, channels_last, the shipped config "
             "with the least issue/tensor): instructions per warp and iteration / the tensor-core cycles its MMAs "
             "take (`alexnet_triton/study/sass_loop.py`). One scheduler issues about one instruction per clock, so "
             "above 1 the tensor cores cannot be kept busy; counted from the machine code, not measured. "
             "\"ref\": the conv's value / the reference GEMM's best on the layer's forward GEMM (a plain Triton "
             "matmul, column \"reference GEMM\"); \"before\": the conv kernels of commit "
             f"{inspection.BEFORE_COMMIT}, "
             f"measured once with the same analysis (`kernels/{inspection.BEFORE_FILE}`). Goals: "
             + ", ".join(f"{goal:g} on {target}" for target, goal in inspection.ISSUE_GOALS.items()) + "."]
    for target, rows in data.groupby("target", sort=False):
        lines += ["", f"**{target}**", "", "| network | layer | reference GEMM | forward | input grad | weight grad |",
                  "|---" * 6 + "|"]
        for (variant, layer), group in rows.groupby(["variant", "layer"], sort=False):
            cells = {row["pass"]: _issue_cell(row) for row in group.to_dict("records")}
            reference = group.reference_issue_per_tensor.dropna()
            lines.append(f"| {VARIANT_NAMES.get(str(variant), variant)} | {layer} | "
                         f"{f'{reference.iloc[0]:.3f}' if len(reference) else '–'} | "
                         + " | ".join(cells.get(p, "–") for p in inspection.CONV_PASSES.values()) + " |")
    figure = folder / "issue_per_tensor.png"
    if figure.is_file():
        lines += ["", _image(figure, reports, "issue per tensor")]
    lines += _lower_bound_lines(reports)
    if (step_table := step_model.read_step_table(reports)) is not None:
        lines += step_model.report_lines(step_table)  # its figure: among the inspection section's
    return lines


def _lower_bound_lines(reports: Path) -> list[str]:
    path = reports / "kernels" / loop_model.LOWER_BOUND_FILE
    if not path.is_file():
        return []
    table = pd.read_csv(path, dtype={"variant": str})
    if table.empty:
        return []
    gpu = table.gpu.iloc[0]
    lines = ["", f"### A modelled lower bound per conv kernel, {GPUS[gpu].name} (a model, not a measurement)", "",
             f"Batch {inspection.BATCH}, {table.dtype.iloc[0]}, {table.layout.iloc[0]}. Each "
             "launch takes at least the largest of: the roofline time (FLOPs and minimum bytes of the pass against the "
             "published peaks), the issue time (the busiest SM's programs x main-loop iterations x loop "
             "instructions x warps, issued by 4 schedulers one instruction per clock) and the tensor time (the "
             "same with the MMAs' tensor-core cycles, so with tile padding and wave quantisation), at "
             f"{loop_model.clock_hz(gpu) / 1e9:.2f} GHz (the clock of the published tensor peak) on "
             f"{loop_model.MACHINES[gpu].sms} SMs "
             "(`alexnet_triton/study/loop_model.py`). Prologue, epilogue and unhidden latency are left out, so the "
             "real time is longer. Every shipped config is priced and the least bound kept (\"configs\": how "
             "many; the autotuner launches one of them), so the config may differ from the least-issue one above. "
             "conv1 has no input gradient in training. A measured gradient (\"input-grad\", \"weight-grad\" "
             "benchmark modes) also runs the ReLU-mask / bias-grad pass. Data: `kernels/conv_lower_bound.csv`."
             + ("" if table.measured_p50_us.notna().any() else " No GPU measurement of these kernels yet: the "
                "measured column is empty."), "",
             "| network | layer | pass | config (of configs) | programs | waves | iterations | roofline µs | issue µs "
             "| tensor µs | **bound µs** | bound by | measured p50 µs |", "|---" * 13 + "|"]
    for row in table.to_dict("records"):
        measured = f"{row['measured_p50_us']:.1f}" if pd.notna(row["measured_p50_us"]) else ""
        lines.append(f"| {VARIANT_NAMES.get(row['variant'], row['variant'])} | {row['layer']} | {row['pass']} | "
                     f"{row['config']} ({row['configs']}) | {row['programs']} | {row['waves']} | "
                     f"{row['iterations']:g} | "
                     f"{row['roofline_us']:.1f} | {row['issue_us']:.1f} | {row['tensor_us']:.1f} | "
                     f"**{row['bound_us']:.1f}** | {row['bound_by']} | {measured} |")
    return lines


def _inspection_body(reports: Path) -> Callable[[pd.DataFrame], list[str]]:
    """The compile-inspection section: the per-target summary, then the conv main loops and the lower bound."""
    def body(table: pd.DataFrame) -> list[str]:
        return _inspection_summary(table) + _main_loop_lines(reports, table)
    return body


def _memory_body(reports: Path) -> Callable[[pd.DataFrame], list[str]]:
    """The memory section: per layer group (float32) and whole network (every dtype), every provider."""
    def body(table: pd.DataFrame) -> list[str]:
        headers = [f"{p.label} MiB/image" for p in PROVIDERS.values()] + _ratio_headers()
        lines = ["Bytes kept between forward and backward, per image: for Triton and eager, what autograd "
                 "saves (`saved_tensors_hooks`); for torch.compile, what the forward graph of Inductor's partitioner "
                 "(AOTAutograd's min-cut, with Inductor's decompositions, as `torch.compile` runs it) returns for the "
                 "backward. The same rule for all: storage shared by several saved tensors counted once, parameters "
                 f"apart. Full-size networks, batch {table.batch.iloc[0]}, counted on the CPU (the partition is the "
                 "same code on a GPU). Data: `memory/network.csv`, `memory/blocks.csv` (the fused conv1 and conv2 "
                 "blocks alone, Triton vs eager).", "",
                 "| network | dtype | layer group | " + " | ".join(headers) + " |", "|---" * (len(headers) + 3) + "|"]
        shown = table[(table.dtype == DTYPE) | (table.group == NETWORK)]
        for (variant, dtype, group), rows in shown.groupby(["variant", "dtype", "group"], sort=False):
            per_provider = rows.set_index("provider").saved_bytes_per_image / MIB
            label = "**whole network**" if group == NETWORK else group
            lines.append(f"| {VARIANT_NAMES[variant]} | {dtype} | {label} | "
                         + " | ".join(_provider_cells(per_provider, ".3f")) + " |")
        lines += ["", "How a tensor between two layers is attributed to a group differs between providers (a ReLU "
                  "output the Triton conv saves for its own backward is, under torch.compile, saved for the next "
                  "conv): compare whole networks first."]
        if COMPILED in set(table.provider):
            lines += _compiled_modes_lines(reports) + _compiled_memory_wins(table)
        return lines
    return body


def _compiled_modes_lines(reports: Path) -> list[str]:
    path = reports / "memory" / "compiled_modes.csv"
    if not path.is_file():
        return []
    modes = _read_csv(path)
    differing = modes[~modes.same_as_default]
    verdict = ("the same tensors in every case" if differing.empty else "different tensors for "
               + ", ".join(f"{VARIANT_NAMES[r.variant]} {r.dtype} ({r.saved_bytes_per_image / MIB:.3f} MiB/image)"
                           for r in differing.itertuples()))
    return ["", f"torch.compile's modes ({', '.join(dict.fromkeys(modes.compile_mode))}) partition both networks in "
            f"float32 and bfloat16 with {verdict}: the partition is made before kernels are chosen. Data: "
            "`memory/compiled_modes.csv`."]


def _compiled_memory_wins(table: pd.DataFrame) -> list[str]:
    """Where torch.compile keeps less than Triton (whole networks, then groups), with both tensor lists."""
    triton = table[table.provider == SUBJECT].set_index(["variant", "dtype", "group"])
    compiled = table[table.provider == COMPILED].set_index(["variant", "dtype", "group"])
    wins = [key for key in triton.index if key in compiled.index
            and compiled.saved_bytes_per_image[key] < triton.saved_bytes_per_image[key]]
    lines = ["", "### Where torch.compile keeps less than Triton", ""]
    if not wins:
        return lines + ["Nowhere: in every group and network Triton keeps at most what torch.compile keeps."]
    networks = [f"{VARIANT_NAMES[v]} {d}" for v, d, g in wins if g == NETWORK]
    lines += [("Whole network: " + ", ".join(networks) + ". " if networks else "")
              + "What each keeps, per image × batch, in the float32 groups where torch.compile keeps less:", "",
              "| network | layer group | Triton keeps | torch.compile keeps |", "|---" * 4 + "|"]
    for variant, dtype, group in wins:
        if group != NETWORK and dtype == DTYPE:
            lines.append(f"| {VARIANT_NAMES[variant]} | {group} | {triton.tensors[(variant, dtype, group)]} | "
                         f"{compiled.tensors[(variant, dtype, group)]} |")
    return lines + ["", "Why (read from the partitioned forward graph): Inductor's min-cut partitioner saves the "
                    "cheapest cut between forward and backward and recomputes pointwise work in the backward. A ReLU "
                    "output that the backward reads only for its sign is saved as its mask (`le`, bool, 1 byte per "
                    "element) instead of 4 bytes; a dropout as its bool mask (`gt`); a max-pool as int8 offsets "
                    "(`_low_memory_max_pool_with_offsets`, as the Triton pool). The Triton conv + ReLU kernels save "
                    "the float ReLU output, which their backward reads only for the ReLU mask where the next layer "
                    "is a pool (torchvision's conv1, conv2, conv5: the pool's backward needs only its offsets). "
                    "Where the next layer needs the float output anyway (an LRN, a conv), torch.compile cannot save "
                    "less. To beat it, the Triton conv would write a 1-byte (or 1-bit) ReLU mask in its epilogue "
                    "when a pool follows, keep that instead of its output, and its output-grad pass would read the "
                    "mask."]


def _traffic_body(reports: Path) -> Callable[[pd.DataFrame], list[str]]:
    """The traffic section: launches and MB per phase of every provider, then where torch.compile wins."""
    def body(table: pd.DataFrame) -> list[str]:
        headers = ([f"{p.label} launches" for p in PROVIDERS.values()] + [f"{p.label} MB" for p in PROVIDERS.values()]
                   + [f"launches {r}" for r in _ratio_headers()] + [f"MB {r}" for r in _ratio_headers()])
        lines = ["Every provider instrumented on the CPU, counted not timed: each Triton launch (captured: the "
                 "launches a GPU run makes), each ATen op PyTorch eager dispatches on the CPU, and each kernel and "
                 "extern call of the code Inductor generates for torch.compile of the same model, loss and optimizer "
                 "(`target` = cpu: the C++ backend, not CUDA; one generated kernel per fused loop nest, the unit the "
                 "Triton backend launches). Each launch reads its inputs and writes its outputs once (compulsory "
                 "traffic, not DRAM traffic measured; torch.compile's bytes are Inductor's own per-kernel count). "
                 "Data: `traffic/summary.csv`, `traffic/launches.csv` (per kernel).", "",
                 "| network | phase | " + " | ".join(headers) + " |", "|---" * (len(headers) + 2) + "|"]
        for (variant, phase), rows in table.groupby(["variant", "phase"], sort=False):
            per_provider = rows.set_index("provider")
            cells = ([_value(per_provider.launches, p, "d") for p in PROVIDERS]
                     + [_value(per_provider.mb, p, ",.0f") for p in PROVIDERS]
                     + _peer_ratios(per_provider.launches) + _peer_ratios(per_provider.mb))
            lines.append(f"| {VARIANT_NAMES[variant]} | {phase} | " + " | ".join(cells) + " |")
        if COMPILED in set(table.provider):
            lines += (_compiled_functions_lines(reports) + _cpu_target_lines(reports)
                      + _compiled_traffic_wins(reports, table))
        return lines
    return body


LAYOUT_COPY = "fused"  # Inductor's name for a generated kernel that runs no ATen op of the model: a layout copy


def _cpu_target_lines(reports: Path) -> list[str]:
    """What in torch.compile's CPU count a CUDA compile would do differently (``compiled.py`` has the detail)."""
    path = reports / "traffic" / "launches.csv"
    copies = ""
    if path.is_file():
        launches = _read_csv(path)
        launches = launches[(launches.provider == COMPILED) & (launches.name == LAYOUT_COPY)]
        copies = " (" + "; ".join(f"{VARIANT_NAMES[v]}: {rows.launches.sum()} kernels, {rows.bytes.sum() / MB:,.0f} MB"
                                  for v, rows in launches.groupby("variant", sort=False)) + ")"
    return ["", "The CPU target against a CUDA compile of the same step (`alexnet_triton/study/compiled.py`): "
            "on the CPU, Inductor copies every conv's input and weight to channels_last, kernels named "
            f"`{LAYOUT_COPY}`{copies}; on CUDA it does so for torchvision's net but not for the 2012 net (grouped "
            "convs). The max-pool backward's `scatter_add` is an ATen call on the CPU and a generated kernel on "
            "CUDA (one launch either way). The C++ and Triton backends fuse by different rules, so the count of "
            "generated kernels can differ either way; extern calls (convolution, its backward, GEMMs) are the same "
            "ATen ops, each possibly several cuDNN/cuBLAS kernels. SGD runs per parameter on the CPU (foreach off, "
            "its CPU default, as for eager); on CUDA its `_foreach` form would be fused horizontally into fewer "
            "kernels moving the same bytes."]


def _compiled_functions_lines(reports: Path) -> list[str]:
    path = reports / "traffic" / "compiled_functions.csv"
    if not path.is_file():
        return []
    table = _read_csv(path).groupby("variant", sort=False)[["generated_kernels", "cpp_functions"]].sum()
    return ["", "On the CPU the C++ backend puts consecutive generated loop nests into one function: per step "
            + "; ".join(f"{VARIANT_NAMES[v]} {r.generated_kernels} generated kernels in {r.cpp_functions} C++ "
                        "functions" for v, r in table.iterrows())
            + " (`traffic/compiled_functions.csv`). The table counts loop nests, as a GPU would launch them."]


def _kernel_list(launches: pd.DataFrame) -> str:
    """"name ×count (MB)" of each kernel, largest traffic first."""
    launches = launches.sort_values("bytes", ascending=False)
    return "; ".join(f"{r.name} ×{r.launches} ({r.bytes / MB:,.0f} MB)" for r in launches.itertuples())


def _compiled_traffic_wins(reports: Path, summary: pd.DataFrame) -> list[str]:
    """The phases where torch.compile launches fewer kernels or moves fewer bytes than Triton, with the kernels of
    both."""
    triton = summary[summary.provider == SUBJECT].set_index(["variant", "phase"])
    compiled = summary[summary.provider == COMPILED].set_index(["variant", "phase"])
    wins = [(key, quantity) for key in triton.index for quantity in ("launches", "mb")
            if compiled[quantity][key] < triton[quantity][key]]
    lines = ["", "### Where torch.compile launches fewer kernels or moves fewer bytes than Triton", ""]
    if not wins:
        return lines + ["Nowhere: in every phase Triton launches at most as many kernels and moves at most "
                        "as many bytes as torch.compile (CPU target)."]
    lines += ["- " + ", ".join(f"{VARIANT_NAMES[v]} {phase}: {'launches' if q == 'launches' else 'MB'} "
                               f"{compiled[q][(v, phase)]:,.0f} vs Triton {triton[q][(v, phase)]:,.0f}"
                               for (v, phase), q in wins)]
    path = reports / "traffic" / "launches.csv"
    if path.is_file():
        launches = _read_csv(path)
        lines += ["", "Their kernels (`traffic/launches.csv`):", "", "| network | phase | Triton kernels | "
                  "torch.compile kernels (CPU target) |", "|---" * 4 + "|"]
        for variant, phase in dict.fromkeys(key for key, _ in wins):
            if phase == "step":
                continue
            rows = launches[(launches.variant == variant) & (launches.phase == phase)]
            lines.append(f"| {VARIANT_NAMES[variant]} | {phase} | {_kernel_list(rows[rows.provider == SUBJECT])} | "
                         f"{_kernel_list(rows[rows.provider == COMPILED])} |")
    if any(phase == "backward" for (_, phase), _ in wins):
        lines += ["", "Why, in the backward (read from the kernels): torch.compile's ReLU backward reads the bool "
                  "mask its forward saved (1 byte per element) where the Triton conv's output-grad pass reads the "
                  "float ReLU output (4 bytes); an extern call (`convolution_backward`, `mm`) counts once with its "
                  "inputs and outputs, whatever cuDNN or cuBLAS does inside, while the Triton weight gradient's "
                  "split-K partial sums are launches of their own (`sum_partials`), counted with their buffers. "
                  "To beat it: a ReLU mask in the conv's epilogue before a pool (see the memory section), read by "
                  "the output-grad pass, and the split-K reduction folded into the weight-gradient kernel (or "
                  "fewer splits) for the layers where it now takes launches of its own."]
    return lines


def _roofline_body(table: pd.DataFrame) -> list[str]:
    gpu, dtype = HEADLINE_ROOFLINE
    return ["FLOPs and minimum bytes of each layer from its shapes, against a GPU's published peaks: lower bounds "
            "on time, not measurements. Measured points join the plots once `benchmarks/layers.csv` holds GPU "
            f"rows. Data: `roofline/roofline.csv` ({', '.join(GPUS[g].name for g in table.gpu.unique())}; "
            f"{', '.join(table.dtype.unique())}).", "",
            summarise_roofline(table[(table.gpu == gpu) & (table.dtype == dtype)])]


def _training_body(reports: Path) -> Callable[[pd.DataFrame], list[str]]:
    """The CPU run's section body; its held-out line comes from training/held_out.txt."""
    def body(metrics: pd.DataFrame) -> list[str]:
        held_out = reports / "training" / "held_out.txt"
        return ["The default `python experiments/train.py` on a CPU-only machine: the 2012 topology at width 1/8 on "
                "67×67 images of the built-in dataset (2 classes, chance 0.5), every layer on the Triton kernels in "
                f"Triton's CPU interpreter, {(metrics.kind == 'step').sum()} SGD steps. A correctness demonstration: "
                "its speed says nothing about a GPU. Data: `training/metrics.csv` (per step and per epoch).", "",
                f"```\n{held_out.read_text().strip()}\n```" if held_out.is_file() else ""]
    return body


def _reproduce_section() -> str:
    return "\n".join([
        "## Reproduce", "",
        "```bash",
        "python experiments/make_report.py                        # every CPU-side analysis, then this file",
        "python experiments/make_report.py --reuse inspection     # keep the compile inspection (~15 min, 2 cores)",
        f"{GPU_STUDY}                         # on a CUDA GPU: the benchmarks, then make_report",
        "```"])


def write_report(reports: Path, conditions: str) -> Path:
    """Write ``reports/README.md`` from what ``reports`` holds (``conditions``: where and with what it was built)."""
    reports = Path(reports)
    header = ("# AlexNet on hand-written Triton kernels: the performance study\n\n"
              f"Generated by `python experiments/make_report.py`; do not edit. {conditions}\n\n"
              "Every number says how it was obtained: *counted* or *modelled* on the CPU, or *measured* on a named "
              "GPU. A GPU time appears only if it was measured on a GPU.")
    benchmarks = _gpu_benchmarks(reports)
    sections = [
        header, _headline_section(reports, benchmarks), _benchmark_section(reports, benchmarks),
        _section(reports, "Compile inspection (sm_80, sm_90, gfx942; no GPU needed)", "kernels/inspection.csv",
                 "inspect_kernels.py", _inspection_body(reports)),
        _section(reports, "Memory saved for backward (no GPU needed)", "memory/network.csv", "memory.py",
                 _memory_body(reports)),
        _section(reports, "Launches and traffic of one training step (no GPU needed)", "traffic/summary.csv",
                 "traffic.py", _traffic_body(reports)),
        _section(reports, "Roofline (a model, no GPU needed)", "roofline/roofline.csv", "roofline.py", _roofline_body),
        _section(reports, "Training on the CPU (Triton interpreter)", "training/metrics.csv", "train.py",
                 _training_body(reports)),
        _reproduce_section()]
    path = reports / "README.md"
    path.write_text("\n\n".join(sections) + "\n")
    return path
