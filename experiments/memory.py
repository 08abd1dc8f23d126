"""Bytes saved for backward per image, Triton vs PyTorch eager vs torch.compile: AlexNet 2012's conv blocks
and both whole networks (full size, training mode). ``alexnet_triton/study/measure/memory.py`` measures and documents
how.

Writes, under --out: blocks.csv (conv1 and conv2 blocks of the 2012 net, Triton vs eager, float32), network.csv
(per layer group and the whole model, both variants, float32 and bfloat16, every provider), compiled_modes.csv
(torch.compile's default and max-autotune partitions of the whole network) and network.png (float32). Runs on
the CPU: the Triton kernels are captured, not run; the eager forwards run on the meta device; torch.compile's
partition is made by Inductor's partitioner and its graphs run uncompiled (about a minute in all). The byte
counts do not depend on the device.

    python experiments/memory.py [--batch 2] [--out reports/memory]
"""

from __future__ import annotations

import argparse
from _checkout import REPO
from pathlib import Path

import pandas as pd

from alexnet_triton.architecture import CONV_LAYERS
from alexnet_triton.model import VARIANTS
from alexnet_triton.study.measure import memory
from alexnet_triton.study.measure.memory import MIB, NETWORK


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "memory")
    args = parser.parse_args(argv)
    blocks = memory.measure_blocks(list(CONV_LAYERS["2012"][:2]), args.batch)
    cases = [(variant, dtype) for variant in VARIANTS for dtype in memory.DTYPES]
    network = pd.concat([memory.measure_network(variant, args.batch, dtype) for variant, dtype in cases],
                        ignore_index=True)
    modes = pd.concat([memory.compare_compile_modes(variant, args.batch, dtype) for variant, dtype in cases],
                      ignore_index=True)
    args.out.mkdir(parents=True, exist_ok=True)
    blocks.to_csv(args.out / "blocks.csv", index=False)
    network.to_csv(args.out / "network.csv", index=False)
    modes.to_csv(args.out / "compiled_modes.csv", index=False)
    memory.plot_memory(network, args.out / "network.png")
    for row in blocks.itertuples():
        print(f"{row.block:22} {row.provider:8} {row.saved_bytes_per_image / MIB:7.2f} MiB/image saved "
              f"({row.saved_tensors} tensors), ratio to eager {row.ratio_to_eager}")
    for row in network.itertuples():
        label = "whole network" if row.group == NETWORK else row.group
        print(f"{row.variant:12} {row.dtype:9} {label:14} {row.provider:8} {row.saved_bytes_per_image / MIB:7.2f} "
              f"MiB/image saved ({row.saved_tensors} tensors), ratio to eager {row.ratio_to_eager}, "
              f"to compiled {row.ratio_to_compiled}")
    print(modes.drop(columns="tensors").to_string(index=False))
    names = ("blocks.csv", "network.csv", "compiled_modes.csv", "network.png")
    print(f"wrote {', '.join(str(args.out / name) for name in names)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
