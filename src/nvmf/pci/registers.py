"""NVMe controller registers in BAR0: one field table per register, spec names kept.

Layouts follow the NVM Express Base Specification 2.0, §3.1.4 "Controller Properties", one figure
per register ("Offset 0h: CAP - Controller Capabilities", "Offset 8h: VS - Version",
"Offset 14h: CC - Controller Configuration", "Offset 1Ch: CSTS - Controller Status",
"Offset 24h: AQA - Admin Queue Attributes", "Offset 28h: ASQ", "Offset 30h: ACQ",
"Offset 38h: CMBLOC - Controller Memory Buffer Location", "Offset 3Ch: CMBSZ - Controller Memory
Buffer Size", "Offset 50h: CMBMSC - Controller Memory Buffer Memory Space Control",
"Offset 58h: CMBSTS - Controller Memory Buffer Status"); field names are the spec's.  Linux names
the same bits ``NVME_CAP_*``, ``NVME_CC_*``, ``NVME_CSTS_*``, ``NVME_CMB_*``, ``NVME_CMBSZ_*`` and
``NVME_CMBMSC_*`` in include/linux/nvme.h.

These tables live in ``pci/`` (the userspace driver programs the registers) and ``platform/``
(``nvmf doctor`` reads them) imports them from here: one definition, used by both layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Field:
    """A bit field of a register: spec name, lowest and highest bit, meaning."""

    name: str
    lo: int
    hi: int
    meaning: str

    def get(self, value: int) -> int:
        """This field's value in the register value ``value``."""
        return (value >> self.lo) & ((1 << (self.hi - self.lo + 1)) - 1)


@dataclass(frozen=True)
class Register:
    """A controller register: spec name, offset in BAR0, width in bytes, fields."""

    name: str
    offset: int
    width: int
    fields: tuple[Field, ...]

    def decode(self, value: int) -> dict[str, int]:
        """Every field of ``value``, by spec name."""
        return {f.name: f.get(value) for f in self.fields}

    def field(self, name: str) -> Field:
        """The field called ``name`` (KeyError if the register has none)."""
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


CAP = Register(
    "CAP",
    0x00,
    8,
    (
        Field("MQES", 0, 15, "Maximum Queue Entries Supported (0's based)"),
        Field("CQR", 16, 16, "Contiguous Queues Required"),
        Field("AMS", 17, 18, "Arbitration Mechanism Supported"),
        Field("TO", 24, 31, "Timeout (500 ms units)"),
        Field("DSTRD", 32, 35, "Doorbell Stride"),
        Field("NSSRS", 36, 36, "NVM Subsystem Reset Supported"),
        Field("CSS", 37, 44, "Command Sets Supported"),
        Field("BPS", 45, 45, "Boot Partition Support"),
        Field("CPS", 46, 47, "Controller Power Scope"),
        Field("MPSMIN", 48, 51, "Memory Page Size Minimum"),
        Field("MPSMAX", 52, 55, "Memory Page Size Maximum"),
        Field("PMRS", 56, 56, "Persistent Memory Region Supported"),
        Field("CMBS", 57, 57, "Controller Memory Buffer Supported"),
        Field("NSSS", 58, 58, "NVM Subsystem Shutdown Supported"),
        Field("CRMS", 59, 60, "Controller Ready Modes Supported"),
    ),
)
VS = Register(
    "VS",
    0x08,
    4,
    (
        Field("TER", 0, 7, "Tertiary Version Number"),
        Field("MNR", 8, 15, "Minor Version Number"),
        Field("MJR", 16, 31, "Major Version Number"),
    ),
)
CC = Register(
    "CC",
    0x14,
    4,
    (
        Field("EN", 0, 0, "Enable"),
        Field("CSS", 4, 6, "I/O Command Set Selected"),
        Field("MPS", 7, 10, "Memory Page Size (4 KiB << MPS)"),
        Field("AMS", 11, 13, "Arbitration Mechanism Selected"),
        Field("SHN", 14, 15, "Shutdown Notification"),
        Field("IOSQES", 16, 19, "I/O Submission Queue Entry Size (2^n bytes)"),
        Field("IOCQES", 20, 23, "I/O Completion Queue Entry Size (2^n bytes)"),
        Field("CRIME", 24, 24, "Controller Ready Independent of Media Enable"),
    ),
)
CSTS = Register(
    "CSTS",
    0x1C,
    4,
    (
        Field("RDY", 0, 0, "Ready"),
        Field("CFS", 1, 1, "Controller Fatal Status"),
        Field("SHST", 2, 3, "Shutdown Status"),
        Field("NSSRO", 4, 4, "NVM Subsystem Reset Occurred"),
        Field("PP", 5, 5, "Processing Paused"),
        Field("ST", 6, 6, "Shutdown Type"),
    ),
)
AQA = Register(
    "AQA",
    0x24,
    4,
    (
        Field("ASQS", 0, 11, "Admin Submission Queue Size (0's based)"),
        Field("ACQS", 16, 27, "Admin Completion Queue Size (0's based)"),
    ),
)
ASQ = Register("ASQ", 0x28, 8, (Field("ASQB", 12, 63, "Admin Submission Queue Base"),))
ACQ = Register("ACQ", 0x30, 8, (Field("ACQB", 12, 63, "Admin Completion Queue Base"),))
#: Where the doorbells start in BAR0 (Base 2.0 §3.1.4.21 "SQ0TDBL").
DOORBELL_BASE = 0x1000


CMBLOC = Register(
    "CMBLOC",
    0x38,
    4,
    (
        Field("BIR", 0, 2, "Base Indicator Register: the BAR that holds the CMB"),
        Field("CQMMS", 3, 3, "CMB Queue Mixed Memory Support"),
        Field("CQPDS", 4, 4, "CMB Queue Physically Discontiguous Support"),
        Field("CDPMLS", 5, 5, "CMB Data Pointer Mixed Locations Support"),
        Field("CDPCILS", 6, 6, "CMB Data Pointer and Command Independent Locations Support"),
        Field("CDMMMS", 7, 7, "CMB Data Metadata Mixed Memory Support"),
        Field("CQDA", 8, 8, "CMB Queue Dword Alignment"),
        Field("OFST", 12, 31, "Offset of the CMB in the BAR, in CMBSZ.SZU units"),
    ),
)
CMBSZ = Register(
    "CMBSZ",
    0x3C,
    4,
    (
        Field("SQS", 0, 0, "Submission Queue Support"),
        Field("CQS", 1, 1, "Completion Queue Support"),
        Field("LISTS", 2, 2, "PRP SGL List Support"),
        Field("RDS", 3, 3, "Read Data Support"),
        Field("WDS", 4, 4, "Write Data Support"),
        Field("SZU", 8, 11, "Size Units (4 KiB * 16^SZU)"),
        Field("SZ", 12, 31, "Size, in SZU units"),
    ),
)
CMBMSC = Register(
    "CMBMSC",
    0x50,
    8,
    (
        Field("CRE", 0, 0, "Capabilities Registers Enabled"),
        Field("CMSE", 1, 1, "Controller Memory Space Enable"),
        Field("CBA", 12, 63, "Controller Base Address (4 KiB units)"),
    ),
)
CMBSTS = Register(
    "CMBSTS",
    0x58,
    4,
    (Field("CBAI", 0, 0, "Controller Base Address Invalid"),),
)

#: The CMB uses CMBSZ advertises, in report order, with what each lets the host place there.
CMB_USES: tuple[tuple[str, str], ...] = (
    ("SQS", "submission queues"),
    ("CQS", "completion queues"),
    ("RDS", "read data"),
    ("WDS", "write data"),
    ("LISTS", "PRP/SGL lists"),
)

#: How far into BAR0 the doctor reads: CAP .. CMBSTS.
REGISTER_SPAN = CMBSTS.offset + CMBSTS.width


def size_unit(szu: int) -> int:
    """Bytes per CMBSZ.SZU unit: 4 KiB * 16^SZU (0: 4 KiB, 1: 64 KiB, 2: 1 MiB, ... 6: 64 GiB)."""
    return 4096 << (4 * szu)


class RegisterWindow(Protocol):
    """32-bit access to the start of BAR0 (NVMe registers must not be accessed bytewise)."""

    writable: bool

    def read32(self, offset: int) -> int: ...

    def write32(self, offset: int, value: int) -> None: ...


def read64(window: RegisterWindow, offset: int) -> int:
    """A 64-bit register as two 32-bit reads, low dword first."""
    return window.read32(offset) | (window.read32(offset + 4) << 32)


def write64(window: RegisterWindow, offset: int, value: int) -> None:
    """A 64-bit register as two 32-bit writes, low dword first (as Linux's lo_hi_writeq)."""
    window.write32(offset, value & 0xFFFFFFFF)
    window.write32(offset + 4, value >> 32)


def doorbell_offset(qid: int, completion: bool, dstrd: int) -> int:
    """BAR0 offset of queue ``qid``'s SQ tail (or, with ``completion``, CQ head) doorbell:
    1000h + (2 * qid + completion) * (4 << CAP.DSTRD)."""
    return DOORBELL_BASE + (2 * qid + int(completion)) * (4 << dstrd)
