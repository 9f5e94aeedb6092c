"""Hypothesis: random sequences of writes, deallocates, zeroings and reads against a bytearray.

Every read must return exactly what the model holds.  Ranges are whole 512-byte blocks placed
anywhere, so RAM media exercise both the page-aligned ``MADV_REMOVE`` interior and the edges
zeroed by copying, and file media punch holes that start and end inside filesystem blocks.
"""

from __future__ import annotations

import asyncio
import mmap
import tempfile
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nvmf.media.base import Media
from nvmf.media.file import FileMedia
from nvmf.media.ram import RamMedia

BS = 512
BLOCKS = 96  # 48 KiB: twelve 4 KiB pages, so ranges cross page boundaries often
SIZE = BLOCKS * BS

Op = tuple[str, int, int, int]


@st.composite
def operation(draw: st.DrawFn) -> Op:
    """(name, first block, block count, fill byte)."""
    name = draw(st.sampled_from(["write", "write", "deallocate", "write_zeroes", "read"]))
    start = draw(st.integers(0, BLOCKS - 1))
    count = draw(st.integers(1, BLOCKS - start))
    return name, start, count, draw(st.integers(1, 255))


async def check(media: Media, ops: list[Op]) -> None:
    model = bytearray(SIZE)
    staging = mmap.mmap(-1, SIZE)  # page aligned, as the staging pool's buffers are
    view = memoryview(staging)
    try:
        for name, start, count, fill in ops:
            offset, length = start * BS, count * BS
            with view[:length] as buf:
                if name == "write":
                    buf[:] = bytes([fill]) * length
                    await media.write(offset, buf, fua=fill % 7 == 0)
                    model[offset : offset + length] = buf
                elif name == "read":
                    await media.read(offset, buf)
                    assert buf == model[offset : offset + length], (name, start, count)
                else:
                    await getattr(media, name)(offset, length)
                    model[offset : offset + length] = bytes(length)
        await media.read(0, view)  # finally, the whole namespace
        assert view == model
    finally:
        view.release()
        staging.close()


def run_against(make: Callable[[Path], Media], ops: list[Op]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        media = make(Path(tmp))
        try:
            asyncio.run(check(media, ops))
        finally:
            media.close()


MODEL_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@MODEL_SETTINGS
@given(st.lists(operation(), min_size=1, max_size=30))
def test_ram_matches_the_model(ops: list[Op]) -> None:
    run_against(lambda tmp: RamMedia(SIZE), ops)


@MODEL_SETTINGS
@given(st.lists(operation(), min_size=1, max_size=30))
def test_file_matches_the_model(ops: list[Op]) -> None:
    run_against(lambda tmp: FileMedia(tmp / "ns.img", size=SIZE, io_threads=2), ops)


@MODEL_SETTINGS
@given(st.lists(operation(), min_size=1, max_size=30))
def test_direct_file_matches_the_model(ops: list[Op]) -> None:
    run_against(lambda tmp: FileMedia(tmp / "ns.img", size=SIZE, direct=True, io_threads=2), ops)
