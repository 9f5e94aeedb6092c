"""The repository on ``sys.path`` (for ``tests.guest.harness`` and ``tests.platform.*``), and the
recorded system trees the doctor tests read.

``pytest`` started as a script (``.venv/bin/pytest``) does not put the repository on ``sys.path``.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

#: Recorded trees (see tests/data/sysfs/README.md).
SYSFS = REPO / "tests" / "data" / "sysfs"
