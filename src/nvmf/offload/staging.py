"""Staging buffer pools: the memory payload lives in between the fabric and the media.

Each fabric queue (later: each offload worker) owns a pool.  Buffers are carved out of page
aligned anonymous ``mmap`` slabs, so they suit ``O_DIRECT``, ``recv_into``/``sendmsg`` and (in a
later media) DMA registration; a CMB-backed pool hands out views of the SSD's Controller Memory
Buffer instead.  Sizes are rounded up to a power-of-two class (4 KiB up to ``max_transfer``) and
recycled through per-class free lists, so the steady state allocates nothing.

``budget`` bounds the bytes a pool may hold; when it is spent :meth:`StagingPool.get` returns
``None`` and the request waits (state ``NEED_BUFFER``) for :meth:`StagingPool.wait`.
"""

from __future__ import annotations

import asyncio
import mmap
from collections import deque

MIN_CLASS = 4096


def size_class(length: int) -> int:
    """The buffer size serving ``length`` bytes: a power of two, at least 4 KiB."""
    size = MIN_CLASS
    while size < length:
        size <<= 1
    return size


class StagingBuffer:
    """One buffer of a pool; ``view`` is exactly the requested length."""

    __slots__ = ("_pool", "block", "view")

    def __init__(self, pool: StagingPool | None, block: memoryview, length: int) -> None:
        self._pool = pool
        self.block = block
        self.view = block[:length]

    def release(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool._put(self.block)


class StagingPool:
    """Power-of-two classed, page-aligned buffers with a byte budget."""

    def __init__(self, budget: int = 4 << 20, slab: int = 1 << 20) -> None:
        self.budget = budget
        self.slab = slab
        self.allocated = 0
        self._free: dict[int, list[memoryview]] = {}
        self._maps: list[mmap.mmap] = []
        self._waiters: deque[asyncio.Future[None]] = deque()

    def get(self, length: int) -> StagingBuffer | None:
        """A buffer of ``length`` bytes, or ``None`` when the budget is spent."""
        cls = size_class(length)
        free = self._free.get(cls)
        if free:
            return StagingBuffer(self, free.pop(), length)
        if self.allocated + cls > self.budget and self.allocated:
            return None
        block = self._carve(cls)
        return StagingBuffer(self, block, length)

    def _carve(self, cls: int) -> memoryview:
        """Map a slab for ``cls`` and split it; the first piece is returned, the rest freed."""
        slab = max(cls, min(self.slab, max(self.budget - self.allocated, cls)))
        slab -= slab % cls
        mm = mmap.mmap(-1, slab)
        self._maps.append(mm)
        self.allocated += slab
        view = memoryview(mm)
        pieces = [view[i : i + cls] for i in range(0, slab, cls)]
        self._free.setdefault(cls, []).extend(pieces[1:])
        return pieces[0]

    def _put(self, block: memoryview) -> None:
        self._free.setdefault(len(block), []).append(block)
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                break

    async def wait(self) -> None:
        """Until a buffer comes back."""
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
