"""One submission/completion queue pair of a PCIe NVMe controller, polled.

NVMe Base 2.0 §3.3.1 (memory-based queues) and §4.6 (CQE, Phase Tag):

- The host writes an SQE at the SQ tail, advances the tail (wrapping at the queue size) and
  writes the new tail to the SQ's doorbell.  The queue is full when tail + 1 == head; the head
  is what the controller last reported in a CQE's SQHD.
- The controller writes CQEs at the CQ head with the Phase Tag inverted on each pass: the host
  starts expecting phase 1, and flips what it expects each time its head wraps.  A CQE whose
  phase is not the expected one is not yet written.  After consuming CQEs the host writes the
  new head to the CQ's doorbell.
- Doorbells are at BAR0 1000h + (2 * qid (+1 for the CQ)) * (4 << CAP.DSTRD).

A :class:`QueuePair` is plain state (heads, tails, phase, free command ids) plus three memory
views (SQ, CQ, PRP lists) and the doorbell window; it owns no descriptor and no IOMMU mapping.
The controller (:mod:`nvmf.pci.controller`) creates the queues on the SSD and owns everything
else.  :class:`QueueLayout` describes a pair with plain numbers, so another process (an offload
worker) can drive it with :meth:`QueuePair.attach` given only the VFIO device descriptor (BAR0
and the CMB's BAR are mapped from it) and the memfd of the pair's DRAM; staging memory it maps
from its own memfd and registers with the same IOVAs (the container, and so the IOMMU mapping,
stays with the controller's process).

The hot path (:meth:`QueuePair.submit`, :meth:`QueuePair.reap`) allocates nothing per command
but the SQE's packing and the PRP list's entries.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from typing import NamedTuple

from nvmf.memory.source import Region
from nvmf.pci import commands
from nvmf.pci.prp import build_prps
from nvmf.pci.registers import doorbell_offset
from nvmf.pci.vfio import map_region, region_info
from nvmf.wire.opcodes import IoOpcode
from nvmf.wire.sqe import CQE_SIZE, SQE_SIZE

#: CQE bytes 8..15: SQHD, SQID, CID, Status (bit 0 the Phase Tag).
_CQE_TAIL = struct.Struct("<HHHH")


class QueueFullError(RuntimeError):
    """Every slot of the SQ is in use: reap completions first."""


class Completion(NamedTuple):
    """A reaped CQE: the command's id, its status field (SCT/SC/DNR/M/CRD, Phase Tag removed:
    0 is success) and DW0 (the command specific result)."""

    cid: int
    status: int
    result: int


@dataclass(frozen=True)
class QueueMemory:
    """Where a piece of a queue pair lives: ``placement`` ``dram`` (``offset`` into the pair's
    memfd) or ``cmb`` (``offset`` from the start of the CMB), and its address for the SSD."""

    placement: str
    offset: int
    size: int
    iova: int


@dataclass(frozen=True)
class QueueLayout:
    """A queue pair as plain numbers (picklable, sendable to another process)."""

    qid: int
    depth: int
    #: CAP.DSTRD: doorbell stride is 4 << dstrd bytes.
    dstrd: int
    #: The controller's memory page size (CC.MPS), for PRPs.
    page_size: int
    #: Logical block size of the namespace the I/O commands address (0: not checked).
    lba_size: int
    sq: QueueMemory
    cq: QueueMemory
    #: One PRP list page per command id, in DRAM; and in the CMB when CMBSZ.LISTS allows.
    prp_lists: QueueMemory
    prp_lists_cmb: QueueMemory | None = None
    #: The BAR holding the CMB and the CMB's offset in it (for :meth:`QueuePair.attach`).
    cmb_bar: int | None = None
    cmb_bar_offset: int = 0
    #: CMBSZ.RDS / CMBSZ.WDS: whether Read / Write data may be in the CMB.
    cmb_read: bool = False
    cmb_write: bool = False


class QueuePair:
    """A polled SQ/CQ pair (see the module doc)."""

    def __init__(
        self,
        layout: QueueLayout,
        *,
        sq: memoryview,
        cq: memoryview,
        prp_lists: memoryview,
        doorbells: memoryview,
        prp_lists_cmb: memoryview | None = None,
    ) -> None:
        if layout.depth < 2:
            raise ValueError("a queue needs at least 2 entries")
        self.layout = layout
        self.qid = layout.qid
        self.depth = layout.depth
        self._sq = sq
        self._cq = cq
        self._prp = prp_lists
        self._prp_cmb = prp_lists_cmb
        #: BAR0 as 32-bit words (doorbells must be written as one dword); a view of our own, so
        #: that :meth:`release` leaves the controller's view of BAR0 alone.
        self._db = memoryview(doorbells) if doorbells.format == "I" else doorbells.cast("I")
        self._sq_db = doorbell_offset(layout.qid, False, layout.dstrd) // 4
        self._cq_db = doorbell_offset(layout.qid, True, layout.dstrd) // 4
        self.sq_tail = 0
        self.sq_head = 0
        self.cq_head = 0
        self.phase = 1
        self._free = list(range(layout.depth - 1, -1, -1))
        self.outstanding = 0
        self._scratch = bytearray(SQE_SIZE)
        self._maps: list[mmap.mmap] = []

    # -- submission ----------------------------------------------------------------------------

    def submit_command(
        self,
        opcode: int,
        *,
        nsid: int = 0,
        prp1: int = 0,
        prp2: int = 0,
        cdws: commands.Cdws = (0, 0, 0, 0, 0, 0),
        ring: bool = True,
        cid: int | None = None,
    ) -> int:
        """Place one command at the SQ tail (and ring the doorbell); its command id."""
        if (self.sq_tail + 1) % self.depth == self.sq_head or (cid is None and not self._free):
            raise QueueFullError(f"queue {self.qid}: all {self.depth - 1} slots in use")
        if cid is None:
            cid = self._free.pop()
        commands.encode_sqe(
            self._scratch, 0, opcode=opcode, cid=cid, nsid=nsid, prp1=prp1, prp2=prp2, cdws=cdws
        )
        offset = self.sq_tail * SQE_SIZE
        # One copy of the whole entry: a CMB SQ is device memory, best written in one burst.
        self._sq[offset : offset + SQE_SIZE] = self._scratch
        self.sq_tail = (self.sq_tail + 1) % self.depth
        self.outstanding += 1
        if ring:
            self.ring()
        return cid

    def ring(self) -> None:
        """Tell the controller about every SQE placed so far (SQ tail doorbell)."""
        self._db[self._sq_db] = self.sq_tail

    def submit(
        self,
        opcode: int,
        nsid: int,
        slba: int = 0,
        nlb: int = 0,
        data: Region | None = None,
        offset: int = 0,
        length: int = 0,
        *,
        fua: bool = False,
        ring: bool = True,
    ) -> int:
        """An NVM command (READ, WRITE, FLUSH) on ``nlb`` blocks at ``slba``, data at ``offset``
        in ``data`` (whose ``iova`` is set: DMA-mapped DRAM or the CMB); its command id.

        PRP lists go to the CMB when the data is there and the pair has CMB lists (CMBSZ.LISTS).
        """
        if opcode == IoOpcode.FLUSH:
            return self.submit_command(opcode, nsid=nsid, cdws=commands.flush(), ring=ring)
        if data is None or data.iova is None:
            raise ValueError("data must be a region with an IOVA (DMA-mapped or in the CMB)")
        if length <= 0 or offset < 0 or offset + length > data.size:
            raise ValueError(f"{length} bytes at {offset} do not fit a {data.size}-byte region")
        if data.placement == "cmb":
            if opcode == IoOpcode.READ and not self.layout.cmb_read:
                raise ValueError("read data in the CMB needs CMBSZ.RDS")
            if opcode == IoOpcode.WRITE and not self.layout.cmb_write:
                raise ValueError("write data in the CMB needs CMBSZ.WDS")
        lba_size = self.layout.lba_size
        if lba_size and length != nlb * lba_size:
            raise ValueError(f"{nlb} blocks of {lba_size} bytes are not {length} bytes")
        if (self.sq_tail + 1) % self.depth == self.sq_head or not self._free:
            raise QueueFullError(f"queue {self.qid}: all {self.depth - 1} slots in use")
        cid = self._free[-1]
        page = self.layout.page_size
        use_cmb_list = data.placement == "cmb" and self._prp_cmb is not None
        lists = self.layout.prp_lists_cmb if use_cmb_list else self.layout.prp_lists
        assert lists is not None
        prps = build_prps(data.iova + offset, length, page, lists.iova + cid * page)
        if prps.entries:
            target = self._prp_cmb if use_cmb_list else self._prp
            assert target is not None
            raw = struct.pack(f"<{len(prps.entries)}Q", *prps.entries)
            target[cid * page : cid * page + len(raw)] = raw
        self._free.pop()
        return self.submit_command(
            opcode,
            nsid=nsid,
            prp1=prps.prp1,
            prp2=prps.prp2,
            cdws=commands.read_write(slba, nlb, fua=fua),
            ring=ring,
            cid=cid,
        )

    # -- completion ----------------------------------------------------------------------------

    def reap(self, limit: int = 0) -> list[Completion]:
        """Every CQE the controller has posted (at most ``limit``, 0: no limit); rings the CQ
        head doorbell once if any was consumed."""
        done: list[Completion] = []
        cq = self._cq
        while not limit or len(done) < limit:
            offset = self.cq_head * CQE_SIZE
            # The Phase Tag first: the rest of the entry is only valid once it has flipped.
            status = cq[offset + 14] | (cq[offset + 15] << 8)
            if status & 1 != self.phase:
                break
            dw0 = int.from_bytes(cq[offset : offset + 4], "little")
            sqhd, _sqid, cid, status = _CQE_TAIL.unpack_from(cq, offset + 8)
            self.sq_head = sqhd
            self.cq_head += 1
            if self.cq_head == self.depth:
                self.cq_head = 0
                self.phase ^= 1
            if self.outstanding:
                self.outstanding -= 1
            self._free.append(cid)
            done.append(Completion(cid, status >> 1, dw0))
        if done:
            self._db[self._cq_db] = self.cq_head
        return done

    # -- another process -----------------------------------------------------------------------

    @classmethod
    def attach(cls, layout: QueueLayout, device_fd: int, queue_memfd: int) -> QueuePair:
        """Drive the pair ``layout`` describes from this process: map BAR0 (doorbells) and the
        CMB's BAR from the VFIO device descriptor, and the pair's DRAM from its memfd.

        Only one process may drive a pair at a time; the pair must be fresh (no command
        outstanding) when it moves."""
        maps: list[mmap.mmap] = []
        bar0 = map_region(device_fd, region_info(device_fd, 0))
        maps.append(bar0)
        dram_size = max(
            m.offset + m.size
            for m in (layout.sq, layout.cq, layout.prp_lists)
            if m.placement == "dram"
        )
        dram = mmap.mmap(queue_memfd, dram_size, flags=mmap.MAP_SHARED)
        maps.append(dram)
        cmb_view: memoryview | None = None
        if layout.cmb_bar is not None:
            bar = map_region(device_fd, region_info(device_fd, layout.cmb_bar))
            maps.append(bar)
            cmb_view = memoryview(bar)[layout.cmb_bar_offset :]

        def view(place: QueueMemory) -> memoryview:
            if place.placement == "cmb":
                assert cmb_view is not None
                return cmb_view[place.offset : place.offset + place.size]
            return memoryview(dram)[place.offset : place.offset + place.size]

        pair = cls(
            layout,
            sq=view(layout.sq),
            cq=view(layout.cq),
            prp_lists=view(layout.prp_lists),
            doorbells=memoryview(bar0),
            prp_lists_cmb=view(layout.prp_lists_cmb) if layout.prp_lists_cmb else None,
        )
        pair._maps = maps
        return pair

    def release(self) -> None:
        """Drop the views (and the mappings :meth:`attach` made); the pair is unusable after."""
        for v in (self._sq, self._cq, self._prp, self._prp_cmb, self._db):
            if v is not None:
                v.release()
        for m in self._maps:
            try:
                m.close()
            except BufferError:  # a view someone else still holds; the GC unmaps it later
                pass
        self._maps = []
