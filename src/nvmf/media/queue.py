"""Media queues: one process's submission path to a medium, without a coroutine per I/O.

The media contract (docs/architecture.md): ``open_queue() -> MediaQueue``, one per data-plane
process per namespace (the hardware's one SSD SQ/CQ pair per offload context).
:meth:`MediaQueue.submit` starts a Read, Write or Flush and either finishes it at once and
returns its NVMe status (RAM and null media: a copy is cheaper than any hand-off), or returns
None and calls ``done`` with the status later, on the event loop's thread (files and block
devices: a thread pool runs ``preadv``/``pwritev``). Nothing is allocated per I/O beyond what
the thread hand-off needs.

Statuses are NVMe's: Unrecovered Read Error for a failed read, Write Fault for a failed write or
flush (retryable: DNR clear), as :mod:`nvmf.offload.io` returned them before.  A range outside
the medium raises ``ValueError``: the command handler checks ranges first, so that is a bug.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Protocol

from nvmf.media.base import MediaError
from nvmf.memory.staging import StagingPool
from nvmf.wire.opcodes import IoOpcode
from nvmf.wire.status import SC, SUCCESS, Status

if TYPE_CHECKING:
    from nvmf.media.file import DescriptorMedia

log = logging.getLogger(__name__)

READ = int(IoOpcode.READ)
WRITE = int(IoOpcode.WRITE)
FLUSH = int(IoOpcode.FLUSH)

READ_ERROR = Status(SC.READ_ERROR, dnr=False)
WRITE_FAULT = Status(SC.WRITE_FAULT, dnr=False)

#: ``done(tag, status)``: how an I/O that did not finish at once reports.
Done = Callable[[Any, Status], None]


class MediaQueue(Protocol):
    """A process's queue on one medium."""

    #: The medium's own bytes, when the medium *is* memory this process maps (RAM): the fabric
    #: then moves a Read's or a Write's payload straight out of and into it, with no staging
    #: buffer and no copy (DESIGN.md, "zero copy on the hot path"; the software counterpart of
    #: staging in an SSD's CMB).  Read-only memory serves Reads only: a Write goes through a
    #: staging buffer and :meth:`submit` (null media: the zero page, where writes vanish).
    #: None for media behind a file or a device.
    memory: memoryview | None
    #: The staging pool a command on this medium must take its buffer from, when the medium
    #: can only move payload from particular memory (an SSD's DMA: a VFIO-mapped DRAM region
    #: or its CMB); None: the fabric queue's own pool.
    pool: StagingPool | None

    def submit(
        self, op: int, offset: int, buf: memoryview | None, fua: bool, done: Done, tag: Any
    ) -> Status | None:
        """Start ``op`` (:data:`READ` into ``buf``, :data:`WRITE` from ``buf``, :data:`FLUSH`
        with ``buf`` None) at byte ``offset``.  Return the status if it finished already (then
        ``done`` is never called), else None and call ``done(tag, status)`` once, on the event
        loop's thread, when the medium is done with ``buf``.  ``fua``: the write is durable when
        it completes."""
        ...


class SyncMedia(Protocol):
    """A medium whose reads and writes are memory copies (RAM, null)."""

    def read_into(self, offset: int, buf: memoryview) -> None: ...
    def write_from(self, offset: int, buf: memoryview) -> None: ...


class SyncQueue:
    """:class:`MediaQueue` of a medium that completes every I/O at once."""

    memory: memoryview | None = None
    pool: StagingPool | None = None

    def __init__(self, media: SyncMedia) -> None:
        self._read = media.read_into
        self._write = media.write_from

    def submit(
        self, op: int, offset: int, buf: memoryview | None, fua: bool, done: Done, tag: Any
    ) -> Status | None:
        if op == READ:
            assert buf is not None
            self._read(offset, buf)
        elif op == WRITE:
            assert buf is not None
            self._write(offset, buf)
        return SUCCESS  # FLUSH: no volatile cache in front of memory


class ThreadQueue:
    """:class:`MediaQueue` of a descriptor medium: the blocking call runs on the medium's thread
    pool and its completion comes back to the event loop with one ``call_soon_threadsafe``."""

    memory: memoryview | None = None
    pool: StagingPool | None = None

    def __init__(self, media: DescriptorMedia, loop: asyncio.AbstractEventLoop) -> None:
        self.media = media
        self.loop = loop

    def submit(
        self, op: int, offset: int, buf: memoryview | None, fua: bool, done: Done, tag: Any
    ) -> Status | None:
        media = self.media
        if op == READ:
            assert buf is not None
            media.check_io(offset, buf)
            fut = media.executor.submit(media.read_sync, offset, buf)
            failed = READ_ERROR
        elif op == WRITE:
            assert buf is not None
            media.check_io(offset, buf)
            fut = media.executor.submit(media.write_sync, offset, buf, fua)
            failed = WRITE_FAULT
        else:
            fut = media.executor.submit(media.flush_sync)
            failed = WRITE_FAULT
        call_soon = self.loop.call_soon_threadsafe

        def finished(f: Future[None]) -> None:
            call_soon(_deliver, f, done, tag, failed, media, op, offset)

        fut.add_done_callback(finished)
        return None


def _deliver(
    f: Future[None],
    done: Done,
    tag: Any,
    failed: Status,
    media: DescriptorMedia,
    op: int,
    offset: int,
) -> None:
    exc = f.exception()
    if exc is None:
        done(tag, SUCCESS)
        return
    if isinstance(exc, OSError) and not isinstance(exc, MediaError):
        log.warning("%s: opcode %#x at %d failed: %s", media.path, op, offset, exc)
    elif not isinstance(exc, OSError):
        log.error("%s: opcode %#x at %d: %r", media.path, op, offset, exc)
    done(tag, failed)
