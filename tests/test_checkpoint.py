"""Files a user can trust (alexnet_triton/checkpoint.py, experiments/train.py): a checkpoint cannot run code, a
damaged or foreign one ends in one error line, the previous checkpoint stands in for a damaged newest one,
SIGTERM / SIGUSR1 stop a run as Ctrl-C does and the resumed run ends bitwise where an uninterrupted one does,
SIGKILL at random moments never leaves the directory without a loadable checkpoint, and a run directory is
locked. The runs use PyTorch's kernels (--backend torch) where the kernels are not what is tested (the
interpreter takes seconds a step); the SIGTERM-mid-step run is on the Triton path."""

from __future__ import annotations

import csv
import os
import pickle
import random
import shutil
import signal
import socket
import subprocess
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import train
from test_train_cli import TINY_FLAGS, _command, _error_lines, _interrupt_when

from alexnet_triton import checkpoint
from alexnet_triton.checkpoint import NEWEST, PREVIOUS, CheckpointError, read_checkpoint, run_directory_lock
from alexnet_triton.model import AlexNet
from alexnet_triton.training import METRIC_COLUMNS, RUN_FILES, Run, RunConfig

# The tiny net of tests/test_train_cli.py with dropout (its RNG is part of the state): 2 steps an epoch, 2 epochs.
FLAGS = (*TINY_FLAGS, "--dropout", "0.5", "--epochs", "2")
CONFIG = RunConfig.preset("cpu", num_classes=4, train_count=8, val_count=4, batch_size=4, lr=0.01, dropout=0.5,
                          epochs=2, backend="torch")


def _final_weights(directory: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(directory / NEWEST)["model"]


def _assert_bitwise(directory: Path, expected: dict[str, torch.Tensor]) -> None:
    final = checkpoint.load(directory / NEWEST)
    assert final["result"] is not None, "the run did not finish"
    for name, tensor in expected.items():
        assert torch.equal(final["model"][name], tensor), name


def _metrics(directory: Path) -> list[dict]:
    """The rows of metrics.csv; fails on a torn row (a line without its newline or with a wrong field count)."""
    text = (directory / "metrics.csv").read_text()
    assert text.endswith("\n"), f"torn last row: {text.splitlines()[-1]!r}"
    lines = list(csv.reader(text.splitlines()))
    assert lines[0] == METRIC_COLUMNS and all(len(line) == len(METRIC_COLUMNS) for line in lines), text
    return [dict(zip(METRIC_COLUMNS, line, strict=True)) for line in lines[1:]]


def _assert_logged_once(directory: Path, steps: int, epochs: int) -> None:
    rows = _metrics(directory)
    assert [int(r["step"]) for r in rows if r["kind"] == "step"] == list(range(1, steps + 1))
    assert [int(r["epoch"]) for r in rows if r["kind"] == "epoch"] == list(range(1, epochs + 1))
    assert [r["kind"] for r in rows].count("final") == 1


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The final weights of the uninterrupted run (in this process)."""
    directory = tmp_path_factory.mktemp("reference")
    Run(replace(CONFIG, out=str(directory))).train()
    return _final_weights(directory)


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    """A run directory after 1 step: one checkpoint."""
    directory = tmp_path_factory.mktemp("good") / "run"
    Run(replace(CONFIG, out=str(directory), max_steps=1)).train()
    assert not (directory / PREVIOUS).exists()
    return directory


# ---- the file format ----

def test_the_rng_states_survive_a_weights_only_round_trip(tmp_path):
    """torch, numpy (with a cached Gaussian) and Python's generators continue as they would have."""
    torch.manual_seed(1)
    random.seed(2)
    np.random.seed(3)
    np.random.standard_normal(), random.gauss(0, 1)  # both now hold a cached second Gaussian
    torch.save(checkpoint.rng_state(), tmp_path / "rng.pt")

    def draws():
        return torch.rand(4), np.random.standard_normal(3), random.gauss(0, 1), random.random()

    expected = draws()
    checkpoint.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    actual = draws()
    assert torch.equal(actual[0], expected[0]) and (actual[1] == expected[1]).all() and actual[2:] == expected[2:]


def test_the_digest_covers_every_byte_dtype_shape_and_value():
    state = dict(model={"w": torch.randn(3, 4)}, rng=[torch.arange(5, dtype=torch.uint8)], step=3, lr=0.1)
    base = checkpoint.digest(state)
    for index in range(12 * 4 * 8):  # every bit of the first tensor
        flipped = state["model"]["w"].clone()
        flipped.view(torch.uint8).view(-1)[index // 8] ^= 1 << index % 8
        assert checkpoint.digest(dict(state, model={"w": flipped})) != base, index
    assert checkpoint.digest(dict(state, model={"w": state["model"]["w"].reshape(4, 3)})) != base
    assert checkpoint.digest(dict(state, rng=[state["rng"][0].to(torch.int8)])) != base
    assert checkpoint.digest(dict(state, step=4)) != base and checkpoint.digest(dict(state, lr=0.1000001)) != base
    assert checkpoint.digest(dict(state, model={"w": state["model"]["w"].t().contiguous().t()})) == base
    with pytest.raises(TypeError, match=r"/'rng'/0 is a ndarray, neither a tensor nor plain data"):
        checkpoint.digest(dict(state, rng=[state["rng"][0].numpy()]))


# ---- bad files: one error line naming the file, no code run ----

class Payload:
    """Unpickled without restriction, creates ``marker`` (as a crafted file could run any code)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "x")


def _trusted_state(path: Path) -> dict:
    return torch.load(path, weights_only=False)  # our own file, to build the bad ones from


def _write(path: Path, state: dict) -> None:
    """``state`` as a checkpoint with a correct digest (a foreign or incomplete one, not a damaged one)."""
    torch.save(dict(state, digest=checkpoint.digest(state)), path)


def _crafted(path: Path, marker: Path) -> str:
    control = marker.with_name("control")
    pickle.loads(pickle.dumps(Payload(control)))  # the payload works when unpickled
    assert control.exists()
    torch.save(dict(_trusted_state(path), extra=Payload(marker)), path)
    return "was refused: it holds io.open, not only tensors and plain values, and unpickling it could run code"


def _truncated(path: Path, marker: Path) -> str:
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    return "is truncated, damaged or not a checkpoint (PytorchStreamReader failed reading zip archive"


def _flipped_byte(path: Path, marker: Path) -> str:
    with zipfile.ZipFile(path) as archive:  # torch.save stores the tensors uncompressed: flip one of the largest
        member = max((m for m in archive.infolist() if "/data/" in m.filename), key=lambda m: m.file_size)
        data = bytearray(path.read_bytes())
        start = member.header_offset + 30 + len(member.filename.encode()) + len(member.extra)
    before = torch.load(path, weights_only=True)
    data[start + member.file_size // 2] ^= 0x10
    path.write_bytes(bytes(data))
    after = torch.load(path, weights_only=True)  # without the digest, nothing notices
    assert sum(not torch.equal(after["model"][n], before["model"][n]) for n in before["model"]) == 1
    return "is damaged: its contents do not match the sha256 digest written with it"


def _text(path: Path, marker: Path) -> str:
    path.write_text("not a checkpoint\n")
    return "is truncated, damaged or not a checkpoint"


def _state_dict(path: Path, marker: Path) -> str:
    torch.save(_trusted_state(path)["model"], path)
    return "is not an alexnet_triton checkpoint (found: OrderedDict with keys features.0.weight, "


def _missing_keys(path: Path, marker: Path) -> str:
    state = _trusted_state(path)
    del state["optimizer"], state["rng"], state["digest"]
    _write(path, state)
    return "lacks optimizer, rng: not a complete alexnet_triton checkpoint"


def _other_net(variant: str, width: float):
    def damage(path: Path, marker: Path) -> str:
        state = _trusted_state(path)
        del state["digest"]
        _write(path, dict(state, model=AlexNet(variant, 4, "torch", width, 67).state_dict()))
        return "its weights do not fit this run's net (AlexNet 2012, width 0.125): "

    return damage


BAD_FILES = {"crafted payload": _crafted, "truncated": _truncated, "flipped byte": _flipped_byte,
             "text file": _text, "a bare state dict": _state_dict, "missing keys": _missing_keys,
             "another variant": _other_net("torchvision", 0.125), "another width": _other_net("2012", 0.25)}


@pytest.mark.parametrize("bad", BAD_FILES)
def test_a_bad_checkpoint_is_one_error_line_naming_it(bad, good_run, tmp_path, capsys):
    directory = tmp_path / "run"
    shutil.copytree(good_run, directory)
    marker = tmp_path / "created-by-the-payload"
    message = BAD_FILES[bad](directory / NEWEST, marker)
    assert train.main(["--eval-only", "--out", str(directory)]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith("error: ") and str(directory / NEWEST) in line and message in line, line
    assert not marker.exists()


def test_a_checkpoint_of_another_net_is_refused_by_flag_and_by_its_weights(good_run, tmp_path, capsys):
    assert train.main(["--resume", "--variant", "torchvision", "--out", str(good_run)]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith(f"error: --variant torchvision contradicts the checkpoint's --variant 2012 "
                           f"({good_run / NEWEST})")
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt: its weights do not fit this run's net \(AlexNet "
                                              r"2012, width 0\.25\): shapes features\.0\.weight \(12, 3, 11, 11\) "
                                              r"instead of \(24, 3, 11, 11\)"):
        Run(replace(CONFIG, width=0.25, out=str(good_run)), read_checkpoint(good_run, "--resume"))


# ---- the previous checkpoint ----

def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys, reference):
    """3 steps with a checkpoint after each: the newest (the finished run's) is truncated; the resume continues
    from the previous one (step 3, not finished), keeps it until a new one is verified, and ends bitwise as the
    uninterrupted run."""
    config = replace(CONFIG, out=str(tmp_path), checkpoint_every=1)
    Run(replace(config, max_steps=3)).train()
    _truncated(tmp_path / NEWEST, tmp_path)
    capsys.readouterr()
    state = read_checkpoint(tmp_path, "--resume")
    assert (state["file"], state["global_step"], state["result"]) == (tmp_path / PREVIOUS, 3, None)
    note = capsys.readouterr().err.strip()
    assert note.startswith(f"note: {tmp_path / NEWEST} is truncated, damaged or not a checkpoint") and \
        note.endswith(f"; using the previous checkpoint {tmp_path / PREVIOUS} (step 3)")
    resumed = Run(config, state)
    resumed.checkpointer.save()  # replaces the damaged newest one; the previous one stays
    assert checkpoint.load(tmp_path / PREVIOUS)["global_step"] == checkpoint.load(tmp_path / NEWEST)["global_step"]
    resumed.train()
    _assert_bitwise(tmp_path, reference)
    _assert_logged_once(tmp_path, steps=4, epochs=2)  # the first run's final row (step 3) is gone


def test_newest_missing_or_both_damaged(good_run, tmp_path, capsys):
    """Killed between its two renames, a run leaves only the previous checkpoint; two damaged files are one
    error line naming both."""
    directory = tmp_path / "run"
    shutil.copytree(good_run, directory)
    os.replace(directory / NEWEST, directory / PREVIOUS)
    assert read_checkpoint(directory, "--resume")["global_step"] == 1
    assert f"note: {directory / NEWEST} is missing; using the previous checkpoint" in capsys.readouterr().err
    shutil.copy(directory / PREVIOUS, directory / NEWEST)
    for name in (NEWEST, PREVIOUS):
        _truncated(directory / name, tmp_path)
    assert train.main(["--resume", "--out", str(directory)]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith(f"error: --resume: {directory / NEWEST} is truncated") and \
        f"; and {directory / PREVIOUS} is truncated" in line


# ---- the lock ----

def test_a_directory_in_use_is_refused_and_a_stale_lock_taken_over(tmp_path, capsys):
    out, fresh = tmp_path / "run", [*FLAGS, "--backend", "torch", "--max-steps", "1"]
    with run_directory_lock(out):  # another run holds it
        for arguments in ([*fresh, "--out", str(out)], ["--resume", "--out", str(out)]):
            assert train.main(arguments) == 2
            (line,) = _error_lines(capsys.readouterr().err)
            assert line.startswith(f"error: --out {out} is in use by another run (pid {os.getpid()} on "), line
    (out / ".lock").write_text("pid 4194305 on elsewhere, since 2026-01-01 00:00:00")  # left by a killed run
    assert train.main([*fresh, "--out", str(out)]) == 0
    assert f"note: the last run in {out} (pid 4194305 on elsewhere, since 2026-01-01 00:00:00) did not exit " \
           "cleanly (killed or crashed); its lock is taken over" in capsys.readouterr().err
    assert (out / ".lock").read_text() == ""  # released
    with run_directory_lock(out):
        assert train.main(["--eval-only", "--out", str(out)]) == 0  # reading needs no lock


# ---- stop signals ----

def _signal_once(signum: int, real, before: bool):
    """``real``; the process receives ``signum`` at its first call (``before`` or after it runs)."""
    sent = []

    def wrapper(*args, **kwargs):
        if sent:
            return real(*args, **kwargs)
        sent.append(signum)
        if before:
            signal.raise_signal(signum)
        result = real(*args, **kwargs)
        if not before:
            signal.raise_signal(signum)
        return result

    return wrapper


# point -> (object, function: the signal comes at its first call, before or after it runs; the signal; the step
# saved)
POINTS = {"evaluation": (Run, "evaluate", True, signal.SIGTERM, 2),
          "writing a checkpoint": (torch, "save", False, signal.SIGTERM, 1),
          "after a step (SIGUSR1)": (Run, "_train_step", False, signal.SIGUSR1, 1)}


@pytest.mark.parametrize("point", POINTS)
def test_a_stop_signal_saves_exits_128_plus_its_number_and_resume_is_bitwise(point, tmp_path, monkeypatch, capsys,
                                                                             reference):
    owner, name, before, signum, step = POINTS[point]
    monkeypatch.setattr(owner, name, _signal_once(signum, getattr(owner, name), before))
    arguments = [*FLAGS, "--backend", "torch", "--checkpoint-every", "1", "--out", str(tmp_path)]
    assert train.main(arguments) == 128 + signum
    out = capsys.readouterr().out
    assert f"interrupted by {signal.Signals(signum).name}: saved {tmp_path / NEWEST} (step {step})" in out
    assert checkpoint.load(tmp_path / NEWEST)["global_step"] == step
    assert train.main(["--resume", "--out", str(tmp_path)]) == 0
    _assert_bitwise(tmp_path, reference)
    _assert_logged_once(tmp_path, steps=4, epochs=2)


def _stop_one_rank_worker(rank: int, port: int, directory: Path) -> None:
    """One of 2 gloo ranks; rank 1 alone receives SIGTERM during the first step. Writes "signal step" to
    directory/stopRANK."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")
    torch.set_num_threads(1)
    real_step = Run._train_step

    def step(self, images, labels):
        if self.layout.rank == 1 and self.progress.global_step == 0:
            signal.raise_signal(signal.SIGTERM)
        return real_step(self, images, labels)

    Run._train_step = step
    run = Run(replace(CONFIG, out=str(directory / "run")))
    try:
        run.train()
    except KeyboardInterrupt as stop:
        (directory / f"stop{rank}").write_text(f"{stop.args[0]} {run.progress.global_step}")
    dist.destroy_process_group()


def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    """torch.distributed on the CPU (gloo, 2 spawned processes): the ranks agree on the signal and the step, and
    rank 0 saves every rank's state there."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_stop_one_rank_worker, args=(port, tmp_path), nprocs=2)
    assert [(tmp_path / f"stop{rank}").read_text() for rank in (0, 1)] == [f"{signal.SIGTERM.value} 1"] * 2
    saved = checkpoint.load(tmp_path / "run" / NEWEST)
    assert saved["global_step"] == 1 and len(saved["rng"]) == 2


def _caught(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (Linux: SigCgt in /proc/PID/status)."""
    status = Path(f"/proc/{pid}/status").read_text()
    mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(mask >> (signum - 1) & 1)


def test_sigterm_during_start_up_saves_nothing_and_a_rerun_is_bitwise(tmp_path, reference):
    """The signal arrives while torch and Triton are imported (train.py's first lines set the handler)."""
    command = _command(*FLAGS, "--backend", "torch", "--out", str(tmp_path / "run"))
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not _caught(process.pid, signal.SIGTERM):
        assert process.poll() is None, process.communicate()
        time.sleep(0.001)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr and "interrupted during start-up: nothing was saved" in stderr
    assert not any((tmp_path / "run" / name).exists() for name in RUN_FILES)
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    _assert_bitwise(tmp_path / "run", reference)


def test_sigterm_mid_step_on_the_triton_path_while_a_second_run_is_refused(tmp_path, capsys):
    """Triton path: SIGTERM during the first step (the interpreter takes seconds); meanwhile a second run in the
    directory is refused (the lock); the resumed run ends bitwise as an uninterrupted one."""
    config = replace(CONFIG, backend="triton", max_steps=2)
    Run(replace(config, out=str(tmp_path / "reference"))).train()
    out = tmp_path / "run"
    process = subprocess.Popen(_command(*FLAGS, "--max-steps", "2", "--out", str(out)), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)

    def second_run():
        capsys.readouterr()
        assert train.main([*FLAGS, "--backend", "torch", "--out", str(out)]) == 2
        (line,) = _error_lines(capsys.readouterr().err)
        assert line.startswith(f"error: --out {out} is in use by another run (pid {process.pid} on "), line

    stderr = _interrupt_when(process, "epoch 1:", signum=signal.SIGTERM, before=second_run)
    stdout = process.stdout.read().decode()
    assert process.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr and f"interrupted by SIGTERM: saved {out / NEWEST} (step 1)" in stdout
    assert train.main(["--resume", "--out", str(out)]) == 0
    _assert_bitwise(out, _final_weights(tmp_path / "reference"))
    _assert_logged_once(out, steps=2, epochs=1)


def _steps_logged(path: Path) -> list[int]:
    """The step numbers in metrics.csv's complete lines (the file may be being written)."""
    try:
        lines = path.read_text().splitlines(keepends=True)
    except FileNotFoundError:
        return []
    return [int(line.split(",")[2]) for line in lines if line.startswith("step,") and line.endswith("\n")]


def test_ten_sigkills_at_random_moments_never_lose_the_checkpoint(tmp_path, capsys):
    """A checkpoint after every step; each try is killed a random fraction of a step after its 1st or 2nd step
    (its first try: after its 2nd, when the first checkpoint is written): inside a step, while a checkpoint is
    written, between its renames, in the evaluation. After each kill the directory holds a loadable checkpoint
    (or the previous one) and whole metrics rows; the next try reports the stale lock; the run, resumed to its
    end, is bitwise the uninterrupted one and logged each step once."""
    epochs = 32  # 64 steps: a try takes 1-3, more where a loaded machine lets it run on before its kill
    Run(replace(CONFIG, epochs=epochs, out=str(tmp_path / "reference"))).train()
    out, rng, moments = tmp_path / "run", random.Random(), []
    arguments = [*FLAGS, "--backend", "torch", "--epochs", str(epochs), "--checkpoint-every", "1", "--out", str(out)]
    step, stale_lock, period = 0, False, None
    for kill in range(10):
        stale = [s for s in _steps_logged(out / "metrics.csv") if s > step]  # the try drops them first
        metrics_file = (out / "metrics.csv").stat().st_ino if stale else None
        target, fraction = step + (rng.randint(1, 2) if kill else 2), rng.random()
        if target > 2 * epochs:  # an earlier try ran on to the end (the rest of the run is resumed below)
            break
        with open(tmp_path / f"try{kill}.log", "w+") as log:
            process = subprocess.Popen(_command(*(["--resume", "--out", str(out)] if kill else arguments)),
                                       stdout=log, stderr=subprocess.STDOUT)
            seen = {}  # step -> when its row appeared
            while target not in seen:
                assert process.poll() is None, f"try {kill} ended before step {target}: {moments}"
                if metrics_file is None or (out / "metrics.csv").stat().st_ino != metrics_file:
                    metrics_file = None
                    for logged in _steps_logged(out / "metrics.csv"):
                        if logged > step:
                            seen.setdefault(logged, time.perf_counter())
                time.sleep(0.002)
            if target - 1 in seen:  # a step's time (and its checkpoint's), as seen here
                period = seen[target] - seen[target - 1]
            time.sleep(fraction * period)
            process.kill()
            process.wait()
            log.seek(0)
            printed = log.read()
        assert "Traceback" not in printed, printed[-3000:]
        assert stale_lock == ("did not exit cleanly" in printed), printed[-3000:]
        stale_lock = True
        state = read_checkpoint(out, "--resume")  # loadable, perhaps the previous one
        _metrics(out)
        moments.append((target, round(fraction, 2), state["file"].name, (out / ".checkpoint.pt.tmp").exists()))
        assert state["global_step"] >= target - 1, moments
        step = state["global_step"]
    with capsys.disabled():
        print(f"{len(moments)} SIGKILLs: (kill after step, fraction of a step, checkpoint read, a temporary left): "
              f"{moments}")
    assert train.main(["--resume", "--out", str(out)]) == 0, capsys.readouterr().err[-3000:]
    _assert_bitwise(out, _final_weights(tmp_path / "reference"))
    _assert_logged_once(out, steps=2 * epochs, epochs=epochs)
