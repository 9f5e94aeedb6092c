"""io_uring media queues: a descriptor medium's Read, Write and Flush through one ring per process.

The other :class:`~nvmf.media.queue.MediaQueue` of ``file`` and ``block`` media. Where
:class:`~nvmf.media.queue.ThreadQueue` hands each command to a thread that blocks in
``preadv``/``pwritev`` and wakes the event loop with ``call_soon_threadsafe``, this queue puts a
``READV``/``WRITEV``/``FSYNC`` entry on the process's ring, submits once per event-loop turn
however many commands came in it, and reaps completions when the ring's eventfd says there are
some: no thread switch, no future, a few calls per command.  Measured side by side through
the whole target (``bench/run.py`` section (e), ``bench/engines.py``), a file namespace in the
page cache cost 0.69 to 0.98 of the thread pool's target CPU per I/O; that measurement is why
``auto`` picks io_uring wherever the kernel, the CPU and the binding allow it.

The binding is the package index's ``liburing`` (an optional extra: ``pip install
'nvmf[uring]'``), which says it needs Linux 6.14 or later; on older kernels (Debian 12's 6.1
and its backports' 6.12), without the package, or where ``io_uring_setup`` is refused
(``kernel.io_uring_disabled``, a seccomp filter), :func:`~nvmf.media.uring_support.problem`
says why and ``auto`` uses threads.  The payload stays zero-copy: each entry's iovec points at
the staging buffer itself.
(The binding's fixed-buffer calls take only ``bytearray``s, not the staging pool's ``mmap``
memory, so buffers are not registered with the ring.)

Semantics are the thread queue's: a read past the end of a file (truncated behind our back)
reads zeroes for the missing part; a short read or write is continued from where it stopped;
FUA is ``RWF_DSYNC`` on the write; Flush is ``fdatasync`` (``IORING_FSYNC_DATASYNC``), which
covers every write that completed before it was submitted, as NVMe's Flush must.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections import deque
from typing import TYPE_CHECKING, Any

from nvmf.media import uring_support
from nvmf.media.null import zero_fill
from nvmf.media.queue import FLUSH, READ, READ_ERROR, WRITE_FAULT, Done
from nvmf.memory.staging import StagingPool
from nvmf.wire.status import SUCCESS, Status

if TYPE_CHECKING:
    from nvmf.media.file import DescriptorMedia

log = logging.getLogger(__name__)

#: Submission queue entries per ring; completions beyond the CQ's size wait in the kernel.
RING_ENTRIES = 256
#: How soon a submission the kernel refused as busy is tried again, in seconds.
RETRY_S = 0.0005


class _Io:
    """One command on the ring: what to continue or report when its completion comes."""

    __slots__ = ("buf", "done", "fua", "iov", "moved", "offset", "op", "tag")

    def __init__(
        self, op: int, offset: int, buf: memoryview | None, fua: bool, done: Done, tag: Any
    ) -> None:
        self.op = op
        self.offset = offset
        self.buf = buf
        self.fua = fua
        self.done = done
        self.tag = tag
        self.moved = 0  # bytes read or written so far
        self.iov: Any = None  # the binding's iovec: kept alive while the kernel holds it


class UringQueue:
    """:class:`~nvmf.media.queue.MediaQueue` of a descriptor medium on an io_uring ring."""

    memory: memoryview | None = None
    pool: StagingPool | None = None

    def __init__(
        self, media: DescriptorMedia, loop: asyncio.AbstractEventLoop, entries: int = RING_ENTRIES
    ) -> None:
        binding = uring_support.binding()
        if binding is None:
            raise OSError(errno.ENOTSUP, f"io_uring: {uring_support.problem()}")
        self._L = binding
        self.media = media
        self.loop = loop
        self._fd = media.fileno()
        self._ring = self._L.Ring()
        self._L.io_uring_queue_init(entries, self._ring)
        self._cqe = self._L.Cqe()
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._L.io_uring_register_eventfd(self._ring, self._efd)
        self._inflight: dict[int, _Io] = {}
        self._next_id = 0
        self._unsubmitted = False
        #: Commands the ring had no room for yet, in arrival order.
        self._backlog: deque[_Io] = deque()
        #: The timer of a submission the kernel refused as busy.
        self._retry: asyncio.TimerHandle | None = None
        self._closed = False
        loop.add_reader(self._efd, self._reap)

    # -- the MediaQueue contract -------------------------------------------------------------

    def submit(
        self, op: int, offset: int, buf: memoryview | None, fua: bool, done: Done, tag: Any
    ) -> Status | None:
        if op != FLUSH:
            assert buf is not None
            self.media.check_io(offset, buf)
        self._queue(_Io(op, offset, buf, fua, done, tag))
        return None

    # -- ring plumbing -----------------------------------------------------------------------

    def _queue(self, io: _Io) -> None:
        """Put ``io`` (what is left of it) on the ring; submitted at the end of this loop turn.
        When the ring takes no more now (its submission queue full and the kernel busy), ``io``
        waits in the backlog, in order, for a later submission."""
        if self._backlog or not self._place(io):
            self._backlog.append(io)
        self._schedule_submit()

    def _place(self, io: _Io) -> bool:
        """Fill a submission queue entry for ``io``; False when the ring has none free."""
        L = self._L
        sqe = L.io_uring_get_sqe(self._ring)
        if sqe is None:  # the submission queue is full: hand it to the kernel, then retry
            self._try_submit()
            sqe = L.io_uring_get_sqe(self._ring)
            if sqe is None:
                return False
        ident = self._next_id
        self._next_id = ident + 1
        if io.op == FLUSH:
            L.io_uring_prep_fsync(sqe, self._fd, L.IORING_FSYNC_DATASYNC)
        else:
            assert io.buf is not None
            io.iov = L.Iovec([io.buf[io.moved :]])
            if io.op == READ:
                L.io_uring_prep_readv(sqe, self._fd, io.iov, io.offset + io.moved)
            else:
                flags = L.RWF_DSYNC if io.fua else 0
                L.io_uring_prep_writev(sqe, self._fd, io.iov, io.offset + io.moved, flags)
        L.io_uring_sqe_set_data64(sqe, ident)
        self._inflight[ident] = io
        return True

    def _schedule_submit(self) -> None:
        if not self._unsubmitted:
            self._unsubmitted = True
            self.loop.call_soon(self._submit)

    def _submit(self) -> None:
        """Move what waits in the backlog onto the ring, then hand the new entries to the
        kernel; what still finds no room goes on when completions are reaped."""
        self._unsubmitted = False
        if self._closed:
            return
        backlog = self._backlog
        while backlog and self._place(backlog[0]):
            backlog.popleft()
        self._try_submit()

    def _try_submit(self) -> None:
        """``io_uring_submit``; a kernel that is busy (EBUSY, EAGAIN: completions it has not
        been able to post yet) is asked again a moment later, not an error of any command."""
        try:
            self._L.io_uring_submit(self._ring)
        except (BlockingIOError, InterruptedError):
            self._retry_soon()
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            self._retry_soon()

    def _retry_soon(self) -> None:
        if self._retry is None and not self._closed:
            self._retry = self.loop.call_later(RETRY_S, self._retry_submit)

    def _retry_submit(self) -> None:
        self._retry = None
        self._submit()

    def _reap(self) -> None:
        """Take every completion the ring holds (the eventfd said there are some)."""
        try:
            os.eventfd_read(self._efd)
        except BlockingIOError:
            pass
        L, ring, cqe = self._L, self._ring, self._cqe
        while True:
            try:
                L.io_uring_peek_cqe(ring, cqe)
            except BlockingIOError:
                if self._backlog:  # room on the ring again
                    self._schedule_submit()
                return
            entry = cqe[0]
            ident = entry.user_data
            try:
                res = entry.res
            except OSError as exc:  # the binding raises a failed entry's -errno
                res = -(exc.errno or errno.EIO)
            L.io_uring_cq_advance(ring, 1)
            io = self._inflight.pop(ident, None)
            if io is not None:
                self._complete(io, res)

    def _complete(self, io: _Io, res: int) -> None:
        if res < 0:
            self._failed(io, -res)
            return
        if io.op != FLUSH:
            assert io.buf is not None
            io.moved += res
            if io.moved < len(io.buf):
                if res == 0 and io.op == READ:  # end of file: the rest reads as zeroes
                    zero_fill(io.buf[io.moved :])
                elif res == 0:  # a write that moves nothing would loop for ever
                    self._failed(io, errno.EIO)
                    return
                else:  # short: continue from where it stopped
                    self._queue(io)
                    return
        io.iov = None
        io.done(io.tag, SUCCESS)

    def _failed(self, io: _Io, code: int) -> None:
        length = len(io.buf) if io.buf is not None else self.media.size
        log.warning(
            "%s: opcode %#x at %d+%d failed: %s",
            self.media.path,
            io.op,
            io.offset,
            length,
            os.strerror(code),
        )
        io.iov = None
        io.done(io.tag, READ_ERROR if io.op == READ else WRITE_FAULT)

    def close(self) -> None:
        """Wait for what the kernel still holds (its buffers may not be reused under it), then
        tear the ring down.  Completions that arrive now are not reported: the medium is going.
        Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._backlog.clear()  # never handed to the kernel: nothing to wait for
        L = self._L
        while self._inflight:
            try:  # what is still in the submission queue, so that its completion comes
                L.io_uring_submit(self._ring)
            except OSError:  # busy: the completion waited for next makes room
                pass
            L.io_uring_wait_cqe(self._ring, self._cqe)
            self._inflight.pop(self._cqe[0].user_data, None)
            L.io_uring_cq_advance(self._ring, 1)
        try:
            self.loop.remove_reader(self._efd)
        except (RuntimeError, ValueError):  # the loop is closed already
            pass
        L.io_uring_queue_exit(self._ring)
        os.close(self._efd)
