"""The held-out evaluation of a run: loss, top-1 and top-5 over the validation loader (10-crop: the softmax
averaged over the crops)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from tqdm import tqdm

from ..data import DataError, ResumableLoader
from .metrics import accuracy


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: ResumableLoader, device: torch.device,
             images_on_device: Callable[[torch.Tensor], torch.Tensor], loss: Callable[..., torch.Tensor], *,
             autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
             before_batch: Callable[[], None] = lambda: None, progress: bool = False) -> dict:
    """val_loss, val_top1, val_top5 of ``model`` (in eval mode) on ``loader``'s batches: images (B, 3, S, S), or
    (B, crops, 3, S, S) with 10-crop, and labels (B,); and val_skipped, the unreadable images it skipped.

    images_on_device: (B', 3, S, S) -> the same on the run's device and layout; loss: cross-entropy with
    ``reduction``; autocast: the forward's context (--amp); before_batch: called before each batch and once
    after the last (a stop signal: it raises). DataError when no image could be read."""
    model.eval()
    total, loss_sum, top1, top5 = 0, 0.0, 0.0, 0.0
    skipped_before = loader.skipped_samples
    bar = tqdm(total=len(loader), desc="evaluating", disable=not progress, leave=False, dynamic_ncols=True)
    for images, labels in loader:
        before_batch()
        labels = labels.to(device)
        crops = images.shape[1] if images.dim() == 5 else 1
        with autocast():
            logits = model(images_on_device(images.flatten(0, 1) if crops > 1 else images)).float()
        if crops > 1:
            probabilities = logits.softmax(1).view(len(labels), crops, -1).mean(1)
            logits = probabilities.log()
        loss_sum += loss(logits, labels, reduction="sum").item()
        top1 += accuracy(logits, labels, 1) * len(labels)
        top5 += accuracy(logits, labels, 5) * len(labels)
        total += len(labels)
        bar.update()
    bar.close()
    before_batch()
    if not total:
        raise DataError(f"none of the {len(loader.dataset)} validation images could be read")
    return dict(val_loss=loss_sum / total, val_top1=top1 / total, val_top5=top5 / total,
                val_skipped=loader.skipped_samples - skipped_before)
