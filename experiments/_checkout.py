"""Makes ``alexnet_triton`` importable when a script here runs from a plain checkout (no install step).

``python experiments/x.py`` puts only ``experiments/`` on ``sys.path``; this adds the repository root in front of
it, so the checkout's package wins over any installed copy. Every script imports this module before the package.
"""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
