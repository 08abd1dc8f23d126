"""experiments/memory.py: the saved-tensor counter, and the Triton blocks' saving against PyTorch eager."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

from alexnet_triton.architecture import CONV_LAYERS

_spec = importlib.util.spec_from_file_location(
    "memory_experiment", Path(__file__).resolve().parents[1] / "experiments" / "memory.py")
memory = sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(memory)


def test_counter_counts_a_shared_storage_once_and_parameters_apart():
    x = torch.randn(3, 5, requires_grad=True)
    w = torch.randn(5, 5, requires_grad=True)
    # x @ w saves x and w; (x * x) saves x twice more; sigmoid saves its 3x5 result; the view shares x's storage
    saved = memory.saved_storages(lambda: (x @ w).sum() + (x * x).sum() + x.view(15).sigmoid().sum(), [w])
    activations = sorted(s.nbytes for s in saved if not s.parameter)
    assert activations == [60, 60]  # x once, sigmoid's result once
    assert [s.nbytes for s in saved if s.parameter] == [100]


def test_triton_blocks_save_at_most_half_of_eager():
    """Full-size AlexNet blocks (batch 1): the ratio depends on the real channel and spatial sizes."""
    layers = CONV_LAYERS["2012"][:2]
    rows = {(r["block"], r["path"]): r for r in memory.measure(layers, batch=1)}
    for layer in layers:
        block = f"{layer.name}+relu+lrn+pool"
        triton, eager = rows[block, "triton"], rows[block, "eager"]
        assert triton["ratio_to_eager"] <= 0.5, (block, triton, eager)
        # the conv's input, its ReLU output (shared by the conv and the fused block) and int8 window offsets
        out, pooled = layer.out_size, (layer.out_size - 3) // 2 + 1
        expected = 4 * layer.in_channels * layer.size ** 2 + 4 * layer.out_channels * out ** 2 \
            + layer.out_channels * pooled ** 2
        assert triton["saved_tensors"] == 3 and triton["saved_bytes_per_image"] == expected, triton
