"""``ram`` media: a namespace held in a memfd that every process of the target maps.

The memory is a ``memfd`` (shmem) allocated in full when the namespace opens
(``posix_fallocate``), so a namespace larger than the machine can hold fails at start with a
message, never with SIGBUS or the OOM killer in the middle of a write; it is checked against
``MemAvailable`` first, because shmem allocation itself only fails once memory is gone.  The
offload workers are spawned, not forked: each receives the memfd over a Unix socket
(:meth:`RamMedia.share`, :meth:`RamMedia.adopt`) and maps the same pages.  Reads and writes are one
``memcpy`` between the mapping and the request's staging buffer through memoryviews (no bytes
object in between); they run inline on the event loop, because a copy of a transfer is cheaper
than a hop to a thread.  The pipeline's fast path does better still: :attr:`RamQueue.memory` lets
the fabric send a Read's payload straight from the mapping and receive a Write's (by R2T)
straight into it, with no staging buffer and no copy in user space.  A Write whose data transfer
fails part way (a digest error, a dropped connection) may then have changed part of its range:
the spec leaves a failed Write's blocks indeterminate, and nothing acknowledged is touched.

Deallocate and Write Zeroes give whole pages back with ``madvise(MADV_REMOVE)`` (the shmem
equivalent of punching a hole: the pages are freed and read as zeroes again) and zero the partial
pages at either edge by copying zeroes.  ``MADV_DONTNEED`` would not do: on a shared mapping it
only drops this process's page table entries and the old data comes back on the next access.

Nothing here survives the process, and there is no cache between the host and the bytes, so Flush
is a no-op and ``volatile_write_cache`` is False.
"""

from __future__ import annotations

import errno
import mmap
import os

from nvmf.media.base import MediaError, MediaHandle
from nvmf.media.null import check_geometry, check_range, zero_fill
from nvmf.media.queue import READ, WRITE, MediaQueue
from nvmf.memory.staging import StagingPool
from nvmf.wire.status import SUCCESS, Status

_MAP_POPULATE: int = getattr(mmap, "MAP_POPULATE", 0)


def mem_available() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes (None where the kernel does not say)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _allocate(size: int) -> int:
    """A memfd of ``size`` bytes, every page allocated; MediaError when memory is short."""
    avail = mem_available()
    if avail is not None and size > avail:
        raise MediaError(
            errno.ENOMEM,
            f"a {size}-byte RAM namespace does not fit in the {avail} bytes of memory available",
        )
    fd = os.memfd_create("nvmf-ram", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, size)
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        os.close(fd)
        raise MediaError(
            exc.errno, f"cannot allocate {size} bytes for a RAM namespace: {exc.strerror}"
        ) from exc
    return fd


class RamMedia:
    """A RAM namespace of ``size`` bytes, allocated page by page as it is written."""

    kind = "ram"

    def __init__(self, size: int, block_size: int = 512, fd: int | None = None) -> None:
        check_geometry(size, block_size)
        self.size = size
        self.block_size = block_size
        self.volatile_write_cache = False
        self._fd = _allocate(size) if fd is None else fd
        try:
            # MAP_POPULATE: this process's page tables are filled now, not by a minor fault on
            # the first touch of each page in the I/O path (a random read workload would take
            # one per 4 KiB page until the whole namespace had been read once).
            self._map = mmap.mmap(self._fd, size, flags=mmap.MAP_SHARED | _MAP_POPULATE)
        except OSError:
            os.close(self._fd)
            raise
        self._view = memoryview(self._map)

    def allocated(self) -> int:
        """Bytes of memory the namespace holds now: all of it from the start, less the pages
        Deallocate and Write Zeroes gave back."""
        return os.fstat(self._fd).st_blocks * 512

    def share(self) -> tuple[MediaHandle, int | None]:
        """The geometry, and the memfd a worker maps to see the same bytes."""
        return MediaHandle(self.kind, self.size, self.block_size, False), self._fd

    @classmethod
    def adopt(cls, handle: MediaHandle, fd: int) -> RamMedia:
        """Map a namespace another process allocated (its memfd ``fd``, now owned here)."""
        return cls(handle.size, handle.block_size, fd=fd)

    def read_into(self, offset: int, buf: memoryview) -> None:
        """Copy the bytes at ``offset`` into ``buf``; never-written pages read as zeroes."""
        check_range(self.size, offset, len(buf))
        buf[:] = self._view[offset : offset + len(buf)]

    def write_from(self, offset: int, buf: memoryview) -> None:
        """Copy ``buf`` into the namespace; it is as durable as it will ever be."""
        check_range(self.size, offset, len(buf))
        self._view[offset : offset + len(buf)] = buf

    def open_queue(self) -> MediaQueue:
        """Reads and writes are copies: every I/O completes at once."""
        return RamQueue(self._view, self.size)

    async def read(self, offset: int, buf: memoryview) -> None:
        """Copy the bytes at ``offset`` into ``buf``; never-written pages read as zeroes."""
        self.read_into(offset, buf)

    async def write(self, offset: int, buf: memoryview, fua: bool = False) -> None:
        """Copy ``buf`` into the namespace; it is as durable as it will ever be, ``fua`` or not."""
        self.write_from(offset, buf)

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
        """Unmap the namespace; its contents are gone once every process has closed it."""
        if self._fd < 0:
            return
        try:
            self._view.release()
            self._map.close()
        except BufferError:
            # A Read's payload is still queued on a socket as a view of the mapping (served
            # in place, MediaQueue.memory): the mapping goes when the last such view does.
            pass
        os.close(self._fd)
        self._fd = -1

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


class RamQueue:
    """A RAM namespace's :class:`~nvmf.media.queue.MediaQueue`: one copy, done at once (the
    range check inline: this is the whole I/O path of a RAM read or write that the pipeline
    does not serve in place through :attr:`memory`)."""

    __slots__ = ("_size", "_view", "memory")
    #: Commands use their fabric queue's staging pool.
    pool: StagingPool | None = None

    def __init__(self, view: memoryview, size: int) -> None:
        self._view = view
        self._size = size
        self.memory: memoryview | None = view

    def submit(
        self, op: int, offset: int, buf: memoryview | None, fua: bool, done: object, tag: object
    ) -> Status | None:
        if buf is not None:
            end = offset + len(buf)
            if offset < 0 or end > self._size:
                raise ValueError(f"range {offset}+{len(buf)} outside the {self._size}-byte medium")
            if op == READ:
                buf[:] = self._view[offset:end]
            elif op == WRITE:
                self._view[offset:end] = buf
        return SUCCESS  # Flush: no cache in front of memory
