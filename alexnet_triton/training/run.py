"""The training engine behind experiments/train.py: one run = model, data, SGD, schedule, checkpoints, metrics.

``RunConfig`` is every option of a run (train.py builds its command line from the fields, with the GPU and
CPU presets' defaults). A run directory holds ``checkpoint.pt`` (the config, the versions that wrote it and the
whole state; with the one before it: ``alexnet_triton.checkpoint``), ``metrics.csv`` (one row per step, per
epoch and a final one with the held-out result), ``result.json`` (the final result) and, where matplotlib is
installed, ``curves.png``. A checkpoint restores model, optimiser, schedule, every rank's RNG and the position
inside the epoch, so an interrupted run continues exactly where it stopped (on the CPU: bitwise). SIGINT (Ctrl-C),
SIGTERM or SIGUSR1 while training or evaluating saves a checkpoint and raises KeyboardInterrupt(signal number);
a non-finite loss stops the run. A user mistake raises ``ConfigError`` (or ``data.DataError``).

Data parallel: started by ``torchrun --nproc_per_node N``, the run uses
DistributedDataParallel (NCCL on GPUs, gloo on the CPU); ``batch_size`` is the
global batch, split evenly across the ranks, and rank 0 writes the run directory.
Each rank draws its dropout masks from its own stream, seeded from (seed, rank).
Model parallel (``parallel="model"``, 2 torchrun ranks): ``alexnet_triton.model_parallel``'s split of the
2012 net; both ranks see the whole batch and draw one process's dropout stream, and the checkpoint holds one
process's state dicts (gathered on save, scattered on load).
"""

from __future__ import annotations

import csv
import functools
import importlib.metadata
import inspect
import itertools
import json
import math
import os
import random
import re
import signal
import subprocess
import time
import warnings
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import triton
from tqdm import tqdm

from .. import ops, optim
from ..checkpoint import NEWEST, PREVIOUS, check_fits, rng_state, save, set_rng_state, trim_metrics, write_atomically
from ..data import DataError, ResumableLoader, make_loaders, mix_seed, resize_for
from ..graphs import GraphedStep, fallback_reason
from ..kernels import checks, runtime
from ..model import BACKENDS, INITS, INPUT_SIZES, VARIANTS, AlexNet, parameter_count
from ..model_parallel import RANKS, Collectives, ModelParallelAlexNet
from ..precision import AMP_DTYPES, forward_context

METRIC_COLUMNS = ["kind", "epoch", "step", "loss", "top1", "top5", "lr", "images_per_s", "val_loss", "val_top1",
                  "val_top5", "skipped", "elapsed_s"]
RUN_FILES = (NEWEST, PREVIOUS, "metrics.csv", "curves.png", "result.json")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)  # save a checkpoint and stop
PRESETS = ("gpu", "cpu")
SCHEDULES = ("step", "cosine", "plateau")
PARALLELISMS = ("data", "model")


class ConfigError(ValueError):
    """A run that cannot start as asked (a user mistake); the message names the flag, value or path."""


def option(default, help: str, *, cpu=MISSING, choices: tuple | None = None, on_resume: bool = False,
           at_least: float | None = None, below: float | None = None):
    """A RunConfig field and its command-line option: ``default`` is the GPU preset's value, ``cpu`` the CPU
    preset's where it differs; ``on_resume``: the flag may change when a run is resumed; a number must be
    ``at_least`` and ``below`` the given bounds."""
    return field(default=default, metadata=dict(help=help, cpu=cpu, choices=choices, on_resume=on_resume,
                                                at_least=at_least, below=below))


@dataclass
class RunConfig:
    """Everything that defines a run (saved in its checkpoint); each field is an option of experiments/train.py.

    The defaults are the GPU preset (the paper's full-size setup); ``preset(name)`` gives the CPU one.
    """

    variant: str = option("2012", "net: the 2012 paper's grouped net with LRN, or torchvision's", choices=VARIANTS)
    backend: str = option("triton", "triton: this project's kernels; torch: the PyTorch reference", choices=BACKENDS)
    data: str | None = option(None, "ImageFolder root with train/<class>/ and val/<class>/ (none: built-in shapes)")
    synthetic: bool = option(False, "random tensors instead of images (throughput runs)")
    epochs: int = option(90, "epochs to train", cpu=1, on_resume=True, at_least=1)
    max_steps: int = option(0, "stop after this many steps in total (0: run all epochs)", on_resume=True, at_least=0)
    batch_size: int = option(128, "global batch (split across torchrun ranks)", cpu=16, at_least=1)
    lr: float = option(0.01, "initial learning rate", cpu=0.005, at_least=0)
    momentum: float = option(0.9, "SGD momentum", at_least=0)
    weight_decay: float = option(5e-4, "L2 weight decay", at_least=0)
    label_smoothing: float = option(0.0, "label smoothing of the training loss (evaluation: plain cross-entropy)",
                                    at_least=0, below=1)
    schedule: str = option("plateau", "lr / 10 every --step-epochs (step), or when val loss stalls (plateau), or "
                           "lr x (1 + cos(pi x epoch / --epochs)) / 2 in each epoch (cosine: fits any --epochs)",
                           cpu="cosine", choices=SCHEDULES)
    step_epochs: int | None = option(None, "step schedule: epochs between lr / 10 (none: --epochs / 3, rounded up, "
                                     "the paper's 30 of 90)", at_least=1)
    patience: int = option(3, "plateau schedule: epochs without improvement before lr / 10", at_least=0)
    amp: str = option("off", "mixed precision (GPU only)", choices=tuple(AMP_DTYPES))
    channels_last: bool = option(True, "NHWC activations and (K, R, S, C) conv weights", cpu=False)
    seed: int = option(0, "seed of initialisation, data order, augmentation and dropout")
    width: float = option(1.0, "channel multiplier (a scaled-down copy of the topology)", cpu=0.125,
                          at_least=0.01)
    input_size: int | None = option(None, "image side (none: the variant's, 227 or 224)", cpu=67, at_least=1)
    num_classes: int | None = option(None, "classes of the built-in (2-10, none: 8) or synthetic (none: 1000) data",
                                     cpu=2)
    train_count: int = option(2000, "training images of the built-in or synthetic data", cpu=640, at_least=1)
    val_count: int = option(500, "held-out images of the built-in or synthetic data", cpu=128, at_least=1)
    dropout: float = option(0.5, "dropout probability of fc6/fc7", cpu=0.0, at_least=0, below=1)
    init: str = option("kaiming", "weights: He normal, the paper's N(0, 0.01), or PyTorch's", choices=INITS)
    precision: str = option("ieee", "fp32 matmuls of the Triton path", choices=checks.PRECISIONS)
    parallel: str = option("data", "what torchrun's ranks share: data (DDP, a share of the batch each) or model (the "
                           "2012 paper's two-GPU split: 2 ranks, half of every layer, the whole batch)",
                           choices=PARALLELISMS, on_resume=True)
    cuda_graphs: bool = option(True, "capture the training step in a CUDA graph after warm-up steps and replay it "
                               "(where it cannot be, the step runs eagerly and the reason is printed)", on_resume=True)
    workers: int = option(0, "DataLoader worker processes", on_resume=True, at_least=0)
    ten_crop: bool = option(False, "evaluate on 10 crops (with --data)", on_resume=True)
    resize: int | None = option(None, "with --data: shorter side before the crop (none: the input size x 256 / the "
                                "variant's, 227 or 224: the paper's share of the image)", at_least=1)
    hflip: float = option(0.5, "with --data: probability of a horizontal flip of a training image (0: off)",
                          at_least=0, below=1)
    lighting: float = option(0.1, "with --data: strength (sigma) of the PCA colour lighting of training images "
                             "(0: off)", at_least=0)
    checkpoint_every: int = option(0, "steps between checkpoints (0: at the end of each epoch)", on_resume=True,
                                   at_least=0)
    out: str = option("", "run directory (none: a fresh runs/<variant>-<date>-<time>)", on_resume=True)

    @classmethod
    def preset(cls, name: str, **chosen) -> RunConfig:
        """The "gpu" or "cpu" preset, with the ``chosen`` fields set."""
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {PRESETS}, got {name!r}")
        values = {f.name: f.metadata["cpu"] for f in fields(cls)
                  if name == "cpu" and f.metadata["cpu"] is not MISSING}
        return cls(**{**values, **chosen})

    def check(self) -> None:
        """ConfigError naming the first option whose value is out of its range or not among its choices."""
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            flag = "--" + f.name.replace("_", "-")
            if meta["choices"] is not None and value not in meta["choices"]:
                raise ConfigError(f"{flag} {value}: expected one of {', '.join(map(str, meta['choices']))}")
            if value is None or isinstance(value, bool | str):
                continue
            if meta["at_least"] is not None and value < meta["at_least"]:
                raise ConfigError(f"{flag} {value}: must be at least {meta['at_least']}")
            if meta["below"] is not None and not value < meta["below"]:
                raise ConfigError(f"{flag} {value}: must be below {meta['below']}")

    @classmethod
    def resumable(cls) -> list[str]:
        """The fields a resumed run may change."""
        return [f.name for f in fields(cls) if f.metadata["on_resume"]]


def default_preset() -> str:
    """"gpu" when the Triton kernels run on a GPU, else "cpu" (the interpreter)."""
    return "gpu" if runtime.MODE == "gpu" else "cpu"


def fresh_run_directory(variant: str, root: str = "runs", create: bool = True) -> str:
    """runs/<variant>-<YYYYmmdd-HHMMSS>, with a suffix -2, -3, ... when that exists; ``create``: made here (so
    that a run started in the same second picks another)."""
    base = Path(root) / f"{variant}-{time.strftime('%Y%m%d-%H%M%S')}"
    for suffix in itertools.count(1):
        candidate = base if suffix == 1 else base.with_name(f"{base.name}-{suffix}")
        if not create and not candidate.exists():
            return str(candidate)
        if create:
            try:
                candidate.mkdir(parents=True)
                return str(candidate)
            except FileExistsError:
                continue
    raise AssertionError("unreachable")


def versions() -> dict[str, str]:
    """Versions that produced a checkpoint: this project (and its git commit in a checkout), torch, Triton."""
    try:
        project = importlib.metadata.version("alexnet-triton")
    except importlib.metadata.PackageNotFoundError:
        project = "not installed"
    checkout = Path(__file__).resolve().parents[2]
    commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True) if (checkout / ".git").exists() else None
    if commit is not None and commit.returncode == 0:
        project += f" ({commit.stdout.strip()})"
    return {"alexnet_triton": project, "torch": str(torch.__version__), "triton": triton.__version__}


def step_interval(config: RunConfig) -> int:
    """Epochs between lr / 10 of the step schedule: --step-epochs, or a third of --epochs (rounded up)."""
    return config.step_epochs or math.ceil(config.epochs / 3)


def lr_factor(config: RunConfig, epoch: int) -> float:
    """The step or cosine schedule: the lr of ``epoch`` (from 0) over --lr."""
    if config.schedule == "step":
        return 0.1 ** (epoch // step_interval(config))
    return (1 + math.cos(math.pi * min(epoch, config.epochs) / config.epochs)) / 2


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint (if any)."""


def accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of rows whose label is among the k largest logits."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return (top == labels[:, None]).any(dim=1).float().mean().item()


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def loss_function(backend: str, label_smoothing: float = 0.0) -> Callable[..., torch.Tensor]:
    """Cross-entropy on the backend's kernels, with ``label_smoothing``; ConfigError when the Triton
    cross-entropy of this version does not take label smoothing."""
    if backend == "torch":
        return functools.partial(F.cross_entropy, label_smoothing=label_smoothing)
    if not label_smoothing:
        return ops.cross_entropy
    if "label_smoothing" not in inspect.signature(ops.cross_entropy).parameters:
        raise ConfigError(f"--label-smoothing {label_smoothing}: this version's ops.cross_entropy has no label "
                          "smoothing; use --backend torch")
    return functools.partial(ops.cross_entropy, label_smoothing=label_smoothing)


class Run:
    """One training run; ``train()`` or ``evaluate()``. ``checkpoint``: a state from ``read_checkpoint`` to
    continue from (its config must be ``config``, up to the resumable fields)."""

    def __init__(self, config: RunConfig, checkpoint: dict | None = None):
        self.config = config
        if not config.out:
            raise ConfigError("the run needs a directory (RunConfig.out, --out)")
        self.out = Path(config.out)
        self.rank, self.world_size = self._start_distributed()
        self.device = torch.device("cuda" if runtime.MODE == "gpu" else "cpu")
        if config.amp != "off" and self.device.type != "cuda":
            raise ConfigError(f"--amp {config.amp} needs a GPU; this run is on the {self.device.type}")
        # --parallel model: the ranks split every layer and all see the whole batch, so they are one data rank
        self.split = config.parallel == "model"
        if self.split and (self.world_size != RANKS or config.variant != "2012" or config.backend != "triton"):
            raise ConfigError(f"--parallel model: the 2012 net on the triton backend on {RANKS} ranks (torchrun "
                              f"--nproc_per_node {RANKS}); this run: {config.variant}, {config.backend}, "
                              f"{self.world_size} rank{'s' if self.world_size > 1 else ''}")
        self.data_rank, self.data_ranks = (0, 1) if self.split else (self.rank, self.world_size)
        if config.batch_size % self.data_ranks:
            raise ConfigError(f"--batch-size {config.batch_size} does not split over {self.data_ranks} ranks")
        self.loss_fn = loss_function(config.backend, config.label_smoothing)
        self.eval_loss_fn = loss_function(config.backend)
        input_size = config.input_size or INPUT_SIZES[config.variant]
        self.resize = config.resize
        if config.data is not None and self.resize is None:  # the paper's share of the image at any input size
            self.resize = resize_for(input_size, INPUT_SIZES[config.variant])
        self.train_loader, self.val_loader, num_classes = make_loaders(
            config.data, synthetic=config.synthetic, input_size=input_size,
            batch_size=config.batch_size // self.data_ranks, workers=config.workers, seed=config.seed,
            resize=self.resize, hflip=config.hflip, lighting=config.lighting, ten_crop=config.ten_crop,
            num_classes=config.num_classes if config.data is None else None,
            train_count=config.train_count, val_count=config.val_count,
            shard=(self.data_rank, self.data_ranks) if self.data_ranks > 1 else None, progress=self.is_main)
        torch.manual_seed(config.seed)
        self.num_classes = num_classes
        try:
            self.model = AlexNet(config.variant, num_classes, config.backend, config.width, input_size,
                                 config.dropout, config.init, config.precision)
            self.parameter_count = parameter_count(self.model)  # the whole net's (a split rank holds a part)
            if self.split:  # one process's initial weights, scattered
                split = ModelParallelAlexNet(Collectives(), num_classes, config.width, input_size, config.dropout,
                                             config.precision)
                split.load_full_state_dict(self.model.state_dict())
                self.model = split
        except ValueError as error:  # an input size or width the topology cannot take
            raise ConfigError(str(error)) from None
        self.model.to(self.device)
        if config.channels_last:  # conv weights as (K, R, S, C): contiguous channel blocks for the conv kernels
            self.model.to(memory_format=torch.channels_last)
        self.network = self.model
        if self.data_ranks > 1:
            self.network = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        # Dropout masks (and anything else drawn from the global RNGs from here on) differ per rank: each rank's
        # stream is seeded from (seed, rank), and every rank's state is saved, so a resumed run continues exactly.
        _seed_everything(mix_seed(config.seed, self.data_rank))  # --parallel model: one stream, one process's
        sgd = optim.SGD if config.backend == "triton" else torch.optim.SGD
        self.optimizer = sgd(self.model.parameters(), lr=config.lr, momentum=config.momentum,
                             weight_decay=config.weight_decay)
        if config.schedule != "plateau":  # the lr of an epoch from the config (a resumed run's --epochs included)
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda epoch: lr_factor(config, epoch))
        else:
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, factor=0.1,
                                                                        patience=config.patience)
        self.scaler = torch.amp.GradScaler("cuda") if config.amp == "fp16" else None
        reason = (fallback_reason(self.device, self.optimizer, scaler=self.scaler, processes=self.world_size)
                  if config.cuda_graphs else "--no-cuda-graphs")
        # (the step looked up at each call: a test may patch Run._train_step after the Run exists)
        self.train_step = GraphedStep(lambda images, labels: self._train_step(images, labels), self.optimizer,
                                      reason, announce=config.cuda_graphs and self.is_main)
        self.epoch, self.step_in_epoch, self.global_step, self.elapsed = 0, 0, 0, 0.0
        self.skipped, self.reported_unreadable = 0, set()
        self.checkpointed_step: int | None = None
        self.result: dict | None = None  # the final held-out metrics, once the run has finished
        self.last_evaluation: tuple[int, dict] | None = None  # (step, metrics) of the last end-of-epoch one
        self.interrupted = 0  # the number of a stop signal received (STOP_SIGNALS)
        self.keep_previous = True  # False after a resume from the previous checkpoint: the newest is damaged
        if checkpoint is not None:
            self._restore(checkpoint)
            if config.schedule != "plateau":  # this epoch's lr under the resumed --epochs
                for group, base_lr in zip(self.optimizer.param_groups, self.scheduler.base_lrs, strict=True):
                    group["lr"] = base_lr * lr_factor(config, self.scheduler.last_epoch)

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def _start_distributed() -> tuple[int, int]:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return 0, 1
        if not dist.is_initialized():
            backend = "nccl" if runtime.MODE == "gpu" else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group(backend)
        return dist.get_rank(), dist.get_world_size()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_loader.sampler.order(0)) // self.train_loader.batch_size

    @property
    def total_steps(self) -> int:
        """Steps the run takes in all (``max_steps`` or every epoch's)."""
        all_epochs = self.config.epochs * self.steps_per_epoch
        return min(self.config.max_steps, all_epochs) if self.config.max_steps else all_epochs

    @property
    def finished(self) -> bool:
        return self.result is not None and self.global_step >= self.total_steps

    def describe(self) -> str:
        """One line: the effective net, data, batch, lr schedule, device and execution mode."""
        config, size = self.config, self.model.input_size
        if config.data is not None:
            data = (f"{config.data} ({len(self.train_loader.dataset)} train / {len(self.val_loader.dataset)} val; "
                    f"shorter side {self.resize}, flip {config.hflip:g}, lighting {config.lighting:g})")
        else:
            data = (f"{'synthetic tensors' if config.synthetic else 'built-in shapes'} "
                    f"({config.train_count} train / {config.val_count} val)")
        schedule = {"step": f"/10 every {step_interval(config)} epochs",
                    "cosine": f"over {config.epochs} epochs, {config.lr:.2g} in the first ... "
                              f"{config.lr * lr_factor(config, config.epochs - 1):.2g} in the last"
                              if config.epochs > 1 else "over 1 epoch: constant",
                    "plateau": f"/10 after {config.patience} epochs without improvement"}[config.schedule]
        steps = f", max {config.max_steps} steps" if config.max_steps else ""
        mode = ("Triton interpreter" if runtime.INTERPRETER else "compiled Triton") if config.backend == "triton" \
            else "PyTorch"
        ranks = f" x {self.world_size} ranks" if self.world_size > 1 else ""
        return (f"net: AlexNet {config.variant} (width {config.width:g}, {size}x{size} input, {self.num_classes} "
                f"classes, {self.parameter_count / 1e6:.2f}M parameters, dropout {config.dropout:g}); "
                f"data: {data}; batch {config.batch_size}, lr {config.lr:g} ({config.schedule}: {schedule}), "
                f"{config.epochs} epochs{steps}; device: {self.device.type}{ranks}, {mode}, amp {config.amp}")

    def _images(self, images: torch.Tensor) -> torch.Tensor:
        """On the device, in the run's layout (fp32: with --amp, autocast casts them in the first conv)."""
        images = images.to(self.device, non_blocking=True)
        return images.contiguous(memory_format=torch.channels_last) if self.config.channels_last else images

    def _autocast(self):
        """With --amp: torch.autocast to its dtype, on either backend (alexnet_triton.precision); else nothing."""
        return forward_context(self.device.type, AMP_DTYPES[self.config.amp])

    # ------------------------------------------------------------- checkpoints
    def _check_ranks_agree(self) -> None:
        """RuntimeError unless every data-parallel rank holds bitwise the same parameters."""
        fingerprint = torch.stack([p.detach().double().sum() for p in self.model.parameters()]).to(self.device)
        fingerprints = [torch.empty_like(fingerprint) for _ in range(self.world_size)]
        dist.all_gather(fingerprints, fingerprint)
        if any(not torch.equal(f, fingerprint) for f in fingerprints):
            raise RuntimeError(f"rank {self.rank}: parameters differ between data-parallel ranks")

    def checkpoint(self) -> None:
        """Save everything needed to continue exactly from here (rank 0 writes, with every rank's RNG state).
        With several ranks, first check that they still hold the same parameters."""
        rng = [rng_state()]  # --parallel model: the ranks' one stream, as one process's
        if self.data_ranks > 1:
            self._check_ranks_agree()
            rng = [None] * self.world_size
            dist.all_gather_object(rng, rng_state())
        model, optimizer = self.model.state_dict(), self.optimizer.state_dict()
        if self.split:  # one process's state dicts, gathered on every rank
            model, optimizer = self.model.full_state_dict(), self.model.gathered_optimizer_state(optimizer)
        if self.is_main:
            self._save(rng, model, optimizer)
        if self.world_size > 1:  # every rank returns once the file is there
            dist.barrier()
        self.checkpointed_step = self.global_step

    def _save(self, rng: list[dict], model: dict, optimizer: dict) -> None:
        save(dict(config=asdict(self.config), versions=versions(), model=model,
                  optimizer=optimizer, scheduler=self.scheduler.state_dict(),
                  scaler=self.scaler.state_dict() if self.scaler else None, rng=rng,
                  epoch=self.epoch, step_in_epoch=self.step_in_epoch, global_step=self.global_step,
                  elapsed=self.elapsed, skipped=self.skipped, result=self.result),
             self.out, keep_previous=self.keep_previous)
        self.keep_previous = True

    def _restore(self, state: dict) -> None:
        """Continue from ``state`` (``checkpoint.read_checkpoint``); CheckpointError naming its file when its
        weights do not fit this run's net (another variant or width)."""
        own = self.model.full_state_dict() if self.split else self.model.state_dict()
        check_fits(state["model"], own, f"{state['file']}: its weights do not fit this run's "
                   f"net (AlexNet {self.config.variant}, width {self.config.width:g})")
        self.keep_previous = state["file"].name != PREVIOUS
        if self.split:  # this rank's part of one process's state dicts
            self.model.load_full_state_dict(state["model"])
            self.optimizer.load_state_dict(self.model.scattered_optimizer_state(state["optimizer"]))
        else:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        if len(state["rng"]) == self.data_ranks:
            set_rng_state(state["rng"][self.data_rank])
        else:  # another number of ranks: fresh streams (the run goes on, but not bitwise as it would have)
            if self.is_main:
                print(f"note: the checkpoint holds {len(state['rng'])} ranks' RNG states, this run has "
                      f"{self.data_ranks} ranks: dropout masks are drawn afresh")
            _seed_everything(mix_seed(self.config.seed, self.data_rank, state["global_step"]))
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step, self.elapsed = state["global_step"], state["elapsed"]
        self.skipped, self.result = state["skipped"], state["result"]
        self.checkpointed_step = self.global_step
        now = versions()
        changed = [f"{name} {state['versions'].get(name)} -> {now[name]}" for name in now
                   if state["versions"].get(name) != now[name] and name != "alexnet_triton"]
        if changed and self.is_main:
            print(f"note: the checkpoint was written with other versions ({', '.join(changed)}): the run continues, "
                  "but not bitwise as it would have")

    # ----------------------------------------------------------------- metrics
    def _log(self, **row) -> None:
        if not self.is_main:
            return
        path = self.out / "metrics.csv"
        new = not path.exists()
        self.out.mkdir(parents=True, exist_ok=True)
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, METRIC_COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})

    def _report_unreadable(self, loader: ResumableLoader) -> None:
        """Print each unreadable image once, with its path and the reason (rank 0)."""
        for path, reason in loader.unreadable.items():
            if path not in self.reported_unreadable and self.is_main:
                tqdm.write(f"skipped unreadable image {path}: {reason}")
            self.reported_unreadable.add(path)

    def _on_interrupt(self, signum, frame) -> None:
        """A stop signal while training or evaluating: stop at the next step or batch (then save and exit)."""
        self.interrupted = signum

    def _sync_interrupted(self) -> int:
        """The stop signal any rank has received (the highest number, 0: none); every rank then stops at the same
        step and raises with the same number."""
        if self.world_size > 1:
            flag = torch.tensor([self.interrupted], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            self.interrupted = int(flag.item())
        return self.interrupted

    def _stop_if_interrupted(self) -> None:
        if self._sync_interrupted():
            raise KeyboardInterrupt(self.interrupted)

    # ---------------------------------------------------------------- training
    def _train_step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.network.train()
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            logits = self.network(self._images(images))
        loss = self.loss_fn(logits.float() if self.config.backend == "torch" else logits, labels.to(self.device))
        if self.scaler:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return loss.detach(), logits.detach()

    def _non_finite(self, loss_value: float) -> NonFiniteLoss:
        where = f"loss is {loss_value} at epoch {self.epoch + 1}, step {self.step_in_epoch + 1}; stopped"
        if self.checkpointed_step is None:
            return NonFiniteLoss(f"{where} before the first checkpoint: nothing was saved")
        return NonFiniteLoss(f"{where}; the last good checkpoint is {self.out / 'checkpoint.pt'} "
                             f"(step {self.checkpointed_step})")

    def _estimate(self, seconds: float) -> str:
        remaining = self.total_steps - self.global_step
        total = seconds * remaining
        hours, minutes = divmod(round(total / 60), 60)
        duration = f"{hours} h {minutes} min" if hours else f"{minutes} min" if minutes else f"{total:.0f} s"
        return (f"first step {seconds:.2f} s: the {remaining} remaining steps take about {duration}, plus "
                f"evaluation")

    def train(self) -> dict:
        """Train until the last epoch (or max_steps); returns the final held-out metrics (also in metrics.csv,
        result.json and the plot). A stop signal: saves a checkpoint and raises KeyboardInterrupt(its number)."""
        if self.is_main and self.checkpointed_step is not None:  # rows logged after the checkpoint come again
            trim_metrics(self.out / "metrics.csv", self.global_step, self.epoch, self.result is not None)
        previous_handlers = {number: signal.signal(number, self._on_interrupt) for number in STOP_SIGNALS}
        try:
            self._train_epochs()
            self._stop_if_interrupted()
            self.result = self._final_result()
            self.checkpoint()
        except KeyboardInterrupt:
            self.checkpoint()
            if self.is_main:
                by = "" if self.interrupted in (0, signal.SIGINT) else f" by {signal.Signals(self.interrupted).name}"
                print(f"interrupted{by}: saved {self.out / NEWEST} (step {self.global_step}); continue with "
                      f"--resume --out {self.out}", flush=True)
            raise
        finally:
            for number, handler in previous_handlers.items():
                signal.signal(number, handler)
        if self.is_main:
            self._write_result()
        return self.result

    def _train_epochs(self) -> None:
        config, steps_per_epoch = self.config, self.steps_per_epoch
        first_step = True
        while self.global_step < self.total_steps or self.step_in_epoch >= steps_per_epoch:  # (an epoch to close)
            self.train_loader.set_epoch(self.epoch, start_batch=self.step_in_epoch)
            bar = tqdm(total=steps_per_epoch, initial=self.step_in_epoch, desc=f"epoch {self.epoch + 1}",
                       disable=not self.is_main, dynamic_ncols=True)
            skipped_before = self.train_loader.skipped_samples
            for images, labels in self.train_loader:
                started = time.perf_counter()
                loss, logits = self.train_step(images, labels)
                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    bar.close()
                    raise self._non_finite(loss_value)
                seconds = time.perf_counter() - started
                self.elapsed += seconds
                self.step_in_epoch += 1
                self.global_step += 1
                if first_step and self.is_main and self.global_step < self.total_steps:
                    bar.write(self._estimate(seconds))
                first_step = False
                images_per_s = len(labels) * self.data_ranks / seconds
                self._log(kind="step", epoch=self.epoch + 1, step=self.global_step, loss=loss_value,
                          top1=accuracy(logits, labels.to(logits.device), 1),
                          top5=accuracy(logits, labels.to(logits.device), 5),
                          lr=self.optimizer.param_groups[0]["lr"], images_per_s=images_per_s,
                          elapsed_s=self.elapsed)
                self._report_unreadable(self.train_loader)
                bar.set_postfix(loss=f"{loss_value:.3f}", img_s=f"{images_per_s:.1f}")
                bar.update()
                if config.checkpoint_every and self.global_step % config.checkpoint_every == 0:
                    self.checkpoint()
                if self._sync_interrupted() or self.global_step >= self.total_steps:
                    break
            bar.close()
            self.skipped += self.train_loader.skipped_samples - skipped_before
            self._stop_if_interrupted()
            if self.step_in_epoch >= steps_per_epoch:
                self._end_epoch(self.train_loader.skipped_samples - skipped_before)

    def _final_result(self) -> dict:
        """The held-out metrics where the run stopped (the last epoch's, when it stopped there), logged as the
        "final" row of metrics.csv."""
        if self.last_evaluation is not None and self.last_evaluation[0] == self.global_step:
            metrics = self.last_evaluation[1]
        else:
            metrics = self.evaluate()
            self.skipped += metrics["val_skipped"]
        metrics = {name: metrics[name] for name in ("val_loss", "val_top1", "val_top5")}
        self._log(kind="final", epoch=self.epoch + (self.step_in_epoch > 0), step=self.global_step,
                  lr=self.optimizer.param_groups[0]["lr"], elapsed_s=self.elapsed, skipped=self.skipped, **metrics)
        return metrics

    def _end_epoch(self, skipped: int) -> None:
        metrics = self.evaluate()
        self.skipped += metrics["val_skipped"]
        self.last_evaluation = (self.global_step, metrics)
        self.epoch += 1
        self.step_in_epoch = 0
        with warnings.catch_warnings():  # a run resumed at an epoch's end steps the schedule before any SGD step
            warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()` before"))
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(metrics["val_loss"])
            else:
                self.scheduler.step()
        self._log(kind="epoch", epoch=self.epoch, step=self.global_step, lr=self.optimizer.param_groups[0]["lr"],
                  elapsed_s=self.elapsed, skipped=skipped + metrics["val_skipped"],
                  **{name: metrics[name] for name in ("val_loss", "val_top1", "val_top5")})
        if self.is_main:
            print(f"epoch {self.epoch}: val loss {metrics['val_loss']:.4f}, top-1 {metrics['val_top1']:.3f}, "
                  f"top-5 {metrics['val_top5']:.3f}")
        self.checkpoint()

    @torch.no_grad()
    def evaluate(self) -> dict:
        """val_loss, val_top1 and val_top5 on the validation set (10-crop: softmax averaged over the crops), and
        val_skipped: the unreadable validation images skipped."""
        self.model.eval()
        total, loss_sum, top1, top5 = 0, 0.0, 0.0, 0.0
        skipped_before = self.val_loader.skipped_samples
        bar = tqdm(total=len(self.val_loader), desc="evaluating", disable=not self.is_main, leave=False,
                   dynamic_ncols=True)
        for images, labels in self.val_loader:
            self._stop_if_interrupted()
            labels = labels.to(self.device)
            crops = images.shape[1] if images.dim() == 5 else 1
            with self._autocast():
                logits = self.model(self._images(images.flatten(0, 1) if crops > 1 else images)).float()
            if crops > 1:
                probabilities = logits.softmax(1).view(len(labels), crops, -1).mean(1)
                logits = probabilities.log()
            loss_sum += self.eval_loss_fn(logits, labels, reduction="sum").item()
            top1 += accuracy(logits, labels, 1) * len(labels)
            top5 += accuracy(logits, labels, 5) * len(labels)
            total += len(labels)
            bar.update()
        bar.close()
        self._stop_if_interrupted()
        self._report_unreadable(self.val_loader)
        if not total:
            raise DataError(f"none of the {len(self.val_loader.dataset)} validation images could be read")
        return dict(val_loss=loss_sum / total, val_top1=top1 / total, val_top5=top5 / total,
                    val_skipped=self.val_loader.skipped_samples - skipped_before)

    def _write_result(self) -> None:
        """result.json (the final held-out metrics, where the run stopped, the config) and curves.png."""
        config, result = self.config, self.result
        summary = dict(result, epoch=self.epoch, step_in_epoch=self.step_in_epoch, step=self.global_step,
                       skipped=self.skipped, training_s=self.elapsed, num_classes=self.num_classes,
                       parameters=self.parameter_count, config=asdict(config), versions=versions())
        write_atomically(self.out / "result.json",
                         lambda temporary: temporary.write_text(json.dumps(summary, indent=2) + "\n"))
        where = "CPU, Triton interpreter" if runtime.INTERPRETER and config.backend == "triton" else \
            self.device.type
        size = self.model.input_size
        plot_curves(self.out / "metrics.csv", self.out / "curves.png",
                    f"AlexNet {config.variant} (width {config.width:g}, {size}×{size} input, "
                    f"{self.num_classes} classes), {config.backend} backend, {where}, batch {config.batch_size}",
                    chance=1 / self.num_classes)


def held_out_line(metrics: dict, num_classes: int, skipped: int | None = None,
                  training_s: float | None = None) -> str:
    """The held-out result as train.py prints it (from the evaluation's metrics or result.json); with the
    training run's unreadable images and time when given."""
    line = (f"held-out: loss {metrics['val_loss']:.4f}, top-1 {metrics['val_top1']:.3f}, "
            f"top-5 {metrics['val_top5']:.3f} (chance top-1 {1 / num_classes:.3f})")
    if training_s is not None:
        line += f"; {skipped} unreadable images skipped; training time {training_s:.0f} s"
    return line


def plot_curves(metrics_csv: Path, png: Path, title: str, chance: float) -> None:
    """Training loss per step; training top-1 (running mean over 5 steps), held-out top-1 per epoch and the final
    held-out top-1 against the ``chance`` level; from metrics.csv. Without matplotlib (the ``study`` extra) it
    draws nothing, removes an earlier plot and prints one line saying so."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        png.unlink(missing_ok=True)
        print(f'{png.name} not drawn: matplotlib is not installed (pip install -e ".[study]"); the numbers are in '
              f"{metrics_csv}")
        return
    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))

    def column(kind: str, name: str) -> list[float]:
        return [float(row[name]) for row in rows if row["kind"] == kind]

    steps, epochs, final = (column(kind, "step") for kind in ("step", "epoch", "final"))
    top1 = column("step", "top1")
    epoch_top1, final_top1 = column("epoch", "val_top1"), column("final", "val_top1")
    figure = Figure(figsize=(11, 4))
    left, right = figure.subplots(1, 2)
    left.plot(steps, column("step", "loss"), lw=0.8)
    left.set(xlabel="step", ylabel="training loss (cross-entropy)", title="training loss per step")
    right.plot(steps, [np.mean(top1[max(0, i - 4):i + 1]) for i in range(len(top1))], lw=0.8,
               label="training top-1 (batch, mean of 5)")
    if epochs:
        right.plot(epochs, epoch_top1, "o", color="tab:red", label="held-out top-1 (end of epoch)")
    right.plot(final, final_top1, "*", color="black", ms=10, label="held-out top-1 (final)")
    for step, value in [*zip(epochs, epoch_top1, strict=True), *zip(final[-1:], final_top1[-1:], strict=True)]:
        right.annotate(f"{value:.3f}", (step, value), textcoords="offset points", xytext=(-6, -14), ha="right")
    right.axhline(chance, color="grey", ls="--", lw=0.8, label=f"chance ({chance:.3g})")
    right.set(xlabel="step", ylabel="top-1 accuracy", ylim=(0, 1.02), title="accuracy")
    right.legend(loc="lower right", fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    write_atomically(png, lambda temporary: figure.savefig(temporary, dpi=120, format="png"))
