"""What a command handler returns: a plan to execute, or a status (docs/architecture.md).

A handler's *parse* step validates the SQE and decides the data direction and transfer length;
the pipeline (:mod:`nvmf.offload.pipeline`) then moves the data and runs the plan's *execute*
step.  Both steps return NVMe status values; neither raises for a host's bad command.  The
control plane's admin, fabrics and discovery handlers and the data plane's I/O handlers all
return these.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nvmf.media.base import medium_result
from nvmf.media.queue import MediaQueue
from nvmf.protocol.request import Direction, Request
from nvmf.wire.sqe import OFF_CDW10, OFF_DPTR, OFF_NSID
from nvmf.wire.status import SC, SUCCESS, Status, error

Execute = Callable[[Request], Awaitable[Status]]


@dataclass(slots=True)
class Plan:
    """How to carry out a valid command."""

    direction: Direction
    length: int
    #: The coroutine that carries the command out; None for a plan made by :func:`started`.
    execute: Execute | None
    #: The status comes from elsewhere (the control plane): no data moves, ``execute`` answers.
    forward: bool = False
    #: A media queue operation instead of ``execute`` (Read, Write, Flush): ``queue.submit(op,
    #: offset, request data, fua, ...)``, which the pipeline's fast path runs without a task.
    queue: MediaQueue | None = None
    op: int = 0
    offset: int = 0
    fua: bool = False
    #: The medium's own bytes for this command (``queue.memory`` sliced to its range): the
    #: pipeline's fast path moves the payload in place instead of through a staging buffer.
    memory: memoryview | None = None

    def coroutine(self) -> Execute:
        """The plan as a coroutine function, whichever form it was made in."""
        if self.execute is not None:
            return self.execute
        assert self.queue is not None, "a plan has an execute or a media queue operation"
        return media_executor(self.queue, self.op, self.offset, self.fua)


Parsed = Plan | Status


async def _succeed(req: Request) -> Status:
    return SUCCESS


def no_data(execute: Execute = _succeed) -> Plan:
    """A command that moves no data."""
    return Plan(Direction.NONE, 0, execute)


def c2h(length: int, execute: Execute) -> Plan:
    """A command that sends ``length`` bytes to the host."""
    return Plan(Direction.C2H, length, execute)


def h2c(length: int, execute: Execute) -> Plan:
    """A command that takes ``length`` bytes from the host."""
    return Plan(Direction.H2C, length, execute)


def media_io(direction: Direction, length: int, queue: MediaQueue, op: int, offset: int,
             fua: bool = False) -> Plan:  # fmt: skip
    """A command that is one media queue operation (:mod:`nvmf.media.queue`)."""
    return Plan(direction, length, None, queue=queue, op=op, offset=offset, fua=fua)


def media_executor(queue: MediaQueue, op: int, offset: int, fua: bool) -> Execute:
    """The coroutine form of a media queue operation (the pipeline's general path).  Cancelled
    while the medium still holds the buffer, it waits for the medium before the cancellation
    goes on, so the staging buffer is never reused under a running I/O."""

    async def execute(req: Request) -> Status:
        fut: asyncio.Future[Status] = asyncio.get_running_loop().create_future()

        def done(_req: Request, status: Status) -> None:
            if not fut.done():
                fut.set_result(status)

        status = queue.submit(op, offset, req.data, fua, done, req)
        if status is not None:
            return status
        return await medium_result(fut)

    return execute


def send_bytes(payload: bytes) -> Execute:
    """An executor that copies a small, already built structure (Identify, a log page) into the
    request's buffer: admin data, not payload."""

    async def execute(req: Request) -> Status:
        assert req.data is not None
        n = min(len(payload), len(req.data))
        req.data[:n] = payload[:n]
        if n < len(req.data):
            req.data[n:] = bytes(len(req.data) - n)
        return SUCCESS

    return execute


INVALID_OPCODE = error(SC.INVALID_OPCODE, 0)
INVALID_NS = error(SC.INVALID_NS, OFF_NSID)
INVALID_CDW10 = error(SC.INVALID_FIELD, OFF_CDW10)
SGL_LENGTH_MISMATCH = error(SC.SGL_INVALID_DATA, OFF_DPTR)
