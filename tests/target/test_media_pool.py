"""A medium that can move payload only from memory of its own (an SSD's DMA: VFIO-mapped DRAM
or its CMB) names that pool (``MediaQueue.pool``): every Read and Write on it, in-capsule Writes
included, reaches the medium in a buffer of that pool, and the counters say where payload was
staged.  A medium that refuses a serving setup (:class:`~nvmf.media.base.ServingCheck`) stops
the target at start with its reason.

The medium here is RAM behind a queue that checks, as the SSD's would, that every buffer lies in
its pool's region; the real one is tests/guest/test_nvme_pci_target_guest.py.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Collection, Iterator
from typing import Any

import pytest

from nvmf.control.model import NamespaceMedia, TargetConfig
from nvmf.control.service import TargetService
from nvmf.media.base import MediaHandle
from nvmf.media.factory import Namespace, register_media_kind
from nvmf.media.queue import Done, MediaQueue
from nvmf.media.ram import RamMedia
from nvmf.memory.source import DramSource, Region
from nvmf.memory.staging import StagingPool
from nvmf.pci.dma import buffer_address
from nvmf.wire.opcodes import IoOpcode
from nvmf.wire.status import Status
from tests.target.conftest import SUBNQN, RunningTarget, make_config, running_target
from tests.target.rawhost import status_of
from tests.target.test_tcp_target import admin, io_queue, rw

BLOCK = 512


class _CmbLike(DramSource):
    placement = "cmb"

    def map(self, size: int) -> Region:
        region = super().map(size)
        region.placement = "cmb"
        return region


class PoolQueue:
    """RAM behind a queue that takes payload only from its own pool's region."""

    memory: memoryview | None = None

    def __init__(self, media: RamMedia, pool: StagingPool) -> None:
        self.media = media
        self.pool: StagingPool | None = pool
        self.base = buffer_address(pool.region.view)
        self.seen: list[int] = []

    def submit(
        self, op: int, offset: int, buf: memoryview | None, fua: bool, done: Done, tag: Any
    ) -> Status | None:
        inner = RamMedia.open_queue(self.media)  # the plain RAM queue underneath
        if buf is not None:
            where = buffer_address(buf) - self.base
            assert where >= 0 and where + len(buf) <= len(self.pool.region.view), "not in pool"
            self.seen.append(len(buf))
        status = inner.submit(op, offset, buf, fua, done, tag)
        assert status is not None
        asyncio.get_running_loop().call_soon(done, tag, status)  # completes later, as DMA does
        return None


class PoolMedia(RamMedia):
    kind = "pooled"

    def __init__(self, size: int) -> None:
        super().__init__(size, BLOCK)
        self.queue = PoolQueue(self, StagingPool(4 << 20, _CmbLike()))

    def open_queue(self) -> MediaQueue:
        return self.queue

    def share(self) -> tuple[MediaHandle, int | None]:
        raise ValueError("not shareable")

    def serving_problem(self, workers: int, trtypes: Collection[str]) -> str | None:
        return "pooled media run with --workers 0" if workers else None


def _open(ns: Namespace) -> PoolMedia:
    assert ns.media.size is not None
    return PoolMedia(ns.media.size)


register_media_kind("pooled", _open)


def _pooled(cfg: TargetConfig) -> None:
    cfg.subsystems[0].namespaces[0].media = NamespaceMedia(kind="pooled", size=16 << 20)


@pytest.fixture
def pooled() -> Iterator[RunningTarget]:
    with running_target(0, edit=_pooled) as running:
        yield running


def test_payload_reaches_the_medium_in_its_own_pool(pooled: RunningTarget) -> None:
    adm = admin(pooled)
    q = io_queue(pooled, adm)
    media = pooled.service.subsystems[SUBNQN].namespaces[1].media
    assert isinstance(media, PoolMedia)
    own = pooled.service.pool
    taken = own.taken
    big = os.urandom(128 * 1024)  # after an R2T
    small = os.urandom(4096)  # in the capsule: copied into the medium's pool
    for slba, payload, incapsule in ((100, big, False), (900, small, True)):
        nlb = len(payload) // BLOCK
        cqe = q.command(rw(q.next_cid(), IoOpcode.WRITE, 1, slba, nlb, len(payload)), payload,
                        incapsule=incapsule)  # fmt: skip
        assert status_of(cqe).ok, status_of(cqe)
        cqe, back = q.command_data(rw(q.next_cid(), IoOpcode.READ, 1, slba, nlb, len(payload)))
        assert status_of(cqe).ok and back == payload
    assert media.queue.seen == [len(big), len(big), len(small), len(small)]
    pool = media.queue.pool
    assert pool is not None
    for _ in range(500):  # the last Read's buffer comes back once the kernel has its data
        if not pool.in_use:
            break
        time.sleep(0.01)
    assert pool.in_use == 0
    # The fabric queue's own pool served no Read and no R2T Write of this namespace.
    assert own.taken - taken <= 1  # at most the in-capsule receive buffer
    counters = pooled.service.counters[(SUBNQN, 1)]
    assert counters.staged_cmb_bytes == 2 * (len(big) + len(small))
    assert counters.staged_dram_bytes == 0


def test_a_medium_refusing_workers_stops_the_start() -> None:
    cfg = make_config(workers=2)
    _pooled(cfg)
    service = TargetService(cfg)
    with pytest.raises(ValueError, match=f"{SUBNQN} namespace 1: pooled media run with"):
        asyncio.run(service.start())
    assert not service.ports and not service.subsystems


@pytest.mark.parametrize("stuck", ["does-not-read", "sends-no-data"])
def test_a_stuck_host_holds_only_its_share_of_the_mediums_pool(
    pooled: RunningTarget, stuck: str
) -> None:
    """A medium's own pool (an SSD's DMA memory) is shared out per queue like the process's:
    a host that keeps its Reads' buffers by not reading, or its Writes' by sending no data,
    leaves another host's queue on the same namespace served."""
    bad_adm = admin(pooled)
    bad = io_queue(pooled, bad_adm)
    bad.deafen()
    op = IoOpcode.READ if stuck == "does-not-read" else IoOpcode.WRITE
    length = 1 << 20  # 16 commands of 1 MiB: four times the medium's 4 MiB pool
    bad.send(bad.capsules(rw(cid, op, 1, 0, length // BLOCK, length) for cid in range(16)))
    time.sleep(0.5)  # it takes what it can
    adm = admin(pooled)
    q = io_queue(pooled, adm)
    q.sock.settimeout(10)  # a queue left waiting for a buffer fails here
    for slba in range(0, 4096, 1024):
        cqe, data = q.command_data(rw(q.next_cid(), IoOpcode.READ, 1, slba, 512, 256 << 10))
        assert status_of(cqe).ok and len(data) == 256 << 10
        cqe = q.command(rw(q.next_cid(), IoOpcode.WRITE, 1, slba, 8, 4096), data[:4096])
        assert status_of(cqe).ok
    for host in (q, adm, bad, bad_adm):
        host.close()
