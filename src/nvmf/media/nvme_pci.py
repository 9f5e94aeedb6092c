"""``nvme_pci`` media: a namespace served from a PCIe NVMe SSD through the userspace driver.

Configuration (docs/nvme-pci-media.md): ``device.path`` is the controller's PCI address
(``0000:00:04.0``, bound to ``vfio-pci``) and the namespace's ``"nvmf"`` group says
``"kind": "nvme_pci"``, ``"sq_placement"`` and ``"staging_placement"`` (``dram`` or ``cmb``).

Opening the medium (at target start) opens the controller (:class:`~nvmf.pci.controller.
NvmeController`), takes the SSD's namespace 1 as this namespace (its size and block size), and
makes this process's queue on it: one SQ/CQ pair with the SQ where ``sq_placement`` says, and a
staging pool the SSD can reach where ``staging_placement`` says (DRAM mapped for DMA with VFIO,
or a range of the CMB).  A placement the controller does not allow fails here, naming the
CMBSZ bit.  Commands on this namespace take their staging buffers from that pool
(:attr:`NvmePciQueue.pool`), so PRPs point at the very bytes the fabric moved: no bounce copy.

The log says at start which placement the queue got and why.  Offload workers cannot serve
this medium yet (:meth:`NvmePciMedia.share` refuses; :meth:`NvmePciMedia.serving_problem` says
so at start): nvme_pci namespaces run with ``--workers 0``.

Registration: importing this module registers the kind with the media factory; the factory
imports it by module path the first time a configuration names ``nvme_pci``, so the core never
names it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Collection
from typing import Protocol, cast

from nvmf.media.base import MediaError, MediaHandle, medium_result
from nvmf.media.factory import Namespace, register_media_kind
from nvmf.media.nvme_pci_queue import NvmePciQueue
from nvmf.media.queue import FLUSH, READ, WRITE, MediaQueue
from nvmf.memory.source import Region
from nvmf.memory.staging import StagingPool
from nvmf.pci.cmb import CmbInfo, CmbPlacementError, CmbSource
from nvmf.pci.controller import ControllerError, NvmeController
from nvmf.pci.dma import MemfdMemory
from nvmf.platform.pci import BDF_RE
from nvmf.wire.status import Status

log = logging.getLogger(__name__)

KIND = "nvme_pci"
PLACEMENTS = ("dram", "cmb")
#: The SSD namespace served (one namespace per controller for now).
SSD_NSID = 1
#: Entries of the SSD queue pair (less when CAP.MQES is smaller); with one PRP list page per
#: entry, 64 keep a CMB pair small enough for several data-plane processes.
QUEUE_DEPTH = 64
#: Staging memory of one queue pair: four of the target's largest (1 MiB) transfers at once.
STAGING_BYTES = 4 << 20


_BITS = {"sq": "SQS", "read": "RDS", "write": "WDS"}


class CmbHolder(Protocol):
    """What :func:`placement_reason` reads of a controller (``NvmeController`` has it)."""

    bdf: str
    cmb_info: CmbInfo | None
    cmb: CmbSource | None


class PciSettings(Protocol):
    """What this medium reads of a namespace's ``"nvmf"`` group (``NamespaceMedia``)."""

    @property
    def size(self) -> int | None: ...
    @property
    def sq_placement(self) -> str: ...
    @property
    def staging_placement(self) -> str: ...


def check_bdf(path: str) -> None:
    """``ValueError`` unless ``path`` looks like a PCI address ``DDDD:BB:DD.F``."""
    if not BDF_RE.match(path):
        raise ValueError(f"{path!r} is not a PCI address like 0000:00:04.0 (DDDD:BB:DD.F)")


def placement_reason(ctrl: CmbHolder, placement: str, uses: tuple[str, ...]) -> str:
    """Why ``placement`` is allowed for ``uses`` (``sq``, ``read``, ``write``), in words for the
    start log; :class:`CmbPlacementError` naming the CMBSZ bit when the controller's CMB does
    not allow it (or naming CAP.CMBS / CMBSZ.SZ when there is no CMB)."""
    if placement == "dram":
        return "configured dram"
    info = ctrl.cmb_info
    if info is None or ctrl.cmb is None:
        raise CmbPlacementError(
            f"{ctrl.bdf} has no CMB (CAP.CMBS clear or CMBSZ.SZ 0): cmb placement impossible"
        )
    for use in uses:
        info.require(use)
    return "configured cmb, " + " and ".join(f"CMBSZ.{_BITS[u]} set" for u in uses)


def serving_problem(
    bdf: str, staging_placement: str, workers: int, trtypes: Collection[str]
) -> str | None:
    """Why an ``nvme_pci`` namespace on ``bdf`` cannot be served with ``workers`` offload
    workers behind ports of ``trtypes``; None when it can."""
    if workers > 0:
        return (
            f"nvme_pci namespaces run with --workers 0 for now ({bdf}: each worker would need "
            "its own SSD queue pair, which is not implemented yet)"
        )
    if staging_placement == "cmb" and "rdma" in trtypes:
        return (
            f"staging_placement cmb on {bdf} cannot be served over rdma: the NIC would have to "
            "reach the CMB (PCI peer-to-peer DMA, or registering a BAR mapping as a memory "
            "region), which Soft-RoCE cannot do (nvmf doctor: P2PDMA); use staging_placement "
            "dram"
        )
    return None


class _CmbStaging:
    """A :class:`~nvmf.memory.source.MemorySource` of CMB ranges for Read and Write data."""

    placement = "cmb"

    def __init__(self, ctrl: NvmeController) -> None:
        self.ctrl = ctrl

    def map(self, size: int) -> Region:
        return self.ctrl.map_cmb(size, uses=("read", "write"))


class NvmePciMedia:
    """One namespace on a PCIe NVMe SSD driven from this process (see the module doc)."""

    kind = KIND

    def __init__(
        self,
        bdf: str,
        *,
        sq_placement: str = "dram",
        staging_placement: str = "dram",
        size: int | None = None,
        depth: int = QUEUE_DEPTH,
        staging_bytes: int = STAGING_BYTES,
    ) -> None:
        check_bdf(bdf)
        for field, value in (
            ("sq_placement", sq_placement),
            ("staging_placement", staging_placement),
        ):
            if value not in PLACEMENTS:
                raise ValueError(f"{field} {value!r}: dram or cmb")
        self.bdf = bdf
        self.sq_placement = sq_placement
        self.staging_placement = staging_placement
        self._pool: StagingPool | None = None
        self._queue: NvmePciQueue | None = None
        self._dram = MemfdMemory(f"nvmf-staging-{bdf}")
        self.ctrl = NvmeController(bdf)
        try:
            self._open(size, depth, staging_bytes)
        except BaseException:
            self.close()
            raise

    def _open(self, size: int | None, depth: int, staging_bytes: int) -> None:
        ctrl = self.ctrl
        ns = ctrl.namespace(SSD_NSID)
        self.block_size = ns.lba_size
        if size is not None and size > ns.size:
            raise ValueError(f"size {size} is more than the SSD namespace's {ns.size} bytes")
        self.size = size - size % ns.lba_size if size else ns.size
        self.volatile_write_cache = bool(ctrl.identify.vwc & 1)
        self.sq_reason = placement_reason(ctrl, self.sq_placement, ("sq",))
        self.staging_reason = placement_reason(ctrl, self.staging_placement, ("read", "write"))
        pair = ctrl.create_io_queue_pair(
            min(depth, ctrl.mqes), self.sq_placement, lba_size=ns.lba_size
        )
        if self.staging_placement == "cmb":
            self._pool = StagingPool(staging_bytes, _CmbStaging(ctrl))
        else:
            self._pool = StagingPool(staging_bytes, self._dram)
            ctrl.map_dma(self._pool.region)
        max_transfer = min(ctrl.max_transfer or self._pool.max_buffer, self._pool.max_buffer)
        self._queue = NvmePciQueue(
            pair,
            self._pool,
            nsid=SSD_NSID,
            lba_size=ns.lba_size,
            size=self.size,
            max_transfer=max_transfer,
        )
        cmb = ctrl.cmb
        cmb_info = ctrl.cmb_info
        log.info(
            "%s: CMB %s",
            self.bdf,
            f"of {cmb_info.size} bytes at {cmb.address:#x}"
            if cmb is not None and cmb_info is not None
            else "absent",
        )
        log.info(
            "namespace on %s (SSD namespace %d, %d bytes of %d-byte blocks): SQ %d at %#x in %s "
            "(%s), staging %d bytes at %#x in %s (%s)",
            self.bdf,
            SSD_NSID,
            self.size,
            self.block_size,
            pair.qid,
            pair.layout.sq.iova,
            self.sq_placement.upper(),
            self.sq_reason,
            self._pool.budget,
            self._pool.region.iova or 0,
            self.staging_placement.upper(),
            self.staging_reason,
        )

    def serving_problem(self, workers: int, trtypes: Collection[str]) -> str | None:
        """:class:`~nvmf.media.base.ServingCheck`: see :func:`serving_problem`."""
        return serving_problem(self.bdf, self.staging_placement, workers, trtypes)

    # -- the media contract --------------------------------------------------------------------

    @property
    def pool(self) -> StagingPool:
        assert self._pool is not None
        return self._pool

    def open_queue(self) -> MediaQueue:
        """This process's queue pair on the SSD (made at open: there is one per process)."""
        assert self._queue is not None
        return self._queue

    def share(self) -> tuple[MediaHandle, int | None]:
        raise ValueError("nvme_pci namespaces run with --workers 0 for now")

    async def _io(self, op: int, offset: int, buf: memoryview | None, fua: bool = False) -> None:
        """One operation through the queue, awaited (the non-fast-path media calls)."""
        assert self._queue is not None
        fut: asyncio.Future[Status] = asyncio.get_running_loop().create_future()

        def done(_tag: object, status: Status) -> None:
            if not fut.done():
                fut.set_result(status)

        self._queue.submit(op, offset, buf, fua, done, None)
        status = await medium_result(fut)
        if not status.ok:
            raise MediaError(errno.EIO, f"{self.bdf}: {status}")

    async def read(self, offset: int, buf: memoryview) -> None:
        """Read into any buffer: through a staging buffer of this medium's pool, copied (Compare
        and other commands off the fast path; Read itself uses the queue with no copy)."""
        step = self.pool.max_buffer
        for at in range(0, len(buf), step):
            n = min(step, len(buf) - at)
            staging = await self.pool.acquire(n)
            try:
                await self._io(READ, offset + at, staging.view)
                buf[at : at + n] = staging.view
            finally:
                staging.release()

    async def write(self, offset: int, buf: memoryview, fua: bool = False) -> None:
        step = self.pool.max_buffer
        for at in range(0, len(buf), step):
            n = min(step, len(buf) - at)
            staging = await self.pool.acquire(n)
            try:
                staging.view[:] = buf[at : at + n]
                await self._io(WRITE, offset + at, staging.view, fua)
            finally:
                staging.release()

    async def flush(self) -> None:
        await self._io(FLUSH, 0, None)

    async def write_zeroes(self, offset: int, length: int) -> None:
        """Zeroes written through staging buffers (no Write Zeroes command on the driver yet)."""
        step = self.pool.max_buffer
        for at in range(0, length, step):
            n = min(step, length - at)
            staging = await self.pool.acquire(n)
            try:
                staging.view[:] = bytes(n)
                await self._io(WRITE, offset + at, staging.view)
            finally:
                staging.release()

    async def deallocate(self, offset: int, length: int) -> None:
        """Deallocated ranges read as zeroes (the namespace says so): written as zeroes."""
        await self.write_zeroes(offset, length)

    def close(self) -> None:
        """Stop the queue, give the staging memory back, release the controller (which deletes
        its queues, disables it and unmaps every DMA mapping)."""
        if self._queue is not None:
            self._queue.close()
            self._queue = None
        pool, self._pool = self._pool, None
        ctrl = getattr(self, "ctrl", None)
        region = pool.region if pool is not None else None
        try:
            if ctrl is not None and region is not None:
                if region.placement == "dram":
                    ctrl.unmap_dma(region)
                elif ctrl.cmb is not None:
                    assert pool is not None
                    pool.close()  # drops the pool's views of the CMB before it goes back
                    ctrl.cmb.release(region)
            if ctrl is not None:
                ctrl.close()
        finally:
            if pool is not None and region is not None:
                pool.close()
                if region.placement == "dram":
                    self._dram.release(region)


def open_nvme_pci(ns: Namespace) -> NvmePciMedia:
    """The factory's opener: ``device.path`` is the controller's PCI address."""
    if not ns.path:
        raise ValueError("media kind 'nvme_pci' needs device.path, the SSD's PCI address")
    settings = cast(PciSettings, ns.media)
    try:
        return NvmePciMedia(
            ns.path,
            sq_placement=settings.sq_placement,
            staging_placement=settings.staging_placement,
            size=settings.size,
        )
    except ControllerError as exc:
        raise MediaError(errno.EIO, str(exc)) from exc
    except MediaError:
        raise
    except OSError as exc:  # VFIO: not bound to vfio-pci, no IOMMU group, group busy
        raise MediaError(exc.errno or errno.EIO, str(exc)) from exc


register_media_kind(KIND, open_nvme_pci)
