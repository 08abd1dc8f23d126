"""The mixed-precision policy, one for training and the benchmarks.

Parameters stay fp32. The Triton path takes its activations in the low dtype from the images on (each layer
casts its fp32 weights to the activations' dtype per step: ``AlexNet._fuse``); the PyTorch path runs its
forward under ``torch.autocast``, which casts per op. No loss scaling here (training adds a GradScaler for fp16).
"""

from __future__ import annotations

import contextlib

import torch

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def model_input(images: torch.Tensor, backend: str, dtype: torch.dtype | None) -> torch.Tensor:
    """The images as the model takes them: in ``dtype`` on the Triton path, unchanged on PyTorch's."""
    return images.to(dtype) if backend == "triton" and dtype is not None else images


def forward_context(backend: str, device_type: str, dtype: torch.dtype | None):
    """torch.autocast to ``dtype`` on the PyTorch path when it is a low dtype; nothing otherwise."""
    if backend == "triton" or dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype)
