"""Tables and headline numbers from an inspection table (``compilation.COLUMNS``): failures and limits per
target (``summarise_inspection``); each GEMM-like kernel's main loop (``sass_loop``) beside that of a plain Triton
matmul (``reference_gemm``: each conv layer's forward GEMM) in ``loop_table`` and ``loop_summary``; and the conv
passes against the before-state (``issue_comparison``: conv_loops_before.csv, the conv kernels of an earlier
commit, named in the file's ``commit`` column, measured with the same ``sass_loop``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...architecture import CONV_LAYERS
from .. import vocabulary
from . import sass_loop
from .cases import DROP_IN
from .compilation import TARGETS


def targets_in(table: pd.DataFrame) -> list[str]:
    """The targets of ``table``, in ``TARGETS`` order."""
    return [t for t in TARGETS if t in set(table.target)]


def short_name(kernel: str) -> str:
    """A kernel's name without its leading underscore and ``_kernel``."""
    return kernel.strip("_").removesuffix("_kernel")


def _failure_counts(rows: pd.DataFrame) -> dict:
    return dict(kernels=int(rows.kernel.nunique()), compilations=len(rows), failing=int((rows.status != "ok").sum()),
                compile_errors=int(rows.status.str.startswith("compile error").sum()),
                spilling=int((rows.status == "spills").sum()),
                shared_over_limit=int((rows.status == "shared memory over the limit").sum()))


def _target_summary(rows: pd.DataFrame) -> dict:
    compiled = rows[rows.registers.notna()]
    heaviest = compiled.loc[compiled.registers.idxmax()] if len(compiled) else None
    return dict(
        _failure_counts(rows),
        max_registers=None if heaviest is None else int(heaviest.registers),
        max_registers_at=None if heaviest is None else " ".join(heaviest[["kernel", "config", "example_case"]]),
        min_occupancy=float(compiled.occupancy[compiled.occupancy > 0].min()) if len(compiled) else None,
        kernels_using_mma=int(rows.kernel[rows.mma.fillna("none") != "none"].nunique()),
        mma=sorted({m for value in rows.mma.dropna() for m in value.split("+")} - {"none"}),
        kernels_using_async_copy=int(rows.kernel[rows.async_copy.fillna("none") != "none"].nunique()))


def summarise_inspection(table: pd.DataFrame) -> dict:
    """Headline numbers of an inspection table: kernels, compilations and failures (compile errors, spills,
    shared memory over the limit) in all and per target; per target also the largest register count and
    where, the lowest occupancy of the compilations that can launch, the matrix instructions used and how
    many kernels use them and asynchronous copies."""
    return dict(_failure_counts(table), triton=sorted(set(table.triton.astype(str))),
                per_target={name: _target_summary(table[table.target == name]) for name in targets_in(table)})


# ----------------------------------------------------------------------------------------------------------------
# Main loops, and the conv kernels' against the reference GEMM's.


LOOP_TABLE_COLUMNS = {"kernel": "kernel", "config": "config", "target": "target", "dtypes": "dtypes",
                      "layouts": "layouts", "registers": "regs", "spill_bytes": "spill", "shared_bytes": "smem",
                      "loop_instructions": "loop", "mma_count": "mma", "mma_shapes": "shape",
                      "issue_per_tensor": "issue/tc", "wgmma_wait_depth": "wait", "hgmma_register_a": "regA",
                      "loop_scalar_loads": "ldg_scalar", "loop_cp_async": "cp.async", "loop_divisions": "div"}
# The conv kernels of each pass.
CONV_PASSES = dict(zip(("_conv2d_forward_kernel", "_conv2d_input_grad_kernel", "_conv2d_weight_grad_kernel"),
                       vocabulary.CONV_PASSES, strict=True))
REFERENCE_KERNEL = "_reference_matmul_kernel"


def loop_table(table: pd.DataFrame) -> pd.DataFrame:
    """The compiled rows with a main loop, main-loop columns under short headers (issue/tc: issue_per_tensor),
    kernels without their leading underscore and ``_kernel``; sorted by kernel, target, dtypes, config."""
    rows = table[table.loop_instructions.notna()].assign(kernel=lambda t: t.kernel.map(short_name))
    rows = rows.sort_values(["kernel", "target", "dtypes", "layouts", "config"])
    integers = ["registers", "spill_bytes", "shared_bytes", "loop_instructions", "mma_count", "wgmma_wait_depth",
                "hgmma_register_a", "loop_scalar_loads", "loop_cp_async", "loop_divisions"]
    rows[integers] = rows[integers].astype("Int64")
    return rows[list(LOOP_TABLE_COLUMNS)].rename(columns=LOOP_TABLE_COLUMNS).reset_index(drop=True)


def rows_per_case(table: pd.DataFrame) -> pd.DataFrame:
    """Compiled rows with a main loop, one per case each serves, with the case's variant, layer, dtype, layout."""
    rows = table[(table.status == "ok") & table.issue_per_tensor.notna()]
    rows = rows.assign(case=rows.case_list.str.split(";")).explode("case", ignore_index=True)
    parts = pd.DataFrame(rows.case.str.split("/").tolist(), index=rows.index,
                         columns=["variant", "layer", "dtype", "layout"])
    rows = rows.join(parts)
    return rows[rows.variant != DROP_IN]


def loop_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per conv (variant, layer, pass, target, dtype, layout): the shipped config with the least issue_per_tensor,
    its registers, spills, shared memory and main-loop columns; the reference GEMM's least issue_per_tensor on the
    same layer's forward GEMM, dtype and target, and its config; issue_vs_reference = the conv's / the
    reference's. Only compilations with status ok and an MMA loop count. Also the config's occupancy."""
    rows = rows_per_case(table)
    keys = ["variant", "layer", "target", "dtype"]
    best = rows.sort_values(["issue_per_tensor", "config"]).drop_duplicates([*keys, "kernel", "layout"])
    reference = best[best.kernel == REFERENCE_KERNEL][[*keys, "config", "issue_per_tensor"]].rename(
        columns={"config": "reference_config", "issue_per_tensor": "reference_issue_per_tensor"})
    conv_rows = best[best.kernel.isin(CONV_PASSES)].merge(reference, on=keys, how="left")
    conv_rows["pass"] = conv_rows.kernel.map(CONV_PASSES)
    conv_rows["issue_vs_reference"] = (conv_rows.issue_per_tensor / conv_rows.reference_issue_per_tensor).round(2)
    columns = ["variant", "layer", "pass", "target", "dtype", "layout", "kernel", "config", "registers",
               "spill_bytes", "shared_bytes", "occupancy", *sass_loop.LOOP_COLUMNS, "reference_config",
               "reference_issue_per_tensor", "issue_vs_reference"]
    order = {name: i for i, name in enumerate(CONV_PASSES.values())}
    return conv_rows[columns].sort_values(["variant", "layer", "pass", "target", "dtype", "layout"],
                                          key=lambda c: c.map(order) if c.name == "pass" else c, ignore_index=True)


BEFORE_FILE = "conv_loops_before.csv"
# Below 1 the schedulers could keep the tensor cores busy; the goals of the conv rewrite (the reference GEMM's
# range, with room for the conv's address work) per target.
ISSUE_GOALS = {"sm_90": 0.5, "sm_80": 0.6}


def has_main_loops(table: pd.DataFrame) -> bool:
    """Whether an inspection table holds the main-loop columns and a conv kernel measured with them."""
    return "issue_per_tensor" in table and bool(
        (table.kernel.isin(CONV_PASSES) & table.issue_per_tensor.notna()).any())


def read_before(folder: Path) -> pd.DataFrame | None:
    """The committed before-state (``conv_loops_before.csv``: the conv kernels of an earlier commit, its
    ``commit`` column, measured with today's ``sass_loop``) in ``folder``, or None."""
    path = Path(folder) / BEFORE_FILE
    return pd.read_csv(path) if path.is_file() else None


def before_commit(before: pd.DataFrame | None) -> str:
    """The commit(s) the before-state's rows were measured at ("none" without a before-state)."""
    return "none" if before is None else ", ".join(sorted(set(before.commit.astype(str))))


def issue_comparison(table: pd.DataFrame, before: pd.DataFrame | None = None, dtype: str = "bf16",
                     layout: str = "channels_last") -> pd.DataFrame:
    """Per target, variant, layer and pass of ``dtype``/``layout``: the best shipped config and its
    issue_per_tensor (``loop_summary``), the reference GEMM's best and the quotient, and the before-state's
    best (``before``: rows of conv_loops_before.csv) as before_config, before_issue_per_tensor; a pass with no
    compilation of status ok now but one before keeps its row, with an empty config. Sorted by target
    (``TARGETS`` order), variant, layer, pass."""
    summary = loop_summary(table)
    summary = summary[(summary.dtype == dtype) & (summary.layout == layout)]
    columns = ["target", "variant", "layer", "pass", "config", "issue_per_tensor", "reference_config",
               "reference_issue_per_tensor", "issue_vs_reference"]
    out = summary[columns].copy()
    keys = ["target", "variant", "layer", "pass"]
    if before is not None and len(before):
        rows = before[(before.dtype == dtype) & (before.layout == layout) & before.issue_per_tensor.notna()]
        rows = rows.assign(variant=rows.variant.astype(str))
        best = rows.sort_values(["issue_per_tensor", "config"]).drop_duplicates(keys)
        out = out.merge(best[[*keys, "config", "issue_per_tensor"]].rename(
            columns={"config": "before_config", "issue_per_tensor": "before_issue_per_tensor"}), on=keys, how="outer")
    else:
        out = out.assign(before_config=None, before_issue_per_tensor=float("nan"))
    order = {name: i for i, name in enumerate([*TARGETS, *CONV_LAYERS, *CONV_PASSES.values()])}
    return out.sort_values(keys, key=lambda c: c.map(lambda v: order.get(v, v)) if c.name != "layer" else c,
                           ignore_index=True)
