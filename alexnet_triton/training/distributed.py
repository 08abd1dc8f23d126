"""How a run spreads over torchrun's processes: ``Layout``, built once by ``Layout.start`` (the one place that
decides the ranks), then used for the model, the checkpoints and the stop signals.

Data parallel (``--parallel data``, any number of ranks): DistributedDataParallel (NCCL on GPUs, gloo on the
CPU); ``batch_size`` is the global batch, split evenly across the ranks; each rank draws its dropout masks from
its own stream, seeded from (seed, rank). Model parallel (``--parallel model``: the 2012 paper's split;
``--parallel hybrid``: the 2014 one; 2 ranks, or 2N: N pairs, data-parallel): ``alexnet_triton.model_parallel``'s
ranks 2p and 2p + 1 hold pair p's halves of the 2012 net; both see the pair's share of the batch, so each pair is
one data rank and draws one dropout stream (one pair: one process's); the net averages its gradients over the
pairs itself (no DDP); the checkpoint holds one process's state dicts (gathered on save, scattered on load).
Rank 0 writes the run directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..checkpoint import check_fits, rng_state
from ..kernels import runtime
from ..model import AlexNet
from ..model_parallel import RANKS, ModelParallelAlexNet, split_groups
from .config import ConfigError, RunConfig

SPLIT_SCHEMES = {"model": "split", "hybrid": "hybrid"}  # --parallel -> model_parallel.SCHEMES


@dataclass(frozen=True)
class Layout:
    """This process's place: ``rank`` of ``world_size`` torchrun processes; ``data_rank`` of ``data_ranks``
    data-parallel ranks (each reads its share of the batch); ``split``: the ranks split the net in pairs
    (--parallel model or hybrid); ``device``: where the run computes."""

    rank: int
    world_size: int
    data_rank: int
    data_ranks: int
    split: bool
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def start(cls, config: RunConfig) -> Layout:
        """Join torchrun's process group (when WORLD_SIZE > 1) and decide the ranks; ConfigError for a
        --parallel or --batch-size the ranks cannot take."""
        world_size, rank = int(os.environ.get("WORLD_SIZE", "1")), 0
        if world_size > 1:
            if not dist.is_initialized():
                backend = "nccl" if runtime.MODE == "gpu" else "gloo"
                if backend == "nccl":
                    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
                dist.init_process_group(backend)
            rank, world_size = dist.get_rank(), dist.get_world_size()
        split = config.parallel in SPLIT_SCHEMES
        if split and (world_size % RANKS or config.variant != "2012" or config.backend != "triton"):
            raise ConfigError(f"--parallel {config.parallel}: the 2012 net on the triton backend on {RANKS} ranks (or "
                              f"2N: N model-parallel pairs, data-parallel; torchrun --nproc_per_node {RANKS} or 2N); "
                              f"this run: {config.variant}, {config.backend}, {world_size} "
                              f"rank{'s' if world_size > 1 else ''}")
        # a pair's ranks split the net and see the same images: each pair is one data rank
        data_rank, data_ranks = (rank // RANKS, world_size // RANKS) if split else (rank, world_size)
        if config.batch_size % data_ranks:
            raise ConfigError(f"--batch-size {config.batch_size} does not split over {data_ranks} ranks")
        device = torch.device("cuda" if runtime.MODE == "gpu" else "cpu")
        return cls(rank, world_size, data_rank, data_ranks, split, device)

    def wrap(self, model: AlexNet, config: RunConfig, num_classes: int) -> tuple[torch.nn.Module, torch.nn.Module]:
        """(model, network) from the whole net ``model``: this rank's part when split (the initial weights
        scattered), on the device (--channels-last: in that layout); network: it, under DDP over several data
        ranks unless split. ConfigError when the split cannot take the net's widths."""
        if self.split:
            pair, data = split_groups()
            try:
                split = ModelParallelAlexNet(pair, num_classes, config.width, model.input_size, config.dropout,
                                             config.precision, scheme=SPLIT_SCHEMES[config.parallel], data=data)
            except ValueError as error:
                raise ConfigError(str(error)) from None
            split.load_full_state_dict(model.state_dict())
            model = split
        model.to(self.device)
        if config.channels_last:  # conv weights as (K, R, S, C): contiguous channel blocks for the conv kernels
            model.to(memory_format=torch.channels_last)
        if self.split or self.data_ranks == 1:  # (a split net averages its gradients over the pairs itself)
            return model, model
        return model, torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def any_rank(self, value: int) -> int:
        """The largest ``value`` over the ranks (every rank gets it)."""
        if self.world_size == 1:
            return value
        flag = torch.tensor([value], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def rng_states(self, model: torch.nn.Module) -> list[dict]:
        """Every data rank's generator states (``checkpoint.rng_state``), in rank order, on every rank; with
        several, first RuntimeError unless they hold bitwise the same parameters of ``model``."""
        if self.data_ranks == 1:  # one pair: the ranks' one stream, as one process's
            return [rng_state()]
        fingerprint = torch.stack([p.detach().double().sum() for p in model.parameters()]).to(self.device)
        fingerprints = [torch.empty_like(fingerprint) for _ in range(self.world_size)]
        dist.all_gather(fingerprints, fingerprint)
        if self.split:  # the ranks that hold these parameters: this column's, one per pair
            fingerprints = fingerprints[self.rank % RANKS::RANKS]
        if any(not torch.equal(f, fingerprint) for f in fingerprints):
            raise RuntimeError(f"rank {self.rank}: parameters differ between data-parallel ranks")
        states = [None] * self.world_size
        dist.all_gather_object(states, rng_state())
        return states[::RANKS] if self.split else states  # a pair's ranks draw one stream

    def state_dicts(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
        """(model, optimizer) state dicts as one process holds them (a split net's gathered, on every rank)."""
        if self.split:
            return model.full_state_dict(), model.gathered_optimizer_state(optimizer.state_dict())
        return model.state_dict(), optimizer.state_dict()

    def load_state_dicts(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, saved: dict,
                         what: str) -> None:
        """Load one process's ``saved`` "model" and "optimizer" state dicts (this rank's part when split);
        CheckpointError ``what: ...`` when the weights do not fit ``model``."""
        own = model.full_state_dict() if self.split else model.state_dict()
        check_fits(saved["model"], own, what)
        if self.split:
            model.load_full_state_dict(saved["model"])
            optimizer.load_state_dict(model.scattered_optimizer_state(saved["optimizer"]))
        else:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])

