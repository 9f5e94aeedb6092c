"""Reading the NVMe registers in BAR0 that tell whether, where and how big a CMB is.

The register tables (CAP, VS, CMBLOC, CMBSZ, CMBMSC, CMBSTS) live in :mod:`nvmf.pci.registers`;
this module maps BAR0 through sysfs and reads them for ``nvmf doctor``.

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

from nvmf.pci.registers import (
    CAP,
    CMB_USES,
    CMBLOC,
    CMBMSC,
    CMBSTS,
    CMBSZ,
    VS,
    RegisterWindow,
    read64,
    size_unit,
)


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
