"""``nvme_pci`` media: a namespace served from a PCIe NVMe SSD through the userspace driver.

Configuration (docs/nvme-pci.md, "Serving a namespace from the SSD"): ``device.path`` is the
controller's PCI address (``0000:00:04.0``, bound to ``vfio-pci``) and the namespace's
``"nvmf"`` group says ``"kind": "nvme_pci"``, ``"sq_placement"`` and ``"staging_placement"``
(``dram`` or ``cmb``).

Opening the medium (at target start) opens the controller (:class:`~nvmf.pci.controller.
NvmeController`), takes the SSD's namespace 1 as this namespace (its size and block size), and
makes this process's queue on it: one SQ/CQ pair with the SQ where ``sq_placement`` says, and a
staging pool the SSD can reach where ``staging_placement`` says (DRAM mapped for DMA with VFIO,
or a range of the CMB).  A placement the controller does not allow fails here, naming the
CMBSZ bit.  Commands on this namespace take their staging buffers from that pool
(:attr:`NvmePciQueue.pool`), so PRPs point at the very bytes the fabric moved: no bounce copy.

Offload workers each get a queue pair and staging memory of their own, made here (this
process owns the VFIO container, so every IOMMU mapping, and the CMB allocator) and sent to the
worker (:meth:`NvmePciMedia.share_with`, :mod:`nvmf.media.nvme_pci_worker`); a worker that
dies has its pair deleted and its memory unmapped (:meth:`NvmePciMedia.unshare`).  The log says
at start which placement each process got and why.  CMB staging behind an RDMA port is refused
at start (:func:`serving_problem`).

Registration: importing this module registers the kind with the media factory; the factory
imports it by module path the first time a configuration names ``nvme_pci``, so the core never
names it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import Collection
from typing import Any, Protocol, cast

from nvmf.media.base import MediaError, MediaHandle, medium_result
from nvmf.media.factory import Namespace, register_media_kind
from nvmf.media.nvme_pci_queue import NvmePciQueue
from nvmf.media.nvme_pci_report import cmb_facts, process_facts, register_facts
from nvmf.media.nvme_pci_worker import (
    WorkerQueue,
    attach_worker_queue,
    handle_info,
    staging_source,
)
from nvmf.media.queue import FLUSH, READ, WRITE, MediaQueue
from nvmf.memory.source import Region
from nvmf.memory.staging import StagingPool, largest_class
from nvmf.pci.cmb import CmbInfo, CmbPlacementError, CmbSource
from nvmf.pci.controller import ControllerError, NvmeController
from nvmf.pci.dma import MemfdMemory
from nvmf.pci.queue import QueuePair
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
    if staging_placement == "cmb" and "rdma" in trtypes:
        return (
            f"staging_placement cmb on {bdf} cannot be served over rdma: the NIC would have to "
            "reach the CMB (PCI peer-to-peer DMA, or registering a BAR mapping as a memory "
            "region), which Soft-RoCE cannot do (nvmf doctor: P2PDMA); use staging_placement "
            "dram"
        )
    return None


class _QueueMedia:
    """The media calls off the fast path (Compare, Write Zeroes, deallocate, a Flush of every
    namespace), through this process's queue pair and staging pool, copying: the fast path
    (Read, Write, Flush) is :class:`NvmePciQueue` with no copy."""

    kind = KIND
    bdf: str
    block_size: int
    size: int
    volatile_write_cache: bool
    _queue: NvmePciQueue | None
    _pool: StagingPool | None

    @property
    def pool(self) -> StagingPool:
        assert self._pool is not None
        return self._pool

    def open_queue(self) -> MediaQueue:
        """This process's queue pair on the SSD (made when the medium was opened)."""
        assert self._queue is not None
        return self._queue

    def share(self) -> tuple[MediaHandle, int | None]:
        raise ValueError("an nvme_pci medium gives each worker its own queue pair: share_with")

    async def _io(self, op: int, offset: int, buf: memoryview | None, fua: bool = False) -> None:
        """One operation through the queue, awaited."""
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
        """Read into any buffer, through staging buffers of this medium's pool."""
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
        """Zeroes written through staging buffers (the driver has no Write Zeroes command)."""
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


class NvmePciMedia(_QueueMedia):
    """One namespace on a PCIe NVMe SSD, owned by this process (see the module doc)."""

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
        self.depth = depth
        self.staging_bytes = staging_bytes
        self._pool = None
        self._queue = None
        self._dram = MemfdMemory(f"nvmf-staging-{bdf}")
        #: Each offload worker's queue pair and staging region (:meth:`share_with`).
        self._workers: dict[int, tuple[QueuePair, Region]] = {}
        self.ctrl = NvmeController(bdf)
        try:
            self._open(size)
        except BaseException:
            self.close()
            raise

    def _open(self, size: int | None) -> None:
        ctrl = self.ctrl
        ns = ctrl.namespace(SSD_NSID)
        self.block_size = ns.lba_size
        if size is not None and size > ns.size:
            raise ValueError(f"size {size} is more than the SSD namespace's {ns.size} bytes")
        self.size = size - size % ns.lba_size if size else ns.size
        self.volatile_write_cache = bool(ctrl.identify.vwc & 1)
        self.sq_reason = placement_reason(ctrl, self.sq_placement, ("sq",))
        self.staging_reason = placement_reason(ctrl, self.staging_placement, ("read", "write"))
        cmb, cmb_info = ctrl.cmb, ctrl.cmb_info
        log.info(
            "%s: CMB %s",
            self.bdf,
            f"of {cmb_info.size} bytes at {cmb.address:#x}"
            if cmb is not None and cmb_info is not None
            else "absent",
        )
        pair, region = self._make_pair()
        self._pool = StagingPool(self.staging_bytes, staging_source(region))
        self._queue = NvmePciQueue(
            pair,
            self._pool,
            nsid=SSD_NSID,
            lba_size=self.block_size,
            size=self.size,
            max_transfer=self._max_transfer(),
        )
        self._log_placement("control plane", pair, region)

    def _make_pair(self) -> tuple[QueuePair, Region]:
        """A queue pair with the SQ where configured, and staging memory the SSD reaches."""
        ctrl = self.ctrl
        pair = ctrl.create_io_queue_pair(
            min(self.depth, ctrl.mqes), self.sq_placement, lba_size=self.block_size
        )
        try:
            if self.staging_placement == "cmb":
                region = ctrl.map_cmb(self.staging_bytes, uses=("read", "write"))
            else:
                region = self._dram.map(self.staging_bytes)
                try:
                    ctrl.map_dma(region)
                except BaseException:
                    self._dram.release(region)
                    raise
        except BaseException:
            ctrl.delete_io_queue_pair(pair)
            raise
        return pair, region

    def _free_pair(self, pair: QueuePair, region: Region) -> None:
        """Delete ``pair`` on the SSD and give its staging memory back."""
        try:
            self.ctrl.delete_io_queue_pair(pair)
        finally:
            self._release_staging(region)

    def _release_staging(self, region: Region, pool: StagingPool | None = None) -> None:
        """Give staging memory back: out of the SSD's reach first (DRAM: its IOMMU mapping
        removed), then ``pool``'s views of it dropped, then the memory to its allocator."""
        ctrl = self.ctrl
        if region.placement == "dram":
            ctrl.unmap_dma(region)
        if pool is not None:
            pool.close()
        if region.placement == "dram":
            self._dram.release(region)
        elif ctrl.cmb is not None:
            ctrl.cmb.release(region)

    def _max_transfer(self) -> int:
        largest = largest_class(self.staging_bytes)
        return min(self.ctrl.max_transfer or largest, largest)

    def _log_placement(self, who: str, pair: QueuePair, region: Region) -> None:
        log.info(
            "namespace on %s (SSD namespace %d, %d bytes of %d-byte blocks), %s: SQ %d at %#x "
            "in %s (%s), staging %d bytes at %#x in %s (%s)",
            self.bdf,
            SSD_NSID,
            self.size,
            self.block_size,
            who,
            pair.qid,
            pair.layout.sq.iova,
            self.sq_placement.upper(),
            self.sq_reason,
            region.size,
            region.iova or 0,
            self.staging_placement.upper(),
            self.staging_reason,
        )

    # -- offload workers (WorkerShare) ---------------------------------------------------------

    def share_with(self, worker: int) -> tuple[MediaHandle, list[int]]:
        """Worker ``worker``'s own queue pair and staging memory (module doc of
        :mod:`nvmf.media.nvme_pci_worker`)."""
        self.unshare(worker)  # a worker that comes back gets fresh ones
        pair, region = self._make_pair()
        ctrl = self.ctrl
        try:
            fds = [ctrl.device.fd, ctrl.queue_memfd(pair)]
            cmb_offset = 0
            if region.placement == "dram":
                fds.append(MemfdMemory.memfd(region))
            else:
                assert ctrl.cmb is not None
                cmb_offset = ctrl.cmb.offset_of(region)
            assert region.iova is not None
            info = WorkerQueue(
                bdf=self.bdf,
                nsid=SSD_NSID,
                layout=pair.layout,
                staging_placement=region.placement,
                staging_size=region.size,
                staging_iova=region.iova,
                cmb_offset=cmb_offset,
                max_transfer=self._max_transfer(),
            )
        except BaseException:
            self._free_pair(pair, region)
            raise
        self._workers[worker] = (pair, region)
        self._log_placement(f"offload worker {worker}", pair, region)
        handle = MediaHandle(
            KIND, self.size, self.block_size, self.volatile_write_cache, self.bdf, extra=info
        )
        return handle, fds

    def unshare(self, worker: int) -> None:
        entry = self._workers.pop(worker, None)
        if entry is not None:
            qid = entry[0].qid
            log.info("namespace on %s: offload worker %d's SQ %d deleted", self.bdf, worker, qid)
            self._free_pair(*entry)

    # -- what nvmf doctor asks a running target (DeviceReport) --------------------------------

    def device_report(self) -> dict[str, Any]:
        """The SSD as this process sees it while it owns it, and where each process's queue
        pair and staging memory are and why (:mod:`nvmf.media.nvme_pci_report`)."""
        ctrl = self.ctrl
        info = ctrl.cmb_info
        owners: list[tuple[str, int | None, QueuePair, Region]] = []
        if self._queue is not None and self._pool is not None:
            owners.append(("control plane", None, self._queue.pair, self._pool.region))
        for worker, (pair, region) in sorted(self._workers.items()):
            owners.append((f"offload worker {worker}", worker, pair, region))
        processes = [
            process_facts(
                who,
                worker,
                pair,
                region,
                sq_reason=self.sq_reason,
                staging_reason=self.staging_reason,
                cmb=info,
            )
            for who, worker, pair, region in owners
        ]
        return {
            "kind": KIND,
            "bdf": self.bdf,
            "ssd_nsid": SSD_NSID,
            "size": self.size,
            "block_size": self.block_size,
            "model": ctrl.identify.mn.strip(),
            "serial": ctrl.identify.sn.strip(),
            "firmware": ctrl.identify.fr.strip(),
            **register_facts(ctrl.read_registers()),
            "cmb": cmb_facts(
                info,
                None if ctrl.cmb is None else ctrl.cmb.address,
                0 if ctrl.cmb is None else ctrl.cmb.space.in_use,
            ),
            "configured": {
                "sq_placement": self.sq_placement,
                "staging_placement": self.staging_placement,
            },
            "processes": processes,
        }

    # -- the placement facts the control plane checks at start --------------------------------

    def serving_problem(self, workers: int, trtypes: Collection[str]) -> str | None:
        """:class:`~nvmf.media.base.ServingCheck`: see :func:`serving_problem`."""
        return serving_problem(self.bdf, self.staging_placement, workers, trtypes)

    def close(self) -> None:
        """Stop the queue, give the staging memory back, release the controller (which deletes
        its queues, disables it and unmaps every DMA mapping)."""
        if self._queue is not None:
            self._queue.close()
            self._queue = None
        pool, self._pool = self._pool, None
        ctrl = getattr(self, "ctrl", None)
        try:
            if ctrl is not None:
                for worker in list(self._workers):
                    with contextlib.suppress(Exception):
                        self.unshare(worker)
                if pool is not None:
                    self._release_staging(pool.region, pool)
                ctrl.close()
        finally:
            if pool is not None:
                pool.close()


class NvmePciWorkerMedia(_QueueMedia):
    """An offload worker's view of an ``nvme_pci`` namespace: the queue pair and staging memory
    the control plane made for it (:mod:`nvmf.media.nvme_pci_worker`)."""

    def __init__(self, handle: MediaHandle, fds: list[int]) -> None:
        info = handle_info(handle)
        self.bdf = info.bdf
        self.size = handle.size
        self.block_size = handle.block_size
        self.volatile_write_cache = handle.volatile_write_cache
        self._pair, region, self._maps = attach_worker_queue(info, fds)
        self._pool = StagingPool(info.staging_size, staging_source(region))
        self._queue = NvmePciQueue(
            self._pair,
            self._pool,
            nsid=info.nsid,
            lba_size=handle.block_size,
            size=handle.size,
            max_transfer=info.max_transfer,
        )
        log.info(
            "namespace on %s: SQ %d in %s, staging in %s",
            self.bdf,
            self._pair.qid,
            info.layout.sq.placement.upper(),
            region.placement.upper(),
        )

    def close(self) -> None:
        """Stop polling and unmap; the control plane deletes the pair when this worker is gone."""
        if self._queue is not None:
            self._queue.close()
            self._queue = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        self._pair.release()
        for m in self._maps:
            with contextlib.suppress(BufferError):
                m.close()
        self._maps = []


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


def adopt_nvme_pci(handle: MediaHandle, fds: list[int]) -> NvmePciWorkerMedia:
    """The factory's adopter, in an offload worker (:func:`~nvmf.media.factory.adopt_shared`)."""
    return NvmePciWorkerMedia(handle, fds)


register_media_kind(KIND, open_nvme_pci, adopt_nvme_pci)
