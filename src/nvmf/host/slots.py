"""What every host queue keeps of its outstanding commands, whatever the transport.

An NVMe queue has ``depth`` command identifiers (CIDs); the host side of a queue, NVMe/TCP's
(:mod:`nvmf.host.queue`) and NVMe/RDMA's (:mod:`nvmf.host.rdma_queue`) alike, lends one to each
command from submission to completion, makes submitters wait in order when all are lent
(the controller may not see more than SQSIZE commands at once), fails every one of them when the
queue ends, and ends the queue when one is older than the I/O timeout (what the Linux host's
error recovery does).  :class:`CidTable` and :class:`Watchdog` are that bookkeeping, written
once; the queues add only how a command travels.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from nvmf.host.errors import NvmeError, TransportError
from nvmf.wire.status import Status

#: Bits of the 15-bit status field that make a status an error: SC (7:0) and SCT (10:8).
STATUS_CODE_MASK = 0x7FF


class Outstanding(Protocol):
    """What the table reads of a command: its CID, when it was sent, what its submitter
    awaits."""

    cid: int
    start: float
    future: asyncio.Future[Any]


C = TypeVar("C", bound=Outstanding)


class CidTable(Generic[C]):
    """The CIDs ``0 .. depth-1`` of one queue: which command holds each, which are free, and
    the submitters waiting (first come, first served) for one to come free."""

    __slots__ = ("completed", "entries", "free", "loop", "outstanding", "waiters")

    def __init__(self, depth: int, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        #: The command holding each CID (None: free or waiting to be taken).
        self.entries: list[C | None] = [None] * depth
        self.free: deque[int] = deque(range(depth))
        self.waiters: deque[asyncio.Future[int]] = deque()
        #: Commands submitted and not completed (including those whose submitter gave up).
        self.outstanding = 0
        #: Commands completed so far (traffic-based keep-alive reads it).
        self.completed = 0

    async def take(self) -> int:
        """A free CID, waiting for one if all are lent.  A submitter cancelled after it was
        handed a CID passes that CID on, so none is lost."""
        if self.free:
            return self.free.popleft()
        waiter: asyncio.Future[int] = self.loop.create_future()
        self.waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.give(waiter.result())
            raise

    def hold(self, cmd: C) -> None:
        """``cmd`` is outstanding under its CID (taken with :meth:`take`)."""
        self.entries[cmd.cid] = cmd
        self.outstanding += 1

    def get(self, cid: int) -> C | None:
        """The command outstanding under ``cid``, None for a CID out of range or not lent (a
        controller answering a command it was never sent)."""
        return self.entries[cid] if cid < len(self.entries) else None

    def release(self, cid: int) -> None:
        """The command under ``cid`` completed: the CID goes to the next submitter."""
        self.entries[cid] = None
        self.outstanding -= 1
        self.completed += 1
        self.give(cid)

    def give(self, cid: int) -> None:
        """A free CID goes to the oldest submitter waiting for one, else to the free list."""
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(cid)
                return
        self.free.append(cid)

    def fail(self, exc: BaseException) -> None:
        """The queue ended: every outstanding command and every waiting submitter gets
        ``exc``."""
        for i, cmd in enumerate(self.entries):
            if cmd is not None:
                self.entries[i] = None
                if not cmd.future.done():
                    cmd.future.set_exception(exc)
        self.outstanding = 0
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(exc)

    def older_than(self, limit: float) -> C | None:
        """An outstanding command sent before ``limit`` (``time.monotonic()``), if any."""
        for cmd in self.entries:
            if cmd is not None and cmd.start < limit:
                return cmd
        return None


class Watchdog:
    """Ends a queue whose oldest command is older than ``timeout`` seconds: checks a few times
    per timeout, and calls ``expire`` with the error to fail the queue with."""

    __slots__ = ("expire", "handle", "loop", "name", "table", "timeout")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        table: CidTable[Any],
        timeout: float,
        expire: Callable[[TransportError], object],
        name: str,
    ) -> None:
        self.loop = loop
        self.table = table
        self.timeout = timeout
        self.expire = expire
        self.name = name
        self.handle: asyncio.TimerHandle | None = None

    def arm(self) -> None:
        self.handle = self.loop.call_later(min(1.0, self.timeout / 4), self._check)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def _check(self) -> None:
        cmd = self.table.older_than(time.monotonic() - self.timeout)
        if cmd is None:
            self.arm()
            return
        self.handle = None
        self.expire(
            TransportError(f"{self.name}: command cid {cmd.cid} timed out after {self.timeout:g} s")
        )


def byte_view(buf: bytes | bytearray | memoryview, writable: bool) -> memoryview:
    """``buf`` as a flat byte memoryview (no copy); a read's buffer must be writable."""
    if type(buf) is memoryview and buf.format == "B" and buf.ndim == 1:
        if writable and buf.readonly:
            raise TypeError("read buffer must be writable (bytearray, memoryview of one, mmap)")
        return buf
    view = memoryview(buf)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    if writable and view.readonly:
        raise TypeError("read buffer must be writable (bytearray, memoryview of one, mmap)")
    return view


def raise_for_status(status_field: int, dw0: int, command: str) -> None:
    """Raise :class:`NvmeError` when the completion's 15-bit status field is an error."""
    if status_field & STATUS_CODE_MASK:
        raise NvmeError(Status.decode(status_field), command=command, raw=status_field, result=dw0)
