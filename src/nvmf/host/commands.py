"""Submission queue entries the host sends, built from the spec's fields.

Every builder returns a fresh 64-byte ``bytearray`` with CID 0 and an empty DPTR: the
:class:`~nvmf.host.queue.HostQueue` that sends it writes the command identifier it allocates and
the transport's SGL descriptor (in-capsule data block, or the NVMe/TCP transport data block that
R2T/H2CData and C2HData move), and sets PSDT to "SGL" (flags 40h), as every NVMe-oF command must
(NVMe-oF 1.1 §2.3.1: fabrics use SGLs only).

Field placement follows NVMe Base 2.0 (Identify, Get Log Page, Get/Set Features, Keep Alive),
NVM Command Set 1.0 (Read, Write, Compare, Write Zeroes, Dataset Management, Flush) and NVMe-oF
1.1 (Connect, Property Get/Set); the Linux host builds the same dwords in ``nvme_setup_rw``,
``nvme_get_log_page``, ``nvme_set_features`` and ``nvmf_connect_admin_queue``.
"""

from __future__ import annotations

from collections.abc import Iterable

from nvmf.wire.fabrics import (
    CONNECT_DATA_SIZE,
    ConnectCommand,
    ConnectData,
    PropertyCommand,
    PropertySize,
)
from nvmf.wire.opcodes import (
    DSM_ATTR_DEALLOCATE,
    RW_FUA,
    WZ_DEAC,
    AdminOpcode,
    FabricsType,
    FeatureId,
    IoOpcode,
)
from nvmf.wire.sqe import DSM_MAX_RANGES, DSM_RANGE, PSDT_SGL_MPTR_CONTIG, SQE, SQE_SIZE, Sqe

#: NLB is 16 bits, 0's based: one command moves at most this many logical blocks.
MAX_NLB = 1 << 16
_EMPTY_DPTR = bytes(16)


def _sqe(
    opcode: int,
    *,
    nsid: int = 0,
    cdw10: int = 0,
    cdw11: int = 0,
    cdw12: int = 0,
    cdw13: int = 0,
    cdw14: int = 0,
    cdw15: int = 0,
) -> bytearray:
    return bytearray(
        SQE.pack(
            opcode,
            PSDT_SGL_MPTR_CONTIG,
            0,
            nsid,
            0,
            0,
            0,
            _EMPTY_DPTR,
            cdw10,
            cdw11,
            cdw12,
            cdw13,
            cdw14,
            cdw15,
        )
    )


def from_sqe(sqe: Sqe) -> bytearray:
    """An arbitrary command (a "passthru" in nvme-cli's terms) as bytes to submit."""
    raw = bytearray(sqe.encode())
    assert len(raw) == SQE_SIZE
    return raw


# -- fabrics -----------------------------------------------------------------------------------


def connect(qid: int, sqsize: int, *, kato_ms: int = 0, cattr: int = 0) -> bytearray:
    """Connect (FCTYPE 01h): ``sqsize`` is 0's based; KATO (ms) matters on the admin queue only."""
    if not 0 <= sqsize <= 0xFFFF:
        raise ValueError(f"connect: sqsize {sqsize} is not 16 bits")
    cmd = ConnectCommand(cid=0, qid=qid, sqsize=sqsize, kato=kato_ms, cattr=cattr)
    return bytearray(cmd.encode())


def connect_data(hostid: bytes, cntlid: int, subsysnqn: str, hostnqn: str) -> bytes:
    """The 1024-byte Connect data (Host Identifier, CNTLID, SUBNQN, HOSTNQN)."""
    data = ConnectData(hostid=hostid, cntlid=cntlid, subsysnqn=subsysnqn, hostnqn=hostnqn)
    raw = data.encode()
    assert len(raw) == CONNECT_DATA_SIZE
    return raw


def property_get(offset: int, size: int) -> bytearray:
    """Property Get of a 4- or 8-byte property; the value comes back in CQE DW0 (and DW1)."""
    attrib = PropertySize.EIGHT if size == 8 else PropertySize.FOUR
    cmd = PropertyCommand(cid=0, fctype=FabricsType.PROPERTY_GET, attrib=attrib, offset=offset)
    return bytearray(cmd.encode())


def property_set(offset: int, value: int, size: int = 4) -> bytearray:
    """Property Set of a 4- or 8-byte property."""
    attrib = PropertySize.EIGHT if size == 8 else PropertySize.FOUR
    cmd = PropertyCommand(
        cid=0, fctype=FabricsType.PROPERTY_SET, attrib=attrib, offset=offset, value=value
    )
    return bytearray(cmd.encode())


# -- admin -------------------------------------------------------------------------------------


def identify(cns: int, *, nsid: int = 0, cntid: int = 0, csi: int = 0) -> bytearray:
    """Identify: CDW10 CNS (7:0) and CNTID (31:16), CDW11 CSI (31:24); 4096 bytes come back."""
    return _sqe(
        AdminOpcode.IDENTIFY,
        nsid=nsid,
        cdw10=(cns & 0xFF) | ((cntid & 0xFFFF) << 16),
        cdw11=(csi & 0xFF) << 24,
    )


def get_log_page(
    lid: int, length: int, *, offset: int = 0, nsid: int = 0, lsp: int = 0, rae: bool = False
) -> bytearray:
    """Get Log Page of ``length`` bytes (a multiple of 4) at byte ``offset`` (a multiple of 4).

    NUMD (0's based dwords) is split over CDW10 31:16 (NUMDL) and CDW11 15:0 (NUMDU); the offset
    over CDW12 (LPOL) and CDW13 (LPOU).
    """
    if length <= 0 or length % 4 or offset % 4:
        raise ValueError(f"get_log_page: length {length} and offset {offset} must be dwords")
    numd = length // 4 - 1
    return _sqe(
        AdminOpcode.GET_LOG_PAGE,
        nsid=nsid,
        cdw10=(lid & 0xFF) | ((lsp & 0x7F) << 8) | (int(rae) << 15) | ((numd & 0xFFFF) << 16),
        cdw11=(numd >> 16) & 0xFFFF,
        cdw12=offset & 0xFFFFFFFF,
        cdw13=offset >> 32,
    )


def get_features(fid: int, *, nsid: int = 0, sel: int = 0, cdw11: int = 0) -> bytearray:
    """Get Features: CDW10 FID (7:0) and SEL (10:8); the value returns in CQE DW0."""
    return _sqe(
        AdminOpcode.GET_FEATURES, nsid=nsid, cdw10=(fid & 0xFF) | ((sel & 7) << 8), cdw11=cdw11
    )


def set_features(
    fid: int, value: int, *, nsid: int = 0, save: bool = False, cdw12: int = 0
) -> bytearray:
    """Set Features: CDW10 FID (7:0) and SV (31), the feature's value in CDW11."""
    return _sqe(
        AdminOpcode.SET_FEATURES,
        nsid=nsid,
        cdw10=(fid & 0xFF) | (int(save) << 31),
        cdw11=value & 0xFFFFFFFF,
        cdw12=cdw12,
    )


def number_of_queues(count: int) -> bytearray:
    """Set Features Number of Queues asking for ``count`` submission and completion queues.

    NSQR (15:0) and NCQR (31:16) are 0's based; the grant returns in DW0 the same way.
    """
    if not 1 <= count <= 0xFFFF:
        raise ValueError(f"number_of_queues: {count} is not 1-65535")
    value = (count - 1) | ((count - 1) << 16)
    return set_features(FeatureId.NUM_QUEUES, value)


def keep_alive() -> bytearray:
    """Keep Alive (opcode 18h): restarts the controller's Keep Alive Timer."""
    return _sqe(AdminOpcode.KEEP_ALIVE)


# -- NVM I/O -----------------------------------------------------------------------------------


def _check_nlb(nlb: int) -> None:
    if not 1 <= nlb <= MAX_NLB:
        raise ValueError(f"nlb {nlb} is not 1-{MAX_NLB}")


def rw(opcode: int, nsid: int, slba: int, nlb: int, *, fua: bool = False) -> bytearray:
    """Read (02h), Write (01h) or Compare (05h): SLBA in CDW11:CDW10, NLB-1 in CDW12 15:0,
    FUA in CDW12 bit 30."""
    _check_nlb(nlb)
    return _sqe(
        opcode,
        nsid=nsid,
        cdw10=slba & 0xFFFFFFFF,
        cdw11=slba >> 32,
        cdw12=(nlb - 1) | (RW_FUA if fua else 0),
    )


def flush(nsid: int) -> bytearray:
    """Flush (00h): commit the namespace's volatile write cache."""
    return _sqe(IoOpcode.FLUSH, nsid=nsid)


def write_zeroes(nsid: int, slba: int, nlb: int, *, deallocate: bool = False) -> bytearray:
    """Write Zeroes (08h); DEAC (CDW12 bit 25) lets the controller deallocate instead."""
    _check_nlb(nlb)
    return _sqe(
        IoOpcode.WRITE_ZEROES,
        nsid=nsid,
        cdw10=slba & 0xFFFFFFFF,
        cdw11=slba >> 32,
        cdw12=(nlb - 1) | (WZ_DEAC if deallocate else 0),
    )


def dsm_deallocate(nsid: int, nranges: int) -> bytearray:
    """Dataset Management (09h) with AD (deallocate): NR (CDW10 7:0) is 0's based."""
    if not 1 <= nranges <= DSM_MAX_RANGES:
        raise ValueError(f"dataset management: {nranges} ranges, 1-{DSM_MAX_RANGES} allowed")
    return _sqe(IoOpcode.DSM, nsid=nsid, cdw10=nranges - 1, cdw11=DSM_ATTR_DEALLOCATE)


def dsm_ranges(ranges: Iterable[tuple[int, int]]) -> bytes:
    """The range list of a Dataset Management command for ``(slba, nlb)`` pairs."""
    out = bytearray()
    for slba, nlb in ranges:
        if not 1 <= nlb <= 0xFFFFFFFF or slba < 0:
            raise ValueError(f"dataset management range ({slba}, {nlb}) is invalid")
        out += DSM_RANGE.pack(0, nlb, slba)
    return bytes(out)
