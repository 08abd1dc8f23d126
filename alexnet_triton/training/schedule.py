"""The learning-rate schedule of a run (--schedule): step, cosine or plateau, stepped once per epoch."""

from __future__ import annotations

import math
import re
import warnings

import torch
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

from .config import RunConfig


def step_interval(config: RunConfig) -> int:
    """Epochs between lr / 10 of the step schedule: --step-epochs, or a third of --epochs (rounded up)."""
    return config.step_epochs or math.ceil(config.epochs / 3)


def lr_factor(config: RunConfig, epoch: int) -> float:
    """The step or cosine schedule: the lr of ``epoch`` (from 0) over --lr."""
    if config.schedule == "step":
        return 0.1 ** (epoch // step_interval(config))
    return (1 + math.cos(math.pi * min(epoch, config.epochs) / config.epochs)) / 2


def make_scheduler(optimizer: torch.optim.Optimizer, config: RunConfig) -> LambdaLR | ReduceLROnPlateau:
    """The schedule of ``config`` over ``optimizer``'s lr: the step and cosine ones read the lr of an epoch from
    the config (a resumed run's --epochs included); plateau divides by 10 after --patience stalled epochs."""
    if config.schedule == "plateau":
        return ReduceLROnPlateau(optimizer, factor=0.1, patience=config.patience)
    return LambdaLR(optimizer, lambda epoch: lr_factor(config, epoch))


def follow_config(scheduler: LambdaLR | ReduceLROnPlateau, config: RunConfig) -> None:
    """After a resume: set this epoch's lr from ``config`` (step and cosine: under the resumed --epochs)."""
    if isinstance(scheduler, LambdaLR):
        for group, base_lr in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, strict=True):
            group["lr"] = base_lr * lr_factor(config, scheduler.last_epoch)


def end_epoch(scheduler: LambdaLR | ReduceLROnPlateau, val_loss: float) -> None:
    """Step the schedule at an epoch's end (plateau: on its held-out ``val_loss``)."""
    with warnings.catch_warnings():  # a run resumed at an epoch's end steps the schedule before any SGD step
        warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()` before"))
        if isinstance(scheduler, ReduceLROnPlateau):
            scheduler.step(val_loss)
        else:
            scheduler.step()


def describe(config: RunConfig) -> str:
    """The schedule in epochs, as the first line says it: "/10 every 30 epochs", ..."""
    if config.schedule == "step":
        return f"/10 every {step_interval(config)} epochs"
    if config.schedule == "plateau":
        return f"/10 after {config.patience} epochs without improvement"
    if config.epochs == 1:
        return "over 1 epoch: constant"
    return (f"over {config.epochs} epochs, {config.lr:.2g} in the first ... "
            f"{config.lr * lr_factor(config, config.epochs - 1):.2g} in the last")
