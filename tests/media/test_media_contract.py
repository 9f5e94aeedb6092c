"""The :class:`~nvmf.media.base.Media` contract, checked on every media type that stores data.

Each test runs for ``ram``, ``file`` (buffered and ``O_DIRECT``) and ``block`` (buffered and
``O_DIRECT``, on a loop device); see ``conftest.open_media``.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from nvmf.media.base import Media
from tests.media.mediatest import SIZE, Buffer, Opener

BS = 512


def test_is_a_media(open_media: Opener) -> None:
    media = open_media()
    assert isinstance(media, Media)
    assert media.size == SIZE
    assert media.block_size == BS
    assert media.kind in ("ram", "file", "block")


@pytest.mark.parametrize(
    ("offset", "length"),
    [
        (0, BS),
        (BS, BS),
        (7 * BS, 8 * BS),
        (4096, 4096),
        (3 * BS, 33 * BS),
        (123 * BS, (1 << 20) + BS),
        (SIZE - BS, BS),
        (SIZE - (1 << 20), 1 << 20),
        (0, SIZE),
    ],
)
def test_round_trip(open_media: Opener, buffer: Buffer, offset: int, length: int) -> None:
    """What is written at any block offset and length reads back intact, and nothing else moves."""
    media = open_media()
    data = os.urandom(length)
    wbuf = buffer(length)
    wbuf[:] = data
    before, after = buffer(BS), buffer(BS)

    async def run() -> None:
        await media.write(offset, wbuf)
        rbuf = buffer(length)
        await media.read(offset, rbuf)
        assert rbuf == data
        if offset >= BS:  # the neighbours were never written: still zero
            await media.read(offset - BS, before)
            assert before == bytes(BS)
        if offset + length + BS <= SIZE:
            await media.read(offset + length, after)
            assert after == bytes(BS)

    asyncio.run(run())


def test_unwritten_reads_zero(open_media: Opener, buffer: Buffer) -> None:
    media = open_media()
    buf = buffer(1 << 20)
    buf[:] = b"\xff" * len(buf)  # the read must overwrite, not skip, never-written ranges
    asyncio.run(media.read(5 * BS, buf))
    assert buf == bytes(len(buf))


@pytest.mark.parametrize("op", ["deallocate", "write_zeroes"])
@pytest.mark.parametrize(
    ("start", "length"),
    [(0, 64 << 10), (BS, BS), (3 * BS, 20 * BS), (4096, 8192), (BS, (256 << 10) - 2 * BS)],
)
def test_zeroing_ops(open_media: Opener, buffer: Buffer, op: str, start: int, length: int) -> None:
    """Deallocate and Write Zeroes zero exactly their range; the bytes around it survive."""
    media = open_media()
    span = 512 << 10
    data = os.urandom(span)
    buf = buffer(span)
    buf[:] = data
    expected = bytearray(data)
    expected[start : start + length] = bytes(length)

    async def run() -> None:
        await media.write(0, buf)
        await getattr(media, op)(start, length)
        out = buffer(span)
        await media.read(0, out)
        assert out == expected

    asyncio.run(run())


def test_fua_and_flush(open_media: Opener, buffer: Buffer) -> None:
    """A FUA write and a Flush complete, and the data is there afterwards."""
    media = open_media()
    buf = buffer(64 << 10)
    buf[:] = os.urandom(len(buf))

    async def run() -> None:
        await media.write(BS * 9, buf, fua=True)
        await media.flush()
        out = buffer(len(buf))
        await media.read(BS * 9, out)
        assert out == buf

    asyncio.run(run())


def test_concurrent_requests(open_media: Opener, buffer: Buffer) -> None:
    """64 writes in flight at once, then 64 reads in flight at once: every block lands right."""
    media = open_media()
    n, chunk = 64, 16 << 10
    data = [os.urandom(chunk) for _ in range(n)]
    wbufs = [buffer(chunk) for _ in range(n)]
    rbufs = [buffer(chunk) for _ in range(n)]
    for w, d in zip(wbufs, data, strict=True):
        w[:] = d
    # Interleave the offsets so neighbouring requests land far apart and out of order.
    offsets = [((i * 37) % n) * chunk for i in range(n)]

    async def run() -> None:
        await asyncio.gather(*(media.write(o, w) for o, w in zip(offsets, wbufs, strict=True)))
        await asyncio.gather(*(media.read(o, r) for o, r in zip(offsets, rbufs, strict=True)))

    asyncio.run(run())
    for r, d in zip(rbufs, data, strict=True):
        assert r == d


@pytest.mark.parametrize(("offset", "length"), [(-BS, BS), (SIZE - BS, 2 * BS), (SIZE, BS)])
def test_out_of_range_is_a_bug(
    open_media: Opener, buffer: Buffer, offset: int, length: int
) -> None:
    media = open_media()
    with pytest.raises(ValueError, match="outside"):
        asyncio.run(media.read(offset, buffer(length)))
    with pytest.raises(ValueError, match="outside"):
        asyncio.run(media.write(offset, buffer(length)))
    with pytest.raises(ValueError, match="outside"):
        asyncio.run(media.deallocate(offset, length))
    with pytest.raises(ValueError, match="outside"):
        asyncio.run(media.write_zeroes(offset, length))
