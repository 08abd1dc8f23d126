"""The training engine behind experiments/train.py (``run``: ``Run`` and ``RunConfig``)."""

from .run import (
    METRIC_COLUMNS,
    RUN_FILES,
    ConfigError,
    NonFiniteLoss,
    Run,
    RunConfig,
    accuracy,
    default_preset,
    fresh_run_directory,
    held_out_line,
    loss_function,
    plot_curves,
    versions,
)

__all__ = ["METRIC_COLUMNS", "RUN_FILES", "ConfigError", "NonFiniteLoss", "Run", "RunConfig", "accuracy",
           "default_preset", "fresh_run_directory", "held_out_line", "loss_function", "plot_curves", "versions"]
