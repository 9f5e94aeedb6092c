"""NVMe/TCP transport (NVMe/TCP Transport Specification 1.0) on non-blocking sockets.

The event loop's ``add_reader``/``add_writer`` drive plain sockets so that payload is received
with ``recv_into`` straight into staging buffers (the sans-IO :class:`TcpConnection` says where)
and sent with ``sendmsg`` from a header plus memoryviews of staging buffers, never joined.  A
buffer is released only once the kernel has taken every byte of it.

Completions produced in one loop iteration are flushed together by one ``sendmsg``
(:class:`~nvmf.transport.sendqueue.SendQueue`).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import socket
import termios
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nvmf.memory.staging import StagingBuffer
from nvmf.protocol import tcp as p
from nvmf.protocol.request import Request, map_incapsule
from nvmf.transport.base import DataDone, QueueExport, TransportCaps, end_queue_on_bug
from nvmf.transport.sendqueue import UNPREEMPTED_BYTES, SendQueue
from nvmf.wire.sqe import (
    FLAGS_CHECKED,
    OFF_DPTR,
    OFF_FLAGS,
    PSDT_SGL_MPTR_CONTIG,
    SGL_DATA_BLOCK_TRANSPORT,
    SGL_INCAPSULE,
    SGL_TCP_TRANSPORT,
    Sqe,
)
from nvmf.wire.status import SC, SUCCESS, Status, error
from nvmf.wire.tcp import Fes, load_crc32c

if TYPE_CHECKING:
    from nvmf.transport.base import (
        FabricQueue,
        ListenPort,
        Placement,
        QueueOwner,
        QueuePlacer,
        QueueState,
    )

log = logging.getLogger(__name__)

#: A command whose host data failed its digest completes with this (retryable).
_TRANSIENT = Status(SC.TRANSIENT_TR_ERR)
#: What an unused request holds until a capsule loads it.
_BLANK_SQE = bytes(64)

#: MAXH2CDATA we offer: the most data one H2CData PDU may carry.
MAXH2CDATA = 1 << 20
#: Reads per readable event before yielding to other connections.
READS_PER_EVENT = 32
#: Seconds a C2HTermReq may wait behind unsent data (a host that does not read) before the
#: connection is closed without it.
TERM_DEADLINE = 0.5
#: Where bytes still unread at close are discarded (one buffer for every queue).
_DISCARD = bytearray(64 << 10)
#: Commands a queue takes in before its Connect told the SQ size (the admin queue's depth).
DEPTH_BEFORE_CONNECT = 32
#: Bytes queued for sending above which a queue stops reading commands (the host does not
#: read); it reads again once below half of it.
SEND_PAUSE_BYTES = 8 << 20
#: Seconds between two housekeeping passes over a transport's queues.
SWEEP_INTERVAL = 1.0
#: How long a queue about to close waits for the host to acknowledge what it was sent
#: (:meth:`TcpQueue.drained`): a host that reads nothing does not hold a stop for longer.
DELIVERY_WAIT_S = 2.0
#: And how long it then leaves the host to take what it acknowledged before the close.
HOST_SETTLE_S = 0.1
#: Default seconds a connection may wait for its ICReq, for its Connect, or for the rest of a
#: PDU it started (NvmfSettings.idle_timeout_ms).
IDLE_TIMEOUT = 30.0


class TcpQueue:
    """One NVMe/TCP connection on the target: a :class:`FabricQueue` and a DataPlacement."""

    def __init__(
        self,
        sock: socket.socket,
        port: ListenPort,
        owner: QueueOwner,
        on_close: Callable[[TcpQueue], None],
        imported: dict[str, Any] | None = None,
        unpreempted: bool = False,
    ) -> None:
        self.sock = sock
        self.port = port
        self.owner = owner
        self.loop = asyncio.get_running_loop()
        self.conn = p.TcpConnection(
            p.Role.CONTROLLER,
            self,
            max_incapsule=port.inline_data_size,
            maxh2cdata=MAXH2CDATA,
            on_command=self._command,
            on_filled=self._filled,
        )
        if imported is not None:
            self.conn.import_state(imported)
        self.session: QueueState = owner.open_queue(self, port)
        self.session.in_place = not self.conn.ddgst  # an imported queue's digests are known
        #: Commands submitted whose completion is not yet in the kernel (at most sqsize + 1).
        self._inflight = 0
        #: Requests whose completion is queued, in sending order (their done callbacks' order).
        self._unsent: deque[Request] = deque()
        self.conn.capsule_credit = self._depth()
        #: The queue's requests not in use: one per command it may hold, reused (Request.load).
        self._free = [Request(_BLANK_SQE) for _ in range(self._depth())]
        #: Reading stays off whatever the flow control says (a queue being handed over).
        self._hold = False
        self._resume_scheduled = False
        #: Bytes arrived since the last housekeeping pass; since when the queue waits for some.
        self._received = False
        self._waiting_since = self.loop.time()
        #: The send queue's bytes taken by the kernel and the kernel's bytes not yet
        #: acknowledged, at the last sweep, and since when neither moved while data waits to
        #: be sent (the host does not read).
        self._progress_at_sweep = (0, 0)
        self._sending_since = self._waiting_since
        self.peer = _peer(sock)
        self.closed = False
        #: A fatal error was found: the TermReq is queued, nothing else is read or sent.
        self.terminating = False
        self._on_close = on_close
        self._reading = True
        self._term_reason = ""
        self._term_timer: asyncio.TimerHandle | None = None
        #: In-capsule buffers placed by the codec, in the order their commands' events follow.
        self._incapsule: deque[StagingBuffer] = deque()
        #: The transfers still running, by the tag the codec gave their R2T: the command and
        #: the callback to run when its data is in (the codec keeps the windows and the tags).
        self._fetching: dict[int, tuple[Request, DataDone]] = {}
        self._sendq = SendQueue(
            sock,
            self.loop,
            self._send_failed,
            unpreempted_from=UNPREEMPTED_BYTES if unpreempted else None,
        )
        self.loop.add_reader(sock.fileno(), self._on_readable)
        if imported is not None and imported["pending"]:
            self.loop.call_soon(self._take_pending)

    # -- FabricQueue ---------------------------------------------------------------------------
    @property
    def qid(self) -> int:
        return self.session.qid or 0

    def local_address(self) -> tuple[str, str]:
        host, port = self.sock.getsockname()[:2]
        return str(host), str(port)

    def map_sgl(self, req: Request) -> Status:
        """The command's data as its SGL describes it: moved by R2T/H2CData or C2HData (a
        Transport SGL Data Block, as the Linux host writes it, or a Data Block with the
        transport specific subtype, as FreeBSD's does), in the capsule (a Data Block at offset
        0), or none (any descriptor of length 0: FreeBSD's host leaves a command without data
        a zeroed one, and the Linux target takes it)."""
        if req.flags & FLAGS_CHECKED != PSDT_SGL_MPTR_CONTIG:
            return error(SC.INVALID_FIELD, OFF_FLAGS)
        sgl_type = req.dptr_type
        if sgl_type in (SGL_TCP_TRANSPORT, SGL_DATA_BLOCK_TRANSPORT):
            if req.incapsule:
                return error(SC.SGL_INVALID_DATA, OFF_DPTR)
            req.sgl_length = req.dptr_length
            return SUCCESS
        if sgl_type == SGL_INCAPSULE:
            return map_incapsule(req)
        if not req.dptr_length and not req.incapsule:  # describes no data, whatever its type
            req.sgl_length = 0
            return SUCCESS
        return error(SC.SGL_INVALID_TYPE, OFF_DPTR + 15)

    def fetch_data(self, req: Request, done: DataDone) -> None:
        """R2T for the whole transfer; the codec places the H2CData PDUs in ``req.data`` and
        says when it is filled."""
        assert req.data is not None
        if self.closed or self.terminating:
            self.loop.call_soon(done, req, Status(SC.TRANSIENT_TR_ERR))
            return
        ttag, r2t = self.conn.open_transfer(req.cid, req.data)
        req.ttag = ttag
        self._fetching[ttag] = (req, done)
        self._sendq.send([r2t])

    def complete(self, req: Request, cqe: bytes) -> None:
        if self.closed or self.terminating:
            self._close_transfer(req)
            req.release()
            return
        self._unsent.append(req)
        status = req.status
        n = req.c2h_length
        if n and req.data is not None and (status is SUCCESS or status.ok):
            data = req.data if len(req.data) == n else req.data[:n]
            success = self.session.sqhd_disabled and status is SUCCESS
            bufs = self.conn.c2h_response(req.cid, data, None if success else cqe)
        else:
            bufs = [self.conn.capsule_resp(cqe)]
        if self._sendq.send(bufs, self._completion_sent) > SEND_PAUSE_BYTES:
            self._stop_reading()

    def _depth(self) -> int:
        """Commands this queue may hold in flight: SQSIZE + 1 once Connect told it."""
        sqsize = self.session.sqsize
        return sqsize + 1 if sqsize else DEPTH_BEFORE_CONNECT

    def _completion_sent(self) -> None:
        """The oldest queued completion is in the kernel: its command has left the queue, and
        its request and buffer are free."""
        req = self._unsent.popleft()
        if req.ttag >= 0:  # reserved until now: a repeated H2CData is out of range
            self.conn.close_transfer(req.ttag)  # as _close_transfer, inline
            req.ttag = -1
        staging = req.staging
        if staging is not None:
            req.staging = None
            staging.release()
        req.data = None
        self._free.append(req)
        self._inflight -= 1
        sqsize = self.session.sqsize  # as _depth(), inline: this runs for every command
        depth = sqsize + 1 if sqsize else DEPTH_BEFORE_CONNECT
        self.conn.capsule_credit = depth - self._inflight
        if not self._reading and not self._resume_scheduled and not self.closed:
            self._resume_scheduled = True  # not from inside the send queue's flush
            self.loop.call_soon(self._resume)

    def _resume(self) -> None:
        """Read again if flow control allows; parse the commands held back meanwhile."""
        self._resume_scheduled = False
        if self._reading or self.closed or self.terminating or self._hold:
            return
        if self.conn.capsule_held or self._sendq.pending > SEND_PAUSE_BYTES // 2:
            return  # a later completion tries again
        self._reading = True
        self.loop.add_reader(self.sock.fileno(), self._on_readable)
        self._take_pending()

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        log.info("tcp %s qid %s closed: %s", self.peer, self.session.qid, reason)
        if self._term_timer is not None:
            self._term_timer.cancel()
            self._term_timer = None
        self._sendq.close()
        self._stop_reading()
        self._discard_unread()
        self.sock.close()
        for req, done in self._fetching.values():
            self.loop.call_soon(done, req, Status(SC.TRANSIENT_TR_ERR))
        self._fetching.clear()
        while self._incapsule:
            self._incapsule.popleft().release()
        self.owner.queue_closed(self.session)
        self._on_close(self)

    async def export_state(self) -> QueueExport:
        """Hand this connection over: stop reading, wait until every queued byte is sent, then
        give out a duplicate of the socket and the codec's state; this side closes its own."""
        if self.closed or self.terminating:
            raise OSError("queue closed before it could be handed over")
        self._hold = True
        self._stop_reading()
        if self._fetching or self._incapsule:
            raise RuntimeError("a queue with commands in flight cannot be handed over")
        await self._sendq.drained()
        state = self.conn.export_state()
        fd = os.dup(self.sock.fileno())
        self.closed = True
        self._sendq.close()
        self.sock.close()
        self._on_close(self)
        return QueueExport(fd, state)

    async def drained(self) -> None:
        """Until everything queued for this connection is in the kernel, the host's TCP has
        acknowledged it (at most :data:`DELIVERY_WAIT_S`) and the host has had
        :data:`HOST_SETTLE_S` to take it, so that the close that follows loses nothing.

        Both waits were measured needed (a stopping target, the Linux host writing with 16
        threads, no reconnect): closing at once lost the completions of 13 of the 16 writes
        then in flight, which had reached the medium; a socket closed with unread data in it
        sends a reset, which discards what the kernel has not delivered.  Waiting for the
        acknowledgement left 4: the Linux host starts its error recovery when the connection
        ends and cancels the receive work that has not yet run, completions received with it.
        With the settle, none."""
        await self._sendq.drained()
        deadline = self.loop.time() + DELIVERY_WAIT_S
        while not self.closed and _unacked(self.sock) and self.loop.time() < deadline:
            await asyncio.sleep(0.005)
        if not self.closed:
            await asyncio.sleep(HOST_SETTLE_S)

    def send_cqe(self, cqe: bytes) -> None:
        """Send a completion of a command this process did not run (an imported queue's
        Connect, which the control plane executed)."""
        self._send([self.conn.capsule_resp(cqe)])

    # -- DataPlacement -------------------------------------------------------------------------
    def capsule_data(self, sqe: memoryview, length: int) -> memoryview:
        staging = self.session.pool.get(length)
        if staging is None:  # pool spent: in-capsule data is small, take it from the heap
            staging = StagingBuffer(None, memoryview(bytearray(length)), length)
        self._incapsule.append(staging)
        return staging.view

    def c2h_data(self, cccid: int, datao: int, datal: int) -> memoryview:
        raise self._fatal(Fes.PDU_SEQ_ERR, 0, "C2HData sent to a controller")

    def _fatal(self, fes: Fes, fei: int, reason: str) -> p.TcpFatalError:
        return p.TcpFatalError(fes, fei, b"", reason)

    # -- receive -------------------------------------------------------------------------------
    def _on_readable(self) -> None:
        conn = self.conn
        recv_into = self.sock.recv_into
        for _ in range(READS_PER_EVENT):
            if not self._reading:
                return
            buf = conn.get_buffer()
            want = len(buf)
            try:
                n = recv_into(buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.close(f"receive failed: {exc}")
                return
            if n == 0:
                self.close("host closed the connection")
                return
            self._received = True
            try:
                events = conn.buffer_updated(n)
                for ev in events:
                    self._handle(ev)
            except p.TcpFatalError as err:
                self._terminate(err)
                return
            except Exception:
                end_queue_on_bug(self, "handling what the host sent")
                return
            # A capsule beyond sqsize + 1 in flight: backpressure.  The credit is read first,
            # in line: it is spent only under a full queue, and this runs for every read.
            if conn.capsule_credit <= 0 and conn.capsule_held:
                self._stop_reading()
                return
            if n < want:
                return

    def sweep(self, recheck: bool, now: float, idle_timeout: float) -> None:
        """Housekeeping, every :data:`SWEEP_INTERVAL`.

        With ``recheck``, read as if the socket were readable: uvloop (libuv) reports a
        socket error (POLLERR, as a reset raises) by closing its poll handle without running
        the reader, so a queue reset while its reader waits would otherwise never notice and
        leak its socket and buffers.

        A queue still waiting for its ICReq or its Connect, for the rest of a PDU it started, or
        for the data of an R2T it sent, is closed once nothing arrived for ``idle_timeout``
        seconds; so is one whose host took none of what it has to send for that long (it does
        not read its completions).  Such a queue holds staging buffers that only its host can
        free (docs/data-plane.md, "What a worker owns")."""
        if recheck and self._reading:
            self._on_readable()
        if self.closed:
            return
        waiting = bool(self._fetching) or (
            self._reading
            and (not self.conn.established or self.session.qid is None or self.conn.mid_pdu)
        )
        if not waiting or self._received:
            self._received = False
            self._waiting_since = now
        elif now - self._waiting_since >= idle_timeout:
            if not self.conn.established:
                what = "an ICReq"
            elif self.conn.mid_pdu:
                what = "the rest of a PDU"
            elif self.session.qid is None:
                what = "a Connect"
            else:
                what = "the data of its R2Ts"
            self.close(f"waited {idle_timeout:g} s for {what}")
            return
        if not self._sendq.pending:  # nothing waits: no ioctl for an idle queue
            self._sending_since = now
            return
        # The host reads when the kernel takes more of what is queued, or when the kernel's own
        # queue shrinks (it takes more only once a good part of its buffer is free again).
        progress = (self._sendq.sent, _unacked(self.sock))
        if progress != self._progress_at_sweep:
            self._progress_at_sweep = progress
            self._sending_since = now
        elif now - self._sending_since >= idle_timeout:
            self.close(f"the host took nothing it was sent for {idle_timeout:g} s")

    def _take_pending(self) -> None:
        """Commands that arrived before this process took the connection over."""
        if self.closed or self.terminating:
            return
        try:
            for ev in self.conn.take_events():
                self._handle(ev)
        except p.TcpFatalError as err:
            self._terminate(err)
            return
        except Exception:
            end_queue_on_bug(self, "handling commands held back")
            return
        if self.conn.capsule_held:
            self._stop_reading()

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            try:
                self.loop.remove_reader(self.sock.fileno())
            except (ValueError, OSError):
                pass

    def _terminate(self, err: p.TcpFatalError) -> None:
        """A host protocol error: C2HTermReq with the fatal status, then close this queue.

        Never blocks: the TermReq is queued behind what is already queued and the queue closes
        once the kernel took it, or after :data:`TERM_DEADLINE` if the host does not read."""
        if self.closed or self.terminating:
            return
        log.warning("tcp %s: fatal transport error %s", self.peer, err)
        self.terminating = True
        self._stop_reading()
        self._term_reason = f"fatal transport error: {err}"
        self._term_timer = self.loop.call_later(
            TERM_DEADLINE, self.close, self._term_reason + " (TermReq not taken in time)"
        )
        self._send([self.conn.term_req(err)], self._term_sent)

    def _term_sent(self) -> None:
        """The TermReq is in the kernel (runs inside the send queue's flush: close after it).
        The FIN goes out right behind it, before the close, which may be a reset."""
        if not self.closed:
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self.loop.call_soon(self.close, self._term_reason)

    def _discard_unread(self) -> None:
        """Read and drop what the host sent and nobody will parse (within reason): closing a
        socket with unread bytes resets the connection and drops what is still unsent, such
        as a TermReq."""
        recv_into = self.sock.recv_into
        try:
            for _ in range(16):
                if not recv_into(_DISCARD):
                    return
        except OSError:
            pass

    def _command(self, sqe: memoryview | bytes, data: memoryview | None) -> None:
        """A capsule arrived (the codec's command sink): load a free request and submit it."""
        free = self._free
        if free:
            req = free.pop()
            req.load(sqe)
        else:  # more in flight than the queue's depth: only before a Connect set it
            req = Request(sqe)
        req.qid = self.session.qid or 0
        self._inflight += 1
        if data is not None:
            req.incapsule = True
            req.data = data
            req.staging = self._incapsule.popleft()
        self.owner.submit(self.session, req)

    def _filled(self, ttag: int, intact: bool) -> None:
        """The codec's H2C sink: the H2CData PDUs answering R2T ``ttag`` are checked against
        its window and all its data is placed (``intact``), or one of them failed its data
        digest: that command completes with Transient Transport Error.  The tag stays reserved
        until the command's completion is sent (:meth:`_close_transfer`)."""
        running = self._fetching.pop(ttag, None)
        if running is not None:  # None: the transfer failed already (a digest error)
            req, done = running
            done(req, SUCCESS if intact else _TRANSIENT)

    def _handle(self, ev: p.Event) -> None:
        if isinstance(ev, p.ICReqReceived):
            self._send([self.conn.accept_icreq(ev, hdgst=True, ddgst=True)])
            self.session.in_place = not self.conn.ddgst
            log.info(
                "tcp %s: connection initialized (hdgst=%d ddgst=%d hpda=%d)",
                self.peer,
                self.conn.hdgst,
                self.conn.ddgst,
                self.conn.hpda,
            )
        elif isinstance(ev, p.DataDigestError):
            self._data_digest_error(ev)
        elif isinstance(ev, p.TermReqReceived):
            self.close(f"host sent H2CTermReq (fes {ev.fes:#x})")
        else:
            raise self._fatal(Fes.PDU_SEQ_ERR, 0, f"unexpected {type(ev).__name__}")

    def _data_digest_error(self, ev: p.DataDigestError) -> None:
        """A capsule's data digest mismatch fails that command with Transient Transport Error
        (an H2CData PDU's goes to :meth:`_filled`)."""
        # Earlier capsules' events took theirs: the oldest buffer is this capsule's.
        self._incapsule.popleft().release()
        req = Request(Sqe(opcode=0, cid=ev.cccid), self.qid)
        self._inflight += 1
        self.owner.complete(self.session, req, Status(SC.TRANSIENT_TR_ERR))

    def _close_transfer(self, req: Request) -> None:
        """The command ``req`` is over: free its R2T's transfer tag, if it had one."""
        if req.ttag >= 0:
            self.conn.close_transfer(req.ttag)
            req.ttag = -1

    # -- send -----------------------------------------------------------------------------------
    def _send(self, bufs: list[bytes | memoryview], done: Callable[[], None] | None = None) -> None:
        """Queue one PDU's buffers; ``done`` runs once the kernel has all of them."""
        self._sendq.send(bufs, done)

    def _send_failed(self, exc: OSError) -> None:
        self.close(f"send failed: {exc}")


def _unacked(sock: socket.socket) -> int:
    """Bytes in the kernel's send queue of ``sock`` that the peer has not acknowledged
    (``SIOCOUTQ``); 0 once the socket is closed."""
    try:
        out = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0
    return int.from_bytes(out, "little")


def _peer(sock: socket.socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
        return f"{host}:{port}"
    except OSError:
        return "?"


#: First pause of a listener whose accept failed for want of descriptors or memory (seconds);
#: it doubles up to ACCEPT_BACKOFF_MAX while the shortage lasts.
ACCEPT_BACKOFF_MIN = 0.05
ACCEPT_BACKOFF_MAX = 1.0
#: accept(2) errors that concern only the connection being accepted: skip it, take the next.
_ACCEPT_ONE_CONNECTION_ERRORS = frozenset(
    {
        errno.ECONNABORTED,
        errno.EPROTO,
        errno.EPERM,
        errno.ENETDOWN,
        errno.ENOPROTOOPT,
        errno.EHOSTDOWN,
        errno.ENONET,
        errno.EHOSTUNREACH,
        errno.EOPNOTSUPP,
        errno.ENETUNREACH,
    }
)


class _Listener:
    """A port's listening socket, what its connections are served with, and its accept
    back-off: ``shortage_since`` is set while accept fails (one episode), ``backoff`` is the
    next pause."""

    __slots__ = ("backoff", "owner", "port", "queues", "shortage_since", "sock")

    def __init__(
        self, sock: socket.socket, port: ListenPort, owner: QueueOwner, queues: set[TcpQueue]
    ) -> None:
        self.sock = sock
        self.port = port
        self.owner = owner
        self.queues = queues
        self.backoff = ACCEPT_BACKOFF_MIN
        self.shortage_since: float | None = None


class TcpTransport:
    """NVMe/TCP ports: a listening socket per port, a :class:`TcpQueue` per connection."""

    trtype = "tcp"
    caps = TransportCaps(exportable=True)
    #: Queues are sized by their Connect here, not before it, and never placed.
    queue_limits = (0xFFFE, 0x10000)
    placer: QueuePlacer | None = None

    def __init__(self) -> None:
        # Digests are the host's choice at each ICReq: be ready before any connection waits.
        load_crc32c()
        self._listeners: dict[int, socket.socket] = {}
        #: Where each port listens (or listened, after :meth:`stop_accepting`).
        self._bound: dict[int, tuple[str, int]] = {}
        self._queues: dict[int, set[TcpQueue]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        #: Seconds a connection may wait for its ICReq, its Connect, or the rest of a PDU.
        self.idle_timeout = IDLE_TIMEOUT
        #: Whether queues made from now on send large flushes under SCHED_FIFO.
        self.unpreempted_sends = True

    def _start_sweeping(self) -> None:
        if self._sweeper is None:
            loop = asyncio.get_running_loop()
            # Selector loops (asyncio's own) run the reader on any socket error; others
            # (uvloop) may not, so their queues' sockets are rechecked on every pass.
            recheck = not isinstance(loop, asyncio.SelectorEventLoop)
            self._sweeper = loop.call_later(SWEEP_INTERVAL, self._sweep, loop, recheck)

    def _stop_sweeping(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _sweep(self, loop: asyncio.AbstractEventLoop, recheck: bool) -> None:
        now = loop.time()
        for queues in list(self._queues.values()):
            for queue in list(queues):
                if not queue.closed:
                    queue.sweep(recheck, now, self.idle_timeout)
        interval = min(SWEEP_INTERVAL, self.idle_timeout / 4)
        self._sweeper = loop.call_later(interval, self._sweep, loop, recheck)

    async def add_port(self, port: ListenPort, owner: QueueOwner) -> None:
        family = socket.AF_INET6 if port.adrfam == "ipv6" else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((port.traddr, int(port.trsvcid)))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise OSError(
                exc.errno,
                f"port {port.portid}: cannot listen on {port.traddr}:{port.trsvcid}: "
                f"{exc.strerror}",
            ) from exc
        self._listeners[port.portid] = sock
        host, number = sock.getsockname()[:2]
        self._bound[port.portid] = (str(host), int(number))
        queues: set[TcpQueue] = set()
        self._queues[port.portid] = queues
        loop = asyncio.get_running_loop()
        loop.add_reader(sock.fileno(), self._accept, _Listener(sock, port, owner, queues))
        self._start_sweeping()
        log.info("nvme/tcp port %d listening on %s:%s", port.portid, *self.bound_address(port))

    def _accept(self, lst: _Listener) -> None:
        """Take the connections waiting on a listening socket (a few per call).

        Out of descriptors (``EMFILE``, ``ENFILE``) or memory, ``accept`` fails and leaves the
        connection queued, so the socket stays readable and accepting on would spin.  The
        listener then pauses (see :meth:`_pause_accepting`); an error that belongs to the one
        connection it consumed (``ECONNABORTED`` and the network errors Linux passes on, see
        accept(2)) only skips that connection.  The episode ends when a connection is accepted
        again (an empty backlog says nothing about descriptors)."""
        accepted = False
        for _ in range(16):
            try:
                sock, _addr = lst.sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in _ACCEPT_ONE_CONNECTION_ERRORS:
                    continue
                self._pause_accepting(lst, exc)
                return
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                sock.close()  # gone before it was set up
                continue
            queue = TcpQueue(
                sock, lst.port, lst.owner, lst.queues.discard, unpreempted=self.unpreempted_sends
            )
            lst.queues.add(queue)
            accepted = True
        if accepted and lst.shortage_since is not None:
            log.info(
                "port %d: accepting connections again after %.1f s",
                lst.port.portid,
                asyncio.get_running_loop().time() - lst.shortage_since,
            )
            lst.shortage_since = None
            lst.backoff = ACCEPT_BACKOFF_MIN

    def _pause_accepting(self, lst: _Listener, exc: OSError) -> None:
        """Stop reading the listening socket for a back-off that doubles, from
        :data:`ACCEPT_BACKOFF_MIN` to :data:`ACCEPT_BACKOFF_MAX`, while accept keeps failing;
        log once per episode.  Connections meanwhile wait in the listen backlog."""
        loop = asyncio.get_running_loop()
        fd = lst.sock.fileno()
        if lst.shortage_since is None:
            lst.shortage_since = loop.time()
            log.warning(
                "port %d: cannot accept connections (%s); pausing new connections, retrying "
                "every %.2g s or less until it works",
                lst.port.portid,
                exc.strerror or exc,
                ACCEPT_BACKOFF_MAX,
            )
        else:
            lst.backoff = min(lst.backoff * 2, ACCEPT_BACKOFF_MAX)
        loop.remove_reader(fd)
        loop.call_later(lst.backoff, self._resume_accepting, lst)

    def _resume_accepting(self, lst: _Listener) -> None:
        """After a pause: accept again, unless the port was removed meanwhile."""
        if self._listeners.get(lst.port.portid) is not lst.sock:
            return
        asyncio.get_running_loop().add_reader(lst.sock.fileno(), self._accept, lst)
        self._accept(lst)

    def import_queue(self, export: QueueExport, port: ListenPort, owner: QueueOwner) -> TcpQueue:
        """Serve a connection another process handed over; it joins ``port``'s queues here."""
        sock = socket.socket(fileno=export.fd)
        sock.setblocking(False)
        queues = self._queues.setdefault(port.portid, set())
        queue = TcpQueue(
            sock,
            port,
            owner,
            queues.discard,
            imported=export.state,
            unpreempted=self.unpreempted_sends,
        )
        queues.add(queue)
        self._start_sweeping()
        return queue

    async def close_all(self) -> None:
        """Close every queue this transport serves (a worker stopping)."""
        self._stop_sweeping()
        for queues in list(self._queues.values()):
            for queue in list(queues):
                queue.close("target stopping")

    def stop_accepting(self, port: ListenPort) -> None:
        """Close the listening socket: a host connecting now is refused by the kernel."""
        sock = self._listeners.pop(port.portid, None)
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()

    async def remove_port(self, port: ListenPort) -> None:
        self.stop_accepting(port)
        self._bound.pop(port.portid, None)
        for queue in list(self._queues.pop(port.portid, set())):
            queue.close("port removed")
        if not self._listeners and not any(self._queues.values()):
            self._stop_sweeping()

    def adopt_placement(
        self, placement: Placement, owner: QueueOwner, ended: Callable[[str], None]
    ) -> tuple[FabricQueue, dict[str, Any]]:
        raise RuntimeError(f"{self.trtype} queues are handed over after Connect, not placed")

    def bound_address(self, port: ListenPort) -> tuple[str, int]:
        return self._bound[port.portid]
