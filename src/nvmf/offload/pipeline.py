"""The one command pipeline every queue runs, in the control plane and in the workers.

A transport hands each decoded capsule to :meth:`Pipeline.submit`.  The pipeline walks the
request through its states (:mod:`nvmf.protocol.request`): SGL check by the transport, parse by
the :class:`CommandHandler` (a plan or a status), staging buffer, host data, execute,
completion.  Every completion leaves through :meth:`Pipeline.complete` (docs/architecture.md).

The handler is what differs between processes: the control plane parses fabrics, admin and
discovery commands (and, with ``--workers 0``, I/O); a worker parses the fast-path I/O commands
against the queue's :class:`~nvmf.offload.context.IoContext` and asks the control plane for the
status of anything else.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from nvmf.memory.staging import Staging, StagingBuffer
from nvmf.offload.plan import SGL_LENGTH_MISMATCH, Parsed
from nvmf.offload.session import QueueSession
from nvmf.protocol.request import Direction, ReqState, Request
from nvmf.transport.base import end_queue_on_bug
from nvmf.wire.sqe import CQE, encode_cqe
from nvmf.wire.status import SC, SUCCESS, Status

if TYPE_CHECKING:
    from nvmf.transport.base import FabricQueue

log = logging.getLogger(__name__)

H2C = Direction.H2C
C2H = Direction.C2H
EXECUTING = ReqState.EXECUTING
TRANSFERRING_H2C = ReqState.TRANSFERRING_H2C
EXECUTED = ReqState.EXECUTED
TRANSFERRING_C2H = ReqState.TRANSFERRING_C2H


def error_logged(status: Status) -> bool:
    """Whether a command that failed with ``status`` gets an Error Information log entry: every
    error but an abort (as Linux's nvmet), whichever process ran it."""
    return status.code != SC.ABORT_REQ


class CommandHandler(Protocol):
    """What the pipeline asks of the layer that knows the commands."""

    def parse(self, session: QueueSession, req: Request) -> Parsed:
        """Validate ``req`` on ``session``: a plan to carry out, or the status to complete with."""
        ...

    def command_failed(self, session: QueueSession, req: Request, status: Status) -> bool:
        """``req`` completes with the error ``status``: log it in the controller's Error
        Information log.  True when it went there, so the completion sets More (M)."""
        ...

    def activity(self, session: QueueSession) -> None:
        """A command arrived on ``session`` (traffic-based keep-alive)."""
        ...


class Pipeline:
    """Runs commands to completion for every queue of one process."""

    def __init__(self, handler: CommandHandler) -> None:
        self.handler = handler
        self._tasks: set[asyncio.Task[None]] = set()
        #: Fast-path commands in flight (fetching host data or in the media queue).
        self._untasked = 0
        self._done = self._start_done
        #: Called per command only where the handler counts activity (the control plane's
        #: traffic-based keep-alive); a worker's handler does not.
        self._activity = handler.activity if getattr(handler, "counts_activity", True) else None
        #: The target is stopping (:meth:`hold`): commands that arrive now are not run.
        self.holding = False

    @property
    def in_flight(self) -> int:
        """Commands submitted and not yet completed."""
        return len(self._tasks) + self._untasked

    def hold(self) -> None:
        """Run no command submitted from now on (a graceful stop): those in flight complete
        and their completions are sent, then the queues close.  A command that arrives
        meanwhile gets no completion, so its host retries it once it has reconnected, as it
        does any command a closed queue leaves unanswered; completing it with a retryable
        error instead would spend the host's few immediate retries on a target that is going."""
        self.holding = True

    def submit(self, session: QueueSession, req: Request) -> None:
        """A capsule arrived on ``session``: run it to completion.

        The fast path (docs/architecture.md) runs a command whose plan is one media queue
        operation without a task: a Read, an in-capsule Write or a Flush goes parse, buffer,
        submit, and completes now or from the media queue's callback; a Write whose data the
        host still has to send goes parse, buffer, :meth:`FabricQueue.fetch_data`, and submits
        from its callback.  On a medium that is memory (``MediaQueue.memory``) a Read or an
        R2T Write has no buffer and no media operation: its payload moves between the socket
        and the medium in place.  Everything else runs in its own task.
        """
        if self.holding:
            req.release()
            return
        sqsize = session.sqsize
        if sqsize:  # the SQ head advances for every fetched command (wraps at SQSIZE + 1)
            session.sqhd = (session.sqhd + 1) % (sqsize + 1)
        if self._activity is not None:
            self._activity(session)
        req.session = session
        status = session.fabric.map_sgl(req)
        if status is not SUCCESS and not status.ok:
            self.complete(session, req, status)
            return
        plan = self.handler.parse(session, req)
        if isinstance(plan, Status):
            self.complete(session, req, plan)
            return
        queue = plan.queue
        if queue is not None and plan.length == req.sgl_length:
            direction = plan.direction
            data: memoryview | None = None
            fua = False
            memory = plan.memory
            if memory is not None and not session.in_place:
                memory = plan.memory = None  # a data digest covers the payload: stage it
            if req.incapsule:
                go = direction is H2C  # NEW -> READY -> EXECUTING: the data is here
                data = req.data
                fua = plan.fua
                if go and queue.pool is not None:  # the medium moves data from its own pool
                    data = _restage(session.share_of(queue.pool), req)
                    go = data is not None  # pool spent: the general path waits for a buffer
            elif memory is not None:  # in place: the medium's own bytes are the buffer
                req.data = memory
                req.direction = direction
                if direction is C2H:  # the data is there already: send it
                    req.c2h_length = plan.length
                    req.state = EXECUTED
                    self.complete(session, req, SUCCESS)
                    return
                req.plan = plan  # H2C: the host's data lands in the medium
                req.state = TRANSFERRING_H2C
                self._untasked += 1
                session.fabric.fetch_data(req, self._fetched)
                return
            elif direction is C2H:
                staging = session.staging_for(queue).get(plan.length)
                go = staging is not None  # NEW -> NEED_BUFFER -> READY -> EXECUTING
                if staging is not None:
                    req.staging = staging
                    data = req.data = staging.view
                    req.c2h_length = plan.length
            elif direction is H2C:
                staging = session.staging_for(queue).get(plan.length)
                if staging is not None:  # NEW -> NEED_BUFFER -> TRANSFERRING_H2C
                    req.staging = staging
                    req.data = staging.view
                    req.direction = direction
                    req.plan = plan
                    req.state = TRANSFERRING_H2C
                    self._untasked += 1
                    session.fabric.fetch_data(req, self._fetched)
                    return
                go = False
            else:
                go = not plan.length
            if go:
                req.direction = direction
                req.state = EXECUTING
                now = queue.submit(plan.op, plan.offset, data, fua, self._done, req)
                if now is None:
                    self._untasked += 1
                else:
                    req.state = EXECUTED
                    self.complete(session, req, now)
                return
        task = asyncio.get_running_loop().create_task(self._run(session, req, plan))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _fetched(self, req: Request, status: Status) -> None:
        """A fast-path Write's host data is in (or its transfer failed): submit it."""
        plan, req.plan = req.plan, None
        if status is not SUCCESS and not status.ok:
            self._untasked -= 1
            self.complete(req.session, req, status)
            return
        if plan.memory is not None:  # received in place: the write is done
            self._untasked -= 1
            req.state = EXECUTED
            self.complete(req.session, req, SUCCESS)
            return
        req.state = EXECUTING  # TRANSFERRING_H2C -> READY -> EXECUTING
        now = plan.queue.submit(plan.op, plan.offset, req.data, plan.fua, self._done, req)
        if now is not None:
            self._untasked -= 1
            req.state = EXECUTED
            self.complete(req.session, req, now)

    def _start_done(self, req: Request, status: Status) -> None:
        """A fast-path command's media I/O finished (on the event loop's thread).

        A fault boundary (:func:`~nvmf.transport.base.end_queue_on_bug`): the medium calls this
        from a loop over completions of every queue of the process."""
        self._untasked -= 1
        req.state = EXECUTED
        try:
            self.complete(req.session, req, status)
        except Exception:
            end_queue_on_bug(req.session.fabric, "completing a command")

    async def drain(self) -> None:
        """Until every submitted command has completed."""
        while self._tasks or self._untasked:
            if self._tasks:
                await asyncio.wait(list(self._tasks))
            else:
                await asyncio.sleep(0.001)

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def _run(self, session: QueueSession, req: Request, plan: Parsed) -> None:
        try:
            status = await self._execute(session, req, plan)
        except asyncio.CancelledError:
            req.release()
            raise
        except Exception:
            log.exception("internal error on qid %s cid %d", session.qid, req.cid)
            status = Status(SC.INTERNAL, dnr=False)
        try:
            self.complete(session, req, status)
        except Exception:
            end_queue_on_bug(session.fabric, "completing a command")

    async def _execute(self, session: QueueSession, req: Request, plan: Parsed) -> Status:
        if isinstance(plan, Status):
            return plan
        execute = plan.coroutine()
        if plan.forward:
            return await execute(req)
        if plan.length != req.sgl_length:
            return SGL_LENGTH_MISMATCH
        req.direction = plan.direction
        if req.incapsule and plan.direction is not Direction.H2C:
            return SGL_LENGTH_MISMATCH
        own = plan.queue.pool if plan.queue is not None else None
        media_pool = session.share_of(own) if own is not None else None
        if req.incapsule and media_pool is not None:
            req.advance(ReqState.NEED_BUFFER)
            _move_into(await media_pool.acquire(plan.length), req)
        if plan.length and not req.incapsule:
            req.advance(ReqState.NEED_BUFFER)
            pool = session.pool if media_pool is None else media_pool
            staging = pool.get(plan.length)
            if staging is None:
                staging = await pool.acquire(plan.length)
            req.staging = staging
            req.data = staging.view
            if plan.direction is Direction.H2C:
                req.advance(ReqState.TRANSFERRING_H2C)
                status = await _fetch(session.fabric, req)
                if not status.ok:
                    return status
        if plan.direction is Direction.C2H:
            req.c2h_length = plan.length
        req.advance(ReqState.READY)
        req.advance(ReqState.EXECUTING)
        status = await execute(req)
        req.advance(ReqState.EXECUTED)
        return status

    def reject(self, session: QueueSession, req: Request, status: Status) -> None:
        """Complete at once a command that never reached :meth:`submit` (a transport fault on
        its capsule, such as a data digest error): it still took an SQ entry."""
        session.consume_sqe()
        self.complete(session, req, status)

    def complete(self, session: QueueSession, req: Request, status: Status) -> None:
        """The one way a completion leaves: error log, CQE, then the transport sends it."""
        req.status = status
        sqhd = 0xFFFF if session.sqhd_disabled else session.sqhd
        if status is SUCCESS:
            cqe = CQE.pack(0, 0, sqhd, session.qid or 0, req.cid, 0)
        else:
            if not status.ok:
                req.c2h_length = 0
                ioctx = session.ioctx
                if ioctx is not None and session.qid:  # an I/O command: its namespace counts
                    ns = ioctx.namespaces.get(req.nsid)
                    if ns is not None:
                        ns.counters.errors += 1
                if self.handler.command_failed(session, req, status):
                    status = req.status = replace(status, more=True)  # see the error log
            cqe = encode_cqe(status, cid=req.cid, sqid=session.qid or 0, sqhd=sqhd)
        req.state = TRANSFERRING_C2H
        session.fabric.complete(req, cqe)


def _restage(pool: Staging, req: Request) -> memoryview | None:
    """Copy an in-capsule Write's data into a buffer of ``pool`` (the medium's DMA-visible
    staging memory) and make it the request's buffer; None when ``pool`` has none free.

    The one copy of payload on such a medium, and only for in-capsule data: the capsule was
    received into the transport's receive buffer before its command said which namespace, so
    which pool, the data belongs in.  Every other command's buffer comes from that pool."""
    assert req.data is not None
    staging = pool.get(len(req.data))
    if staging is None:
        return None
    _move_into(staging, req)
    return staging.view


def _move_into(staging: StagingBuffer, req: Request) -> None:
    """:func:`_restage` with the buffer in hand: copy, swap, release the capsule's buffer."""
    assert req.data is not None
    staging.view[:] = req.data
    old, req.staging = req.staging, staging
    if old is not None:
        old.release()
    req.data = staging.view


async def _fetch(fabric: FabricQueue, req: Request) -> Status:
    """:meth:`FabricQueue.fetch_data` awaited (the pipeline's general path)."""
    fut: asyncio.Future[Status] = asyncio.get_running_loop().create_future()

    def done(_req: Request, status: Status) -> None:
        if not fut.done():
            fut.set_result(status)

    fabric.fetch_data(req, done)
    return await fut
