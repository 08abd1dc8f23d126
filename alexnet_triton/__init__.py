"""AlexNet on hand-written Triton kernels.

Importing the package fixes the execution mode first (GPU, or Triton's CPU
interpreter when no GPU is present: see ``alexnet_triton.kernels.runtime``),
before anything imports Triton.
"""

from .kernels import runtime  # noqa: F401  (must run before Triton is imported)
from . import ops, nn  # noqa: E402

__all__ = ["ops", "nn", "runtime"]
