"""``null`` media: writes vanish, reads return zeroes (the kernel's ``null_blk``).

It measures the fabric and the data path without a medium behind them.  It also owns the two
helpers every media type shares, because they are the null device's whole behaviour: checking that
a byte range lies inside the namespace, and filling a buffer with zeroes without allocating.
"""

from __future__ import annotations

import mmap

from nvmf.media.base import MediaHandle
from nvmf.media.queue import MediaQueue, SyncQueue

#: Bytes of the shared zero source: large enough that zeroing a typical transfer is one copy.
ZERO_CHUNK = 1 << 20

# A read-only private anonymous mapping maps the kernel's zero page on access, so this costs no
# memory; it is page aligned, so O_DIRECT writes may use it as their source.
_ZERO_MAP = mmap.mmap(-1, ZERO_CHUNK, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
#: ``ZERO_CHUNK`` zero bytes, page aligned and read-only.
ZEROES = memoryview(_ZERO_MAP)


def zero_memory(size: int) -> memoryview | None:
    """``size`` bytes that read as zeroes and cost no memory, read-only: a private anonymous
    mapping that the kernel backs with its zero page on each read (its huge zero page where
    transparent huge pages allow, so the page tables stay small too).  A null namespace's
    Reads are sent straight from it, as ``null_blk`` completes a read without touching the
    data.  None if the address space cannot take the mapping: Reads then zero a staging
    buffer."""
    try:
        zeroes = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
    except (OSError, OverflowError, ValueError):
        return None
    try:
        zeroes.madvise(mmap.MADV_HUGEPAGE)
    except (AttributeError, OSError):
        pass  # no THP here: 4 KiB zero pages, one page-table entry each once read
    return memoryview(zeroes)


def check_range(size: int, offset: int, length: int) -> None:
    """Reject a byte range outside ``[0, size)``.

    The I/O handler range-checks LBAs before a media call, so a bad range here is a bug in the
    caller; raising ``ValueError`` keeps it from silently truncating or touching another byte.
    """
    if offset < 0 or length < 0 or offset + length > size:
        raise ValueError(f"range {offset}+{length} outside the media's {size} bytes")


def check_geometry(size: int, block_size: int) -> None:
    """Reject a block size that is no power of two >= 512, or a size that is no block multiple."""
    if block_size < 512 or block_size & (block_size - 1):
        raise ValueError(f"block size {block_size} is not a power of two >= 512")
    if size <= 0 or size % block_size:
        raise ValueError(f"size {size} is not a positive multiple of the block size {block_size}")


def zero_fill(buf: memoryview) -> None:
    """Set every byte of ``buf`` to zero, copying from :data:`ZEROES` (no allocation)."""
    done = 0
    total = len(buf)
    while done < total:
        n = min(ZERO_CHUNK, total - done)
        buf[done : done + n] = ZEROES[:n]
        done += n


class NullMedia:
    """A namespace of ``size`` bytes that stores nothing.

    Reads zero the caller's buffer, every other operation only checks its range.  There is no
    cache to flush, so ``volatile_write_cache`` is False.
    """

    kind = "null"

    def __init__(self, size: int, block_size: int = 512) -> None:
        check_geometry(size, block_size)
        self.size = size
        self.block_size = block_size
        self.volatile_write_cache = False
        self._zeroes: memoryview | None = None

    def read_into(self, offset: int, buf: memoryview) -> None:
        """Zero ``buf``: nothing was ever stored."""
        check_range(self.size, offset, len(buf))
        zero_fill(buf)

    def write_from(self, offset: int, buf: memoryview) -> None:
        """Discard ``buf``."""
        check_range(self.size, offset, len(buf))

    def open_queue(self) -> MediaQueue:
        """Every I/O completes at once; Reads are served in place from :func:`zero_memory`."""
        queue = SyncQueue(self)
        if self._zeroes is None:
            self._zeroes = zero_memory(self.size)
        queue.memory = self._zeroes
        return queue

    async def read(self, offset: int, buf: memoryview) -> None:
        """Zero ``buf``: nothing was ever stored."""
        self.read_into(offset, buf)

    async def write(self, offset: int, buf: memoryview, fua: bool = False) -> None:
        """Discard ``buf``."""
        self.write_from(offset, buf)

    async def flush(self) -> None:
        """Nothing to make durable."""

    async def write_zeroes(self, offset: int, length: int) -> None:
        """The range already reads as zeroes."""
        check_range(self.size, offset, length)

    async def deallocate(self, offset: int, length: int) -> None:
        """The range already reads as zeroes."""
        check_range(self.size, offset, length)

    def share(self) -> tuple[MediaHandle, int | None]:
        """A null medium is its geometry: nothing to send along."""
        return MediaHandle(self.kind, self.size, self.block_size, False), None

    def close(self) -> None:
        """Nothing to release."""
