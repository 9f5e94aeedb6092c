"""``ram`` media: a namespace held in an anonymous memory mapping.

The mapping is ``MAP_SHARED`` anonymous memory (shmem): the kernel zero-fills each page on its
first touch, so a 1 GiB namespace costs nothing until it is written, and data-plane worker
processes forked after it was opened see (and write) the same bytes.  Reads and writes are one
``memcpy`` between the mapping and the request's staging buffer through memoryviews (no bytes
object in between); they run inline on the event loop, because a copy of a transfer is cheaper
than a hop to a thread.

Deallocate and Write Zeroes give whole pages back with ``madvise(MADV_REMOVE)`` (the shmem
equivalent of punching a hole: the pages are freed and read as zeroes again) and zero the partial
pages at either edge by copying zeroes.  ``MADV_DONTNEED`` would not do: on a shared mapping it
only drops this process's page table entries and the old data comes back on the next access.

Nothing here survives the process, and there is no cache between the host and the bytes, so Flush
is a no-op and ``volatile_write_cache`` is False.
"""

from __future__ import annotations

import mmap

from nvmf.media.null import check_geometry, check_range, zero_fill


class RamMedia:
    """A RAM namespace of ``size`` bytes, allocated page by page as it is written."""

    kind = "ram"

    def __init__(self, size: int, block_size: int = 512) -> None:
        check_geometry(size, block_size)
        self.size = size
        self.block_size = block_size
        self.volatile_write_cache = False
        self._map = mmap.mmap(-1, size, flags=mmap.MAP_SHARED)
        self._view = memoryview(self._map)

    async def read(self, offset: int, buf: memoryview) -> None:
        """Copy the bytes at ``offset`` into ``buf``; never-written pages read as zeroes."""
        check_range(self.size, offset, len(buf))
        buf[:] = self._view[offset : offset + len(buf)]

    async def write(self, offset: int, buf: memoryview, fua: bool = False) -> None:
        """Copy ``buf`` into the namespace; it is as durable as it will ever be, ``fua`` or not."""
        check_range(self.size, offset, len(buf))
        self._view[offset : offset + len(buf)] = buf

    async def flush(self) -> None:
        """Nothing to do: there is no volatile cache in front of RAM."""

    async def write_zeroes(self, offset: int, length: int) -> None:
        """Zero the range, giving its whole pages back to the kernel."""
        check_range(self.size, offset, length)
        self._zero(offset, length)

    async def deallocate(self, offset: int, length: int) -> None:
        """Release the range's whole pages; the range reads as zeroes afterwards."""
        check_range(self.size, offset, length)
        self._zero(offset, length)

    def close(self) -> None:
        """Unmap the namespace; its contents are gone."""
        self._view.release()
        self._map.close()

    def _zero(self, offset: int, length: int) -> None:
        """Zero a range: ``MADV_REMOVE`` its whole pages, copy zeroes to its partial edge pages."""
        end = offset + length
        page = mmap.PAGESIZE
        first = -(-offset // page) * page  # first page boundary at or after offset
        last = end // page * page  # last page boundary at or before end
        if last <= first:
            zero_fill(self._view[offset:end])
            return
        zero_fill(self._view[offset:first])
        zero_fill(self._view[last:end])
        try:
            self._map.madvise(mmap.MADV_REMOVE, first, last - first)
        except OSError:
            # A kernel without shmem hole punching: zero by copying, the result is the same.
            zero_fill(self._view[first:last])
