"""The training engine behind experiments/train.py: one run = model, data, SGD, schedule, checkpoints, metrics.

A run directory holds ``checkpoint.pt`` (written atomically: a temporary file,
then a rename), ``metrics.csv`` (one row per step and per epoch) and
``curves.png``. ``resume`` restores model, optimiser, schedule, every RNG and
the position inside the epoch, so an interrupted run continues exactly where
it stopped (on the CPU: bitwise). Ctrl-C saves a checkpoint and exits; a
non-finite loss stops the run and keeps the last good checkpoint.

Data parallel: started by ``torchrun --nproc_per_node N``, the run uses
DistributedDataParallel (NCCL on GPUs, gloo on the CPU); ``batch_size`` is the
global batch, split evenly across the ranks, and rank 0 writes the run directory.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import random
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from . import ops, optim
from .data import make_loaders
from .kernels import runtime
from .model import INPUT_SIZES, AlexNet

METRIC_COLUMNS = ["kind", "epoch", "step", "loss", "top1", "top5", "lr", "images_per_s", "val_loss", "val_top1",
                  "val_top5", "elapsed_s"]
AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class RunConfig:
    """Everything that defines a run (saved in its checkpoint)."""

    variant: str = "2012"
    backend: str = "triton"
    data: str | None = None
    synthetic: bool = False
    epochs: int = 90
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "plateau"  # "step": lr / 10 every step_epochs; "plateau": lr / 10 when val loss stalls
    step_epochs: int = 30
    patience: int = 3
    amp: str = "off"
    channels_last: bool = False
    seed: int = 0
    out: str = "runs/alexnet"
    width: float = 1.0
    input_size: int | None = None
    num_classes: int | None = None
    train_count: int = 2000
    val_count: int = 500
    dropout: float = 0.5
    init: str = "paper"
    precision: str = "ieee"
    workers: int = 0
    ten_crop: bool = False
    checkpoint_every: int = 0  # steps between checkpoints (0: at the end of each epoch only)
    max_steps: int = 0  # stop after this many steps in total (0: run all epochs)


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


def accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of rows whose label is among the k largest logits."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return (top == labels[:, None]).any(dim=1).float().mean().item()


def _rng_state() -> dict:
    state = dict(torch=torch.get_rng_state(), numpy=np.random.get_state(), python=random.getstate())
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomically(payload: dict, path: Path) -> None:
    """torch.save to a temporary file in the same directory, then rename over ``path``."""
    temporary = path.with_name(f".{path.name}.tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)


class Run:
    """One training run; ``train()`` or ``evaluate()``."""

    def __init__(self, config: RunConfig, resume: bool = False):
        self.config = config
        self.out = Path(config.out)
        self.rank, self.world_size = self._start_distributed()
        self.device = torch.device("cuda" if runtime.MODE == "gpu" else "cpu")
        if config.amp != "off" and self.device.type != "cuda":
            raise ValueError(f"--amp {config.amp} needs a GPU; this run is on the {self.device.type}")
        if config.batch_size % self.world_size:
            raise ValueError(f"batch size {config.batch_size} does not split over {self.world_size} ranks")
        input_size = config.input_size or INPUT_SIZES[config.variant]
        self.train_loader, self.val_loader, num_classes = make_loaders(
            config.data, synthetic=config.synthetic, input_size=input_size,
            batch_size=config.batch_size // self.world_size, workers=config.workers, seed=config.seed,
            ten_crop=config.ten_crop, num_classes=config.num_classes if config.data is None else None,
            train_count=config.train_count, val_count=config.val_count,
            shard=(self.rank, self.world_size) if self.world_size > 1 else None)
        torch.manual_seed(config.seed)
        self.num_classes = num_classes
        self.model = AlexNet(config.variant, num_classes, config.backend, config.width, input_size, config.dropout,
                             config.init, config.precision)
        self.model.to(self.device)
        if config.channels_last:  # conv weights as (K, R, S, C): contiguous channel blocks for the conv kernels
            self.model.to(memory_format=torch.channels_last)
        self.network = self.model
        if self.world_size > 1:
            self.network = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        sgd = optim.SGD if config.backend == "triton" else torch.optim.SGD
        self.optimizer = sgd(self.model.parameters(), lr=config.lr, momentum=config.momentum,
                             weight_decay=config.weight_decay)
        if config.schedule == "step":
            self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, config.step_epochs, 0.1)
        elif config.schedule == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, factor=0.1,
                                                                        patience=config.patience)
        else:
            raise ValueError(f"schedule must be 'step' or 'plateau', got {config.schedule!r}")
        self.scaler = torch.amp.GradScaler("cuda") if config.amp == "fp16" else None
        self.loss_fn = ops.cross_entropy if config.backend == "triton" else F.cross_entropy
        self.epoch, self.step_in_epoch, self.global_step, self.elapsed = 0, 0, 0, 0.0
        if resume:
            self._load(self.out / "checkpoint.pt")

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

    def _images(self, images: torch.Tensor) -> torch.Tensor:
        """On the device, in the run's layout; with --amp on the Triton path, in the low-precision dtype (the
        Triton layers then cast their fp32 weights to it, as autocast does on the PyTorch path)."""
        images = images.to(self.device, non_blocking=True)
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.config.backend == "triton" and AMP_DTYPES[self.config.amp] is not None:
            images = images.to(AMP_DTYPES[self.config.amp])
        return images

    def _autocast(self):
        """PyTorch path with --amp: torch.autocast; otherwise (and on the Triton path) nothing."""
        dtype = AMP_DTYPES[self.config.amp]
        if dtype is None or self.config.backend == "triton":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=dtype)

    # ------------------------------------------------------------- checkpoints
    def _check_ranks_agree(self) -> None:
        """RuntimeError unless every data-parallel rank holds bitwise the same parameters."""
        fingerprint = torch.stack([p.detach().double().sum() for p in self.model.parameters()]).to(self.device)
        fingerprints = [torch.empty_like(fingerprint) for _ in range(self.world_size)]
        dist.all_gather(fingerprints, fingerprint)
        if any(not torch.equal(f, fingerprint) for f in fingerprints):
            raise RuntimeError(f"rank {self.rank}: parameters differ between data-parallel ranks")

    def checkpoint(self) -> None:
        """Save everything needed to continue exactly from here (rank 0 writes; every rank's RNG is equal).
        With several ranks, first check that they still hold the same parameters."""
        if self.world_size > 1:
            self._check_ranks_agree()
        if not self.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        save_atomically(dict(config=asdict(self.config), model=self.model.state_dict(),
                             optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                             scaler=self.scaler.state_dict() if self.scaler else None, rng=_rng_state(),
                             epoch=self.epoch, step_in_epoch=self.step_in_epoch, global_step=self.global_step,
                             elapsed=self.elapsed), self.out / "checkpoint.pt")

    def _load(self, path: Path) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {path}")
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step, self.elapsed = state["global_step"], state["elapsed"]

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

    def train(self) -> dict:
        """Train until the last epoch (or max_steps); returns the final validation metrics."""
        config = self.config
        steps_per_epoch = len(self.train_loader.sampler.order(0)) // self.train_loader.batch_size
        interrupted = False

        def on_interrupt(signum, frame):
            nonlocal interrupted
            interrupted = True

        previous_handler = signal.signal(signal.SIGINT, on_interrupt)
        metrics = {}
        try:
            while self.epoch < config.epochs and not self._done():
                self.train_loader.set_epoch(self.epoch, start_batch=self.step_in_epoch)
                bar = tqdm(total=steps_per_epoch, initial=self.step_in_epoch, desc=f"epoch {self.epoch + 1}",
                           disable=not self.is_main, dynamic_ncols=True)
                for images, labels in self.train_loader:
                    started = time.perf_counter()
                    loss, logits = self._train_step(images, labels)
                    loss_value = loss.item()
                    if not math.isfinite(loss_value):
                        raise NonFiniteLoss(
                            f"loss is {loss_value} at epoch {self.epoch + 1}, step {self.step_in_epoch + 1}; "
                            f"stopped, the last good checkpoint is {self.out / 'checkpoint.pt'}")
                    seconds = time.perf_counter() - started
                    self.elapsed += seconds
                    self.step_in_epoch += 1
                    self.global_step += 1
                    images_per_s = len(labels) * self.world_size / seconds
                    self._log(kind="step", epoch=self.epoch + 1, step=self.global_step, loss=loss_value,
                              top1=accuracy(logits, labels.to(logits.device), 1),
                              top5=accuracy(logits, labels.to(logits.device), 5),
                              lr=self.optimizer.param_groups[0]["lr"], images_per_s=images_per_s,
                              elapsed_s=self.elapsed)
                    bar.set_postfix(loss=f"{loss_value:.3f}", img_s=f"{images_per_s:.1f}")
                    bar.update()
                    if config.checkpoint_every and self.global_step % config.checkpoint_every == 0:
                        self.checkpoint()
                    if interrupted or self._done():
                        break
                bar.close()
                if interrupted:
                    break
                if self.step_in_epoch >= steps_per_epoch:
                    metrics = self._end_epoch()
                if self._done():
                    break
            if interrupted:
                self.checkpoint()
                if self.is_main:
                    print(f"interrupted: saved {self.out / 'checkpoint.pt'}; continue with --resume")
                raise KeyboardInterrupt
            if not metrics:
                metrics = self.evaluate()
            self.checkpoint()
        finally:
            signal.signal(signal.SIGINT, previous_handler)
        if self.is_main:
            where = "CPU, Triton interpreter" if runtime.INTERPRETER and config.backend == "triton" else \
                self.device.type
            size = self.model.input_size
            plot_curves(self.out / "metrics.csv", self.out / "curves.png",
                        f"AlexNet {config.variant} (width {config.width:g}, {size}×{size} input, "
                        f"{self.num_classes} classes), {config.backend} backend, {where}, batch {config.batch_size}",
                        chance=1 / self.num_classes)
        return metrics

    def _done(self) -> bool:
        return bool(self.config.max_steps) and self.global_step >= self.config.max_steps

    def _end_epoch(self) -> dict:
        metrics = self.evaluate()
        self.epoch += 1
        self.step_in_epoch = 0
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(metrics["val_loss"])
        else:
            self.scheduler.step()
        self._log(kind="epoch", epoch=self.epoch, step=self.global_step, lr=self.optimizer.param_groups[0]["lr"],
                  elapsed_s=self.elapsed, **metrics)
        if self.is_main:
            print(f"epoch {self.epoch}: val loss {metrics['val_loss']:.4f}, top-1 {metrics['val_top1']:.3f}, "
                  f"top-5 {metrics['val_top5']:.3f}")
        self.checkpoint()
        return metrics

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Loss, top-1 and top-5 on the validation set (10-crop: softmax averaged over the crops)."""
        self.model.eval()
        total, loss_sum, top1, top5 = 0, 0.0, 0.0, 0.0
        for images, labels in self.val_loader:
            labels = labels.to(self.device)
            crops = images.shape[1] if images.dim() == 5 else 1
            with self._autocast():
                logits = self.model(self._images(images.flatten(0, 1) if crops > 1 else images)).float()
            if crops > 1:
                probabilities = logits.softmax(1).view(len(labels), crops, -1).mean(1)
                logits = probabilities.log()
            loss_sum += self.loss_fn(logits, labels, reduction="sum").item()
            top1 += accuracy(logits, labels, 1) * len(labels)
            top5 += accuracy(logits, labels, 5) * len(labels)
            total += len(labels)
        return dict(val_loss=loss_sum / total, val_top1=top1 / total, val_top5=top5 / total)


def plot_curves(metrics_csv: Path, png: Path, title: str, chance: float) -> None:
    """Training loss per step; training top-1 (running mean over 5 steps) and held-out top-1 per epoch against the
    ``chance`` level; from metrics.csv."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    table = pd.read_csv(metrics_csv)
    steps, epochs = table[table.kind == "step"], table[table.kind == "epoch"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(steps.step, steps.loss, lw=0.8)
    left.set(xlabel="step", ylabel="training loss (cross-entropy)", title="training loss per step")
    right.plot(steps.step, steps.top1.rolling(5, min_periods=1).mean(), lw=0.8,
               label="training top-1 (batch, mean of 5)")
    right.plot(epochs.step, epochs.val_top1, "o", color="tab:red", label="held-out top-1 (end of epoch)")
    for epoch in epochs.itertuples():
        right.annotate(f"{epoch.val_top1:.3f}", (epoch.step, epoch.val_top1), textcoords="offset points",
                       xytext=(-6, -14), ha="right")
    right.axhline(chance, color="grey", ls="--", lw=0.8, label=f"chance ({chance:.3g})")
    right.set(xlabel="step", ylabel="top-1 accuracy", ylim=(0, 1.02), title="accuracy")
    right.legend(loc="lower right", fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(png, dpi=120)
    plt.close(figure)
