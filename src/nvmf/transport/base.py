"""The transport contract: what the target core asks of a fabric (DESIGN.md pattern 1).

Like the Linux target's ``struct nvmet_fabrics_ops`` and SPDK's ``spdk_nvmf_transport_ops``,
one table of operations per fabric.  The core (``nvmf.control``) only ever holds a
:class:`Transport` and the :class:`FabricQueue` objects it creates; it never imports ``tcp`` or
``rdma``.  Transports are looked up by ``trtype`` in :data:`REGISTRY` (module paths, imported on
first use, so a missing optional dependency such as pyverbs only matters for its own fabric).

How a command flows (see :mod:`nvmf.protocol.request` for the states): the transport decodes a
capsule into a :class:`~nvmf.protocol.request.Request` and hands it to its owner
(:meth:`QueueOwner.submit`).  The owner's pipeline checks the SGL with the fabric's rules
(:meth:`FabricQueue.map_sgl`), validates the command, takes a staging buffer, asks the transport
for host data (:meth:`FabricQueue.fetch_data`), executes, and gives the completion back
(:meth:`FabricQueue.complete`), which sends data and the CQE.

A queue whose transport can move it to another process (``caps.exportable``: NVMe/TCP, whose
whole state is a socket and the codec's negotiated parameters) is handed from the control plane
to an offload worker after its Connect: :meth:`FabricQueue.export_state` on one side,
:meth:`Transport.import_queue` on the other.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from nvmf.wire.status import Status

if TYPE_CHECKING:
    from nvmf.memory.staging import Staging
    from nvmf.protocol.request import Request

_log = logging.getLogger(__name__)

#: Told when a command's host data is in (:meth:`FabricQueue.fetch_data`): the request and
#: SUCCESS, or the error status the command completes with.
DataDone = Callable[["Request", Status], None]


class ListenPort(Protocol):
    """What a transport reads of a configured port (``nvmf.control.model.Port`` has it all)."""

    @property
    def portid(self) -> int: ...
    @property
    def trtype(self) -> str: ...
    @property
    def adrfam(self) -> str: ...
    @property
    def traddr(self) -> str: ...
    @property
    def trsvcid(self) -> str: ...
    @property
    def inline_data_size(self) -> int:
        """The most in-capsule data a command may carry on this port."""
        ...


@dataclass(frozen=True)
class PortInfo:
    """A port's transport settings as a plain value, for a process that has no model."""

    portid: int
    trtype: str
    adrfam: str
    traddr: str
    trsvcid: str
    inline_data_size: int

    @classmethod
    def of(cls, port: ListenPort) -> PortInfo:
        return cls(
            port.portid, port.trtype, port.adrfam, port.traddr, port.trsvcid, port.inline_data_size
        )


class QueueState(Protocol):
    """What a transport reads of the per-queue state its owner keeps for it."""

    qid: int | None
    #: Connect SQSIZE (0's based; 0 before Connect): the queue holds at most ``sqsize + 1``
    #: commands in flight.
    sqsize: int
    #: SQ flow control disabled: a read's data PDU may carry the completion (NVMe/TCP SUCCESS).
    sqhd_disabled: bool
    #: Where this queue's staging buffers come from (its share of its process's pool):
    #: in-capsule data lands there.
    pool: Staging
    #: Payload may move in place between the fabric and a medium that is memory
    #: (``MediaQueue.memory``).  A transport clears it when a data digest covers the payload:
    #: the digest must be computed over bytes nobody changes before they leave (a Write to the
    #: same blocks from another queue could, on a medium all workers share), and a Write's
    #: bytes must be checked before they reach the medium.
    in_place: bool


class QueueOwner(Protocol):
    """The layer above a transport: the control plane's service, or a worker."""

    def open_queue(self, fabric: FabricQueue, port: ListenPort) -> QueueState:
        """A new fabric queue on ``port``: the state the owner keeps for it."""
        ...

    def submit(self, state: QueueState, req: Request) -> None:
        """A command capsule arrived on the queue of ``state``."""
        ...

    def complete(self, state: QueueState, req: Request, status: Status) -> None:
        """Complete ``req`` at once with ``status`` (a transport-level failure of one command,
        such as a data digest error on its in-capsule data)."""
        ...

    def queue_closed(self, state: QueueState) -> None:
        """The queue of ``state`` is gone (closed by either side); called once."""
        ...


@dataclass(frozen=True)
class QueueExport:
    """A fabric queue leaving its process: the descriptor and what its codec negotiated."""

    fd: int
    #: Transport-specific, picklable state (NVMe/TCP: digests, PDA, MAXH2CDATA, bytes received
    #: past the last PDU the old owner consumed).
    state: dict[str, Any]


@dataclass(frozen=True)
class Placement:
    """A fabric queue an offload worker creates before its Connect.

    A queue pair is used by the process that created it and cannot move (Soft-RoCE has no
    ``ibv_import_device``), so an NVMe/RDMA I/O queue is made where it will be served: the
    control plane, which holds the connection request, asks a worker to create the QP
    (:meth:`QueuePlacer.place`), then accepts the connection with that QP's number.  The
    queue's Connect then arrives in the worker, which has the control plane execute it."""

    port: PortInfo
    #: Transport-specific, picklable (NVMe/RDMA: device, queue depth, the QP's attributes).
    state: dict[str, Any]


class QueuePlacer(Protocol):
    """Where a transport has an offload worker create a queue (the control plane's workers)."""

    async def place(
        self, placement: Placement, ended: Callable[[str], None]
    ) -> tuple[int, int, dict[str, Any]]:
        """Have the least busy worker create the queue: (the worker's index, the queue's key
        there, what the worker's transport answered: NVMe/RDMA the QP number).  ``ended`` is
        called once with a reason when the queue is gone in the worker (closed there, or the
        worker died).  Raises ``RuntimeError`` when no worker can take it."""
        ...

    def end(self, worker: int, key: int, reason: str) -> None:
        """Close a placed queue in its worker: its connection ended in the control plane."""
        ...


@dataclass(frozen=True)
class TransportCaps:
    """What a transport offers, which the core advertises and plans with."""

    #: Queues can move to another process (:meth:`FabricQueue.export_state`).
    exportable: bool


class FabricQueue(Protocol):
    """One fabric queue pair: a TCP connection, an RDMA QP, a loop pair."""

    @property
    def qid(self) -> int:
        """NVMe queue id, known once Connect arrived (0 = admin)."""
        ...

    def map_sgl(self, req: Request) -> Status:
        """Check the SQE's SGL against this fabric's rules; set ``req.sgl_length`` and
        ``req.incapsule``.  NVMe/TCP accepts in-capsule data blocks (offset subtype) and
        transport data blocks; NVMe/RDMA keyed data blocks and in-capsule data blocks."""
        ...

    def fetch_data(self, req: Request, done: DataDone) -> None:
        """Bring the command's host data into ``req.data`` (R2T/H2CData, RDMA READ), then call
        ``done(req, status)`` exactly once, on the event loop, never from inside this call: with
        SUCCESS when all of it is in, with an error status when the transfer failed or the
        queue closed first.  A callback, not a coroutine, so that a command needs no task."""
        ...

    def complete(self, req: Request, cqe: bytes) -> None:
        """Send ``req.c2h_length`` bytes of ``req.data`` if the command succeeded and moves data
        to the host, then the completion ``cqe`` (or, NVMe/TCP, fold it into the last C2HData
        with the SUCCESS flag), then release the request's buffer."""
        ...

    def local_address(self) -> tuple[str, str]:
        """The (traddr, trsvcid) this queue was reached on: the discovery log's address for a
        port bound to a wildcard address (``disc_traddr`` in the Linux target)."""
        ...

    def close(self, reason: str) -> None:
        """Tear the queue down (controller deleted, keep-alive expired, fatal error)."""
        ...

    def send_cqe(self, cqe: bytes) -> None:
        """Send the completion ``cqe`` of a command another process executed (an imported
        queue's Connect)."""
        ...

    async def export_state(self) -> QueueExport:
        """Stop serving this queue here and give out what another process needs to go on: a
        duplicate of the descriptor (this side closes its own) and the codec's state.  Only at
        a command boundary: nothing in flight, nothing left to send."""
        ...


def end_queue_on_bug(queue: FabricQueue, where: str) -> None:
    """The fault boundary: call from ``except Exception`` where the event loop enters one
    queue's code (a transport's receive, a medium's completion).

    An exception there is a bug in the target, never the host's fault (a host's bad input is a
    status or a fatal transport error), and the queue's state is unknown after it: its commands
    may be half parsed or never complete.  So the traceback is logged and the queue ends at once,
    as the Linux target ends a queue on an internal error: its host sees the connection go and
    reconnects, instead of waiting for its I/O timeout, and the exception cannot stop the loop
    that was dispatching for other queues (one CQ polled for every queue of an RDMA device,
    one io_uring reaped for every queue of a worker)."""
    _log.exception("queue %s: internal error %s; ending the queue", queue.qid, where)
    try:
        queue.close(f"internal error {where}")
    except Exception:  # the close is itself at the boundary: keep the loop going
        _log.exception("queue %s: closing after an internal error failed too", queue.qid)


class Transport(Protocol):
    """One fabric type's port management."""

    trtype: str
    caps: TransportCaps
    #: Seconds a connection may stall before its ICReq, before its Connect, or inside a PDU
    #: before it is closed (``nvmf.idle_timeout_ms``); fabrics with no such stall ignore it.
    idle_timeout: float
    #: Whether a queue's large sends run under ``SCHED_FIFO``, so that a receiver they wake on
    #: this CPU cannot preempt them part way (``nvmf.unpreempted_sends``,
    #: :mod:`nvmf.transport.unpreempted`); fabrics whose sends wake no receiver ignore it.
    unpreempted_sends: bool
    #: The highest I/O queue ID and the deepest I/O queue (CAP.MQES + 1) a host may connect
    #: (``nvmf.max_io_queues``, ``nvmf.queue_depth``): a fabric that sizes a queue before its
    #: Connect (NVMe/RDMA's connect request) refuses more there; others ignore it.
    queue_limits: tuple[int, int]
    #: Where I/O queues that must be created in their worker before Connect are placed (the
    #: control plane's workers), or None to serve them in this process.
    placer: QueuePlacer | None

    async def add_port(self, port: ListenPort, owner: QueueOwner) -> None:
        """Start listening on ``port``; new queues are owned by ``owner``."""
        ...

    def stop_accepting(self, port: ListenPort) -> None:
        """Take no new connection on ``port`` (a target stopping gracefully); its queues go on
        until :meth:`remove_port`.  A fabric whose listener also carries its queues' events
        (NVMe/RDMA's CM channel) refuses new connections instead of closing it."""
        ...

    async def remove_port(self, port: ListenPort) -> None:
        """Stop listening on ``port`` and close its queues."""
        ...

    async def close_all(self) -> None:
        """Close every queue this transport serves and release what it holds for them (a
        worker stopping: device contexts, registered memory)."""
        ...

    def import_queue(self, export: QueueExport, port: ListenPort, owner: QueueOwner) -> FabricQueue:
        """Go on serving a queue another process exported (:meth:`FabricQueue.export_state`);
        this side now owns ``export.fd``."""
        ...

    def bound_address(self, port: ListenPort) -> tuple[str, int]:
        """Where ``port`` actually listens (after binding port 0, say)."""
        ...

    def adopt_placement(
        self, placement: Placement, owner: QueueOwner, ended: Callable[[str], None]
    ) -> tuple[FabricQueue, dict[str, Any]]:
        """In a worker: create the queue :meth:`QueuePlacer.place` asked for, owned by
        ``owner``, and what the control plane needs to accept its connection.  ``ended(reason)``
        is called once when the queue closes.  Transports whose queues move after Connect
        instead (``caps.exportable``) raise ``RuntimeError``."""
        ...


#: trtype -> "module:Class".  Imported on first use.
REGISTRY: dict[str, str] = {
    "tcp": "nvmf.transport.tcp:TcpTransport",
    "loop": "nvmf.transport.loop:LoopTransport",
    "rdma": "nvmf.transport.rdma:RdmaTransport",
}


class TransportUnavailable(RuntimeError):
    """A configured trtype has no implementation here (or its optional dependency is missing)."""


def get_transport(trtype: str) -> Transport:
    """A new transport object for ``trtype``."""
    path = REGISTRY.get(trtype)
    if path is None:
        known = ", ".join(sorted(REGISTRY))
        raise TransportUnavailable(f"trtype {trtype!r} is not supported here (known: {known})")
    module_name, _, cls_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TransportUnavailable(f"trtype {trtype!r} needs {exc.name}: {exc}") from exc
    transport: Transport = getattr(module, cls_name)()
    return transport


async def sent(fabrics: Iterable[FabricQueue]) -> None:
    """Until what each of ``fabrics`` has queued to send is delivered (a graceful stop: the
    completions of the commands that ran reach their hosts before their queues close), all
    at once.  A fabric that queues nothing (its sends complete at once) has no ``drained``
    and costs nothing here."""
    waits = [drained() for f in fabrics if (drained := getattr(f, "drained", None)) is not None]
    await asyncio.gather(*waits)
