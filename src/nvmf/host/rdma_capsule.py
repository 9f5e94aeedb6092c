"""The pure part of the NVMe/RDMA host: command capsules' data pointers, the connect request and
what a reject means (NVMe over Fabrics RDMA Transport Binding 1.0; Linux
``drivers/nvme/host/rdma.c`` is the reference peer).

Nothing here touches verbs, so it is tested on any machine; :mod:`nvmf.host.rdma_queue` uses it.

How a command's data travels (``nvme_rdma_map_data``):

* no data: a keyed SGL data block of length 0, address 0 and key 0 (the "null" keyed SGL,
  ``nvme_rdma_set_sg_null``);
* host to controller data that fits the I/O queue's in-capsule size: an SGL data block with the
  offset subtype, offset 0 (ICDOFF), the data after the SQE in the same SEND.  Never on the
  admin queue: the Linux target posts no room for it there;
* anything else: a keyed SGL data block naming the host's buffer (address, 24-bit length,
  remote key), which the controller reads (a Write) or writes (a Read) with RDMA.  Sub type Fh
  asks the controller to invalidate the key with its response (SEND with Invalidate).
"""

from __future__ import annotations

import enum

from nvmf.host.errors import TransportError
from nvmf.wire.rdma import CmRequest, CmStatus, decode_reject
from nvmf.wire.sqe import (
    OFF_DPTR,
    OFF_FLAGS,
    PSDT_MASK,
    PSDT_SGL_MPTR_CONTIG,
    SGL_DATA,
    SGL_INCAPSULE,
    SGL_KEYED,
    SGL_RDMA_KEYED,
    SGL_RDMA_KEYED_INVALIDATE,
)

#: The largest length a keyed SGL data block can carry (a 24-bit field).
MAX_KEYED_LENGTH = (1 << 24) - 1
_ZERO_LENGTH = bytes(3)


class DataPath(enum.Enum):
    """How a command's data reaches the controller or comes back (see the module docstring)."""

    NONE = "none"
    INCAPSULE = "in-capsule"
    KEYED = "keyed"


def choose_data_path(*, out_length: int, in_length: int, incapsule_size: int, qid: int) -> DataPath:
    """The way a command with ``out_length`` bytes to send and ``in_length`` to receive moves
    them: in the capsule only for a write that fits an I/O queue's in-capsule size."""
    if out_length and in_length:
        raise ValueError("a command moves data in one direction only")
    if out_length:
        if qid and out_length <= incapsule_size:
            return DataPath.INCAPSULE
        return DataPath.KEYED
    if in_length:
        return DataPath.KEYED
    return DataPath.NONE


def _psdt_sgl(sqe: bytearray) -> None:
    sqe[OFF_FLAGS] = (sqe[OFF_FLAGS] & ~PSDT_MASK) | PSDT_SGL_MPTR_CONTIG


def set_null_sgl(sqe: bytearray) -> None:
    """DPTR for a command without data: a keyed SGL data block of length 0 (and PSDT SGL)."""
    _psdt_sgl(sqe)
    SGL_KEYED.pack_into(sqe, OFF_DPTR, 0, _ZERO_LENGTH, 0, SGL_RDMA_KEYED)


def set_incapsule_sgl(sqe: bytearray, length: int) -> None:
    """DPTR for ``length`` bytes of data right after the SQE in the capsule (offset 0)."""
    _psdt_sgl(sqe)
    SGL_DATA.pack_into(sqe, OFF_DPTR, 0, length, SGL_INCAPSULE)


def set_keyed_sgl(
    sqe: bytearray, address: int, length: int, key: int, *, invalidate: bool = False
) -> None:
    """DPTR for data in the host's memory at ``address`` under remote key ``key``; with
    ``invalidate`` the controller is asked to invalidate ``key`` when it responds (sub type
    Fh), which only a key that can be invalidated (a memory window's, a fast registration's)
    may ask for."""
    if not 0 <= length <= MAX_KEYED_LENGTH:
        raise ValueError(f"keyed SGL length {length} does not fit 24 bits")
    _psdt_sgl(sqe)
    SGL_KEYED.pack_into(
        sqe,
        OFF_DPTR,
        address,
        length.to_bytes(3, "little"),
        key,
        SGL_RDMA_KEYED_INVALIDATE if invalidate else SGL_RDMA_KEYED,
    )


def connect_request(qid: int, depth: int, cntlid: int = 0) -> CmRequest:
    """The RDMA_CM_REQUEST for a queue of ``depth`` commands outstanding at most: HSQSIZE is the
    Connect's SQSIZE (``depth``, 0's based), HRQSIZE the responses the host can take (``depth +
    1`` posted receives, one per submission queue entry, as the Linux host posts).  An I/O
    queue's names ``cntlid``, the controller it is for (NVMe/RDMA 1.0b: "should"); the admin
    queue's CNTLID "shall be cleared to 0h", as the controller is not known yet."""
    if not 1 <= depth < 0xFFFF:
        raise ValueError(f"queue depth {depth} is not 1-65534")
    return CmRequest(qid=qid, hrqsize=depth + 1, hsqsize=depth, cntlid=cntlid if qid else 0)


def rejected(where: str, private_data: bytes, *, reason: int | None = None) -> TransportError:
    """The error for a connect request the other side rejected: the NVMe/RDMA status when the
    private data carries one (``decode_reject``), else RDMA CM's reject (no NVMe/RDMA
    listener at that address and port, as a refused TCP connection)."""
    status = decode_reject(private_data)
    if status is not None:
        return TransportError(
            f"{where}: the controller rejected the connection: NVMe/RDMA status "
            f"{int(status):#x} ({status.message})"
            + (" (the queue size is too big for it)" if status is CmStatus.INVALID_HSQSIZE else "")
        )
    why = f" (RDMA CM reason {reason})" if reason is not None else ""
    return TransportError(
        f"{where}: connection rejected{why}: no NVMe/RDMA controller listens there"
    )
