"""The transport contract: what the target core asks of a fabric (DESIGN.md pattern 1).

Like the Linux target's ``struct nvmet_fabrics_ops`` and SPDK's ``spdk_nvmf_transport_ops``,
one table of operations per fabric.  The core (``nvmf.target``) only ever holds a
:class:`Transport` and the :class:`FabricQueue` objects it creates; it never imports ``tcp`` or
``rdma``.  Transports are looked up by ``trtype`` in :data:`REGISTRY` (module paths, imported on
first use, so a missing optional dependency such as pyverbs only matters for its own fabric).

How a command flows (see :mod:`nvmf.protocol.request` for the states): the transport decodes a
capsule into a :class:`~nvmf.protocol.request.Request`, checks its SGL with its own rules
(:meth:`FabricQueue.map_sgl`), and hands it to the core.  The core validates the command, takes a
staging buffer, asks the transport for host data (:meth:`FabricQueue.fetch_data`), executes, and
gives the completion back (:meth:`FabricQueue.complete`), which sends data and the CQE.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol

from nvmf.wire.status import Status

if TYPE_CHECKING:
    from nvmf.protocol.request import Request
    from nvmf.target.model import Port
    from nvmf.target.service import TargetService


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

    async def fetch_data(self, req: Request) -> Status:
        """Bring the command's host data into ``req.data`` (R2T/H2CData, RDMA READ)."""
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


class Transport(Protocol):
    """One fabric type's port management."""

    trtype: str

    async def add_port(self, port: Port, service: TargetService) -> None:
        """Start listening on ``port``; new queues are served by ``service``."""
        ...

    async def remove_port(self, port: Port) -> None:
        """Stop listening on ``port`` and close its queues."""
        ...

    def bound_address(self, port: Port) -> tuple[str, int]:
        """Where ``port`` actually listens (after binding port 0, say)."""
        ...


#: trtype -> "module:Class".  Imported on first use.
REGISTRY: dict[str, str] = {
    "tcp": "nvmf.transport.tcp:TcpTransport",
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
