"""Where staging memory comes from: a :class:`MemorySource` maps a :class:`Region` once.

DESIGN.md ("Buffers"): a worker's staging pool is one region, mapped when the worker starts and
never per I/O, so that every consumer can register the whole of it once: io_uring as fixed
buffers (``index``), an RDMA device as a memory region (``lkey``/``rkey``), an SSD's IOMMU
mapping (``iova``).  A :class:`~nvmf.memory.staging.StagingBuffer` is a piece of a region and
reads those keys from it.

Sources:

- :class:`DramSource` (``placement`` ``dram``): a ``memfd`` allocated in full and mapped shared
  and populated, so the pages exist from the start (no fault, no SIGBUS, no OOM in the I/O
  path); a pool too large for the machine fails when it is made, with a message.
- The SSD's Controller Memory Buffer (``placement`` ``cmb``), mapped from its BAR by ``pci/``,
  is the other source DESIGN.md names (the VFIO issue).
"""

from __future__ import annotations

import errno
import mmap
import os
from dataclasses import dataclass, field
from typing import Any, Protocol

_MAP_POPULATE: int = getattr(mmap, "MAP_POPULATE", 0)


@dataclass(eq=False)
class Region:
    """One mapped, page-aligned, contiguous piece of memory and what consumers registered of it.

    The registration fields stay None until a consumer that needs one registers the region
    (once, at worker start); a buffer at ``offset`` in the region then uses ``lkey``/``rkey``
    as they are and ``iova + offset`` as its DMA address."""

    view: memoryview
    placement: str
    #: io_uring fixed-buffer index of the whole region.
    index: int | None = None
    #: DMA address of the region's first byte in the SSD's IOMMU domain.
    iova: int | None = None
    #: RDMA memory region keys.
    lkey: int | None = None
    rkey: int | None = None
    #: What consumers hold to keep their registration (the verbs MR, the DMA mapping), by name.
    registrations: dict[str, Any] = field(default_factory=dict)
    _map: mmap.mmap | None = None

    @property
    def size(self) -> int:
        return len(self.view)

    def close(self) -> None:
        """Unmap; buffers of the region must no longer be in use."""
        if self._map is not None:
            self.view.release()
            self._map.close()
            self._map = None


class MemorySource(Protocol):
    """Maps regions of one kind of memory."""

    #: ``dram`` (the host's memory) or ``cmb`` (an SSD's Controller Memory Buffer).
    placement: str

    def map(self, size: int) -> Region:
        """A region of at least ``size`` bytes (whole pages), every page present now; raises
        ``MemoryError`` naming the size when the memory is not there."""
        ...


class DramSource:
    """Host memory from a ``memfd``: shareable, populated at map time."""

    placement = "dram"

    def map(self, size: int) -> Region:
        size = -(-size // mmap.PAGESIZE) * mmap.PAGESIZE
        fd = os.memfd_create("nvmf-staging", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            os.posix_fallocate(fd, 0, size)
            mapping = mmap.mmap(fd, size, flags=mmap.MAP_SHARED | _MAP_POPULATE)
        except OSError as exc:
            if exc.errno in (errno.ENOMEM, errno.ENOSPC):
                raise MemoryError(
                    f"cannot allocate {size} bytes of staging memory: {exc.strerror}"
                ) from exc
            raise
        finally:
            # The mapping holds the pages; nothing maps them elsewhere yet (a consumer that
            # must, such as a vhost-style peer, would keep the descriptor instead).
            os.close(fd)
        return Region(memoryview(mapping), self.placement, _map=mapping)
