"""NVMe completion status values (NVMe Base 2.0, Figures 100-106; Linux ``enum nvme_status``).

A status is a *value*, not an exception (docs/architecture.md): a command handler returns a
:class:`Status`; exactly one function encodes it into the CQE status field.

The 15-bit CQE status field (CQE DW3 bits 31:17) holds, from bit 0: SC (8 bits), SCT (3 bits),
CRD (2 bits), M (1 bit), DNR (1 bit).  :class:`SC` values carry SCT in bits 10:8 the way the Linux
kernel spells them (``NVME_SC_CONNECT_INVALID_PARAM = 0x182``), so one integer names both.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class SCT(enum.IntEnum):
    """Status Code Type (Figure 100)."""

    GENERIC = 0
    COMMAND_SPECIFIC = 1
    MEDIA = 2
    PATH = 3
    VENDOR = 7


class SC(enum.IntEnum):
    """Status codes with their type in bits 10:8 (Figures 101-106, NVMe-oF 1.1 Figure 21)."""

    # Generic Command Status (SCT 0)
    SUCCESS = 0x000
    INVALID_OPCODE = 0x001
    INVALID_FIELD = 0x002
    CMDID_CONFLICT = 0x003
    DATA_XFER_ERROR = 0x004
    POWER_LOSS = 0x005
    INTERNAL = 0x006
    ABORT_REQ = 0x007
    ABORT_QUEUE = 0x008
    FUSED_FAIL = 0x009
    FUSED_MISSING = 0x00A
    INVALID_NS = 0x00B
    CMD_SEQ_ERROR = 0x00C
    SGL_INVALID_LAST = 0x00D
    SGL_INVALID_COUNT = 0x00E
    SGL_INVALID_DATA = 0x00F
    SGL_INVALID_METADATA = 0x010
    SGL_INVALID_TYPE = 0x011
    CMB_INVALID_USE = 0x012
    PRP_INVALID_OFFSET = 0x013
    ATOMIC_WU_EXCEEDED = 0x014
    OP_DENIED = 0x015
    SGL_INVALID_OFFSET = 0x016
    # 17h is reserved
    HOST_ID_INCONSIST = 0x018
    KA_TIMEOUT_EXPIRED = 0x019
    KA_TIMEOUT_INVALID = 0x01A
    ABORTED_PREEMPT_ABORT = 0x01B
    SANITIZE_FAILED = 0x01C
    SANITIZE_IN_PROGRESS = 0x01D
    SGL_INVALID_GRANULARITY = 0x01E
    CMD_NOT_SUP_CMB_QUEUE = 0x01F
    NS_WRITE_PROTECTED = 0x020
    CMD_INTERRUPTED = 0x021
    TRANSIENT_TR_ERR = 0x022
    LBA_RANGE = 0x080
    CAP_EXCEEDED = 0x081
    NS_NOT_READY = 0x082
    RESERVATION_CONFLICT = 0x083

    # Command Specific Status (SCT 1)
    CQ_INVALID = 0x100
    QID_INVALID = 0x101
    QUEUE_SIZE = 0x102
    ABORT_LIMIT = 0x103
    ASYNC_LIMIT = 0x105
    FIRMWARE_SLOT = 0x106
    FIRMWARE_IMAGE = 0x107
    INVALID_VECTOR = 0x108
    INVALID_LOG_PAGE = 0x109
    INVALID_FORMAT = 0x10A
    FEATURE_NOT_SAVEABLE = 0x10D
    FEATURE_NOT_CHANGEABLE = 0x10E
    FEATURE_NOT_PER_NS = 0x10F
    # Fabrics command specific (NVMe-oF 1.1 Figure 21) share SCT 1 with the I/O ones below.
    CONNECT_FORMAT = 0x180
    CONNECT_CTRL_BUSY = 0x181
    CONNECT_INVALID_PARAM = 0x182
    CONNECT_RESTART_DISC = 0x183
    CONNECT_INVALID_HOST = 0x184
    INVALID_QUEUE_TYPE = 0x185
    DISCOVERY_RESTART = 0x190
    AUTH_REQUIRED = 0x191

    # Media and Data Integrity Errors (SCT 2)
    WRITE_FAULT = 0x280
    READ_ERROR = 0x281
    GUARD_CHECK = 0x282
    APPTAG_CHECK = 0x283
    REFTAG_CHECK = 0x284
    COMPARE_FAILED = 0x285
    ACCESS_DENIED = 0x286
    UNWRITTEN_BLOCK = 0x287

    # Path Related Status (SCT 3)
    ANA_PERSISTENT_LOSS = 0x301
    ANA_INACCESSIBLE = 0x302
    ANA_TRANSITION = 0x303
    HOST_PATH_ERROR = 0x370
    HOST_ABORTED_CMD = 0x371

    @classmethod
    def _missing_(cls, value: object) -> SC | None:
        """A code this project has no name for (a newer specification's, a vendor's): a member
        of its own, made once and named ``UNKNOWN``, so a status keeps its exact SCT and SC.
        It does not join the enumeration (``list(SC)``); values beyond 11 bits are refused."""
        if not isinstance(value, int) or not 0 <= value <= 0x7FF:
            return None
        member = int.__new__(cls, value)
        member._name_ = "UNKNOWN"
        member._value_ = value
        known = cls._value2member_map_.setdefault(value, member)
        assert isinstance(known, SC)
        return known


#: Bit positions inside the 15-bit status field (CQE DW3 bits 31:17, i.e. bits 15:1 of SF+P).
STATUS_DNR = 1 << 14
STATUS_MORE = 1 << 13
STATUS_CRD_SHIFT = 11
STATUS_CRD_MASK = 0x3 << STATUS_CRD_SHIFT


@dataclass(frozen=True, slots=True)
class Status:
    """A command's outcome: the status code, Do Not Retry, and where the error was found.

    ``field`` is the byte offset of the offending field in the SQE (or, with ``in_data``, in the
    command's data: Connect data, for instance), for the error log page and for the Connect
    response's IPO/IATTR.  ``result`` is CQE DW0 (command specific: Connect's cntlid, Get
    Features' value, ...).  ``crd`` (Command Retry Delay, bits 12:11: which CRDTn of Identify
    Controller a host waits before a retry) and ``more`` (M, bit 13: the Error Information log
    page has more) complete the status field, so that :meth:`decode` followed by
    :meth:`encode` gives back every one of its 15 bits, whatever the code.
    """

    code: SC = SC.SUCCESS
    dnr: bool = False
    field: int | None = None
    in_data: bool = False
    result: int = 0
    result_hi: int = 0
    crd: int = 0
    more: bool = False

    @property
    def ok(self) -> bool:
        return self.code == SC.SUCCESS

    @property
    def sct(self) -> int:
        return (int(self.code) >> 8) & 0x7

    @property
    def sc(self) -> int:
        return int(self.code) & 0xFF

    def encode(self) -> int:
        """The 15-bit status field value (without the phase bit)."""
        value = int(self.code) & 0x7FF
        if self.crd:
            value |= (self.crd << STATUS_CRD_SHIFT) & STATUS_CRD_MASK
        if self.more:
            value |= STATUS_MORE
        if self.dnr:
            value |= STATUS_DNR
        return value

    @classmethod
    def decode(cls, field: int) -> Status:
        """Inverse of :meth:`encode` for a 15-bit status field (phase bit already removed):
        exact, an unknown code included (it becomes an ``SC`` member of its own)."""
        return cls(
            SC(field & 0x7FF),
            dnr=bool(field & STATUS_DNR),
            crd=(field & STATUS_CRD_MASK) >> STATUS_CRD_SHIFT,
            more=bool(field & STATUS_MORE),
        )

    def __str__(self) -> str:
        extra = (f" crd={self.crd}" if self.crd else "") + (" more" if self.more else "")
        dnr = " dnr" if self.dnr else ""
        return f"{self.code.name} (sct={self.sct:#x} sc={self.sc:#04x}{extra}{dnr})"


SUCCESS = Status()


def error(code: SC, field: int | None = None, *, dnr: bool = True, in_data: bool = False) -> Status:
    """A failed status; DNR is set by default because a host's malformed command stays malformed."""
    return Status(code, dnr=dnr, field=field, in_data=in_data)


class WireError(ValueError):
    """A byte layout could not be decoded (short buffer, reserved value).

    The ``struct.error`` of a decoder becomes this, naming the structure and the field.
    """
