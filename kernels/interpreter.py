"""Triton's CPU interpreter made right for this project's kernels, on every Triton version the project supports.

``runtime`` calls ``prepare()`` once, after it has set ``TRITON_INTERPRET=1``. Each fix is applied where the
installed versions need it, checked by version or by the interpreter's own behaviour, never pinned to a release
(tests/test_interpreter.py checks each one on the installed Triton):

- Triton imported first (any version): ``@triton.jit`` decides at decoration time whether it builds a compiler
  function or an interpreted one, so when a user's script imports Triton before this package, Triton's own
  library functions (``tl.cdiv``, ``tl.sum``'s combine function, ``tl.rand``, ...) were built for the compiler
  and fail inside interpreted kernels ("Cannot call @triton.jit'd outside of the scope of a kernel"). The
  modules that define them are reloaded, now interpreted, and names bound to the old functions elsewhere in
  Triton are rebound.
- bf16 (3.6, 3.7: wherever the interpreter holds bf16 as raw uint16): it multiplies those integers in
  ``tl.dot`` and truncates fp32 -> bf16 casts. A GPU multiplies bf16 exactly, accumulates in fp32 and rounds
  to nearest-even; the fix does the same in numpy. Loads, stores and bf16 -> fp32 casts are already right.
- numpy >= 2.4 with Triton < 3.7: a runtime loop bound is a 1-element array that reaches ``int()``, which
  numpy 2.4 refuses for arrays of rank > 0; Triton 3.7 squeezes it first, and so does the fix.
"""

from __future__ import annotations

import importlib
import sys

import numpy as np
import triton


def prepare() -> list[str]:
    """Apply every fix this Triton and numpy need; returns their names."""
    from triton.runtime import interpreter

    applied = []
    if _rebuild_library():
        applied.append("library rebuilt for the interpreter")
    if interpreter._get_np_dtype(triton.language.bfloat16) == np.uint16:  # 3.6, 3.7: bf16 held as raw bits
        _fix_bf16(interpreter)
        applied.append("bf16 dot and rounding")
    if version(triton.__version__) < (3, 7) and version(np.__version__) >= (2, 4):
        _fix_scalar_index(interpreter)
        applied.append("0-d loop bounds for numpy >= 2.4")
    return applied


def version(text: str) -> tuple[int, int]:
    """(major, minor) of a version string: (3, 7) for "3.7.1"."""
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


def _rebuild_library() -> bool:
    """Rebuild Triton's compiler-built library functions as interpreted ones; False when there were none."""
    from triton.runtime.jit import JITFunction

    def jit_functions(module):
        return {name: value for name, value in vars(module).items() if isinstance(value, JITFunction)}

    triton_modules = {name: module for name, module in sys.modules.items()
                      if module is not None and (name == "triton" or name.startswith("triton."))}
    defining = {name: module for name, module in triton_modules.items()
                if any(f.fn.__module__ == name for f in jit_functions(module).values())}
    if not defining:
        return False
    rebuilt = {}
    for module in defining.values():
        stale = jit_functions(module)
        importlib.reload(module)  # re-decorates: TRITON_INTERPRET is now set
        rebuilt.update({id(function): getattr(module, attr) for attr, function in stale.items()})
    for module in triton_modules.values():  # e.g. triton.language's `from .standard import cdiv`
        for attr, value in list(vars(module).items()):
            if id(value) in rebuilt and value is not rebuilt[id(value)]:
                setattr(module, attr, rebuilt[id(value)])
    return True


def _fix_bf16(interpreter) -> None:
    tl = triton.language
    builder = interpreter.InterpreterBuilder
    original_dot, original_cast = builder.create_dot, builder.cast_impl

    def bf16_bits_to_fp32(handle):
        return interpreter.TensorHandle((handle.data.astype(np.uint32) << 16).view(np.float32), tl.float32)

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if a.dtype == tl.bfloat16 and b.dtype == tl.bfloat16:
            a, b = bf16_bits_to_fp32(a), bf16_bits_to_fp32(b)
        return original_dot(self, a, b, d, input_precision, max_num_imprecise_acc)

    def cast_impl(self, src, dst_type):
        if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
            bits = src.data.astype(np.float32).view(np.uint32)
            rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
            return interpreter.TensorHandle(np.where(np.isnan(src.data), np.uint16(0x7FC0), rounded), tl.bfloat16)
        return original_cast(self, src, dst_type)

    builder.create_dot, builder.cast_impl = create_dot, cast_impl


def _fix_scalar_index(interpreter) -> None:
    patch_tensor = interpreter._patch_lang_tensor  # looked up by name at every interpreted call

    def patch_lang_tensor(tensor, scope):
        patch_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    interpreter._patch_lang_tensor = patch_lang_tensor
