"""The private Triton API the study uses, in one place: how a real launch specialises a kernel, compiling that
specialisation ahead of time for a GPU target without one, and where Triton's wheel keeps its NVIDIA tools.

Not public API: checked against Triton 3.6.0, 3.7.1 and 3.9.0 (tests/test_inspection.py compiles through it;
CI runs it on 3.6.0 and 3.7.1). A release that changes these calls breaks here first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import create_function_from_signature

TESTED_TRITON = ("3.6.0", "3.7.1", "3.9.0")
# The NVIDIA tools bundled in Triton's wheel (a file layout, not an API): its own ptxas, and cuobjdump for SASS.
NVIDIA_TOOLS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
TRITON_PTXAS = NVIDIA_TOOLS / "ptxas"
CUOBJDUMP = NVIDIA_TOOLS / "cuobjdump"

__all__ = ["CUOBJDUMP", "GPUTarget", "Specialiser", "TRITON_PTXAS", "compile_for"]


class Specialiser:
    """Binds a @triton.jit kernel's launch arguments the way a launch on ``target`` would: the signature,
    constexprs, alignment/divisibility attributes and compile options that ``compile_for`` takes."""

    def __init__(self, target: GPUTarget):
        self.backend = make_backend(target)
        self._binders: dict[Any, Any] = {}

    def specialise(self, kernel, kwargs: dict[str, Any]) -> tuple[dict, dict, dict, dict]:
        """(signature, constexprs, attrs, options) of ``kernel`` launched with keyword ``kwargs`` (meta-parameters,
        num_warps and num_stages included)."""
        if kernel not in self._binders:
            self._binders[kernel] = create_function_from_signature(kernel.signature, kernel.params, self.backend)
        bound, specialization, options = self._binders[kernel](**kwargs)
        options, signature, constexprs, attrs = kernel._pack_args(self.backend, kwargs, bound, specialization,
                                                                   options)
        return signature, constexprs, attrs, options.__dict__


def compile_for(kernel, signature: dict, constexprs: dict, attrs: dict, target: GPUTarget, options: dict):
    """The compiled kernel (``.asm``, ``.metadata``) of one specialisation for ``target``."""
    return triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target, options=options)
