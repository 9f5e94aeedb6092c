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
import struct
from typing import TYPE_CHECKING, Any

from nvmf.wire.sqe import OFF_DPTR, SQE_SIZE, Sqe
from nvmf.wire.status import SC, SUCCESS, Status, WireError, error

if TYPE_CHECKING:
    from nvmf.memory.staging import StagingBuffer


class ReqState(enum.IntEnum):
    """The request states (an ``IntEnum``: the hot path hashes and compares them as ints)."""

    NEW = 0
    NEED_BUFFER = 1
    TRANSFERRING_H2C = 2
    READY = 3
    EXECUTING = 4
    EXECUTED = 5
    TRANSFERRING_C2H = 6
    COMPLETED = 7

    @property
    def label(self) -> str:
        """The state's name as the docs write it (``need-buffer``)."""
        return self.name.lower().replace("_", "-")


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


#: The SQE fields the data path reads, in one unpack: opcode, flags, CID, NSID, DPTR read as a
#: data block descriptor (address, length, descriptor type byte), CDW10, CDW11, CDW12.
HOT_FIELDS = struct.Struct("<BBHI16xQI3xBIII12x")
assert HOT_FIELDS.size == SQE_SIZE
_NEW = ReqState.NEW
_NONE = Direction.NONE


class Request:
    """One command on one fabric queue, from capsule to completion.

    A transport keeps a queue's requests and reuses them (:meth:`load` starts the next
    command's life in one): the data path allocates nothing per command.  The SQE is kept raw;
    the fields the I/O path reads are decoded once by :meth:`load`, the rest on demand through
    :attr:`sqe` (the control plane's admin and fabrics commands).
    """

    __slots__ = (
        "_sqe",
        "c2h_length",
        "cdw10",
        "cdw11",
        "cdw12",
        "cid",
        "data",
        "direction",
        "dptr_address",
        "dptr_length",
        "dptr_type",
        "flags",
        "incapsule",
        "nsid",
        "opcode",
        "plan",
        "qid",
        "raw",
        "session",
        "sgl_length",
        "staging",
        "state",
        "status",
        "ttag",
    )

    raw: bytes
    #: Decoded from the SQE by :meth:`load` (names from the spec; DPTR as a data block
    #: descriptor: a keyed descriptor's fields are for its transport to decode from ``raw``).
    opcode: int
    flags: int
    cid: int
    nsid: int
    dptr_address: int
    dptr_length: int
    dptr_type: int
    cdw10: int
    cdw11: int
    cdw12: int
    state: ReqState
    direction: Direction
    #: Transfer length the SGL describes (bytes), set by the transport's ``map_sgl``.
    sgl_length: int
    #: Data already in the capsule (NVMe/TCP in-capsule, NVMe/RDMA inline).
    incapsule: bool
    #: The command's data: a staging buffer view of ``length`` bytes.
    data: memoryview | None
    staging: StagingBuffer | None
    #: Bytes of C2H data to send (may be less than the buffer: a short Identify, say).
    c2h_length: int
    status: Status
    #: Transport-private transfer state (NVMe/TCP: the R2T's transfer tag, -1 when none; the
    #: codec keeps the window it names; NVMe/RDMA: the request's slot in its queue).
    ttag: int
    #: The queue state of the owner running the command (for completions that arrive later).
    session: Any
    _sqe: Sqe | None
    #: The owner's plan for the command, kept while its host data is fetched.
    plan: Any

    def __init__(self, sqe: Sqe | bytes | memoryview, qid: int = 0, state: ReqState = _NEW) -> None:
        self.qid = qid
        self.session = None
        self.plan = None
        self.load(sqe.encode() if isinstance(sqe, Sqe) else sqe)
        self.state = state

    def load(self, raw: bytes | memoryview) -> None:
        """Start a new command's life in this request: ``raw`` is its 64-byte SQE."""
        try:
            (
                self.opcode,
                self.flags,
                self.cid,
                self.nsid,
                self.dptr_address,
                self.dptr_length,
                self.dptr_type,
                self.cdw10,
                self.cdw11,
                self.cdw12,
            ) = HOT_FIELDS.unpack_from(raw)
        except struct.error as exc:
            raise WireError(f"SQE: need {SQE_SIZE} bytes, got {len(raw)}") from exc
        self.raw = bytes(raw)
        self._sqe = None
        self.state = _NEW
        self.direction = _NONE
        self.sgl_length = 0
        self.incapsule = False
        self.data = None
        self.staging = None
        self.c2h_length = 0
        self.status = SUCCESS
        self.ttag = -1

    @property
    def sqe(self) -> Sqe:
        """The whole SQE, decoded (on first use)."""
        sqe = self._sqe
        if sqe is None:
            sqe = self._sqe = Sqe.decode(self.raw)
        return sqe

    def advance(self, new: ReqState) -> None:
        """Move to ``new``; raise :class:`InvalidTransition` if it does not follow."""
        if new not in TRANSITIONS[self.state]:
            raise InvalidTransition(f"cid {self.cid}: {self.state.label} -> {new.label}")
        self.state = new

    def release(self) -> None:
        """Give the staging buffer back; idempotent."""
        if self.staging is not None:
            self.staging.release()
            self.staging = None
        self.data = None


def map_incapsule(req: Request) -> Status:
    """Map an in-capsule SGL Data Block (Offset subtype) onto the capsule's data.

    The descriptor's Address is an offset into the capsule's data (which starts at ICDOFF 0);
    Identify Controller advertises offsets (SGLS bit 20), so ``req.data`` becomes the block the
    descriptor names, past ``offset`` bytes the host put before it.  A block the offset puts
    past the data that came is SGL Offset Invalid; with no offset, a length that is not the
    data's is Data SGL Length Invalid, and so is data past the block's end, which no
    descriptor would then describe."""
    offset, length = req.dptr_address, req.dptr_length
    data = req.data
    got = 0 if data is None else len(data)
    end = offset + length
    if end > got and offset:
        return error(SC.SGL_INVALID_OFFSET, OFF_DPTR)
    if end != got:
        return error(SC.SGL_INVALID_DATA, OFF_DPTR)
    if offset and data is not None:
        req.data = data[offset:]
    req.sgl_length = length
    return SUCCESS
