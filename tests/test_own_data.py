"""A user's own images on a CPU (issue 23): the crop keeps the paper's share of the image at any input size, the
lr schedule fits the run's length, the augmentations are options recorded in the checkpoint, and a real dataset
(scikit-learn's handwritten digits as an 80x80 PNG ImageFolder tree) is learnt by both backends, step for step.
The full run (held-out top-1 >= 0.8 on both backends): reports/training/own_data/."""

from __future__ import annotations

import csv
from dataclasses import replace

import numpy as np
import pytest
import torch
import write_digits
from PIL import Image

from alexnet_triton.checkpoint import read_checkpoint
from alexnet_triton.data import IMAGENET_MEAN, IMAGENET_STD, DataError, SampleKey, make_loaders, resize_for
from alexnet_triton.parity import assert_close
from alexnet_triton.training import Run, RunConfig

# The CPU preset with --data DIR --hflip 0 --lighting 0: the digits' command (README, reports/training/own_data/).
DIGITS = RunConfig.preset("cpu", hflip=0.0, lighting=0.0)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    assert write_digits.write_digits(root) == (1437, 360)
    for split, count in (("train", 1437), ("val", 360)):
        classes = sorted(path.name for path in (root / split).iterdir())
        assert classes == [str(digit) for digit in range(10)]
        assert sum(len(list((root / split / name).glob("*.png"))) for name in classes) == count
    with Image.open(next((root / "val" / "3").glob("*.png"))) as image:
        assert image.size == (80, 80)
    return root


def _ramp_tree(root, side: int = 200) -> None:
    """root/{train,val}/ramp/0.png: a square RGB image whose red channel grows left to right and green top to
    bottom, linearly from the first pixel's centre to the last one's (0 ... 1 over the image's full side)."""
    ramp = (np.arange(side) + 0.5) / side
    pixels = np.stack([np.tile(ramp, (side, 1)), np.tile(ramp[:, None], (1, side)), np.zeros((side, side))], -1)
    for split in ("train", "val"):
        (root / split / "ramp").mkdir(parents=True)
        Image.fromarray(np.round(pixels * 255).astype(np.uint8)).save(root / split / "ramp" / "0.png")


def _covered_share(crop: torch.Tensor) -> float:
    """crop: [3, S, S] normalised, of a ``_ramp_tree`` image -> the share of the image's area that it covers."""
    pixels = crop * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    size = crop.shape[-1]
    width = abs(pixels[0, :, -1] - pixels[0, :, 0]).mean().item() * size / (size - 1)  # (or mirrored)
    height = (pixels[1, -1, :] - pixels[1, 0, :]).mean().item() * size / (size - 1)
    return width * height


@pytest.mark.parametrize("variant, input_size", [("2012", 67), ("2012", 99), ("2012", 227), ("torchvision", 64),
                                                 ("torchvision", 131)])
def test_the_crops_cover_the_papers_share_of_the_image_at_any_input_size(tmp_path, variant, input_size):
    """A run's training crops (random) and evaluation crop (centre) cover (227/256)^2 of a square image for the
    2012 net, (224/256)^2 for torchvision's, whatever --input-size (the resize follows it); --resize overrides."""
    _ramp_tree(tmp_path / "data")
    config = RunConfig.preset("cpu", variant=variant, input_size=input_size, data=str(tmp_path / "data"),
                              batch_size=1, backend="torch", out=str(tmp_path / "run"))
    run = Run(config)
    full = {"2012": 227, "torchvision": 224}[variant]
    intended = (full / 256) ** 2
    crops = [run.train_loader.dataset[SampleKey(epoch, 0)][0] for epoch in range(4)] + [run.val_loader.dataset[0][0]]
    for crop in crops:
        assert crop.shape == (3, input_size, input_size)
        # Tolerance: the resize target is rounded to a pixel, the ramp to 1/255.
        assert _covered_share(crop) == pytest.approx(intended, abs=2 / input_size + 0.01)
    resized = Run(replace(config, resize=2 * input_size, out=str(tmp_path / "resized")))
    for crop in (resized.train_loader.dataset[SampleKey(0, 0)][0], resized.val_loader.dataset[0][0]):
        assert _covered_share(crop) == pytest.approx(1 / 4, abs=2 / input_size + 0.01)


def test_resize_for_keeps_the_papers_sizes():
    assert (resize_for(224), resize_for(227, 227), resize_for(67, 227), resize_for(112)) == (256, 256, 76, 128)


def test_resize_without_a_data_directory_is_refused():
    with pytest.raises(DataError, match="resize needs a data directory"):
        make_loaders(None, input_size=32, batch_size=2, resize=40, train_count=4, val_count=2)


def _lrs_per_epoch(directory) -> list[float]:
    """The lr of each epoch's steps, from metrics.csv (one value per epoch)."""
    with open(directory / "metrics.csv", newline="") as f:
        rows = [row for row in csv.DictReader(f) if row["kind"] == "step"]
    per_epoch = {}
    for row in rows:
        per_epoch.setdefault(int(row["epoch"]), set()).add(float(row["lr"]))
    assert all(len(values) == 1 for values in per_epoch.values())
    return [values.pop() for _, values in sorted(per_epoch.items())]


TINY = RunConfig.preset("cpu", num_classes=2, train_count=8, val_count=4, batch_size=4, lr=0.01, backend="torch")


@pytest.mark.parametrize("schedule, epochs, step_epochs, factors, shown", [
    ("cosine", 4, None, [1, 0.8535534, 0.5, 0.1464466], "lr 0.01 (cosine: over 4 epochs, 0.01 in the first ... "
                                                         "0.0015 in the last)"),
    ("step", 6, None, [1, 1, 0.1, 0.1, 0.01, 0.01], "lr 0.01 (step: /10 every 2 epochs)"),
    ("step", 3, 1, [1, 0.1, 0.01], "lr 0.01 (step: /10 every 1 epochs)"),
    ("cosine", 1, None, [1], "lr 0.01 (cosine: over 1 epoch: constant)"),
])
def test_the_schedule_fits_the_runs_length(tmp_path, schedule, epochs, step_epochs, factors, shown):
    """Cosine over --epochs; the step schedule's interval a third of --epochs unless --step-epochs; the first line
    says it in epochs."""
    run = Run(replace(TINY, schedule=schedule, epochs=epochs, step_epochs=step_epochs, out=str(tmp_path)))
    assert shown in run.describe()
    run.train()
    assert _lrs_per_epoch(tmp_path) == pytest.approx([0.01 * factor for factor in factors], rel=1e-5)


def test_a_resumed_cosine_run_with_more_epochs_follows_the_longer_curve(tmp_path):
    Run(replace(TINY, epochs=2, out=str(tmp_path))).train()
    resumed = Run(replace(TINY, epochs=4, out=str(tmp_path)), read_checkpoint(tmp_path, "--resume"))
    resumed.train()
    assert _lrs_per_epoch(tmp_path) == pytest.approx([0.01, 0.005, 0.005, 0.0014644661], rel=1e-5)


def test_the_cpu_preset_uses_the_cosine_schedule():
    assert (RunConfig.preset("cpu").schedule, RunConfig.preset("gpu").schedule) == ("cosine", "plateau")


def test_augmentation_options_reach_the_transform_and_the_checkpoint(tmp_path):
    _ramp_tree(tmp_path / "data")
    config = RunConfig.preset("cpu", data=str(tmp_path / "data"), batch_size=1, backend="torch", max_steps=1,
                              hflip=0.25, lighting=0.05, resize=90, out=str(tmp_path / "run"))
    run = Run(config)
    transform = run.train_loader.dataset.transform
    assert (transform.hflip, transform.lighting, transform.resize, run.val_loader.dataset.transform.resize) == \
        (0.25, 0.05, 90, 90)
    assert "shorter side 90, flip 0.25, lighting 0.05" in run.describe()
    run.train()
    saved = read_checkpoint(tmp_path / "run", "--resume")["config"]
    assert (saved["hflip"], saved["lighting"], saved["resize"]) == (0.25, 0.05, 90)


# ---- the digits, learnt by both backends ----

def _step_losses(directory) -> torch.Tensor:
    with open(directory / "metrics.csv", newline="") as f:
        return torch.tensor([float(row["loss"]) for row in csv.DictReader(f) if row["kind"] == "step"])


def test_both_backends_learn_the_digits_step_for_step(digits, tmp_path):
    """The CPU preset with --data on the digits, 32 steps of 16 (of 89 in an epoch): the Triton and PyTorch
    per-step losses and held-out losses agree within the fp32 tolerance, and both are far above chance (0.1) on
    the 360 held-out digits (measured with PyTorch: 0.478; the full run: reports/training/own_data/)."""
    results = {}
    for backend in ("torch", "triton"):
        config = replace(DIGITS, data=str(digits), backend=backend, max_steps=32, out=str(tmp_path / backend))
        results[backend] = Run(config).train()
    assert_close(_step_losses(tmp_path / "triton"), _step_losses(tmp_path / "torch"), "per-step training loss")
    assert_close(torch.tensor(results["triton"]["val_loss"]), torch.tensor(results["torch"]["val_loss"]),
                 "held-out loss")
    for backend, result in results.items():
        assert result["val_top1"] >= 0.35, backend


def test_write_digits_refuses_a_directory_that_holds_a_split(tmp_path, capsys):
    (tmp_path / "val").mkdir()
    assert write_digits.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'val'} exists; choose an empty directory\n"
    assert write_digits.main([str(tmp_path / "new"), "--size", "4"]) == 2
    assert "--size 4: must be at least 8" in capsys.readouterr().err
