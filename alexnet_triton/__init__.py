"""AlexNet on hand-written Triton kernels.

Importing any part of the package fixes the execution mode first (GPU, or
Triton's CPU interpreter when no GPU is present): ``alexnet_triton.kernels``
imports its ``runtime`` before anything imports Triton.
"""

from . import nn, ops, optim
from .kernels import runtime

__all__ = ["ops", "nn", "optim", "runtime"]
