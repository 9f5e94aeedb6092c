"""A target whose file and block media acknowledge FUA and Flush without making anything durable.

Only for the durability test's negative control: a process started with this folder on
``PYTHONPATH`` imports it at startup (and so does any process it spawns, which inherits the
environment), so the whole pipeline (kernel host, target, dm-log-writes, replay, check) is shown
to fail on a target that lies.  It says so on stderr so the test can tell it took effect.
"""

from __future__ import annotations

import sys
from typing import Any

from nvmf.media import file

# Both I/O paths of a descriptor medium end in _write_sync (the coroutine API through its thread
# pool, the data plane's media queue directly); Flush is flush() on one, flush_sync() on the other.
_write_sync = file.DescriptorMedia._write_sync


def _write_ignoring_fua(self: Any, offset: int, buf: memoryview, fua: bool) -> None:
    _write_sync(self, offset, buf, False)


async def _flush_nothing(self: Any) -> None:
    return None


def _flush_sync_nothing(self: Any) -> None:
    return None


file.DescriptorMedia._write_sync = _write_ignoring_fua  # type: ignore[method-assign]
file.DescriptorMedia.flush = _flush_nothing  # type: ignore[method-assign]
file.DescriptorMedia.flush_sync = _flush_sync_nothing  # type: ignore[method-assign]
print("nvmf test: lying media: FUA and Flush are ignored", file=sys.stderr)
