"""Train AlexNet end to end on the Triton kernels (or on PyTorch, as the reference).

    python experiments/train.py                      # CPU: scaled-down 2012 net, built-in shapes, ~3 min
    python experiments/train.py --data ~/imagenet    # ImageFolder layout: DIR/train/<class>/*.JPEG, DIR/val/...
    torchrun --nproc_per_node 8 experiments/train.py --data ~/imagenet --amp bf16 --channels-last

With no GPU the Triton kernels run in Triton's CPU interpreter, and the defaults
become a preset that fits that: the 2012 topology at width 1/8 on 67x67 images
of the built-in shapes dataset. On a GPU the defaults are the paper's full-size
setup (batch 128, lr 0.01, momentum 0.9, weight decay 5e-4, 90 epochs, lr / 10
when the validation loss stalls). Outputs go to --out: checkpoint.pt,
metrics.csv, curves.png.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

import _checkout  # noqa: F401  (the checkout's package first)

from alexnet_triton.kernels import runtime
from alexnet_triton.training import NonFiniteLoss, Run, RunConfig

# The CPU preset: what the interpreter can train in about three minutes on two cores.
# Two classes (horizontal vs vertical stripes, random colours and placement): the interpreter trains ~4
# images/s, and the 8-class task needs thousands of images (see the README).
CPU_PRESET = dict(width=0.125, input_size=67, num_classes=2, batch_size=16, lr=0.005, epochs=1, train_count=640,
                  val_count=128, dropout=0.0, init="kaiming", schedule="step", step_epochs=1,
                  out="runs/cpu-default")
GPU_PRESET = dict(init="kaiming", out="runs/alexnet", channels_last=True)


def parse_args(argv=None) -> tuple[RunConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    add("--variant", choices=["2012", "torchvision"])
    add("--backend", choices=["triton", "torch"], help="triton: this project's kernels; torch: the PyTorch reference")
    add("--data", help="ImageFolder root with train/ and val/ (default: the built-in shapes dataset)")
    add("--synthetic", action="store_true", default=None, help="random tensors, for throughput runs")
    add("--epochs", type=int)
    add("--max-steps", type=int, help="stop after this many steps in total")
    add("--batch-size", type=int, help="global batch (split across torchrun ranks)")
    add("--lr", type=float)
    add("--momentum", type=float)
    add("--weight-decay", type=float)
    add("--schedule", choices=["step", "plateau"], help="lr / 10 every --step-epochs, or when val loss stalls")
    add("--step-epochs", type=int)
    add("--patience", type=int, help="plateau: epochs without improvement before lr / 10")
    add("--amp", choices=["off", "bf16", "fp16"], help="mixed precision (GPU only)")
    add("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    add("--seed", type=int)
    add("--out", help="run directory")
    add("--width", type=float, help="channel multiplier (a scaled-down copy of the topology)")
    add("--input-size", type=int)
    add("--num-classes", type=int, help="classes of the built-in or synthetic dataset")
    add("--train-count", type=int, help="training images of the built-in or synthetic dataset")
    add("--val-count", type=int)
    add("--dropout", type=float)
    add("--init", choices=["paper", "kaiming", "torch"])
    add("--precision", choices=["ieee", "tf32"], help="fp32 matmuls of the Triton path")
    add("--workers", type=int, help="DataLoader worker processes")
    add("--ten-crop", action="store_true", default=None, help="evaluate on 10 crops (with --data)")
    add("--checkpoint-every", type=int, help="steps between checkpoints (default: each epoch)")
    add("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    add("--eval-only", action="store_true", help="evaluate the checkpoint in --out and exit")
    args = parser.parse_args(argv)
    preset = CPU_PRESET if runtime.INTERPRETER and args.data is None and not args.synthetic else GPU_PRESET
    chosen = {f.name: getattr(args, f.name) for f in fields(RunConfig) if getattr(args, f.name, None) is not None}
    return RunConfig(**{**preset, **chosen}), args


def main(argv=None) -> int:
    config, args = parse_args(argv)
    run = Run(config, resume=args.resume or args.eval_only)
    if args.eval_only:
        metrics = run.evaluate()
    else:
        try:
            metrics = run.train()
        except KeyboardInterrupt:
            return 130
        except NonFiniteLoss as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    if run.is_main:
        classes = run.model.classifier[-1].out_features
        print(f"held-out: loss {metrics['val_loss']:.4f}, top-1 {metrics['val_top1']:.3f}, "
              f"top-5 {metrics['val_top5']:.3f} (chance top-1 {1 / classes:.3f}); "
              f"training time {run.elapsed:.0f} s; run directory {run.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
