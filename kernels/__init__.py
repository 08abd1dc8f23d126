"""Triton kernels and their launchers, one op per module; installed as ``alexnet_triton.kernels``.

``runtime`` is imported first, whichever kernel module is asked for: it fixes
the execution mode (and sets TRITON_INTERPRET) before Triton is imported.
"""

from . import runtime  # noqa: F401
