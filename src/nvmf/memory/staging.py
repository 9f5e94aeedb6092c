"""Staging buffer pools: the memory payload lives in between the fabric and the media.

Each fabric queue (later: each offload worker) owns a pool.  Buffers are carved out of page
aligned anonymous ``mmap`` slabs, so they suit ``O_DIRECT``, ``recv_into``/``sendmsg`` and (in a
later media) DMA registration; a CMB-backed pool hands out views of the SSD's Controller Memory
Buffer instead.  Sizes are rounded up to a power-of-two class (4 KiB up to ``max_transfer``) and
recycled through per-class free lists, so the steady state allocates nothing.

``budget`` bounds the bytes *in use* by requests; when a request would pass it,
:meth:`StagingPool.get` returns ``None`` and the request waits (state ``NEED_BUFFER``) until a
buffer comes back.  Free buffers are a cache, not a commitment: a size class never starves
because others hold idle memory, and at most ``budget`` bytes stay cached.
"""

from __future__ import annotations

import asyncio
import mmap
from collections import deque

MIN_CLASS = 4096


def size_class(length: int) -> int:
    """The buffer size serving ``length`` bytes: a power of two, at least 4 KiB."""
    if length <= MIN_CLASS:
        return MIN_CLASS
    return 1 << (length - 1).bit_length()


class StagingBuffer:
    """One buffer of a pool; ``view`` is exactly the requested length.  The pool reuses these
    objects with their blocks: a buffer is not to be touched after :meth:`release`."""

    __slots__ = ("_pool", "block", "view")

    def __init__(self, pool: StagingPool | None, block: memoryview, length: int) -> None:
        self._pool = pool
        self.block = block
        self.view = block[:length]

    def release(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool._put(self)


class StagingPool:
    """Power-of-two classed, page-aligned buffers with a budget on the bytes in use."""

    #: Classes up to this size are carved from shared slabs; larger ones get their own mapping.
    SLAB_CLASS_MAX = 64 * 1024

    def __init__(self, budget: int = 16 << 20, slab: int = 1 << 20) -> None:
        self.budget = budget
        self.slab = slab
        self.in_use = 0
        self.cached = 0
        #: Buffers handed out, and the times a request had to wait for one (NEED_BUFFER):
        #: the pool's counters, as a NIC's offload context keeps them.
        self.taken = 0
        self.waits = 0
        self._free: dict[int, list[StagingBuffer]] = {}
        self._waiters: deque[asyncio.Future[None]] = deque()

    def get(self, length: int) -> StagingBuffer | None:
        """A buffer of ``length`` bytes, or ``None`` while the budget is spent."""
        cls = MIN_CLASS if length <= MIN_CLASS else 1 << (length - 1).bit_length()  # size_class
        if self.in_use and self.in_use + cls > self.budget:
            return None
        self.in_use += cls
        self.taken += 1
        free = self._free.get(cls)
        if free:
            buf = free.pop()
            self.cached -= cls
            buf._pool = self
            buf.view = buf.block[:length]
            return buf
        return StagingBuffer(self, self._carve(cls), length)

    def stats(self) -> dict[str, int]:
        """The pool's state and counters, as plain data (``nvmf status``, metrics)."""
        return {
            "budget": self.budget,
            "in_use": self.in_use,
            "cached": self.cached,
            "taken": self.taken,
            "waits": self.waits,
        }

    def _carve(self, cls: int) -> memoryview:
        """New memory for ``cls``: a slab split into pieces (the rest cached), or one mapping."""
        if cls > self.SLAB_CLASS_MAX:
            return memoryview(mmap.mmap(-1, cls))
        # The slab's spare pieces are cached: never more than the budget allows.
        slab = max(cls, min(self.slab, cls + max(0, self.budget - self.cached)))
        slab -= slab % cls
        view = memoryview(mmap.mmap(-1, slab))
        free = self._free.setdefault(cls, [])
        free.extend(StagingBuffer(None, view[i : i + cls], 0) for i in range(cls, slab, cls))
        self.cached += slab - cls
        return view[:cls]

    def _put(self, buf: StagingBuffer) -> None:
        cls = len(buf.block)
        self.in_use -= cls
        if self.cached + cls <= self.budget:
            free = self._free.get(cls)
            if free is None:
                free = self._free[cls] = []
            free.append(buf)
            self.cached += cls
        # Wake every waiter: the first may still not fit while a later, smaller one does.
        waiters, self._waiters = self._waiters, deque()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait(self) -> None:
        """Until a buffer comes back."""
        self.waits += 1
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        await fut

    async def acquire(self, length: int) -> StagingBuffer:
        """A buffer, waiting (NEED_BUFFER) while the budget is spent."""
        while True:
            buf = self.get(length)
            if buf is not None:
                return buf
            await self.wait()
