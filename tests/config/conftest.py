"""Fixtures of the configuration tests, and the repository on ``sys.path``.

``pytest`` started as a script (``.venv/bin/pytest``) does not put the repository on
``sys.path``, so ``from tests.guest.harness import ...`` would fail; add it here, once.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[2])
if REPO not in sys.path:
    sys.path.insert(0, REPO)
