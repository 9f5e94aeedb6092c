"""An in-memory fabric for tests: a target queue and a host end wired together in one process.

h11's connection pair, and the Linux target's ``nvme-loop``: the host end
(:class:`LoopHostQueue`, from :meth:`LoopTransport.connect`) submits a 64-byte SQE with, when
the command moves data, a buffer of host memory; the target end (:class:`LoopQueue`) is a
:class:`~nvmf.transport.base.FabricQueue` that drives its :class:`QueueOwner` exactly as NVMe/TCP
does: ``open_queue`` once, ``submit`` per command, ``queue_closed`` once when either side closes.

Data moves by memoryview, copied only where the semantics need a copy (where a real fabric's
DMA or socket would move it):

* in-capsule data is copied into a staging buffer of the queue's pool when the command is
  submitted (the capsule arriving in target memory);
* other host-to-controller data is copied from the host's memory into the request's staging
  buffer in :meth:`LoopQueue.fetch_data` (NVMe/TCP's R2T + H2CData, NVMe/RDMA's RDMA READ);
* controller-to-host data is copied from the staging buffer into the host's memory in
  :meth:`LoopQueue.complete` (C2HData, RDMA WRITE), before the buffer goes back to its pool.

SGLs follow NVMe/TCP's rules, with the constants of :mod:`nvmf.wire.sqe`: an in-capsule data
block (offset subtype, offset 0, its length the data that came with the command and at most the
port's ``inline_data_size``), or a transport data block (transport-specific subtype) for data
left in host memory, at most as long as the memory the host gave.

Loop queues live in the process that made them: ``caps.exportable`` is False, and
:meth:`LoopQueue.export_state` raises :class:`LoopExportError`, so the control plane serves them
itself (with offload workers too).  Everything runs on the target's event loop; a test on
another thread reaches it with ``asyncio.run_coroutine_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nvmf.memory.staging import StagingBuffer
from nvmf.protocol.request import Request, map_incapsule
from nvmf.transport.base import DataDone, QueueExport, TransportCaps, end_queue_on_bug
from nvmf.wire.sqe import (
    CQE,
    FLAGS_CHECKED,
    OFF_DPTR,
    OFF_FLAGS,
    PSDT_MASK,
    PSDT_SGL_MPTR_CONTIG,
    SGL_DATA,
    SGL_INCAPSULE,
    SGL_TCP_TRANSPORT,
    SQE_SIZE,
)
from nvmf.wire.status import SC, SUCCESS, Status, error

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

#: The loop's transport data block: NVMe/TCP's descriptor (transport data block, transport
#: specific subtype), data left in host memory and moved by the fabric.
SGL_LOOP_TRANSPORT = SGL_TCP_TRANSPORT


class LoopExportError(RuntimeError):
    """A loop queue cannot move to another process: its host end is an object in this one."""


class LoopClosedError(ConnectionError):
    """The loop queue is closed (by the host end or the target); its commands will not
    complete."""


@dataclass(frozen=True, slots=True)
class LoopCompletion:
    """What the host end gets back for one command."""

    #: The 16-byte CQE.
    cqe: bytes
    #: The controller-to-host data, a view of the host memory it was placed in (empty when the
    #: command moved none, or failed).
    data: memoryview


class _HostCommand:
    """One command of the host end, until its completion arrives."""

    __slots__ = ("future", "memory")

    def __init__(self, memory: memoryview | None, future: asyncio.Future[LoopCompletion]):
        #: The host memory the command's SGL describes (data out, or room for data in).
        self.memory = memory
        self.future = future


class LoopQueue:
    """The target end of a loop queue pair: a :class:`~nvmf.transport.base.FabricQueue`."""

    def __init__(
        self,
        port: ListenPort,
        owner: QueueOwner,
        on_close: Callable[[LoopQueue], None],
        address: tuple[str, str],
    ) -> None:
        self.port = port
        self.owner = owner
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self.close_reason = ""
        self._on_close = on_close
        self._address = address
        #: Done when the pair is closed, by either side.
        self.closed_event = asyncio.Event()
        #: Commands the host submitted and the target has not completed, by cid.
        self._pending: dict[int, _HostCommand] = {}
        self.session: QueueState = owner.open_queue(self, port)

    # -- FabricQueue ---------------------------------------------------------------------------
    @property
    def qid(self) -> int:
        return self.session.qid or 0

    def local_address(self) -> tuple[str, str]:
        return self._address

    def map_sgl(self, req: Request) -> Status:
        """An in-capsule data block for data that came with the command, else a transport data
        block no longer than the host memory the command was given."""
        if req.flags & FLAGS_CHECKED != PSDT_SGL_MPTR_CONTIG:
            return error(SC.INVALID_FIELD, OFF_FLAGS)
        length = req.dptr_length
        if req.dptr_type == SGL_INCAPSULE:
            if req.dptr_address + length > self.port.inline_data_size:  # as Linux's nvmet-rdma
                return error(SC.SGL_INVALID_OFFSET, OFF_DPTR)
            return map_incapsule(req)
        if req.dptr_type == SGL_LOOP_TRANSPORT:
            if req.incapsule:
                return error(SC.SGL_INVALID_DATA, OFF_DPTR)
            cmd = self._pending.get(req.cid)
            room = 0 if cmd is None or cmd.memory is None else len(cmd.memory)
            if length > room:  # the descriptor reaches past the host's memory
                return error(SC.SGL_INVALID_DATA, OFF_DPTR)
            req.sgl_length = length
            return SUCCESS
        return error(SC.SGL_INVALID_TYPE, OFF_DPTR + 15)

    def fetch_data(self, req: Request, done: DataDone) -> None:
        """Copy the host's data into ``req.data`` (the one copy an H2C transfer makes)."""
        self.loop.call_soon(done, req, self._copy_in(req))

    def _copy_in(self, req: Request) -> Status:
        assert req.data is not None
        if self.closed:
            return Status(SC.TRANSIENT_TR_ERR)
        cmd = self._pending.get(req.cid)
        if cmd is None or cmd.memory is None or len(cmd.memory) < len(req.data):
            return error(SC.DATA_XFER_ERROR)
        req.data[:] = cmd.memory[: len(req.data)]
        return SUCCESS

    def complete(self, req: Request, cqe: bytes) -> None:
        """Copy C2H data into the host's memory, release the staging buffer, deliver the CQE."""
        if self.closed:
            req.release()
            return
        cmd = self._pending.pop(req.cid, None)
        n = req.c2h_length if req.status.ok and req.data is not None else 0
        if cmd is None:  # the host end never sent it (owner.complete of a made-up request)
            req.release()
            log.warning("loop qid %d: completion for cid %d nobody waits for", self.qid, req.cid)
            return
        data = memoryview(b"")
        if n:
            assert req.data is not None
            memory = cmd.memory
            if memory is None or memory.readonly or len(memory) < n:
                req.release()
                reason = "C2H data to host memory that cannot take it"
                cmd.future.set_exception(LoopClosedError(reason))
                self.close(reason)
                return
            memory[:n] = req.data[:n]
            data = memory[:n]
        req.release()
        _deliver(cmd, LoopCompletion(bytes(cqe), data))

    def send_cqe(self, cqe: bytes) -> None:
        """Deliver a completion another process produced (no loop queue is ever imported, but
        the host end takes any CQE for a command it waits on)."""
        if self.closed:
            return
        cid = CQE.unpack(cqe)[4]
        cmd = self._pending.pop(cid, None)
        if cmd is not None:
            _deliver(cmd, LoopCompletion(bytes(cqe), memoryview(b"")))

    def close(self, reason: str) -> None:
        """End the pair: the host end's waiting commands fail with :class:`LoopClosedError`,
        the owner is told once."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        log.info("loop qid %s closed: %s", self.session.qid, reason)
        pending, self._pending = self._pending, {}
        for cmd in pending.values():
            if not cmd.future.done():
                cmd.future.set_exception(LoopClosedError(f"queue closed: {reason}"))
        self.closed_event.set()
        self.owner.queue_closed(self.session)
        self._on_close(self)

    async def export_state(self) -> QueueExport:
        raise LoopExportError(
            "loop queues cannot move to another process (their host end lives in this one)"
        )

    # -- the host end's side -------------------------------------------------------------------
    def _submit(
        self, sqe: bytes | memoryview, memory: memoryview | None, incapsule: bool
    ) -> asyncio.Future[LoopCompletion]:
        future: asyncio.Future[LoopCompletion] = self.loop.create_future()
        if self.closed:
            future.set_exception(LoopClosedError(f"queue closed: {self.close_reason}"))
            return future
        if len(sqe) != SQE_SIZE:
            raise ValueError(f"an SQE is {SQE_SIZE} bytes, got {len(sqe)}")
        req = Request(sqe, self.qid)
        if req.cid in self._pending:
            raise ValueError(f"cid {req.cid} is already in flight on this queue")
        if incapsule and memory is not None and len(memory):
            staging = self.session.pool.get(len(memory))
            if staging is None:  # pool spent: in-capsule data is small, take it from the heap
                staging = StagingBuffer(None, memoryview(bytearray(len(memory))), len(memory))
            staging.view[:] = memory
            req.incapsule = True
            req.staging = staging
            req.data = staging.view
            memory = None  # the data went with the capsule: nothing is left in host memory
        self._pending[req.cid] = _HostCommand(memory, future)
        try:
            self.owner.submit(self.session, req)
        except Exception:  # the host end's caller is not to blame: its command fails closed
            end_queue_on_bug(self, "handling a command")
        return future


def _deliver(cmd: _HostCommand, completion: LoopCompletion) -> None:
    if not cmd.future.done():
        cmd.future.set_result(completion)


class LoopHostQueue:
    """The host end of a loop queue pair: submit SQEs, await their completions.

    Use it on the target's event loop.
    """

    def __init__(self, target: LoopQueue) -> None:
        self.target = target

    @property
    def closed(self) -> bool:
        """True once either side closed the pair."""
        return self.target.closed

    def submit(
        self,
        sqe: bytes | memoryview,
        *,
        data_out: bytes | bytearray | memoryview | None = None,
        data_in: int | memoryview = 0,
        incapsule: bool = False,
        fill_sgl: bool = True,
    ) -> asyncio.Future[LoopCompletion]:
        """Send the 64-byte ``sqe``; the future is its completion.

        ``data_out`` is host memory holding the data to send (viewed, not copied, until the
        target fetches it; ``incapsule`` sends it with the command instead).  ``data_in`` is the
        host memory that receives the data (a writable memoryview, or a length to allocate).
        With ``fill_sgl`` the SQE's PSDT and SGL describe that memory, as a host driver writes
        them; without it the SQE goes as it is (to test the target's SGL checks).
        """
        if data_out is not None and (isinstance(data_in, memoryview) or data_in):
            raise ValueError("a command moves data one way: give data_out or data_in")
        memory: memoryview | None
        if data_out is not None:
            memory = memoryview(data_out).cast("B")
        elif isinstance(data_in, memoryview):
            memory = data_in.cast("B")
        elif data_in:
            memory = memoryview(bytearray(data_in))
        else:
            memory = None
        if fill_sgl:
            sqe = _with_sgl(sqe, memory, incapsule and data_out is not None)
        return self.target._submit(sqe, memory, incapsule and data_out is not None)

    async def command(
        self,
        sqe: bytes | memoryview,
        *,
        data_out: bytes | bytearray | memoryview | None = None,
        data_in: int | memoryview = 0,
        incapsule: bool = False,
        fill_sgl: bool = True,
    ) -> LoopCompletion:
        """:meth:`submit`, and wait for the completion."""
        return await self.submit(
            sqe, data_out=data_out, data_in=data_in, incapsule=incapsule, fill_sgl=fill_sgl
        )

    async def wait_closed(self) -> str:
        """Until the pair is closed, by either side; the reason."""
        await self.target.closed_event.wait()
        return self.target.close_reason

    def close(self) -> None:
        """Hang up: the target sees its queue closed."""
        self.target.close("host closed the connection")


def _with_sgl(sqe: bytes | memoryview, memory: memoryview | None, incapsule: bool) -> bytes:
    """``sqe`` with SGL PSDT and one descriptor for ``memory``."""
    raw = bytearray(sqe)
    if len(raw) != SQE_SIZE:
        raise ValueError(f"an SQE is {SQE_SIZE} bytes, got {len(raw)}")
    length = 0 if memory is None else len(memory)
    raw[OFF_FLAGS] = (raw[OFF_FLAGS] & ~PSDT_MASK & 0xFF) | PSDT_SGL_MPTR_CONTIG
    type_byte = SGL_INCAPSULE if incapsule else SGL_LOOP_TRANSPORT
    SGL_DATA.pack_into(raw, OFF_DPTR, 0, length, type_byte)
    return bytes(raw)


class LoopTransport:
    """In-process ports: :meth:`connect` makes a queue pair on a port added here."""

    trtype = "loop"
    caps = TransportCaps(exportable=False)
    #: Queues are sized by their Connect here, not before it, and never placed.
    queue_limits = (0xFFFE, 0x10000)
    placer: QueuePlacer | None = None

    def __init__(self) -> None:
        #: Nothing stalls in memory: kept for the contract.
        self.idle_timeout = 30.0
        #: A send hands buffers to the peer in this process, on this thread: it wakes no
        #: receiver that could preempt it, so there is nothing to raise.  Kept for the
        #: contract.
        self.unpreempted_sends = True
        self._ports: dict[int, tuple[ListenPort, QueueOwner]] = {}
        self._queues: dict[int, set[LoopQueue]] = {}
        #: Ports that take no new queue (:meth:`stop_accepting`).
        self._refusing: set[int] = set()

    async def add_port(self, port: ListenPort, owner: QueueOwner) -> None:
        if port.portid in self._ports:
            raise OSError(f"loop port {port.portid} is added already")
        self._ports[port.portid] = (port, owner)
        self._queues[port.portid] = set()
        log.info("loop port %d ready", port.portid)

    def stop_accepting(self, port: ListenPort) -> None:
        """:meth:`connect` on ``port`` is refused from now on; its queues go on."""
        if port.portid in self._ports:
            self._refusing.add(port.portid)

    async def remove_port(self, port: ListenPort) -> None:
        self._ports.pop(port.portid, None)
        self._refusing.discard(port.portid)
        for queue in list(self._queues.pop(port.portid, set())):
            queue.close("port removed")

    def import_queue(self, export: QueueExport, port: ListenPort, owner: QueueOwner) -> LoopQueue:
        raise LoopExportError("loop queues cannot move to another process")

    def adopt_placement(
        self, placement: Placement, owner: QueueOwner, ended: Callable[[str], None]
    ) -> tuple[FabricQueue, dict[str, Any]]:
        raise RuntimeError(f"{self.trtype} queues are handed over after Connect, not placed")

    def bound_address(self, port: ListenPort) -> tuple[str, int]:
        """The port's own address: a loop port binds nothing."""
        if port.portid not in self._ports:
            raise KeyError(f"loop port {port.portid} is not added")
        traddr, trsvcid = _address(port)
        return traddr, int(trsvcid)

    def connect(self, port: ListenPort | int) -> LoopHostQueue:
        """A new queue pair on ``port`` (or its portid): the owner opens the target end now;
        the host end is returned.  Call it on the event loop that serves the port."""
        portid = port if isinstance(port, int) else port.portid
        entry = self._ports.get(portid)
        if entry is None:
            raise ConnectionRefusedError(f"no loop port {portid}")
        if portid in self._refusing:
            raise ConnectionRefusedError(f"loop port {portid} takes no new queue")
        listen, owner = entry
        queues = self._queues[portid]
        target = LoopQueue(listen, owner, queues.discard, _address(listen))
        queues.add(target)
        return LoopHostQueue(target)

    async def close_all(self) -> None:
        """Close every queue of every port."""
        for queues in list(self._queues.values()):
            for queue in list(queues):
                queue.close("target stopping")


def _address(port: ListenPort) -> tuple[str, str]:
    """What a loop queue reports as its local address: the port's, with stand-ins for the
    parts a loop port may leave empty."""
    trsvcid = port.trsvcid if port.trsvcid.isdigit() else str(port.portid)
    return port.traddr or "loop", trsvcid
