"""Log pages (NVMe Base 2.0 Get Log Page; NVMe-oF 1.1 Discovery; Linux ``include/linux/nvme.h``).

The data a Get Log Page admin command (opcode 02h) returns, selected by LID (:class:`LogPageId`):

* 01h Error Information: :class:`ErrorInformationEntry` (``struct nvme_error_slot``), an array;
* 02h SMART / Health Information: :class:`SmartLog` (``struct nvme_smart_log``);
* 03h Firmware Slot Information: :class:`FirmwareSlotLog` (``struct nvme_fw_slot_info_log``);
* 04h Changed Namespace List: :class:`ChangedNamespaceList`;
* 05h Commands Supported and Effects: :class:`CommandEffectsLog` (``struct nvme_effects_log``);
* 0Ch Asymmetric Namespace Access: :class:`AnaLog` = :class:`AnaLogHeader`
  (``struct nvme_ana_rsp_hdr``) + :class:`AnaGroupDescriptor` (``struct nvme_ana_group_desc``);
* 70h Discovery: :class:`DiscoveryLogHeader` (``struct nvmf_disc_rsp_page_hdr``) +
  :class:`DiscoveryLogEntry` (``struct nvmf_disc_rsp_page_entry``), with
  :func:`encode_discovery_log` / :func:`decode_discovery_log`.

These are whole pages.  A host reads a log in pieces (NUMD dwords at offset LPO; the Linux host
reads the discovery log's header, then the entries, then the header again to check GENCTR):
slicing ``encode()[lpo : lpo + numd * 4]`` is the command handler's business, not this layer's.

Field tables, encoding and decoding rules are those of :mod:`nvmf.wire.identify`: spec field
names, reserved bytes zero, :class:`ValueError` on encoding a value that does not fit,
:class:`~nvmf.wire.status.WireError` on decoding a short or malformed buffer.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple, Self

from nvmf.wire.identify import (
    NSID_MAX,
    U8,
    U16,
    U32,
    U64,
    U128,
    Array,
    Ascii,
    Field,
    Layout,
    Nqn,
    Raw,
    ReadableBuffer,
    require,
)
from nvmf.wire.status import WireError


class LogPageId(enum.IntEnum):
    """Log Page Identifiers (Base 2.0 "Get Log Page - Log Page Identifiers"; Linux
    ``NVME_LOG_*``)."""

    SUPPORTED = 0x00
    ERROR = 0x01
    SMART = 0x02
    FW_SLOT = 0x03
    CHANGED_NS = 0x04
    CMD_EFFECTS = 0x05
    DEVICE_SELF_TEST = 0x06
    TELEMETRY_HOST = 0x07
    TELEMETRY_CTRL = 0x08
    ENDURANCE_GROUP = 0x09
    ANA = 0x0C
    FEATURES = 0x12
    RMI = 0x16
    DISC = 0x70
    RESERVATION = 0x80


# ---------------------------------------------------------------------------------------------
# Error Information (LID 01h)
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class ErrorInformationEntry:
    """One Error Information log entry, 64 bytes (Base 2.0 "Error Information Log Entry Data
    Structure"; Linux ``struct nvme_error_slot``, libnvme ``struct nvme_error_log_page``).

    ``status_field`` holds the CQE status in bits 15:1 and the phase tag in bit 0;
    ``param_error_location`` is the byte (bits 7:0) and bit (10:8) of the offending command field;
    ``error_count`` is the entry's unique, increasing error number (0 = an empty entry).
    """

    SIZE: ClassVar[int] = 64
    LAYOUT: ClassVar[Layout]

    error_count: int = 0
    sqid: int = 0
    cmdid: int = 0
    status_field: int = 0
    param_error_location: int = 0
    lba: int = 0
    nsid: int = 0
    vs: int = 0
    trtype: int = 0
    csi: int = 0
    opcode: int = 0
    cs: int = 0
    trtype_spec_info: int = 0
    log_page_version: int = 0

    def encode(self) -> bytes:
        """The 64-byte entry."""
        return self.LAYOUT.pack(self)

    @classmethod
    def decode(cls, buf: ReadableBuffer) -> Self:
        """Parse the first 64 bytes of ``buf``."""
        return cls(**cls.LAYOUT.unpack(buf))


# fmt: off
ErrorInformationEntry.LAYOUT = Layout("ErrorInformationEntry", ErrorInformationEntry.SIZE, [
    Field(0,  "error_count",          U64),  # Error Count
    Field(8,  "sqid",                 U16),  # Submission Queue ID
    Field(10, "cmdid",                U16),  # Command ID
    Field(12, "status_field",         U16),  # Status Field (bits 15:1) and phase tag (bit 0)
    Field(14, "param_error_location", U16),  # Parameter Error Location
    Field(16, "lba",                  U64),  # LBA
    Field(24, "nsid",                 U32),  # Namespace
    Field(28, "vs",                   U8),   # Vendor Specific Information Available (a LID)
    Field(29, "trtype",               U8),   # Transport Type (:class:`TransportType`)
    Field(30, "csi",                  U8),   # Command Set Indicator
    Field(31, "opcode",               U8),   # Opcode
    Field(32, "cs",                   U64),  # Command Specific Information
    Field(40, "trtype_spec_info",     U16),  # Transport Type Specific Information
    Field(63, "log_page_version",     U8),   # Log Page Version
])
# fmt: on
ErrorInformationEntry.LAYOUT.check_class(ErrorInformationEntry)


def encode_error_log(entries: Iterable[ErrorInformationEntry]) -> bytes:
    """The Error Information log: the entries back to back, newest first by convention."""
    return b"".join(e.encode() for e in entries)


def decode_error_log(buf: ReadableBuffer) -> list[ErrorInformationEntry]:
    """Every whole 64-byte entry in ``buf`` (a host asks for ELPE + 1 of them or fewer)."""
    view = memoryview(buf).cast("B")
    size = ErrorInformationEntry.SIZE
    count = len(view) // size
    return [ErrorInformationEntry.decode(view[i * size : (i + 1) * size]) for i in range(count)]


# ---------------------------------------------------------------------------------------------
# SMART / Health Information (LID 02h)
# ---------------------------------------------------------------------------------------------


class CriticalWarning(enum.IntFlag):
    """SMART log ``critical_warning`` bits (Linux ``NVME_SMART_CRIT_*``)."""

    SPARE = 1 << 0
    TEMPERATURE = 1 << 1
    RELIABILITY = 1 << 2
    MEDIA = 1 << 3  # read-only mode
    VOLATILE_MEMORY = 1 << 4
    PMR_READ_ONLY = 1 << 5


def _eight_zeros() -> list[int]:
    return [0] * 8


@dataclass(slots=True, kw_only=True)
class SmartLog:
    """SMART / Health Information log page, 512 bytes (Base 2.0 "SMART / Health Information Log
    Page"; Linux ``struct nvme_smart_log``).

    Temperatures are in kelvins.  The 16-byte counters (``data_units_read`` ... ``num_err_log_
    entries``) are Python ints: data units are thousands of 512-byte units, rounded up.
    ``temp_sensor`` is the eight temperature sensors (0 = not implemented).
    """

    SIZE: ClassVar[int] = 512
    LAYOUT: ClassVar[Layout]

    critical_warning: int = 0
    temperature: int = 0
    avail_spare: int = 0
    spare_thresh: int = 0
    percent_used: int = 0
    endu_grp_crit_warn_sumry: int = 0
    data_units_read: int = 0
    data_units_written: int = 0
    host_reads: int = 0
    host_writes: int = 0
    ctrl_busy_time: int = 0
    power_cycles: int = 0
    power_on_hours: int = 0
    unsafe_shutdowns: int = 0
    media_errors: int = 0
    num_err_log_entries: int = 0
    warning_temp_time: int = 0
    critical_comp_time: int = 0
    temp_sensor: list[int] = field(default_factory=_eight_zeros)
    thm_temp1_trans_count: int = 0
    thm_temp2_trans_count: int = 0
    thm_temp1_total_time: int = 0
    thm_temp2_total_time: int = 0

    def encode(self) -> bytes:
        """The 512-byte page."""
        return self.LAYOUT.pack(self)

    @classmethod
    def decode(cls, buf: ReadableBuffer) -> Self:
        """Parse the first 512 bytes of ``buf``."""
        return cls(**cls.LAYOUT.unpack(buf))


# fmt: off
SmartLog.LAYOUT = Layout("SmartLog", SmartLog.SIZE, [
    Field(0,   "critical_warning",         U8),             # Critical Warning (CriticalWarning)
    Field(1,   "temperature",              U16),            # Composite Temperature (K)
    Field(3,   "avail_spare",              U8),             # Available Spare (%)
    Field(4,   "spare_thresh",             U8),             # Available Spare Threshold (%)
    Field(5,   "percent_used",             U8),             # Percentage Used
    Field(6,   "endu_grp_crit_warn_sumry", U8),             # Endurance Group Crit. Warning Summary
    Field(32,  "data_units_read",          U128),           # Data Units Read (1000 x 512 B)
    Field(48,  "data_units_written",       U128),           # Data Units Written
    Field(64,  "host_reads",               U128),           # Host Read Commands
    Field(80,  "host_writes",              U128),           # Host Write Commands
    Field(96,  "ctrl_busy_time",           U128),           # Controller Busy Time (minutes)
    Field(112, "power_cycles",             U128),           # Power Cycles
    Field(128, "power_on_hours",           U128),           # Power On Hours
    Field(144, "unsafe_shutdowns",         U128),           # Unsafe Shutdowns
    Field(160, "media_errors",             U128),           # Media and Data Integrity Errors
    Field(176, "num_err_log_entries",      U128),           # Number of Error Info Log Entries
    Field(192, "warning_temp_time",        U32),            # Warning Composite Temp. Time (min)
    Field(196, "critical_comp_time",       U32),            # Critical Composite Temp. Time (min)
    Field(200, "temp_sensor",              Array(U16, 8)),  # Temperature Sensor 1-8 (K)
    Field(216, "thm_temp1_trans_count",    U32),            # Thermal Mgmt Temp. 1 Transition Count
    Field(220, "thm_temp2_trans_count",    U32),            # Thermal Mgmt Temp. 2 Transition Count
    Field(224, "thm_temp1_total_time",     U32),            # Total Time For Thermal Mgmt Temp. 1
    Field(228, "thm_temp2_total_time",     U32),            # Total Time For Thermal Mgmt Temp. 2
])
# fmt: on
SmartLog.LAYOUT.check_class(SmartLog)


# ---------------------------------------------------------------------------------------------
# Firmware Slot Information (LID 03h)
# ---------------------------------------------------------------------------------------------


def _seven_slots() -> list[str]:
    return [""] * 7


@dataclass(slots=True, kw_only=True)
class FirmwareSlotLog:
    """Firmware Slot Information log page, 512 bytes (Base 2.0 "Firmware Slot Information Log
    Page"; Linux ``struct nvme_fw_slot_info_log``).

    ``afi``: active slot in bits 2:0, slot activated at the next reset in bits 6:4.  ``frs``: the
    firmware revision (8 ASCII characters, space padded) of slots 1-7; ``""`` is an empty or
    unsupported slot, all zero on the wire.
    """

    SIZE: ClassVar[int] = 512
    LAYOUT: ClassVar[Layout]

    afi: int = 0
    frs: list[str] = field(default_factory=_seven_slots)

    def encode(self) -> bytes:
        """The 512-byte page."""
        return self.LAYOUT.pack(self)

    @classmethod
    def decode(cls, buf: ReadableBuffer) -> Self:
        """Parse the first 512 bytes of ``buf``."""
        return cls(**cls.LAYOUT.unpack(buf))


# fmt: off
FirmwareSlotLog.LAYOUT = Layout("FirmwareSlotLog", FirmwareSlotLog.SIZE, [
    Field(0, "afi", U8),                                      # Active Firmware Info
    Field(8, "frs", Array(Ascii(8, zero_if_empty=True), 7)),  # Firmware Revision Slots 1-7
])
# fmt: on
FirmwareSlotLog.LAYOUT.check_class(FirmwareSlotLog)


# ---------------------------------------------------------------------------------------------
# Changed Namespace List (LID 04h)
# ---------------------------------------------------------------------------------------------

_CHANGED_NS_ARRAY = struct.Struct("<1024I")

#: The first entry when more than 1024 namespaces changed.
CHANGED_NS_OVERFLOW = 0xFFFFFFFF


@dataclass(slots=True)
class ChangedNamespaceList:
    """Changed Namespace List log page, 4096 bytes (Base 2.0 "Changed Namespace List Log Page";
    Linux ``NVME_MAX_CHANGED_NAMESPACES`` = 1024, ``nvmet_execute_get_log_changed_ns``).

    Up to 1024 NSIDs whose attributes changed since the page was last read, zero terminated.
    When more than 1024 changed, the page is FFFFFFFFh followed by zeros: ``overflow`` is set
    and ``nsids`` is empty.  Build one from any number of NSIDs with :meth:`from_changed`.
    """

    SIZE: ClassVar[int] = 4096
    MAX_ENTRIES: ClassVar[int] = 1024

    nsids: list[int] = field(default_factory=list)
    overflow: bool = False

    @classmethod
    def from_changed(cls, nsids: Iterable[int]) -> Self:
        """The page for these changed NSIDs: the list itself, or the overflow marker."""
        changed = list(nsids)
        if len(changed) > cls.MAX_ENTRIES:
            return cls([], overflow=True)
        return cls(changed)

    def encode(self) -> bytes:
        """The 4096-byte page; :class:`ValueError` on an invalid NSID or too many."""
        if self.overflow:
            if self.nsids:
                raise ValueError("ChangedNamespaceList: overflow with a list of NSIDs")
            entries = [CHANGED_NS_OVERFLOW]
        else:
            if len(self.nsids) > self.MAX_ENTRIES:
                raise ValueError(f"ChangedNamespaceList: {len(self.nsids)} NSIDs, at most 1024")
            for nsid in self.nsids:
                if not isinstance(nsid, int) or not 0 < nsid <= NSID_MAX:
                    raise ValueError(f"ChangedNamespaceList: {nsid!r} is not a valid NSID")
            entries = list(self.nsids)
        return _CHANGED_NS_ARRAY.pack(*entries, *([0] * (self.MAX_ENTRIES - len(entries))))

    @classmethod
    def decode(cls, buf: ReadableBuffer) -> Self:
        """Parse a 4096-byte page."""
        view = require(buf, cls.SIZE, "ChangedNamespaceList")
        entries = _CHANGED_NS_ARRAY.unpack_from(view)
        if entries[0] == CHANGED_NS_OVERFLOW:
            return cls([], overflow=True)
        nsids: list[int] = []
        for nsid in entries:
            if nsid == 0:
                break
            nsids.append(nsid)
        return cls(nsids)


# ---------------------------------------------------------------------------------------------
# Commands Supported and Effects (LID 05h)
# ---------------------------------------------------------------------------------------------


class CommandEffects(enum.IntFlag):
    """Commands Supported and Effects entry bits (Linux ``NVME_CMD_EFFECTS_*``)."""

    CSUPP = 1 << 0  # command supported
    LBCC = 1 << 1  # logical block content change
    NCC = 1 << 2  # namespace capability change
    NIC = 1 << 3  # namespace inventory change
    CCC = 1 << 4  # controller capability change
    UUID_SEL = 1 << 19  # UUID selection supported


#: Command Submission and Execution (CSE), bits 18:16: 0 no restriction, 1 one outstanding
#: command per namespace, 2 one per controller.
CMD_EFFECTS_CSE_SHIFT = 16
CMD_EFFECTS_CSE_MASK = 0x7 << CMD_EFFECTS_CSE_SHIFT


def _zeros_256() -> list[int]:
    return [0] * 256


@dataclass(slots=True)
class CommandEffectsLog:
    """Commands Supported and Effects log page, 4096 bytes (Base 2.0 "Commands Supported and
    Effects Log Page"; Linux ``struct nvme_effects_log``).

    ``acs[opcode]`` describes admin command ``opcode``, ``iocs[opcode]`` I/O command ``opcode``;
    each is a 32-bit :class:`CommandEffects` value (0 = not supported).
    """

    SIZE: ClassVar[int] = 4096
    LAYOUT: ClassVar[Layout]

    acs: list[int] = field(default_factory=_zeros_256)
    iocs: list[int] = field(default_factory=_zeros_256)

    def encode(self) -> bytes:
        """The 4096-byte page (shorter lists are zero-filled to 256 entries)."""
        return self.LAYOUT.pack(self)

    @classmethod
    def decode(cls, buf: ReadableBuffer) -> Self:
        """Parse the first 4096 bytes of ``buf``."""
        return cls(**cls.LAYOUT.unpack(buf))


# fmt: off
CommandEffectsLog.LAYOUT = Layout("CommandEffectsLog", CommandEffectsLog.SIZE, [
    Field(0,    "acs",  Array(U32, 256)),  # Admin Command Supported, opcodes 00h-FFh
    Field(1024, "iocs", Array(U32, 256)),  # I/O Command Supported, opcodes 00h-FFh
])
# fmt: on
CommandEffectsLog.LAYOUT.check_class(CommandEffectsLog)


# ---------------------------------------------------------------------------------------------
# Asymmetric Namespace Access (LID 0Ch)
# ---------------------------------------------------------------------------------------------


class AnaState(enum.IntEnum):
    """ANA states (Base 2.0 "Asymmetric Namespace Access States"; Linux ``enum nvme_ana_state``)."""

    OPTIMIZED = 0x01
    NONOPTIMIZED = 0x02
    INACCESSIBLE = 0x03
    PERSISTENT_LOSS = 0x04
    CHANGE = 0x0F


#: Get Log Page LSP bit 0 for the ANA log: Return Groups Only (``NVME_ANA_LOG_RGO``).
ANA_LOG_RGO = 1 << 0


@dataclass(slots=True)
class AnaLogHeader:
    """ANA log page header, 16 bytes (Base 2.0 "Asymmetric Namespace Access Log Page"; Linux
    ``struct nvme_ana_rsp_hdr``): the change count and the number of group descriptors."""

    SIZE: ClassVar[int] = 16
    LAYOUT: ClassVar[Layout]

    chgcnt: int = 0
    ngrps: int = 0

    def encode(self) -> bytes:
        """The 16-byte header."""
        return self.LAYOUT.pack(self)

    @classmethod
    def decode(cls, buf: ReadableBuffer) -> Self:
        """Parse the first 16 bytes of ``buf``."""
        return cls(**cls.LAYOUT.unpack(buf))


# fmt: off
AnaLogHeader.LAYOUT = Layout("AnaLogHeader", AnaLogHeader.SIZE, [
    Field(0, "chgcnt", U64),  # Change Count
    Field(8, "ngrps",  U16),  # Number of ANA Group Descriptors
])
# fmt: on
AnaLogHeader.LAYOUT.check_class(AnaLogHeader)


@dataclass(slots=True)
class AnaGroupDescriptor:
    """One ANA group descriptor: 32 bytes plus 4 per NSID (Base 2.0 "ANA Group Descriptor
    format"; Linux ``struct nvme_ana_group_desc``).

    NNSIDS is ``len(nsids)``, a property: with RGO (return groups only) the list is empty.
    """

    HEADER_SIZE: ClassVar[int] = 32
    LAYOUT: ClassVar[Layout]

    grpid: int
    state: int
    chgcnt: int = 0
    nsids: list[int] = field(default_factory=list)

    @property
    def nnsids(self) -> int:
        """Number of NSID values (NNSIDS)."""
        return len(self.nsids)

    @property
    def size(self) -> int:
        """This descriptor's length in bytes."""
        return self.HEADER_SIZE + 4 * len(self.nsids)

    def encode(self) -> bytes:
        """The descriptor: 32-byte header, then the NSIDs."""
        for nsid in self.nsids:
            if not isinstance(nsid, int) or not 0 < nsid <= NSID_MAX:
                raise ValueError(f"AnaGroupDescriptor.nsids: {nsid!r} is not a valid NSID")
        return self.LAYOUT.pack(self) + struct.pack(f"<{len(self.nsids)}I", *self.nsids)

    @classmethod
    def decode_from(cls, buf: ReadableBuffer, offset: int = 0) -> tuple[Self, int]:
        """Parse the descriptor at ``offset``; return it and the offset just past it."""
        view = memoryview(buf).cast("B")[offset:]
        values = cls.LAYOUT.unpack(view)
        count = values.pop("nnsids")
        end = cls.HEADER_SIZE + 4 * count
        require(view, end, f"AnaGroupDescriptor (grpid {values['grpid']}, {count} NSIDs)")
        nsids = list(struct.unpack_from(f"<{count}I", view, cls.HEADER_SIZE))
        return cls(nsids=nsids, **values), offset + end

    @classmethod
    def decode(cls, buf: ReadableBuffer) -> Self:
        """Parse the descriptor at the start of ``buf``."""
        return cls.decode_from(buf)[0]


# fmt: off
AnaGroupDescriptor.LAYOUT = Layout("AnaGroupDescriptor", AnaGroupDescriptor.HEADER_SIZE, [
    Field(0,  "grpid",  U32),  # ANA Group ID
    Field(4,  "nnsids", U32),  # Number of NSID Values
    Field(8,  "chgcnt", U64),  # Change Count
    Field(16, "state",  U8),   # ANA State (:class:`AnaState`, bits 3:0)
])
# fmt: on
AnaGroupDescriptor.LAYOUT.check_class(AnaGroupDescriptor, derived=["nnsids"], extra=["nsids"])


@dataclass(slots=True)
class AnaLog:
    """The whole ANA log page: header (NGRPS = ``len(groups)``) and group descriptors."""

    chgcnt: int = 0
    groups: list[AnaGroupDescriptor] = field(default_factory=list)

    def encode(self) -> bytes:
        """The page: 16-byte header, then each descriptor."""
        header = AnaLogHeader(self.chgcnt, len(self.groups)).encode()
        return header + b"".join(g.encode() for g in self.groups)

    @classmethod
    def decode(cls, buf: ReadableBuffer) -> Self:
        """Parse a page; :class:`WireError` if it is shorter than its descriptors."""
        header = AnaLogHeader.decode(buf)
        groups: list[AnaGroupDescriptor] = []
        pos = AnaLogHeader.SIZE
        for _ in range(header.ngrps):
            group, pos = AnaGroupDescriptor.decode_from(buf, pos)
            groups.append(group)
        return cls(header.chgcnt, groups)


# ---------------------------------------------------------------------------------------------
# Discovery (LID 70h, NVMe-oF 1.1)
# ---------------------------------------------------------------------------------------------


class TransportType(enum.IntEnum):
    """Discovery entry TRTYPE (NVMe-oF 1.1 "Discovery Log Page Entry"; Linux ``NVMF_TRTYPE_*``)."""

    PCI = 0
    RDMA = 1
    FC = 2
    TCP = 3
    LOOP = 254  # reserved for host usage


class AddressFamily(enum.IntEnum):
    """Discovery entry ADRFAM (Linux ``NVMF_ADDR_FAMILY_*``)."""

    PCI = 0
    IPV4 = 1
    IPV6 = 2
    IB = 3
    FC = 4
    LOOP = 254  # reserved for host usage


class SubsystemType(enum.IntEnum):
    """Discovery entry SUBTYPE (Linux ``enum nvme_subsys_type``).

    ``DISCOVERY`` is a referral to another discovery subsystem; ``CURRENT_DISCOVERY`` (Base 2.0,
    TP 8013) is the discovery subsystem being read.
    """

    DISCOVERY = 1
    NVME = 2
    CURRENT_DISCOVERY = 3


class Treq(enum.IntFlag):
    """Discovery entry TREQ (Linux ``NVMF_TREQ_*``).

    Bits 1:0 are the secure channel requirement: 0 not specified, 1 required, 2 not required.
    Bit 2 says the controller may disable SQ flow control (the host may then set Connect CATTR
    bit 2 and the controller stops reporting SQHD).
    """

    NOT_SPECIFIED = 0
    REQUIRED = 1
    NOT_REQUIRED = 2
    DISABLE_SQFLOW = 1 << 2


#: The secure channel part of TREQ (``NVME_TREQ_SECURE_CHANNEL_MASK``).
TREQ_SECURE_CHANNEL_MASK = 0x3


class DiscoveryEntryFlags(enum.IntFlag):
    """Discovery entry EFLAGS (Base 2.0, TP 8013/8014; Linux ``NVME_DISC_EFLAGS_*``)."""

    DUPRETINFO = 1 << 0  # duplicate returned information
    EPCSD = 1 << 1  # explicit persistent connection support for discovery


class TcpSecType(enum.IntEnum):
    """TSAS SECTYPE for NVMe/TCP (Linux ``NVMF_TCP_SECTYPE_*``)."""

    NONE = 0
    TLS12 = 1
    TLS13 = 2


class RdmaQpType(enum.IntEnum):
    """TSAS RDMA_QPTYPE (Linux ``NVMF_RDMA_QPTYPE_*``)."""

    CONNECTED = 1
    DATAGRAM = 2


class RdmaPrType(enum.IntEnum):
    """TSAS RDMA_PRTYPE (Linux ``NVMF_RDMA_PRTYPE_*``)."""

    NOT_SPECIFIED = 1
    IB = 2
    ROCE = 3
    ROCEV2 = 4
    IWARP = 5


class RdmaCms(enum.IntEnum):
    """TSAS RDMA_CMS (Linux ``NVMF_RDMA_CMS_*``)."""

    RDMA_CM = 1


#: Size of the TSAS field.
TSAS_SIZE = 256

_TSAS_RDMA = struct.Struct("<BBB5xH")


def tsas_tcp(sectype: int = TcpSecType.NONE) -> bytes:
    """The 256-byte TSAS of an NVMe/TCP entry: SECTYPE in byte 0."""
    return bytes([sectype]).ljust(TSAS_SIZE, b"\0")


def tsas_rdma(
    qptype: int = RdmaQpType.CONNECTED,
    prtype: int = RdmaPrType.NOT_SPECIFIED,
    cms: int = RdmaCms.RDMA_CM,
    pkey: int = 0,
) -> bytes:
    """The 256-byte TSAS of an NVMe/RDMA entry: QPTYPE, PRTYPE, CMS, reserved, PKEY at 8.

    The defaults are what the Linux target reports.
    """
    return _TSAS_RDMA.pack(qptype, prtype, cms, pkey).ljust(TSAS_SIZE, b"\0")


@dataclass(slots=True)
class DiscoveryLogHeader:
    """Discovery log page header, 1024 bytes (NVMe-oF 1.1 Figure 31; Linux
    ``struct nvmf_disc_rsp_page_hdr``).

    ``genctr`` changes whenever the log's contents change; ``numrec`` counts the entries that
    follow; ``recfmt`` is the record format (0).
    """

    SIZE: ClassVar[int] = 1024
    LAYOUT: ClassVar[Layout]

    genctr: int = 0
    numrec: int = 0
    recfmt: int = 0

    def encode(self) -> bytes:
        """The 1024-byte header."""
        return self.LAYOUT.pack(self)

    @classmethod
    def decode(cls, buf: ReadableBuffer) -> Self:
        """Parse the first 1024 bytes of ``buf``."""
        return cls(**cls.LAYOUT.unpack(buf))


# fmt: off
DiscoveryLogHeader.LAYOUT = Layout("DiscoveryLogHeader", DiscoveryLogHeader.SIZE, [
    Field(0,  "genctr", U64),  # Generation Counter
    Field(8,  "numrec", U64),  # Number of Records
    Field(16, "recfmt", U16),  # Record Format
])
# fmt: on
DiscoveryLogHeader.LAYOUT.check_class(DiscoveryLogHeader)


def _tsas_zero() -> bytes:
    return bytes(TSAS_SIZE)


@dataclass(slots=True, kw_only=True)
class DiscoveryLogEntry:
    """One Discovery log page entry, 1024 bytes (NVMe-oF 1.1 Figure 32; Linux
    ``struct nvmf_disc_rsp_page_entry``).

    ``trsvcid`` (32) and ``traddr`` (256) are ASCII, space padded, as the Linux target writes
    them; ``subnqn`` is UTF-8, NUL padded.  ``cntlid`` is FFFFh for the dynamic controller model,
    FFFEh for a static one.  ``asqsz`` is the admin SQ size the host may use.  ``tsas`` is the
    raw 256-byte transport specific field: build it with :func:`tsas_tcp` or :func:`tsas_rdma`.
    """

    SIZE: ClassVar[int] = 1024
    LAYOUT: ClassVar[Layout]

    trtype: int = 0
    adrfam: int = 0
    subtype: int = 0
    treq: int = 0
    portid: int = 0
    cntlid: int = 0
    asqsz: int = 0
    eflags: int = 0
    trsvcid: str = ""
    subnqn: str = ""
    traddr: str = ""
    tsas: bytes = field(default_factory=_tsas_zero)

    def encode(self) -> bytes:
        """The 1024-byte entry."""
        return self.LAYOUT.pack(self)

    @classmethod
    def decode(cls, buf: ReadableBuffer) -> Self:
        """Parse the first 1024 bytes of ``buf``."""
        return cls(**cls.LAYOUT.unpack(buf))


# fmt: off
DiscoveryLogEntry.LAYOUT = Layout("DiscoveryLogEntry", DiscoveryLogEntry.SIZE, [
    Field(0,   "trtype",  U8),              # Transport Type (:class:`TransportType`)
    Field(1,   "adrfam",  U8),              # Address Family (:class:`AddressFamily`)
    Field(2,   "subtype", U8),              # Subsystem Type (:class:`SubsystemType`)
    Field(3,   "treq",    U8),              # Transport Requirements (:class:`Treq`)
    Field(4,   "portid",  U16),             # Port ID
    Field(6,   "cntlid",  U16),             # Controller ID
    Field(8,   "asqsz",   U16),             # Admin Max SQ Size
    Field(10,  "eflags",  U16),             # Entry Flags (:class:`DiscoveryEntryFlags`)
    Field(32,  "trsvcid", Ascii(32)),       # Transport Service Identifier
    Field(256, "subnqn",  Nqn(256)),        # NVM Subsystem Qualified Name
    Field(512, "traddr",  Ascii(256)),      # Transport Address
    Field(768, "tsas",    Raw(TSAS_SIZE)),  # Transport Specific Address Subtype
])
# fmt: on
DiscoveryLogEntry.LAYOUT.check_class(DiscoveryLogEntry)


class DiscoveryLog(NamedTuple):
    """A decoded Discovery log page."""

    genctr: int
    numrec: int
    recfmt: int
    entries: list[DiscoveryLogEntry]


def encode_discovery_log(
    genctr: int, entries: Iterable[DiscoveryLogEntry], *, recfmt: int = 0
) -> bytes:
    """The whole Discovery log page: header (NUMREC = number of entries), then the entries."""
    encoded = [e.encode() for e in entries]
    header = DiscoveryLogHeader(genctr=genctr, numrec=len(encoded), recfmt=recfmt)
    return header.encode() + b"".join(encoded)


def decode_discovery_log(buf: ReadableBuffer) -> DiscoveryLog:
    """Parse a whole Discovery log page; :class:`WireError` if it holds fewer than NUMREC entries.

    To read only the header (a host's first, short read), use :meth:`DiscoveryLogHeader.decode`.
    """
    view = memoryview(buf).cast("B")
    header = DiscoveryLogHeader.decode(view)
    size = DiscoveryLogEntry.SIZE
    available = (len(view) - DiscoveryLogHeader.SIZE) // size
    if header.numrec > available:
        raise WireError(
            f"DiscoveryLog: numrec {header.numrec} but only {available} entries in "
            f"{len(view)} bytes"
        )
    base = DiscoveryLogHeader.SIZE
    entries = [
        DiscoveryLogEntry.decode(view[base + i * size : base + (i + 1) * size])
        for i in range(header.numrec)
    ]
    return DiscoveryLog(header.genctr, header.numrec, header.recfmt, entries)


assert ErrorInformationEntry.LAYOUT.struct.size == ErrorInformationEntry.SIZE == 64
assert SmartLog.LAYOUT.struct.size == SmartLog.SIZE == 512
assert FirmwareSlotLog.LAYOUT.struct.size == FirmwareSlotLog.SIZE == 512
assert _CHANGED_NS_ARRAY.size == ChangedNamespaceList.SIZE == 4096
assert CommandEffectsLog.LAYOUT.struct.size == CommandEffectsLog.SIZE == 4096
assert AnaLogHeader.LAYOUT.struct.size == AnaLogHeader.SIZE == 16
assert AnaGroupDescriptor.LAYOUT.struct.size == AnaGroupDescriptor.HEADER_SIZE == 32
assert DiscoveryLogHeader.LAYOUT.struct.size == DiscoveryLogHeader.SIZE == 1024
assert DiscoveryLogEntry.LAYOUT.struct.size == DiscoveryLogEntry.SIZE == 1024
assert _TSAS_RDMA.size == 10
