"""A run's options: ``RunConfig`` (each field one option of experiments/train.py), its two presets and checks.

The GPU preset (the fields' defaults) is the paper's full-size setup: its batch, SGD hyperparameters, dropout and
plateau schedule (``architecture.SGD``, ``architecture.DROPOUT``), with one exception, the initialisation: He
normal (``--init kaiming``), not the paper's N(0, 0.01) (``--init paper``). The CPU preset scales it down to train
in minutes in Triton's interpreter.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from .. import architecture
from ..kernels import checks, runtime
from ..model import BACKENDS, INITS, VARIANTS
from ..precision import AMP_DTYPES

PRESETS = ("gpu", "cpu")
SCHEDULES = ("step", "cosine", "plateau")
PARALLELISMS = ("data", "model", "hybrid")


class ConfigError(ValueError):
    """A run that cannot start as asked (a user mistake); the message names the flag, value or path."""


def option(default, help: str, *, cpu=MISSING, choices: tuple | None = None, on_resume: bool = False,
           at_least: float | None = None, below: float | None = None):
    """A RunConfig field and its command-line option: ``default`` is the GPU preset's value, ``cpu`` the CPU
    preset's where it differs; ``on_resume``: the flag may change when a run is resumed; a number must be
    ``at_least`` and ``below`` the given bounds."""
    return field(default=default, metadata=dict(help=help, cpu=cpu, choices=choices, on_resume=on_resume,
                                                at_least=at_least, below=below))


@dataclass
class RunConfig:
    """Everything that defines a run (saved in its checkpoint); each field is an option of experiments/train.py.

    The defaults are the GPU preset (the module docstring: the paper's setup but He initialisation);
    ``preset(name)`` gives the CPU one.
    """

    variant: str = option("2012", "net: the 2012 paper's grouped net with LRN, or torchvision's", choices=VARIANTS)
    backend: str = option("triton", "triton: this project's kernels; torch: the PyTorch reference", choices=BACKENDS)
    data: str | None = option(None, "ImageFolder root with train/<class>/ and val/<class>/ (none: built-in shapes)")
    synthetic: bool = option(False, "random tensors instead of images (throughput runs)")
    epochs: int = option(90, "epochs to train", cpu=1, on_resume=True, at_least=1)
    max_steps: int = option(0, "stop after this many steps in total (0: run all epochs)", on_resume=True, at_least=0)
    batch_size: int = option(128, "global batch (split across torchrun ranks)", cpu=16, at_least=1)
    lr: float = option(architecture.SGD["lr"], "initial learning rate", cpu=0.005, at_least=0)
    momentum: float = option(architecture.SGD["momentum"], "SGD momentum", at_least=0)
    weight_decay: float = option(architecture.SGD["weight_decay"], "L2 weight decay", at_least=0)
    label_smoothing: float = option(0.0, "label smoothing of the training loss (evaluation: plain cross-entropy)",
                                    at_least=0, below=1)
    schedule: str = option("plateau", "lr / 10 every --step-epochs (step), or when val loss stalls (plateau), or "
                           "lr x (1 + cos(pi x epoch / --epochs)) / 2 in each epoch (cosine: fits any --epochs)",
                           cpu="cosine", choices=SCHEDULES)
    step_epochs: int | None = option(None, "step schedule: epochs between lr / 10 (none: --epochs / 3, rounded up, "
                                     "the paper's 30 of 90)", at_least=1)
    patience: int = option(3, "plateau schedule: epochs without improvement before lr / 10", at_least=0)
    amp: str = option("off", "mixed precision (GPU only)", choices=tuple(AMP_DTYPES))
    channels_last: bool = option(True, "NHWC activations and (K, R, S, C) conv weights", cpu=False)
    seed: int = option(0, "seed of initialisation, data order, augmentation and dropout")
    width: float = option(1.0, "channel multiplier (a scaled-down copy of the topology)", cpu=0.125,
                          at_least=0.01)
    input_size: int | None = option(None, "image side (none: the variant's, 227 or 224)", cpu=67, at_least=1)
    num_classes: int | None = option(None, "classes of the built-in (2-10, none: 8) or synthetic (none: 1000) data",
                                     cpu=2)
    train_count: int = option(2000, "training images of the built-in or synthetic data", cpu=640, at_least=1)
    val_count: int = option(500, "held-out images of the built-in or synthetic data", cpu=128, at_least=1)
    dropout: float = option(architecture.DROPOUT, "dropout probability of fc6/fc7", cpu=0.0, at_least=0, below=1)
    init: str = option("kaiming", "weights: He normal, the paper's N(0, 0.01), or PyTorch's", choices=INITS)
    precision: str = option("ieee", "fp32 matmuls of the Triton path", choices=checks.PRECISIONS)
    parallel: str = option("data", "what torchrun's ranks share: data (DDP, a share of the batch each), model (the "
                           "2012 paper's two-GPU split: 2 ranks, half of every layer, the whole batch) or hybrid "
                           "(Krizhevsky 2014: the convolutions data-parallel over the 2 ranks, the fc layers split); "
                           "model and hybrid take 2N ranks: N pairs, data-parallel",
                           choices=PARALLELISMS, on_resume=True)
    fused_update: bool = option(False, "apply the SGD step of the fully connected layers' weights and biases in their "
                                "weight-gradient kernels (the gradient is never written; the same numbers; "
                                "optim.SGD.fuse_into): --backend triton, one process, not with --amp fp16",
                                on_resume=True)
    cuda_graphs: bool = option(True, "capture the training step in a CUDA graph after warm-up steps and replay it "
                               "(where it cannot be, the step runs eagerly and the reason is printed)", on_resume=True)
    workers: int = option(0, "DataLoader worker processes", on_resume=True, at_least=0)
    ten_crop: bool = option(False, "evaluate on 10 crops (with --data)", on_resume=True)
    resize: int | None = option(None, "with --data: shorter side before the crop (none: the input size x 256 / the "
                                "variant's, 227 or 224: the paper's share of the image)", at_least=1)
    hflip: float = option(0.5, "with --data: probability of a horizontal flip of a training image (0: off)",
                          at_least=0, below=1)
    lighting: float = option(0.1, "with --data: strength (sigma) of the PCA colour lighting of training images "
                             "(0: off)", at_least=0)
    checkpoint_every: int = option(0, "steps between checkpoints (0: at the end of each epoch)", on_resume=True,
                                   at_least=0)
    out: str = option("", "run directory (none: a fresh runs/<variant>-<date>-<time>)", on_resume=True)

    @classmethod
    def preset(cls, name: str, **chosen) -> RunConfig:
        """The "gpu" or "cpu" preset, with the ``chosen`` fields set."""
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {PRESETS}, got {name!r}")
        values = {f.name: f.metadata["cpu"] for f in fields(cls)
                  if name == "cpu" and f.metadata["cpu"] is not MISSING}
        return cls(**{**values, **chosen})

    def check(self) -> None:
        """ConfigError naming the first option whose value is out of its range or not among its choices."""
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            flag = "--" + f.name.replace("_", "-")
            if meta["choices"] is not None and value not in meta["choices"]:
                raise ConfigError(f"{flag} {value}: expected one of {', '.join(map(str, meta['choices']))}")
            if value is None or isinstance(value, bool | str):
                continue
            if meta["at_least"] is not None and value < meta["at_least"]:
                raise ConfigError(f"{flag} {value}: must be at least {meta['at_least']}")
            if meta["below"] is not None and not value < meta["below"]:
                raise ConfigError(f"{flag} {value}: must be below {meta['below']}")

    @classmethod
    def resumable(cls) -> list[str]:
        """The fields a resumed run may change."""
        return [f.name for f in fields(cls) if f.metadata["on_resume"]]


def default_preset() -> str:
    """"gpu" when the Triton kernels run on a GPU, else "cpu" (the interpreter)."""
    return "gpu" if runtime.MODE == "gpu" else "cpu"


def fresh_run_directory(variant: str, root: str = "runs", create: bool = True) -> str:
    """runs/<variant>-<YYYYmmdd-HHMMSS>, with a suffix -2, -3, ... when that exists; ``create``: made here (so
    that a run started in the same second picks another)."""
    base = Path(root) / f"{variant}-{time.strftime('%Y%m%d-%H%M%S')}"
    for suffix in itertools.count(1):
        candidate = base if suffix == 1 else base.with_name(f"{base.name}-{suffix}")
        if not create and not candidate.exists():
            return str(candidate)
        if create:
            try:
                candidate.mkdir(parents=True)
                return str(candidate)
            except FileExistsError:
                continue
    raise AssertionError("unreachable")
