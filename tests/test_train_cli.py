"""experiments/train.py: options generated from RunConfig, presets, one run per directory, resume from the
checkpoint's config, one-line errors, Ctrl-C at start-up and during evaluation, data-parallel ranks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path

import pytest
import torch
import train
from PIL import Image

from alexnet_triton.checkpoint import read_checkpoint
from alexnet_triton.training import RUN_FILES, Run, RunConfig

REPO = Path(__file__).resolve().parents[1]
# The tiny net of every run here: the CPU preset's topology on 4 built-in classes, 4 images a step.
TINY_FLAGS = ("--num-classes", "4", "--train-count", "8", "--val-count", "4", "--batch-size", "4", "--lr", "0.01")
TINY = RunConfig.preset("cpu", num_classes=4, train_count=8, val_count=4, batch_size=4, lr=0.01, backend="torch")


def _command(*args: str, launcher: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, *launcher, str(REPO / "experiments" / "train.py"), *args]


def _train_cli(*args: str, env: dict | None = None, launcher: tuple[str, ...] = (), cwd=None,
               status: int = 0) -> subprocess.CompletedProcess:
    result = subprocess.run(_command(*TINY_FLAGS, *args, launcher=launcher), capture_output=True, text=True,
                            timeout=600, env={**os.environ, **(env or {})}, cwd=cwd)
    assert result.returncode == status, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def _error_lines(stderr: str) -> list[str]:
    """stderr without the interpreter-mode notice."""
    return [line for line in stderr.splitlines() if not line.startswith("alexnet_triton: running Triton")]


# ---- options ----

def test_every_runconfig_field_is_an_option_with_help_and_its_real_defaults():
    """The parser is generated from RunConfig: no option without a field, no field without an option (drift)."""
    parser = train.build_parser()
    options = {action.dest: action for action in parser._actions if action.dest != "help"}
    assert set(options) == {f.name for f in fields(RunConfig)} | {"resume", "eval_only", "overwrite"}
    cpu = RunConfig.preset("cpu")
    for field in fields(RunConfig):
        help_text = options[field.name].help
        assert field.metadata["help"] in help_text and options[field.name].default is None
        if getattr(cpu, field.name) != field.default:
            assert f"(default: GPU {train._shown(field.default)}, CPU {train._shown(getattr(cpu, field.name))})" \
                in help_text
        else:
            assert help_text.endswith(f"(default: {train._shown(field.default)})")
    assert all(train.flag(name) in parser.epilog for name in RunConfig.resumable())


# ---- one run per directory, resume from the checkpoint ----

def test_each_run_gets_its_own_directory_and_an_occupied_one_is_refused(tmp_path):
    first = _train_cli("--backend", "torch", "--max-steps", "1", cwd=tmp_path)
    assert first.stdout.startswith("net: AlexNet 2012 (width 0.125, 67x67 input, 4 classes")
    assert "preset cpu" in first.stdout.splitlines()[0]
    (directory,) = (tmp_path / "runs").iterdir()
    assert f"run directory runs/{directory.name}" in first.stdout.splitlines()[0]
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    assert set(before) == {"checkpoint.pt", "metrics.csv", "curves.png", "result.json", ".lock"}
    refused = _train_cli("--backend", "torch", "--variant", "torchvision", "--out", str(directory), cwd=tmp_path,
                         status=2)
    assert _error_lines(refused.stderr) == [
        f"error: --out {directory} already holds a run (checkpoint.pt, metrics.csv, curves.png, result.json); "
        "continue it with --resume, replace it with --overwrite, or choose another --out"]
    _train_cli("--backend", "torch", "--variant", "torchvision", "--max-steps", "1", cwd=tmp_path)
    assert len(list((tmp_path / "runs").iterdir())) == 2
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before


def test_eval_only_rebuilds_the_net_from_the_checkpoint(tmp_path):
    Run(replace(TINY, out=str(tmp_path), max_steps=1)).train()
    result = subprocess.run(_command("--eval-only", "--out", str(tmp_path)), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4 classes" in result.stdout and "held-out: loss" in result.stdout and "(chance top-1 0.250)" in \
        result.stdout


@pytest.fixture
def finished_run(tmp_path) -> Path:
    Run(replace(TINY, out=str(tmp_path / "run"), max_steps=1)).train()
    return tmp_path / "run"


def test_resume_refuses_a_flag_that_contradicts_the_checkpoint(finished_run, capsys):
    assert train.main(["--resume", "--out", str(finished_run), "--lr", "0.1", "--epochs", "3"]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    checkpoint = finished_run / "checkpoint.pt"
    assert line.startswith(f"error: --lr 0.1 contradicts the checkpoint's --lr 0.01 ({checkpoint})")
    assert "--epochs, --max-steps" in line


def test_resume_of_a_finished_run_changes_nothing(finished_run, capsys):
    before = {p.name: p.read_bytes() for p in finished_run.iterdir()}
    assert train.main(["--resume", "--out", str(finished_run)]) == 0
    assert f"the run in {finished_run} is finished (step 1 of 1): nothing to do" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in finished_run.iterdir() if p.name != ".lock"} == before
    assert train.main(["--resume", "--out", str(finished_run), "--max-steps", "2"]) == 0
    assert read_checkpoint(finished_run, "--resume")["global_step"] == 2


# ---- user mistakes: one error line, status 2 ----

def _image_tree(root: Path, splits: dict[str, tuple[str, ...]]) -> Path:
    for split, classes in splits.items():
        (root / split).mkdir(parents=True)
        for name in classes:
            (root / split / name).mkdir()
            Image.new("RGB", (40, 30)).save(root / split / name / f"{name}.JPEG")
    return root


def _data(tmp: Path, train: tuple[str, ...], val: tuple[str, ...]) -> list[str]:
    return ["--data", str(_image_tree(tmp / "d", {"train": train, "val": val}))]


# mistake -> (flags given the test's directory, what the error line says); the flags come after TINY_FLAGS.
MISTAKES = {
    "missing data directory": (lambda tmp: ["--data", str(tmp / "absent")],
                               "image directory {tmp}/absent/train not found"),
    "empty data directory": (lambda tmp: _data(tmp, (), ()), "no images"),
    "class only in val": (lambda tmp: _data(tmp, ("cat",), ("cat", "emu")),
                          "class directory {tmp}/d/val/emu has no counterpart"),
    "fewer images than one batch": (lambda tmp: ["--train-count", "2", "--out", str(tmp / "run")],
                                    "the training set has 2 samples, fewer than one batch of 4"),
    "amp on a CPU": (lambda tmp: ["--amp", "bf16", "--out", str(tmp / "run")], "--amp bf16 needs a GPU"),
    "resume without a checkpoint": (lambda tmp: ["--resume", "--out", str(tmp)], "--resume: no checkpoint at {tmp}/"),
    "eval-only without a checkpoint": (lambda tmp: ["--eval-only", "--out", str(tmp)],
                                       "--eval-only: no checkpoint at {tmp}/checkpoint.pt"),
    "eval-only without --out": (lambda tmp: ["--eval-only"], "--eval-only needs --out RUN_DIR"),
    "label smoothing out of range": (lambda tmp: ["--label-smoothing", "1.5"],
                                     "--label-smoothing 1.5: must be below 1"),
    "too many built-in classes": (lambda tmp: ["--num-classes", "20", "--out", str(tmp / "run")],
                                  "num_classes must be in [2, 10], got 20"),
    "fused update on the torch backend": (lambda tmp: ["--fused-update", "--out", str(tmp / "run")],
                                          "--fused-update needs --backend triton"),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_a_user_mistake_is_one_error_line(mistake, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    arguments, message = MISTAKES[mistake]
    assert train.main([*TINY_FLAGS, "--backend", "torch", *arguments(tmp_path)]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith("error: ") and message.format(tmp=tmp_path) in line


# ---- Ctrl-C ----

def _interrupt_when(process: subprocess.Popen, marker: str, timeout: float = 300, signum: int = signal.SIGINT,
                    before: Callable[[], None] = lambda: None) -> str:
    """Once ``marker`` appears on the process's stderr, call ``before()`` and send ``signum``; return all of
    stderr."""
    seen, chunks = threading.Event(), []

    def read():
        while chunk := process.stderr.read1(4096):
            chunks.append(chunk.decode(errors="replace"))
            if marker in "".join(chunks):
                seen.set()
        seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert seen.wait(timeout), f"{marker!r} never appeared"
    before()
    process.send_signal(signum)
    process.wait(timeout)
    reader.join(10)
    return "".join(chunks)


@pytest.mark.parametrize("inherited", [signal.SIG_DFL, signal.SIG_IGN], ids=["default", "ignored"])
def test_ctrl_c_during_start_up_exits_cleanly_and_writes_nothing(tmp_path, inherited):
    """While the built-in dataset is drawn (its progress bar is up); also when the run started with SIGINT ignored
    (a shell script's background job: the training loop takes SIGINT anyway, and so does the start-up)."""
    process = subprocess.Popen(_command(*TINY_FLAGS, "--train-count", "20000", "--out", str(tmp_path / "run")),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, inherited))
    stderr = _interrupt_when(process, "drawing 20000 shapes")
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "interrupted during start-up: nothing was saved" in stderr
    assert not any((tmp_path / "run" / name).exists() for name in RUN_FILES)  # only the (released) lock file


def test_ctrl_c_during_evaluation_saves_a_checkpoint_and_exits(tmp_path):
    """The end-of-epoch evaluation (Triton path, 24 batches) stops at the next batch; resume redoes it."""
    process = subprocess.Popen(_command(*TINY_FLAGS, "--train-count", "4", "--val-count", "96", "--out",
                                        str(tmp_path)), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    started = time.perf_counter()
    stderr = _interrupt_when(process, "evaluating")
    stdout = process.stdout.read().decode()
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and f"interrupted: saved {tmp_path / 'checkpoint.pt'} (step 1)" in stdout
    saved = read_checkpoint(tmp_path, "--resume")
    assert (saved["global_step"], saved["epoch"], saved["result"]) == (1, 0, None)
    assert "final" not in (tmp_path / "metrics.csv").read_text() and not (tmp_path / "result.json").exists()
    assert time.perf_counter() - started < 120
    assert train.main(["--resume", "--out", str(tmp_path)]) == 0  # the interrupted evaluation, redone
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert [row.split(",")[:3] for row in rows if not row.startswith("step,")][1:] == [["epoch", "1", "1"],
                                                                                      ["final", "1", "1"]]


# ---- data-parallel ranks ----

def test_two_gloo_ranks_match_one_process_on_the_combined_batch(tmp_path):
    """torchrun with 2 CPU processes (gloo), 2 images each, against 1 process with batch 4: the ranks agree at
    every checkpoint (the engine checks) and rank 0 saves the single process's parameters."""
    _train_cli("--max-steps", "2", "--out", str(tmp_path / "single"))
    _train_cli("--max-steps", "2", "--out", str(tmp_path / "ddp"),
               launcher=("-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"),
               env={"OMP_NUM_THREADS": "1"})
    single, ddp = (torch.load(tmp_path / name / "checkpoint.pt", weights_only=False) for name in ("single", "ddp"))
    assert len(ddp["rng"]) == 2 and not torch.equal(ddp["rng"][0]["torch"], ddp["rng"][1]["torch"])
    for name in single["model"]:
        torch.testing.assert_close(ddp["model"][name], single["model"][name], atol=1e-5, rtol=1e-5, msg=name)
