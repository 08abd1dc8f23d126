"""Train AlexNet end to end on the Triton kernels (or on PyTorch, as the reference).

    python experiments/train.py                      # CPU: scaled-down 2012 net, built-in shapes, ~3 min
    python experiments/train.py --data ~/imagenet    # ImageFolder layout: DIR/train/<class>/*.JPEG, DIR/val/...
    torchrun --nproc_per_node 8 experiments/train.py --data ~/imagenet --amp bf16 --channels-last
    python experiments/train.py --resume --out runs/2012-20260101-120000 --epochs 120

Two presets of defaults: with a GPU, the paper's full-size setup (batch 128, lr 0.01, momentum 0.9, weight decay
5e-4, 90 epochs, lr / 10 when the validation loss stalls); without one (the Triton kernels then run in Triton's
CPU interpreter), the 2012 topology at width 1/8 on 67x67 images, sized to train in minutes, also with --data or
--synthetic. A flag overrides its preset value; the first line printed is the effective run. Each run gets its
own directory (--out, default a fresh one under runs/) holding checkpoint.pt (with the run's config and the
versions that wrote it), metrics.csv, curves.png and result.json.
"""

from __future__ import annotations

import signal
import sys


def _stop(signum, frame):
    """SIGTERM or SIGUSR1 outside training (start-up, evaluation): stop as Ctrl-C does, with the signal's number."""
    raise KeyboardInterrupt(signum)


def _status(stop: KeyboardInterrupt) -> int:
    """128 + the number of the signal that stopped the run: 130 for SIGINT (Ctrl-C), 143 SIGTERM, 138 SIGUSR1."""
    return 128 + (stop.args[0] if stop.args else signal.SIGINT)


try:  # a signal or Ctrl-C while the imports run (torch, Triton: seconds) exits as cleanly as later on
    if __name__ == "__main__":  # inside the try: a signal may arrive before signal.signal returns
        for number in (signal.SIGTERM, signal.SIGUSR1):  # (a run stops its training loop by itself)
            signal.signal(number, _stop)
        # Ctrl-C too where the process started with SIGINT ignored (a shell script's background job), as the
        # training loop's handlers take it
        signal.signal(signal.SIGINT, signal.default_int_handler)
    import _checkout  # noqa: F401  (the checkout's package first)
    import argparse
    import contextlib
    import os
    from dataclasses import fields, replace
    from pathlib import Path

    from alexnet_triton.checkpoint import CheckpointError, read_checkpoint, run_directory_lock
    from alexnet_triton.data import DataError
    from alexnet_triton.training import (
        RUN_FILES,
        ConfigError,
        NonFiniteLoss,
        Run,
        RunConfig,
        default_preset,
        fresh_run_directory,
        held_out_line,
    )
except KeyboardInterrupt as stop:
    print("interrupted during start-up: nothing was saved", file=sys.stderr)
    sys.exit(_status(stop))

# Option types by the RunConfig field's annotation.
OPTION_TYPES = {"str": str, "int": int, "float": float, "str | None": str, "int | None": int}


def flag(name: str) -> str:
    """RunConfig field -> its command-line flag: batch_size -> --batch-size."""
    return "--" + name.replace("_", "-")


def _shown(value) -> str:
    return "none" if value is None or value == "" else str(value)


def build_parser() -> argparse.ArgumentParser:
    """One option per RunConfig field (type, choices, help and the defaults of both presets from the field), and
    the run actions --resume, --eval-only, --overwrite."""
    resumable = ", ".join(flag(name) for name in RunConfig.resumable())
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"{__doc__.split(chr(10) * 2, 1)[1]}\nThis machine uses the {default_preset()} preset. Flags that "
               f"may differ from the checkpoint on --resume or --eval-only: {resumable}; any other flag must "
               "match it (or be left out).")
    cpu = RunConfig.preset("cpu")
    for field in fields(RunConfig):
        meta, gpu_default, cpu_default = field.metadata, field.default, getattr(cpu, field.name)
        default = (f"GPU {_shown(gpu_default)}, CPU {_shown(cpu_default)}" if cpu_default != gpu_default else
                   _shown(gpu_default))
        help_text = f"{meta['help']} (default: {default})".replace("%", "%%")
        if field.type == "bool":
            parser.add_argument(flag(field.name), action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag(field.name), type=OPTION_TYPES[field.type], choices=meta["choices"],
                                default=None, help=help_text)
    actions = parser.add_mutually_exclusive_group()
    actions.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    actions.add_argument("--eval-only", action="store_true", help="evaluate the checkpoint in --out and exit")
    actions.add_argument("--overwrite", action="store_true",
                         help="start afresh in an --out that holds another run (its files are replaced)")
    return parser


def _given(args: argparse.Namespace) -> dict:
    """The RunConfig fields set on the command line (a data path made absolute)."""
    given = {f.name: getattr(args, f.name) for f in fields(RunConfig) if getattr(args, f.name) is not None}
    if "data" in given:
        given["data"] = str(Path(given["data"]).expanduser().resolve())
    return given


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def resumed_config(given: dict, action: str, held: contextlib.ExitStack) -> tuple[RunConfig, dict]:
    """(config, checkpoint) of the run in --out, with the resumable flags applied; --resume locks --out (rank 0,
    until ``held`` closes). ConfigError for a flag that contradicts the checkpoint, naming both values."""
    if "out" not in given:
        raise ConfigError(f"{action} needs --out RUN_DIR (the run directory)")
    if action == "--resume" and _is_main():
        held.enter_context(run_directory_lock(given["out"]))
    checkpoint = read_checkpoint(given["out"], action)
    try:
        saved = RunConfig(**checkpoint["config"])
    except TypeError as error:  # an option this version does not have
        raise CheckpointError(f"{checkpoint['file']}: its config does not fit this version ({error})") from None
    for name, value in given.items():
        if name not in RunConfig.resumable() and value != getattr(saved, name):
            raise ConfigError(
                f"{flag(name)} {_shown(value)} contradicts the checkpoint's {flag(name)} "
                f"{_shown(getattr(saved, name))} ({checkpoint['file']}); leave it out, or start "
                f"a new run (flags that may change: {', '.join(flag(n) for n in RunConfig.resumable())})")
    return replace(saved, **given), checkpoint


def fresh_config(given: dict, overwrite: bool, held: contextlib.ExitStack) -> RunConfig:
    """The preset with the given flags; a fresh --out, or the given one if it holds no run (or --overwrite),
    locked (rank 0, until ``held`` closes) before it is checked."""
    config = RunConfig.preset(default_preset(), **given)
    is_main = _is_main()
    if not config.out:
        config = replace(config, out=fresh_run_directory(config.variant, create=is_main))
    if is_main:
        held.enter_context(run_directory_lock(config.out))
    taken = [name for name in RUN_FILES if (Path(config.out) / name).exists()]
    if taken and not overwrite:
        raise ConfigError(f"--out {config.out} already holds a run ({', '.join(taken)}); continue it with --resume, "
                          "replace it with --overwrite, or choose another --out")
    if is_main:
        for name in taken:
            (Path(config.out) / name).unlink()
    return config


def _held_out_line(run: Run, metrics: dict, training: bool) -> str:
    progress = run.progress
    line = held_out_line(metrics, run.num_classes, progress.skipped, progress.elapsed) if training else \
        held_out_line(metrics, run.num_classes)
    return f"{line}; run directory {run.out}"


def main(argv=None) -> int:
    """The command line; 2 with one "error: ..." line for a user mistake, an unusable checkpoint or a run
    directory in use; 128 + the signal's number after a stop signal (_status); 1 for a NaN loss."""
    try:
        with contextlib.ExitStack() as held:  # the run directory's lock, until the command ends
            return _main(argv, held)
    except (ConfigError, DataError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        print("interrupted: nothing was saved", file=sys.stderr)
        return _status(stop)


def _main(argv, held: contextlib.ExitStack) -> int:
    args = build_parser().parse_args(argv)
    given = _given(args)
    action = "--resume" if args.resume else "--eval-only" if args.eval_only else None
    try:
        if action:
            config, checkpoint = resumed_config(given, action, held)
        else:
            config, checkpoint = fresh_config(given, args.overwrite, held), None
        config.check()
        run = Run(config, checkpoint)
    except KeyboardInterrupt as stop:
        print("interrupted during start-up: nothing was saved", file=sys.stderr)
        return _status(stop)
    if run.is_main:
        origin = f"preset {default_preset()}" if action is None else f"checkpoint of step {run.progress.global_step}"
        print(f"{run.describe()}; {origin}; run directory {run.out}", flush=True)
    if args.eval_only:
        try:
            metrics = run.evaluate()
        except KeyboardInterrupt as stop:
            print("interrupted during evaluation: nothing to save", file=sys.stderr)
            return _status(stop)
    elif run.finished:
        if run.is_main:
            print(f"the run in {run.out} is finished (step {run.progress.global_step} of {run.total_steps}): nothing "
                  f"to do, nothing changed; raise --epochs or --max-steps to train on")
        return 0
    else:
        try:
            metrics = run.train()
        except KeyboardInterrupt as stop:
            return _status(stop)
        except NonFiniteLoss as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    if run.is_main:
        print(_held_out_line(run, metrics, training=not args.eval_only))
    return 0


if __name__ == "__main__":
    sys.exit(main())
