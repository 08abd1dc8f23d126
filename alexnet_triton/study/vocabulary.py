"""The study's words, each defined once: what its CSV columns, CLI choices, figure labels and registries call the
networks, the passes of a layer, the phases of a training step and the dtypes.

  variants   ``VARIANTS`` (``architecture.VARIANTS``), shown as ``VARIANT_NAMES``
  passes     of one layer: ``FORWARD``, ``BACKWARD`` (all its gradients), ``FULL`` (both); a GEMM layer's backward
             kernels on their own: ``INPUT_GRAD`` (dx), ``WEIGHT_GRAD`` (dw, db); the parameter update after the
             backward: ``OPTIMIZER``
  network    timed whole: ``INFERENCE``, ``TRAIN_STEP`` (forward, loss, backward, SGD), ``GRAPHED_STEP`` (that step
             replayed as one CUDA graph), ``FUSED_GRAPHED_STEP`` (that graph with the fc layers' SGD step fused into
             their weight-gradient kernels: ``optim.SGD.fuse_into``); counted or modelled: ``STEP``, the total of a
             training step's passes
  dtypes     a dtype *case* ("fp16", "bf16", "fp32-ieee", "fp32-tf32": ``registries.benchmark_cases.DTYPES``) is a
             storage dtype and the precision of its products, for every table that times or compiles; a table that
             only counts bytes (memory, traffic, conformance) names the storage dtype as torch does
             (``storage_name``: "float32", "bfloat16"), as precision does not change what it counts
"""

from __future__ import annotations

import torch

from ..architecture import VARIANTS as VARIANTS  # re-exported: the study's networks are the model's

VARIANT_NAMES = {"2012": "AlexNet 2012", "torchvision": "torchvision AlexNet"}

FORWARD, BACKWARD, FULL = "forward", "backward", "full"
INPUT_GRAD, WEIGHT_GRAD = "input grad", "weight grad"
OPTIMIZER = "optimizer"
LAYER_PASSES = (FORWARD, BACKWARD, FULL)
CONV_PASSES = (FORWARD, INPUT_GRAD, WEIGHT_GRAD)  # one kernel each (conv1 has no input gradient)

INFERENCE, TRAIN_STEP, GRAPHED_STEP = "inference", "train-step", "train-step-graphed"
FUSED_GRAPHED_STEP = "train-step-fused-graphed"
STEP = "step"


def storage_name(dtype: torch.dtype) -> str:
    """torch's name of a storage dtype: torch.bfloat16 -> "bfloat16"."""
    return str(dtype).removeprefix("torch.")
