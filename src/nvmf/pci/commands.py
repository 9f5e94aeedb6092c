"""The command dwords this driver sends to a PCIe controller (NVMe Base 2.0 §5, NVM Command Set
1.0 §3): each function returns CDW10..CDW15 of one command by the spec's field names.

The SQE itself (Figure 88: opcode, flags, CID, NSID, MPTR, PRP1/PRP2, CDW10-15) is packed with
:data:`nvmf.wire.sqe.SQE`, the same layout the fabrics side uses; on PCIe the data pointer is
PRP1 and PRP2 (PSDT 00b) instead of an SGL descriptor.
"""

from __future__ import annotations

from nvmf.wire.opcodes import RW_FUA
from nvmf.wire.sqe import SQE

Cdws = tuple[int, int, int, int, int, int]

#: Identify CNS values used here (Figure 273).
CNS_NAMESPACE = 0x00
CNS_CONTROLLER = 0x01
#: Set Features: Number of Queues (Figure 322).
FID_NUMBER_OF_QUEUES = 0x07


def encode_sqe(
    buf: memoryview | bytearray,
    offset: int,
    *,
    opcode: int,
    cid: int,
    nsid: int,
    prp1: int,
    prp2: int,
    cdws: Cdws,
) -> None:
    """Pack one 64-byte SQE into ``buf`` at ``offset`` (FUSE 0, PSDT 00b: PRPs)."""
    dptr = (prp1 | (prp2 << 64)).to_bytes(16, "little")
    SQE.pack_into(buf, offset, opcode, 0, cid, nsid, 0, 0, 0, dptr, *cdws)


def identify(cns: int, cntid: int = 0) -> Cdws:
    """Identify: CDW10 = CNTID (31:16) | CNS (7:0)."""
    return ((cntid << 16) | cns, 0, 0, 0, 0, 0)


def set_number_of_queues(nsqr: int, ncqr: int) -> Cdws:
    """Set Features, Number of Queues: CDW10 FID; CDW11 NCQR (31:16), NSQR (15:0), 0's based."""
    if not (1 <= nsqr <= 0xFFFF and 1 <= ncqr <= 0xFFFF):
        raise ValueError(f"queue counts {nsqr}/{ncqr} out of range 1..65535")
    return (FID_NUMBER_OF_QUEUES, ((ncqr - 1) << 16) | (nsqr - 1), 0, 0, 0, 0)


def create_io_cq(qid: int, qsize: int, *, iv: int = 0, ien: bool = False) -> Cdws:
    """Create I/O Completion Queue: CDW10 QSIZE (31:16, 0's based) | QID; CDW11 IV (31:16),
    IEN (bit 1), PC (bit 0, physically contiguous: always here)."""
    return (((qsize - 1) << 16) | qid, (iv << 16) | (int(ien) << 1) | 1, 0, 0, 0, 0)


def create_io_sq(qid: int, qsize: int, cqid: int, *, qprio: int = 0) -> Cdws:
    """Create I/O Submission Queue: CDW10 QSIZE | QID; CDW11 CQID (31:16), QPRIO (2:1), PC."""
    return (((qsize - 1) << 16) | qid, (cqid << 16) | (qprio << 1) | 1, 0, 0, 0, 0)


def delete_io_queue(qid: int) -> Cdws:
    """Delete I/O Submission/Completion Queue: CDW10 QID."""
    return (qid, 0, 0, 0, 0, 0)


def read_write(slba: int, nlb: int, *, fua: bool = False) -> Cdws:
    """Read / Write: CDW10-11 SLBA; CDW12 NLB (15:0, 0's based), FUA (bit 30)."""
    if not 1 <= nlb <= 0x10000:
        raise ValueError(f"{nlb} blocks: one command moves 1 to 65536")
    cdw12 = (nlb - 1) | (RW_FUA if fua else 0)
    return (slba & 0xFFFFFFFF, slba >> 32, cdw12, 0, 0, 0)


def flush() -> Cdws:
    """Flush has no command dwords."""
    return (0, 0, 0, 0, 0, 0)
