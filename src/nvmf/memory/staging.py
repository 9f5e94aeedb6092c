"""Staging buffer pools: the memory payload lives in between the fabric and the media.

Each data-plane process (an offload worker, or the control plane with ``--workers 0``) owns one
pool.  The pool is *preallocated*: its whole budget is one :class:`~nvmf.memory.source.Region`
mapped from a :class:`~nvmf.memory.source.MemorySource` when the pool is made (DRAM from a
memfd, populated; an SSD's CMB later), so that transports and media can register it once and
no I/O ever maps memory.  Buffers are page-aligned pieces of it, in power-of-two size classes
from 4 KiB to :attr:`StagingPool.max_buffer`, which suit ``O_DIRECT``, ``recv_into`` /
``sendmsg`` and DMA alike.

Allocation is a buddy system with lazy merging.  The region is cut into blocks of the largest
class (the remainder into smaller powers of two).  A request takes a free block of its class;
when there is none it splits the smallest larger free block; when there is none of those
either, it merges every pair of free buddies first (a released block goes back to its class's
free list as it is, so a steady stream of same-sized I/O never splits or merges).  When nothing
fits, :meth:`StagingPool.get` returns ``None`` and the request waits (state ``NEED_BUFFER``)
until a buffer comes back: a request never fails for lack of staging, and MDTS is never more
than :attr:`StagingPool.max_buffer`, so every valid command fits once others complete.

Each queue takes its buffers through a :class:`StagingShare` of its process's pool, which holds
it to a part of the pool.  A queue's buffers come back only as its host moves: the completions
of Reads leave when the host reads them, the data of Writes arrives when the host sends it.  A
host that stops doing either keeps what its queue holds, and without shares a single such queue
could hold the whole pool and leave every other queue of the process waiting for ever.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from nvmf.memory.source import DramSource, MemorySource, Region

MIN_CLASS = 4096
#: The largest size class a pool cuts its region into: 1 MiB, the target's MDTS.
MAX_CLASS = 1 << 20
#: A queue's share of its pool: at most 1/QUEUE_SHARE of the budget (never less than the largest
#: buffer), so that no queue, nor any three, can leave the others waiting.  At the default 32 MiB,
#: 8 MiB: 64 commands of 128 KiB or 8 of 1 MiB in flight on one queue.
QUEUE_SHARE = 4


def size_class(length: int) -> int:
    """The buffer size serving ``length`` bytes: a power of two, at least 4 KiB."""
    if length <= MIN_CLASS:
        return MIN_CLASS
    return 1 << (length - 1).bit_length()


def largest_class(budget: int) -> int:
    """The biggest buffer a pool of ``budget`` bytes can hand out (at most :data:`MAX_CLASS`)."""
    if budget < MIN_CLASS:
        raise ValueError(f"a staging pool needs at least {MIN_CLASS} bytes, not {budget}")
    return min(MAX_CLASS, 1 << (budget.bit_length() - 1))


class StagingBuffer:
    """One buffer: ``view`` is exactly the requested length, ``block`` the whole block, at
    ``offset`` in the pool's region (whose registration keys it uses).  The pool reuses these
    objects with their blocks: a buffer is not to be touched after :meth:`release`."""

    __slots__ = ("_pool", "block", "offset", "view")

    def __init__(
        self,
        pool: StagingPool | StagingShare | None,
        block: memoryview,
        length: int,
        offset: int = 0,
    ) -> None:
        self._pool = pool
        self.block = block
        self.offset = offset
        self.view = block[:length]

    @property
    def region(self) -> Region | None:
        """The region of the pool this buffer was taken from (None once released, or for a
        buffer of no pool): a consumer registered with another region (an RDMA queue's
        memory region covers its own pool) registers this one before using the buffer."""
        return None if self._pool is None else self._pool.region

    def release(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool._put(self)


class StagingPool:
    """A preallocated region cut into power-of-two buffers (see the module docstring)."""

    def __init__(self, budget: int = 16 << 20, source: MemorySource | None = None) -> None:
        self.max_buffer = largest_class(budget)
        self.budget = budget - budget % MIN_CLASS
        self.region: Region = (source or DramSource()).map(self.budget)
        self.in_use = 0
        #: Buffers handed out, and the times a request had to wait for one (NEED_BUFFER):
        #: the pool's counters, as a NIC's offload context keeps them.
        self.taken = 0
        self.waits = 0
        self._free: dict[int, list[StagingBuffer]] = {}
        cls = MIN_CLASS
        while cls <= self.max_buffer:
            self._free[cls] = []
            cls <<= 1
        #: Set when a block comes back: only then can merging find something new.
        self._merge = False
        self._waiters: deque[asyncio.Future[None]] = deque()
        offset = 0
        while offset < self.budget:  # the largest blocks first, each aligned to its size
            cls = min(self.max_buffer, 1 << ((self.budget - offset).bit_length() - 1))
            self._free[cls].append(self._block(offset, cls))
            offset += cls

    @property
    def placement(self) -> str:
        return self.region.placement

    @property
    def free(self) -> int:
        """Bytes not in use."""
        return self.budget - self.in_use

    def get(self, length: int) -> StagingBuffer | None:
        """A buffer of ``length`` bytes, or ``None`` until one of its size is free."""
        cls = MIN_CLASS if length <= MIN_CLASS else 1 << (length - 1).bit_length()  # size_class
        free = self._free.get(cls)
        if free:
            buf = free.pop()
        else:
            if free is None:
                raise ValueError(
                    f"a {length}-byte buffer exceeds the pool's largest, {self.max_buffer}"
                )
            found = self._split(cls)
            if found is None:
                return None
            buf = found
        self.in_use += cls
        self.taken += 1
        buf._pool = self
        buf.view = buf.block[:length]
        return buf

    def _block(self, offset: int, cls: int) -> StagingBuffer:
        return StagingBuffer(None, self.region.view[offset : offset + cls], 0, offset)

    def _split(self, cls: int) -> StagingBuffer | None:
        """A block of ``cls`` cut from the smallest larger free block (after merging buddies
        if none is free), its other halves left free; None when nothing that large is free."""
        for attempt in range(2):
            bigger = cls << 1
            while bigger <= self.max_buffer and not self._free[bigger]:
                bigger <<= 1
            if bigger <= self.max_buffer:
                break
            if attempt or not self._merge or self.free < cls:
                return None
            self._merge_buddies()
            if self._free[cls]:
                return self._free[cls].pop()
        block = self._free[bigger].pop()
        offset = block.offset
        while bigger > cls:  # keep the lower half, free the upper one
            bigger >>= 1
            self._free[bigger].append(self._block(offset + bigger, bigger))
        return self._block(offset, cls)

    def _merge_buddies(self) -> None:
        """Join every pair of free buddies, smallest classes first (rare: only when a request
        finds no free block large enough)."""
        self._merge = False
        cls = MIN_CLASS
        while cls < self.max_buffer:
            free = self._free[cls]
            if len(free) > 1:
                offsets = {b.offset for b in free}
                merged = {o for o in offsets if o & cls == 0 and o + cls in offsets}
                if merged:
                    keep = [b for b in free if b.offset & ~cls not in merged]
                    free[:] = keep
                    self._free[cls << 1].extend(self._block(o, cls << 1) for o in merged)
            cls <<= 1

    def _put(self, buf: StagingBuffer) -> None:
        cls = len(buf.block)
        self.in_use -= cls
        self._free[cls].append(buf)
        self._merge = True
        # Wake every waiter: the first may still not fit while a later, smaller one does.
        if self._waiters:
            waiters, self._waiters = self._waiters, deque()
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    def stats(self) -> dict[str, int]:
        """The pool's state and counters, as plain data (``nvmf status``, metrics)."""
        return {
            "budget": self.budget,
            "in_use": self.in_use,
            "free": self.free,
            "max_buffer": self.max_buffer,
            "taken": self.taken,
            "waits": self.waits,
        }

    async def wait(self) -> None:
        """Until a buffer comes back."""
        self.waits += 1
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        await fut

    async def acquire(self, length: int) -> StagingBuffer:
        """A buffer, waiting (NEED_BUFFER) while none of its size is free."""
        while True:
            buf = self.get(length)
            if buf is not None:
                return buf
            await self.wait()

    def close(self) -> None:
        """Unmap the region; no buffer of the pool may be in use."""
        self._free.clear()
        self.region.close()


class Staging(Protocol):
    """Where a queue takes its staging buffers from: a :class:`StagingPool`, or a queue's
    :class:`StagingShare` of one."""

    @property
    def region(self) -> Region:
        """The memory the buffers are pieces of (what a transport or medium registers)."""
        ...

    @property
    def max_buffer(self) -> int:
        """The largest buffer :meth:`get` hands out."""
        ...

    @property
    def placement(self) -> str:
        """Where the memory is: ``"dram"`` or ``"cmb"``."""
        ...

    def get(self, length: int) -> StagingBuffer | None:
        """A buffer of ``length`` bytes, or ``None`` until one can be had."""
        ...

    async def acquire(self, length: int) -> StagingBuffer:
        """A buffer, waiting while none can be had."""
        ...


class StagingShare:
    """One queue's share of a :class:`StagingPool`: buffers of the pool, while the queue holds
    at most ``limit`` bytes of it (see the module docstring).  A buffer taken here comes back
    here when released, and then goes on to the pool."""

    __slots__ = ("held", "limit", "pool")

    def __init__(self, pool: StagingPool) -> None:
        self.pool = pool
        self.limit = max(pool.max_buffer, pool.budget // QUEUE_SHARE)
        #: Bytes of the pool's blocks this queue holds now.
        self.held = 0

    @property
    def region(self) -> Region:
        return self.pool.region

    @property
    def max_buffer(self) -> int:
        return self.pool.max_buffer

    @property
    def placement(self) -> str:
        return self.pool.region.placement

    def get(self, length: int) -> StagingBuffer | None:
        """A buffer of the pool, or ``None`` while the pool has none or this queue holds its
        share (a queue holding nothing always fits one buffer of any size)."""
        cls = MIN_CLASS if length <= MIN_CLASS else 1 << (length - 1).bit_length()  # size_class
        if self.held + cls > self.limit:
            return None
        buf = self.pool.get(length)
        if buf is not None:
            self.held += cls
            buf._pool = self
        return buf

    def _put(self, buf: StagingBuffer) -> None:
        self.held -= len(buf.block)
        self.pool._put(buf)

    async def acquire(self, length: int) -> StagingBuffer:
        """A buffer, waiting (NEED_BUFFER) until the pool has one and this queue's share
        allows it: every buffer released, this queue's included, goes through the pool."""
        while True:
            buf = self.get(length)
            if buf is not None:
                return buf
            await self.pool.wait()
