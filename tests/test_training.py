"""The training engine: exact resume, checkpoints that survive a NaN or Ctrl-C, data-parallel ranks, the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from alexnet_triton import training
from alexnet_triton.training import NonFiniteLoss, Run, RunConfig

REPO = Path(__file__).resolve().parents[1]
# A tiny run: the scaled-down 2012 net on 67x67 built-in shapes, 4 images a step.
TINY = RunConfig(width=0.125, input_size=67, num_classes=4, batch_size=4, lr=0.01, epochs=3, train_count=12,
                 val_count=4, dropout=0.5, init="kaiming", schedule="step", step_epochs=1)


def parameters(run: Run) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in run.model.named_parameters()}


def saved_parameters(directory: Path) -> dict[str, torch.Tensor]:
    return torch.load(directory / "checkpoint.pt", weights_only=False)["model"]


def test_two_steps_resume_two_steps_equals_four_steps_bitwise(tmp_path):
    """Triton path with dropout and momentum, across an epoch boundary (3 steps an epoch): the resumed run
    restores weights, momentum, schedule, RNG (dropout seeds) and the position in the epoch."""
    straight = Run(replace(TINY, out=str(tmp_path / "straight"), max_steps=4))
    straight.train()
    first = Run(replace(TINY, out=str(tmp_path / "resumed"), max_steps=2))
    first.train()
    second = Run(replace(TINY, out=str(tmp_path / "resumed"), max_steps=4), resume=True)
    assert (second.global_step, second.step_in_epoch) == (2, 2)
    second.train()
    expected, actual = parameters(straight), parameters(second)
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name
    assert second.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    rows = (tmp_path / "resumed" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("kind,epoch,step,loss") and sum(r.startswith("step,") for r in rows) == 4
    assert (tmp_path / "resumed" / "curves.png").stat().st_size > 0


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    run = Run(replace(TINY, backend="torch", out=str(tmp_path), checkpoint_every=1))
    real_step = Run._train_step

    def step_then_poison(self, images, labels):
        if self.global_step == 2:  # the third step sees a NaN weight
            with torch.no_grad():
                self.model.classifier[0].weight[0, 0] = float("nan")
        return real_step(self, images, labels)

    monkeypatch.setattr(Run, "_train_step", step_then_poison)
    with pytest.raises(NonFiniteLoss, match=r"loss is nan at epoch 1, step 3.*checkpoint\.pt"):
        run.train()
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert saved["global_step"] == 2
    assert all(torch.isfinite(t).all() for t in saved["model"].values())


def test_ctrl_c_saves_a_checkpoint_and_stops(tmp_path, monkeypatch):
    run = Run(replace(TINY, backend="torch", out=str(tmp_path)))
    real_step = Run._train_step

    def step_then_interrupt(self, images, labels):
        result = real_step(self, images, labels)
        if self.global_step == 1:
            signal.raise_signal(signal.SIGINT)
        return result

    monkeypatch.setattr(Run, "_train_step", step_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run.train()
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert (saved["global_step"], saved["step_in_epoch"]) == (2, 2)  # the step under way finishes first
    resumed = Run(replace(TINY, backend="torch", out=str(tmp_path)), resume=True)
    assert resumed.global_step == 2


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    """A crash while writing leaves the previous checkpoint intact."""
    path = tmp_path / "checkpoint.pt"
    training.save_atomically({"step": 1}, path)

    def crash(payload, target):
        Path(target).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        training.save_atomically({"step": 2}, path)
    assert torch.load(path, weights_only=False) == {"step": 1}


def test_resume_without_a_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at .*checkpoint\.pt"):
        Run(replace(TINY, out=str(tmp_path)), resume=True)


def _train_cli(*args: str, env: dict | None = None, launcher: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    command = [sys.executable, *launcher, str(REPO / "experiments" / "train.py"), "--width", "0.125",
               "--input-size", "67", "--num-classes", "4", "--train-count", "8", "--val-count", "4",
               "--dropout", "0", "--init", "kaiming", "--lr", "0.01", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def test_two_gloo_ranks_match_one_process_on_the_combined_batch(tmp_path):
    """torchrun with 2 CPU processes (gloo), 2 images each, against 1 process with batch 4: the ranks agree at
    every checkpoint (the engine checks) and rank 0 saves the single process's parameters."""
    _train_cli("--batch-size", "4", "--max-steps", "2", "--out", str(tmp_path / "single"))
    _train_cli("--batch-size", "4", "--max-steps", "2", "--out", str(tmp_path / "ddp"),
               launcher=("-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"),
               env={"OMP_NUM_THREADS": "1"})
    single, ddp = saved_parameters(tmp_path / "single"), saved_parameters(tmp_path / "ddp")
    for name in single:
        torch.testing.assert_close(ddp[name], single[name], atol=1e-5, rtol=1e-5, msg=name)


def test_cli_eval_only_reports_the_checkpoint(tmp_path):
    _train_cli("--backend", "torch", "--batch-size", "4", "--max-steps", "1", "--out", str(tmp_path))
    result = _train_cli("--backend", "torch", "--batch-size", "4", "--eval-only", "--out", str(tmp_path))
    assert "held-out: loss" in result.stdout and "(chance top-1 0.250)" in result.stdout
