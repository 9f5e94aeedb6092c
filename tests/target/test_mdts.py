"""MDTS is honest: never more than a staging pool can hold in one buffer (issue 7), so every
valid command gets its buffer once others complete, and a larger one is refused up front."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nvmf.wire.identify import IdentifyController
from nvmf.wire.opcodes import IoOpcode
from nvmf.wire.status import SC
from tests.target.conftest import RunningTarget, running_target
from tests.target.rawhost import is_status, status_of
from tests.target.test_tcp_target import admin, identify, io_queue, rw

BLOCK = 512
SMALL_POOL = 96 * 1024  # holds one 64 KiB buffer at most


@pytest.fixture(params=[0, 2], ids=["one-process", "2-workers"])
def small_pool_target(request: pytest.FixtureRequest) -> Iterator[RunningTarget]:
    with running_target(request.param, staging_bytes=SMALL_POOL) as running:
        yield running


def test_mdts_follows_a_small_staging_pool(small_pool_target: RunningTarget) -> None:
    adm = admin(small_pool_target)
    status, data = identify(adm, 1)
    assert status == 0
    assert IdentifyController.decode(data).mdts == 4  # 2^4 * 4 KiB = 64 KiB
    q = io_queue(small_pool_target, adm)
    nlb = 64 * 1024 // BLOCK
    cqe, back = q.command_data(rw(q.next_cid(), IoOpcode.READ, 1, 0, nlb, nlb * BLOCK))
    assert status_of(cqe).ok and len(back) == nlb * BLOCK
    too_big = 2 * nlb
    cqe, _ = q.command_data(rw(q.next_cid(), IoOpcode.READ, 1, 0, too_big, too_big * BLOCK))
    assert is_status(cqe, SC.INVALID_FIELD)


def test_the_default_pool_keeps_the_1_mib_mdts(target: RunningTarget) -> None:
    status, data = identify(admin(target), 1)
    assert status == 0 and IdentifyController.decode(data).mdts == 8


@pytest.mark.parametrize("staging", [32 << 20, 3 << 20, SMALL_POOL])
def test_with_workers_the_control_plane_maps_only_a_few_buffers(staging: int) -> None:
    """The control plane serves only admin queues when workers serve the I/O queues: its pool
    is a few of the largest buffers, not the workers' whole budget, and MDTS stays the same."""
    with (
        running_target(2, staging_bytes=staging) as two,
        running_target(0, staging_bytes=staging) as one,
    ):
        alone = one.service.pool
        control = two.service.pool
        assert alone.budget == staging - staging % 4096
        assert control.max_buffer == alone.max_buffer
        assert control.budget == min(alone.budget, 4 * alone.max_buffer)
        assert two.service.max_transfer == one.service.max_transfer
