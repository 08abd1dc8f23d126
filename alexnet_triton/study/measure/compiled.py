"""torch.compile (Inductor), the "compiled" provider: what its partitioner saves for backward and the kernels its code
launches per training step, read from Inductor itself on the CPU.

Saved for backward (``partitioned_saved``). ``torch.compile`` traces the forward and backward into one joint
graph (AOTAutograd, with Inductor's decompositions and joint-graph passes) and Inductor's min-cut partitioner
(``min_cut_rematerialization_partition``, the default of ``torch._inductor.config.custom_partitioner_fn``)
splits it: the forward graph returns the model's outputs, then every tensor the backward graph reads. Those are
what the compiled model keeps between forward and backward. ``RecordingPartitioner`` wraps that partitioner
unchanged and keeps the forward graph; the compile stops there (``_stop_after_partition``), since lowering
cannot change what is saved, and nothing runs. Each saved tensor is read from its fake value:
storage shared by several saved tensors once, parameters (inputs Inductor marks static-lifetime) apart. Its
layer group (``graph_groups``): a node that takes a layer's bias (conv, addmm) is in that layer's group, any
other node in the latest group among its inputs; a saved tensor is in the earliest group among the nodes that
read it in the forward graph (through views), else in its own node's: the memory study's rule ("a layer's
input is saved by the layer that consumes it").

Kernels (``traffic.compiled_step`` compiles a training step as PyTorch recommends: the model and its
cross-entropy in one ``torch.compile``, its forward and backward graphs, and ``torch.compile`` of the
optimizer's ``step``). Each graph Inductor lowers is recorded after its code generation (``recording_kernels``):
each scheduler node that emits code is one launch, a generated kernel (source "inductor": one fused loop nest,
what the Triton backend launches as one kernel) or an extern call (source "extern": convolution, its backward,
GEMMs, random seeds: a library call, as one ATen op is for eager); views and reinterpretations launch nothing.
Bytes are Inductor's own count (``get_read_write_buffer_accesses``: each buffer a kernel reads or writes, at its
size or at the elements the kernel's loops reach if fewer; buffers that fusion keeps inside a kernel not at
all), with a buffer written in place over one the kernel reads counted once (``kernel_bytes``): the traffic
study's rule.

Generated for the CPU target, not CUDA: Inductor needs a GPU (its device properties, Triton autotuning) to
generate CUDA code, and a count from fake CUDA tensors would not be what it emits. Every row says
``target="cpu"``. Where the CPU target differs from the CUDA target:
  - the partition is the same code on both; the decompositions it sees are too (max-pool becomes
    ``_low_memory_max_pool_with_offsets`` with int8 offsets on both, for windows of at most 25; dropout
    becomes ``inductor_random`` with a bool mask on both), so the saved tensors are a CUDA run's;
  - layout: on the CPU (oneDNN), Inductor makes every conv channels_last (``decide_layout_opt``); on CUDA it
    does so only without grouped convs of more than one channel per group, so not for the 2012 net and yes
    for torchvision's. Layout copies of inputs and weights are extra kernels on the CPU target;
  - fusion: the C++ backend fuses loops by its own rules (outer-loop fusion of nodes sharing outer loops),
    the Triton backend by its own (e.g. mixed-order reductions); kernels per step can differ either way;
  - extern calls are the same ATen ops (convolution, convolution_backward, mm/addmm) on both; cuDNN/cuBLAS
    may run several kernels inside one, as the eager count also notes; ``max-autotune`` on CUDA may replace
    GEMMs and convs with Triton templates that fuse their epilogues (not counted here);
  - the max-pool backward (a ``scatter_add`` of the gradient at the offsets) is an ATen call on the CPU
    (``scatter_reduce_``) and a generated kernel with atomic adds on CUDA: one launch either way;
  - the optimizer: on the CPU SGD defaults to its per-parameter loop (foreach off), on CUDA to ``_foreach``
    ops, which Inductor fuses horizontally (fewer kernels, the same bytes);
  - not checked here: on CUDA the joint-graph pass ``pad_mm`` may pad GEMMs whose sizes are not multiples of
    the tensor-core tile (fc8's 1000 outputs) before the partition, which could add padded copies to what is
    saved and read.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from unittest import mock

import torch
import torch._inductor
from functorch.compile import min_cut_rematerialization_partition
from torch import fx
from torch._inductor import config as inductor_config
from torch._inductor import scheduler as inductor_scheduler
from torch._inductor.codegen.common import KernelArgs
from torch._inductor.compile_fx import compile_fx
from torch._inductor.custom_graph_pass import CustomPartitionerFn
from torch._inductor.graph import GraphLowering
from torch._inductor.ir import MultiOutput
from torch._inductor.utils import get_fused_kernel_name
from torch.multiprocessing.reductions import StorageWeakRef

COMPILE_MODES = ("default", "max-autotune")  # torch.compile's modes compared; each patches Inductor's config
TARGET = "cpu"  # the device Inductor generates code for here (never CUDA: see the module docstring)


@dataclass
class Partition:
    """The forward graph the partitioner returned, its count of model outputs (the rest are saved for
    backward) and the indices of its parameter inputs."""

    forward: fx.GraphModule
    num_outputs: int
    parameter_inputs: list[int]


class RecordingPartitioner(CustomPartitionerFn):
    """Inductor's default partitioner, unchanged, keeping each partition it makes."""

    def __init__(self):
        self.partitions: list[Partition] = []

    def __call__(self, gm, joint_inputs, **kwargs):
        forward, backward = min_cut_rematerialization_partition(gm, joint_inputs, **kwargs)
        self.partitions.append(Partition(forward, kwargs["num_fwd_outputs"],
                                         list(kwargs.get("static_lifetime_input_indices") or [])))
        return forward, backward

    def uuid(self):
        return None  # never cached: every compile partitions afresh


def compile_mode_options(compile_mode: str) -> dict:
    """Inductor's config for a torch.compile mode ("default" or "max-autotune")."""
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"compile_mode must be one of {COMPILE_MODES}, got {compile_mode!r}")
    return torch._inductor.list_mode_options(compile_mode)


@contextlib.contextmanager
def fresh_inductor(compile_mode: str, **config) -> Iterator[None]:
    """Compile afresh (Dynamo reset, no FX-graph or AOTAutograd cache) under ``compile_mode``'s Inductor config."""
    torch._dynamo.reset()
    with inductor_config.patch(fx_graph_cache=False, **compile_mode_options(compile_mode), **config), \
            torch._functorch.config.patch(enable_autograd_cache=False):
        yield
    torch._dynamo.reset()


class _Partitioned(Exception):
    """Raised by ``_stop_after_partition``: the partition is made, nothing after it is needed."""


def _stop_after_partition(gm: fx.GraphModule, example_inputs, **kwargs):
    """Inductor's inner compiler replaced: called with the partitioned forward graph, it stops the compile."""
    raise _Partitioned


def partition_of(function: Callable, *args, compile_mode: str = "default") -> Partition:
    """The partition Inductor makes of ``function(*args)`` (its forward and backward, one graph) under
    ``compile_mode``. Only traced (fake tensors): nothing is lowered or run, so any dtype works whatever the CPU
    kernels support."""
    partitioner = RecordingPartitioner()
    with fresh_inductor(compile_mode, custom_partitioner_fn=partitioner):
        try:
            torch.compile(function, backend=partial(compile_fx, inner_compile=_stop_after_partition),
                          fullgraph=True)(*args)
        except torch._dynamo.exc.BackendCompilerFailed as error:
            if not isinstance(error.inner_exception, _Partitioned):
                raise
    return partitioner.partitions[-1]


@dataclass(frozen=True)
class SavedNode:
    """One tensor the forward graph returns for the backward: its storage, shape and dtype, size of that
    storage, whether it is a parameter's, and its layer group."""

    storage: int
    description: str
    nbytes: int
    parameter: bool
    group: str


VIEW_OPS = frozenset({"view", "_unsafe_view", "reshape", "permute", "t", "transpose", "expand", "alias",
                      "squeeze", "unsqueeze", "slice", "select", "as_strided"})


def _is_view(node: fx.Node) -> bool:
    return node.op == "call_function" and getattr(node.target, "__name__", "").split(".")[0] in VIEW_OPS


def graph_groups(forward: fx.GraphModule, parameters: set[fx.Node], names: Sequence[str]) -> dict[fx.Node, int]:
    """Each node -> the index in ``names`` of its layer group, by data flow: a node that takes a layer's bias (a
    1-D parameter; the k-th bias taken in graph order is names[k]) is in that layer's group, any other node in
    the latest group among its inputs; inputs and what depends on them alone (random seeds) are in -1."""
    biases: dict[fx.Node, int] = {}
    groups: dict[fx.Node, int] = {}
    for node in forward.graph.nodes:
        for bias in node.all_input_nodes:
            if bias in parameters and bias.meta["val"].dim() == 1 and bias not in biases:
                biases[bias] = len(biases)
        taken = [biases[a] for a in node.all_input_nodes if a in biases]
        groups[node] = taken[0] if taken else max((groups[a] for a in node.all_input_nodes), default=-1)
    if len(biases) != len(names):
        raise ValueError(f"graph_groups: {len(biases)} biases in the graph for {len(names)} layers {list(names)}")
    return groups


def _readers(node: fx.Node) -> list[fx.Node]:
    """The forward graph's nodes that read ``node``, through views (a view reads nothing itself)."""
    readers = []
    for user in node.users:
        if _is_view(user):
            readers += _readers(user)
        elif user.op != "output":
            readers.append(user)
    return readers


def partitioned_saved(partition: Partition, group_names: Sequence[str]) -> list[SavedNode]:
    """The tensors the partitioned forward saves for backward, one per distinct storage, each in the group of
    its first reader (the earliest group among the nodes that read it), else of the node that made it."""
    graph = partition.forward.graph
    placeholders = list(graph.find_nodes(op="placeholder"))
    parameters = {placeholders[i] for i in partition.parameter_inputs}
    parameter_storages = {StorageWeakRef(p.meta["val"].untyped_storage()) for p in parameters}
    groups = graph_groups(partition.forward, parameters, group_names)
    saved: dict[StorageWeakRef, SavedNode] = {}
    for node in graph.output_node().args[0][partition.num_outputs:]:
        value = node.meta.get("val") if isinstance(node, fx.Node) else None
        if not isinstance(value, torch.Tensor):
            continue  # a saved size (SymInt) or None
        storage = StorageWeakRef(value.untyped_storage())
        group = min((groups[r] for r in _readers(node)), default=groups[node])
        description = f"{'x'.join(map(str, value.shape))} {str(value.dtype).removeprefix('torch.')}"
        saved.setdefault(storage, SavedNode(storage.cdata, description, value.untyped_storage().nbytes(),
                                            storage in parameter_storages,
                                            "input" if group < 0 else group_names[group]))
    return list(saved.values())


# ------------------------------------------------------------------------------------------- kernels


@dataclass(frozen=True)
class CompiledKernel:
    """One launch of Inductor's generated code: the graph's phase, "inductor" (a generated kernel) or
    "extern" (a library call), its name, and Inductor's count of the bytes it reads and writes."""

    phase: str
    source: str
    name: str
    bytes: int


@dataclass
class KernelRecorder:
    """Collects a CompiledKernel for each launch in every graph Inductor generates code for (``phase`` names
    the graphs compiled next; a backward graph is always "backward"), and per phase how many C++ functions
    the generated code calls (the C++ backend puts consecutive loop nests into one function)."""

    phase: str = "forward"
    kernels: list[CompiledKernel] = field(default_factory=list)
    cpp_functions: dict[str, int] = field(default_factory=dict)
    in_place: dict[str, str] = field(default_factory=dict)  # the graph's output buffer -> the input it overwrites

    def record(self, graph: GraphLowering, code: str) -> None:
        phase = "backward" if graph.is_backward else self.phase
        for node in graph.scheduler.nodes:
            kind = launch_kind(node)
            if kind is not None:
                self.kernels.append(CompiledKernel(phase, kind, kernel_label(node, kind),
                                                   kernel_bytes(graph, node, self.in_place)))
        self.in_place.clear()
        calls = len(re.findall(r"^\s+cpp_fused_\w+\(", code.split("\ndef call(")[-1], flags=re.MULTILINE))
        self.cpp_functions[phase] = self.cpp_functions.get(phase, 0) + calls


def kernel_bytes(graph: GraphLowering, node, in_place: dict[str, str]) -> int:
    """Inductor's bytes for ``node`` (``get_read_write_buffer_accesses``) with each tensor once, as the traffic
    study counts: a buffer written in place over one the kernel reads (an update of a graph input, Inductor's
    reuse of a dying input) is not counted again."""
    accesses = node.get_read_write_buffer_accesses(include_reads=True, include_writes=True)
    total = 0
    for name, nbytes in accesses.items():
        buffer = graph.name_to_buffer.get(name)
        overwritten = buffer.get_mutation_names() if buffer is not None else []
        if in_place.get(name) in accesses or (overwritten and all(o in accesses for o in overwritten)):
            continue
        total += nbytes
    return total


def launch_kind(node) -> str | None:
    """"inductor" for a scheduler node that is a generated kernel (one loop nest: one kernel of the Triton
    backend), "extern" for a library call, None for a node that launches nothing (a view, a reinterpretation,
    one output of a multi-output call)."""
    if isinstance(node, inductor_scheduler.NopKernelSchedulerNode):
        return None
    if isinstance(node, inductor_scheduler.ExternKernelSchedulerNode):
        return None if isinstance(node.node, MultiOutput) else "extern"
    return "inductor"


def kernel_label(node, kind: str) -> str:
    """An extern call's op ("convolution_backward", "mm"); a generated kernel's name as Inductor makes it from
    the ATen ops it fuses ("fused_relu_threshold_backward"); "fused_copy" for a bare layout copy."""
    if kind == "extern":
        op = getattr(node.node, "op_overload", None)
        return op._opname if op is not None else node.node.python_kernel_name.split(".")[-1]
    return get_fused_kernel_name(node.get_nodes(), "original_aten") or "fused_copy"


@contextlib.contextmanager
def recording_kernels(recorder: KernelRecorder) -> Iterator[None]:
    """Within the block, every graph Inductor generates code for is recorded by ``recorder`` after codegen, with
    the buffers its kernels write in place of an input (``KernelArgs.make_inplace``, called during codegen)."""
    codegen, make_inplace = GraphLowering.codegen, KernelArgs.make_inplace

    def codegen_and_record(graph, *args, **kwargs):
        result = codegen(graph, *args, **kwargs)
        recorder.record(graph, result[0].value)
        return result

    def make_inplace_and_record(args, input_name: str, output_name: str) -> None:
        recorder.in_place[output_name] = input_name
        make_inplace(args, input_name, output_name)

    with mock.patch.object(GraphLowering, "codegen", codegen_and_record), \
            mock.patch.object(KernelArgs, "make_inplace", make_inplace_and_record):
        yield
