"""An offload worker's side of an ``nvme_pci`` namespace: its own SSD queue pair and staging.

The control plane owns the VFIO container (so every IOMMU mapping), the admin queue and the
CMB allocator.  For each worker it creates one queue pair on the SSD and the worker's staging
memory, mapped for the SSD (DRAM: a memfd mapped with VFIO at an IOVA; CMB: a range of the
CMB), and sends the worker (:meth:`~nvmf.media.nvme_pci.NvmePciMedia.share_with`):

- a :class:`~nvmf.media.base.MediaHandle` whose ``extra`` is a :class:`WorkerQueue`;
- the VFIO device descriptor (the worker maps BAR0, for doorbells, and the CMB's BAR from it),
  the pair's memfd (its CQ, a DRAM SQ, its PRP lists) and, for DRAM staging, the staging memfd.

:func:`adopt_nvme_pci` maps them here (:meth:`~nvmf.pci.queue.QueuePair.attach`, the staging
memfd or the CMB range, at the IOVA the control plane mapped), so the worker's commands go to
the SSD with no system call and no copy, exactly as in the control plane.
"""

from __future__ import annotations

import contextlib
import mmap
from dataclasses import dataclass

from nvmf.media.base import MediaHandle, close_descriptors
from nvmf.memory.source import Region
from nvmf.pci.queue import QueueLayout, QueuePair
from nvmf.pci.vfio import map_region, region_info


@dataclass(frozen=True)
class WorkerQueue:
    """A worker's queue pair and staging memory, as plain numbers (``MediaHandle.extra``)."""

    bdf: str
    nsid: int
    layout: QueueLayout
    #: ``dram`` (then a memfd comes along) or ``cmb`` (``cmb_offset`` into the CMB).
    staging_placement: str
    staging_size: int
    staging_iova: int
    cmb_offset: int
    #: The most one SSD command moves (MDTS), in bytes.
    max_transfer: int


class _Fixed:
    """A :class:`~nvmf.memory.source.MemorySource` that hands out one region made already."""

    def __init__(self, region: Region) -> None:
        self.region = region
        self.placement = region.placement

    def map(self, size: int) -> Region:
        if size > self.region.size:
            raise MemoryError(f"{size} bytes asked of a {self.region.size}-byte staging region")
        return self.region


def attach_worker_queue(
    info: WorkerQueue, fds: list[int]
) -> tuple[QueuePair, Region, list[mmap.mmap]]:
    """Map what the control plane sent: ``fds`` are the device, the pair's memfd and, for
    DRAM staging, the staging memfd (all closed here once mapped, or on failure)."""
    maps: list[mmap.mmap] = []
    try:
        device_fd, queue_fd = fds[0], fds[1]
        pair = QueuePair.attach(info.layout, device_fd, queue_fd)
        try:
            if info.staging_placement == "dram":
                mapping = mmap.mmap(fds[2], info.staging_size, flags=mmap.MAP_SHARED)
                maps.append(mapping)
                region = Region(memoryview(mapping), "dram", iova=info.staging_iova, _map=mapping)
            else:
                layout = info.layout
                if layout.cmb_bar is None:
                    raise ValueError(f"{info.bdf}: CMB staging, but the layout names no CMB BAR")
                bar = map_region(device_fd, region_info(device_fd, layout.cmb_bar))
                maps.append(bar)
                start = layout.cmb_bar_offset + info.cmb_offset
                view = memoryview(bar)[start : start + info.staging_size]
                region = Region(view, "cmb", iova=info.staging_iova)
        except BaseException:
            pair.release()
            raise
    except BaseException:
        for m in maps:
            with contextlib.suppress(BufferError):
                m.close()
        raise
    finally:
        close_descriptors(fds)
    return pair, region, maps


def staging_source(region: Region) -> _Fixed:
    """The source a worker's staging pool is cut from: the region the control plane mapped."""
    return _Fixed(region)


def handle_info(handle: MediaHandle) -> WorkerQueue:
    """The :class:`WorkerQueue` a handle carries (``ValueError`` if it carries none)."""
    if not isinstance(handle.extra, WorkerQueue):
        raise ValueError("an nvme_pci handle must carry its worker's queue pair")
    return handle.extra
