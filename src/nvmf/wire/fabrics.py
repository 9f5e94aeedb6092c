"""Fabrics commands and the controller properties they reach (NVMe-oF 1.1 §3; Base 2.0 §3.1.3).

Fabrics commands are SQEs with opcode 7Fh and FCTYPE at byte 4 (Linux ``struct
nvmf_common_command``).  Their command-specific fields start at byte 40:

* Connect (``struct nvmf_connect_command``): 40 recfmt u16, 42 qid u16, 44 sqsize u16 (0's
  based), 46 cattr u8, 48 kato u32 (ms); 1024 bytes of Connect data (``struct nvmf_connect_data``):
  0 hostid (16), 16 cntlid u16, 256 subsysnqn (256), 512 hostnqn (256).
* Property Set: 40 attrib u8 (size: 0 = 4 bytes, 1 = 8 bytes), 44 offset u32, 48 value u64.
* Property Get: 40 attrib, 44 offset; the value returns in CQE DW0/DW1.
* Disconnect: 40 recfmt u16.
"""

from __future__ import annotations

import enum
import struct
import uuid
from dataclasses import dataclass

from nvmf.wire.opcodes import AdminOpcode, FabricsType
from nvmf.wire.sqe import NULL_TCP_SGL, PSDT_SGL_MPTR_CONTIG, SQE_SIZE, SglDescriptor
from nvmf.wire.status import SC, Status, WireError

#: opcode, rsvd, cid, fctype, rsvd(19), dptr(16), then 24 bytes fabric specific
FABRICS_HDR = struct.Struct("<BBHB19x16s")
assert FABRICS_HDR.size == 40
CONNECT_SPECIFIC = struct.Struct("<HHHBxI12x")
assert CONNECT_SPECIFIC.size == 24
PROPERTY_SPECIFIC = struct.Struct("<B3xIQ8x")
assert PROPERTY_SPECIFIC.size == 24
DISCONNECT_SPECIFIC = struct.Struct("<H22x")
assert DISCONNECT_SPECIFIC.size == 24

CONNECT_DATA_SIZE = 1024
CONNECT_DATA = struct.Struct("<16sH238x256s256s256x")
assert CONNECT_DATA.size == CONNECT_DATA_SIZE

#: Offsets for IPO (Invalid Parameter Offset) in a Connect response.
CONNECT_OFF_RECFMT = 40
CONNECT_OFF_QID = 42
CONNECT_OFF_SQSIZE = 44
CONNECT_OFF_CATTR = 46
CONNECT_OFF_KATO = 48
CONNECT_DATA_OFF_HOSTID = 0
CONNECT_DATA_OFF_CNTLID = 16
CONNECT_DATA_OFF_SUBSYSNQN = 256
CONNECT_DATA_OFF_HOSTNQN = 512

#: CATTR bit 2: the host asks to disable SQ flow control (SQHD in completions not needed).
CATTR_DISABLE_SQFLOW = 1 << 2
#: Connect's cntlid meaning "any controller" (dynamic model: the target allocates).
CNTLID_DYNAMIC = 0xFFFF
NQN_SIZE = 256


def connect_result(cntlid: int) -> int:
    """Connect response DW0 on success: CNTLID in bits 15:0 (no authentication required)."""
    return cntlid & 0xFFFF


def invalid_parameter_result(offset: int, in_data: bool) -> int:
    """Connect response DW0 on Connect Invalid Parameters: IPO (15:0) and IATTR (bit 16)."""
    return (offset & 0xFFFF) | ((1 << 16) if in_data else 0)


def connect_invalid_parameters(offset: int, *, in_data: bool) -> Status:
    """Connect Invalid Parameters (DNR) naming the field at byte ``offset`` of the SQE or,
    with ``in_data``, of the Connect data (IPO and IATTR in DW0, NVMe-oF 1.1 Figure 21)."""
    return Status(
        SC.CONNECT_INVALID_PARAM,
        dnr=True,
        field=offset,
        in_data=in_data,
        result=invalid_parameter_result(offset, in_data),
    )


class ConnectDataError(WireError):
    """A Connect data field that cannot be decoded; ``offset`` is its byte offset in the
    Connect data, for the IPO of a Connect Invalid Parameters response."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


def _nqn(raw: bytes, what: str, offset: int) -> str:
    """An NQN field: UTF-8 up to its first NUL (NVMe-oF 1.1 §7.1: NQNs are UTF-8 strings)."""
    text = raw.split(b"\0", 1)[0]
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConnectDataError(
            f"Connect data: {what} (offset {offset}) is not UTF-8 at byte {exc.start}", offset
        ) from exc


@dataclass(slots=True)
class ConnectData:
    """The 1024-byte Connect command data (NVMe-oF 1.1 Figure 20)."""

    hostid: bytes
    cntlid: int
    subsysnqn: str
    hostnqn: str

    @classmethod
    def decode(cls, raw: bytes | memoryview) -> ConnectData:
        """Raises :class:`ConnectDataError` (with the field's offset) for an NQN that is not
        UTF-8, ``WireError`` for a short buffer."""
        if len(raw) < CONNECT_DATA_SIZE:
            raise WireError(f"Connect data: need {CONNECT_DATA_SIZE} bytes, got {len(raw)}")
        hostid, cntlid, subsysnqn, hostnqn = CONNECT_DATA.unpack_from(raw)
        return cls(
            hostid,
            cntlid,
            _nqn(subsysnqn, "subsysnqn", CONNECT_DATA_OFF_SUBSYSNQN),
            _nqn(hostnqn, "hostnqn", CONNECT_DATA_OFF_HOSTNQN),
        )

    def encode(self) -> bytes:
        sub = self.subsysnqn.encode()
        host = self.hostnqn.encode()
        if len(sub) >= NQN_SIZE:
            raise ValueError(f"ConnectData.subsysnqn: longer than {NQN_SIZE - 1} bytes")
        if len(host) >= NQN_SIZE:
            raise ValueError(f"ConnectData.hostnqn: longer than {NQN_SIZE - 1} bytes")
        if len(self.hostid) != 16:
            raise ValueError("ConnectData.hostid: must be 16 bytes")
        return CONNECT_DATA.pack(self.hostid, self.cntlid, sub, host)

    @property
    def hostid_uuid(self) -> uuid.UUID:
        return uuid.UUID(bytes=bytes(self.hostid))


@dataclass(slots=True)
class ConnectCommand:
    """Connect (FCTYPE 01h), NVMe-oF 1.1 Figure 19."""

    cid: int
    qid: int
    sqsize: int
    kato: int = 0
    cattr: int = 0
    recfmt: int = 0
    sgl: SglDescriptor = NULL_TCP_SGL

    @classmethod
    def decode(cls, raw: bytes | memoryview) -> ConnectCommand:
        if len(raw) < SQE_SIZE:
            raise WireError(f"Connect: need {SQE_SIZE} bytes, got {len(raw)}")
        _, _, cid, _, dptr = FABRICS_HDR.unpack_from(raw)
        recfmt, qid, sqsize, cattr, kato = CONNECT_SPECIFIC.unpack_from(raw, 40)
        return cls(cid, qid, sqsize, kato, cattr, recfmt, SglDescriptor.decode(dptr))

    def encode(self) -> bytes:
        head = FABRICS_HDR.pack(
            AdminOpcode.FABRICS,
            PSDT_SGL_MPTR_CONTIG,
            self.cid,
            FabricsType.CONNECT,
            self.sgl.encode(),
        )
        return head + CONNECT_SPECIFIC.pack(
            self.recfmt, self.qid, self.sqsize, self.cattr, self.kato
        )


class PropertySize(enum.IntEnum):
    """ATTRIB bits 2:0 of Property Get/Set."""

    FOUR = 0
    EIGHT = 1


@dataclass(slots=True)
class PropertyCommand:
    """Property Get (FCTYPE 04h) or Set (00h), NVMe-oF 1.1 Figures 23-27."""

    cid: int
    fctype: int
    attrib: int
    offset: int
    value: int = 0

    @classmethod
    def decode(cls, raw: bytes | memoryview) -> PropertyCommand:
        if len(raw) < SQE_SIZE:
            raise WireError(f"Property command: need {SQE_SIZE} bytes, got {len(raw)}")
        _, _, cid, fctype, _ = FABRICS_HDR.unpack_from(raw)
        attrib, offset, value = PROPERTY_SPECIFIC.unpack_from(raw, 40)
        return cls(cid, fctype, attrib, offset, value)

    def encode(self) -> bytes:
        head = FABRICS_HDR.pack(
            AdminOpcode.FABRICS,
            PSDT_SGL_MPTR_CONTIG,
            self.cid,
            self.fctype,
            NULL_TCP_SGL.encode(),
        )
        return head + PROPERTY_SPECIFIC.pack(self.attrib, self.offset, self.value)

    @property
    def size(self) -> int:
        return 8 if self.attrib & 0x7 == PropertySize.EIGHT else 4


def disconnect_command(cid: int, recfmt: int = 0) -> bytes:
    """Disconnect (FCTYPE 08h): tear down the queue it is sent on."""
    return FABRICS_HDR.pack(
        AdminOpcode.FABRICS,
        PSDT_SGL_MPTR_CONTIG,
        cid,
        FabricsType.DISCONNECT,
        NULL_TCP_SGL.encode(),
    ) + DISCONNECT_SPECIFIC.pack(recfmt)


def fctype_of(raw: bytes | memoryview) -> int:
    """FCTYPE of a fabrics SQE (byte 4)."""
    return raw[4]


# ---------------------------------------------------------------------------------------------
# Controller properties (Base 2.0 Figure 33), reached by Property Get/Set on fabrics.


class Prop(enum.IntEnum):
    """Property offsets."""

    CAP = 0x00
    VS = 0x08
    INTMS = 0x0C
    INTMC = 0x10
    CC = 0x14
    CSTS = 0x1C
    NSSR = 0x20


#: Property sizes: CAP is 8 bytes, the rest 4.
PROP_SIZE = {Prop.CAP: 8, Prop.VS: 4, Prop.CC: 4, Prop.CSTS: 4, Prop.NSSR: 4}

NSSR_RESET = 0x4E564D65  # "NVMe"


@dataclass(frozen=True, slots=True)
class Cap:
    """Controller Capabilities (Figure 36)."""

    mqes: int  # 0's based maximum queue entries
    cqr: bool = True
    to: int = 15  # 500 ms units: worst case time to CSTS.RDY
    dstrd: int = 0
    nssrs: bool = False
    css_nvm: bool = True
    mpsmin: int = 0
    mpsmax: int = 0
    cmbs: bool = False

    def encode(self) -> int:
        value = self.mqes & 0xFFFF
        value |= int(self.cqr) << 16
        value |= (self.to & 0xFF) << 24
        value |= (self.dstrd & 0xF) << 32
        value |= int(self.nssrs) << 36
        value |= int(self.css_nvm) << 37
        value |= (self.mpsmin & 0xF) << 48
        value |= (self.mpsmax & 0xF) << 52
        value |= int(self.cmbs) << 57
        return value

    @classmethod
    def decode(cls, value: int) -> Cap:
        return cls(
            mqes=value & 0xFFFF,
            cqr=bool(value >> 16 & 1),
            to=value >> 24 & 0xFF,
            dstrd=value >> 32 & 0xF,
            nssrs=bool(value >> 36 & 1),
            css_nvm=bool(value >> 37 & 1),
            mpsmin=value >> 48 & 0xF,
            mpsmax=value >> 52 & 0xF,
            cmbs=bool(value >> 57 & 1),
        )


def vs(major: int, minor: int, tertiary: int = 0) -> int:
    """Version property value (Figure 37)."""
    return (major << 16) | (minor << 8) | tertiary


def parse_version(text: str) -> int:
    """nvmetcli's ``attr_version`` string ("1.3", "2.0.1") as a VS value."""
    parts = text.strip().split(".")
    if not 2 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"version: expected MAJOR.MINOR[.TERTIARY], got {text!r}")
    nums = [int(p) for p in parts] + [0]
    if nums[0] > 0xFFFF or nums[1] > 0xFF or nums[2] > 0xFF:
        raise ValueError(f"version: out of range: {text!r}")
    return vs(nums[0], nums[1], nums[2])


class CC:
    """Controller Configuration bits (Figure 41)."""

    EN = 1 << 0
    CSS_SHIFT = 4
    MPS_SHIFT = 7
    AMS_SHIFT = 11
    SHN_SHIFT = 14
    SHN_MASK = 3 << 14
    SHN_NORMAL = 1 << 14
    SHN_ABRUPT = 2 << 14
    IOSQES_SHIFT = 16
    IOCQES_SHIFT = 20

    @staticmethod
    def css(value: int) -> int:
        return value >> 4 & 0x7

    @staticmethod
    def mps(value: int) -> int:
        return value >> 7 & 0xF

    @staticmethod
    def ams(value: int) -> int:
        return value >> 11 & 0x7

    @staticmethod
    def shn(value: int) -> int:
        return value >> 14 & 0x3

    @staticmethod
    def iosqes(value: int) -> int:
        return value >> 16 & 0xF

    @staticmethod
    def iocqes(value: int) -> int:
        return value >> 20 & 0xF


class CSTS:
    """Controller Status bits (Figure 42)."""

    RDY = 1 << 0
    CFS = 1 << 1
    SHST_MASK = 3 << 2
    SHST_OCCUR = 1 << 2
    SHST_CMPLT = 2 << 2
    NSSRO = 1 << 4
    PP = 1 << 5
