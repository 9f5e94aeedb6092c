"""A zero-copy send queue for a non-blocking socket, shared by the target's and the host's
NVMe/TCP queues.

PDUs are queued as lists of buffers (header bytes plus memoryviews of staging or caller
memory, never joined) and leave with one ``sendmsg`` per event-loop iteration, or at once when
``flush_at`` buffers are waiting.  A flush of ``unpreempted_from`` bytes or more runs under
``SCHED_FIFO`` (:mod:`nvmf.transport.unpreempted`), so that a receiver it wakes on this CPU
takes the whole of it in one turn.  What the kernel does not take stays queued, as memoryviews of
the remainder, until the socket is writable.  A ``done`` callback runs once every byte of its PDU
is in the kernel: that is when a staging buffer may be reused.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Callable

from nvmf.transport import unpreempted

#: Buffers handed to one sendmsg (below the kernel's IOV_MAX of 1024).
IOV_MAX = 512
#: A target queue's ``unpreempted_from``: one segment's worth (loopback's MTU, TSO's largest).
#: A smaller flush wakes its receiver once, as it ends, where being preempted costs nothing.
UNPREEMPTED_BYTES = 64 << 10


class SendQueue:
    """Outgoing buffers of one socket; ``on_error`` is told of a failed send, once.
    ``unpreempted_from``: the least bytes waiting for a flush to run under ``SCHED_FIFO``
    (None: never)."""

    def __init__(
        self,
        sock: socket.socket,
        loop: asyncio.AbstractEventLoop,
        on_error: Callable[[OSError], None],
        *,
        flush_at: int | None = None,
        unpreempted_from: int | None = None,
    ) -> None:
        self.sock = sock
        self.loop = loop
        self.on_error = on_error
        self.flush_at = flush_at
        self.unpreempted_from = unpreempted_from
        self.closed = False
        self._out: deque[bytes | memoryview] = deque()
        self._queued = 0  # bytes ever queued
        self._sent = 0  # bytes ever sent
        self._done: deque[tuple[int, Callable[[], None]]] = deque()
        self._flush_scheduled = False
        self._writing = False

    @property
    def sent(self) -> int:
        """Bytes the kernel has taken, ever (grows as the peer reads)."""
        return self._sent

    @property
    def pending(self) -> int:
        """Bytes queued and not yet taken by the kernel."""
        return self._queued - self._sent

    def send(self, bufs: list[bytes | memoryview], done: Callable[[], None] | None = None) -> int:
        """Queue one PDU's buffers; ``done`` runs once the kernel has all of them.  Returns the
        bytes now queued and not yet sent (:attr:`pending`)."""
        out = self._out
        out.extend(bufs)
        self._queued += sum(map(len, bufs))
        if done is not None:
            self._done.append((self._queued, done))
        if self._writing:
            pass  # the writer callback sends it when the socket drains
        elif self.flush_at is not None and len(out) >= self.flush_at:
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)
        return self._queued - self._sent

    def flush(self) -> None:
        """Send what the kernel takes now; wait for writability for the rest."""
        self._flush_scheduled = False
        if self.closed:
            return
        big = self.unpreempted_from
        if big is not None and self._queued - self._sent >= big and unpreempted.enter():
            try:
                self._send()
            finally:
                unpreempted.leave()
        else:
            self._send()

    def _send(self) -> None:
        out = self._out
        sendmsg = self.sock.sendmsg
        while out:
            whole = len(out) <= IOV_MAX
            iov = list(out) if whole else [out[i] for i in range(IOV_MAX)]
            try:
                n = sendmsg(iov)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as exc:
                self.on_error(exc)
                return
            self._advance(n)
            # Whole queue sent in one go: a partial send leaves something in it.
            if out if whole else n < sum(len(b) for b in iov):
                if not self._writing:
                    self._writing = True
                    self.loop.add_writer(self.sock.fileno(), self.flush)
                return
        if self._writing:
            self._writing = False
            self.loop.remove_writer(self.sock.fileno())

    def _advance(self, n: int) -> None:
        """Drop ``n`` sent bytes from the queue; run the callbacks of fully sent PDUs."""
        self._sent += n
        out = self._out
        if self._sent == self._queued:  # all of it: the usual case, no buffer to walk
            out.clear()
            n = 0
        while n and out:
            head = out[0]
            if len(head) <= n:
                n -= len(head)
                out.popleft()
            else:
                out[0] = memoryview(head)[n:]
                n = 0
        done = self._done
        while done and done[0][0] <= self._sent:
            done.popleft()[1]()

    async def drained(self) -> None:
        """Until every queued byte is in the kernel (a queue about to be handed over)."""
        while self._out and not self.closed:
            self.flush()
            if self._out:
                await asyncio.sleep(0.001)

    def close(self) -> None:
        """Stop sending (the caller closes the socket): drop what is queued and run every
        pending callback, so their buffers are released."""
        if self.closed:
            return
        self.closed = True
        if self._writing:
            self._writing = False
            try:
                self.loop.remove_writer(self.sock.fileno())
            except (ValueError, OSError):
                pass
        self._out.clear()
        while self._done:
            self._done.popleft()[1]()
