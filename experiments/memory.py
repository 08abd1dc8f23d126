"""Bytes saved for backward per image by AlexNet's conv1 and conv2 blocks, Triton path vs PyTorch eager.

A block is conv -> ReLU -> LRN -> 3x3/2 max-pool (the 2012 net, full size). Each
path runs forward once on the CPU under ``torch.autograd.graph.saved_tensors_hooks``,
which sees every tensor autograd keeps for backward; a storage shared by several
saved tensors (the conv output that both the conv's ReLU mask and the LRN need)
is counted once, and parameters (weights, biases) are listed apart, since they
do not grow with the batch. Triton path: ``ops.conv2d(relu=True)`` then the
fused ``ops.lrn_max_pool2d``. Eager path: F.conv2d, F.relu,
F.local_response_norm, F.max_pool2d.

Writes reports/memory.csv. Runs on the CPU (Triton kernels in the interpreter);
the byte counts do not depend on the device.

    python experiments/memory.py [--batch 2] [--out reports/memory.csv]
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from alexnet_triton import ops
from alexnet_triton.architecture import CONV_LAYERS, ConvLayer

REPO = Path(__file__).resolve().parents[1]
LRN = dict(size=5, alpha=1e-4, beta=0.75, k=2.0)
POOL = dict(kernel_size=3, stride=2)


@dataclass(frozen=True)
class SavedStorage:
    """One storage autograd keeps for backward: first tensor seen on it, its size, and whether it is a parameter's."""

    description: str
    nbytes: int
    parameter: bool


def saved_storages(forward: Callable[[], torch.Tensor], parameters: list[torch.Tensor]) -> list[SavedStorage]:
    """Run ``forward``; return each distinct storage of the tensors autograd saved, once."""
    parameter_storages = {p.untyped_storage().data_ptr() for p in parameters}
    seen: dict[int, SavedStorage] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            description = f"{'x'.join(map(str, t.shape))} {str(t.dtype).removeprefix('torch.')}"
            seen[storage.data_ptr()] = SavedStorage(description, storage.nbytes(),
                                                    storage.data_ptr() in parameter_storages)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward()
    return list(seen.values())


def block_inputs(layer: ConvLayer, batch: int, needs_input_grad: bool):
    """Random x [batch, C_in, size, size] and the layer's weight and bias (requiring grad)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, layer.in_channels, layer.size, layer.size, generator=gen)
    weight = (torch.randn(layer.out_channels, layer.in_channels // layer.groups, layer.kernel, layer.kernel,
                          generator=gen) * 0.01).requires_grad_()
    bias = torch.zeros(layer.out_channels).requires_grad_()
    return x.requires_grad_(needs_input_grad), weight, bias


def triton_block(layer: ConvLayer, x, weight, bias) -> torch.Tensor:
    y = ops.conv2d(x, weight, bias, layer.stride, layer.padding, layer.groups, relu=True)
    return ops.lrn_max_pool2d(y, **LRN, **POOL)


def eager_block(layer: ConvLayer, x, weight, bias) -> torch.Tensor:
    y = F.relu(F.conv2d(x, weight, bias, layer.stride, layer.padding, groups=layer.groups))
    return F.max_pool2d(F.local_response_norm(y, **LRN), **POOL)


def measure(layers: list[ConvLayer], batch: int) -> list[dict]:
    """One row per (block, path) with the saved bytes per image and the Triton/eager ratio."""
    rows = []
    for layer in layers:
        x, weight, bias = block_inputs(layer, batch, needs_input_grad=layer.name != "conv1")
        per_path = {}
        for path, block in (("triton", triton_block), ("eager", eager_block)):
            saved = saved_storages(partial(block, layer, x, weight, bias), [weight, bias])
            activations = [s for s in saved if not s.parameter]
            per_path[path] = dict(
                block=f"{layer.name}+relu+lrn+pool", path=path, dtype="float32", batch=batch,
                saved_tensors=len(activations), saved_bytes_per_image=sum(s.nbytes for s in activations) // batch,
                parameter_bytes=sum(s.nbytes for s in saved if s.parameter),
                tensors="; ".join(s.description for s in activations))
        for path in per_path:
            per_path[path]["ratio_to_eager"] = round(
                per_path[path]["saved_bytes_per_image"] / per_path["eager"]["saved_bytes_per_image"], 3)
            rows.append(per_path[path])
    return rows


COLUMNS = ["block", "path", "dtype", "batch", "saved_tensors", "saved_bytes_per_image", "ratio_to_eager",
           "parameter_bytes", "tensors"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "memory.csv")
    args = parser.parse_args(argv)
    rows = measure(CONV_LAYERS["2012"][:2], args.batch)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        print(f"{row['block']:22} {row['path']:7} {row['saved_bytes_per_image'] / 2**20:7.2f} MiB/image saved "
              f"({row['saved_tensors']} tensors), ratio to eager {row['ratio_to_eager']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
