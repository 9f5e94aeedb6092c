"""The :class:`~nvmf.media.queue.MediaQueue` contract (``Media.open_queue()``), on every medium.

Each test runs for ``ram``, ``file`` and ``block`` (buffered and ``O_DIRECT``): a submitted Read,
Write or Flush finishes either at once (its status returned, ``done`` never called) or later
(None returned, ``done(tag, status)`` called once on the event loop); the bytes it moves are the
medium's bytes; and where a queue offers the medium's own memory (``memory``: RAM), that memory
*is* the medium, in both directions, which is what lets the pipeline move payload in place.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from nvmf.media.queue import FLUSH, READ, WRITE, MediaQueue
from nvmf.media.ram import RamMedia
from nvmf.wire.status import SUCCESS, Status
from tests.media.mediatest import SIZE, Buffer, Opener


async def _submit(
    queue: MediaQueue, op: int, offset: int, buf: memoryview | None, fua: bool = False
) -> Status:
    """One operation, to its status, checking the at-once/later rule on the way."""
    calls: list[tuple[Any, Status]] = []
    finished = asyncio.Event()

    def done(tag: Any, status: Status) -> None:
        calls.append((tag, status))
        finished.set()

    tag = object()
    now = queue.submit(op, offset, buf, fua, done, tag)
    if now is not None:
        await asyncio.sleep(0.01)  # a late callback would show here
        assert calls == []
        return now
    await asyncio.wait_for(finished.wait(), 10)
    await asyncio.sleep(0.01)
    assert len(calls) == 1 and calls[0][0] is tag
    return calls[0][1]


@pytest.mark.parametrize("fua", [False, True])
def test_write_then_read_through_the_queue(open_media: Opener, buffer: Buffer, fua: bool) -> None:
    media = open_media()
    data = os.urandom(128 * 1024)
    wbuf, rbuf = buffer(len(data)), buffer(len(data))
    wbuf[:] = data

    async def run() -> None:
        queue = media.open_queue()
        assert await _submit(queue, WRITE, 4096, wbuf, fua) is SUCCESS
        assert await _submit(queue, FLUSH, 0, None) is SUCCESS
        assert await _submit(queue, READ, 4096, rbuf) is SUCCESS
        assert rbuf == data
        back = buffer(len(data))  # ... and the medium itself has them
        await media.read(4096, back)
        assert back == data

    asyncio.run(run())


def test_a_range_outside_the_medium_is_a_bug(open_media: Opener, buffer: Buffer) -> None:
    media = open_media()

    async def run() -> None:
        queue = media.open_queue()
        with pytest.raises(ValueError):
            queue.submit(READ, SIZE - 512, buffer(1024), False, lambda *_: None, None)

    asyncio.run(run())


def test_memory_when_offered_is_the_medium_itself(open_media: Opener, buffer: Buffer) -> None:
    media = open_media()

    async def run() -> None:
        queue = media.open_queue()
        memory = queue.memory
        if media.kind != "ram":  # behind a file or a device: payload goes through staging
            assert memory is None
            return
        assert memory is not None and len(memory) == media.size and not memory.readonly
        data = os.urandom(8192)
        memory[65536 : 65536 + 8192] = data  # written in place ...
        back = buffer(8192)
        await media.read(65536, back)  # ... is what the medium reads
        assert back == data
        wbuf = buffer(4096)
        wbuf[:] = os.urandom(4096)
        await media.write(1 << 20, wbuf)  # and what the medium stores shows in place
        assert memory[1 << 20 : (1 << 20) + 4096] == wbuf

    asyncio.run(run())


def test_closing_a_ram_medium_with_its_memory_still_in_use() -> None:
    """A Read served in place may still be queued on a socket as a view of the medium when the
    namespace goes away (removed by a reload): closing must not fail, and the view stays
    readable until dropped."""
    media = RamMedia(SIZE)
    memory = media.open_queue().memory
    assert memory is not None
    memory[4096:8192] = b"\x5a" * 4096
    pending = memory[4096:8192]
    media.close()
    assert bytes(pending) == b"\x5a" * 4096
