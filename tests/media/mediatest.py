"""Constants and helpers the media tests share (a module of its own: test modules cannot import
``conftest`` reliably, pytest swaps that name between directories)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from nvmf.media.base import Media

#: Capacity of every media the generic tests open.
SIZE = 16 << 20

Buffer = Callable[[int], memoryview]
Opener = Callable[[], Media]


def direct_io_dir(tmp_path: Path) -> Path | None:
    """A directory whose filesystem accepts ``O_DIRECT`` (tmp_path, else /var/tmp), or None."""
    for candidate in (tmp_path, Path("/var/tmp")):
        probe = candidate / f".nvmf-odirect-{os.getpid()}"
        try:
            fd = os.open(probe, os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o600)
        except OSError:
            continue
        os.close(fd)
        probe.unlink()
        return candidate
    return None
