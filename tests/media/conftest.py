"""Fixtures for the media tests: page-aligned buffers, loop devices, and one opener per media type.

Buffers come from anonymous ``mmap`` (page aligned), as the offload layer's staging buffers do, so
the same tests drive the ``O_DIRECT`` paths.  Block media run against real loop devices
(``losetup``); a machine that cannot make one fails these tests rather than skipping them.
"""

from __future__ import annotations

import mmap
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nvmf.media.base import Media
from nvmf.media.block import BlockMedia
from nvmf.media.file import FileMedia
from nvmf.media.null import NullMedia
from nvmf.media.ram import RamMedia
from tests.media.mediatest import SIZE, Buffer, Opener, direct_io_dir


@pytest.fixture
def buffer() -> Iterator[Buffer]:
    """Make page-aligned zeroed buffers of ``n`` bytes (``mmap``), unmapped after the test."""
    maps: list[mmap.mmap] = []
    views: list[memoryview] = []

    def make(n: int) -> memoryview:
        maps.append(mmap.mmap(-1, max(n, 1)))
        views.append(memoryview(maps[-1])[:n])
        return views[-1]

    yield make
    for view in views:
        view.release()
    for m in maps:
        try:
            m.close()
        except BufferError:  # a slice of it outlives the test (a traceback): unmapped with it
            pass


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[Callable[..., tuple[str, Path]]]:
    """Attach sparse backing files to loop devices: ``make(size, sector=512) -> (dev, backing)``."""
    attached: list[str] = []

    def make(size: int = SIZE, sector: int = 512) -> tuple[str, Path]:
        backing = tmp_path / f"loop{len(attached)}.img"
        with open(backing, "wb") as f:
            f.truncate(size)
        cmd = ["losetup", "-f", "--show", "-b", str(sector), str(backing)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.fail(f"block media tests need a loop device: {' '.join(cmd)}: {proc.stderr}")
        dev = proc.stdout.strip()
        attached.append(dev)
        return dev, backing

    yield make
    for dev in attached:
        subprocess.run(["losetup", "-d", dev], check=False)


#: "file" and "block" take the default engine (io_uring where the kernel allows it, see
#: nvmf.media.uring); the "-threads" kinds the thread pool, so the contract holds for both.
MEDIA_KINDS = [
    "ram",
    "file",
    "file-direct",
    "file-threads",
    "block",
    "block-direct",
    "block-threads",
]


@pytest.fixture(params=MEDIA_KINDS)
def open_media(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    loop_device: Callable[..., tuple[str, Path]],
) -> Iterator[Opener]:
    """Open a fresh ``SIZE``-byte media of the parametrized kind (storing ones only)."""
    opened: list[Media] = []
    kind: str = request.param
    engine = "threads" if kind.endswith("-threads") else "auto"

    def make() -> Media:
        media: Media
        if kind == "ram":
            media = RamMedia(SIZE)
        elif kind.startswith("file"):
            direct = kind.endswith("direct")
            where = direct_io_dir(tmp_path) if direct else tmp_path
            assert where is not None, "no directory here accepts O_DIRECT"
            media = FileMedia(
                where / f"ns{len(opened)}-{os.getpid()}.img",
                size=SIZE,
                direct=direct,
                io_engine=engine,
            )
        else:
            dev, _ = loop_device(SIZE)
            media = BlockMedia(dev, direct=kind.endswith("direct"), io_engine=engine)
        opened.append(media)
        return media

    yield make
    for media in opened:
        media.close()
        path = getattr(media, "path", None)
        if isinstance(media, FileMedia) and path and not path.startswith(str(tmp_path)):
            os.unlink(path)


@pytest.fixture
def null_media() -> NullMedia:
    return NullMedia(SIZE)
