"""Suite-wide pytest settings."""

from __future__ import annotations

import pytest

#: Guest tests boot a VM under emulation, and the first test that asks for a shared boot's
#: result (tests.guest.harness.shared_boot) waits for every part of it: pyproject's 900 s per
#: test would cut a boot short.  The harness's own boot timeout bounds them instead.
GUEST_TEST_TIMEOUT = 3600


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("guest") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(GUEST_TEST_TIMEOUT))
