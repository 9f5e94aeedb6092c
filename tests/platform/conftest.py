"""The repository on ``sys.path`` (for ``tests.guest.harness`` and ``tests.platform.*``).

``pytest`` started as a script (``.venv/bin/pytest``) does not put the repository on ``sys.path``.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
