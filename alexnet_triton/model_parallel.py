"""The 2012 paper's two-GPU AlexNet on torch.distributed: each of 2 ranks holds its column of every layer.

Figure 2 of Krizhevsky et al. 2012 split every layer's kernels in half between two GPUs; "the GPUs communicate
only in certain layers". ``ModelParallelAlexNet`` is that split on 2 ranks of a process group (NCCL on GPUs, gloo
on the CPU, launched by torchrun), every compute op on this project's Triton ops, the exchanges autograd-aware
collectives (``SPLIT`` says what each layer holds):
  conv1      48 of 96 kernels over the whole image (both ranks see it)
  lrn1/lrn2  the 5-channel window at the column boundary reads 2 channels of the other rank: ``halo`` exchanges
             them (backward: the other rank's gradient of those channels is added back), so the split net
             computes exactly the single-device 2012 net ("exchange"; the paper's own per-column LRN, which
             never communicates, is ``lrn="column"``)
  conv2/4/5  their own group of the grouped conv: no communication
  conv3      192 of 384 kernels over all 256 input channels: all-gather of conv2's columns (backward:
             reduce-scatter of the partial input gradients)
  fc6/fc7    2048 of 4096 neurons over the whole previous layer: all-gather (backward: reduce-scatter)
  fc8        replicated: both ranks hold all 1000 x 4096 weights and compute the same logits and loss from the
             gathered fc7 output, so fc8 needs no all-reduce and the logits no gather; fc7's gather then has a
             slice for backward (every rank already holds the whole, identical gradient). Splitting fc8 would
             save 8 MB of weights per rank but add a logits all-gather forward and a reduce-scatter of fc7's
             output gradient backward.
Dropout: the 2012 net drops fc6's and fc7's outputs, one Philox mask over the [N, 4096] output from one seed.
The split net draws the same seeds in the same order and applies ``ops.dropout`` to the gathered [N, 4096] on
both ranks, so with the same ``torch.manual_seed`` on both ranks its masks are the single-device net's, bit for
bit (each rank computes the whole mask: 2 x the element-wise work of one process, no communication).
Checkpoints: ``full_state_dict`` gathers the single-device state_dict (keys and shapes of ``AlexNet("2012")``);
``load_full_state_dict`` scatters one.
``scheme="hybrid"`` is Krizhevsky's 2014 "one weird trick" on the same machinery: the convolutions data-parallel
(each rank all of each conv layer on its half of the batch, the gradients summed over the pair in the backward),
pool5's output gathered over the batch for fc6/fc7/fc8, which are as in the split.
Data parallelism across pairs: 2N processes are N model-parallel pairs (ranks 2p, 2p + 1; ``split_groups``), each
on its share of the batch, each with its own dropout stream; every gradient is averaged over the N ranks of its
column (its data group) as DDP averages (an all-reduce, then / N), by a hook as the backward accumulates it (the
hybrid's conv gradients first summed over the pair the same way): one backward per optimizer step.

``Collectives`` is the process group as the split net and DDP use it, every call counted: bytes each rank sends
and receives by collective, layer and pass (the tensors' sizes, moved as a ring moves them; with 2 ranks every
algorithm moves each rank's share once).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from . import nn as triton_nn
from . import ops
from .architecture import DROPOUT, LRN, NUM_CLASSES, POOL, shaped
from .model import _blocks, main_layer

RANKS = 2
# What each rank holds of each layer: "columns" (half the output channels / neurons over the whole input),
# "group" (its group of a groups=2 conv: half the outputs over its own half of the input) or "replicated".
SPLIT = {"conv1": "columns", "conv2": "group", "conv3": "columns", "conv4": "group", "conv5": "group",
         "fc6": "columns", "fc7": "columns", "fc8": "replicated"}
# Krizhevsky 2014 ("One weird trick"): data parallelism for the convolutions ("data": all of the layer, this
# rank's half of the batch, its gradient summed over the pair in the backward), the split for the fc layers.
HYBRID = {**{f"conv{i}": "data" for i in range(1, 6)}, "fc6": "columns", "fc7": "columns", "fc8": "replicated"}
SCHEMES = {"split": SPLIT, "hybrid": HYBRID}
LRN_BOUNDARIES = ("exchange", "column")
HALO = LRN["size"] // 2  # channels of the other rank the window reads at the boundary


@dataclass(frozen=True)
class Transfer:
    """One counted call: bytes this rank sent and received."""

    rank: int  # in the default group
    layer: str
    collective: str
    phase: str  # "forward" or "backward"
    sent: int
    received: int


class Collectives:
    """The collectives of a process group (None: the default group) of ``ranks`` ranks (None: any number), each
    call appended to ``transfers`` (``count=False``: not counted, as for checkpoints; a list given is shared)."""

    def __init__(self, group: dist.ProcessGroup | None = None, ranks: int | None = RANKS,
                 transfers: list[Transfer] | None = None):
        self.group, self.rank, self.size = group, dist.get_rank(group), dist.get_world_size(group)
        if ranks is not None and self.size != ranks:
            raise ValueError(f"model parallelism: the process group has {self.size} ranks, the split needs {ranks}")
        self.transfers: list[Transfer] = [] if transfers is None else transfers

    def _count(self, layer: str, collective: str, phase: str, sent: int, received: int) -> None:
        self.transfers.append(Transfer(dist.get_rank(), layer, collective, phase, sent, received))

    def all_gather(self, x: torch.Tensor, layer: str, phase: str, count: bool = True) -> list[torch.Tensor]:
        """Every rank's x (same shape), in rank order."""
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(self.size)]
        dist.all_gather(parts, x, group=self.group)
        if count:
            self._count(layer, "all_gather", phase, x.nbytes * (self.size - 1), x.nbytes * (self.size - 1))
        return parts

    def reduce_scatter(self, parts: list[torch.Tensor], layer: str, phase: str) -> torch.Tensor:
        """The sum over ranks of their ``parts[rank]``."""
        parts = [p.contiguous() for p in parts]
        out = torch.empty_like(parts[self.rank])
        dist.reduce_scatter(out, parts, group=self.group)
        moved = sum(p.nbytes for p in parts) * (self.size - 1) // self.size
        self._count(layer, "reduce_scatter", phase, moved, moved)
        return out

    def all_reduce(self, x: torch.Tensor, layer: str, phase: str) -> None:
        """x summed over the ranks, in place."""
        dist.all_reduce(x, group=self.group)
        self._count_all_reduce(layer, phase, x.nbytes)

    def _count_all_reduce(self, layer: str, phase: str, nbytes: int) -> None:
        moved = 2 * nbytes * (self.size - 1) // self.size  # a ring all-reduce: reduce-scatter, then all-gather
        self._count(layer, "all_reduce", phase, moved, moved)

    def exchange(self, x: torch.Tensor, layer: str, phase: str) -> torch.Tensor:
        """x to the other rank; its x (same shape) back."""
        x, received = x.contiguous(), torch.empty_like(x, memory_format=torch.contiguous_format)
        peer = 1 - self.rank if self.group is None else dist.get_global_rank(self.group, 1 - self.rank)
        for work in dist.batch_isend_irecv([dist.P2POp(dist.isend, x, peer, self.group),
                                            dist.P2POp(dist.irecv, received, peer, self.group)]):
            work.wait()
        self._count(layer, "send_recv", phase, x.nbytes, received.nbytes)
        return received

    def ddp_hook(self, names: dict[torch.nn.Parameter, str]):
        """A DDP communication hook: DDP's own all-reduce of each gradient bucket (``allreduce_hook``), counted
        per layer (``names``: parameter -> its layer's name)."""
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        def hook(group, bucket):
            by_layer: dict[str, int] = {}
            for p in bucket.parameters():
                by_layer[names[p]] = by_layer.get(names[p], 0) + p.numel() * bucket.buffer().element_size()
            for layer, nbytes in by_layer.items():
                self._count_all_reduce(layer, "backward", nbytes)
            return allreduce_hook(group, bucket)
        return hook


def split_groups() -> tuple[Collectives, Collectives | None]:
    """The default group's 2N ranks as N model-parallel pairs (ranks 2p and 2p + 1, neighbours as a node numbers
    its GPUs) -> this rank's pair and its data group (the N ranks of its column: c, c + 2, ...; None for N = 1),
    counted into one list. Every rank calls it (it creates the process groups). ValueError naming the world size
    when it is odd."""
    world = dist.get_world_size()
    if world % RANKS:
        raise ValueError(f"model parallelism: {world} processes; the split needs a multiple of {RANKS} (a "
                         f"model-parallel pair of {RANKS} ranks per data-parallel share of the batch)")
    if world == RANKS:
        return Collectives(), None
    pair, _ = dist.new_subgroups_by_enumeration([list(range(p, p + RANKS)) for p in range(0, world, RANKS)])
    column, _ = dist.new_subgroups_by_enumeration([list(range(c, world, RANKS)) for c in range(RANKS)])
    comm = Collectives(pair)
    return comm, Collectives(column, ranks=None, transfers=comm.transfers)


class _Gather(torch.autograd.Function):
    """This rank's columns [N, C, ...] (dim 1) or images [N, ...] (dim 0) -> every rank's, concatenated in rank
    order along ``dim``. Backward: the reduce-scatter of the gradient (its consumer is split: each rank holds a
    partial gradient of the whole), or this rank's slice of it (``reduce=False``: its consumer is replicated,
    every rank holds the whole gradient)."""

    @staticmethod
    def forward(ctx, x, comm: Collectives, layer: str, reduce: bool, dim: int):
        ctx.comm, ctx.layer, ctx.reduce, ctx.dim = comm, layer, reduce, dim
        return torch.cat(comm.all_gather(x, layer, "forward"), dim=dim)

    @staticmethod
    def backward(ctx, dy):
        parts = list(dy.chunk(ctx.comm.size, dim=ctx.dim))
        dx = ctx.comm.reduce_scatter(parts, ctx.layer, "backward") if ctx.reduce else parts[ctx.comm.rank]
        return dx.contiguous(), None, None, None, None


class _Halo(torch.autograd.Function):
    """[N, C, H, W] this rank's channels -> [N, C + HALO, H, W]: rank 0 appends rank 1's first HALO channels,
    rank 1 prepends rank 0's last HALO. Backward: each rank sends the gradient of the channels it borrowed to
    their owner, which adds it to its own."""

    @staticmethod
    def forward(ctx, x, comm: Collectives, layer: str):
        ctx.comm, ctx.layer, ctx.channels = comm, layer, x.shape[1]
        if comm.rank == 0:
            return torch.cat([x, comm.exchange(x[:, -HALO:], layer, "forward")], dim=1)
        return torch.cat([comm.exchange(x[:, :HALO], layer, "forward"), x], dim=1)

    @staticmethod
    def backward(ctx, dy):
        comm, c = ctx.comm, ctx.channels
        own, borrowed = (dy[:, :c], dy[:, c:]) if comm.rank == 0 else (dy[:, HALO:], dy[:, :HALO])
        returned = comm.exchange(borrowed, ctx.layer, "backward")
        dx = own.clone(memory_format=torch.contiguous_format)
        edge = dx[:, -HALO:] if comm.rank == 0 else dx[:, :HALO]
        edge += returned
        return dx, None, None


class ModelParallelAlexNet(nn.Module):
    """The 2012 AlexNet over the 2 ranks of ``comm`` (module docstring): images [N, 3, S, S], the same on both
    ranks -> logits [N, num_classes], the same on both ranks.

    scheme: "split" (the 2012 paper's, ``SPLIT``) or "hybrid" (the 2014 one, ``HYBRID``: the convolutions on
    half the batch each; an odd batch gets a zero image, dropped after the convolutions, with no gradient).
    width, input_size, dropout, precision: as ``AlexNet``'s (every split layer's width must be even).
    lrn: "exchange" (the single-device net) or "column" (the paper's per-column LRN: no exchange).
    data: the data group of 2N processes (``split_groups``): this pair's images are its share of the batch, and
    every gradient is averaged over the group in the backward.
    Initial weights are not the single-device net's: load them with ``load_full_state_dict``. Dropout masks
    equal one process's when both ranks of a pair have the same ``torch.manual_seed``.
    """

    def __init__(self, comm: Collectives, num_classes: int = NUM_CLASSES, width: float = 1.0,
                 input_size: int | None = None, dropout: float = DROPOUT, precision: str = "ieee",
                 lrn: str = "exchange", scheme: str = "split", data: Collectives | None = None):
        super().__init__()
        if lrn not in LRN_BOUNDARIES:
            raise ValueError(f"ModelParallelAlexNet: lrn must be one of {LRN_BOUNDARIES}, got {lrn!r}")
        if scheme not in SCHEMES:
            raise ValueError(f"ModelParallelAlexNet: scheme must be one of {tuple(SCHEMES)}, got {scheme!r}")
        self.comm, self.lrn, self.scheme, self.data = comm, lrn, scheme, data
        self.features, self.classifier = nn.ModuleDict(), nn.ModuleDict()
        # (the layer's module, its name, its mode in the scheme or the layer kind, the dropout after it)
        self._plan: list[tuple[nn.Module, str, str, float]] = []
        self._sharded: set[str] = set()
        layers = list(shaped("2012", width, num_classes, input_size))
        self.input_size = layers[0].in_side
        parts = {"features": [s for s in layers if s.side],
                 "classifier": [s for s in layers if not s.side and s.layer.kind != "flatten"]}
        for part, part_layers in parts.items():
            for index, block in _blocks(part_layers, fuse=True):
                first, kinds = main_layer(block), [s.layer.kind for s in block]
                name, mode = first.layer.name, SCHEMES[scheme].get(first.layer.name, first.layer.kind)
                module = self._module(first, kinds, mode, precision)
                getattr(self, part)[str(index)] = module
                if mode in ("columns", "group"):
                    self._sharded.update(f"{part}.{index}.{p}" for p, _ in module.named_parameters())
                self._plan.append((module, name, mode, dropout if "dropout" in kinds else 0.0))
                for p in module.parameters() if mode == "data" or data is not None else ():
                    p.register_post_accumulate_grad_hook(functools.partial(self._reduce, name, mode))

    @staticmethod
    def _module(first, kinds: list[str], mode: str, precision: str) -> nn.Module:
        """This rank's module of a block of the fused Triton tree (``model._blocks``; ``first``: its main layer)."""
        kind = first.layer.kind
        inputs, outputs = first.inputs, first.outputs
        if mode in ("columns", "group"):
            if mode == "group" and first.layer.conv.groups != RANKS:
                raise ValueError(f"ModelParallelAlexNet: {first.layer.name} has {first.layer.conv.groups} groups")
            if outputs % RANKS or (mode == "group" and inputs % RANKS):
                raise ValueError(f"ModelParallelAlexNet: {first.layer.name}'s {inputs} -> {outputs} do not split "
                                 f"over {RANKS} ranks (choose another width)")
            inputs, outputs = (inputs // RANKS if mode == "group" else inputs), outputs // RANKS
        if kind == "conv":
            conv = first.layer.conv
            return triton_nn.Conv2d(inputs, outputs, conv.kernel, conv.stride, conv.padding,
                                    groups=conv.groups if mode == "data" else 1, relu="relu" in kinds,
                                    precision=precision)
        if kind == "linear":  # a column's dropout follows the gather of the whole layer
            return triton_nn.Linear(inputs, outputs, relu="relu" in kinds, precision=precision)
        relu = kinds[0] == "relu"  # fused before the pool
        pooled = kinds[1:] if relu else kinds
        if pooled == ["lrn", "pool"]:
            return triton_nn.LRNMaxPool2d(**LRN, **POOL, relu=relu)
        if pooled == ["pool"]:
            return triton_nn.MaxPool2d(**POOL, relu=relu)
        raise ValueError(f"ModelParallelAlexNet: no split of the block {kinds}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2:] != (self.input_size, self.input_size):
            raise ValueError(f"ModelParallelAlexNet: expected images [N, 3, {self.input_size}, {self.input_size}], "
                             f"got {tuple(x.shape)}")
        # h holds: "whole" (the same on both ranks), this rank's "columns" (dim 1) or its "images" (dim 0)
        h, holds, pending, images = x, "whole", 0.0, len(x)
        if self._plan[0][2] == "data":
            if images % RANKS:
                x = torch.cat([x, x.new_zeros(RANKS - images % RANKS, *x.shape[1:])])
            h, holds = x.chunk(RANKS)[self.comm.rank], "images"
        for module, name, mode, p in self._plan:
            if isinstance(module, triton_nn.Linear) and h.dim() > 2:
                h = torch.flatten(h, 1)  # NCHW order: rank 0's channels, then rank 1's, as the whole net's
            if mode in ("columns", "replicated") and holds != "whole":
                h = _Gather.apply(h, self.comm, f"{name} input", mode == "columns", 1 if holds == "columns" else 0)
                h, holds = ops.dropout(h[:images], pending, self.training), "whole"  # seed drawn as one process's
            if mode == "lrn" and holds == "columns" and self.lrn == "exchange":
                c = h.shape[1]
                h = module(_Halo.apply(h, self.comm, f"{name} halo"))
                h = h[:, :c] if self.comm.rank == 0 else h[:, HALO:]
            else:
                h = module(h)
            holds = {"columns": "columns", "group": "columns", "data": "images", "replicated": "whole"}.get(mode, holds)
            pending = p
        return h

    def _reduce(self, layer: str, mode: str, p: nn.Parameter) -> None:
        """A gradient once the backward has accumulated it: the hybrid's conv gradients summed over the pair (each
        rank's is its half of the batch's), then (2N processes) every gradient averaged over the data group."""
        if mode == "data":
            self.comm.all_reduce(p.grad, layer, "backward")
        if self.data is not None:
            self.data.all_reduce(p.grad, f"{layer} over pairs", "backward")
            p.grad.div_(self.data.size)  # as DDP averages its buckets

    def gathered(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This rank's tensors of the ``state_dict`` keys (parameters, their gradients) -> the single-device
        net's: the sharded ones gathered along dim 0, the replicated ones copied (a collective: every rank calls
        it with the same keys; every rank gets the result)."""
        return {key: torch.cat(self.comm.all_gather(value, key, "checkpoint", count=False), dim=0)
                if key in self._sharded else value.clone() for key, value in tensors.items()}

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The single-device AlexNet("2012")'s state_dict, gathered (``gathered``)."""
        return self.gathered(self.state_dict())

    def _per_parameter(self, state: dict, convert) -> dict:
        """An optimizer state_dict with each tensor of a parameter's state other than a 0-d one (SGD's momentum
        buffer, shaped like the parameter) replaced by ``convert({name: tensor})[name]``."""
        names = [name for name, _ in self.named_parameters()]  # the optimizer's parameter order

        def each(index, value):
            return convert({names[index]: value})[names[index]] if torch.is_tensor(value) and value.dim() else value
        return {**state, "state": {index: {key: each(index, value) for key, value in entry.items()}
                                   for index, entry in state["state"].items()}}

    def gathered_optimizer_state(self, state: dict) -> dict:
        """This rank's optimizer state_dict -> one process's (a collective, as ``gathered``)."""
        return self._per_parameter(state, self.gathered)

    def scattered_optimizer_state(self, state: dict) -> dict:
        """One process's optimizer state_dict -> this rank's part."""
        return self._per_parameter(state, lambda named: {key: value.chunk(RANKS, dim=0)[self.comm.rank]
                                                         if key in self._sharded else value
                                                         for key, value in named.items()})

    def load_full_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load this rank's part of a single-device AlexNet("2012") state_dict (ValueError naming a key or shape
        that does not fit)."""
        own = self.state_dict()
        if set(state) != set(own):
            raise ValueError(f"ModelParallelAlexNet: the state_dict's keys differ from the 2012 net's: missing "
                             f"{sorted(set(own) - set(state))}, unexpected {sorted(set(state) - set(own))}")
        local = {}
        for key, value in state.items():
            expected = (own[key].shape[0] * RANKS, *own[key].shape[1:]) if key in self._sharded else own[key].shape
            if tuple(value.shape) != tuple(expected):
                raise ValueError(f"ModelParallelAlexNet: {key} has shape {tuple(value.shape)}, expected "
                                 f"{tuple(expected)}")
            local[key] = value.chunk(RANKS, dim=0)[self.comm.rank] if key in self._sharded else value
        self.load_state_dict(local)
