"""Kernel launches and bytes moved by one AlexNet training step: Triton against PyTorch eager and torch.compile,
counted.

``count_training_step(variant, provider, batch)`` builds the full-size model on the
provider's backend ("triton": this project's kernels and ``optim.SGD``; "eager":
PyTorch's layers, ``F.cross_entropy`` and ``torch.optim.SGD``), in training mode
with dropout on, and records one steady-state step: forward with the
cross-entropy loss, backward, then the SGD update (``architecture.SGD``: the
paper's momentum and weight decay; the momentum buffers already exist, as after a first step). Both providers
run under the same recorder, ``record_launches``, which counts, per phase:

  Triton launches   every launch of this project's kernels goes through ``runtime.launch``; inside
                    ``runtime.capture_launches`` it is recorded instead of run. Launch shapes do not depend
                    on the data, so the kernels never execute: their outputs are uninitialised tensors of
                    the right shapes, and a full-size step is counted in seconds on the CPU.
  ATen ops          a ``TorchDispatchMode`` sees every ATen op either provider dispatches (the eager step runs
                    for real on the CPU; the Triton step still asks PyTorch for allocations, views, the
                    dropout seed and scale, the target range check). An op counts as one launch unless it
                    is in ``NO_KERNEL_OPS`` (allocation, views and metadata, host reads of a scalar, profiler
                    marks) or it touches only 0-d tensors (scalar bookkeeping: the dropout seed and scale,
                    host-side on a GPU, and the loss's one-element seed gradient, which both providers have).

torch.compile ("compiled", the provider that ``compiles``): the eager model and its cross-entropy in one
``torch.compile``, ``torch.compile`` of the same ``torch.optim.SGD``'s step, each launch of the code Inductor
generates for the CPU target, with Inductor's own byte count per kernel (``compiled.py`` says how and where the
CPU target differs from CUDA). Every row carries its ``target`` (``target_of``): "cuda" for Triton (the launches a
GPU run makes, captured), "cpu" for eager (the ATen ops the CPU dispatches) and for torch.compile (Inductor's
C++ code).

Bytes, the same rule for all: each distinct tensor a launch touches counts once, at numel x element size,
whether read, written or both (an in-place update counts its tensor once). This is the compulsory traffic,
a lower bound of what a GPU moves: re-reads of tiles that miss the cache are not counted, nor are workspaces
inside a library call.

Limitations of the eager count: it is the op list the CPU dispatches, which is what a CUDA eager step
dispatches at the ATen level except that (1) one ATen op may launch several kernels inside cuDNN / cuBLAS
(e.g. a convolution backward's data, weight and bias gradients), counted here as one launch; (2) dropout on
the CPU is ``bernoulli_``, ``div_`` and ``mul`` where CUDA has one ``native_dropout`` kernel (and a
``native_dropout_backward``); (3) ``torch.optim.SGD`` runs its per-parameter loop (``foreach`` off, its
default on the CPU); on a GPU its default multi-tensor ``_foreach_*`` kernels move the same bytes in
fewer launches. The conv weight gradient's split-K partial buffers are sized for a GPU with ``sms``
streaming multiprocessors (default: an H100 SXM5's 132), not for the CPU's core count.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from matplotlib.figure import Figure
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ...architecture import SGD, VARIANTS
from ...data import as_the_loaders_give
from ...kernels import runtime
from ...ops import library
from ..registries.gpus import CAPTURED
from ..registries.providers import PROVIDERS, SUBJECT, Provider, baselines
from ..vocabulary import BACKWARD, FORWARD, OPTIMIZER, STEP, storage_name
from . import compiled

PHASES = (FORWARD, BACKWARD, OPTIMIZER)  # the summary adds a STEP row for the three together
DTYPE = storage_name(torch.float32)
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


def tensors_in(tree) -> list[torch.Tensor]:
    """The tensors among a pytree's leaves."""
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
                                    distinct_bytes(tensors_in(record.args))))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = library.run_under(self, func, args, kwargs)  # this project's operators: their launches count
        name = func.overloadpacket.__name__
        tensors = tensors_in((args, kwargs, result))
        if name == "reshape" and result.untyped_storage().data_ptr() == args[0].untyped_storage().data_ptr():
            return result  # a view (an operator's implementation sees reshape before it decomposes)
        if func.namespace == "aten" and name not in NO_KERNEL_OPS and any(t.dim() > 0 for t in tensors):
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


def target_of(provider: str) -> str:
    """Whose launches a provider's count is: Inductor's for a compiling one, else what its backend's step
    launches, captured for a GPU ("cuda": this project's kernels) or dispatched on the CPU ("cpu": PyTorch's)."""
    spec = PROVIDERS[provider]
    return compiled.TARGET if spec.compiles else "cuda" if spec.backend == "triton" else "cpu"


def count_training_step(variant: str, provider: str, batch: int, *, num_classes: int = 1000, width: float = 1.0,
                        input_size: int | None = None, sms: int = CAPTURED.sms) -> pd.DataFrame:
    """One row per kernel launch of ``provider``'s training step on images [batch, 3, S, S], fp32 NCHW.

    Columns: variant, provider, target, batch, dtype, phase ("forward" with the loss, "backward", "optimizer"),
    source ("triton" | "aten" | "inductor" | "extern"), name, bytes. width / input_size / num_classes give a
    scaled-down model (tests).
    """
    if provider not in PROVIDERS:
        raise ValueError(f"count_training_step: provider must be one of {tuple(PROVIDERS)}, got {provider!r}")
    spec = PROVIDERS[provider]
    model, optimizer, images, target = steady_state(spec, variant, batch, num_classes=num_classes, width=width,
                                                    input_size=input_size)
    launches: list[Launch] = []
    cpp_functions = {}
    if spec.compiles:
        launches, cpp_functions = compiled_step(spec, model, images, target, optimizer)
    else:
        with runtime.target(sms):
            training_step(spec, model, optimizer, images, target, lambda phase: record_launches(phase, launches))
    table = pd.DataFrame([asdict(launch) for launch in launches])
    table = table.assign(variant=variant, provider=provider, target=target_of(provider), batch=batch, dtype=DTYPE)[
        ["variant", "provider", "target", "batch", "dtype", "phase", "source", "name", "bytes"]]
    table.attrs["cpp_functions"] = cpp_functions  # compiled: per phase, the C++ functions its kernels are in
    return table


def steady_state(spec: Provider, variant: str, batch: int, *, num_classes: int = 1000, width: float = 1.0,
                 input_size: int | None = None, precision: str = "ieee",
                 memory_format: torch.memory_format = torch.contiguous_format,
                 image_dtype: torch.dtype = torch.float32):
    """(model, optimizer, images, target) of one steady-state training step of ``spec``'s network: the model
    (seed 0, PyTorch's init, parameters and images in ``memory_format``), its SGD with the momentum buffers
    already there (as after a first step), images [batch, 3, S, S] as train.py's loaders give them: in
    ``image_dtype`` (a mixed-precision step's autocast dtype) and, channels_last, in the space-to-depth form the
    network's conv1 computes in where it has one (``AlexNet.take_images_in_depth_form``), and targets [batch]."""
    torch.manual_seed(0)
    model = spec.network(variant, num_classes=num_classes, width=width, input_size=input_size, init="torch",
                         precision=precision)
    model.to(memory_format=memory_format)
    optimizer = spec.optimizer(model.parameters(), **SGD)
    for p in model.parameters():
        optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p)
    images = torch.randn(batch, 3, model.input_size, model.input_size).to(image_dtype, memory_format=memory_format)
    return model, optimizer, as_the_loaders_give(model, images), torch.randint(num_classes, (batch,))


def training_step(spec: Provider, model: torch.nn.Module, optimizer, images: torch.Tensor, target: torch.Tensor,
                  phase: Callable[[str], contextlib.AbstractContextManager]) -> None:
    """One training step: the forward with ``spec``'s loss, backward, the optimizer's step, each inside
    ``phase(name)`` for name in ``PHASES`` (a recorder)."""
    with phase("forward"):
        loss = spec.loss(model(images), target)
    with phase("backward"):
        loss.backward()
    with phase("optimizer"):
        optimizer.step()


def compiled_step(provider: Provider, model: torch.nn.Module, images: torch.Tensor, target: torch.Tensor,
                  optimizer) -> tuple[list[Launch], dict[str, int]]:
    """One step under torch.compile (default mode), compiled afresh: forward with ``provider``'s loss and backward
    in one compiled function, the optimizer's step in another; one Launch per launch of Inductor's generated
    code, and per phase how many C++ functions hold its generated kernels."""
    recorder = compiled.KernelRecorder()
    with compiled.fresh_inductor("default"), compiled.recording_kernels(recorder):
        loss = torch.compile(lambda x, y: provider.loss(model(x), y))(images, target)
        loss.backward()
        recorder.phase = "optimizer"
        torch.compile(optimizer.step)()
    return [Launch(k.phase, k.source, k.name, k.bytes) for k in recorder.kernels], recorder.cpp_functions


def launches_by_name(launches: pd.DataFrame) -> pd.DataFrame:
    """Launch count and bytes per (variant, provider, phase, source, name): the long-format table."""
    keys = ["variant", "provider", "target", "batch", "dtype", "phase", "source", "name"]
    return (launches.groupby(keys, sort=False).agg(launches=("bytes", "size"), bytes=("bytes", "sum"))
            .reset_index())


def summarise(launches: pd.DataFrame) -> pd.DataFrame:
    """Launches and MB (1e6 bytes) per (variant, provider, phase), a "step" row for the whole step, and each
    provider's ratios to every baseline counted (launches_to_eager, mb_to_eager, launches_to_compiled,
    mb_to_compiled; 1 on the baseline's own rows)."""
    keys = ["variant", "provider", "target", "batch", "dtype"]
    per_phase = launches.groupby([*keys, "phase"], sort=False).agg(launches=("bytes", "size"), bytes=("bytes", "sum"))
    step = launches.groupby(keys, sort=False).agg(launches=("bytes", "size"), bytes=("bytes", "sum"))
    step = step.assign(phase=STEP).set_index("phase", append=True)
    table = pd.concat([per_phase, step]).reset_index()
    table["mb"] = table.pop("bytes") / MB
    for peer in [p for p in baselines() if p in set(table.provider)]:
        reference = table.loc[table.provider == peer, ["variant", "phase", "launches", "mb"]]
        table = table.merge(reference, on=["variant", "phase"], suffixes=("", "_peer"), how="left")
        table[f"launches_to_{peer}"] = (table.launches / table.pop("launches_peer")).round(3)
        table[f"mb_to_{peer}"] = (table.mb / table.pop("mb_peer")).round(3)
    table["mb"] = table.mb.round(1)
    table["phase"] = pd.Categorical(table.phase, [*PHASES, STEP])
    table["provider"] = pd.Categorical(table.provider, [p for p in PROVIDERS if p in set(table.provider)])
    return table.sort_values(["variant", "phase", "provider"], ignore_index=True).astype({"provider": str})


def plot_traffic(summary: pd.DataFrame, path: Path) -> Path:
    """Bars of launches (top) and MB (bottom) per phase, one bar per provider, one column per variant; the
    subject's bars carry their ratios to each baseline (by its initial: e, c)."""
    variants = [v for v in VARIANTS if v in set(summary.variant)]
    providers = [p for p in PROVIDERS if p in set(summary.provider)]
    peers = [p for p in baselines() if p in providers]
    phases = [*PHASES, STEP]
    fig = Figure(figsize=(6.5 * len(variants), 8), layout="constrained")
    axes = fig.subplots(2, len(variants), squeeze=False)
    width = 0.8 / len(providers)
    for column, variant in enumerate(variants):
        rows = summary[summary.variant == variant].set_index(["provider", "phase"])
        for row, (metric, label) in enumerate((("launches", "kernel launches"),
                                               ("mb", "MB read + written (compulsory)"))):
            ax = axes[row, column]
            for offset, name in enumerate(providers):
                x = [i + (offset - (len(providers) - 1) / 2) * width for i in range(len(phases))]
                values = [rows.loc[(name, phase), metric] for phase in phases]
                bars = ax.bar(x, values, width, color=PROVIDERS[name].colour,
                              label=f"{PROVIDERS[name].label} ({target_of(name)} target)")
                if name == SUBJECT:
                    ax.bar_label(bars, ["\n".join(f"x{rows.loc[(name, phase), f'{metric}_to_{peer}']:.2f} {peer[0]}"
                                                  for peer in peers) for phase in phases], fontsize=7)
            ax.set_xticks(range(len(phases)), phases)
            ax.set_ylabel(label)
            ax.set_title(f"AlexNet {variant}: {label}", fontsize=10)
            ax.margins(y=0.2)
        axes[0, column].legend(fontsize=8)
    batch, dtype = summary.batch.iloc[0], summary.dtype.iloc[0]
    subject = PROVIDERS[SUBJECT].label
    fig.suptitle(f"One training step (forward + loss, backward, SGD with momentum), batch {batch}, {dtype}, NCHW: "
                 + " vs ".join(PROVIDERS[p].label for p in providers) + ", counted on the CPU, not timed\n"
                 "x: " + ", ".join(f"{subject} / {PROVIDERS[p].label} ({p[0]})" for p in peers)
                 + "; eager: the ATen ops the CPU dispatches;\n"
                 "torch.compile: Inductor's kernels and extern calls generated for the CPU target (not CUDA)",
                 fontsize=9)
    fig.savefig(path, dpi=110)
    return path
