"""The report's memory and traffic sections: bytes saved for backward and launches and bytes of one training step,
every provider, then where torch.compile does better than Triton and what the CPU target counts differently."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ..measure.memory import DTYPE, MIB, NETWORK
from ..measure.traffic import MB
from ..registries.providers import PROVIDERS, SUBJECT
from ..vocabulary import STEP, VARIANT_NAMES
from .markdown import COMPILED, peer_ratios, provider_cells, ratio_headers, read_csv, value


def memory_body(reports: Path) -> Callable[[pd.DataFrame], list[str]]:
    """The memory section: per layer group (float32) and whole network (every dtype), every provider."""
    def body(table: pd.DataFrame) -> list[str]:
        headers = [f"{p.label} MiB/image" for p in PROVIDERS.values()] + ratio_headers()
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
                         + " | ".join(provider_cells(per_provider, ".3f")) + " |")
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
    modes = read_csv(path)
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
    return lines


def traffic_body(reports: Path) -> Callable[[pd.DataFrame], list[str]]:
    """The traffic section: launches and MB per phase of every provider, then where torch.compile wins."""
    def body(table: pd.DataFrame) -> list[str]:
        headers = ([f"{p.label} launches" for p in PROVIDERS.values()] + [f"{p.label} MB" for p in PROVIDERS.values()]
                   + [f"launches {r}" for r in ratio_headers()] + [f"MB {r}" for r in ratio_headers()])
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
            cells = ([value(per_provider.launches, p, "d") for p in PROVIDERS]
                     + [value(per_provider.mb, p, ",.0f") for p in PROVIDERS]
                     + peer_ratios(per_provider.launches) + peer_ratios(per_provider.mb))
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
        launches = read_csv(path)
        launches = launches[(launches.provider == COMPILED) & (launches.name == LAYOUT_COPY)]
        copies = " (" + "; ".join(f"{VARIANT_NAMES[v]}: {rows.launches.sum()} kernels, {rows.bytes.sum() / MB:,.0f} MB"
                                  for v, rows in launches.groupby("variant", sort=False)) + ")"
    return ["", "The CPU target against a CUDA compile of the same step (`alexnet_triton/study/measure/compiled.py`): "
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
    table = read_csv(path).groupby("variant", sort=False)[["generated_kernels", "cpp_functions"]].sum()
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
        launches = read_csv(path)
        lines += ["", "Their kernels (`traffic/launches.csv`):", "", "| network | phase | Triton kernels | "
                  "torch.compile kernels (CPU target) |", "|---" * 4 + "|"]
        for variant, phase in dict.fromkeys(key for key, _ in wins):
            if phase == STEP:
                continue
            rows = launches[(launches.variant == variant) & (launches.phase == phase)]
            lines.append(f"| {VARIANT_NAMES[variant]} | {phase} | {_kernel_list(rows[rows.provider == SUBJECT])} | "
                         f"{_kernel_list(rows[rows.provider == COMPILED])} |")
    return lines
