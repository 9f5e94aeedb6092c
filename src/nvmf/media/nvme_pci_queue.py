"""The ``nvme_pci`` media queue: fabric Read/Write/Flush become SQEs on one SSD queue pair.

One :class:`NvmePciQueue` per data-plane process drives one polled SQ/CQ pair
(:class:`~nvmf.pci.queue.QueuePair`).  The payload path is zero-copy: the buffer a command
brings is a piece of this queue's staging pool (:attr:`NvmePciQueue.pool`, which the pipeline
takes a command's buffer from, see :mod:`nvmf.media.queue`), whose region the SSD can reach
(DRAM mapped with VFIO, or the CMB), so its PRPs point straight at it:
``region.iova + (address of the buffer - address of the region)``.

A transfer larger than the SSD's MDTS is split into several commands; the fabric command
completes when every piece has, with the first error seen.  Commands that find the SQ full wait
in order in a backlog and go out as completions free slots.

Completions are polled from the event loop: while commands are outstanding, one callback per
loop iteration reaps the CQ (then, after a run of empty polls, every :data:`IDLE_POLL_S`, so a
slow device does not eat a core); when nothing is outstanding nothing is scheduled.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from nvmf.media.queue import FLUSH, READ, READ_ERROR, WRITE, WRITE_FAULT, Done
from nvmf.memory.source import Region
from nvmf.memory.staging import StagingPool
from nvmf.pci.dma import buffer_address
from nvmf.pci.queue import QueueFullError, QueuePair
from nvmf.wire.status import SCT, SUCCESS, Status

log = logging.getLogger(__name__)

#: Empty polls in a row before polling slows down to :data:`IDLE_POLL_S`.
BUSY_POLLS = 64
IDLE_POLL_S = 0.0002


def fabric_status(field: int, op: int) -> Status:
    """The fabric status of an SSD completion's 15-bit status field (phase removed).

    Media and data integrity errors (SCT 2) become the statuses the fabric contract names for a
    failed medium: Unrecovered Read Error for a Read, Write Fault for a Write or a Flush (DNR as
    the SSD said).  Anything else passes through, SCT, SC and DNR kept; CRD and More are not:
    they point at the SSD's Identify CRDT fields and error log, not ours."""
    if not field:
        return SUCCESS
    status = Status.decode(field)
    if status.sct == SCT.MEDIA:
        base = READ_ERROR if op == READ else WRITE_FAULT
        return Status(base.code, dnr=status.dnr)
    return Status(status.code, dnr=status.dnr)


def region_offset(region: Region, base: int, buf: memoryview) -> int:
    """Where ``buf`` starts in ``region`` (mapped at address ``base``); ``ValueError`` when it
    is not wholly inside it (the buffer is not DMA-visible)."""
    offset = buffer_address(buf) - base
    if offset < 0 or offset + len(buf) > region.size:
        raise ValueError(
            f"a {len(buf)}-byte buffer is not in the {region.placement} staging region the SSD "
            "can reach"
        )
    return offset


class _Command:
    """One fabric command in the SSD queue: its pieces still outstanding and its status."""

    __slots__ = ("done", "op", "pending", "status", "tag")

    def __init__(self, op: int, done: Done, tag: Any, pieces: int) -> None:
        self.op = op
        self.done = done
        self.tag = tag
        self.pending = pieces
        self.status = SUCCESS


class NvmePciQueue:
    """:class:`~nvmf.media.queue.MediaQueue` on one SSD queue pair (see the module doc)."""

    memory: memoryview | None = None

    def __init__(
        self,
        pair: QueuePair,
        pool: StagingPool,
        *,
        nsid: int,
        lba_size: int,
        size: int,
        max_transfer: int,
    ) -> None:
        self.pair = pair
        #: The staging pool whose region the SSD reaches: commands on this medium take their
        #: buffers here, not from their fabric queue's pool.
        self.pool: StagingPool | None = pool
        self.nsid = nsid
        self.lba_size = lba_size
        self.size = size
        #: The most one SSD command moves (MDTS, a multiple of the block size).
        self.max_transfer = max_transfer - max_transfer % lba_size
        self._region = pool.region
        self._base = buffer_address(pool.region.view)
        self._inflight: dict[int, _Command] = {}
        #: Pieces waiting for a free SQ slot: (command, opcode, slba, nlb, offset, length, fua).
        self._backlog: deque[tuple[_Command, int, int, int, int, int, bool]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._polling = False
        self._empty = 0
        self.closed = False

    # -- submission ----------------------------------------------------------------------------

    def submit(
        self, op: int, offset: int, buf: memoryview | None, fua: bool, done: Done, tag: Any
    ) -> Status | None:
        if self.closed:
            raise RuntimeError("the nvme_pci medium is closed")
        if op == FLUSH:
            cmd = _Command(op, done, tag, 1)
            self._issue(cmd, FLUSH, 0, 0, 0, 0, False)
        else:
            if op not in (READ, WRITE):
                raise ValueError(f"opcode {op:#x} is not Read, Write or Flush")
            assert buf is not None
            length = len(buf)
            if offset < 0 or offset + length > self.size or offset % self.lba_size:
                raise ValueError(f"range {offset}+{length} outside the medium or not in blocks")
            if not length or length % self.lba_size:
                raise ValueError(f"{length} bytes is not a whole number of blocks")
            start = region_offset(self._region, self._base, buf)
            step = self.max_transfer or length
            pieces = -(-length // step)
            cmd = _Command(op, done, tag, pieces)
            lba = self.lba_size
            for done_bytes in range(0, length, step):
                n = min(step, length - done_bytes)
                slba = (offset + done_bytes) // lba
                self._issue(cmd, op, slba, n // lba, start + done_bytes, n, fua)
        self._start_polling()
        return None

    def _issue(
        self, cmd: _Command, op: int, slba: int, nlb: int, offset: int, length: int, fua: bool
    ) -> None:
        """Put one piece in the SQ, or in the backlog behind earlier ones when it is full."""
        piece = (cmd, op, slba, nlb, offset, length, fua)
        if self._backlog or not self._put(piece):
            self._backlog.append(piece)

    def _put(self, piece: tuple[_Command, int, int, int, int, int, bool]) -> bool:
        """Place ``piece`` in the SQ; False when it has no free slot."""
        pair = self.pair
        if pair.outstanding >= pair.depth - 1:
            return False
        cmd, op, slba, nlb, offset, length, fua = piece
        try:
            if op == FLUSH:
                cid = pair.submit(FLUSH, self.nsid)
            else:
                cid = pair.submit(op, self.nsid, slba, nlb, self._region, offset, length, fua=fua)
        except QueueFullError:
            return False
        self._inflight[cid] = cmd
        return True

    # -- completion ----------------------------------------------------------------------------

    @property
    def outstanding(self) -> int:
        """Pieces in the SSD queue or waiting for a slot."""
        return len(self._inflight) + len(self._backlog)

    def _start_polling(self) -> None:
        if self._polling:
            return
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self._polling = True
        self._empty = 0
        self._loop.call_soon(self._poll)

    def _poll(self) -> None:
        """Reap the CQ; complete finished commands; send backlogged pieces; poll again while
        anything is outstanding."""
        if self.closed:
            self._polling = False
            return
        reaped = self.pair.reap()
        for completion in reaped:
            cmd = self._inflight.pop(completion.cid, None)
            if cmd is None:
                log.error(
                    "SSD queue %d: completion for unknown cid %d", self.pair.qid, completion.cid
                )
                continue
            if completion.status and cmd.status is SUCCESS:
                cmd.status = fabric_status(completion.status, cmd.op)
                log.warning(
                    "SSD queue %d: opcode %#x failed: %s", self.pair.qid, cmd.op, cmd.status
                )
            cmd.pending -= 1
            if not cmd.pending:
                cmd.done(cmd.tag, cmd.status)
        while self._backlog and self._put(self._backlog[0]):
            self._backlog.popleft()
        if not self._inflight and not self._backlog:
            self._polling = False
            return
        assert self._loop is not None
        if reaped:
            self._empty = 0
        else:
            self._empty += 1
        if self._empty < BUSY_POLLS:
            self._loop.call_soon(self._poll)
        else:
            self._loop.call_later(IDLE_POLL_S, self._poll)

    async def drain(self, timeout: float = 10.0) -> bool:
        """Wait until nothing is outstanding (at most ``timeout`` seconds); whether it is so."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self.outstanding and loop.time() < end:
            await asyncio.sleep(0.001)
        return not self.outstanding

    def close(self) -> None:
        """Stop polling; commands still outstanding never complete (the pair is going away)."""
        self.closed = True
        if self._inflight or self._backlog:
            log.warning(
                "SSD queue %d closed with %d commands outstanding",
                self.pair.qid,
                self.outstanding,
            )
        self._inflight.clear()
        self._backlog.clear()
