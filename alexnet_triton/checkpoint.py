"""Checkpoint files a user can trust, and the lock on a run directory.

A run directory holds its newest checkpoint as ``checkpoint.pt`` and the one before as ``checkpoint.previous.pt``.
A checkpoint is a dict of tensors and plain Python values (numbers, strings, None, lists, tuples, dicts) and
``digest``, the sha256 of all of them (the function ``digest``). ``save`` writes a new one to a temporary file,
syncs it to disk and reads it back (loadable, digest right) before the rename that makes it the newest; the newest
until then becomes the previous one. ``load`` reads with ``torch.load(weights_only=True)``, which refuses anything
that could run code when unpickled, and checks the keys and the digest; ``read_checkpoint`` falls back to the
previous checkpoint, saying so, when the newest is missing or damaged. Every problem is a ``CheckpointError`` that
names the file and what is wrong.

``run_directory_lock`` holds an exclusive ``fcntl.flock`` on ``DIR/.lock`` while a run writes ``DIR``: a second
run there is refused, naming the process that holds it; the kernel releases it when a process dies, and a lock
file that still names a process (one that did not exit cleanly) is reported and taken over.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import os
import pickle
import random
import re
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

NEWEST, PREVIOUS, LOCK = "checkpoint.pt", "checkpoint.previous.pt", ".lock"
# What a checkpoint holds besides its digest (training.checkpointer.Checkpointer.save writes them).
KEYS = ("config", "versions", "model", "optimizer", "scheduler", "scaler", "rng", "epoch", "step_in_epoch",
        "global_step", "elapsed", "skipped", "result")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, or a run directory in use; the message names the file and the problem."""


def digest(state: dict) -> str:
    """sha256 of ``state``: every key path, each tensor's dtype, shape and bytes, each plain value's repr, in
    order; TypeError for anything else (which ``weights_only`` loading would refuse)."""
    hashed = hashlib.sha256()

    def feed(value, where: str) -> None:
        if isinstance(value, torch.Tensor):
            flat = value.detach().cpu().contiguous().reshape(-1)
            hashed.update(f"{where}={flat.dtype}{tuple(value.shape)}\n".encode())
            hashed.update(flat.view(torch.uint8).numpy())
        elif isinstance(value, dict):
            hashed.update(f"{where}:dict{len(value)}\n".encode())
            for key, item in value.items():
                feed(item, f"{where}/{key!r}")
        elif isinstance(value, list | tuple):
            hashed.update(f"{where}:{type(value).__name__}{len(value)}\n".encode())
            for index, item in enumerate(value):
                feed(item, f"{where}/{index}")
        elif value is None or type(value) in (bool, int, float, str):  # not subclasses: weights_only refuses them
            hashed.update(f"{where}={value!r}\n".encode())
        else:
            raise TypeError(f"checkpoint: {where} is a {type(value).__name__}, neither a tensor nor plain data")

    feed(state, "")
    return hashed.hexdigest()


def rng_state() -> dict:
    """This process's torch, numpy, Python (and CUDA) generator states, as tensors and plain values."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = dict(torch=torch.get_rng_state(),
                 numpy=dict(kind=kind, keys=torch.from_numpy(keys.astype(np.int64)), position=int(position),
                            has_gauss=int(has_gauss), gauss=float(gauss)),
                 python=dict(version=version, internal=torch.tensor(internal, dtype=torch.int64),
                             gauss_next=gauss_next))
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what ``rng_state`` returned."""
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["gauss"]))
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"].tolist()), python["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """``write(temporary)`` to a temporary file beside ``path``, synced to disk, then renamed over ``path``; a
    failure, a signal or a kill leaves ``path`` as it was (and no temporary file, unless killed)."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        write(temporary)
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
        _fsync_directory(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def save(state: dict, directory: Path, keep_previous: bool = True) -> Path:
    """Write ``state`` (the ``KEYS``) and its digest as ``directory``/checkpoint.pt; the file is complete and
    verified (read back) before it replaces the newest. ``keep_previous``: the newest until then becomes
    checkpoint.previous.pt (pass False when the newest is known to be damaged: the previous one stays)."""
    newest = directory / NEWEST

    def write(temporary: Path) -> None:
        torch.save(dict(state, digest=digest(state)), temporary)
        load(temporary)
        if keep_previous and newest.exists():
            os.replace(newest, directory / PREVIOUS)

    directory.mkdir(parents=True, exist_ok=True)
    write_atomically(newest, write)
    return newest


def load(path: Path) -> dict:
    """The state in the checkpoint file ``path`` (with ``file``: ``path``); CheckpointError naming it when it is
    not readable, holds anything but tensors and plain values, lacks a key, or does not match its digest."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged zip: RuntimeError; an empty file: EOFError; a disallowed global; ...
        text = str(error)
        found = re.search(r"GLOBAL (\S+)", text) if isinstance(error, pickle.UnpicklingError) else None
        if found:
            older = " (alexnet_triton checkpoints held numpy arrays before they were loaded this way)" \
                if found.group(1).startswith("numpy") else ""
            raise CheckpointError(f"{path} was refused: it holds {found.group(1)}, not only tensors and plain "
                                  f"values, and unpickling it could run code{older}") from None
        detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
        reason = detail.group(1) if detail else text.split(". ")[0] or type(error).__name__
        raise CheckpointError(f"{path} is truncated, damaged or not a checkpoint ({reason})") from None
    if not isinstance(state, dict) or "digest" not in state:
        keys = f" with keys {', '.join(map(str, list(state)[:3]))}, ..." if isinstance(state, dict) else ""
        raise CheckpointError(f"{path} is not an alexnet_triton checkpoint (found: {type(state).__name__}{keys}; "
                              "no digest)")
    missing = [key for key in KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}: not a complete alexnet_triton checkpoint")
    written = state.pop("digest")
    if digest(state) != written:
        raise CheckpointError(f"{path} is damaged: its contents do not match the sha256 digest written with it")
    state["file"] = path
    return state


def read_checkpoint(directory: str | os.PathLike, flag: str) -> dict:
    """The newest verified checkpoint of the run in ``directory``: checkpoint.pt, or checkpoint.previous.pt when
    that is missing or damaged (said on stderr); CheckpointError naming ``flag`` and the files otherwise."""
    newest, previous = Path(directory) / NEWEST, Path(directory) / PREVIOUS
    if not newest.is_file() and not previous.is_file():
        raise CheckpointError(f"{flag}: no checkpoint at {newest}")
    problem = f"{newest} is missing"  # a run killed between its two renames
    if newest.is_file():
        try:
            return load(newest)
        except CheckpointError as error:
            problem = str(error)
    if not previous.is_file():
        raise CheckpointError(f"{flag}: {problem}")
    try:
        state = load(previous)
    except CheckpointError as second:
        raise CheckpointError(f"{flag}: {problem}; and {second}") from None
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"note: {problem}; using the previous checkpoint {previous} (step {state['global_step']})",
              file=sys.stderr)
    return state


def trim_metrics(path: Path, global_step: int, epoch: int, finished: bool) -> None:
    """Keep the rows of metrics.csv ``path`` that a checkpoint at ``global_step`` (after ``epoch`` epochs,
    ``finished`` or not) had seen; drop the later ones, which a resumed run logs again, and any torn last line."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    reader = csv.DictReader(line for line in lines if line.endswith("\n"))
    rows = list(reader)
    if reader.fieldnames is None:  # not even a whole header: the run logs afresh
        path.unlink()
        return

    def seen(row: dict) -> bool:
        step = int(row["step"])
        if row["kind"] == "step":
            return step <= global_step
        if row["kind"] == "epoch":
            return int(row["epoch"]) <= epoch
        return step < global_step or finished

    kept = [row for row in rows if seen(row)]
    if len(kept) == len(rows) and lines[-1].endswith("\n"):
        return

    def write(temporary: Path) -> None:
        with open(temporary, "w", newline="") as f:
            writer = csv.DictWriter(f, reader.fieldnames)
            writer.writeheader()
            writer.writerows(kept)

    write_atomically(path, write)


@contextlib.contextmanager
def run_directory_lock(directory: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (created if need be) while the block runs; CheckpointError naming
    the process that holds it. A lock file left by a process that did not exit cleanly is reported and taken."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "a process"
            raise CheckpointError(f"--out {directory} is in use by another run ({holder}); wait for it to end or "
                                  "choose another --out") from None
        handle.seek(0)
        stale = handle.read().strip()
        if stale:
            print(f"note: the last run in {directory} ({stale}) did not exit cleanly (killed or crashed); its lock "
                  "is taken over", file=sys.stderr)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        try:
            yield
        finally:  # an empty lock file: the run ended cleanly
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_fits(saved: dict, expected: dict, what: str) -> None:
    """CheckpointError ``what: ...`` naming the first missing, unexpected and differently shaped tensors of the
    state dict ``saved`` against the model's ``expected`` one."""
    missing = [name for name in expected if name not in saved]
    unexpected = [name for name in saved if name not in expected]
    shapes = [f"{name} {tuple(saved[name].shape)} instead of {tuple(expected[name].shape)}" for name in expected
              if name in saved and saved[name].shape != expected[name].shape]
    problems = [f"{label} {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}"
                for label, names in (("missing", missing), ("unexpected", unexpected), ("shapes", shapes)) if names]
    if problems:
        raise CheckpointError(f"{what}: {'; '.join(problems)}")
