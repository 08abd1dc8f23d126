"""The training engine behind experiments/train.py, one part per job (torchtitan's trainer: parts built once, a
checkpointer, a metrics logger, a plain loop):

    config        RunConfig (every option of a run, its GPU and CPU presets), ConfigError
    distributed   Layout: torchrun's ranks (data or model parallel), the net placed on them
    backends      what --backend picks: the loss, the SGD, how the step runs
    parts         the parts built once: data loaders, net, optimiser with its schedule
    schedule      the learning-rate schedules
    checkpointer  Progress (where a run stands) and the Checkpointer (save, restore exactly)
    metrics       metrics.csv (MetricsLog), result.json, accuracy, the held-out line
    signals       StopSignals: SIGINT, SIGTERM, SIGUSR1 stop every rank at the same step
    evaluation    the held-out evaluation
    plots         curves.png
    run           Run: the loop
"""

from .backends import BACKEND_PARTS
from .checkpointer import versions
from .config import ConfigError, RunConfig, default_preset, fresh_run_directory
from .metrics import METRIC_COLUMNS, accuracy, held_out_line
from .plots import plot_curves
from .run import RUN_FILES, NonFiniteLoss, Run

__all__ = ["BACKEND_PARTS", "METRIC_COLUMNS", "RUN_FILES", "ConfigError", "NonFiniteLoss", "Run", "RunConfig",
           "accuracy", "default_preset", "fresh_run_directory", "held_out_line", "plot_curves", "versions"]
