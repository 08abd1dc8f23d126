"""The performance study's machinery, one subpackage per role, each importing only the ones listed before it:

  vocabulary    the names of the networks, passes, phases and dtypes, used by all of them
  registries    layer kinds, providers, GPUs, benchmark cases: what every other part reads
  measure       measurements without a GPU: memory, traffic, torch.compile's partition, host cost, conformance
  inspection    ahead-of-time compilation per GPU target and what the binaries hold
  models        cost, roofline, loop and step lower bounds (models, not measurements)
  presentation  benchmark figures and summary, reports/README.md
  benchmarks    the GPU benchmark harness and correctness check

The CLIs in ``experiments/`` are thin wrappers around these modules; the tests run them on the CPU. The study needs
pandas and matplotlib (the ``study`` extra); without them, importing it raises one ImportError that names what is
missing and how to install it. This file imports nothing else, so experiments/_checkout.py can run the same check
without importing the package.
"""

import importlib.util

_MISSING = [name for name in ("pandas", "matplotlib") if importlib.util.find_spec(name) is None]
if _MISSING:
    raise ImportError(f"the performance study (alexnet_triton.study) needs {' and '.join(_MISSING)} (not installed): "
                      f'pip install -e ".[study]", or in a plain checkout pip install {" ".join(_MISSING)}',
                      name="alexnet_triton.study")
