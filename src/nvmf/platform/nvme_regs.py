"""NVMe controller registers in BAR0 that tell whether, where and how big a CMB is.

Layouts follow the NVM Express Base Specification 2.0, §3.1.4 "Controller Properties", one figure
per register ("Offset 0h: CAP - Controller Capabilities", "Offset 8h: VS - Version",
"Offset 38h: CMBLOC - Controller Memory Buffer Location", "Offset 3Ch: CMBSZ - Controller Memory
Buffer Size", "Offset 50h: CMBMSC - Controller Memory Buffer Memory Space Control",
"Offset 58h: CMBSTS - Controller Memory Buffer Status"); field names are the spec's.  Linux names
the same bits ``NVME_CAP_*``, ``NVME_CMB_*``, ``NVME_CMBSZ_*`` and ``NVME_CMBMSC_*`` in
include/linux/nvme.h.

Since NVMe 1.4 a controller that sets CAP.CMBS reports CMBLOC and CMBSZ as zero until the host
sets CMBMSC.CRE (Capabilities Registers Enabled); older controllers report them from reset.  The
Linux driver writes CRE before reading them (``nvme_map_cmb``), and so does
:func:`read_cmb_registers` when it may write: it sets CRE, reads, and puts CMBMSC back as it
found it.
"""

from __future__ import annotations

import errno
import mmap
import os
from dataclasses import dataclass, field
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


class MmapWindow:
    """BAR0 through an ``mmap`` of sysfs ``resource0`` (or of a recorded file standing in for it).

    sysfs gives memory BARs no ``read()``; mapping is the only way.  Accesses go through a
    memoryview cast to 32-bit words so each is one 32-bit load or store.
    """

    def __init__(self, path: str, writable: bool = False) -> None:
        flags = os.O_RDWR if writable else os.O_RDONLY
        self._fd = os.open(path, flags)
        try:
            size = os.fstat(self._fd).st_size
            length = min(4096, size) if size else 4096
            length -= length % 4
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
            self._map = mmap.mmap(self._fd, length, mmap.MAP_SHARED, prot)
        except BaseException:
            os.close(self._fd)
            raise
        self._words = memoryview(self._map).cast("I")
        self.writable = writable

    def read32(self, offset: int) -> int:
        if offset // 4 >= len(self._words):
            return 0
        return int(self._words[offset // 4])

    def write32(self, offset: int, value: int) -> None:
        if not self.writable:
            raise PermissionError("register window is read-only")
        self._words[offset // 4] = value & 0xFFFFFFFF

    def close(self) -> None:
        """Unmap BAR0 and close the file."""
        self._words.release()
        self._map.close()
        os.close(self._fd)


def read64(window: RegisterWindow, offset: int) -> int:
    """A 64-bit register as two 32-bit reads, low dword first."""
    return window.read32(offset) | (window.read32(offset + 4) << 32)


@dataclass
class CmbRegisters:
    """The registers as read, and what the doctor had to do to read them."""

    cap: int
    vs: int
    cmbloc: int
    cmbsz: int
    cmbmsc: int
    cmbsts: int
    #: True when CMBMSC.CRE was clear, the doctor set it to read CMBLOC/CMBSZ and then restored it.
    enabled_cre: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def responding(self) -> bool:
        """False when BAR0 reads all ones (memory decoding off, or the device is gone)."""
        return self.cap != 0xFFFFFFFFFFFFFFFF

    @property
    def cmbs(self) -> bool:
        """CAP.CMBS: the controller supports a CMB (and CMBMSC)."""
        return bool(CAP.field("CMBS").get(self.cap))

    @property
    def version(self) -> str:
        """``MJR.MNR[.TER]`` from VS."""
        v = VS.decode(self.vs)
        return f"{v['MJR']}.{v['MNR']}" + (f".{v['TER']}" if v["TER"] else "")

    @property
    def cmb_size(self) -> int:
        """The CMB's size in bytes as CMBSZ reports it (0: no CMB, or registers not enabled)."""
        sz = CMBSZ.decode(self.cmbsz)
        return sz["SZ"] * size_unit(sz["SZU"])

    @property
    def cmb_offset(self) -> int:
        """Where the CMB starts in its BAR, in bytes (CMBLOC.OFST in SZU units)."""
        sz = CMBSZ.decode(self.cmbsz)
        return CMBLOC.field("OFST").get(self.cmbloc) * size_unit(sz["SZU"])

    @property
    def cmb_bar(self) -> int:
        """The BAR that holds the CMB (CMBLOC.BIR)."""
        return CMBLOC.field("BIR").get(self.cmbloc)

    @property
    def cmb_uses(self) -> list[str]:
        """What CMBSZ says the CMB may hold (``["submission queues", ...]``)."""
        return [label for name, label in CMB_USES if CMBSZ.field(name).get(self.cmbsz)]

    @property
    def mqes(self) -> int:
        """Maximum entries per queue (CAP.MQES is 0's based)."""
        return CAP.field("MQES").get(self.cap) + 1


def read_cmb_registers(window: RegisterWindow, *, allow_enable: bool = True) -> CmbRegisters:
    """Read CAP, VS and the CMB registers, enabling CMBMSC.CRE for the read where needed.

    A controller with CAP.CMBS set hides CMBLOC/CMBSZ until CMBMSC.CRE is 1.  If CRE is clear
    and the window may be written (and ``allow_enable``), CRE alone is set (CMSE stays clear, so
    the CMB's memory space is not enabled), the two registers are read, and CMBMSC is written back
    to the value it had, leaving the controller as it was found.
    """
    regs = CmbRegisters(
        cap=read64(window, CAP.offset),
        vs=window.read32(VS.offset),
        cmbloc=window.read32(CMBLOC.offset),
        cmbsz=window.read32(CMBSZ.offset),
        cmbmsc=read64(window, CMBMSC.offset),
        cmbsts=window.read32(CMBSTS.offset),
    )
    if not regs.responding:
        regs.notes.append("BAR0 reads all ones: memory decoding is off or the device is gone")
        return regs
    if not regs.cmbs:
        if regs.cmbsz:
            regs.notes.append("CAP.CMBS is 0: CMBLOC/CMBSZ are valid from reset (NVMe 1.3 style)")
        return regs
    cre = CMBMSC.field("CRE").get(regs.cmbmsc)
    if cre or regs.cmbsz:
        return regs
    if not (window.writable and allow_enable):
        regs.notes.append(
            "CAP.CMBS is 1 but CMBMSC.CRE is 0, so CMBLOC/CMBSZ read as zero; they were not "
            "enabled (read-only access)"
        )
        return regs
    original_lo = window.read32(CMBMSC.offset)
    window.write32(CMBMSC.offset, original_lo | 1 << CMBMSC.field("CRE").lo)
    try:
        regs.cmbloc = window.read32(CMBLOC.offset)
        regs.cmbsz = window.read32(CMBSZ.offset)
    finally:
        window.write32(CMBMSC.offset, original_lo)
    regs.enabled_cre = True
    regs.notes.append(
        "CMBMSC.CRE was 0: the doctor set it to read CMBLOC/CMBSZ, then restored CMBMSC"
    )
    return regs


def open_error_reason(exc: OSError, driver: str | None) -> str:
    """Explain why BAR0 could not be mapped, in terms a user can act on."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"mapping BAR0 needs root ({os.strerror(exc.errno)})"
    if exc.errno == errno.ENOENT:
        return "no resource0 file for this function"
    if exc.errno == errno.EINVAL and driver:
        return (
            f"the kernel refused to map BAR0 ({os.strerror(exc.errno)}): the {driver} driver has "
            "claimed it and the kernel enforces exclusive access (CONFIG_IO_STRICT_DEVMEM or "
            "iomem=strict); boot with iomem=relaxed, or unbind the controller or bind it to "
            "vfio-pci, to let the doctor read the CMB registers"
        )
    return f"BAR0 could not be mapped: {exc.strerror or exc}"
