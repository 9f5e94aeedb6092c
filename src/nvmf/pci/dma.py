"""DMA memory for the SSD: host memory mapped into the device's IOMMU domain at chosen IOVAs.

:class:`DmaSpace` hands out IOVAs from a :class:`~nvmf.pci.ranges.RangeAllocator` that keeps
away from every BAR of the device and from the IOMMU group's reserved windows, maps a
:class:`~nvmf.memory.source.Region` with ``VFIO_IOMMU_MAP_DMA`` and sets ``region.iova``: a
buffer at ``offset`` in the region is then at ``region.iova + offset`` for the SSD.  Regions are
mapped once, when a queue or a staging pool is made, never per I/O.

:class:`MemfdMemory` makes the DRAM regions the driver itself needs (queues, PRP lists, Identify
buffers) and keeps their ``memfd``: another process given the descriptor maps the same pages
(``mmap(fd, ...)``), which is how an offload worker will reach a queue pair's SQ and CQ.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from typing import Protocol

from nvmf.memory.source import Region
from nvmf.pci.ranges import RangeAllocator

#: IOVAs handed out start at 1 MiB (0 stays invalid, as a NULL PRP would be) ...
IOVA_START = 1 << 20
#: ... and stay below 2^39, the smallest address width Intel's and QEMU's IOMMUs offer.
IOVA_END = 1 << 39


class DmaMapper(Protocol):
    """What :class:`DmaSpace` needs of the device (a :class:`~nvmf.pci.vfio.VfioDevice`)."""

    def map_dma(self, vaddr: int, iova: int, size: int) -> None: ...

    def unmap_dma(self, iova: int, size: int) -> None: ...


def buffer_address(view: memoryview) -> int:
    """The virtual address of the first byte of a writable ``view``."""
    anchor = ctypes.c_char.from_buffer(view)
    try:
        return ctypes.addressof(anchor)
    finally:
        del anchor


class DmaSpace:
    """The IOVAs of one device's container, and the regions mapped there."""

    def __init__(self, mapper: DmaMapper, reserved: list[tuple[int, int]] | None = None) -> None:
        self.mapper = mapper
        self.iovas = RangeAllocator(IOVA_START, IOVA_END)
        for start, end in reserved or []:
            self.iovas.reserve(start, end)
        self._mapped: dict[int, tuple[Region, int, int]] = {}

    def map(self, region: Region) -> int:
        """Map ``region`` for the device (read and write) and set ``region.iova``; the IOVA."""
        if region.iova is not None:
            raise ValueError("region is already mapped for DMA")
        size = -(-region.size // mmap.PAGESIZE) * mmap.PAGESIZE
        iova = self.iovas.alloc(size)
        try:
            self.mapper.map_dma(buffer_address(region.view), iova, size)
        except BaseException:
            self.iovas.free(iova)
            raise
        region.iova = iova
        region.registrations["vfio"] = self
        self._mapped[id(region)] = (region, iova, size)
        return iova

    def unmap(self, region: Region) -> None:
        """Remove ``region``'s mapping (the device must no longer use it) and clear its IOVA."""
        entry = self._mapped.pop(id(region), None)
        if entry is None:
            return
        _, iova, size = entry
        try:
            self.mapper.unmap_dma(iova, size)
        finally:
            self.iovas.free(iova)
            region.iova = None
            region.registrations.pop("vfio", None)

    def close(self) -> None:
        """Unmap every region still mapped."""
        for region, _, _ in list(self._mapped.values()):
            self.unmap(region)


class MemfdMemory:
    """Page-aligned DRAM regions backed by ``memfd``s this object keeps open (see module doc)."""

    placement = "dram"

    def __init__(self, name: str = "nvmf-pci") -> None:
        self.name = name
        self._fds: dict[int, int] = {}

    def map(self, size: int) -> Region:
        """A zeroed region of ``size`` bytes (whole pages), its pages present now."""
        size = -(-size // mmap.PAGESIZE) * mmap.PAGESIZE
        fd = os.memfd_create(self.name, os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            os.posix_fallocate(fd, 0, size)
            mapping = mmap.mmap(fd, size, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0))
        except BaseException:
            os.close(fd)
            raise
        region = Region(memoryview(mapping), self.placement, _map=mapping)
        region.registrations["memfd"] = fd
        self._fds[id(region)] = fd
        return region

    def release(self, region: Region) -> None:
        """Unmap ``region`` and close its memfd."""
        fd = self._fds.pop(id(region), None)
        region.close()
        if fd is not None:
            os.close(fd)
            region.registrations.pop("memfd", None)

    @staticmethod
    def memfd(region: Region) -> int:
        """The memfd behind a region this source made (to send to another process)."""
        fd = region.registrations.get("memfd")
        if not isinstance(fd, int):
            raise ValueError("region has no memfd")
        return fd
