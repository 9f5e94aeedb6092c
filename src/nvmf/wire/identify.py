"""Identify data structures (NVMe Base 2.0, NVMe-oF 1.1; Linux ``include/linux/nvme.h``).

What the Identify admin command (opcode 06h) returns, selected by CNS (:class:`Cns`):

* CNS 01h :class:`IdentifyController` (``struct nvme_id_ctrl``), with its
  :class:`PowerStateDescriptor` array (``struct nvme_id_power_state``);
* CNS 00h :class:`IdentifyNamespace` (``struct nvme_id_ns``), with its :class:`LbaFormat` array
  (``struct nvme_lbaf``);
* CNS 02h :class:`NamespaceList` (the active namespace ID list);
* CNS 03h :class:`NsIdDescriptorList` (``struct nvme_ns_id_desc`` entries).

Every data structure is 4096 bytes.  Structures are described declaratively (docs/architecture.md):
a *field table* of ``(offset, name, type)`` rows, spec field names kept, compiled once at import
into one little-endian :class:`struct.Struct` with the reserved gaps as pad bytes.  Compiling checks
that rows do not overlap and that the total is the structure's size, so an offset typo fails at
import, not on the wire.  The same machinery (:class:`Layout` and the field types) describes the log
pages in :mod:`nvmf.wire.logpage`.

Encoding validates values (range, string length and character set) and raises :class:`ValueError`
naming ``Structure.field``; decoding raises :class:`~nvmf.wire.status.WireError` naming the
structure (short buffer, undecodable string); :class:`struct.error` never escapes.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, Self, TypeAlias

from nvmf.wire.status import WireError

#: What the decoders accept: any contiguous byte buffer (a received PDU, a staging slice).
ReadableBuffer: TypeAlias = bytes | bytearray | memoryview

#: Every Identify data structure is this long (``NVME_IDENTIFY_DATA_SIZE``).
IDENTIFY_DATA_SIZE = 4096


def require(buf: ReadableBuffer, size: int, what: str) -> memoryview:
    """``buf`` as a byte view of at least ``size`` bytes, or :class:`WireError` naming ``what``."""
    view = memoryview(buf).cast("B")
    if len(view) < size:
        raise WireError(f"{what}: short buffer, {len(view)} bytes, need {size}")
    return view


# ---------------------------------------------------------------------------------------------
# Field tables
# ---------------------------------------------------------------------------------------------


class FieldType:
    """How one field's Python value maps onto items of a :class:`struct.Struct`.

    ``fmt`` is the field's struct format (no byte-order prefix), ``size`` its width in bytes and
    ``items`` how many values ``fmt`` packs.  ``where`` in the methods is ``Structure.field``, for
    error messages.
    """

    __slots__ = ("fmt", "items", "size")

    def __init__(self, fmt: str, size: int, items: int = 1) -> None:
        self.fmt = fmt
        self.size = size
        self.items = items

    def to_items(self, value: Any, where: str) -> tuple[Any, ...]:
        """The struct items for ``value``; :class:`ValueError` if it does not fit."""
        raise NotImplementedError

    def from_items(self, items: Sequence[Any], where: str) -> Any:
        """The Python value for the unpacked ``items``; :class:`WireError` if undecodable."""
        raise NotImplementedError

    def default(self) -> Any:
        """The value of an all-zero field."""
        raise NotImplementedError


_NATIVE_INT = {1: "B", 2: "H", 4: "I", 8: "Q"}


class UInt(FieldType):
    """An unsigned little-endian integer of ``size`` bytes (1, 2, 3, 4, 8 or 16).

    3-byte (``ieee``) and 16-byte (``tnvmcap``, the SMART counters) fields are Python ints too.
    """

    __slots__ = ()

    def __init__(self, size: int) -> None:
        super().__init__(_NATIVE_INT.get(size, f"{size}s"), size)

    def to_items(self, value: Any, where: str) -> tuple[Any, ...]:
        if not isinstance(value, int) or not 0 <= value < 1 << (8 * self.size):
            raise ValueError(f"{where}: {value!r} is not a {8 * self.size}-bit unsigned integer")
        if self.size in _NATIVE_INT:
            return (value,)
        return (value.to_bytes(self.size, "little"),)

    def from_items(self, items: Sequence[Any], where: str) -> int:
        if self.size in _NATIVE_INT:
            return int(items[0])
        return int.from_bytes(items[0], "little")

    def default(self) -> int:
        return 0


class Ascii(FieldType):
    """A fixed-width ASCII string padded with spaces (``sn``, ``mn``, ``fr``, ``traddr`` ...).

    The spec's ASCII fields hold printable characters (20h-7Eh), left justified, space padded.
    Decoding strips trailing spaces and NULs (some devices NUL-pad).  With ``zero_if_empty`` the
    empty string encodes as all zeros (the firmware slot log's unused slots).
    """

    __slots__ = ("zero_if_empty",)

    def __init__(self, size: int, *, zero_if_empty: bool = False) -> None:
        super().__init__(f"{size}s", size)
        self.zero_if_empty = zero_if_empty

    def to_items(self, value: Any, where: str) -> tuple[Any, ...]:
        if not isinstance(value, str) or not all(" " <= c <= "~" for c in value):
            raise ValueError(f"{where}: {value!r} is not printable ASCII")
        if len(value) > self.size:
            raise ValueError(f"{where}: {value!r} is longer than {self.size} characters")
        if not value and self.zero_if_empty:
            return (bytes(self.size),)
        return (value.encode("ascii").ljust(self.size, b" "),)

    def from_items(self, items: Sequence[Any], where: str) -> str:
        raw: bytes = items[0]
        try:
            return raw.rstrip(b" \0").decode("ascii")
        except UnicodeDecodeError as exc:
            raise WireError(f"{where}: not ASCII: {raw!r}") from exc

    def default(self) -> str:
        return ""


class Nqn(FieldType):
    """A NUL-terminated, NUL-padded UTF-8 string (``subnqn``): NVMe Qualified Names.

    At most ``size - 1`` bytes, so the terminator always fits; decoding stops at the first NUL.
    """

    __slots__ = ()

    def __init__(self, size: int) -> None:
        super().__init__(f"{size}s", size)

    def to_items(self, value: Any, where: str) -> tuple[Any, ...]:
        if not isinstance(value, str) or "\0" in value:
            raise ValueError(f"{where}: {value!r} is not a string without NULs")
        raw = value.encode("utf-8")
        if len(raw) >= self.size:
            raise ValueError(f"{where}: {len(raw)} bytes, at most {self.size - 1} fit")
        return (raw.ljust(self.size, b"\0"),)

    def from_items(self, items: Sequence[Any], where: str) -> str:
        raw: bytes = bytes(items[0]).split(b"\0", 1)[0]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WireError(f"{where}: not UTF-8: {raw!r}") from exc

    def default(self) -> str:
        return ""


class Raw(FieldType):
    """Exactly ``size`` opaque bytes (``fguid``, ``nguid``, ``eui64``, ``tsas``)."""

    __slots__ = ()

    def __init__(self, size: int) -> None:
        super().__init__(f"{size}s", size)

    def to_items(self, value: Any, where: str) -> tuple[Any, ...]:
        if not isinstance(value, bytes | bytearray | memoryview) or len(value) != self.size:
            raise ValueError(f"{where}: {value!r} is not {self.size} bytes")
        return (bytes(value),)

    def from_items(self, items: Sequence[Any], where: str) -> bytes:
        return bytes(items[0])

    def default(self) -> bytes:
        return bytes(self.size)


class Nested(FieldType):
    """One fixed-size structure (``psd[n]``, ``lbaf[n]``) encoded by its own class."""

    __slots__ = ("cls",)

    def __init__(self, cls: Any) -> None:
        super().__init__(f"{cls.SIZE}s", cls.SIZE)
        self.cls = cls

    def to_items(self, value: Any, where: str) -> tuple[Any, ...]:
        if not isinstance(value, self.cls):
            raise ValueError(f"{where}: {value!r} is not a {self.cls.__name__}")
        try:
            encoded: bytes = value.encode()
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from exc
        return (encoded,)

    def from_items(self, items: Sequence[Any], where: str) -> Any:
        try:
            return self.cls.decode(items[0])
        except WireError as exc:
            raise WireError(f"{where}: {exc}") from exc

    def default(self) -> Any:
        return self.cls()


class Array(FieldType):
    """``count`` consecutive elements of one type, as a list.

    Encoding accepts up to ``count`` elements and zero-fills the rest; decoding returns all
    ``count`` (a structure that knows how many are valid, like ``psd`` by ``npss``, trims them).
    """

    __slots__ = ("count", "elem")

    def __init__(self, elem: FieldType, count: int) -> None:
        super().__init__(elem.fmt * count, elem.size * count, elem.items * count)
        self.elem = elem
        self.count = count

    def to_items(self, value: Any, where: str) -> tuple[Any, ...]:
        if not isinstance(value, Sequence) or isinstance(value, str | bytes):
            raise ValueError(f"{where}: {value!r} is not a sequence")
        if len(value) > self.count:
            raise ValueError(f"{where}: {len(value)} elements, at most {self.count} fit")
        out: list[Any] = []
        for i in range(self.count):
            elem = value[i] if i < len(value) else self.elem.default()
            out.extend(self.elem.to_items(elem, f"{where}[{i}]"))
        return tuple(out)

    def from_items(self, items: Sequence[Any], where: str) -> list[Any]:
        n = self.elem.items
        return [
            self.elem.from_items(items[i * n : (i + 1) * n], f"{where}[{i}]")
            for i in range(self.count)
        ]

    def default(self) -> list[Any]:
        return [self.elem.default() for _ in range(self.count)]


U8 = UInt(1)
U16 = UInt(2)
U24 = UInt(3)
U32 = UInt(4)
U64 = UInt(8)
U128 = UInt(16)


class Field(NamedTuple):
    """One row of a field table: byte offset, spec field name, type."""

    offset: int
    name: str
    type: FieldType


class Layout:
    """A structure's field table compiled to one little-endian :class:`struct.Struct`.

    Bytes not covered by a row are reserved: zero on encode, ignored on decode.  Construction
    fails (:class:`ValueError`) if rows overlap, a name repeats, or the size is not ``size``.
    """

    def __init__(self, name: str, size: int, fields: Iterable[Field]) -> None:
        self.name = name
        self.size = size
        self.fields: tuple[Field, ...] = tuple(sorted(fields, key=lambda f: f.offset))
        self._by_name = {f.name: f for f in self.fields}
        if len(self._by_name) != len(self.fields):
            raise ValueError(f"{name}: a field name repeats")
        fmt = ["<"]
        pos = 0
        for f in self.fields:
            if f.offset < pos:
                raise ValueError(f"{name}.{f.name} at {f.offset} overlaps the field before it")
            if f.offset > pos:
                fmt.append(f"{f.offset - pos}x")
            fmt.append(f.type.fmt)
            pos = f.offset + f.type.size
        if pos > size:
            raise ValueError(f"{name}: fields end at {pos}, past the size {size}")
        if pos < size:
            fmt.append(f"{size - pos}x")
        self.struct = struct.Struct("".join(fmt))
        if self.struct.size != size:
            raise ValueError(f"{name}: compiled to {self.struct.size} bytes, not {size}")

    def offset(self, name: str) -> int:
        """The byte offset of field ``name``."""
        return self._by_name[name].offset

    def field(self, name: str) -> Field:
        """The table row of field ``name``."""
        return self._by_name[name]

    def pack(self, obj: object) -> bytes:
        """Encode the attributes of ``obj`` named by the table into exactly ``size`` bytes."""
        items: list[Any] = []
        for f in self.fields:
            items.extend(f.type.to_items(getattr(obj, f.name), f"{self.name}.{f.name}"))
        try:
            return self.struct.pack(*items)
        except struct.error as exc:  # the field types validate first; this is a backstop
            raise ValueError(f"{self.name}: {exc}") from exc

    def unpack(self, buf: ReadableBuffer) -> dict[str, Any]:
        """Decode the first ``size`` bytes of ``buf`` into ``{field name: value}``."""
        view = require(buf, self.size, self.name)
        try:
            items = self.struct.unpack_from(view)
        except struct.error as exc:  # require() checked the length; this is a backstop
            raise WireError(f"{self.name}: {exc}") from exc
        out: dict[str, Any] = {}
        pos = 0
        for f in self.fields:
            out[f.name] = f.type.from_items(
                items[pos : pos + f.type.items], f"{self.name}.{f.name}"
            )
            pos += f.type.items
        return out

    def check_class(
        self, cls: type, *, derived: Iterable[str] = (), extra: Iterable[str] = ()
    ) -> None:
        """Assert that ``cls``'s dataclass fields are exactly the table's, less ``derived`` ones.

        ``derived`` names table fields computed from others (``nnsids`` from ``len(nsids)``),
        which the class provides as properties; ``extra`` names class fields outside the fixed
        layout (the NSIDs that follow an ANA group descriptor's header).
        """
        names = {f.name for f in dataclasses.fields(cls)}
        expected = (set(self._by_name) - set(derived)) | set(extra)
        if names != expected:
            raise AssertionError(f"{self.name}: class fields {names ^ expected} differ from table")


# ---------------------------------------------------------------------------------------------
# CNS and CSI values
# ---------------------------------------------------------------------------------------------


class Cns(enum.IntEnum):
    """Identify CDW10.CNS values (NVMe Base 2.0 Figure "CNS Values"; Linux ``NVME_ID_CNS_*``)."""

    NS = 0x00
    CTRL = 0x01
    NS_ACTIVE_LIST = 0x02
    NS_DESC_LIST = 0x03
    CS_NS = 0x05
    CS_CTRL = 0x06
    NS_ACTIVE_LIST_CS = 0x07
    NS_CS_INDEP = 0x08
    NS_PRESENT_LIST = 0x10
    NS_PRESENT = 0x11
    CTRL_NS_LIST = 0x12
    CTRL_LIST = 0x13
    SCNDRY_CTRL_LIST = 0x15
    NS_GRANULARITY = 0x16
    UUID_LIST = 0x17
    ENDGRP_LIST = 0x19


class Csi(enum.IntEnum):
    """Command Set Identifier (Identify CDW11.CSI, NIDT 04h descriptor; Linux ``NVME_CSI_*``)."""

    NVM = 0x00
    ZNS = 0x02


# ---------------------------------------------------------------------------------------------
# Identify Controller (CNS 01h)
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class PowerStateDescriptor:
    """One power state descriptor, 32 bytes (Base 2.0 "Power State Descriptor Data Structure";
    Linux ``struct nvme_id_power_state``: max_power, flags, entry_lat, exit_lat, ...).

    ``mp`` is the maximum power in units of 0.01 W (0.0001 W with ``flags`` bit 0, MXPS); ``flags``
    bit 1 is NOPS (non-operational state).  ``ips`` holds IPS in bits 7:6, ``apw_aps`` APW in bits
    2:0 and APS in bits 7:6.
    """

    SIZE: ClassVar[int] = 32
    LAYOUT: ClassVar[Layout]

    mp: int = 0
    flags: int = 0
    enlat: int = 0
    exlat: int = 0
    rrt: int = 0
    rrl: int = 0
    rwt: int = 0
    rwl: int = 0
    idlp: int = 0
    ips: int = 0
    actp: int = 0
    apw_aps: int = 0

    def encode(self) -> bytes:
        """The 32-byte descriptor."""
        return self.LAYOUT.pack(self)

    @classmethod
    def decode(cls, buf: ReadableBuffer) -> Self:
        """Parse the first 32 bytes of ``buf``."""
        return cls(**cls.LAYOUT.unpack(buf))


# fmt: off
PowerStateDescriptor.LAYOUT = Layout(
    "PowerStateDescriptor",
    PowerStateDescriptor.SIZE,
    [
        # offset, name, type, meaning (Base 2.0 "Power State Descriptor Data Structure")
        Field(0,  "mp",      U16),  # Maximum Power
        Field(3,  "flags",   U8),   # bit 0 MXPS, bit 1 NOPS
        Field(4,  "enlat",   U32),  # Entry Latency (us)
        Field(8,  "exlat",   U32),  # Exit Latency (us)
        Field(12, "rrt",     U8),   # Relative Read Throughput
        Field(13, "rrl",     U8),   # Relative Read Latency
        Field(14, "rwt",     U8),   # Relative Write Throughput
        Field(15, "rwl",     U8),   # Relative Write Latency
        Field(16, "idlp",    U16),  # Idle Power
        Field(18, "ips",     U8),   # Idle Power Scale (bits 7:6)
        Field(20, "actp",    U16),  # Active Power
        Field(22, "apw_aps", U8),   # Active Power Workload (2:0), Active Power Scale (7:6)
    ],
)
# fmt: on
PowerStateDescriptor.LAYOUT.check_class(PowerStateDescriptor)

#: How many power state descriptors the structure holds (``psd[32]``).
PSD_COUNT = 32
_PSD_ARRAY = Array(Nested(PowerStateDescriptor), PSD_COUNT)

# fmt: off
ID_CTRL_LAYOUT = Layout(
    "IdentifyController",
    IDENTIFY_DATA_SIZE,
    [
        # offset, name, type, meaning (Base 2.0 Identify Controller; struct nvme_id_ctrl)
        # -- Controller capabilities and features (bytes 0-255)
        Field(0,    "vid",       U16),         # PCI Vendor ID
        Field(2,    "ssvid",     U16),         # PCI Subsystem Vendor ID
        Field(4,    "sn",        Ascii(20)),   # Serial Number
        Field(24,   "mn",        Ascii(40)),   # Model Number
        Field(64,   "fr",        Ascii(8)),    # Firmware Revision
        Field(72,   "rab",       U8),          # Recommended Arbitration Burst
        Field(73,   "ieee",      U24),         # IEEE OUI Identifier (little endian)
        Field(76,   "cmic",      U8),          # Multi-Path I/O and Namespace Sharing Capabilities
        Field(77,   "mdts",      U8),          # Maximum Data Transfer Size (2^n * CAP.MPSMIN)
        Field(78,   "cntlid",    U16),         # Controller ID
        Field(80,   "ver",       U32),         # Version
        Field(84,   "rtd3r",     U32),         # RTD3 Resume Latency
        Field(88,   "rtd3e",     U32),         # RTD3 Entry Latency
        Field(92,   "oaes",      U32),         # Optional Asynchronous Events Supported
        Field(96,   "ctratt",    U32),         # Controller Attributes
        Field(100,  "rrls",      U16),         # Read Recovery Levels Supported
        Field(111,  "cntrltype", U8),          # Controller Type (1 I/O, 2 discovery, 3 admin)
        Field(112,  "fguid",     Raw(16)),     # FRU Globally Unique Identifier
        Field(128,  "crdt1",     U16),         # Command Retry Delay Time 1
        Field(130,  "crdt2",     U16),         # Command Retry Delay Time 2
        Field(132,  "crdt3",     U16),         # Command Retry Delay Time 3
        Field(253,  "nvmsr",     U8),          # NVM Subsystem Report (NVMe-MI)
        Field(254,  "vwci",      U8),          # VPD Write Cycle Information (NVMe-MI)
        Field(255,  "mec",       U8),          # Management Endpoint Capabilities (NVMe-MI)
        # -- Admin command set attributes and optional controller capabilities (256-511)
        Field(256,  "oacs",      U16),         # Optional Admin Command Support
        Field(258,  "acl",       U8),          # Abort Command Limit
        Field(259,  "aerl",      U8),          # Asynchronous Event Request Limit
        Field(260,  "frmw",      U8),          # Firmware Updates
        Field(261,  "lpa",       U8),          # Log Page Attributes
        Field(262,  "elpe",      U8),          # Error Log Page Entries (0's based)
        Field(263,  "npss",      U8),          # Number of Power States Support (0's based)
        Field(264,  "avscc",     U8),          # Admin Vendor Specific Command Configuration
        Field(265,  "apsta",     U8),          # Autonomous Power State Transition Attributes
        Field(266,  "wctemp",    U16),         # Warning Composite Temperature Threshold (K)
        Field(268,  "cctemp",    U16),         # Critical Composite Temperature Threshold (K)
        Field(270,  "mtfa",      U16),         # Maximum Time for Firmware Activation
        Field(272,  "hmpre",     U32),         # Host Memory Buffer Preferred Size
        Field(276,  "hmmin",     U32),         # Host Memory Buffer Minimum Size
        Field(280,  "tnvmcap",   U128),        # Total NVM Capacity
        Field(296,  "unvmcap",   U128),        # Unallocated NVM Capacity
        Field(312,  "rpmbs",     U32),         # Replay Protected Memory Block Support
        Field(316,  "edstt",     U16),         # Extended Device Self-test Time
        Field(318,  "dsto",      U8),          # Device Self-test Options
        Field(319,  "fwug",      U8),          # Firmware Update Granularity
        Field(320,  "kas",       U16),         # Keep Alive Support (units of 100 ms)
        Field(322,  "hctma",     U16),         # Host Controlled Thermal Management Attributes
        Field(324,  "mntmt",     U16),         # Minimum Thermal Management Temperature
        Field(326,  "mxtmt",     U16),         # Maximum Thermal Management Temperature
        Field(328,  "sanicap",   U32),         # Sanitize Capabilities
        Field(332,  "hmminds",   U32),         # Host Memory Buffer Minimum Descriptor Entry Size
        Field(336,  "hmmaxd",    U16),         # Host Memory Maximum Descriptors Entries
        Field(338,  "nsetidmax", U16),         # NVM Set Identifier Maximum
        Field(340,  "endgidmax", U16),         # Endurance Group Identifier Maximum
        Field(342,  "anatt",     U8),          # ANA Transition Time (s)
        Field(343,  "anacap",    U8),          # Asymmetric Namespace Access Capabilities
        Field(344,  "anagrpmax", U32),         # ANA Group Identifier Maximum
        Field(348,  "nanagrpid", U32),         # Number of ANA Group Identifiers
        Field(352,  "pels",      U32),         # Persistent Event Log Size
        Field(356,  "domainid",  U16),         # Domain Identifier
        Field(368,  "megcap",    U128),        # Max Endurance Group Capacity
        # -- NVM command set attributes (512-767)
        Field(512,  "sqes",      U8),          # Submission Queue Entry Size (max 7:4, required 3:0)
        Field(513,  "cqes",      U8),          # Completion Queue Entry Size
        Field(514,  "maxcmd",    U16),         # Maximum Outstanding Commands
        Field(516,  "nn",        U32),         # Number of Namespaces
        Field(520,  "oncs",      U16),         # Optional NVM Command Support
        Field(522,  "fuses",     U16),         # Fused Operation Support
        Field(524,  "fna",       U8),          # Format NVM Attributes
        Field(525,  "vwc",       U8),          # Volatile Write Cache
        Field(526,  "awun",      U16),         # Atomic Write Unit Normal
        Field(528,  "awupf",     U16),         # Atomic Write Unit Power Fail
        Field(530,  "nvscc",     U8),          # NVM Vendor Specific Cmd Config (2.0: ICSVSCC)
        Field(531,  "nwpc",      U8),          # Namespace Write Protection Capabilities
        Field(532,  "acwu",      U16),         # Atomic Compare & Write Unit
        Field(534,  "ocfs",      U16),         # Optional Copy Formats Supported
        Field(536,  "sgls",      U32),         # SGL Support
        Field(540,  "mnan",      U32),         # Maximum Number of Allowed Namespaces
        Field(544,  "maxdna",    U128),        # Maximum Domain Namespace Attachments
        Field(560,  "maxcna",    U32),         # Maximum I/O Controller Namespace Attachments
        Field(768,  "subnqn",    Nqn(256)),    # NVM Subsystem NVMe Qualified Name
        # -- NVMe over Fabrics attributes (1792-2047, NVMe-oF 1.1)
        Field(1792, "ioccsz",    U32),         # I/O Queue Command Capsule Size (16 B units)
        Field(1796, "iorcsz",    U32),         # I/O Queue Response Capsule Size (16 B units)
        Field(1800, "icdoff",    U16),         # In Capsule Data Offset (16 B units)
        Field(1802, "fcatt",     U8),          # Fabrics Controller Attributes (bit 0: static model)
        Field(1803, "msdbd",     U8),          # Maximum SGL Data Block Descriptors
        Field(1804, "ofcs",      U16),         # Optional Fabric Commands (bit 0: Disconnect)
        Field(1806, "dctype",    U8),          # Discovery Controller Type
        # -- Power state descriptors (2048-3071); vendor specific (3072-4095) stays zero
        Field(2048, "psd",       _PSD_ARRAY),  # Power State Descriptors 0-31
    ],
)
# fmt: on


def _one_psd() -> list[PowerStateDescriptor]:
    return [PowerStateDescriptor()]


@dataclass(slots=True, kw_only=True)
class IdentifyController:
    """Identify Controller data structure, CNS 01h, 4096 bytes.

    NVMe Base 2.0 "Identify Controller Data Structure, I/O Command Set Independent", with the
    NVMe-oF 1.1 fabrics fields at 1792; Linux ``struct nvme_id_ctrl``.  The layout is
    :data:`ID_CTRL_LAYOUT`; comments there give each field's meaning.  Every field the Linux host
    (``nvme_init_identify``, fabrics.c) and target (``nvmet_execute_identify_ctrl``) read or set is
    here; bytes not listed are reserved or vendor specific and encode as zero.

    ``psd`` holds the ``npss + 1`` valid power state descriptors (NPSS is 0's based, so there is
    always one); encoding checks ``len(psd) == npss + 1``, decoding returns that many.  ``sn``,
    ``mn`` and ``fr`` are ASCII, space padded on the wire; ``subnqn`` is UTF-8, NUL padded.
    """

    SIZE: ClassVar[int] = IDENTIFY_DATA_SIZE
    LAYOUT: ClassVar[Layout] = ID_CTRL_LAYOUT

    vid: int = 0
    ssvid: int = 0
    sn: str = ""
    mn: str = ""
    fr: str = ""
    rab: int = 0
    ieee: int = 0
    cmic: int = 0
    mdts: int = 0
    cntlid: int = 0
    ver: int = 0
    rtd3r: int = 0
    rtd3e: int = 0
    oaes: int = 0
    ctratt: int = 0
    rrls: int = 0
    cntrltype: int = 0
    fguid: bytes = bytes(16)
    crdt1: int = 0
    crdt2: int = 0
    crdt3: int = 0
    nvmsr: int = 0
    vwci: int = 0
    mec: int = 0
    oacs: int = 0
    acl: int = 0
    aerl: int = 0
    frmw: int = 0
    lpa: int = 0
    elpe: int = 0
    npss: int = 0
    avscc: int = 0
    apsta: int = 0
    wctemp: int = 0
    cctemp: int = 0
    mtfa: int = 0
    hmpre: int = 0
    hmmin: int = 0
    tnvmcap: int = 0
    unvmcap: int = 0
    rpmbs: int = 0
    edstt: int = 0
    dsto: int = 0
    fwug: int = 0
    kas: int = 0
    hctma: int = 0
    mntmt: int = 0
    mxtmt: int = 0
    sanicap: int = 0
    hmminds: int = 0
    hmmaxd: int = 0
    nsetidmax: int = 0
    endgidmax: int = 0
    anatt: int = 0
    anacap: int = 0
    anagrpmax: int = 0
    nanagrpid: int = 0
    pels: int = 0
    domainid: int = 0
    megcap: int = 0
    sqes: int = 0
    cqes: int = 0
    maxcmd: int = 0
    nn: int = 0
    oncs: int = 0
    fuses: int = 0
    fna: int = 0
    vwc: int = 0
    awun: int = 0
    awupf: int = 0
    nvscc: int = 0
    nwpc: int = 0
    acwu: int = 0
    ocfs: int = 0
    sgls: int = 0
    mnan: int = 0
    maxdna: int = 0
    maxcna: int = 0
    subnqn: str = ""
    ioccsz: int = 0
    iorcsz: int = 0
    icdoff: int = 0
    fcatt: int = 0
    msdbd: int = 0
    ofcs: int = 0
    dctype: int = 0
    psd: list[PowerStateDescriptor] = field(default_factory=_one_psd)

    def encode(self) -> bytes:
        """The 4096-byte data structure; :class:`ValueError` on a value that does not fit."""
        if len(self.psd) != self.npss + 1:
            raise ValueError(
                f"IdentifyController.psd: {len(self.psd)} descriptors, npss={self.npss} needs "
                f"{self.npss + 1}"
            )
        return self.LAYOUT.pack(self)

    @classmethod
    def decode(cls, buf: ReadableBuffer) -> Self:
        """Parse the first 4096 bytes of ``buf``; :class:`WireError` if short or undecodable."""
        values = cls.LAYOUT.unpack(buf)
        values["psd"] = values["psd"][: values["npss"] + 1]
        return cls(**values)


ID_CTRL_LAYOUT.check_class(IdentifyController)


# ---------------------------------------------------------------------------------------------
# Identify Namespace (CNS 00h)
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class LbaFormat:
    """One LBA Format, 4 bytes (Base 2.0 "LBA Format Data Structure, NVM Command Set";
    Linux ``struct nvme_lbaf``, whose ``ds`` is the spec's LBADS).

    ``ms``: metadata bytes per LBA; ``lbads``: LBA data size as a power of two (9 = 512 B,
    12 = 4 KiB; 0 = format not supported); ``rp``: relative performance (bits 1:0).
    """

    SIZE: ClassVar[int] = 4
    LAYOUT: ClassVar[Layout]

    ms: int = 0
    lbads: int = 0
    rp: int = 0

    def encode(self) -> bytes:
        """The 4-byte descriptor."""
        return self.LAYOUT.pack(self)

    @classmethod
    def decode(cls, buf: ReadableBuffer) -> Self:
        """Parse the first 4 bytes of ``buf``."""
        return cls(**cls.LAYOUT.unpack(buf))


# fmt: off
LbaFormat.LAYOUT = Layout(
    "LbaFormat",
    LbaFormat.SIZE,
    [
        Field(0, "ms",    U16),  # Metadata Size
        Field(2, "lbads", U8),   # LBA Data Size (2^n bytes)
        Field(3, "rp",    U8),   # Relative Performance (bits 1:0)
    ],
)
# fmt: on
LbaFormat.LAYOUT.check_class(LbaFormat)

#: How many LBA formats fit (16 up to NVMe 1.4, 64 since Base 2.0).
LBAF_COUNT = 64
_LBAF_ARRAY = Array(Nested(LbaFormat), LBAF_COUNT)

# fmt: off
ID_NS_LAYOUT = Layout(
    "IdentifyNamespace",
    IDENTIFY_DATA_SIZE,
    [
        # offset, name, type, meaning (Identify Namespace, NVM Command Set; nvme_id_ns)
        Field(0,   "nsze",     U64),          # Namespace Size (LBAs)
        Field(8,   "ncap",     U64),          # Namespace Capacity
        Field(16,  "nuse",     U64),          # Namespace Utilization
        Field(24,  "nsfeat",   U8),           # Namespace Features
        Field(25,  "nlbaf",    U8),           # Number of LBA Formats (0's based)
        Field(26,  "flbas",    U8),           # Formatted LBA Size (index in 3:0 and 6:5)
        Field(27,  "mc",       U8),           # Metadata Capabilities
        Field(28,  "dpc",      U8),           # End-to-end Data Protection Capabilities
        Field(29,  "dps",      U8),           # End-to-end Data Protection Type Settings
        Field(30,  "nmic",     U8),           # Namespace Multi-path I/O and Sharing Capabilities
        Field(31,  "rescap",   U8),           # Reservation Capabilities
        Field(32,  "fpi",      U8),           # Format Progress Indicator
        Field(33,  "dlfeat",   U8),           # Deallocate Logical Block Features
        Field(34,  "nawun",    U16),          # Namespace Atomic Write Unit Normal
        Field(36,  "nawupf",   U16),          # Namespace Atomic Write Unit Power Fail
        Field(38,  "nacwu",    U16),          # Namespace Atomic Compare & Write Unit
        Field(40,  "nabsn",    U16),          # Namespace Atomic Boundary Size Normal
        Field(42,  "nabo",     U16),          # Namespace Atomic Boundary Offset
        Field(44,  "nabspf",   U16),          # Namespace Atomic Boundary Size Power Fail
        Field(46,  "noiob",    U16),          # Namespace Optimal I/O Boundary
        Field(48,  "nvmcap",   U128),         # NVM Capacity (bytes)
        Field(64,  "npwg",     U16),          # Namespace Preferred Write Granularity
        Field(66,  "npwa",     U16),          # Namespace Preferred Write Alignment
        Field(68,  "npdg",     U16),          # Namespace Preferred Deallocate Granularity
        Field(70,  "npda",     U16),          # Namespace Preferred Deallocate Alignment
        Field(72,  "nows",     U16),          # Namespace Optimal Write Size
        Field(74,  "mssrl",    U16),          # Maximum Single Source Range Length (Copy)
        Field(76,  "mcl",      U32),          # Maximum Copy Length
        Field(80,  "msrc",     U8),           # Maximum Source Range Count
        Field(92,  "anagrpid", U32),          # ANA Group Identifier
        Field(99,  "nsattr",   U8),           # Namespace Attributes (bit 0: write protected)
        Field(100, "nvmsetid", U16),          # NVM Set Identifier
        Field(102, "endgid",   U16),          # Endurance Group Identifier
        Field(104, "nguid",    Raw(16)),      # Namespace Globally Unique Identifier
        Field(120, "eui64",    Raw(8)),       # IEEE Extended Unique Identifier
        Field(128, "lbaf",     _LBAF_ARRAY),  # LBA Formats 0-63
        # 384-4095: vendor specific, zero
    ],
)
# fmt: on


def _one_lbaf() -> list[LbaFormat]:
    return [LbaFormat(ms=0, lbads=9, rp=0)]


@dataclass(slots=True, kw_only=True)
class IdentifyNamespace:
    """Identify Namespace data structure, CNS 00h, 4096 bytes.

    NVMe NVM Command Set 1.0 "Identify Namespace Data Structure, NVM Command Set" (in Base 1.4
    the Identify Namespace data structure); Linux ``struct nvme_id_ns``.  The layout is
    :data:`ID_NS_LAYOUT`.

    ``lbaf`` holds the ``nlbaf + 1`` valid LBA formats (NLBAF is 0's based; up to 16 before
    Base 2.0, up to 64 since); encoding checks ``len(lbaf) == nlbaf + 1``, decoding returns that
    many.  The default is one 512-byte format.  ``nguid`` (16) and ``eui64`` (8) are raw bytes,
    all zero meaning "not reported".
    """

    SIZE: ClassVar[int] = IDENTIFY_DATA_SIZE
    LAYOUT: ClassVar[Layout] = ID_NS_LAYOUT

    nsze: int = 0
    ncap: int = 0
    nuse: int = 0
    nsfeat: int = 0
    nlbaf: int = 0
    flbas: int = 0
    mc: int = 0
    dpc: int = 0
    dps: int = 0
    nmic: int = 0
    rescap: int = 0
    fpi: int = 0
    dlfeat: int = 0
    nawun: int = 0
    nawupf: int = 0
    nacwu: int = 0
    nabsn: int = 0
    nabo: int = 0
    nabspf: int = 0
    noiob: int = 0
    nvmcap: int = 0
    npwg: int = 0
    npwa: int = 0
    npdg: int = 0
    npda: int = 0
    nows: int = 0
    mssrl: int = 0
    mcl: int = 0
    msrc: int = 0
    anagrpid: int = 0
    nsattr: int = 0
    nvmsetid: int = 0
    endgid: int = 0
    nguid: bytes = bytes(16)
    eui64: bytes = bytes(8)
    lbaf: list[LbaFormat] = field(default_factory=_one_lbaf)

    def encode(self) -> bytes:
        """The 4096-byte data structure; :class:`ValueError` on a value that does not fit."""
        if len(self.lbaf) != self.nlbaf + 1:
            raise ValueError(
                f"IdentifyNamespace.lbaf: {len(self.lbaf)} formats, nlbaf={self.nlbaf} needs "
                f"{self.nlbaf + 1}"
            )
        return self.LAYOUT.pack(self)

    @classmethod
    def decode(cls, buf: ReadableBuffer) -> Self:
        """Parse the first 4096 bytes of ``buf``; :class:`WireError` if short."""
        values = cls.LAYOUT.unpack(buf)
        values["lbaf"] = values["lbaf"][: values["nlbaf"] + 1]
        return cls(**values)

    @property
    def lba_format(self) -> LbaFormat:
        """The format in use: FLBAS bits 3:0, extended by bits 6:5 when more than 16 exist."""
        index = (self.flbas & 0x0F) | ((self.flbas & 0x60) >> 1)
        return self.lbaf[index]


ID_NS_LAYOUT.check_class(IdentifyNamespace)


# ---------------------------------------------------------------------------------------------
# Namespace list (CNS 02h and the other NSID lists)
# ---------------------------------------------------------------------------------------------

#: The largest valid namespace ID; FFFFFFFFh is the broadcast value (``NVME_NSID_ALL``).
#: CTRATT (Controller Attributes) bit 0: 128-bit Host Identifier.
CTRATT_HID_128_BIT = 1 << 0
#: CTRATT bit 6: Traffic Based Keep Alive (Base 2.0 §3.9.4): any command on any of the
#: controller's queues restarts its Keep Alive Timer, so a host seeing completions need send
#: no Keep Alive.
CTRATT_TBKAS = 1 << 6

NSID_MAX = 0xFFFFFFFE
NSID_ALL = 0xFFFFFFFF

_NSID_ARRAY = struct.Struct("<1024I")


@dataclass(slots=True)
class NamespaceList:
    """A Namespace List, 4096 bytes: up to 1024 NSIDs in increasing order, zero terminated.

    NVMe Base 2.0 "Namespace List" (returned for CNS 02h, the active namespace ID list, and for
    CNS 07h/10h); Linux fills a ``__le32`` array in ``nvmet_execute_identify_nslist``.  For CNS 02h
    the list holds the active NSIDs *greater than* the command's NSID: build it with
    :meth:`active`.
    """

    SIZE: ClassVar[int] = IDENTIFY_DATA_SIZE
    MAX_ENTRIES: ClassVar[int] = 1024

    nsids: list[int] = field(default_factory=list)

    @classmethod
    def active(cls, nsids: Iterable[int], after: int = 0) -> Self:
        """The list a CNS 02h Identify with NSID ``after`` returns: the NSIDs greater than
        ``after``, sorted, duplicates removed, the first 1024 of them."""
        chosen = sorted({n for n in nsids if n > after})
        return cls(chosen[: cls.MAX_ENTRIES])

    def encode(self) -> bytes:
        """The 4096-byte list; :class:`ValueError` unless NSIDs are valid and increasing."""
        if len(self.nsids) > self.MAX_ENTRIES:
            raise ValueError(f"NamespaceList: {len(self.nsids)} NSIDs, at most 1024 fit")
        prev = 0
        for nsid in self.nsids:
            if not isinstance(nsid, int) or not prev < nsid <= NSID_MAX:
                raise ValueError(f"NamespaceList: {nsid!r} is not a valid NSID above {prev}")
            prev = nsid
        padded = list(self.nsids) + [0] * (self.MAX_ENTRIES - len(self.nsids))
        return _NSID_ARRAY.pack(*padded)

    @classmethod
    def decode(cls, buf: ReadableBuffer) -> Self:
        """Parse a 4096-byte list: the entries before the first zero."""
        view = require(buf, cls.SIZE, "NamespaceList")
        entries = _NSID_ARRAY.unpack_from(view)
        nsids: list[int] = []
        for nsid in entries:
            if nsid == 0:
                break
            nsids.append(nsid)
        return cls(nsids)


def encode_active_ns_list(nsids: Iterable[int], after: int = 0) -> bytes:
    """The CNS 02h data for the namespaces ``nsids`` and the command's NSID ``after``."""
    return NamespaceList.active(nsids, after).encode()


# ---------------------------------------------------------------------------------------------
# Namespace Identification Descriptor list (CNS 03h)
# ---------------------------------------------------------------------------------------------


class Nidt(enum.IntEnum):
    """Namespace Identifier Type (Base 2.0 "Namespace Identification Descriptor"; Linux
    ``NVME_NIDT_*``)."""

    EUI64 = 0x01
    NGUID = 0x02
    UUID = 0x03
    CSI = 0x04


#: NIDL (the identifier's length) each defined NIDT requires (Linux ``NVME_NIDT_*_LEN``).
NIDT_LENGTH: dict[int, int] = {Nidt.EUI64: 8, Nidt.NGUID: 16, Nidt.UUID: 16, Nidt.CSI: 1}

#: The 4-byte descriptor header, Linux ``struct nvme_ns_id_desc``: nidt, nidl, reserved.
NS_ID_DESC_HDR = struct.Struct("<BBH")
assert NS_ID_DESC_HDR.size == 4


class NsIdDescriptor(NamedTuple):
    """One namespace identification descriptor: its type and identifier bytes (NIDL long)."""

    nidt: int
    nid: bytes


@dataclass(slots=True)
class NsIdDescriptorList:
    """Namespace Identification Descriptor list, CNS 03h, 4096 bytes.

    A sequence of descriptors (4-byte header: NIDT, NIDL, reserved; then NIDL bytes), ended by a
    descriptor with NIDT 0 or by the end of the buffer.  A host must skip types it does not know
    using NIDL, so decoding keeps them; a defined type with the wrong NIDL is malformed (the Linux
    host rejects it too) and raises :class:`WireError`.
    """

    SIZE: ClassVar[int] = IDENTIFY_DATA_SIZE

    descriptors: list[NsIdDescriptor] = field(default_factory=list)

    def encode(self) -> bytes:
        """The 4096-byte list; :class:`ValueError` on a bad type, length or overflow."""
        out = bytearray()
        for nidt, nid in self.descriptors:
            where = f"NsIdDescriptorList (descriptor at byte {len(out)})"
            if not isinstance(nidt, int) or not 0 < nidt <= 0xFF:
                raise ValueError(f"{where}: NIDT {nidt!r} is not 1-255")
            if not isinstance(nid, bytes | bytearray | memoryview) or not 0 < len(nid) <= 0xFF:
                raise ValueError(f"{where}: identifier {nid!r} is not 1-255 bytes")
            if NIDT_LENGTH.get(nidt, len(nid)) != len(nid):
                raise ValueError(f"{where}: NIDT {nidt} needs {NIDT_LENGTH[nidt]} bytes")
            out += NS_ID_DESC_HDR.pack(nidt, len(nid), 0) + bytes(nid)
        if len(out) > self.SIZE:
            raise ValueError(f"NsIdDescriptorList: {len(out)} bytes, at most {self.SIZE} fit")
        return bytes(out.ljust(self.SIZE, b"\0"))

    @classmethod
    def decode(cls, buf: ReadableBuffer) -> Self:
        """Parse a 4096-byte descriptor list."""
        view = require(buf, cls.SIZE, "NsIdDescriptorList")
        descriptors: list[NsIdDescriptor] = []
        pos = 0
        while pos + NS_ID_DESC_HDR.size <= cls.SIZE:
            nidt, nidl, _ = NS_ID_DESC_HDR.unpack_from(view, pos)
            if nidt == 0:
                break
            start = pos + NS_ID_DESC_HDR.size
            if start + nidl > cls.SIZE:
                raise WireError(f"NsIdDescriptorList: descriptor at {pos} runs past the end")
            if nidl != NIDT_LENGTH.get(nidt, nidl) or nidl == 0:
                raise WireError(f"NsIdDescriptorList: NIDT {nidt} at {pos} with NIDL {nidl}")
            descriptors.append(NsIdDescriptor(nidt, bytes(view[start : start + nidl])))
            pos = start + nidl
        return cls(descriptors)


def encode_ns_id_descriptors(descriptors: Iterable[tuple[int, bytes]]) -> bytes:
    """The CNS 03h data for ``(nidt, identifier)`` pairs."""
    return NsIdDescriptorList([NsIdDescriptor(t, n) for t, n in descriptors]).encode()


def decode_ns_id_descriptors(buf: ReadableBuffer) -> list[NsIdDescriptor]:
    """The ``(nidt, identifier)`` pairs of CNS 03h data."""
    return NsIdDescriptorList.decode(buf).descriptors


assert PowerStateDescriptor.LAYOUT.struct.size == PowerStateDescriptor.SIZE == 32
assert LbaFormat.LAYOUT.struct.size == LbaFormat.SIZE == 4
assert ID_CTRL_LAYOUT.struct.size == IdentifyController.SIZE == 4096
assert ID_NS_LAYOUT.struct.size == IdentifyNamespace.SIZE == 4096
assert _NSID_ARRAY.size == NamespaceList.SIZE == 4096
