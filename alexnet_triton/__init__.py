"""AlexNet on hand-written Triton kernels.

Importing any part of the package fixes the execution mode first (GPU, or
Triton's CPU interpreter when no GPU is present): ``alexnet_triton.kernels``
imports its ``runtime`` before anything imports Triton.
"""

import importlib.util
import sys
from pathlib import Path


def _load_checkout_kernels() -> None:
    """Make the repository's top-level ``kernels/`` folder importable as ``alexnet_triton.kernels`` in a plain
    checkout (an install ships it there: ``package-dir`` in pyproject.toml). One import name, no symbolic link."""
    name = f"{__name__}.kernels"
    if importlib.util.find_spec(name) is not None:
        return
    folder = Path(__file__).resolve().parent.parent / "kernels"
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    if spec is None:
        raise ImportError(f"alexnet_triton: the kernels are missing (looked for {folder}); reinstall the package",
                          name=name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    globals()["kernels"] = module  # the attribute an import system that found it would have set


_load_checkout_kernels()

from . import nn, ops, optim  # noqa: E402
from .dispatch import disable, enable, use_kernels  # noqa: E402
from .kernels import runtime  # noqa: E402

__all__ = ["ops", "nn", "optim", "runtime", "use_kernels", "enable", "disable"]
