"""The target: subsystems, ports, controllers, and the one command pipeline every fabric uses.

A transport creates a :class:`~nvmf.target.session.QueueSession` per fabric queue
(:meth:`TargetService.open_queue`) and hands each decoded capsule to :meth:`TargetService.submit`.
The pipeline walks the request through its states (:mod:`nvmf.protocol.request`): SGL check by
the transport, parse by the handler (a plan or a status), staging buffer, host data, execute,
completion.  Every completion leaves through :meth:`TargetService.complete`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from nvmf.offload.staging import StagingPool
from nvmf.protocol.request import Direction, ReqState, Request
from nvmf.target import admin, discovery, fabrics, io
from nvmf.target.command import SGL_LENGTH_MISMATCH, Context, Parsed
from nvmf.target.model import DISCOVERY_NQN, NvmfSettings, Port, TargetConfig
from nvmf.target.session import QueueSession
from nvmf.target.subsystem import SubsystemRuntime
from nvmf.transport.base import Transport, get_transport
from nvmf.wire.logpage import ErrorInformationEntry
from nvmf.wire.opcodes import AdminOpcode
from nvmf.wire.sqe import OFF_CDW10, encode_cqe
from nvmf.wire.status import SC, Status, error

if TYPE_CHECKING:
    from nvmf.target.controller import Controller
    from nvmf.transport.base import FabricQueue

log = logging.getLogger(__name__)


class TargetService:
    """Everything the target serves; one per ``nvmf serve``."""

    def __init__(self, config: TargetConfig) -> None:
        self.config = config
        self.settings: NvmfSettings = config.nvmf
        self.subsystems: dict[str, SubsystemRuntime] = {}
        self.discovery = SubsystemRuntime.discovery_subsystem()
        self.genctr = 1
        self.transports: dict[str, Transport] = {}
        self.ports: list[Port] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._ka_handles: dict[int, asyncio.TimerHandle] = {}

    # -- life cycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Open every namespace's media, then listen on every port."""
        try:
            for sub in self.config.subsystems:
                self.subsystems[sub.nqn] = SubsystemRuntime.open(sub, self.settings.max_io_queues)
            for port in self.config.ports:
                transport = self.transports.get(port.trtype)
                if transport is None:
                    transport = self.transports[port.trtype] = get_transport(port.trtype)
                await transport.add_port(port, self)
                self.ports.append(port)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for port in self.ports:
            await self.transports[port.trtype].remove_port(port)
        self.ports.clear()
        for sub in [*self.subsystems.values(), self.discovery]:
            for ctrl in list(sub.controllers.values()):
                ctrl.delete("target stopping")
        for task in list(self._tasks):
            task.cancel()
        for sub in self.subsystems.values():
            sub.close()
        self.subsystems.clear()

    def find_subsystem(self, nqn: str, port: Port) -> SubsystemRuntime | None:
        """The subsystem ``nqn`` if ``port`` exports it (the discovery NQN is on every port)."""
        if nqn == DISCOVERY_NQN:
            return self.discovery
        if nqn not in port.subsystems:
            return None
        return self.subsystems.get(nqn)

    # -- queues and controllers ----------------------------------------------------------------
    def open_queue(self, fabric: FabricQueue, port: Port) -> QueueSession:
        return QueueSession(
            fabric=fabric, port=port, pool=StagingPool(budget=self.settings.staging_bytes)
        )

    def queue_closed(self, session: QueueSession) -> None:
        """The fabric queue is gone: an admin queue takes its controller with it."""
        ctrl = session.ctrl
        if ctrl is None:
            return
        if session.qid == 0:
            self.delete_controller(ctrl, "admin queue closed")
        elif session.qid is not None and ctrl.queues.get(session.qid) is session:
            del ctrl.queues[session.qid]

    def controller_created(self, ctrl: Controller) -> None:
        self._schedule_keep_alive(ctrl)

    def queue_connected(self, session: QueueSession) -> None:
        pass

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
            if ka.expired(now):
                self.delete_controller(ctrl, f"keep-alive timeout ({ka.kato_ms} ms) expired")
                return
            delay = ka.remaining(now) + 0.05
        self._ka_handles[id(ctrl)] = loop.call_later(delay, self._schedule_keep_alive, ctrl)

    # -- the command pipeline ------------------------------------------------------------------
    def submit(self, session: QueueSession, req: Request) -> None:
        """A capsule arrived on ``session``: run it to completion in its own task."""
        session.consume_sqe()
        ctrl = session.ctrl
        if ctrl is not None:
            ctrl.keep_alive.touch(time.monotonic())  # traffic based keep-alive
        task = asyncio.get_running_loop().create_task(self._run(session, req))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _parse(self, ctx: Context) -> Parsed:
        session = ctx.session
        sqe = ctx.req.sqe
        if sqe.opcode == AdminOpcode.FABRICS:
            return fabrics.parse(ctx)
        ctrl = session.ctrl
        if ctrl is None:
            return error(SC.CMD_SEQ_ERROR, 0)
        if not ctrl.regs.ready:
            return error(SC.CMD_SEQ_ERROR, 0)
        if session.qid == 0:
            if ctrl.subsystem.discovery:
                return discovery.parse(ctx)
            return admin.parse(ctx)
        return io.parse(ctx)

    async def _run(self, session: QueueSession, req: Request) -> None:
        try:
            status = await self._execute(session, req)
        except asyncio.CancelledError:
            req.release()
            raise
        except Exception:
            log.exception("internal error on qid %s cid %d", session.qid, req.cid)
            status = Status(SC.INTERNAL, dnr=False)
        self.complete(session, req, status)

    async def _execute(self, session: QueueSession, req: Request) -> Status:
        status = session.fabric.map_sgl(req)
        if not status.ok:
            return status
        ctx = Context(self, session, req)
        plan = self._parse(ctx)
        if isinstance(plan, Status):
            return plan
        if plan.length != req.sgl_length:
            return SGL_LENGTH_MISMATCH
        req.direction = plan.direction
        if req.incapsule and plan.direction is not Direction.H2C:
            return SGL_LENGTH_MISMATCH
        if plan.length and not req.incapsule:
            req.advance(ReqState.NEED_BUFFER)
            staging = session.pool.get(plan.length)
            if staging is None:
                staging = await session.pool.acquire(plan.length)
            req.staging = staging
            req.data = staging.view
            if plan.direction is Direction.H2C:
                req.advance(ReqState.TRANSFERRING_H2C)
                status = await session.fabric.fetch_data(req)
                if not status.ok:
                    return status
        if plan.direction is Direction.C2H:
            req.c2h_length = plan.length
        req.advance(ReqState.READY)
        req.advance(ReqState.EXECUTING)
        status = await plan.execute(req)
        req.advance(ReqState.EXECUTED)
        return status

    def complete(self, session: QueueSession, req: Request, status: Status) -> None:
        """The one way a completion leaves: error log, CQE, then the transport sends it."""
        req.status = status
        if not status.ok:
            req.c2h_length = 0
            ctrl = session.ctrl
            if ctrl is not None and status.code not in (SC.ABORT_REQ,):
                ctrl.record_error(
                    ErrorInformationEntry(
                        sqid=session.qid or 0,
                        cmdid=req.cid,
                        status_field=status.encode(),
                        param_error_location=0xFFFF if status.field is None else status.field,
                        nsid=req.sqe.nsid,
                        opcode=req.sqe.opcode,
                    )
                )
        cqe = encode_cqe(status, cid=req.cid, sqid=session.qid or 0, sqhd=session.reported_sqhd)
        req.state = ReqState.TRANSFERRING_C2H
        session.fabric.complete(req, cqe)


__all__ = ["OFF_CDW10", "TargetService"]
