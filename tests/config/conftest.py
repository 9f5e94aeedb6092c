"""Fixtures shared by the configuration tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

SAVED = Path(__file__).parent / "data" / "nvmetcli_save_6.12.json"


@pytest.fixture
def saved() -> dict[str, Any]:
    """A fresh copy of what ``nvmetcli save`` writes on 6.12 (see data/)."""
    return json.loads(SAVED.read_text())  # type: ignore[no-any-return]
