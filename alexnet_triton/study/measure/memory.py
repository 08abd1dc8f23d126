"""Bytes kept for backward, per image: Triton against PyTorch eager and torch.compile, full size.

The providers that do not compile (Triton, eager) run their forward under
``torch.autograd.graph.saved_tensors_hooks``, which sees every tensor autograd keeps for backward; the one that
``compiles`` (torch.compile) keeps the tensors the forward graph of Inductor's partitioner returns for the backward
(``compiled.partitioned_saved``). The same rule for all three: a storage shared by several saved tensors (the
conv output that both the conv's ReLU mask and the LRN need, a weight and its transpose) is counted once;
parameters (weights, biases) are listed apart, since they do not grow with the batch.

  ``measure_blocks``   AlexNet 2012's conv1 and conv2 blocks, conv -> ReLU -> LRN -> 3x3/2 max-pool, float32.
                       Triton: ``ops.conv2d`` without its bias, then the fused ``ops.lrn_max_pool2d(relu=True,
                       bias=...)``, as the model; eager:
                       F.conv2d, F.relu, F.local_response_norm, F.max_pool2d.
  ``measure_network``  the whole model (both variants, training mode, dropout on), forward only, per provider:
                       backend "triton" against backend "torch" (eager) and that model under torch.compile
                       ("compiled"), model and images in float32 or bfloat16, per layer group and in all. A
                       group is a conv or linear layer and every layer after it up to the next one (conv1:
                       conv1, ReLU, LRN, pool1); a tensor belongs to the group of the first autograd node, in
                       forward order, that saved it (a layer's input is saved by the layer that consumes it);
                       under torch.compile, of its first reader in the forward graph (``compiled.py``). The
                       groups split the totals; how a tensor between two layers is attributed can differ
                       between providers (a ReLU output the Triton conv saves for its own backward is, under
                       torch.compile, saved for the next conv), so compare whole networks first.
  ``compare_compile_modes``
                       torch.compile's default and max-autotune partitions of the whole network.

The Triton kernels are captured, not run (``runtime.capture_launches``): which tensors autograd saves does
not depend on their values, so the Triton forward only allocates (uninitialised) outputs and a full-size
network costs no interpreter time. The eager forward runs on the meta device (``DEVICES``). Its saved
tensors are those of a CUDA eager forward except for dropout, which off CUDA keeps its float scale mask (4
bytes per element) where CUDA's ``native_dropout`` keeps a bool mask (1 byte): eager is 3 bytes per dropout
element too high in float32, 24 KiB per image for the 2012 net (fc6, fc7 groups) and 39 KiB for torchvision's
(conv5, fc6 groups). torch.compile's partition is only traced, never run.
ratio_to_eager (ratio_to_compiled) is empty where eager (torch.compile) keeps nothing in a group.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._pytree import tree_leaves

from ... import ops
from ...architecture import LRN, POOL, VARIANTS, ConvLayer
from ...kernels import runtime
from ...model import AlexNet
from ..registries.providers import PROVIDERS, baselines
from ..vocabulary import storage_name
from . import compiled

DTYPE = storage_name(torch.float32)  # the conv blocks' dtype and measure_network's default
DTYPES = (DTYPE, storage_name(torch.bfloat16))
# backend -> the device its forward is measured on. Triton: the CPU, its launches captured. torch: the meta
# device, the same ATen ops as on the CPU (dropout too), no arithmetic, and every dtype (the CPU has no bfloat16
# avg_pool3d, which the LRN calls).
DEVICES = {"triton": "cpu", "torch": "meta"}
NETWORK = "network"  # measure_network's row for the whole model
MIB = 2**20


def storage_key(t: torch.Tensor) -> int:
    """Identifies ``t``'s storage (its StorageImpl), also for meta tensors, whose data pointers are all 0."""
    return StorageWeakRef(t.untyped_storage()).cdata


@dataclass(frozen=True)
class SavedStorage:
    """One storage autograd keeps for backward: its key (``storage_key``), the first tensor seen on it, its
    size, and whether it is a parameter's."""

    address: int
    description: str
    nbytes: int
    parameter: bool


def saved_storages(forward: Callable[[], torch.Tensor],
                   parameters: list[torch.Tensor]) -> tuple[torch.Tensor, list[SavedStorage]]:
    """Run ``forward`` with Triton launches captured; return its output and each distinct storage of the
    tensors autograd saved, once."""
    parameter_storages = {storage_key(p) for p in parameters}
    seen: dict[int, SavedStorage] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = storage_key(t)
        if key not in seen:
            description = f"{'x'.join(map(str, t.shape))} {str(t.dtype).removeprefix('torch.')}"
            seen[key] = SavedStorage(key, description, t.untyped_storage().nbytes(), key in parameter_storages)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), runtime.capture_launches():
        output = forward()
    return output, list(seen.values())


def _row(saved: list[SavedStorage], batch: int, dtype: str = DTYPE, **columns) -> dict:
    activations = [s for s in saved if not s.parameter]
    return dict(**columns, dtype=dtype, batch=batch, saved_tensors=len(activations),
                saved_bytes_per_image=sum(s.nbytes for s in activations) // batch,
                parameter_bytes=sum(s.nbytes for s in saved if s.parameter),
                tensors="; ".join(s.description for s in activations))


def _with_ratios(rows: list[dict], keys: list[str]) -> pd.DataFrame:
    """rows as a table with ratio_to_<peer>: saved bytes / the peer provider's row with the same ``keys``, for
    each baseline the rows have (eager, compiled)."""
    table = pd.DataFrame(rows)
    column = table.columns.get_loc("saved_bytes_per_image") + 1
    for peer in [p for p in baselines() if p in set(table.provider)]:
        reference = table.loc[table.provider == peer, [*keys, "saved_bytes_per_image"]]
        table = table.merge(reference, on=keys, suffixes=("", "_peer"), how="left", sort=False)
        peer_bytes = table.pop("saved_bytes_per_image_peer")
        table.insert(column, f"ratio_to_{peer}", (table.saved_bytes_per_image / peer_bytes.where(peer_bytes > 0))
                     .round(3))
        column += 1
    return table


# ----------------------------------------------------------------------------- conv blocks


def block_inputs(layer: ConvLayer, batch: int, needs_input_grad: bool):
    """Random x [batch, C_in, size, size] and the layer's weight and bias (requiring grad)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, layer.in_channels, layer.size, layer.size, generator=gen)
    weight = (torch.randn(layer.out_channels, layer.in_channels // layer.groups, layer.kernel, layer.kernel,
                          generator=gen) * 0.01).requires_grad_()
    bias = torch.zeros(layer.out_channels).requires_grad_()
    return x.requires_grad_(needs_input_grad), weight, bias


def triton_block(layer: ConvLayer, x, weight, bias) -> torch.Tensor:
    z = ops.conv2d(x, weight, None, layer.stride, layer.padding, groups=layer.groups)
    return ops.lrn_max_pool2d(z, **LRN, **POOL, relu=True, bias=bias)


def torch_block(layer: ConvLayer, x, weight, bias) -> torch.Tensor:
    y = F.relu(F.conv2d(x, weight, bias, layer.stride, layer.padding, groups=layer.groups))
    return F.max_pool2d(F.local_response_norm(y, **LRN), **POOL)


BLOCKS = {"triton": triton_block, "torch": torch_block}  # backend -> its conv block


def measure_blocks(layers: list[ConvLayer], batch: int) -> pd.DataFrame:
    """One row per (block, provider that does not compile): saved bytes per image, the ratio to eager,
    parameter bytes, tensors."""
    rows = []
    for layer in layers:
        x, weight, bias = block_inputs(layer, batch, needs_input_grad=layer.name != "conv1")
        for name, provider in PROVIDERS.items():
            if not provider.compiles:
                block = partial(BLOCKS[provider.backend], layer, x, weight, bias)
                _, saved = saved_storages(block, [weight, bias])
                rows.append(_row(saved, batch, block=f"{layer.name}+relu+lrn+pool", provider=name))
    return _with_ratios(rows, ["block"])


# ----------------------------------------------------------------------------- whole network


def layer_groups(model: AlexNet) -> dict[int, str]:
    """Storage key of each conv / linear weight and bias -> its layer's name (conv1..conv5, fc6..fc8), in forward
    order."""
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    names = [f"conv{i + 1}" for i in range(len(convs))] + [f"fc{i + 6}" for i in range(len(linears))]
    return {storage_key(parameter): name for layer, name in zip(convs + linears, names, strict=True)
            for parameter in (layer.weight, layer.bias)}


def _node_saved_tensors(node) -> list[torch.Tensor]:
    """What an autograd node keeps: a custom Function's saved_tensors, a built-in node's _saved_* fields."""
    if isinstance(node, torch.autograd.function.BackwardCFunction):
        return [t for t in node.saved_tensors if t is not None]
    fields = [getattr(node, name) for name in dir(node) if name.startswith("_saved_")]
    return [leaf for leaf in tree_leaves(fields) if isinstance(leaf, torch.Tensor)]


def saving_groups(output: torch.Tensor, model: AlexNet) -> dict[int, str]:
    """Storage key -> layer group of the first node (in forward order) of ``output``'s autograd graph that
    saved a tensor on it. A node starts a group when it takes that layer's weight or bias, as every backend's conv
    and linear nodes do (the Triton tree's pool block takes the bias of the conv before it: the same group)."""
    group_of_parameter = layer_groups(model)
    nodes, stack = set(), [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and node not in nodes:
            nodes.add(node)
            stack += [child for child, _ in node.next_functions]
    group, groups = "input", {}
    for node in sorted((n for n in nodes if not hasattr(n, "variable")), key=lambda n: n._sequence_nr()):
        parameters = [storage_key(child.variable) for child, _ in node.next_functions if hasattr(child, "variable")]
        group = next((group_of_parameter[p] for p in parameters if p in group_of_parameter), group)
        for t in _node_saved_tensors(node):
            groups.setdefault(storage_key(t), group)
    return groups


def _network_model(variant: str, backend: str, batch: int, dtype: str, model_options: dict, device: str = "cpu"):
    """The model (PyTorch's default initialisation, seed 0, all in ``dtype``) and images [batch, 3, S, S]."""
    torch.manual_seed(0)
    model = AlexNet(variant, backend=backend, init="torch", **model_options).to(device, getattr(torch, dtype))
    return model, torch.rand(batch, 3, model.input_size, model.input_size, dtype=getattr(torch, dtype), device=device)


def compiled_saved(variant: str, batch: int, dtype: str = DTYPE, compile_mode: str = "default",
                   **model_options) -> tuple[list[SavedStorage], dict[int, str]]:
    """What torch.compile (``compile_mode``) of the "torch" backend's model keeps for backward: the storages and
    storage -> group."""
    model, images = _network_model(variant, "torch", batch, dtype, model_options)
    saved = compiled.partitioned_saved(compiled.partition_of(model, images, compile_mode=compile_mode),
                                       list(dict.fromkeys(layer_groups(model).values())))
    return ([SavedStorage(s.storage, s.description, s.nbytes, s.parameter) for s in saved],
            {s.storage: s.group for s in saved})


def measure_network(variant: str, batch: int, dtype: str = DTYPE, **model_options) -> pd.DataFrame:
    """Rows (variant, provider, group) of the model's forward in training mode on images [batch, 3, S, S] in
    ``dtype``, one per layer group and one "network" row for the whole model, with each row's ratio to every
    baseline's. model_options: AlexNet's (width, input_size, num_classes) for a scaled-down model."""
    measured = {}
    for name, provider in PROVIDERS.items():
        if provider.compiles:
            measured[name] = compiled_saved(variant, batch, dtype, **model_options)
            continue
        model, images = _network_model(variant, provider.backend, batch, dtype, model_options,
                                       DEVICES[provider.backend])
        output, saved = saved_storages(partial(model, images), list(model.parameters()))
        measured[name] = saved, saving_groups(output, model)
    rows = []
    for name, (saved, groups) in measured.items():
        for group in dict.fromkeys(groups.values()):
            rows.append(_row([s for s in saved if groups.get(s.address) == group], batch, dtype, variant=variant,
                             provider=name, group=group))
        rows.append(_row(saved, batch, dtype, variant=variant, provider=name, group=NETWORK) | dict(tensors=""))
    return _with_ratios(rows, ["variant", "dtype", "group"])


def compare_compile_modes(variant: str, batch: int, dtype: str = DTYPE, **model_options) -> pd.DataFrame:
    """One row per torch.compile mode (column compile_mode): the whole network's saved bytes per image and
    tensors, and whether the partition saves the same tensors as the default mode's."""
    rows = []
    for compile_mode in compiled.COMPILE_MODES:
        saved, _ = compiled_saved(variant, batch, dtype, compile_mode, **model_options)
        rows.append(_row(saved, batch, dtype, variant=variant, compile_mode=compile_mode))
    table = pd.DataFrame(rows)
    return table.assign(same_as_default=table.tensors == table.tensors.iloc[0])


def plot_memory(table: pd.DataFrame, path: Path, dtype: str = DTYPE) -> Path:
    """Bars of MiB saved per image in ``dtype``, one per provider for each variant, stacked by layer group; each
    bar is labelled with its total and its ratios to the baselines."""
    table = table[table.dtype == dtype]
    groups = list(dict.fromkeys(table.group[table.group != NETWORK]))
    variants = [v for v in VARIANTS if v in set(table.variant)]
    providers = [p for p in PROVIDERS if p in set(table.provider)]
    bars = [(variant, provider) for variant in variants for provider in providers]
    fig = Figure(figsize=(1.9 * len(bars) + 2.5, 5.8), layout="constrained")
    ax = fig.subplots()
    colours = dict(zip(groups, [f"C{i}" for i in range(len(groups))], strict=True))
    by_key = table.set_index(["variant", "provider", "group"]).saved_bytes_per_image / MIB
    bottoms = [0.0] * len(bars)
    for group in groups:
        heights = [by_key.get((variant, provider, group), 0.0) for variant, provider in bars]
        ax.bar(range(len(bars)), heights, bottom=bottoms, color=colours[group], label=group)
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    totals = table[table.group == NETWORK].set_index(["variant", "provider"])
    for i, key in enumerate(bars):
        ratios = "".join(f"\nx{totals.loc[key, f'ratio_to_{peer}']:.2f} of {peer}" for peer in baselines()
                         if peer != key[1] and f"ratio_to_{peer}" in totals)
        ax.annotate(f"{totals.loc[key, 'saved_bytes_per_image'] / MIB:.1f} MiB{ratios}", (i, bottoms[i]),
                    ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(bars)), [f"{variant}\n{provider}" for variant, provider in bars])
    ax.set_ylabel("MiB saved for backward per image (activations)")
    ax.margins(y=0.2)
    ax.legend(title="layer group", fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(f"AlexNet forward in training mode (dropout on), {dtype}, counted at batch {table.batch.iloc[0]}: "
                 "bytes kept for backward\n" + " vs ".join(PROVIDERS[p].label for p in providers)
                 + " (torch.compile: Inductor's partition; sizes, not timings; parameters excluded)", fontsize=10)
    fig.savefig(path, dpi=110)
    return path
