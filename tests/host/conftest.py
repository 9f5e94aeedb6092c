"""The repository on ``sys.path`` so the host tests can import ``tests.host.fake`` and
``tests.guest.harness`` (``.venv/bin/pytest`` started as a script does not put it there)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[2])
if REPO not in sys.path:
    sys.path.insert(0, REPO)
