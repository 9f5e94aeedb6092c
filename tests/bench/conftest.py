"""``bench/`` on ``sys.path``: its modules import each other as top-level modules (``run.py``
is a script, not a package member)."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = str(Path(__file__).resolve().parents[2] / "bench")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)
