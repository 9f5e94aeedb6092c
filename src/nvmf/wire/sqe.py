"""Submission and completion queue entries and SGL descriptors (NVMe Base 2.0 §4.2, §4.6, §4.4).

Layouts (little-endian; Linux ``struct nvme_common_command``, ``struct nvme_completion``,
``struct nvme_sgl_desc``/``nvme_keyed_sgl_desc``):

SQE, 64 bytes (Figure 88)::

    0 opcode  1 flags (FUSE 1:0, PSDT 7:6)  2 cid  4 nsid  8 cdw2  12 cdw3  16 mptr
    24 dptr (16 bytes: one SGL descriptor on fabrics)  40 cdw10 ... 60 cdw15

CQE, 16 bytes (Figure 89)::

    0 dw0 (command specific)  4 dw1  8 sqhd  10 sqid  12 cid  14 status (P bit 0, SF 15:1)

The hot path decodes only what it needs with the precompiled :data:`SQE` struct; the named
accessors on :class:`Sqe` read CDW10-15 by spec name.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from nvmf.wire.status import SUCCESS, Status, WireError

SQE_SIZE = 64
CQE_SIZE = 16

#: opcode, flags, cid, nsid, cdw2, cdw3, mptr, dptr(16s), cdw10..cdw15
SQE = struct.Struct("<BBHIIIQ16s6I")
assert SQE.size == SQE_SIZE
#: dw0, dw1, sqhd, sqid, cid, status
CQE = struct.Struct("<IIHHHH")
assert CQE.size == CQE_SIZE
#: SGL data block / transport data block descriptor: address, length, reserved(3), type
SGL_DATA = struct.Struct("<QI3xB")
assert SGL_DATA.size == 16
#: Keyed SGL data block descriptor: address, length (24 bits, as 3 bytes), key, type
SGL_KEYED = struct.Struct("<Q3sIB")
assert SGL_KEYED.size == 16

#: Byte offsets of SQE fields, for the error log's "parameter error location" and IPO.
OFF_OPCODE = 0
OFF_FLAGS = 1
OFF_CID = 2
OFF_NSID = 4
OFF_DPTR = 24
OFF_CDW10 = 40
OFF_CDW11 = 44
OFF_CDW12 = 48
OFF_CDW13 = 52
OFF_CDW14 = 56
OFF_CDW15 = 60

#: A Dataset Management range (NVM Command Set 1.0 Figure "Dataset Management - Range
#: Definition"; Linux ``struct nvme_dsm_range``): context attributes, length in logical blocks
#: (1's based), starting LBA.
DSM_RANGE = struct.Struct("<IIQ")
assert DSM_RANGE.size == 16
#: At most 256 ranges per command (NR is 8 bits, 0's based).
DSM_MAX_RANGES = 256

#: PSDT (flags bits 7:6): 00b PRP, 01b SGL with MPTR an address, 10b SGL with MPTR a segment.
PSDT_MASK = 0xC0
PSDT_PRP = 0x00
PSDT_SGL_MPTR_CONTIG = 0x40
PSDT_SGL_MPTR_SGL = 0x80
#: FUSE (flags bits 1:0): 01b first, 10b second command of a fused operation.
FUSE_MASK = 0x03
FUSE_FIRST = 0x01
#: The flags bits a target checks on every command: SGL data with MPTR an address (PSDT 01b,
#: NVMe-oF 1.1 §2.1: fabrics use SGLs only) and no fused operation (Identify Controller FUSES
#: is 0: a fused Compare and Write run as two plain commands would lose its atomicity).  Any
#: other value is Invalid Field in Command, at the flags byte, as the Linux target answers.
FLAGS_CHECKED = PSDT_MASK | FUSE_MASK


class SglType(enum.IntEnum):
    """SGL Descriptor Type, bits 7:4 of the type byte (Figure 114)."""

    DATA_BLOCK = 0x0
    BIT_BUCKET = 0x1
    SEGMENT = 0x2
    LAST_SEGMENT = 0x3
    KEYED_DATA_BLOCK = 0x4
    TRANSPORT_DATA_BLOCK = 0x5


class SglSubtype(enum.IntEnum):
    """SGL Descriptor Sub Type, bits 3:0 of the type byte (Figure 115)."""

    ADDRESS = 0x0
    OFFSET = 0x1
    TRANSPORT_SPECIFIC = 0xA
    INVALIDATE = 0xF


def sgl_type_byte(sgl_type: SglType, subtype: SglSubtype) -> int:
    return (int(sgl_type) << 4) | int(subtype)


#: In-capsule data: data block descriptor, offset subtype (NVMe/TCP, NVMe/RDMA).
SGL_INCAPSULE = sgl_type_byte(SglType.DATA_BLOCK, SglSubtype.OFFSET)
#: NVMe/TCP data moved by R2T/H2CData or C2HData: transport data block, transport specific.
SGL_TCP_TRANSPORT = sgl_type_byte(SglType.TRANSPORT_DATA_BLOCK, SglSubtype.TRANSPORT_SPECIFIC)
#: The same transfer as FreeBSD's NVMe/TCP host describes it: a data block, transport specific.
SGL_DATA_BLOCK_TRANSPORT = sgl_type_byte(SglType.DATA_BLOCK, SglSubtype.TRANSPORT_SPECIFIC)
#: NVMe/RDMA keyed data block (address + rkey), RDMA READ/WRITE by the target.
SGL_RDMA_KEYED = sgl_type_byte(SglType.KEYED_DATA_BLOCK, SglSubtype.ADDRESS)
SGL_RDMA_KEYED_INVALIDATE = sgl_type_byte(SglType.KEYED_DATA_BLOCK, SglSubtype.INVALIDATE)


@dataclass(frozen=True, slots=True)
class SglDescriptor:
    """One SGL descriptor from DPTR.  ``key`` is only meaningful for keyed descriptors."""

    address: int
    length: int
    type_byte: int
    key: int = 0

    @property
    def sgl_type(self) -> int:
        return self.type_byte >> 4

    @property
    def subtype(self) -> int:
        return self.type_byte & 0xF

    @classmethod
    def decode(cls, raw: bytes | memoryview) -> SglDescriptor:
        if len(raw) != 16:
            raise WireError(f"SGL descriptor: need 16 bytes, got {len(raw)}")
        type_byte = raw[15]
        if type_byte >> 4 == SglType.KEYED_DATA_BLOCK:
            address, length3, key, type_byte = SGL_KEYED.unpack(raw)
            return cls(address, int.from_bytes(length3, "little"), type_byte, key)
        address, length, type_byte = SGL_DATA.unpack(raw)
        return cls(address, length, type_byte)

    def encode(self) -> bytes:
        if self.sgl_type == SglType.KEYED_DATA_BLOCK:
            if not 0 <= self.length < 1 << 24:
                raise ValueError(f"SglDescriptor.length: keyed length is 24 bits, {self.length}")
            return SGL_KEYED.pack(
                self.address, self.length.to_bytes(3, "little"), self.key, self.type_byte
            )
        return SGL_DATA.pack(self.address, self.length, self.type_byte)

    @classmethod
    def incapsule(cls, length: int, offset: int = 0) -> SglDescriptor:
        """Data in this capsule, ``offset`` bytes past the capsule's data start (ICDOFF)."""
        return cls(offset, length, SGL_INCAPSULE)

    @classmethod
    def tcp_transport(cls, length: int) -> SglDescriptor:
        """NVMe/TCP data by R2T/H2CData or C2HData; ``length`` 0 is the null SGL."""
        return cls(0, length, SGL_TCP_TRANSPORT)

    @classmethod
    def keyed(cls, address: int, length: int, key: int) -> SglDescriptor:
        return cls(address, length, SGL_RDMA_KEYED, key)


NULL_TCP_SGL = SglDescriptor.tcp_transport(0)


@dataclass(slots=True)
class Sqe:
    """A decoded 64-byte submission queue entry.

    Field names follow the spec (``cid``, ``nsid``, ``mptr``, ``cdw10``..``cdw15``); ``dptr`` is
    kept raw (16 bytes) and decoded on demand with :attr:`sgl`.
    """

    opcode: int
    flags: int = PSDT_SGL_MPTR_CONTIG
    cid: int = 0
    nsid: int = 0
    cdw2: int = 0
    cdw3: int = 0
    mptr: int = 0
    dptr: bytes = bytes(16)
    cdw10: int = 0
    cdw11: int = 0
    cdw12: int = 0
    cdw13: int = 0
    cdw14: int = 0
    cdw15: int = 0

    @classmethod
    def decode(cls, raw: bytes | memoryview) -> Sqe:
        try:
            return cls(*SQE.unpack(raw))
        except struct.error as exc:
            raise WireError(f"SQE: need {SQE_SIZE} bytes, got {len(raw)}") from exc

    def encode(self) -> bytes:
        return SQE.pack(
            self.opcode,
            self.flags,
            self.cid,
            self.nsid,
            self.cdw2,
            self.cdw3,
            self.mptr,
            self.dptr,
            self.cdw10,
            self.cdw11,
            self.cdw12,
            self.cdw13,
            self.cdw14,
            self.cdw15,
        )

    @property
    def psdt(self) -> int:
        return self.flags & PSDT_MASK

    @property
    def fuse(self) -> int:
        return self.flags & FUSE_MASK

    @property
    def sgl(self) -> SglDescriptor:
        return SglDescriptor.decode(self.dptr)

    @sgl.setter
    def sgl(self, value: SglDescriptor) -> None:
        self.dptr = value.encode()

    # -- NVM command set accessors (Figures 372-411) -------------------------------------------
    @property
    def slba(self) -> int:
        """Starting LBA (CDW11:CDW10) of Read/Write/Compare/Write Zeroes."""
        return self.cdw10 | (self.cdw11 << 32)

    @property
    def nlb(self) -> int:
        """Number of logical blocks, 0's based (CDW12 15:0)."""
        return self.cdw12 & 0xFFFF

    @property
    def fua(self) -> bool:
        """Force Unit Access (CDW12 bit 30)."""
        return bool(self.cdw12 & (1 << 30))


@dataclass(slots=True)
class Cqe:
    """A 16-byte completion queue entry (Figure 89)."""

    dw0: int = 0
    dw1: int = 0
    sqhd: int = 0
    sqid: int = 0
    cid: int = 0
    status: int = 0  # the raw 16-bit field, phase bit included

    @classmethod
    def decode(cls, raw: bytes | memoryview) -> Cqe:
        try:
            return cls(*CQE.unpack(raw))
        except struct.error as exc:
            raise WireError(f"CQE: need {CQE_SIZE} bytes, got {len(raw)}") from exc

    def encode(self) -> bytes:
        return CQE.pack(self.dw0, self.dw1, self.sqhd, self.sqid, self.cid, self.status)

    @property
    def result(self) -> int:
        """The 64-bit command specific result (DW1:DW0), e.g. a Property Get of CAP."""
        return self.dw0 | (self.dw1 << 32)

    @property
    def phase(self) -> int:
        return self.status & 1

    def decoded_status(self) -> Status:
        return Status.decode(self.status >> 1)


def encode_cqe(status: Status, *, cid: int, sqid: int, sqhd: int, phase: int = 0) -> bytes:
    """The one way a completion's bytes are made: status value, DW0/DW1 result, queue ids."""
    if status is SUCCESS and not phase:  # the common case, without the field arithmetic
        return CQE.pack(0, 0, sqhd, sqid, cid, 0)
    return CQE.pack(
        status.result & 0xFFFFFFFF,
        status.result_hi & 0xFFFFFFFF,
        sqhd,
        sqid,
        cid,
        (status.encode() << 1) | (phase & 1),
    )
