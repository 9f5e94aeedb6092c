"""A first-fit allocator of aligned address ranges: IOVAs for DMA, offsets in the CMB.

Allocation happens when a controller, a queue or a staging pool is set up, never per I/O, so a
sorted list of free ranges is enough.  Reserved ranges (the BARs' bus addresses, the IOMMU's MSI
window) are taken out before anything is allocated: an IOVA there would make the SSD's DMA hit a
BAR (QEMU's controller would even take it for its own CMB).
"""

from __future__ import annotations


class RangeAllocator:
    """Ranges of ``[start, end)``, each aligned to ``align`` bytes (a power of two)."""

    def __init__(self, start: int, end: int, align: int = 4096) -> None:
        if align & (align - 1):
            raise ValueError(f"alignment {align} is not a power of two")
        self.align = align
        self._free: list[tuple[int, int]] = [(start, end)] if end > start else []
        self._used: dict[int, int] = {}

    def reserve(self, start: int, end: int) -> None:
        """Take ``[start, end)`` out of the free ranges (whatever of it is free)."""
        pieces: list[tuple[int, int]] = []
        for lo, hi in self._free:
            if hi <= start or lo >= end:
                pieces.append((lo, hi))
                continue
            if lo < start:
                pieces.append((lo, start))
            if hi > end:
                pieces.append((end, hi))
        self._free = pieces

    def alloc(self, size: int) -> int:
        """The start of a free, aligned range of ``size`` bytes (rounded up to the alignment)."""
        if size <= 0:
            raise ValueError(f"cannot allocate {size} bytes")
        size = -(-size // self.align) * self.align
        for i, (lo, hi) in enumerate(self._free):
            first = -(-lo // self.align) * self.align
            if first + size <= hi:
                replacement = []
                if lo < first:
                    replacement.append((lo, first))
                if first + size < hi:
                    replacement.append((first + size, hi))
                self._free[i : i + 1] = replacement
                self._used[first] = size
                return first
        raise MemoryError(f"no free range of {size} bytes left")

    def free(self, start: int) -> None:
        """Give back the range that :meth:`alloc` returned as ``start``."""
        size = self._used.pop(start)
        self._free.append((start, start + size))
        self._free.sort()
        merged: list[tuple[int, int]] = []
        for lo, hi in self._free:
            if merged and merged[-1][1] == lo:
                merged[-1] = (merged[-1][0], hi)
            else:
                merged.append((lo, hi))
        self._free = merged

    @property
    def in_use(self) -> int:
        """Bytes currently allocated."""
        return sum(self._used.values())
