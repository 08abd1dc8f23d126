"""Kernel launches and bytes moved by one AlexNet training step: the Triton path against PyTorch eager, counted.

``count_training_step(variant, path, batch)`` builds the full-size model on the
path's backend ("triton": this project's kernels and ``optim.SGD``; "eager":
PyTorch's layers, ``F.cross_entropy`` and ``torch.optim.SGD``), in training mode
with dropout on, and records one steady-state step: forward with the
cross-entropy loss, backward, then the SGD update (momentum 0.9, weight decay
5e-4; the momentum buffers already exist, as after a first step). Both paths
run under the same recorder, ``record_launches``, which counts, per phase:

  Triton launches   every launch of this project's kernels goes through ``runtime.launch``; inside
                    ``runtime.capture_launches`` it is recorded instead of run. Launch shapes do not depend
                    on the data, so the kernels never execute: their outputs are uninitialised tensors of
                    the right shapes, and a full-size step is counted in seconds on the CPU.
  ATen ops          a ``TorchDispatchMode`` sees every ATen op either path dispatches (the eager step runs
                    for real on the CPU; the Triton path still asks PyTorch for allocations, views, the
                    dropout seed and scale, the target range check). An op counts as one launch unless it
                    is in ``NO_KERNEL_OPS`` (allocation, views and metadata, host reads of a scalar, profiler
                    marks) or it touches only 0-d tensors (scalar bookkeeping: the dropout seed and scale,
                    host-side on a GPU, and the loss's one-element seed gradient, which both paths have).

Bytes, the same rule for both: each distinct tensor a launch touches counts once, at numel x element size,
whether read, written or both (an in-place update counts its tensor once). This is the compulsory traffic,
a lower bound of what a GPU moves: re-reads of tiles that miss the cache are not counted, nor are workspaces
inside a library call.

Limitations of the eager count: it is the op list the CPU dispatches, which is what a CUDA eager step
dispatches at the ATen level except that (1) one ATen op may launch several kernels inside cuDNN / cuBLAS
(e.g. a convolution backward's data, weight and bias gradients), counted here as one launch; (2) dropout on
the CPU is ``bernoulli_``, ``div_`` and ``mul`` where CUDA has one ``native_dropout`` kernel (and a
``native_dropout_backward``); (3) ``torch.optim.SGD`` runs its per-parameter loop (``foreach=False``,
PyTorch's CPU default); on a GPU its default multi-tensor ``_foreach_*`` kernels move the same bytes in
fewer launches. The conv weight gradient's split-K partial buffers are sized for a GPU with ``sms``
streaming multiprocessors (default: an H100 SXM5's 132), not for the CPU's core count.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from unittest import mock

import pandas as pd
import torch
from matplotlib.figure import Figure
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .. import optim
from ..kernels import runtime
from ..model import VARIANTS, AlexNet, loss_function

PATHS = {"triton": "triton", "eager": "torch"}  # path -> AlexNet backend
PHASES = ("forward", "backward", "optimizer")
STEP = "step"  # the summary's row for the three phases together
DTYPE = "float32"
SGD_SETTINGS = dict(lr=0.01, momentum=0.9, weight_decay=5e-4)
H100_SXM_SMS = 132
MB = 1e6

# ATen ops that launch no kernel: allocation (uninitialised), views and metadata, a scalar's copy to the host,
# profiler marks. Every other op counts as one launch unless it touches only 0-d tensors (module docstring).
NO_KERNEL_OPS = frozenset({
    "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided",
    "view", "_unsafe_view", "_reshape_alias", "as_strided", "alias", "t", "transpose", "permute", "expand",
    "squeeze", "unsqueeze", "slice", "select", "detach", "lift_fresh", "set_",
    "_local_scalar_dense",
    "_record_function_enter_new", "_record_function_exit",
})


@dataclass(frozen=True)
class Launch:
    """One kernel launch: the step phase it belongs to, "triton" (a kernel) or "aten" (an op), and its bytes."""

    phase: str
    source: str
    name: str
    bytes: int


def distinct_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct tensors among ``tensors``: each counted once, at numel x element size."""
    return sum(nbytes for _, nbytes in {(t.data_ptr(), t.numel() * t.element_size()) for t in tensors})


def _tensors(tree) -> list[torch.Tensor]:
    return [leaf for leaf in tree_leaves(tree) if isinstance(leaf, torch.Tensor)]


def kernel_name(kernel) -> str:
    """A Triton kernel's function name without its underscores and "_kernel": _sgd_step_kernel -> sgd_step."""
    return kernel.fn.__name__.strip("_").removesuffix("_kernel")


class _LaunchRecorder(TorchDispatchMode):
    """Appends a Launch of ``phase`` to ``launches`` for each captured Triton launch and for each ATen op that
    launches a kernel (the rule of the module docstring); every ATen op runs."""

    def __init__(self, phase: str, launches: list[Launch]):
        super().__init__()
        self.phase, self.launches = phase, launches

    def triton_launch(self, record: runtime.LaunchRecord) -> None:
        self.launches.append(Launch(self.phase, "triton", kernel_name(record.kernel),
                                    distinct_bytes(_tensors(record.args))))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        tensors = _tensors((args, kwargs, result))
        if name not in NO_KERNEL_OPS and any(t.dim() > 0 for t in tensors):
            self.launches.append(Launch(self.phase, "aten", name, distinct_bytes(tensors)))
        return result


@contextlib.contextmanager
def record_launches(phase: str, launches: list[Launch]) -> Iterator[None]:
    """Within the block, Triton launches are captured (not run) and ATen ops run; one Launch per kernel launch
    of either kind, tagged ``phase``, is appended to ``launches``. No record keeps a launch's tensors alive
    (that would change what autograd does, e.g. make it copy a gradient it could steal)."""
    recorder = _LaunchRecorder(phase, launches)
    with runtime.capture_launches(recorder.triton_launch), recorder:
        yield


def count_training_step(variant: str, path: str, batch: int, *, num_classes: int = 1000, width: float = 1.0,
                        input_size: int | None = None, sms: int = H100_SXM_SMS) -> pd.DataFrame:
    """One row per kernel launch of a training step on images [batch, 3, S, S], fp32 NCHW.

    Columns: variant, path, batch, dtype, phase ("forward" with the loss, "backward", "optimizer"),
    source ("triton" | "aten"), name, bytes. width / input_size / num_classes give a scaled-down model (tests).
    """
    if path not in PATHS:
        raise ValueError(f"count_training_step: path must be one of {tuple(PATHS)}, got {path!r}")
    backend = PATHS[path]
    torch.manual_seed(0)
    model = AlexNet(variant, num_classes, backend, width=width, input_size=input_size, init="torch")
    if backend == "triton":
        optimizer = optim.SGD(model.parameters(), **SGD_SETTINGS)
    else:
        optimizer = torch.optim.SGD(model.parameters(), **SGD_SETTINGS, foreach=False)
    for p in model.parameters():
        optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p)
    images = torch.randn(batch, 3, model.input_size, model.input_size)
    target = torch.randint(num_classes, (batch,))
    launches: list[Launch] = []
    with mock.patch.object(runtime, "streaming_multiprocessors", lambda: sms):
        with record_launches("forward", launches):
            loss = loss_function(backend)(model(images), target)
        with record_launches("backward", launches):
            loss.backward()
        with record_launches("optimizer", launches):
            optimizer.step()
    table = pd.DataFrame([asdict(launch) for launch in launches])
    return table.assign(variant=variant, path=path, batch=batch, dtype=DTYPE)[
        ["variant", "path", "batch", "dtype", "phase", "source", "name", "bytes"]]


def launches_by_name(launches: pd.DataFrame) -> pd.DataFrame:
    """Launch count and bytes per (variant, path, phase, source, name): the long-format table."""
    keys = ["variant", "path", "batch", "dtype", "phase", "source", "name"]
    return (launches.groupby(keys, sort=False).agg(launches=("bytes", "size"), bytes=("bytes", "sum"))
            .reset_index())


def summarise(launches: pd.DataFrame) -> pd.DataFrame:
    """Launches and MB (1e6 bytes) per (variant, path, phase), a "step" row for the whole step, and each
    path's ratio to eager (launches_ratio, mb_ratio; 1 on eager rows)."""
    keys = ["variant", "path", "batch", "dtype"]
    per_phase = launches.groupby([*keys, "phase"], sort=False).agg(launches=("bytes", "size"), bytes=("bytes", "sum"))
    step = launches.groupby(keys, sort=False).agg(launches=("bytes", "size"), bytes=("bytes", "sum"))
    step = step.assign(phase=STEP).set_index("phase", append=True)
    table = pd.concat([per_phase, step]).reset_index()
    table["mb"] = table.pop("bytes") / MB
    eager = table.loc[table.path == "eager", ["variant", "phase", "launches", "mb"]]
    table = table.merge(eager, on=["variant", "phase"], suffixes=("", "_eager"))
    table["launches_ratio"] = (table.launches / table.pop("launches_eager")).round(3)
    table["mb_ratio"] = (table.mb / table.pop("mb_eager")).round(3)
    table["mb"] = table.mb.round(1)
    table["phase"] = pd.Categorical(table.phase, [*PHASES, STEP])
    return table.sort_values(["variant", "phase", "path"], ignore_index=True)


def plot_traffic(summary: pd.DataFrame, path: Path) -> Path:
    """Bars of launches (top) and MB (bottom) per phase, Triton vs eager, one column per variant; the Triton
    bars carry their ratio to eager."""
    variants = [v for v in VARIANTS if v in set(summary.variant)]
    phases = [*PHASES, STEP]
    fig = Figure(figsize=(5.5 * len(variants), 7.5), layout="constrained")
    axes = fig.subplots(2, len(variants), squeeze=False)
    width = 0.38
    for column, variant in enumerate(variants):
        rows = summary[summary.variant == variant].set_index(["path", "phase"])
        for row, (metric, ratio, label) in enumerate((("launches", "launches_ratio", "kernel launches"),
                                                      ("mb", "mb_ratio", "MB read + written (compulsory)"))):
            ax = axes[row, column]
            for offset, (name, colour) in enumerate((("triton", "tab:orange"), ("eager", "tab:blue"))):
                x = [i + (offset - 0.5) * width for i in range(len(phases))]
                values = [rows.loc[(name, phase), metric] for phase in phases]
                bars = ax.bar(x, values, width, color=colour, label=name)
                if name == "triton":
                    ax.bar_label(bars, [f"x{rows.loc[(name, phase), ratio]:.2f}" for phase in phases], fontsize=8)
            ax.set_xticks(range(len(phases)), phases)
            ax.set_ylabel(label)
            ax.set_title(f"AlexNet {variant}: {label}", fontsize=10)
            ax.margins(y=0.12)
        axes[0, column].legend(fontsize=8)
    batch, dtype = summary.batch.iloc[0], summary.dtype.iloc[0]
    fig.suptitle(f"One training step (forward + loss, backward, SGD with momentum), batch {batch}, {dtype}, NCHW: "
                 "Triton path vs PyTorch eager\ncounted on the CPU, not timed; x: Triton / eager; eager: the ATen ops "
                 "the CPU dispatches, one launch each", fontsize=10)
    fig.savefig(path, dpi=110)
    return path
