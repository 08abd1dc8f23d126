"""Triton kernels and their launchers, one op per module; installed as ``alexnet_triton.kernels``.

``runtime`` is imported first, whichever kernel module is asked for: it fixes
the execution mode (and sets TRITON_INTERPRET) before Triton is imported.
"""

if __name__ != "alexnet_triton.kernels":
    # A second name would be a second module object: a second autotune cache, launch-capture hook and interpreter
    # set-up (and a top-level ``kernels`` shadows the unrelated PyPI package of that name).
    raise ImportError(f"import the kernels as alexnet_triton.kernels, not as {__name__!r}", name=__name__)

from . import runtime  # noqa: E402, F401
