"""The control plane: subsystems, ports, controllers, and the hand-over of I/O queues.

A transport creates a :class:`~nvmf.control.session.ControlSession` per fabric queue
(:meth:`TargetService.open_queue`) and hands each decoded capsule to :meth:`TargetService.submit`,
which runs it through the command pipeline (:mod:`nvmf.offload.pipeline`) with this service as
the command handler: fabrics, admin and discovery commands here, and I/O commands through the
data plane's own handlers (:mod:`nvmf.offload.io`).

With offload workers (``offload_workers`` > 0, ``nvmf serve --workers N``), an I/O queue whose
transport can move (``caps.exportable``) is handed to a worker right after its Connect: the
control plane builds the queue's :class:`~nvmf.offload.context.IoContextSpec`, exports the
connection, and the worker sends the Connect completion and serves every command after it.  The
control plane keeps no descriptor of the queue; it keeps the queue's place in its controller
(:class:`RemoteQueue`), so keep-alive expiry, a disabled controller or a deleted one close it
in the worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from nvmf.control import admin, discovery, fabrics
from nvmf.control.auth import HostKeys, host_keys
from nvmf.control.command import Context, Parsed
from nvmf.control.model import DISCOVERY_NQN, NvmfSettings, Port, TargetConfig
from nvmf.control.namespace import NamespaceRuntime
from nvmf.control.reconfigure import ReloadReport, reconfigure, served_ports
from nvmf.control.session import ControlSession
from nvmf.control.status import device_reports, target_status
from nvmf.control.subsystem import SubsystemRuntime
from nvmf.media.base import ServingCheck
from nvmf.media.queue import MediaQueue
from nvmf.memory.staging import StagingPool, StagingShare, largest_class
from nvmf.offload import io
from nvmf.offload.context import IoContext, IoContextSpec, NamespaceCounters, NamespaceIo
from nvmf.offload.pipeline import Pipeline, error_logged
from nvmf.offload.plan import SGL_LENGTH_MISMATCH
from nvmf.offload.session import QueueSession
from nvmf.offload.worker import CtrlKey, Handover
from nvmf.offload.workers import WorkerSet
from nvmf.protocol.request import Direction, ReqState, Request
from nvmf.transport.base import (
    REGISTRY,
    DataDone,
    FabricQueue,
    ListenPort,
    PortInfo,
    QueueExport,
    QueueState,
    Transport,
    TransportUnavailable,
    get_transport,
    sent,
)
from nvmf.wire.logpage import ErrorInformationEntry
from nvmf.wire.opcodes import AdminOpcode
from nvmf.wire.sqe import Sqe, encode_cqe
from nvmf.wire.status import SC, SUCCESS, Status, error

if TYPE_CHECKING:
    from nvmf.control.controller import Controller
    from nvmf.protocol.request import Request as _Request

log = logging.getLogger(__name__)

#: How long a stopping target waits for the commands in flight in the control plane.
STOP_GRACE_S = 10.0
#: After a failed authentication, how long the controller lives on so that the completion
#: carrying AUTH_Failure1 reaches the host (the Linux target ends it from a work item too).
AUTH_FAILURE_GRACE_S = 0.2


#: With offload workers, the control plane's pool holds this many of the largest buffers.
CONTROL_BUFFERS_WITH_WORKERS = 4


def control_pool_budget(settings: NvmfSettings) -> int:
    """The control plane's staging budget: the configured one without workers, else enough
    for :data:`CONTROL_BUFFERS_WITH_WORKERS` of the largest buffers (the same largest buffer,
    so MDTS is the same in every process)."""
    budget = settings.staging_bytes
    if settings.offload_workers > 0:
        budget = min(budget, CONTROL_BUFFERS_WITH_WORKERS * largest_class(budget))
    return budget


class RemoteQueue:
    """The control plane's stand-in for an I/O queue a worker serves: closing it closes the
    queue in the worker.  It moves no data here."""

    def __init__(self, workers: WorkerSet, ctrl_key: CtrlKey, qid: int, peer: tuple[str, str]):
        self.workers = workers
        self.ctrl_key = ctrl_key
        self._qid = qid
        self._local = peer
        self.closed = False

    @property
    def qid(self) -> int:
        return self._qid

    def map_sgl(self, req: _Request) -> Status:
        raise RuntimeError("a handed-over queue's commands run in its worker")

    def fetch_data(self, req: _Request, done: DataDone) -> None:
        raise RuntimeError("a handed-over queue's commands run in its worker")

    def complete(self, req: _Request, cqe: bytes) -> None:
        raise RuntimeError("a handed-over queue's completions leave from its worker")

    def local_address(self) -> tuple[str, str]:
        return self._local

    def close(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.workers.detach(self.ctrl_key, self._qid, reason)

    def send_cqe(self, cqe: bytes) -> None:
        raise RuntimeError("a handed-over queue's completions leave from its worker")

    async def export_state(self) -> QueueExport:
        raise RuntimeError("the queue was handed over already")


class PlacedQueue(RemoteQueue):
    """The control plane's stand-in for a queue an offload worker made before its Connect (an
    NVMe/RDMA I/O queue): the worker brings the command's host data along, so here it is
    in-capsule; the completion goes back to the worker, which sends it."""

    def __init__(self, workers: WorkerSet, worker: int, key: int, local: tuple[str, str]):
        super().__init__(workers, ("", 0), 0, local)
        self.worker = worker
        self.key = key
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def map_sgl(self, req: _Request) -> Status:
        req.incapsule = req.data is not None and len(req.data) > 0
        req.sgl_length = len(req.data) if req.data is not None else 0
        return SUCCESS

    def complete(self, req: _Request, cqe: bytes) -> None:
        req.release()
        if not self.answer.done():
            self.answer.set_result(cqe)

    def close(self, reason: str) -> None:
        if self.ctrl_key == ("", 0):  # not attached yet: the worker knows it by its key
            if not self.closed:
                self.closed = True
                self.workers.end(self.worker, self.key, reason)
            return
        super().close(reason)


class TargetService:
    """Everything the target serves; one per ``nvmf serve``."""

    def __init__(self, config: TargetConfig, *, log_level: int = logging.WARNING) -> None:
        self.config = config
        self.settings: NvmfSettings = config.nvmf
        self.subsystems: dict[str, SubsystemRuntime] = {}
        self.discovery = SubsystemRuntime.discovery_subsystem()
        self.genctr = 1
        self.transports: dict[str, Transport] = {}
        self.ports: list[Port] = []
        #: Staging memory of the queues this process serves itself: all queues without
        #: workers; with workers only the admin queues, whose commands need a few buffers at
        #: a time, so the workers' budget would be mapped (and populated) for nothing.
        self.pool = StagingPool(budget=control_pool_budget(self.settings))
        #: The most one command may move (MDTS): never more than a staging pool can hold, so
        #: every valid command gets a buffer once others complete.  Workers' pools have the
        #: same budget.
        self.max_transfer = min(admin.MAX_TRANSFER, self.pool.max_buffer)
        self.pipeline = ControlPipeline(self)
        self.workers: WorkerSet | None = None
        self.counters: dict[tuple[str, int], NamespaceCounters] = {}
        #: This process's queue on each namespace's medium (for the queues it serves itself).
        self._media_queues: dict[tuple[str, int], MediaQueue] = {}
        self._log_level = log_level
        self._tasks: set[asyncio.Task[None]] = set()
        self._ka_handles: dict[int, asyncio.TimerHandle] = {}

    # -- life cycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Open every namespace's media, start the workers, then listen on every port this
        target serves (a port of another transport, such as ``rdma`` or ``fc`` in a file
        nvmetcli saved, is for the kernel target: loading the file warned of it)."""
        ports = served_ports(self.config.ports)
        if self.config.ports and not ports:
            kinds = ", ".join(sorted({p.trtype for p in self.config.ports}))
            raise TransportUnavailable(
                f"no port to listen on: the configuration's ports are {kinds}, this target "
                f"serves {', '.join(sorted(REGISTRY))}"
            )
        try:
            for sub in self.config.subsystems:
                self.subsystems[sub.nqn] = SubsystemRuntime.open(sub, self.settings.max_io_queues)
            self._check_serving(ports)
            if self.settings.offload_workers > 0:
                self.workers = WorkerSet(
                    self.settings.offload_workers,
                    self,
                    staging_bytes=self.settings.staging_bytes,
                    transports=sorted({port.trtype for port in ports}),
                    idle_timeout=self.settings.idle_timeout_ms / 1000,
                    unpreempted_sends=self.settings.unpreempted_sends,
                    log_level=self._log_level,
                )
                for nqn, runtime in self.subsystems.items():
                    for nsid, ns in runtime.namespaces.items():
                        self.workers.add_media((nqn, nsid), ns.media)
                await self.workers.start()
            for port in ports:
                transport = self.transports.get(port.trtype)
                if transport is None:
                    transport = self.transports[port.trtype] = self.new_transport(port.trtype)
                await transport.add_port(port, self)
                self.ports.append(port)
        except BaseException:
            await self.stop()
            raise

    def _check_serving(self, ports: list[Port]) -> None:
        """Refuse to start when a medium cannot be served the way this target would serve it
        (:class:`~nvmf.media.base.ServingCheck`): ``ValueError`` naming the namespace."""
        for nqn, runtime in self.subsystems.items():
            trtypes = {p.trtype for p in ports if nqn in p.subsystems}
            for nsid, ns in runtime.namespaces.items():
                if isinstance(ns.media, ServingCheck):
                    problem = ns.media.serving_problem(self.settings.offload_workers, trtypes)
                    if problem is not None:
                        raise ValueError(f"{nqn} namespace {nsid}: {problem}")

    def new_transport(self, trtype: str) -> Transport:
        """A transport for ``trtype`` with this target's settings."""
        transport = get_transport(trtype)
        transport.idle_timeout = self.settings.idle_timeout_ms / 1000
        transport.unpreempted_sends = self.settings.unpreempted_sends
        max_qid = max(
            [self.settings.max_io_queues, *(s.max_io_queues for s in self.subsystems.values())]
        )
        transport.queue_limits = (max_qid, self.settings.queue_depth)
        if self.workers is not None and not transport.caps.exportable:
            transport.placer = self.workers  # its I/O queues are made in the workers
        return transport

    async def stop(self) -> None:
        """Graceful, in the order a host can live with: no new connection is taken and no new
        command runs; the Asynchronous Event Requests hosts keep posted end (they complete
        only on an event, so a drain would wait for them in vain); every command in flight
        completes and its completion is sent, in the workers and here; only then do queues
        close and everything is torn down."""
        if self.workers is not None:
            self.workers.stop_replacing()
        for port in self.ports:
            self.transports[port.trtype].stop_accepting(port)
        self.pipeline.hold()
        controllers = [
            ctrl for sub in [*self.subsystems.values(), self.discovery]
            for ctrl in sub.controllers.values()
        ]  # fmt: skip
        for ctrl in controllers:
            ctrl.end_events()
        try:
            await asyncio.wait_for(self.pipeline.drain(), STOP_GRACE_S)
        except TimeoutError:
            log.warning("commands still in flight after %.0f s: stopping anyway", STOP_GRACE_S)
        if self.workers is not None:
            await self.workers.stop()  # each worker drains, sends and closes its own queues
        await sent(session.fabric for ctrl in controllers for session in ctrl.queues.values())
        for port in self.ports:
            await self.transports[port.trtype].remove_port(port)
        self.ports.clear()
        for sub in [*self.subsystems.values(), self.discovery]:
            for ctrl in list(sub.controllers.values()):
                self.delete_controller(ctrl, "target stopping")
        self.pipeline.cancel_all()
        for task in list(self._tasks):
            task.cancel()
        for sub in self.subsystems.values():
            sub.close()
        self.subsystems.clear()

    # -- watching and reconfiguring ------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        """Ports, subsystems, controllers, queues and counters (:mod:`nvmf.control.status`)."""
        return await target_status(self)

    async def devices(self) -> dict[str, Any]:
        """The devices the media own, and how each process uses them (``nvmf doctor``;
        :func:`~nvmf.control.status.device_reports`)."""
        return device_reports(self)

    async def reload(self, config: TargetConfig) -> ReloadReport:
        """Apply an edited, validated configuration (:mod:`nvmf.control.reconfigure`); raises
        :class:`~nvmf.control.reconfigure.ReloadError` (target unchanged) when it cannot."""
        report = await reconfigure(self, config)
        self.settings = self.config.nvmf
        return report

    def namespace_opened(self, nqn: str, nsid: int, ns: NamespaceRuntime) -> None:
        """A namespace joined the running target: share its medium with every worker."""
        if self.workers is not None:
            self.workers.add_media((nqn, nsid), ns.media)

    def namespace_closed(self, nqn: str, nsid: int) -> None:
        """A namespace left the running target (no I/O context names it any more): drop this
        process's queue on its medium and the workers' views of it."""
        self._media_queues.pop((nqn, nsid), None)
        if self.workers is not None:
            self.workers.remove_media((nqn, nsid))

    def find_subsystem(self, nqn: str, port: Port) -> SubsystemRuntime | None:
        """The subsystem ``nqn`` if ``port`` exports it (the discovery NQN is on every port)."""
        if nqn == DISCOVERY_NQN:
            return self.discovery
        if nqn not in port.subsystems:
            return None
        return self.subsystems.get(nqn)

    # -- QueueOwner ----------------------------------------------------------------------------
    def open_queue(self, fabric: FabricQueue, port: ListenPort) -> QueueState:
        assert isinstance(port, Port)
        return ControlSession(fabric=fabric, port=port, pool=StagingShare(self.pool))

    def submit(self, state: QueueState, req: Request) -> None:
        session: ControlSession = state  # type: ignore[assignment]  # what open_queue made
        session.commands += 1
        self.pipeline.submit(session, req)

    def complete(self, state: QueueState, req: Request, status: Status) -> None:
        assert isinstance(state, ControlSession)
        self.pipeline.reject(state, req, status)

    def queue_closed(self, state: QueueState) -> None:
        """The fabric queue is gone: an admin queue takes its controller with it."""
        assert isinstance(state, ControlSession)
        ctrl = state.ctrl
        if ctrl is None:
            return
        if state.qid == 0:
            self.delete_controller(ctrl, "admin queue closed")
        elif state.qid is not None and ctrl.queues.get(state.qid) is state:
            del ctrl.queues[state.qid]

    # -- CommandHandler ------------------------------------------------------------------------
    def parse(self, queue: QueueSession, req: Request) -> Parsed:
        session: ControlSession = queue  # type: ignore[assignment]  # what open_queue made
        if req.opcode == AdminOpcode.FABRICS:
            return fabrics.parse(Context(self, session, req))
        ctrl = session.ctrl
        if ctrl is None:
            return error(SC.CMD_SEQ_ERROR, 0)
        auth = session.auth
        if auth is not None and not auth.authenticated:
            return error(SC.AUTH_REQUIRED, 0)  # nvmet_check_auth_status
        if not ctrl.regs.ready:
            return error(SC.CMD_SEQ_ERROR, 0)
        if session.qid == 0:
            if ctrl.subsystem.discovery:
                return discovery.parse(Context(self, session, req))
            return admin.parse(Context(self, session, req))
        if session.ioctx is None:
            return error(SC.CMD_SEQ_ERROR, 0)
        return io.parse(session.ioctx, req, self.pool)  # the process's: see _compare

    def command_failed(self, session: QueueSession, req: Request, status: Status) -> bool:
        assert isinstance(session, ControlSession)
        if session.ctrl is None:
            return False
        return self._record_error(session.ctrl, session.qid or 0, req.sqe, status)

    def activity(self, queue: QueueSession) -> None:
        ctrl = queue.ctrl  # type: ignore[attr-defined]  # a ControlSession, as open_queue made
        if ctrl is not None:
            ctrl.keep_alive.touch(time.monotonic())  # traffic based keep-alive

    def _record_error(self, ctrl: Controller, qid: int, sqe: Sqe, status: Status) -> bool:
        """Log a failed command in ``ctrl``'s Error Information log (:func:`error_logged`);
        True when it was."""
        if not error_logged(status):
            return False
        ctrl.record_error(
            ErrorInformationEntry(
                sqid=qid,
                cmdid=sqe.cid,
                status_field=status.encode() << 1,  # bits 15:1; the phase tag is 0
                param_error_location=0xFFFF if status.field is None else status.field,
                nsid=sqe.nsid,
                opcode=sqe.opcode,
            )
        )
        return True

    # -- authentication ----------------------------------------------------------------------------
    def host_keys(self, hostnqn: str) -> HostKeys | None:
        """The DH-HMAC-CHAP keys the configuration holds for ``hostnqn`` (None: none)."""
        return host_keys(self.config.hosts, hostnqn)

    def authentication_failed(self, session: ControlSession) -> None:
        """A queue's authentication failed: its controller ends (as the Linux target's
        ``nvmet_ctrl_fatal_error``), once the completion in hand has gone out."""
        ctrl = session.ctrl
        if ctrl is None or ctrl.deleted:
            return
        log.warning(
            "controller %d qid %s: authentication failed: controller ends", ctrl.cntlid, session.qid
        )
        asyncio.get_running_loop().call_later(
            AUTH_FAILURE_GRACE_S, self.delete_controller, ctrl, "authentication failed"
        )

    # -- controllers and I/O contexts ------------------------------------------------------------
    def controller_created(self, ctrl: Controller) -> None:
        self._schedule_keep_alive(ctrl)

    def queue_connected(self, session: ControlSession) -> None:
        """An I/O queue's Connect succeeded: attach it to the data plane (its I/O context), and
        mark it for hand-over to a worker when it can move."""
        ctrl = session.ctrl
        if ctrl is None or not session.qid:
            return
        # A Connect is traffic too: a host connecting many I/O queues slowly (the Linux host
        # sends no Keep Alive before its controller is live) must not lose the controller.
        ctrl.keep_alive.touch(time.monotonic())
        session.ioctx = self.io_context(ctrl)
        transport = self.transports.get(session.port.trtype)
        if (
            self.workers is not None
            and transport is not None
            and transport.caps.exportable
            and self.workers.ready_workers()
        ):
            # else (no worker ready) this process serves the queue.  A queue that must
            # authenticate stays here until its authentication finished.
            if session.auth is None:
                session.handover = True
            else:
                session.handover_after_auth = True

    def io_context_spec(self, ctrl: Controller) -> IoContextSpec:
        """The snapshot of ``ctrl``'s I/O context as it crosses to a worker."""
        return IoContextSpec(
            cntlid=ctrl.cntlid,
            subnqn=ctrl.subsystem.nqn,
            max_transfer=self.max_transfer,
            wce=ctrl.wce,
            namespaces=tuple(
                (nsid, ns.nsze, ns.block_size) for nsid, ns in ctrl.subsystem.namespaces.items()
            ),
        )

    def io_context(self, ctrl: Controller) -> IoContext:
        """``ctrl``'s I/O context in this process (its media, its counters)."""
        nqn = ctrl.subsystem.nqn
        namespaces = {}
        for nsid, ns in ctrl.subsystem.namespaces.items():
            queue = self._media_queues.get((nqn, nsid))
            if queue is None:
                queue = self._media_queues[(nqn, nsid)] = ns.media.open_queue()
            counters = self.counters.setdefault((nqn, nsid), NamespaceCounters())
            namespaces[nsid] = NamespaceIo(nsid, ns.nsze, ns.block_size, ns.media, queue, counters)
        return IoContext(ctrl.cntlid, nqn, self.max_transfer, ctrl.wce, namespaces)

    def context_changed(self, ctrl: Controller) -> None:
        """Something an I/O queue reads changed (Volatile Write Cache, namespaces): replace the
        I/O context of every queue of ``ctrl``, here and in the workers."""
        ioctx = self.io_context(ctrl)
        for qid, session in ctrl.queues.items():
            if qid:
                session.ioctx = ioctx
        if self.workers is not None:
            self.workers.update_context(
                (ctrl.subsystem.nqn, ctrl.cntlid), self.io_context_spec(ctrl)
            )

    async def hand_over(self, session: ControlSession, cqe: bytes) -> None:
        """Move a just-connected I/O queue to a worker, which sends the Connect completion
        (``cqe``; empty when the queue authenticated here first and every completion went
        out from here)."""
        ctrl = session.ctrl
        assert ctrl is not None and self.workers is not None and session.qid
        qid = session.qid
        ctrl_key = (ctrl.subsystem.nqn, ctrl.cntlid)
        try:
            local = session.fabric.local_address()
            export = await session.fabric.export_state()
        except (OSError, RuntimeError) as exc:
            log.info("controller %d qid %d: hand-over failed: %s", ctrl.cntlid, qid, exc)
            session.fabric.close(f"hand-over failed: {exc}")
            self.queue_closed(session)
            return
        if ctrl.deleted or ctrl.queues.get(qid) is not session:
            os.close(export.fd)
            return
        handover = Handover(
            ctrl_key=ctrl_key,
            qid=qid,
            sqsize=session.sqsize,
            sqhd=session.sqhd,
            sqhd_disabled=session.sqhd_disabled,
            port=PortInfo.of(session.port),
            state=export.state,
            connect_cqe=cqe,
            context=self.io_context_spec(ctrl),
        )
        session.worker = self.workers.attach(handover, export.fd)
        session.fabric = RemoteQueue(self.workers, ctrl_key, qid, local)
        log.info(
            "controller %d qid %d: served by offload worker %d", ctrl.cntlid, qid, session.worker
        )

    def _find_controller(self, ctrl_key: CtrlKey) -> Controller | None:
        nqn, cntlid = ctrl_key
        sub = self.subsystems.get(nqn)
        return None if sub is None else sub.controllers.get(cntlid)

    # -- WorkerEvents ----------------------------------------------------------------------------
    def worker_queue_closed(self, ctrl_key: CtrlKey, qid: int, reason: str) -> None:
        ctrl = self._find_controller(ctrl_key)
        if ctrl is None:
            return
        session = ctrl.queues.get(qid)
        if session is not None and isinstance(session.fabric, RemoteQueue):
            session.fabric.closed = True
            del ctrl.queues[qid]
            log.info("controller %d qid %d closed in its worker: %s", ctrl.cntlid, qid, reason)

    async def placed_command(
        self, worker: int, key: int, port: PortInfo, raw: bytes, data: bytes
    ) -> tuple[bytes, Handover | None]:
        """A queue a worker made before its Connect (NVMe/RDMA) sent a command, normally its
        Connect, with its host data: execute it here, as for a queue of this process."""
        assert self.workers is not None
        model_port = next((p for p in self.ports if p.portid == port.portid), None)
        if model_port is None:  # the port went away meanwhile
            status = Status(SC.CMD_SEQ_ERROR, dnr=True)
            return encode_cqe(status, cid=Request(raw).cid, sqid=0, sqhd=0), None
        fabric = PlacedQueue(self.workers, worker, key, (port.traddr, port.trsvcid))
        session = ControlSession(fabric=fabric, port=model_port, pool=StagingShare(self.pool))
        req = Request(raw)
        req.data = memoryview(bytearray(data)) if data else None
        self.submit(session, req)
        cqe = await fabric.answer
        ctrl = session.ctrl
        qid = session.qid
        if ctrl is None or not qid or ctrl.deleted or ctrl.queues.get(qid) is not session:
            return cqe, None
        fabric.ctrl_key = (ctrl.subsystem.nqn, ctrl.cntlid)
        fabric._qid = qid
        session.worker = worker
        # A queue that must authenticate is born in its worker: the worker forwards all its
        # commands here until the transaction succeeded (forwarded_data tells it).
        session.worker_gated = session.auth is not None and not session.auth.authenticated
        log.info("controller %d qid %d: served by offload worker %d", ctrl.cntlid, qid, worker)
        handover = Handover(
            ctrl_key=fabric.ctrl_key,
            qid=qid,
            sqsize=session.sqsize,
            sqhd=session.sqhd,
            sqhd_disabled=session.sqhd_disabled,
            port=port,
            state={},
            connect_cqe=cqe,
            context=self.io_context_spec(ctrl),
            authenticating=session.worker_gated,
        )
        return cqe, handover

    async def forwarded(self, ctrl_key: CtrlKey, qid: int, sqe: Sqe) -> Status:
        """A command on a handed-over queue that only the control plane can answer."""
        ctrl = self._find_controller(ctrl_key)
        session = None if ctrl is None else ctrl.queues.get(qid)
        if session is None:
            return Status(SC.CMD_SEQ_ERROR, dnr=True)
        req = Request(sqe, qid)
        plan = self.parse(session, req)
        if isinstance(plan, Status):
            return plan
        if plan.length:  # no such command exists on I/O queues today
            return error(SC.INVALID_FIELD, 0)
        return await plan.coroutine()(req)

    async def forwarded_data(
        self, ctrl_key: CtrlKey, qid: int, sqe: Sqe, data: bytes | None
    ) -> tuple[Status, bytes]:
        """A command with data on a handed-over queue that only the control plane can answer
        (Authentication Send/Receive of a re-authentication)."""
        ctrl = self._find_controller(ctrl_key)
        session = None if ctrl is None else ctrl.queues.get(qid)
        if session is None:
            return Status(SC.CMD_SEQ_ERROR, dnr=True), b""
        req = Request(sqe, qid)
        plan = self.parse(session, req)
        if isinstance(plan, Status):
            return plan, b""
        if plan.direction is Direction.H2C:
            if data is None or len(data) != plan.length:
                return SGL_LENGTH_MISMATCH, b""
            req.data = memoryview(bytearray(data))
        else:
            req.data = memoryview(bytearray(plan.length))
        status = await plan.coroutine()(req)
        out = bytes(req.data) if plan.direction is Direction.C2H and status.ok else b""
        auth = session.auth
        if session.worker_gated and auth is not None and auth.authenticated and status.ok:
            # The transaction's last command succeeded: the worker serves the queue from now
            # on.  This message goes out before this command's answer, on the same channel,
            # so the gate is open before the host sees the completion.
            session.worker_gated = False
            assert self.workers is not None
            self.workers.authenticated(ctrl_key, qid)
            log.info("controller %s qid %d: authenticated, its worker serves it", ctrl_key[1], qid)
        return status, out

    def worker_command_failed(
        self, ctrl_key: CtrlKey, qid: int, cid: int, opcode: int, nsid: int, status: Status
    ) -> None:
        ctrl = self._find_controller(ctrl_key)
        if ctrl is not None:
            self._record_error(ctrl, qid, Sqe(opcode=opcode, cid=cid, nsid=nsid), status)

    def delete_controller(self, ctrl: Controller, reason: str) -> None:
        log.info("controller %d on %s deleted: %s", ctrl.cntlid, ctrl.subsystem.nqn, reason)
        handle = self._ka_handles.pop(id(ctrl), None)
        if handle is not None:
            handle.cancel()
        ctrl.delete(reason)

    def _schedule_keep_alive(self, ctrl: Controller) -> None:
        """Check the Keep Alive Timer when it would next expire (Base 2.0 §3.9)."""
        if ctrl.deleted:
            return
        loop = asyncio.get_running_loop()
        ka = ctrl.keep_alive
        if ka.kato_ms == 0:
            delay = 5.0  # disabled now; a Set Features may enable it later
        else:
            now = time.monotonic()
            if any(
                session.auth is not None and session.auth.holds_keep_alive(now)
                for session in ctrl.queues.values()
            ):
                ka.touch(now)  # an authentication transaction is running (control/auth.py)
            if ka.expired(now):
                if self.workers is not None and any(
                    s.worker is not None for s in ctrl.queues.values()
                ):
                    self.spawn(self._remote_traffic(ctrl))  # workers may have seen commands
                else:
                    self._expire(ctrl)
                return
            delay = ka.remaining(now) + 0.05
        self._ka_handles[id(ctrl)] = loop.call_later(delay, self._schedule_keep_alive, ctrl)

    async def _remote_traffic(self, ctrl: Controller) -> None:
        """The Keep Alive Timer ran out for the commands this process saw: the offload workers
        serving ``ctrl``'s queues say how many they received, and any change since the last
        time they were asked restarts the timer (traffic-based keep-alive: CTRATT.TBKAS tells
        the host it may send no Keep Alive while I/O completes).  Then check again."""
        assert self.workers is not None
        seen = await self.workers.traffic((ctrl.subsystem.nqn, ctrl.cntlid))
        if ctrl.deleted:
            return
        now = time.monotonic()
        if seen is None:  # a worker busy past the timeout: not a reason to end its host
            log.warning("controller %d: a worker did not count its commands in time", ctrl.cntlid)
            ctrl.keep_alive.touch(now)
        else:
            ctrl.keep_alive.remote_traffic(seen, now)
        if ctrl.keep_alive.expired(now):
            self._expire(ctrl)
        else:
            self._schedule_keep_alive(ctrl)

    def _expire(self, ctrl: Controller) -> None:
        self.delete_controller(ctrl, f"keep-alive timeout ({ctrl.keep_alive.kato_ms} ms) expired")

    def spawn(self, coro: object) -> None:
        """Run a control-plane coroutine in a task this service cancels when it stops."""
        assert asyncio.iscoroutine(coro)
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class ControlPipeline(Pipeline):
    """The control plane's pipeline: a just-connected I/O queue marked for hand-over has its
    Connect completion sent by the worker that takes it, not from here."""

    def __init__(self, service: TargetService) -> None:
        super().__init__(service)
        self.service = service

    def complete(self, session: QueueSession, req: Request, status: Status) -> None:
        if (
            isinstance(session, ControlSession)
            and session.handover_after_auth
            and session.auth is not None
            and session.auth.finished
        ):
            # The last command of the queue's authentication: its completion goes out from
            # here, then the queue moves (the host sends nothing before it has this completion).
            session.handover_after_auth = False
            super().complete(session, req, status)
            self.service.spawn(self.service.hand_over(session, b""))
            return
        if isinstance(session, ControlSession) and session.handover:
            session.handover = False
            if status.ok:
                req.release()
                req.state = ReqState.TRANSFERRING_C2H
                cqe = encode_cqe(
                    status, cid=req.cid, sqid=session.qid or 0, sqhd=session.reported_sqhd
                )
                self.service.spawn(self.service.hand_over(session, cqe))
                return
        super().complete(session, req, status)
