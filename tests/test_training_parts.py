"""Each part of the training engine alone (alexnet_triton/training/): config, backends, layout, schedule, metrics
log, stop signals, checkpointer, evaluation, and the loader's epoch length (whole runs: tests/test_training.py)."""

from __future__ import annotations

import csv
import random
import signal
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from alexnet_triton import architecture, ops, optim
from alexnet_triton.checkpoint import CheckpointError, read_checkpoint
from alexnet_triton.data import DataError, ResumableLoader, SampleKey, Unreadable
from alexnet_triton.model import BACKENDS, AlexNet
from alexnet_triton.training import BACKEND_PARTS, ConfigError, RunConfig, accuracy, parts, schedule
from alexnet_triton.training.checkpointer import Checkpointer, Progress
from alexnet_triton.training.distributed import Layout
from alexnet_triton.training.evaluation import evaluate
from alexnet_triton.training.metrics import METRIC_COLUMNS, MetricsLog
from alexnet_triton.training.signals import StopSignals

ONE_PROCESS = Layout(rank=0, world_size=1, data_rank=0, data_ranks=1, split=False, device=torch.device("cpu"))
TINY_NET = dict(num_classes=3, width=0.125, input_size=67)


# ---- config and backends ----

def test_the_gpu_preset_takes_sgd_and_dropout_from_the_architecture_and_says_its_init():
    config = RunConfig()
    assert dict(lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay) == architecture.SGD
    assert config.dropout == architecture.DROPOUT and config.init == RunConfig.preset("cpu").init == "kaiming"


def test_every_backend_has_its_parts():
    assert tuple(BACKEND_PARTS) == BACKENDS
    assert (BACKEND_PARTS["triton"].sgd, BACKEND_PARTS["torch"].sgd) == (optim.SGD, torch.optim.SGD)
    assert (BACKEND_PARTS["triton"].cross_entropy, BACKEND_PARTS["torch"].cross_entropy) == (ops.cross_entropy,
                                                                                             F.cross_entropy)
    assert BACKEND_PARTS["triton"].mode() in ("Triton interpreter", "compiled Triton")
    assert BACKEND_PARTS["torch"].mode() == "PyTorch" and not BACKEND_PARTS["torch"].interpreted()


@pytest.mark.parametrize("changes, taken", [
    (dict(precision="tf32"), True), (dict(), False), (dict(precision="tf32", channels_last=False), False),
    (dict(precision="tf32", backend="torch"), False)], ids=["tf32", "exact-fp32", "nchw", "torch"])
def test_the_loaders_hand_conv1_its_depth_form_where_it_computes_in_it(changes, taken):
    """take_images_in_depth_form: a channels_last run of the Triton net whose conv1 computes in space-to-depth
    form (here TF32; --amp on a GPU) batches the images in it, and the model takes them; else nothing changes."""
    config = RunConfig.preset("cpu", **(dict(channels_last=True, amp="off") | changes))
    model = AlexNet("2012", backend=config.backend, **TINY_NET, precision=config.precision)
    loaders = [ResumableLoader(_Rows(torch.randn(4, 3, 67, 67), torch.zeros(4)), 2, shuffle=False) for _ in "ab"]
    parts.take_images_in_depth_form(config, model, *loaders)
    assert (model.depth_form is not None) == taken
    for loader in loaders:
        assert loader.collate_fn.keywords["image_form"] is model.depth_form


# ---- layout (one process; several ranks: tests/test_training.py, tests/test_model_parallel.py) ----

def test_one_process_is_one_data_rank_and_model_parallel_needs_two(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert Layout.start(RunConfig.preset("cpu")) == ONE_PROCESS
    with pytest.raises(ConfigError, match=r"--parallel model: the 2012 net on the triton backend on 2 ranks .*"
                                          r"this run: torchvision, triton, 1 rank$"):
        Layout.start(RunConfig.preset("cpu", parallel="model", variant="torchvision"))


def test_wrap_places_the_net_and_its_state_dicts_round_trip():
    torch.manual_seed(0)
    net = AlexNet("2012", backend="torch", **TINY_NET)
    model, network = ONE_PROCESS.wrap(net, replace(RunConfig.preset("cpu"), channels_last=True), 3)
    assert model is network is net and net.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(2, 3, 67, 67)).sum().backward()
    optimizer.step()
    saved = dict(zip(("model", "optimizer"), ONE_PROCESS.state_dicts(net, optimizer), strict=True))
    torch.manual_seed(1)
    other = AlexNet("2012", backend="torch", **TINY_NET)
    other_optimizer = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    ONE_PROCESS.load_state_dicts(other, other_optimizer, saved, "here")
    for (name, p), q in zip(net.named_parameters(), other.parameters(), strict=True):
        assert torch.equal(p, q), name
        assert torch.equal(optimizer.state[p]["momentum_buffer"], other_optimizer.state[q]["momentum_buffer"]), name
    wider = AlexNet("2012", backend="torch", num_classes=3, width=0.25, input_size=67)
    with pytest.raises(CheckpointError, match=r"^here: shapes features.0.weight \(12, 3, 11, 11\) instead of "
                                              r"\(24, 3, 11, 11\)"):
        ONE_PROCESS.load_state_dicts(wider, torch.optim.SGD(wider.parameters(), lr=0.1), saved, "here")
    assert ONE_PROCESS.any_rank(7) == 7 and len(ONE_PROCESS.rng_states(net)) == 1


# ---- schedule ----

@pytest.mark.parametrize("name, lrs", [("step", [1.0, 1.0, 0.1, 0.1, 0.01]),
                                       ("cosine", [1.0, 0.9045085, 0.6545085, 0.3454915, 0.0954915])])
def test_the_step_and_cosine_schedules_per_epoch(name, lrs):
    config = RunConfig.preset("cpu", schedule=name, epochs=5, step_epochs=2, lr=1.0)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    scheduler = schedule.make_scheduler(optimizer, config)
    seen = []
    for _ in range(5):
        seen.append(optimizer.param_groups[0]["lr"])
        schedule.end_epoch(scheduler, val_loss=1.0)
    assert seen == pytest.approx(lrs)
    longer = replace(config, epochs=10)  # a resumed run with more epochs: this epoch's lr under the new length
    schedule.follow_config(scheduler, longer)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(schedule.lr_factor(longer, 5))


def test_the_plateau_schedule_divides_after_patience_stalled_epochs():
    config = RunConfig(patience=1, lr=1.0)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    scheduler = schedule.make_scheduler(optimizer, config)
    lrs = []
    for val_loss in (1.0, 0.5, 0.5, 0.5, 0.5):
        schedule.end_epoch(scheduler, val_loss)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([1.0, 1.0, 1.0, 0.1, 0.1])
    assert schedule.describe(config) == "/10 after 1 epochs without improvement"


# ---- metrics ----

def test_accuracy_counts_rows_whose_label_is_among_the_top_k():
    logits = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    labels = torch.tensor([1, 1, 0, 2])
    assert (accuracy(logits, labels, 1), accuracy(logits, labels, 2), accuracy(logits, labels, 5)) == (0.25, 0.5, 1.0)


def test_the_metrics_log_writes_a_header_once_and_rows_in_six_digits(tmp_path):
    log = MetricsLog(tmp_path / "run", write=True)
    log.log("step", epoch=1, step=1, loss=1 / 3, lr=0.01)
    log.log("step", epoch=1, step=2, loss=0.25, lr=0.01)
    log.log("epoch", epoch=1, step=2, val_loss=0.5, skipped=0)
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == METRIC_COLUMNS and [row["kind"] for row in rows] == ["step", "step", "epoch"]
    assert rows[0]["loss"] == "0.333333" and rows[2]["val_loss"] == "0.5" and rows[2]["loss"] == ""
    log.resume(global_step=1, epoch=0, finished=False)  # a checkpoint at step 1: the later rows go
    assert (tmp_path / "run" / "metrics.csv").read_text().splitlines()[1:] == ["step,1,1,0.333333,,,0.01,,,,,,"]
    MetricsLog(tmp_path / "other", write=False).log("step", epoch=1, step=1)  # a rank other than 0
    assert not (tmp_path / "other").exists()


# ---- stop signals ----

def test_a_stop_signal_is_noted_inside_and_the_handlers_restored_outside():
    before = signal.getsignal(signal.SIGUSR1)
    with StopSignals() as signals:
        assert not signals.stopping()
        signal.raise_signal(signal.SIGUSR1)
        assert signals.stopping() and signals.describe() == " by SIGUSR1"
        with pytest.raises(KeyboardInterrupt) as stop:
            signals.stop_if_received()
        assert stop.value.args == (signal.SIGUSR1,)
    assert signal.getsignal(signal.SIGUSR1) is before


def test_the_ranks_agree_on_the_signal():
    """``any_rank`` (Layout.any_rank: the largest over the ranks) turns another rank's signal into this one's."""
    signals = StopSignals(any_rank=lambda value: max(value, signal.SIGTERM))
    with pytest.raises(KeyboardInterrupt) as stop:
        signals.stop_if_received()
    assert stop.value.args == (signal.SIGTERM,) and signals.describe() == " by SIGTERM"


# ---- checkpointer ----

def test_the_checkpointer_restores_weights_momentum_schedule_rng_and_progress(tmp_path):
    def parts(seed: int):
        torch.manual_seed(seed)
        model = torch.nn.Linear(4, 3)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 0.5 ** epoch)
        return model, optimizer, scheduler

    config = RunConfig.preset("cpu", out=str(tmp_path))
    model, optimizer, scheduler = parts(0)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    progress = Progress(epoch=1, step_in_epoch=2, global_step=5, elapsed=1.5, skipped=3)
    saver = Checkpointer(tmp_path, config, ONE_PROCESS, model, optimizer, scheduler, None, progress)
    saver.save()
    assert saver.saved_step == 5
    drawn = torch.rand(3), random.random()
    model, optimizer, scheduler = parts(1)
    restored = Progress()
    Checkpointer(tmp_path, config, ONE_PROCESS, model, optimizer, scheduler, None, restored).restore(
        read_checkpoint(tmp_path, "--resume"))
    assert restored == progress and torch.equal(torch.rand(3), drawn[0]) and random.random() == drawn[1]
    assert optimizer.param_groups[0]["lr"] == 0.05 and len(optimizer.state) == 2


# ---- evaluation ----

class _Rows(Dataset):
    """Rows of a fixed tensor as "images" (their labels given); index ``unreadable``: an unreadable file."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, unreadable: int | None = None):
        self.images, self.labels, self.unreadable = images, labels, unreadable

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: SampleKey):
        if key.index == self.unreadable:
            return Unreadable(f"row{key.index}", "damaged")
        return self.images[key.index], int(self.labels[key.index])


def test_the_evaluation_matches_the_loss_and_accuracy_of_all_rows():
    torch.manual_seed(0)
    images, labels = torch.randn(7, 5), torch.randint(0, 3, (7,))
    model = torch.nn.Linear(5, 3)
    checks = []
    loader = ResumableLoader(_Rows(images, labels, unreadable=6), 3, shuffle=False)
    metrics = evaluate(model, loader, torch.device("cpu"), lambda x: x, F.cross_entropy,
                       before_batch=lambda: checks.append(1))
    with torch.no_grad():
        logits = model(images[:6])
    assert metrics == pytest.approx(dict(val_loss=F.cross_entropy(logits, labels[:6]).item(),
                                         val_top1=accuracy(logits, labels[:6], 1),
                                         val_top5=1.0, val_skipped=1))
    assert len(checks) == 2 + 1 and not model.training  # each batch (row 6 alone is none) and after the last


def test_ten_crop_averages_the_softmax_over_the_crops():
    torch.manual_seed(0)
    crops, labels = torch.randn(4, 10, 3, 2, 2), torch.randint(0, 3, (4,))  # 4 images of 10 crops, 3 x 2 x 2
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    metrics = evaluate(model, ResumableLoader(_Rows(crops, labels), 2, shuffle=False), torch.device("cpu"),
                       lambda x: x, F.cross_entropy)
    with torch.no_grad():
        log_mean = model(crops.flatten(0, 1)).view(4, 10, 3).softmax(2).mean(1).log()
    assert metrics["val_loss"] == pytest.approx(F.nll_loss(log_mean, labels).item(), rel=1e-6)


def test_an_evaluation_without_a_readable_image_is_a_data_error():
    loader = ResumableLoader(_Rows(torch.zeros(1, 5), torch.zeros(1), unreadable=0), 1, shuffle=False)
    with pytest.raises(DataError, match="none of the 1 validation images could be read"):
        evaluate(torch.nn.Linear(5, 3), loader, torch.device("cpu"), lambda x: x, F.cross_entropy)


# ---- the loader's epoch length ----

@pytest.mark.parametrize("shard", [None, (1, 3)])
def test_steps_per_epoch_draws_no_permutation(shard, monkeypatch):
    loader = ResumableLoader(_Rows(torch.zeros(50, 1), torch.zeros(50)), 4, shuffle=True, drop_last=True,
                             shard=shard)
    expected = len(loader.sampler.order(0)) // 4  # 12; sharded over 3 ranks: 4 global batches of 12
    assert expected == (12 if shard is None else 4)

    def refuse(*args, **kwargs):
        raise AssertionError("a permutation was drawn")

    monkeypatch.setattr(torch, "randperm", refuse)
    assert loader.steps_per_epoch == expected and len(loader.sampler) == (50 if shard is None else 16)
