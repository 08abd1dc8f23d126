"""A run's metrics: ``metrics.csv`` (one row per step, per epoch and a final one with the held-out result),
``result.json``, top-k accuracy and the held-out line train.py prints."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import torch

from ..checkpoint import trim_metrics, write_atomically

METRIC_COLUMNS = ["kind", "epoch", "step", "loss", "top1", "top5", "lr", "images_per_s", "val_loss", "val_top1",
                  "val_top5", "skipped", "elapsed_s"]
HELD_OUT = ("val_loss", "val_top1", "val_top5")  # the held-out metrics of an evaluation, in the rows and result


def accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """logits (N, C), labels (N,) int64 on the same device -> the fraction of the N rows whose label is among
    their min(k, C) largest logits."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return (top == labels[:, None]).any(dim=1).float().mean().item()


def held_out_line(metrics: dict, num_classes: int, skipped: int | None = None,
                  training_s: float | None = None) -> str:
    """The held-out result as train.py prints it (from the evaluation's metrics or result.json); with the
    training run's unreadable images and time when given."""
    line = (f"held-out: loss {metrics['val_loss']:.4f}, top-1 {metrics['val_top1']:.3f}, "
            f"top-5 {metrics['val_top5']:.3f} (chance top-1 {1 / num_classes:.3f})")
    if training_s is not None:
        line += f"; {skipped} unreadable images skipped; training time {training_s:.0f} s"
    return line


class MetricsLog:
    """``directory``/metrics.csv, appended one row (the first with the header) per write call; floats to 6
    significant digits. ``write`` False (ranks other than 0): every call does nothing."""

    def __init__(self, directory: Path, write: bool):
        self.path, self.write = directory / "metrics.csv", write

    def log(self, kind: str, **row) -> None:
        """One row: ``kind`` "step", "epoch" or "final", and any of METRIC_COLUMNS' values."""
        if not self.write:
            return
        text = io.StringIO()
        writer = csv.DictWriter(text, METRIC_COLUMNS)
        if not self.path.exists():
            writer.writeheader()
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in dict(kind=kind, **row).items()})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", newline="") as f:  # a row cut short all the same: trim_metrics drops it
            f.write(text.getvalue())

    def resume(self, global_step: int, epoch: int, finished: bool) -> None:
        """Drop the rows logged after a checkpoint at ``global_step`` (``checkpoint.trim_metrics``): the resumed
        run logs them again."""
        if self.write:
            trim_metrics(self.path, global_step, epoch, finished)

    def write_result(self, summary: dict) -> None:
        """``summary`` as result.json beside metrics.csv, written atomically."""
        if self.write:
            write_atomically(self.path.with_name("result.json"),
                             lambda temporary: temporary.write_text(json.dumps(summary, indent=2) + "\n"))
