"""The Controller Memory Buffer: what CMBSZ allows in it, and regions cut from it.

NVMe Base 2.0 §8.2.1 "Controller Memory Buffer": a controller with CAP.CMBS reports CMBLOC and
CMBSZ once the host sets CMBMSC.CRE, and decodes host accesses to the CMB (and takes addresses in
commands as CMB addresses) once the host sets CMBMSC.CMSE with CMBMSC.CBA, the address the host
uses for the CMB (for PCIe, where its BAR is: "the controller base address ... is the address of
the CMB in the PCI address space").  QEMU 7.2 (``nvme_addr_is_cmb``) compares every queue and
data address with CBA, so CBA must be the BAR's bus address plus CMBLOC.OFST.

CMBSZ says what the CMB may hold: SQS (submission queues), CQS (completion queues), LISTS (PRP
and SGL lists), RDS (data of commands that transfer to the host, Read), WDS (data of commands
that transfer to the controller, Write).  :meth:`CmbInfo.require` turns a placement the
controller does not allow into an error naming the bit.

:class:`CmbSource` is a :class:`~nvmf.memory.source.MemorySource` with ``placement`` ``cmb``:
each region is a slice of the CMB's mapping, with ``iova`` the CMB address of its first byte.
The source allocates, it does not map: the CMB is mapped once, by the controller.
"""

from __future__ import annotations

from dataclasses import dataclass

from nvmf.memory.source import Region
from nvmf.pci.ranges import RangeAllocator
from nvmf.pci.registers import CMBLOC, CMBSZ, size_unit


class CmbPlacementError(ValueError):
    """The controller's CMB does not allow what was asked of it."""


#: What each use needs, by CMBSZ bit, with the words of the error message.
_USES = {
    "sq": ("SQS", "SQs"),
    "cq": ("CQS", "CQs"),
    "lists": ("LISTS", "PRP lists"),
    "read": ("RDS", "read data"),
    "write": ("WDS", "write data"),
}


@dataclass(frozen=True)
class CmbInfo:
    """CMBLOC and CMBSZ decoded."""

    cmbloc: int
    cmbsz: int

    def allows(self, use: str) -> bool:
        """Whether CMBSZ allows ``use`` (``sq``, ``cq``, ``lists``, ``read``, ``write``)."""
        return bool(CMBSZ.field(_USES[use][0]).get(self.cmbsz))

    def require(self, use: str) -> None:
        """Raise :class:`CmbPlacementError` naming the CMBSZ bit ``use`` needs, if clear."""
        if not self.size:
            raise CmbPlacementError(f"{_USES[use][1]} in the CMB need a CMB (CMBSZ.SZ is 0)")
        bit, words = _USES[use]
        if not self.allows(use):
            raise CmbPlacementError(f"{words} in the CMB need CMBSZ.{bit}")

    @property
    def size(self) -> int:
        """Bytes of CMB (SZ in SZU units)."""
        return CMBSZ.field("SZ").get(self.cmbsz) * size_unit(CMBSZ.field("SZU").get(self.cmbsz))

    @property
    def bar(self) -> int:
        """CMBLOC.BIR: the BAR the CMB is in."""
        return CMBLOC.field("BIR").get(self.cmbloc)

    @property
    def offset(self) -> int:
        """Where the CMB starts in its BAR (CMBLOC.OFST in SZU units)."""
        return CMBLOC.field("OFST").get(self.cmbloc) * size_unit(CMBSZ.field("SZU").get(self.cmbsz))


class CmbSource:
    """Regions of an already mapped CMB (see the module doc)."""

    placement = "cmb"

    def __init__(self, view: memoryview, address: int, info: CmbInfo, align: int = 4096) -> None:
        """``view``: the whole CMB, mapped; ``address``: its CMB address (CBA) for the SSD."""
        self.view = view
        self.address = address
        self.info = info
        self.space = RangeAllocator(0, len(view), align)

    def map(self, size: int) -> Region:
        """A region of ``size`` bytes (whole pages) of CMB; ``MemoryError`` when it is full."""
        try:
            start = self.space.alloc(size)
        except MemoryError as exc:
            raise MemoryError(
                f"cannot allocate {size} bytes of CMB ({self.space.in_use} of "
                f"{len(self.view)} in use)"
            ) from exc
        length = -(-size // self.space.align) * self.space.align
        region = Region(
            self.view[start : start + length], self.placement, iova=self.address + start
        )
        region.registrations["cmb_offset"] = start
        return region

    def offset_of(self, region: Region) -> int:
        """Where ``region`` starts in the CMB."""
        return int(region.registrations["cmb_offset"])

    def release(self, region: Region) -> None:
        """Give the region's CMB back (nothing may use it any more)."""
        start = region.registrations.pop("cmb_offset", None)
        if start is not None:
            region.view.release()
            self.space.free(start)
