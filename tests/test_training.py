"""The training engine: exact resume, checkpoints that survive a NaN or Ctrl-C, the final result, data-parallel
ranks (the command line: tests/test_train_cli.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from alexnet_triton import checkpoint, ops
from alexnet_triton.checkpoint import CheckpointError, read_checkpoint
from alexnet_triton.training import BACKEND_PARTS, ConfigError, NonFiniteLoss, Run, RunConfig

# A tiny run: the CPU preset's scaled-down 2012 net on 67x67 built-in shapes, 4 images a step, 3 steps an epoch.
TINY = RunConfig.preset("cpu", num_classes=4, batch_size=4, lr=0.01, epochs=3, train_count=12, val_count=4,
                        dropout=0.5)


def resumed(config: RunConfig) -> Run:
    return Run(config, read_checkpoint(config.out, "--resume"))


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
    second = resumed(replace(TINY, out=str(tmp_path / "resumed"), max_steps=4))
    assert (second.progress.global_step, second.progress.step_in_epoch) == (2, 2)
    second.train()
    expected, actual = parameters(straight), parameters(second)
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name
    # the CPU preset's cosine over 3 epochs, in epoch 2: 0.01 x (1 + cos(pi / 3)) / 2
    assert second.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"] == pytest.approx(7.5e-3)
    rows = (tmp_path / "resumed" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("kind,epoch,step,loss") and sum(r.startswith("step,") for r in rows) == 4
    assert (tmp_path / "resumed" / "curves.png").stat().st_size > 0


def test_the_checkpoint_holds_the_config_and_versions(tmp_path):
    config = replace(TINY, backend="torch", out=str(tmp_path), max_steps=1)
    Run(config).train()
    saved = read_checkpoint(tmp_path, "--resume")
    assert RunConfig(**saved["config"]) == config
    assert saved["versions"]["torch"] == torch.__version__ and "triton" in saved["versions"]
    assert saved["versions"]["alexnet_triton"]


def test_stopped_mid_epoch_the_final_result_is_in_metrics_and_result_json(tmp_path, capsys):
    run = Run(replace(TINY, backend="torch", out=str(tmp_path), max_steps=2))  # 3 steps an epoch
    metrics = run.train()
    assert "s: the 1 remaining steps take about " in capsys.readouterr().out  # the estimate after step 1
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert not any(r.startswith("epoch,") for r in rows)
    final = [r for r in rows if r.startswith("final,")]
    assert len(final) == 1 and final[0].startswith("final,1,2,")
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["val_top1"] == metrics["val_top1"] and result["step"] == 2 and result["skipped"] == 0
    assert result["config"] == asdict(run.config) and (tmp_path / "curves.png").stat().st_size > 0
    again = resumed(run.config)
    assert again.finished and again.progress.result == metrics
    assert not resumed(replace(run.config, max_steps=3)).finished


def test_non_finite_loss_before_any_checkpoint_says_nothing_was_saved(tmp_path, monkeypatch):
    run = Run(replace(TINY, backend="torch", out=str(tmp_path)))
    monkeypatch.setattr(run, "loss_fn", lambda logits, labels: logits.sum() * float("nan"))
    with pytest.raises(NonFiniteLoss, match=r"loss is nan at epoch 1, step 1; stopped before the first checkpoint: "
                                            r"nothing was saved"):
        run.train()
    assert not (tmp_path / "checkpoint.pt").exists()


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    run = Run(replace(TINY, backend="torch", out=str(tmp_path), checkpoint_every=1))
    real_step = Run._train_step

    def step_then_poison(self, images, labels):
        if self.progress.global_step == 2:  # the third step sees a NaN weight
            with torch.no_grad():
                self.model.classifier[0].weight[0, 0] = float("nan")
        return real_step(self, images, labels)

    monkeypatch.setattr(Run, "_train_step", step_then_poison)
    with pytest.raises(NonFiniteLoss, match=r"loss is nan at epoch 1, step 3.*checkpoint\.pt \(step 2\)"):
        run.train()
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert saved["global_step"] == 2
    assert all(torch.isfinite(t).all() for t in saved["model"].values())


def test_ctrl_c_saves_a_checkpoint_and_stops(tmp_path, monkeypatch):
    run = Run(replace(TINY, backend="torch", out=str(tmp_path)))
    real_step = Run._train_step

    def step_then_interrupt(self, images, labels):
        result = real_step(self, images, labels)
        if self.progress.global_step == 1:
            signal.raise_signal(signal.SIGINT)
        return result

    monkeypatch.setattr(Run, "_train_step", step_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run.train()
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert (saved["global_step"], saved["step_in_epoch"]) == (2, 2)  # the step under way finishes first
    assert resumed(replace(TINY, backend="torch", out=str(tmp_path))).progress.global_step == 2


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    """A crash while writing leaves the checkpoints as they were."""
    state = {key: torch.zeros(2) for key in checkpoint.KEYS}
    checkpoint.save(state, tmp_path)

    def crash(payload, target):
        Path(target).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(dict(state, global_step=torch.ones(2)), tmp_path)
    assert torch.equal(checkpoint.load(tmp_path / "checkpoint.pt")["global_step"], torch.zeros(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temporary file left


def test_resume_without_a_checkpoint_names_the_flag_and_path(tmp_path):
    with pytest.raises(CheckpointError, match=r"--eval-only: no checkpoint at .*checkpoint\.pt"):
        read_checkpoint(tmp_path, "--eval-only")


@pytest.mark.parametrize("backend", BACKEND_PARTS)
def test_label_smoothing_reaches_the_loss(backend):
    """Both backends' training loss: F.cross_entropy's label smoothing (the Triton one in ops.cross_entropy)."""
    logits, labels = torch.randn(4, 3), torch.tensor([0, 2, 1, 0])
    expected = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1)
    torch.testing.assert_close(BACKEND_PARTS[backend].loss(0.1)(logits, labels), expected)


@pytest.mark.parametrize("field, value, message", [("batch_size", 0, "--batch-size 0: must be at least 1"),
                                                   ("dropout", 1.0, "--dropout 1.0: must be below 1"),
                                                   ("schedule", "linear", "--schedule linear: expected one of")])
def test_config_check_names_the_flag_and_value(field, value, message):
    with pytest.raises(ConfigError, match=message):
        replace(TINY, **{field: value}).check()


def _two_rank_worker(rank: int, port: int, directory: Path) -> None:
    """One of 2 gloo ranks: 4 steps straight; 2 steps, resume, 2 steps; then a dropout mask (files in directory)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")
    torch.set_num_threads(1)
    config = replace(TINY, backend="torch")  # dropout 0.5 on fc6 and fc7
    Run(replace(config, out=str(directory / "straight"), max_steps=4)).train()
    Run(replace(config, out=str(directory / "resumed"), max_steps=2)).train()
    resumed(replace(config, out=str(directory / "resumed"), max_steps=4)).train()
    torch.save(ops.dropout(torch.ones(1024), 0.5), directory / f"mask{rank}.pt")
    dist.destroy_process_group()


def test_two_ranks_draw_different_dropout_masks_and_resume_bitwise(tmp_path):
    """torch.distributed on the CPU (gloo, 2 spawned processes): each rank's dropout seeds come from (seed, rank),
    and every rank's RNG state is in the checkpoint, so 2 steps + resume + 2 steps equal 4 steps bitwise."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_two_rank_worker, args=(port, tmp_path), nprocs=2)
    masks = [torch.load(tmp_path / f"mask{rank}.pt") for rank in (0, 1)]
    assert not torch.equal(masks[0], masks[1])
    straight, again = (saved_parameters(tmp_path / name) for name in ("straight", "resumed"))
    for name in straight:
        assert torch.equal(again[name], straight[name]), name


def test_unreadable_images_are_counted_per_epoch_and_reported_once(tmp_path, capsys):
    for split, count in (("train", 4), ("val", 1)):
        for name in ("cat", "dog"):
            (tmp_path / "d" / split / name).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (40, 30), (i * 60, 0, 0)).save(tmp_path / "d" / split / name / f"{i}.JPEG")
    broken = [tmp_path / "d" / "train" / "cat" / "broken.JPEG", tmp_path / "d" / "val" / "dog" / "broken.JPEG"]
    for path in broken:
        path.write_bytes(b"not a jpeg")
    run = Run(replace(TINY, backend="torch", data=str(tmp_path / "d"), num_classes=None, batch_size=3, epochs=2,
                      out=str(tmp_path / "run")))  # 9 training files: 3 steps an epoch
    run.train()
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("skipped unreadable image")]
    assert [line.split(":")[0] for line in printed] == [f"skipped unreadable image {path}" for path in broken]
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    skipped = {row.split(",")[0] + row.split(",")[1]: row.split(",")[-2] for row in rows[1:] if
               not row.startswith("step,")}
    assert skipped == {"epoch1": "2", "epoch2": "2", "final2": "4"}  # 1 training + 1 validation image each epoch
    assert run.progress.skipped == 4 and json.loads((tmp_path / "run" / "result.json").read_text())["skipped"] == 4
