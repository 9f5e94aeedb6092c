"""NVMe/RDMA connection establishment: the RDMA CM private data (NVMe RDMA Transport
Specification 1.0, "RDMA_CM_REQUEST", "RDMA_CM_ACCEPT" and "RDMA_CM_REJECT Private Data
Format"; Linux ``include/linux/nvme-rdma.h``).

A host asks for each queue (admin or I/O) with an RDMA CM connect request whose private data
names the queue and the sizes of both sides' queues; the controller accepts with the number of
receive buffers it posted for commands, or rejects with one of :class:`CmStatus`.  All fields
are little-endian.

``HSQSIZE`` is the host's submission queue size, 0's based (the Connect command's SQSIZE): the
controller posts ``HSQSIZE + 1`` receive buffers for command capsules and says so in
``CRQSIZE``.  ``HRQSIZE`` is the number of receive buffers the host posted for responses, so
the controller may never have more responses outstanding than that.  ``CNTLID`` (NVMe/RDMA
1.0b, bytes 09:08, reserved before): an I/O queue's request should name the controller the
queue is for; an admin queue's is 0 (Linux hosts send it from 6.12 on).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

#: RECFMT: the only record format, NVMe/RDMA 1.0.
RECFMT_1_0 = 0
#: Admin queue depth a host may ask for over RDMA (the Linux host's NVME_AQ_DEPTH).
ADMIN_QUEUE_DEPTH = 32

#: RDMA_CM_REQUEST: RECFMT, QID, HRQSIZE, HSQSIZE, CNTLID, 22 reserved bytes.
CM_REQUEST = struct.Struct("<HHHHH22x")
assert CM_REQUEST.size == 32
#: RDMA_CM_ACCEPT: RECFMT, CRQSIZE, 28 reserved bytes.
CM_ACCEPT = struct.Struct("<HH28x")
assert CM_ACCEPT.size == 32
#: RDMA_CM_REJECT: RECFMT, STS.
CM_REJECT = struct.Struct("<HH")
assert CM_REJECT.size == 4


class CmStatus(enum.IntEnum):
    """RDMA_CM_REJECT status codes (STS)."""

    INVALID_LEN = 0x01
    INVALID_RECFMT = 0x02
    INVALID_QID = 0x03
    INVALID_HSQSIZE = 0x04
    INVALID_HRQSIZE = 0x05
    NO_RSC = 0x06
    INVALID_IRD = 0x07
    INVALID_ORD = 0x08
    INVALID_CNTLID = 0x09

    @property
    def message(self) -> str:
        """The reason as the Linux host logs it."""
        return _MESSAGES[self]


_MESSAGES = {
    CmStatus.INVALID_LEN: "invalid length",
    CmStatus.INVALID_RECFMT: "invalid record format",
    CmStatus.INVALID_QID: "invalid queue ID",
    CmStatus.INVALID_HSQSIZE: "invalid host SQ size",
    CmStatus.INVALID_HRQSIZE: "invalid host RQ size",
    CmStatus.NO_RSC: "resource not found",
    CmStatus.INVALID_IRD: "invalid IRD",
    CmStatus.INVALID_ORD: "invalid ORD",
    CmStatus.INVALID_CNTLID: "invalid controller ID",
}


@dataclass(frozen=True)
class CmRequest:
    """An RDMA_CM_REQUEST's fields."""

    qid: int
    #: Receive buffers the host posted for responses.
    hrqsize: int
    #: The host's submission queue size, 0's based.
    hsqsize: int
    recfmt: int = RECFMT_1_0
    #: The controller an I/O queue is for (0 for the admin queue, or not said).
    cntlid: int = 0

    def encode(self) -> bytes:
        return CM_REQUEST.pack(self.recfmt, self.qid, self.hrqsize, self.hsqsize, self.cntlid)

    @property
    def queue_depth(self) -> int:
        """Commands the queue may hold: ``HSQSIZE + 1`` (the receive buffers to post)."""
        return self.hsqsize + 1


def decode_request(data: bytes | memoryview) -> CmRequest | CmStatus:
    """The request in a connect request's private data, or the reason it cannot be read.

    The private data may be longer than 32 bytes (a transport pads it to its own size); only
    the first 32 are the request."""
    if len(data) < CM_REQUEST.size:
        return CmStatus.INVALID_LEN
    recfmt, qid, hrqsize, hsqsize, cntlid = CM_REQUEST.unpack_from(data)
    if recfmt != RECFMT_1_0:
        return CmStatus.INVALID_RECFMT
    return CmRequest(qid, hrqsize, hsqsize, recfmt, cntlid)


def check_request(
    data: bytes | memoryview, *, max_qid: int, io_queue_depth: int
) -> CmRequest | CmStatus:
    """What the controller accepts: a readable request for a queue it can have, whose sizes it
    can serve, or the status to reject it with.

    - QID above ``max_qid`` (the I/O queues the controller grants): Invalid QID;
    - HSQSIZE 0 (a one-entry queue, which NVMe does not have) or above the admin queue's 32
      entries or ``io_queue_depth`` (CAP.MQES + 1): Invalid HSQSIZE;
    - HRQSIZE smaller than HSQSIZE + 1 (the host could not take a response for every command
      it may submit): Invalid HRQSIZE.
    """
    req = decode_request(data)
    if isinstance(req, CmStatus):
        return req
    if req.qid > max_qid:
        return CmStatus.INVALID_QID
    depth = ADMIN_QUEUE_DEPTH if req.qid == 0 else io_queue_depth
    if req.hsqsize == 0 or req.queue_depth > depth:
        return CmStatus.INVALID_HSQSIZE
    if req.hrqsize < req.queue_depth:
        return CmStatus.INVALID_HRQSIZE
    return req


def encode_accept(crqsize: int) -> bytes:
    """RDMA_CM_ACCEPT: the controller posted ``crqsize`` receive buffers for commands."""
    return CM_ACCEPT.pack(RECFMT_1_0, crqsize)


def decode_accept(data: bytes | memoryview) -> int:
    """CRQSIZE of an RDMA_CM_ACCEPT (host side); ValueError names what is wrong."""
    if len(data) < CM_ACCEPT.size:
        raise ValueError(f"RDMA_CM_ACCEPT private data: {len(data)} bytes, need 32")
    recfmt, crqsize = CM_ACCEPT.unpack_from(data)
    if recfmt != RECFMT_1_0:
        raise ValueError(f"RDMA_CM_ACCEPT RECFMT {recfmt}, expected {RECFMT_1_0}")
    return int(crqsize)


def encode_reject(status: CmStatus) -> bytes:
    """RDMA_CM_REJECT with ``status``."""
    return CM_REJECT.pack(RECFMT_1_0, status)


def decode_reject(data: bytes | memoryview) -> CmStatus | None:
    """The status of an RDMA_CM_REJECT (None when the private data is not NVMe's: a reject
    by the RDMA stack itself, such as no listener on the port)."""
    if len(data) < CM_REJECT.size:
        return None
    recfmt, sts = CM_REJECT.unpack_from(data)
    if recfmt != RECFMT_1_0:
        return None
    try:
        return CmStatus(sts)
    except ValueError:
        return None
