"""Makes ``alexnet_triton`` importable when a script here runs from a plain checkout (no install step).

``python experiments/x.py`` puts only ``experiments/`` on ``sys.path``; this adds the repository root in front of
it, so the checkout's package wins over any installed copy. Every script imports this module before the package.
Every script but train.py runs the performance study: without the study's extra, such a script ends with one
``error: ...`` line (the study's ImportError: what is missing, how to install it) and status 2.
"""

import runpy
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SCRIPT = Path(sys.argv[0]).resolve()  # the script run (pytest or `python -c` when this is not a script of ours)
if SCRIPT.parent == REPO / "experiments" and SCRIPT.suffix == ".py" and SCRIPT.name != "train.py":
    # The study's own dependency check, run on its own: importing the package here would fix the execution mode
    # before a script sets it (inspect_kernels.py, gpu_study.py --rehearse).
    try:
        runpy.run_path(str(REPO / "alexnet_triton" / "study" / "__init__.py"))
    except ImportError as error:
        if error.name != "alexnet_triton.study":  # not the study's missing extra
            raise
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
