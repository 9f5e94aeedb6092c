"""Staging buffer pools: size classes, page alignment, one preallocated region cut into buddies,
the budget, waiters, reuse, and merging (a size class never starves because smaller buffers
were handed out and came back)."""

from __future__ import annotations

import asyncio
import ctypes
import itertools
from collections.abc import Coroutine
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nvmf.memory.staging import (
    MAX_CLASS,
    MIN_CLASS,
    QUEUE_SHARE,
    Staging,
    StagingBuffer,
    StagingPool,
    StagingShare,
    largest_class,
    size_class,
)

PAGE = 4096
KiB = 1024
MiB = 1 << 20


def address(view: memoryview) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 5))


async def settle() -> None:
    """Let every ready task run."""
    for _ in range(5):
        await asyncio.sleep(0)


# -- size classes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "cls"),
    [
        (0, 4096),
        (1, 4096),
        (4096, 4096),
        (4097, 8192),
        (65536, 65536),
        (65537, 131072),
        (MiB, MiB),
        (MiB + 1, 2 * MiB),
    ],
)
def test_size_class(length: int, cls: int) -> None:
    assert size_class(length) == cls


@given(st.integers(0, 64 * MiB))
def test_size_class_is_the_smallest_power_of_two(length: int) -> None:
    cls = size_class(length)
    assert cls & (cls - 1) == 0
    assert cls >= max(length, MIN_CLASS)
    assert cls == MIN_CLASS or cls // 2 < length


# -- buffers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 512, 4096, 5000, 65536, 100_000, MiB])
def test_buffer_view_is_exact_writable_and_page_aligned(length: int) -> None:
    pool = StagingPool(budget=16 * MiB)
    bufs = [pool.get(length) for _ in range(3)]
    for buf in bufs:
        assert buf is not None
        assert len(buf.view) == length and len(buf.block) == size_class(length)
        assert address(buf.view) % PAGE == 0
        buf.view[:] = b"\xa5" * length
        assert bytes(buf.view[-1:]) == b"\xa5"
    # Distinct, non-overlapping blocks.
    starts = sorted(address(b.block) for b in bufs if b is not None)
    assert all(b - a >= size_class(length) for a, b in itertools.pairwise(starts))


def test_buffers_are_reused() -> None:
    pool = StagingPool(budget=64 * MiB)
    first = pool.get(4096)
    assert first is not None
    where = address(first.block)
    first.release()
    again = pool.get(3000)
    assert again is not None and address(again.block) == where
    big = pool.get(200_000)
    assert big is not None
    big_at = address(big.block)
    big.release()
    big2 = pool.get(131073)
    assert big2 is not None and address(big2.block) == big_at


def test_release_is_idempotent() -> None:
    pool = StagingPool(budget=MiB)
    buf = pool.get(8192)
    assert buf is not None
    free = pool.free
    buf.release()
    buf.release()
    assert pool.in_use == 0 and pool.free == free + 8192
    a, b = pool.get(8192), pool.get(8192)
    assert a is not None and b is not None
    assert address(a.block) != address(b.block)  # the block was not cached twice


def test_a_buffer_without_a_pool() -> None:
    block = memoryview(bytearray(4096))
    buf = StagingBuffer(None, block, 100)
    assert len(buf.view) == 100
    buf.release()  # nothing to give back to


# -- budget ------------------------------------------------------------------------------------


def test_budget_on_bytes_in_use() -> None:
    pool = StagingPool(budget=16 * KiB)
    a, b = pool.get(8192), pool.get(5000)
    assert a is not None and b is not None and pool.in_use == 16 * KiB
    assert pool.get(1) is None  # every byte is in use
    a.release()
    assert pool.in_use == 8 * KiB
    assert pool.get(16 * KiB) is None
    c = pool.get(8192)
    assert c is not None and pool.in_use == 16 * KiB


@pytest.mark.parametrize(
    ("budget", "largest"),
    [(8 * KiB, 8 * KiB), (12 * KiB, 8 * KiB), (96 * KiB, 64 * KiB), (32 * MiB, MAX_CLASS)],
)
def test_the_largest_buffer_is_what_the_region_holds_in_one_block(
    budget: int, largest: int
) -> None:
    """MDTS follows it: a buffer larger than the pool could ever hold would wait forever."""
    pool = StagingPool(budget=budget)
    assert pool.max_buffer == largest_class(budget) == largest
    buf = pool.get(largest)
    assert buf is not None and len(buf.view) == largest
    with pytest.raises(ValueError, match="exceeds the pool's largest"):
        pool.get(largest + 1)


def test_a_pool_smaller_than_a_page_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 4096"):
        StagingPool(budget=2048)


def test_every_buffer_lies_in_the_one_region_mapped_at_start() -> None:
    """Preallocated: the whole budget is mapped (and populated) when the pool is made, and
    every buffer is a piece of that region, so consumers can register it once."""
    pool = StagingPool(budget=MiB)
    base = address(pool.region.view)
    assert pool.region.size == MiB and pool.placement == "dram"
    held = [pool.get(n) for n in (4096, 8192, 65536, 200_000, 4096)]
    for buf in held:
        assert buf is not None
        at = address(buf.block)
        assert base <= at and at + len(buf.block) <= base + MiB
        assert at - base == buf.offset


def test_a_release_wakes_an_acquire_waiter() -> None:
    async def main() -> None:
        pool = StagingPool(budget=8 * KiB)
        held = pool.get(8192)
        assert held is not None
        task = asyncio.create_task(pool.acquire(4096))
        await settle()
        assert not task.done()
        held.release()
        buf = await asyncio.wait_for(task, 1)
        assert len(buf.view) == 4096 and pool.in_use == 4096
        # Counted: two buffers handed out, one wait for a buffer (NEED_BUFFER).
        assert pool.stats() == {
            "budget": 8 * KiB,
            "in_use": 4096,
            "free": 4096,
            "max_buffer": 8 * KiB,
            "taken": 2,
            "waits": 1,
        }

    run(main())


def test_waiters_are_served_one_per_release() -> None:
    async def main() -> None:
        pool = StagingPool(budget=8 * KiB)
        a, b = pool.get(4096), pool.get(4096)
        assert a is not None and b is not None
        tasks = [asyncio.create_task(pool.acquire(4096)) for _ in range(3)]
        await settle()
        assert not any(t.done() for t in tasks)
        a.release()
        await settle()
        assert [t.done() for t in tasks] == [True, False, False]
        b.release()
        await settle()
        assert [t.done() for t in tasks] == [True, True, False]
        tasks[0].result().release()
        await settle()
        assert all(t.done() for t in tasks)

    run(main())


def test_a_waiter_that_fits_is_woken_even_behind_one_that_does_not() -> None:
    """A release that makes room for a waiting request must wake it.

    64 KiB budget with 52 KiB in use: A waits for 64 KiB (can never fit while anything is in
    use), B waits for 16 KiB.  Releasing 4 KiB leaves 48 KiB in use, so B fits exactly; only A
    is woken, fails again and goes back to sleep, and B sleeps on with room for it.
    """

    async def main() -> None:
        pool = StagingPool(budget=64 * KiB)
        x, y, z = pool.get(32 * KiB), pool.get(16 * KiB), pool.get(4 * KiB)
        assert x is not None and y is not None and z is not None
        big = asyncio.create_task(pool.acquire(64 * KiB))
        await settle()
        small = asyncio.create_task(pool.acquire(16 * KiB))
        await settle()
        assert not big.done() and not small.done()
        z.release()
        await settle()
        assert small.done(), "a waiter that fits was left asleep after a release"
        assert pool.in_use == 64 * KiB  # 48 KiB plus the small waiter's 16 KiB
        assert not big.done()  # woken too, still does not fit, waits again
        big.cancel()

    run(main())


def test_a_large_class_is_served_after_small_classes_filled_the_cache() -> None:
    pool = StagingPool(budget=MiB)
    small = [pool.get(4096) for _ in range(256)]
    assert all(b is not None for b in small) and pool.in_use == MiB
    for b in small:
        assert b is not None
        b.release()
    assert pool.in_use == 0
    big = pool.get(512 * KiB)
    assert big is not None and len(big.view) == 512 * KiB
    assert address(big.view) % PAGE == 0
    # The idle small buffers did not count against the budget.
    half = pool.get(256 * KiB)
    assert half is not None and pool.in_use == 768 * KiB


def test_a_steady_stream_of_one_size_neither_splits_nor_merges() -> None:
    """Released buffers go back to their class as they are: the next one of that size is the
    same block, at the cost of a list pop."""
    pool = StagingPool(budget=MiB)
    first = pool.get(4096)
    assert first is not None
    where = first.offset
    first.release()
    for _ in range(100):
        buf = pool.get(4096)
        assert buf is not None and buf.offset == where
        buf.release()
    assert pool.taken == 101


operations = st.lists(
    st.one_of(
        st.tuples(st.just("get"), st.sampled_from([1, 4096, 5000, 16384, 65536, 100_000, MiB])),
        st.tuples(st.just("release"), st.integers(0, 1 << 16)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(budget=st.sampled_from([64 * KiB, MiB, 4 * MiB, 16 * MiB]), ops=operations)
def test_pool_invariants(budget: int, ops: list[tuple[str, int]]) -> None:
    pool = StagingPool(budget=budget)
    held: list[StagingBuffer] = []
    for op, arg in ops:
        if op == "get":
            buf = pool.get(min(arg, pool.max_buffer))
            if buf is None:
                assert held, "nothing in use, yet no buffer"
            else:
                held.append(buf)
        elif held:
            held.pop(arg % len(held)).release()
        assert pool.in_use == sum(len(b.block) for b in held) <= budget
        free_blocks = [b for free in pool._free.values() for b in free]
        assert pool.free == sum(len(b.block) for b in free_blocks)
        # Held and free blocks tile the region: no overlap, no gap, each aligned to its size.
        spans = sorted((b.offset, len(b.block)) for b in [*held, *free_blocks])
        assert spans[0][0] == 0 and sum(n for _, n in spans) == budget
        assert all(a + n == b for (a, n), (b, _) in itertools.pairwise(spans))
        assert all(o % n == 0 for o, n in spans)
    # Everything back: the largest buffer is served again (merging undid every split).
    for buf in held:
        buf.release()
    assert pool.get(pool.max_buffer) is not None


# -- a queue's share ----------------------------------------------------------------------------


def test_a_share_holds_a_queue_to_its_part_and_leaves_the_rest_to_others() -> None:
    """A queue that never gives its buffers back (its host does not read, or sends no data)
    holds at most its share; another queue's share still gets buffers from the same pool."""
    pool = StagingPool(budget=32 * MiB)
    stuck, other = StagingShare(pool), StagingShare(pool)
    assert stuck.limit == 32 * MiB // QUEUE_SHARE
    held = []
    while (buf := stuck.get(MiB)) is not None:
        held.append(buf)
    assert len(held) * MiB == stuck.held == stuck.limit
    assert pool.in_use == stuck.limit and pool.free > 0
    assert stuck.get(4096) is None  # even the smallest buffer: the share is spent
    mine = other.get(MiB)
    assert mine is not None and other.held == MiB
    # A released buffer returns to its share and to the pool.
    held.pop().release()
    assert stuck.held == stuck.limit - MiB and pool.in_use == stuck.limit
    mine.release()
    assert other.held == 0 and pool.in_use == stuck.limit - MiB


def test_an_empty_share_always_fits_the_largest_buffer() -> None:
    """However small the pool, a queue holding nothing may take one buffer of any size the pool
    hands out (MDTS is never more than that), so every valid command can run."""
    pool = StagingPool(budget=MiB)
    share = StagingShare(pool)
    assert share.limit == pool.max_buffer == MiB
    buf = share.get(MiB)
    assert buf is not None and share.get(4096) is None
    buf.release()
    assert share.get(MiB) is not None


def test_a_share_at_its_limit_waits_for_its_own_release() -> None:
    async def main() -> None:
        pool = StagingPool(budget=8 * MiB)
        share = StagingShare(pool)
        held = [share.get(MiB), share.get(MiB)]  # 2 MiB: the share of an 8 MiB pool
        task = asyncio.create_task(share.acquire(MiB))
        await settle()
        assert not task.done() and pool.free == 6 * MiB  # the pool has room, the share has not
        buf = held[0]
        assert buf is not None
        buf.release()
        got = await asyncio.wait_for(task, 1)
        assert len(got.view) == MiB and share.held == 2 * MiB

    run(main())


# -- the Staging contract, on both kinds -----------------------------------------------------------


@pytest.fixture(params=["pool", "share"])
def staging(request: pytest.FixtureRequest) -> Staging:
    """A :class:`~nvmf.memory.staging.Staging` of 4 MiB of buffers: a pool, or a queue's
    share of a pool four times as large (the share allows the same 4 MiB)."""
    if request.param == "pool":
        return StagingPool(budget=4 * MiB)
    return StagingShare(StagingPool(budget=4 * MiB * QUEUE_SHARE))


def test_staging_gives_buffers_of_the_length_asked_inside_its_region(staging: Staging) -> None:
    region = staging.region.view
    base = address(region)
    for length in (1, 4096, 5000, staging.max_buffer):
        buf = staging.get(length)
        assert buf is not None and len(buf.view) == length
        assert base <= address(buf.view) < base + len(region)
        assert buf.region is staging.region
        buf.release()
    assert staging.placement == staging.region.placement == "dram"


def test_staging_says_none_when_spent_and_acquire_waits_for_a_release(staging: Staging) -> None:
    async def main() -> None:
        held = [staging.get(MiB) for _ in range(4)]
        assert all(b is not None for b in held)
        assert staging.get(4096) is None
        task = asyncio.create_task(staging.acquire(MiB))
        await settle()
        assert not task.done()
        first = held[0]
        assert first is not None
        first.release()
        buf = await asyncio.wait_for(task, 1)
        assert len(buf.view) == MiB

    run(main())
