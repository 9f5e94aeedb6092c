"""nvmf.host: the NVMe-oF initiator (see docs/architecture.md).

The host side of NVMe/TCP on asyncio: :class:`HostQueue` (one connection, one NVMe queue),
:func:`connect` / :class:`Controller` (the Linux host's bring-up sequence, admin and NVM I/O
commands, keep alive, shutdown), :func:`discover` (the Discovery log page).  NVMe/RDMA
(``trtype="rdma"``) uses :class:`nvmf.host.rdma_queue.RdmaHostQueue` instead of
:class:`HostQueue`, imported only then (it needs rdma-core's pyverbs).  Errors are
:class:`NvmeError` (a command's non-zero status), :class:`TransportError` (a queue failed) and
:class:`AuthenticationError` (DH-HMAC-CHAP failed on a queue, :mod:`nvmf.host.auth`).
It knows nothing of the target's internals: only the wire and the sans-IO protocol layers.
"""

from nvmf.host.auth import AuthenticationError
from nvmf.host.controller import (
    ConnectOptions,
    Controller,
    NamespaceGeometry,
    connect,
    connect_with,
)
from nvmf.host.discovery import (
    DISCOVERY_NQN,
    discover,
    offered_subsystems,
    read_discovery_log,
)
from nvmf.host.errors import HostError, NvmeError, TransportError
from nvmf.host.identity import default_hostid, default_hostnqn
from nvmf.host.queue import Completion, HostQueue

__all__ = [
    "DISCOVERY_NQN",
    "AuthenticationError",
    "Completion",
    "ConnectOptions",
    "Controller",
    "HostError",
    "HostQueue",
    "NamespaceGeometry",
    "NvmeError",
    "TransportError",
    "connect",
    "connect_with",
    "default_hostid",
    "default_hostnqn",
    "discover",
    "offered_subsystems",
    "read_discovery_log",
]
