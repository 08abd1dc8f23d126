"""The curves of a run, from its metrics.csv: curves.png (matplotlib, the ``study`` extra; without it, skipped)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..checkpoint import write_atomically


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
