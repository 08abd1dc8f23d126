"""One training run, ``Run``: its parts built once from a ``RunConfig`` (``parts``), then a plain loop.

A run directory holds ``checkpoint.pt`` (the config, the versions that wrote it and the whole state; with the one
before it: ``alexnet_triton.checkpoint``), ``metrics.csv`` (one row per step, per epoch and a final one with the
held-out result), ``result.json`` (the final result) and, where matplotlib is installed, ``curves.png``. A
checkpoint restores model, optimiser, schedule, every rank's RNG and the position inside the epoch, so an
interrupted run continues exactly where it stopped (on the CPU: bitwise). A stop signal while training or
evaluating saves a checkpoint and raises KeyboardInterrupt(its number) (``signals``); a non-finite loss stops the
run. A user mistake raises ``ConfigError`` (or ``data.DataError``). The ranks: ``distributed``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from ..checkpoint import NEWEST, PREVIOUS
from ..data import ResumableLoader
from ..graphs import GraphedStep, fallback_reason
from ..model import AlexNet
from ..precision import AMP_DTYPES, forward_context
from . import schedule
from .backends import BACKEND_PARTS
from .checkpointer import Checkpointer, Progress, versions
from .config import ConfigError, RunConfig
from .distributed import Layout
from .evaluation import evaluate
from .metrics import HELD_OUT, MetricsLog, accuracy
from .parts import build_data, build_net, build_optimizer, take_images_in_depth_form
from .plots import plot_curves
from .signals import StopSignals

RUN_FILES = (NEWEST, PREVIOUS, "metrics.csv", "curves.png", "result.json")


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint (if any)."""


class Run:
    """One training run; ``train()`` or ``evaluate()``. ``checkpoint``: a state from ``read_checkpoint`` to
    continue from (its config must be ``config``, up to the resumable fields)."""

    def __init__(self, config: RunConfig, checkpoint: dict | None = None):
        if not config.out:
            raise ConfigError("the run needs a directory (RunConfig.out, --out)")
        self.config, self.out = config, Path(config.out)
        self.layout = Layout.start(config)
        if config.amp != "off" and self.layout.device.type != "cuda":
            raise ConfigError(f"--amp {config.amp} needs a GPU; this run is on the {self.layout.device.type}")
        self.backend = BACKEND_PARTS[config.backend]
        self.loss_fn, self.eval_loss_fn = self.backend.loss(config.label_smoothing), self.backend.cross_entropy
        self.train_loader, self.val_loader, self.num_classes, self.resize = build_data(config, self.layout)
        self.steps_per_epoch = self.train_loader.steps_per_epoch
        self.model, self.network, self.parameter_count = build_net(config, self.layout, self.num_classes)
        take_images_in_depth_form(config, self.model, self.train_loader, self.val_loader)
        self.optimizer, self.scheduler, self.scaler = build_optimizer(config, self.backend, self.model,
                                                                      self.layout.world_size)
        reason = (fallback_reason(self.layout.device, self.optimizer, scaler=self.scaler,
                                  processes=self.layout.world_size) if config.cuda_graphs else "--no-cuda-graphs")
        # (the step looked up at each call: a test may patch Run._train_step after the Run exists)
        self.train_step = GraphedStep(lambda images, labels: self._train_step(images, labels), self.optimizer,
                                      reason, announce=config.cuda_graphs and self.is_main)
        self.progress = Progress()
        self.metrics = MetricsLog(self.out, write=self.is_main)
        self.signals = StopSignals(self.layout.any_rank)
        self.checkpointer = Checkpointer(self.out, config, self.layout, self.model, self.optimizer, self.scheduler,
                                         self.scaler, self.progress)
        self.last_evaluation: tuple[int, dict] | None = None  # (step, metrics) of the last end-of-epoch one
        self.reported_unreadable: set[str] = set()
        self._skipped_counted = 0  # the loaders' skipped samples already in progress.skipped
        if checkpoint is not None:
            self.checkpointer.restore(checkpoint)
            schedule.follow_config(self.scheduler, config)

    @property
    def is_main(self) -> bool:
        return self.layout.is_main

    @property
    def total_steps(self) -> int:
        """Steps the run takes in all (``max_steps`` or every epoch's)."""
        all_epochs = self.config.epochs * self.steps_per_epoch
        return min(self.config.max_steps, all_epochs) if self.config.max_steps else all_epochs

    @property
    def finished(self) -> bool:
        return self.progress.result is not None and self.progress.global_step >= self.total_steps

    def describe(self) -> str:
        """One line: the effective net, data, batch, lr schedule, device and execution mode."""
        config, size = self.config, self.model.input_size
        if config.data is not None:
            data = (f"{config.data} ({len(self.train_loader.dataset)} train / {len(self.val_loader.dataset)} val; "
                    f"shorter side {self.resize}, flip {config.hflip:g}, lighting {config.lighting:g})")
        else:
            data = (f"{'synthetic tensors' if config.synthetic else 'built-in shapes'} "
                    f"({config.train_count} train / {config.val_count} val)")
        steps = f", max {config.max_steps} steps" if config.max_steps else ""
        ranks = f" x {self.layout.world_size} ranks" if self.layout.world_size > 1 else ""
        form = ", conv1's images in space-to-depth form (the loaders')" if isinstance(
            self.model, AlexNet) and self.model.depth_form else ""
        return (f"net: AlexNet {config.variant} (width {config.width:g}, {size}x{size} input, {self.num_classes} "
                f"classes, {self.parameter_count / 1e6:.2f}M parameters, dropout {config.dropout:g}); "
                f"data: {data}; batch {config.batch_size}, lr {config.lr:g} ({config.schedule}: "
                f"{schedule.describe(config)}), {config.epochs} epochs{steps}; device: {self.layout.device.type}"
                f"{ranks}, {self.backend.mode()}, amp {config.amp}{form}"
                f"{', SGD fused into the linear weight gradients' if config.fused_update else ''}")

    def _images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S), or their space-to-depth form (``take_images_in_depth_form``), on the device, in the run's
        layout (in --amp's dtype: the loaders cast them)."""
        images = images.to(self.layout.device, non_blocking=True)
        return images.contiguous(memory_format=torch.channels_last) if self.config.channels_last else images

    def _autocast(self):
        """With --amp: torch.autocast to its dtype, on either backend (alexnet_triton.precision); else nothing."""
        return forward_context(self.layout.device.type, AMP_DTYPES[self.config.amp])

    def _lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def _count_skipped(self) -> int:
        """The unreadable images the loaders skipped since the last count, added to progress.skipped (the one
        place that changes it, besides a restore); returns them."""
        skipped = self.train_loader.skipped_samples + self.val_loader.skipped_samples
        new, self._skipped_counted = skipped - self._skipped_counted, skipped
        self.progress.skipped += new
        return new

    def _report_unreadable(self, loader: ResumableLoader) -> None:
        """Print each unreadable image once, with its path and the reason (rank 0)."""
        for path, reason in loader.unreadable.items():
            if path not in self.reported_unreadable and self.is_main:
                tqdm.write(f"skipped unreadable image {path}: {reason}")
            self.reported_unreadable.add(path)

    # ---------------------------------------------------------------- the loop
    def train(self) -> dict:
        """Train until the last epoch (or max_steps); returns the final held-out metrics (also in metrics.csv,
        result.json and the plot). A stop signal: saves a checkpoint and raises KeyboardInterrupt(its number)."""
        progress = self.progress
        if self.checkpointer.saved_step is not None:  # rows logged after the checkpoint come again
            self.metrics.resume(progress.global_step, progress.epoch, progress.result is not None)
        with self.signals:
            try:
                self._train_epochs()
                self.signals.stop_if_received()
                progress.result = self._final_result()
                self.checkpointer.save()
            except KeyboardInterrupt:
                self.checkpointer.save()
                if self.is_main:
                    print(f"interrupted{self.signals.describe()}: saved {self.out / NEWEST} (step "
                          f"{progress.global_step}); continue with --resume --out {self.out}", flush=True)
                raise
        if self.is_main:
            self._write_result()
        return progress.result

    def _train_epochs(self) -> None:
        """Epoch after epoch until total_steps (first closing an epoch whose steps a resumed run had done)."""
        progress, first = self.progress, True
        while progress.global_step < self.total_steps or progress.step_in_epoch >= self.steps_per_epoch:
            self.train_loader.set_epoch(progress.epoch, start_batch=progress.step_in_epoch)
            with tqdm(total=self.steps_per_epoch, initial=progress.step_in_epoch, desc=f"epoch {progress.epoch + 1}",
                      disable=not self.is_main, dynamic_ncols=True) as bar:
                for images, labels in self.train_loader:
                    self._step(images, labels, bar, estimate=first)
                    first = False
                    if self.config.checkpoint_every and progress.global_step % self.config.checkpoint_every == 0:
                        self.checkpointer.save()
                    if self.signals.stopping() or progress.global_step >= self.total_steps:
                        break
            trained_skipped = self._count_skipped()
            self.signals.stop_if_received()
            if progress.step_in_epoch >= self.steps_per_epoch:
                self._end_epoch(trained_skipped)

    def _step(self, images: torch.Tensor, labels: torch.Tensor, bar: tqdm, estimate: bool) -> None:
        """One SGD step on images (B, 3, S, S), labels (B,) and its metrics row; NonFiniteLoss for a NaN or
        infinite loss. ``estimate``: print the run's remaining time from this step's."""
        progress, started = self.progress, time.perf_counter()
        loss, logits = self.train_step(images, labels)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise self._non_finite(loss_value)
        seconds = time.perf_counter() - started
        progress.elapsed += seconds
        progress.step_in_epoch += 1
        progress.global_step += 1
        if estimate and self.is_main and progress.global_step < self.total_steps:
            bar.write(self._estimate(seconds))
        images_per_s = len(labels) * self.layout.data_ranks / seconds
        labels = labels.to(logits.device)
        self.metrics.log("step", epoch=progress.epoch + 1, step=progress.global_step, loss=loss_value,
                         top1=accuracy(logits, labels, 1), top5=accuracy(logits, labels, 5), lr=self._lr(),
                         images_per_s=images_per_s, elapsed_s=progress.elapsed)
        self._report_unreadable(self.train_loader)
        bar.set_postfix(loss=f"{loss_value:.3f}", img_s=f"{images_per_s:.1f}")
        bar.update()

    def _train_step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss (), logits (B, classes)), detached, of one SGD step on images (B, 3, S, S), labels (B,)."""
        self.network.train()
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            logits = self.network(self._images(images))
        loss = self.loss_fn(logits.float() if self.backend.float_logits else logits, labels.to(self.layout.device))
        if self.scaler:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return loss.detach(), logits.detach()

    def _non_finite(self, loss_value: float) -> NonFiniteLoss:
        progress = self.progress
        where = f"loss is {loss_value} at epoch {progress.epoch + 1}, step {progress.step_in_epoch + 1}; stopped"
        if self.checkpointer.saved_step is None:
            return NonFiniteLoss(f"{where} before the first checkpoint: nothing was saved")
        return NonFiniteLoss(f"{where}; the last good checkpoint is {self.out / NEWEST} "
                             f"(step {self.checkpointer.saved_step})")

    def _estimate(self, seconds: float) -> str:
        remaining = self.total_steps - self.progress.global_step
        total = seconds * remaining
        hours, minutes = divmod(round(total / 60), 60)
        duration = f"{hours} h {minutes} min" if hours else f"{minutes} min" if minutes else f"{total:.0f} s"
        return (f"first step {seconds:.2f} s: the {remaining} remaining steps take about {duration}, plus "
                f"evaluation")

    def _end_epoch(self, trained_skipped: int) -> None:
        """Evaluate, step the schedule, log the epoch's row (its unreadable images: ``trained_skipped`` and the
        evaluation's), checkpoint."""
        progress, metrics = self.progress, self.evaluate()
        skipped = trained_skipped + self._count_skipped()
        self.last_evaluation = (progress.global_step, metrics)
        progress.epoch += 1
        progress.step_in_epoch = 0
        schedule.end_epoch(self.scheduler, metrics["val_loss"])
        self.metrics.log("epoch", epoch=progress.epoch, step=progress.global_step, lr=self._lr(),
                         elapsed_s=progress.elapsed, skipped=skipped, **{name: metrics[name] for name in HELD_OUT})
        if self.is_main:
            print(f"epoch {progress.epoch}: val loss {metrics['val_loss']:.4f}, top-1 {metrics['val_top1']:.3f}, "
                  f"top-5 {metrics['val_top5']:.3f}")
        self.checkpointer.save()

    def _final_result(self) -> dict:
        """The held-out metrics where the run stopped (the last epoch's, when it stopped there), logged as the
        "final" row of metrics.csv."""
        progress = self.progress
        if self.last_evaluation is not None and self.last_evaluation[0] == progress.global_step:
            metrics = self.last_evaluation[1]
        else:
            metrics = self.evaluate()
            self._count_skipped()
        metrics = {name: metrics[name] for name in HELD_OUT}
        self.metrics.log("final", epoch=progress.epoch + (progress.step_in_epoch > 0), step=progress.global_step,
                         lr=self._lr(), elapsed_s=progress.elapsed, skipped=progress.skipped, **metrics)
        return metrics

    def evaluate(self) -> dict:
        """val_loss, val_top1, val_top5 and val_skipped of the net now (``evaluation.evaluate``); a stop signal
        stops it between batches."""
        try:
            return evaluate(self.model, self.val_loader, self.layout.device, self._images, self.eval_loss_fn,
                            autocast=self._autocast, before_batch=self.signals.stop_if_received,
                            progress=self.is_main)
        finally:
            self._report_unreadable(self.val_loader)

    def _write_result(self) -> None:
        """result.json (the final held-out metrics, where the run stopped, the config) and curves.png."""
        config, progress = self.config, self.progress
        self.metrics.write_result(dict(progress.result, epoch=progress.epoch, step_in_epoch=progress.step_in_epoch,
                                       step=progress.global_step, skipped=progress.skipped,
                                       training_s=progress.elapsed, num_classes=self.num_classes,
                                       parameters=self.parameter_count, config=asdict(config), versions=versions()))
        where = "CPU, Triton interpreter" if self.backend.interpreted() else self.layout.device.type
        size = self.model.input_size
        plot_curves(self.metrics.path, self.out / "curves.png",
                    f"AlexNet {config.variant} (width {config.width:g}, {size}×{size} input, "
                    f"{self.num_classes} classes), {config.backend} backend, {where}, batch {config.batch_size}",
                    chance=1 / self.num_classes)
