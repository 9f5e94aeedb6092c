"""An offload worker: one process per core that serves handed-over I/O queues.

The worker is the software counterpart of the NIC's offload context: it owns the fabric I/O
queues the control plane hands it after their Connect, a staging buffer pool, and its own view of
every namespace's medium (opened from the handles the control plane shares: the RAM medium's
memfd, a file's descriptor).  It executes Read, Write, Flush, Write Zeroes, Dataset Management
and Compare itself; for any other command on its queues it asks the control plane for the
status and still sends the completion (it is the only writer of its sockets).  Per I/O it sends
nothing to the control plane.

It is started by :class:`~nvmf.offload.workers.WorkerSet` as ``python -m nvmf.offload.worker``
(spawned, never forked from a process running threads), pinned to its core, and dies with the
control plane (``PR_SET_PDEATHSIG``).

Messages from the control plane (:mod:`nvmf.offload.channel`)::

    ("tally",)                          + [fd]   the slot's counter table (first, at spawn)
    ("media", key, handle, row)         + [fd...] serve a namespace's medium; count its I/O
                                                 in that row of the table
    ("media_close", key)                         drop it
    ("attach", Handover)                + [fd]   serve a queue (fd: its socket)
    ("context", ctrl_key, IoContextSpec)         replace a controller's I/O context
    ("detach", ctrl_key, qid | None, reason)     close a controller's queues (or one)
    ("status", token, Status)                    the answer to a forwarded command
    ("status_data", token, Status, bytes)        ... with the data it returns (Auth Receive)
    ("place", token, Placement)                  make a queue before its Connect (NVMe/RDMA)
    ("unplace", key, reason)                     close a placed queue (its connection ended)
    ("connected", token, cqe, Handover | None)   the answer to a placed queue's command
    ("authenticated", ctrl_key, qid)             a queue that was authenticating (its
                                                 Handover said so) succeeded: serve it; sent
                                                 before the answer to its last Auth command
    ("counters", token)                          report the counters
    ("traffic", token, ctrl_key)                 count the commands received on a
                                                 controller's queues (keep-alive)
    ("stop",)                                    finish in-flight commands, close, exit
    ("start",)                                   sent after the media at spawn: answer ready

The worker says ready only in answer to ``start``: the channel is in order, so by then it has
adopted every medium sent before (an ``nvme_pci`` namespace maps its SSD queue pair and
staging memory).  A queue handed to a worker still adopting would wait behind that work with
its Connect unanswered, and under emulation that was longer than the host's keep-alive timeout.

and to it::

    ("ready", pid)
    ("closed", ctrl_key, qid, reason)            a queue is gone
    ("forward", token, ctrl_key, qid, sqe)       the status of a non-fast-path command, please
    ("forward_data", token, ctrl_key, qid, sqe, data | None)   the same for a command that
                                                 moves data (Authentication Send: its data;
                                                 Receive: None, the answer brings it)
    ("placed", token, answer | error message)    a placed queue exists (answer: QP number...)
    ("placed_command", token, key, sqe, data)    a placed queue's command before it is attached
                                                 (its Connect): execute it, please
    ("place_ended", key, reason)                 a placed queue is gone
    ("error", ctrl_key, qid, cid, opcode, nsid, Status)   a command failed (error log)
    ("counters", token, dict)
    ("traffic", token, int)                      the commands a controller's queues received
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

from nvmf.media.base import Media, MediaHandle
from nvmf.media.factory import adopt_shared
from nvmf.media.queue import MediaQueue
from nvmf.memory.staging import StagingPool, StagingShare
from nvmf.offload import io
from nvmf.offload.channel import Channel
from nvmf.offload.context import IoContextSpec, MediaKey, NamespaceCounters
from nvmf.offload.pipeline import Pipeline, error_logged
from nvmf.offload.plan import Parsed, Plan
from nvmf.offload.session import QueueSession
from nvmf.offload.tally import CounterTable
from nvmf.protocol.request import Direction, Request
from nvmf.transport.base import (
    FabricQueue,
    ListenPort,
    Placement,
    PortInfo,
    QueueExport,
    QueueState,
    Transport,
    get_transport,
    sent,
)
from nvmf.wire.auth import AuthCommand
from nvmf.wire.opcodes import AdminOpcode, FabricsType
from nvmf.wire.status import SC, SUCCESS, Status

#: Fabrics commands whose data a worker moves for the control plane (re-authentication).
AUTH_FCTYPES = frozenset((FabricsType.AUTH_SEND, FabricsType.AUTH_RECEIVE))
#: The most data such a command may move (DH-HMAC-CHAP messages are at most a few KiB).
MAX_FORWARDED_DATA = 64 << 10

log = logging.getLogger("nvmf.worker")

#: (subsystem NQN, cntlid): a controller, across processes.
CtrlKey = tuple[str, int]

PR_SET_PDEATHSIG = 1
#: How long a stopping worker waits for commands in flight.
STOP_GRACE_S = 10.0
#: The most host data a placed queue's command before Connect brings in (Connect's is 1 KiB).
CONNECT_DATA_MAX = 4096


@dataclass(frozen=True)
class Handover:
    """Everything a worker needs to go on serving an I/O queue after its Connect."""

    ctrl_key: CtrlKey
    qid: int
    sqsize: int
    sqhd: int
    sqhd_disabled: bool
    port: PortInfo
    state: dict[str, Any]
    #: The Connect command's completion, which the worker sends first (empty when the control
    #: plane kept the queue for its authentication and sent that completion itself).
    connect_cqe: bytes
    context: IoContextSpec
    #: The queue must authenticate first (DH-HMAC-CHAP on a queue born in the worker, i.e.
    #: NVMe/RDMA): every command on it goes to the control plane until ``("authenticated",
    #: ...)`` comes; Authentication Send/Receive move their data here, as for re-authentication.
    authenticating: bool = False


@dataclass
class WorkerCounters:
    """What one worker did (the hardware offload's per-context counters)."""

    queues_attached: int = 0
    commands: int = 0
    incapsule_writes: int = 0
    forwarded: int = 0
    errors: int = 0
    namespaces: dict[MediaKey, NamespaceCounters] = field(default_factory=dict)

    def snapshot(self, sessions: dict[tuple[CtrlKey, int], WorkerSession]) -> dict[str, Any]:
        """The counters as plain data, with each queue's command count (``sessions``)."""
        return {
            "queues_attached": self.queues_attached,
            "commands": self.commands,
            "incapsule_writes": self.incapsule_writes,
            "forwarded": self.forwarded,
            "errors": self.errors,
            "queues": [
                {"subnqn": key[0], "cntlid": key[1], "qid": qid, "commands": s.commands}
                for (key, qid), s in sessions.items()
            ],
        }


@dataclass(eq=False)
class WorkerSession(QueueSession):
    """A queue this worker serves, and the controller it belongs to."""

    ctrl_key: CtrlKey = ("", 0)
    #: The key of a queue placed here before its Connect (NVMe/RDMA), -1 for one handed over.
    placed_key: int = -1
    #: The queue has not authenticated yet: nothing on it reaches the data path.
    authenticating: bool = False


class Worker:
    """The worker's :class:`~nvmf.transport.base.QueueOwner` and command handler."""

    #: Keep-alive is the admin queue's (the control plane's): no per-command activity call.
    counts_activity = False

    def __init__(self, channel_sock: socket.socket, index: int, staging_bytes: int) -> None:
        self.index = index
        self.pool = StagingPool(budget=staging_bytes)
        self.pipeline = Pipeline(self)
        self.counters = WorkerCounters()
        #: The slot's shared counter table (``tally``), where the namespaces' counters live.
        self.tally: CounterTable | None = None
        #: Every namespace's medium as this worker serves it, and its queue on it.
        self.media: dict[MediaKey, tuple[Media, MediaQueue]] = {}
        self.transports: dict[str, Transport] = {}
        self.sessions: dict[tuple[CtrlKey, int], WorkerSession] = {}
        self._attaching: Handover | None = None
        #: The key of the queue being placed (while its transport creates it), and the placed
        #: queues whose Connect has not attached them yet.
        self._placing: int | None = None
        self.pending: dict[int, WorkerSession] = {}
        self._connects: dict[int, asyncio.Future[tuple[bytes, Handover | None]]] = {}
        self._replies: dict[int, asyncio.Future[Any]] = {}
        self._next_token = 0
        self.stopped = asyncio.Event()
        self.channel = Channel(channel_sock, self._on_message, self._on_channel_closed)

    # -- control messages ----------------------------------------------------------------------
    def _on_message(self, msg: tuple[Any, ...], fds: list[int]) -> None:
        kind = msg[0]
        if kind == "media":
            self._add_media(msg[1], msg[2], fds, msg[3])
        elif kind == "tally":
            self.tally = CounterTable(fds[0])
        elif kind == "media_close":
            entry = self.media.pop(msg[1], None)
            if entry is not None:
                entry[0].close()
        elif kind == "attach":
            self._attach(msg[1], fds[0])
        elif kind == "context":
            self._set_context(msg[1], msg[2])
        elif kind == "detach":
            self._detach(msg[1], msg[2], msg[3])
        elif kind == "status":
            fut = self._replies.pop(msg[1], None)
            if fut is not None and not fut.done():
                fut.set_result(msg[2])
        elif kind == "status_data":
            fut = self._replies.pop(msg[1], None)
            if fut is not None and not fut.done():
                fut.set_result((msg[2], msg[3]))
        elif kind == "place":
            self._place(msg[1], msg[2])
        elif kind == "unplace":
            self._unplace(msg[1], msg[2])
        elif kind == "connected":
            answer = self._connects.pop(msg[1], None)
            if answer is not None and not answer.done():
                answer.set_result((msg[2], msg[3]))
        elif kind == "authenticated":
            session = self.sessions.get((msg[1], msg[2]))
            if session is not None:
                session.authenticating = False
        elif kind == "counters":
            snapshot = self.counters.snapshot(self.sessions)
            snapshot["staging"] = self.pool.stats()
            self.channel.send(("counters", msg[1], snapshot))
        elif kind == "traffic":
            # Traffic-based keep-alive: the control plane's timer ran out for what it saw.
            key = msg[2]
            seen = sum(s.commands for (k, _), s in self.sessions.items() if k == key)
            self.channel.send(("traffic", msg[1], seen))
        elif kind == "stop":
            asyncio.get_running_loop().create_task(self.stop())
        elif kind == "start":
            self.channel.send(("ready", os.getpid()))
        else:
            log.error("worker %d: unknown control message %r", self.index, kind)
            for fd in fds:
                os.close(fd)

    def _on_channel_closed(self) -> None:
        """The control plane is gone: nothing may go on without it.  After a graceful stop the
        worker closes the channel itself, which is no news."""
        if self.stopped.is_set():
            return
        log.warning("worker %d: control plane channel closed, exiting", self.index)
        self.pipeline.cancel_all()
        self.stopped.set()

    def _add_media(self, key: MediaKey, handle: MediaHandle, fds: list[int], row: int) -> None:
        old = self.media.pop(key, None)
        if old is not None:
            old[0].close()
        media = adopt_shared(handle, fds)
        self.media[key] = (media, media.open_queue())
        shared = self.tally.row(row) if self.tally is not None else None
        if shared is not None:  # counted where the control plane reads it, and outlives us
            self.counters.namespaces[key] = shared
        else:
            self.counters.namespaces.setdefault(key, NamespaceCounters())

    def _transport(self, trtype: str) -> Transport:
        transport = self.transports.get(trtype)
        if transport is None:
            transport = self.transports[trtype] = get_transport(trtype)
        return transport

    def _attach(self, handover: Handover, fd: int) -> None:
        transport = self._transport(handover.port.trtype)
        self._attaching = handover
        try:
            fabric = transport.import_queue(QueueExport(fd, handover.state), handover.port, self)
        finally:
            self._attaching = None
        session = self.sessions.get((handover.ctrl_key, handover.qid))
        if session is None or session.fabric is not fabric:
            fabric.close("handover failed")
            return
        self.counters.queues_attached += 1
        if handover.connect_cqe:  # empty: the control plane sent every completion so far
            fabric.send_cqe(handover.connect_cqe)

    def _place(self, token: int, placement: Placement) -> None:
        """Make the queue the control plane asked for (an NVMe/RDMA I/O queue's QP, in this
        process's protection domain) and answer what it needs to accept the connection."""

        def ended(reason: str) -> None:
            self.pending.pop(token, None)
            self.channel.send(("place_ended", token, reason))

        self._placing = token
        try:
            transport = self._transport(placement.port.trtype)
            _fabric, answer = transport.adopt_placement(placement, self, ended)
        except Exception as exc:  # a process boundary: the control plane rejects the request
            log.warning("worker %d: cannot make the queue: %s", self.index, exc)
            self.pending.pop(token, None)
            self.channel.send(("placed", token, f"worker {self.index}: {exc}"))
            return
        finally:
            self._placing = None
        self.channel.send(("placed", token, answer))

    def _unplace(self, key: int, reason: str) -> None:
        session = self.pending.get(key)
        if session is None:
            session = next((s for s in self.sessions.values() if s.placed_key == key), None)
        if session is not None:
            session.fabric.close(reason)

    def _placed_command(self, session: WorkerSession, req: Request) -> None:
        """A command on a placed queue before its Connect attached it (the Connect itself,
        in the normal case): its host data comes in here, the control plane executes it."""
        req.session = session
        status = session.fabric.map_sgl(req)
        if not status.ok:
            self.pipeline.complete(session, req, status)
            return
        if req.sgl_length and not req.incapsule and req.sgl_length <= CONNECT_DATA_MAX:
            staging = self.pool.get(req.sgl_length)
            if staging is None:
                self.pipeline.complete(session, req, Status(SC.TRANSIENT_TR_ERR))
                return
            req.staging = staging
            req.data = staging.view
            session.fabric.fetch_data(req, self._placed_data_in)
            return
        self._forward_placed(session, req)

    def _placed_data_in(self, req: Request, status: Status) -> None:
        if not status.ok:
            self.pipeline.complete(req.session, req, status)
            return
        self._forward_placed(req.session, req)

    def _forward_placed(self, session: WorkerSession, req: Request) -> None:
        token = self._next_token = self._next_token + 1
        answer: asyncio.Future[tuple[bytes, Handover | None]]
        answer = asyncio.get_running_loop().create_future()
        self._connects[token] = answer
        data = bytes(req.data) if req.data is not None else b""
        self.channel.send(("placed_command", token, session.placed_key, req.raw, data))
        answer.add_done_callback(lambda fut: self._placed_answer(session, req, fut))

    def _placed_answer(
        self,
        session: WorkerSession,
        req: Request,
        fut: asyncio.Future[tuple[bytes, Handover | None]],
    ) -> None:
        """The control plane's completion of a placed queue's command: after a Connect, the
        queue joins this worker's queues with its controller's I/O context."""
        if fut.cancelled():
            return
        cqe, handover = fut.result()
        if handover is not None and self.pending.get(session.placed_key) is not session:
            # The connection ended while the control plane ran its Connect: the controller
            # now counts a queue that nobody serves, and would refuse that QID for good.
            self.channel.send(
                ("closed", handover.ctrl_key, handover.qid, "its connection ended during Connect")
            )
        elif handover is not None:
            del self.pending[session.placed_key]
            session.ctrl_key = handover.ctrl_key
            session.qid = handover.qid
            session.sqsize = handover.sqsize
            session.sqhd = handover.sqhd
            session.sqhd_disabled = handover.sqhd_disabled
            session.authenticating = handover.authenticating
            session.ioctx = handover.context.resolve(self.media, self.counters.namespaces)
            self.sessions[(handover.ctrl_key, handover.qid)] = session
            self.counters.queues_attached += 1
        req.status = SUCCESS
        session.fabric.complete(req, cqe)

    def _set_context(self, ctrl_key: CtrlKey, spec: IoContextSpec) -> None:
        ioctx = spec.resolve(self.media, self.counters.namespaces)
        for (key, _qid), session in self.sessions.items():
            if key == ctrl_key:
                session.ioctx = ioctx

    def _detach(self, ctrl_key: CtrlKey, qid: int | None, reason: str) -> None:
        for (key, q), session in list(self.sessions.items()):
            if key == ctrl_key and (qid is None or q == qid):
                session.fabric.close(reason)

    # -- QueueOwner ----------------------------------------------------------------------------
    def open_queue(self, fabric: FabricQueue, port: ListenPort) -> QueueState:
        handover = self._attaching
        if handover is None and self._placing is not None:
            placed = WorkerSession(
                fabric=fabric, port=port, pool=StagingShare(self.pool), placed_key=self._placing
            )
            self.pending[self._placing] = placed
            return placed
        if handover is None:
            raise RuntimeError("a worker only serves queues handed over by the control plane")
        spec = handover.context
        session = WorkerSession(
            fabric=fabric,
            port=port,
            pool=StagingShare(self.pool),
            qid=handover.qid,
            sqsize=handover.sqsize,
            sqhd=handover.sqhd,
            sqhd_disabled=handover.sqhd_disabled,
            ioctx=spec.resolve(self.media, self.counters.namespaces),
            ctrl_key=handover.ctrl_key,
            authenticating=handover.authenticating,
        )
        self.sessions[(handover.ctrl_key, handover.qid)] = session
        return session

    def submit(self, state: QueueState, req: Request) -> None:
        # What open_queue made; typed without cast(), a function call on every command.
        session: WorkerSession = state  # type: ignore[assignment]
        if session.ioctx is None:  # a placed queue before its Connect
            self._placed_command(session, req)
            return
        counters = self.counters
        counters.commands += 1
        session.commands += 1
        if req.incapsule:
            counters.incapsule_writes += 1
        self.pipeline.submit(session, req)

    def complete(self, state: QueueState, req: Request, status: Status) -> None:
        assert isinstance(state, WorkerSession)
        self.pipeline.reject(state, req, status)

    def queue_closed(self, state: QueueState) -> None:
        assert isinstance(state, WorkerSession)
        key = (state.ctrl_key, state.qid or 0)
        if self.sessions.get(key) is state:
            del self.sessions[key]
            self.channel.send(("closed", state.ctrl_key, state.qid, "queue closed"))

    # -- CommandHandler ------------------------------------------------------------------------
    def parse(self, session: QueueSession, req: Request) -> Parsed:
        assert isinstance(session, WorkerSession)
        ioctx = session.ioctx
        if ioctx is not None and req.opcode in io.FAST_PATH and not session.authenticating:
            return io.parse(ioctx, req, self.pool)
        if req.opcode == AdminOpcode.FABRICS and req.raw[4] in AUTH_FCTYPES:
            return self._forward_data(session, req)
        # Also every command of a queue still authenticating: the control plane answers it
        # (Authentication Required, as nvmet_check_auth_status); its data never moves.
        return self._forward(session, req)

    def _forward_data(self, session: WorkerSession, req: Request) -> Parsed:
        """Authentication Send/Receive on a queue this worker serves (a re-authentication):
        the data moves here, the control plane runs the transaction."""
        cmd = AuthCommand.decode(req.raw)
        if not 0 < cmd.length <= MAX_FORWARDED_DATA:
            return self._forward(session, req)  # the control plane gives the status
        send = cmd.is_send
        self.counters.forwarded += 1
        ctrl_key, qid, raw = session.ctrl_key, session.qid, bytes(req.raw)

        async def execute(req: Request) -> Status:
            assert req.data is not None
            token = self._next_token = self._next_token + 1
            fut: asyncio.Future[tuple[Status, bytes]] = asyncio.get_running_loop().create_future()
            self._replies[token] = fut
            data = bytes(req.data) if send else None
            self.channel.send(("forward_data", token, ctrl_key, qid, raw, data))
            try:
                status, payload = await fut
            finally:
                self._replies.pop(token, None)
            if not send and status.ok:
                n = min(len(payload), len(req.data))
                req.data[:n] = payload[:n]
                req.data[n:] = bytes(len(req.data) - n)
            return status

        return Plan(Direction.H2C if send else Direction.C2H, cmd.length, execute)

    def _forward(self, session: WorkerSession, req: Request) -> Plan:
        """A command the data plane does not execute: the control plane decides its status."""
        self.counters.forwarded += 1
        token = self._next_token = self._next_token + 1
        fut: asyncio.Future[Status] = asyncio.get_running_loop().create_future()
        self._replies[token] = fut
        self.channel.send(("forward", token, session.ctrl_key, session.qid, req.raw))

        async def execute(req: Request) -> Status:
            try:
                return await fut
            finally:
                self._replies.pop(token, None)

        return Plan(Direction.NONE, 0, execute, forward=True)

    def command_failed(self, session: QueueSession, req: Request, status: Status) -> bool:
        """Counted here, logged by the control plane (:meth:`WorkerEvents.
        worker_command_failed`) when :func:`error_logged` says so."""
        assert isinstance(session, WorkerSession)
        self.counters.errors += 1
        if session.qid is None:  # a placed queue before its Connect: no controller logs it
            return False
        self.channel.send(
            ("error", session.ctrl_key, session.qid, req.cid, req.opcode, req.nsid, status)
        )
        return error_logged(status)

    def activity(self, session: QueueSession) -> None:
        """Keep-alive is the admin queue's business (the control plane's); nothing to do."""

    # -- life cycle ----------------------------------------------------------------------------
    async def stop(self) -> None:
        """Graceful stop: no new command runs, every command in flight completes and is sent,
        then queues close."""
        self.pipeline.hold()
        try:
            await asyncio.wait_for(self.pipeline.drain(), STOP_GRACE_S)
        except TimeoutError:
            log.warning(
                "worker %d: commands still in flight after %.0f s", self.index, STOP_GRACE_S
            )
        sessions = [*self.sessions.values(), *self.pending.values()]
        await sent(session.fabric for session in sessions)
        for session in sessions:
            session.fabric.close("target stopping")
        for transport in self.transports.values():
            await transport.close_all()
        for media, _queue in self.media.values():
            media.close()
        self.media.clear()
        self.stopped.set()


def _die_with_parent(parent: int) -> None:
    """``PR_SET_PDEATHSIG``: the kernel kills this worker when the control plane dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the call: nobody will signal us
        os._exit(1)


async def _serve(args: argparse.Namespace) -> None:
    # Transports first: one that cannot load must end the process before its channel reads
    # anything (a "start" already waiting would otherwise be answered "ready" on the way out).
    transports = {trtype: get_transport(trtype) for trtype in args.transport}
    for transport in transports.values():
        transport.idle_timeout = args.idle_timeout
        transport.unpreempted_sends = not args.preemptible_sends
    sock = socket.socket(fileno=args.channel)
    worker = Worker(sock, args.index, args.staging_bytes)
    worker.transports.update(transports)
    loop = asyncio.get_running_loop()
    # SIGTERM from a terminal's process group or a service manager: the control plane decides.
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    loop.add_signal_handler(signal.SIGTERM, lambda: None)
    await worker.stopped.wait()
    worker.channel.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nvmf-worker", description=__doc__)
    parser.add_argument("--channel", type=int, required=True, help="channel descriptor")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--cpu", type=int, default=-1, help="core to pin to (-1: none)")
    parser.add_argument("--parent", type=int, required=True, help="control plane PID")
    parser.add_argument("--staging-bytes", type=int, required=True)
    parser.add_argument("--log-level", type=int, default=logging.WARNING)
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=30.0,
        help="seconds a queue may stall inside a PDU before it is closed",
    )
    parser.add_argument(
        "--preemptible-sends",
        action="store_true",
        help="send as SCHED_OTHER always (nvmf.unpreempted_sends false)",
    )
    parser.add_argument(
        "--transport",
        action="append",
        default=[],
        help="a fabric type to load at start (its first queue then costs no import)",
    )
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    logging.basicConfig(
        level=args.log_level,
        format=f"%(asctime)s %(levelname)s worker{args.index}: %(message)s",
    )
    if args.cpu >= 0:
        try:
            os.sched_setaffinity(0, {args.cpu})
        except OSError as exc:
            log.warning("worker %d: cannot pin to CPU %d: %s", args.index, args.cpu, exc)
    try:
        import uvloop

        uvloop.run(_serve(args))
    except ImportError:
        asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
