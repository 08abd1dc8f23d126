"""A run's progress (``Progress``) and its checkpointer: what a checkpoint holds, written by rank 0 through
``alexnet_triton.checkpoint`` and restored on every rank, so that a resumed run continues exactly (on the CPU:
bitwise) where it stopped."""

from __future__ import annotations

import importlib.metadata
import random
import subprocess
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import triton

from ..checkpoint import PREVIOUS, save, set_rng_state
from ..data import mix_seed
from .config import RunConfig
from .distributed import Layout


def versions() -> dict[str, str]:
    """Versions that produced a checkpoint: this project (and its git commit in a checkout), torch, Triton."""
    try:
        project = importlib.metadata.version("alexnet-triton")
    except importlib.metadata.PackageNotFoundError:
        project = "not installed"
    checkout = Path(__file__).resolve().parents[2]
    commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True) if (checkout / ".git").exists() else None
    if commit is not None and commit.returncode == 0:
        project += f" ({commit.stdout.strip()})"
    return {"alexnet_triton": project, "torch": str(torch.__version__), "triton": triton.__version__}


def seed_everything(seed: int) -> None:
    """Seed torch's, numpy's and Python's global generators (dropout masks and anything else drawn from them)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


@dataclass
class Progress:
    """Where a run stands (saved in its checkpoints): epochs done, steps into the current one, steps in all,
    training seconds, unreadable images skipped (by training and by the recorded evaluations), and the final
    held-out metrics once the run has finished."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    elapsed: float = 0.0
    skipped: int = 0
    result: dict | None = None


class Checkpointer:
    """Saves and restores a run's model, optimiser, schedule, GradScaler, every data rank's RNG and its
    ``progress`` in ``out``/checkpoint.pt. ``saved_step``: the step of the last checkpoint written or
    restored (None: none yet)."""

    def __init__(self, out: Path, config: RunConfig, layout: Layout, model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, scheduler, scaler: torch.amp.GradScaler | None,
                 progress: Progress):
        self.out, self.config, self.layout, self.progress = out, config, layout, progress
        self.model, self.optimizer, self.scheduler, self.scaler = model, optimizer, scheduler, scaler
        self.saved_step: int | None = None
        self.keep_previous = True  # False after a resume from the previous checkpoint: the newest is damaged

    def save(self) -> None:
        """Save everything needed to continue exactly from here (rank 0 writes, with every data rank's RNG
        state); with several data ranks, first check that they still hold the same parameters. Every rank
        returns once the file is there."""
        rng = self.layout.rng_states(self.model)
        model, optimizer = self.layout.state_dicts(self.model, self.optimizer)
        if self.layout.is_main:
            save(dict(config=asdict(self.config), versions=versions(), model=model, optimizer=optimizer,
                      scheduler=self.scheduler.state_dict(),
                      scaler=self.scaler.state_dict() if self.scaler else None, rng=rng, **asdict(self.progress)),
                 self.out, keep_previous=self.keep_previous)
            self.keep_previous = True
        self.layout.barrier()
        self.saved_step = self.progress.global_step

    def restore(self, state: dict) -> None:
        """Continue from ``state`` (``checkpoint.read_checkpoint``); CheckpointError naming its file when its
        weights do not fit this run's net (another variant or width). Notes (rank 0) what cannot continue
        bitwise: another number of data ranks (fresh dropout streams), other torch or Triton versions."""
        config, layout = self.config, self.layout
        layout.load_state_dicts(self.model, self.optimizer, state, f"{state['file']}: its weights do not fit this "
                                f"run's net (AlexNet {config.variant}, width {config.width:g})")
        self.keep_previous = state["file"].name != PREVIOUS
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        if len(state["rng"]) == layout.data_ranks:
            set_rng_state(state["rng"][layout.data_rank])
        else:  # another number of ranks: fresh streams (the run goes on, but not bitwise as it would have)
            if layout.is_main:
                print(f"note: the checkpoint holds {len(state['rng'])} ranks' RNG states, this run has "
                      f"{layout.data_ranks} ranks: dropout masks are drawn afresh")
            seed_everything(mix_seed(config.seed, layout.data_rank, state["global_step"]))
        for name in (f.name for f in fields(Progress)):
            setattr(self.progress, name, state[name])
        self.saved_step = self.progress.global_step
        now = versions()
        changed = [f"{name} {state['versions'].get(name)} -> {now[name]}" for name in now
                   if state["versions"].get(name) != now[name] and name != "alexnet_triton"]
        if changed and layout.is_main:
            print(f"note: the checkpoint was written with other versions ({', '.join(changed)}): the run continues, "
                  "but not bitwise as it would have")
