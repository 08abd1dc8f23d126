"""Bytes saved for backward per image, Triton path vs PyTorch eager: AlexNet 2012's conv blocks and both whole
networks (full size, fp32, training mode). ``alexnet_triton/study/memory.py`` measures and documents how.

Writes, under --out: blocks.csv (conv1 and conv2 blocks of the 2012 net), network.csv (per layer group and
the whole model, both variants) and network.png. Runs on the CPU: the Triton kernels are captured, not run;
the eager forwards run for real (a few seconds). The byte counts do not depend on the device.

    python experiments/memory.py [--batch 2] [--out reports/memory]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from _checkout import REPO

from alexnet_triton.architecture import CONV_LAYERS
from alexnet_triton.model import VARIANTS
from alexnet_triton.study.memory import MIB, NETWORK, measure_blocks, measure_network, plot_memory


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "memory")
    args = parser.parse_args(argv)
    blocks = measure_blocks(list(CONV_LAYERS["2012"][:2]), args.batch)
    network = pd.concat([measure_network(variant, args.batch) for variant in VARIANTS], ignore_index=True)
    args.out.mkdir(parents=True, exist_ok=True)
    blocks.to_csv(args.out / "blocks.csv", index=False)
    network.to_csv(args.out / "network.csv", index=False)
    plot_memory(network, args.out / "network.png")
    for row in blocks.itertuples():
        print(f"{row.block:22} {row.path:7} {row.saved_bytes_per_image / MIB:7.2f} MiB/image saved "
              f"({row.saved_tensors} tensors), ratio to eager {row.ratio_to_eager}")
    for row in network.itertuples():
        label = "whole network" if row.group == NETWORK else row.group
        print(f"{row.variant:12} {label:14} {row.path:7} {row.saved_bytes_per_image / MIB:7.2f} MiB/image saved "
              f"({row.saved_tensors} tensors), ratio to eager {row.ratio_to_eager}")
    print(f"wrote {args.out / 'blocks.csv'}, {args.out / 'network.csv'}, {args.out / 'network.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
