"""The data-path request and its explicit state machine (docs/architecture.md).

Modelled on SPDK's ``spdk_nvmf_tcp_req_state``; every fabric (TCP, RDMA, the in-memory loop)
drives the same states, so the command handlers and the offload workers see one life cycle:

``NEW``
    the capsule arrived; the transport has decoded its SGL (length, in-capsule or not).
``NEED_BUFFER``
    the command moves data and waits for a staging buffer from its queue's pool.
``TRANSFERRING_H2C``
    host-to-controller data is being fetched (NVMe/TCP R2T + H2CData, NVMe/RDMA RDMA READ).
``READY``
    the data is in; the command can run.
``EXECUTING``
    the handler runs (media I/O, admin work).
``EXECUTED``
    the handler returned its status.
``TRANSFERRING_C2H``
    controller-to-host data and the completion are being sent (C2HData, RDMA WRITE + SEND).
``COMPLETED``
    the completion left; the staging buffer is back in the pool.

A request waits in a state (an awaited future), never blocks a thread.  Moving to a state that
is not a successor of the current one is a bug and raises :class:`InvalidTransition`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nvmf.wire.sqe import Sqe
from nvmf.wire.status import SUCCESS, Status

if TYPE_CHECKING:
    from nvmf.memory.staging import StagingBuffer


class ReqState(enum.Enum):
    NEW = "new"
    NEED_BUFFER = "need-buffer"
    TRANSFERRING_H2C = "transferring-h2c"
    READY = "ready"
    EXECUTING = "executing"
    EXECUTED = "executed"
    TRANSFERRING_C2H = "transferring-c2h"
    COMPLETED = "completed"


S = ReqState
#: The successors of each state.  Any state may complete early with an error status.
TRANSITIONS: dict[ReqState, frozenset[ReqState]] = {
    S.NEW: frozenset({S.NEED_BUFFER, S.READY, S.TRANSFERRING_C2H}),
    S.NEED_BUFFER: frozenset({S.TRANSFERRING_H2C, S.READY, S.TRANSFERRING_C2H}),
    S.TRANSFERRING_H2C: frozenset({S.READY, S.TRANSFERRING_C2H}),
    S.READY: frozenset({S.EXECUTING, S.TRANSFERRING_C2H}),
    S.EXECUTING: frozenset({S.EXECUTED}),
    S.EXECUTED: frozenset({S.TRANSFERRING_C2H}),
    S.TRANSFERRING_C2H: frozenset({S.COMPLETED}),
    S.COMPLETED: frozenset(),
}


class InvalidTransition(RuntimeError):
    """A request was moved to a state that does not follow its current one (a bug)."""


class Direction(enum.Enum):
    """Which way the command's data moves."""

    NONE = 0
    H2C = 1  # host to controller (Write, Compare, Connect data, DSM ranges)
    C2H = 2  # controller to host (Read, Identify, Get Log Page)


@dataclass(slots=True, eq=False)
class Request:
    """One command on one fabric queue, from capsule to completion."""

    sqe: Sqe
    qid: int
    state: ReqState = ReqState.NEW
    direction: Direction = Direction.NONE
    #: Transfer length the SGL describes (bytes).
    sgl_length: int = 0
    #: Data already in the capsule (NVMe/TCP in-capsule, NVMe/RDMA inline).
    incapsule: bool = False
    #: The command's data: a staging buffer view of ``length`` bytes.
    data: memoryview | None = None
    staging: StagingBuffer | None = None
    #: Bytes of C2H data to send (may be less than the buffer: a short Identify, say).
    c2h_length: int = 0
    status: Status = SUCCESS
    #: Transport-private state (TCP: ttag, bytes received; RDMA: remote key and address).
    transport: dict[str, int] = field(default_factory=dict)
    #: The queue state of the owner running the command (for completions that arrive later).
    session: Any = None

    @property
    def cid(self) -> int:
        return self.sqe.cid

    def advance(self, new: ReqState) -> None:
        """Move to ``new``; raise :class:`InvalidTransition` if it does not follow."""
        if new not in TRANSITIONS[self.state]:
            raise InvalidTransition(f"cid {self.cid}: {self.state.value} -> {new.value}")
        self.state = new

    def release(self) -> None:
        """Give the staging buffer back; idempotent."""
        if self.staging is not None:
            self.staging.release()
            self.staging = None
        self.data = None
