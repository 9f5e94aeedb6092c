"""The CID bookkeeping every host queue shares (nvmf.host.slots): lending, waiting in order,
passing on a CID a cancelled submitter was handed, failing everything when the queue ends, and
the I/O timeout watchdog."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from nvmf.host.errors import NvmeError, TransportError
from nvmf.host.slots import CidTable, Watchdog, byte_view, raise_for_status
from nvmf.wire.status import SC


class _Cmd:
    def __init__(self, cid: int, loop: asyncio.AbstractEventLoop, start: float = 0.0) -> None:
        self.cid = cid
        self.start = start or time.monotonic()
        self.future: asyncio.Future[Any] = loop.create_future()


def _run(body: Callable[[asyncio.AbstractEventLoop], Awaitable[None]]) -> None:
    async def main() -> None:
        await body(asyncio.get_running_loop())

    asyncio.run(main())


def test_cids_are_lent_once_and_waiters_served_in_order() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        table: CidTable[_Cmd] = CidTable(2, loop)
        a, b = await table.take(), await table.take()
        assert {a, b} == {0, 1}
        table.hold(_Cmd(a, loop))
        table.hold(_Cmd(b, loop))
        first = asyncio.ensure_future(table.take())
        second = asyncio.ensure_future(table.take())
        await asyncio.sleep(0)
        assert not first.done() and len(table.waiters) == 2 and table.outstanding == 2
        table.release(b)
        assert await first == b and not second.done()
        table.release(a)
        assert await second == a and not table.free and table.outstanding == 0

    _run(body)


def test_a_cid_handed_to_a_cancelled_submitter_goes_to_the_next() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        table: CidTable[_Cmd] = CidTable(1, loop)
        table.hold(_Cmd(await table.take(), loop))
        first = asyncio.ensure_future(table.take())
        second = asyncio.ensure_future(table.take())
        await asyncio.sleep(0)
        table.release(0)  # handed to ``first``, which is cancelled before it runs
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await second == 0

    _run(body)


def test_get_rejects_cids_out_of_range_or_not_lent() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        table: CidTable[_Cmd] = CidTable(2, loop)
        cmd = _Cmd(await table.take(), loop)
        table.hold(cmd)
        assert table.get(cmd.cid) is cmd
        assert table.get(1) is None and table.get(2) is None and table.get(0xFFFF) is None

    _run(body)


def test_fail_ends_every_command_and_waiter_with_the_error() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        table: CidTable[_Cmd] = CidTable(1, loop)
        cmd = _Cmd(await table.take(), loop)
        table.hold(cmd)
        waiter = asyncio.ensure_future(table.take())
        await asyncio.sleep(0)
        err = TransportError("gone")
        table.fail(err)
        assert cmd.future.exception() is err
        with pytest.raises(TransportError, match="gone"):
            await waiter
        assert table.outstanding == 0 and table.entries == [None]

    _run(body)


def test_watchdog_expires_only_with_a_command_older_than_the_timeout() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        table: CidTable[_Cmd] = CidTable(2, loop)
        expired: list[TransportError] = []
        dog = Watchdog(loop, table, 0.2, expired.append, "q1")
        table.hold(_Cmd(await table.take(), loop))  # fresh: not expired yet
        dog.arm()
        await asyncio.sleep(0.06)
        assert not expired
        table.hold(_Cmd(await table.take(), loop, start=time.monotonic() - 5))
        await asyncio.sleep(0.15)
        assert len(expired) == 1 and "cid 1 timed out after 0.2 s" in str(expired[0])
        assert dog.handle is None  # it does not go on checking a failed queue

    _run(body)


def test_raise_for_status_raises_only_for_errors() -> None:
    raise_for_status(0, 0, "read")  # success
    raise_for_status(1 << 14, 0, "read")  # DNR alone is not an error status
    with pytest.raises(NvmeError) as err:
        raise_for_status(int(SC.INVALID_FIELD) | (1 << 14), 7, "read")
    assert err.value.code == SC.INVALID_FIELD and err.value.result == 7


def test_byte_view_needs_a_writable_buffer_for_reads() -> None:
    assert byte_view(b"abc", False).tobytes() == b"abc"
    assert byte_view(memoryview(bytearray(8)).cast("Q"), True).nbytes == 8
    with pytest.raises(TypeError, match="writable"):
        byte_view(b"abc", True)
