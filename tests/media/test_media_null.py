"""``null`` media: writes vanish, reads are zeroes, ranges are still checked."""

from __future__ import annotations

import asyncio

import pytest

from nvmf.media.base import Media
from nvmf.media.null import ZERO_CHUNK, NullMedia, zero_fill
from tests.media.mediatest import SIZE, Buffer


def test_writes_vanish_reads_are_zero(null_media: NullMedia, buffer: Buffer) -> None:
    assert isinstance(null_media, Media)
    assert (null_media.kind, null_media.size, null_media.volatile_write_cache) == (
        "null",
        SIZE,
        False,
    )
    data = buffer(3 * ZERO_CHUNK + 512)  # more than one zero chunk: the fill loops
    data[:] = b"\xab" * len(data)

    async def run() -> None:
        await null_media.write(0, data, fua=True)
        await null_media.flush()
        await null_media.write_zeroes(0, 4096)
        await null_media.deallocate(0, 4096)
        await null_media.read(0, data)

    asyncio.run(run())
    assert data == bytes(len(data))
    null_media.close()


def test_ranges_are_checked(null_media: NullMedia, buffer: Buffer) -> None:
    with pytest.raises(ValueError, match="outside"):
        asyncio.run(null_media.read(SIZE - 512, buffer(1024)))
    with pytest.raises(ValueError, match="outside"):
        asyncio.run(null_media.write(SIZE, buffer(512)))
    with pytest.raises(ValueError, match="outside"):
        asyncio.run(null_media.deallocate(-512, 512))


def test_zero_fill_of_a_slice() -> None:
    buf = bytearray(b"\x01" * 10)
    zero_fill(memoryview(buf)[2:7])
    assert buf == b"\x01\x01" + bytes(5) + b"\x01\x01\x01"
