"""The :class:`~nvmf.media.base.Media` contract, checked on every media type that stores data.

Each test runs for ``ram``, ``file`` (buffered and ``O_DIRECT``) and ``block`` (buffered and
``O_DIRECT``, on a loop device); see ``conftest.open_media``.  Sharing a medium with another
process (``Media.share`` and ``nvmf.media.factory.adopt_media``, what offload workers do) is
checked for those and for ``null``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys

import pytest

from nvmf.media.base import Media
from nvmf.media.factory import adopt_media
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


# -- share() and adopt_media(): one medium served by two processes -----------------------------

#: A child process that adopts a shared medium, checks what the parent wrote, writes a pattern
#: of its own, and exits 0 only if all of that worked.
CHILD = """
import asyncio, json, mmap, sys
from nvmf.media.base import MediaHandle
from nvmf.media.factory import adopt_media

args = json.loads(sys.argv[1])
media = adopt_media(MediaHandle(**args["handle"]), args["fd"])

def buffer(n):
    return memoryview(mmap.mmap(-1, n))  # page aligned, as staging buffers are (O_DIRECT)

async def run():
    seen = buffer(args["length"])
    await media.read(args["parent_offset"], seen)
    if bytes(seen) != bytes.fromhex(args["parent_data"]):
        sys.exit("child: the parent's write is not there")
    mine = buffer(args["length"])
    mine[:] = bytes([args["byte"]]) * args["length"]
    await media.write(args["child_offset"], mine)
    await media.flush()

asyncio.run(run())
media.close()
"""


def adopt_dup(media: Media) -> Media:
    """The medium adopted in this process, as a worker would from a duplicate of its fd."""
    handle, fd = media.share()
    return adopt_media(handle, None if fd is None else os.dup(fd))


def test_share_handle_describes_the_medium(open_media: Opener) -> None:
    media = open_media()
    handle, fd = media.share()
    assert (handle.kind, handle.size, handle.block_size) == (
        media.kind,
        media.size,
        media.block_size,
    )
    assert handle.volatile_write_cache == media.volatile_write_cache
    assert fd is not None and os.fstat(fd)  # a live descriptor goes with every stored medium
    adopted = adopt_dup(media)
    try:
        assert (adopted.kind, adopted.size, adopted.block_size) == (
            media.kind,
            media.size,
            media.block_size,
        )
        assert adopted.volatile_write_cache == media.volatile_write_cache
    finally:
        adopted.close()


def test_adopted_in_process_sees_the_same_bytes(open_media: Opener, buffer: Buffer) -> None:
    """Writes through either one read back through the other; Deallocate through the adopted
    one zeroes what the original reads."""
    media = open_media()
    adopted = adopt_dup(media)
    a, b = os.urandom(64 << 10), os.urandom(64 << 10)

    async def run() -> None:
        wbuf = buffer(len(a))
        wbuf[:] = a
        await media.write(0, wbuf)
        rbuf = buffer(len(a))
        await adopted.read(0, rbuf)
        assert rbuf == a, "the adopted medium does not see the original's write"
        wbuf[:] = b
        await adopted.write(1 << 20, wbuf)
        await adopted.flush()
        await media.read(1 << 20, rbuf)
        assert rbuf == b, "the original does not see the adopted medium's write"
        await adopted.deallocate(0, 8192)
        await media.read(0, rbuf)
        assert rbuf[:8192] == bytes(8192) and rbuf[8192:] == a[8192:]

    try:
        asyncio.run(run())
    finally:
        adopted.close()


def test_closing_the_adopted_medium_leaves_the_original_working(
    open_media: Opener, buffer: Buffer
) -> None:
    media = open_media()
    adopted = adopt_dup(media)
    adopted.close()
    adopted.close()  # twice is harmless too
    data = os.urandom(16 << 10)

    async def run() -> None:
        wbuf = buffer(len(data))
        wbuf[:] = data
        await media.write(BS * 3, wbuf)
        await media.flush()
        rbuf = buffer(len(data))
        await media.read(BS * 3, rbuf)
        assert rbuf == data

    asyncio.run(run())
    # And it can still be shared again: its descriptor is its own, not the adopted one's.
    again = adopt_dup(media)
    again.close()


def test_adopted_in_a_child_process(open_media: Opener, buffer: Buffer) -> None:
    """A spawned process (as offload workers are) given the descriptor with ``pass_fds``
    reads what this one wrote, and what it writes is read here."""
    media = open_media()
    handle, fd = media.share()
    assert fd is not None
    parent = os.urandom(8192)
    parent_offset, child_offset, length = 4096, 2 << 20, len(parent)

    async def write_parent() -> None:
        wbuf = buffer(length)
        wbuf[:] = parent
        await media.write(parent_offset, wbuf)
        await media.flush()

    asyncio.run(write_parent())
    child_fd = os.dup(fd)
    try:
        args = {
            "handle": dataclasses.asdict(handle),
            "fd": child_fd,
            "parent_offset": parent_offset,
            "parent_data": parent.hex(),
            "child_offset": child_offset,
            "length": length,
            "byte": 0xA5,
        }
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(args)],
            pass_fds=[child_fd],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        os.close(child_fd)
    assert proc.returncode == 0, proc.stderr
    rbuf = buffer(length)
    asyncio.run(media.read(child_offset, rbuf))
    assert rbuf == b"\xa5" * length, "the child's write is not here"


def test_null_share_and_adopt(null_media: Media, buffer: Buffer) -> None:
    """A null medium shares no descriptor; the adopted one is null too, and closing it leaves
    the original as it was."""
    handle, fd = null_media.share()
    assert fd is None and handle.kind == "null" and handle.size == null_media.size
    adopted = adopt_media(handle, None)
    assert (adopted.kind, adopted.size, adopted.block_size) == ("null", SIZE, BS)
    buf = buffer(4096)

    async def run() -> None:
        buf[:] = b"\xff" * 4096
        await adopted.write(0, buf)
        await null_media.read(0, buf)
        assert buf == bytes(4096)
        adopted.close()
        buf[:] = b"\xff" * 4096
        await null_media.read(0, buf)
        assert buf == bytes(4096)

    asyncio.run(run())
