"""RAM namespaces move payload in place (``MediaQueue.memory``): a Read's data is sent straight
from the medium and an R2T Write's data is received straight into it, so the staging pool is
never touched, yet every byte lands where the LBA says and nothing beside it moves.  A null
namespace's memory is read-only zeroes: Reads only."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from nvmf.control.model import NamespaceMedia, TargetConfig
from nvmf.wire.opcodes import IoOpcode
from tests.target.conftest import RunningTarget, running_target
from tests.target.rawhost import RawHost, status_of
from tests.target.test_tcp_target import admin, io_queue, rw

BLOCK = 512


@pytest.fixture
def one_process() -> Iterator[RunningTarget]:
    """The target serving I/O itself, so its staging pool can be looked at."""
    with running_target(0) as running:
        yield running


def test_ram_reads_and_r2t_writes_take_no_staging_buffer(one_process: RunningTarget) -> None:
    adm = admin(one_process)
    q = io_queue(one_process, adm)
    pool = one_process.service.pool
    taken = pool.taken  # the admin queue's own commands may use staging
    payload = os.urandom(128 * 1024)  # larger than the in-capsule size: sent after an R2T
    nlb = len(payload) // BLOCK
    slba = 1000
    write = rw(q.next_cid(), IoOpcode.WRITE, 1, slba, nlb, len(payload))
    cqe = q.command(write, payload, incapsule=False)
    assert status_of(cqe).ok, status_of(cqe)
    cqe, back = q.command_data(rw(q.next_cid(), IoOpcode.READ, 1, slba, nlb, len(payload)))
    assert status_of(cqe).ok and back == payload
    # One block either side, never written, still reads as zeroes.
    edges = nlb + 2
    cqe, around = q.command_data(rw(q.next_cid(), IoOpcode.READ, 1, slba - 1, edges, edges * BLOCK))
    assert status_of(cqe).ok
    assert around == bytes(BLOCK) + payload + bytes(BLOCK)
    assert (pool.taken, pool.in_use) == (taken, 0)


def test_a_queue_with_data_digests_stages_its_payload(one_process: RunningTarget) -> None:
    """Seen in CI: with digests on, a Read sent in place had its digest computed over bytes a
    Write from another worker changed before they left, and the host saw a digest error
    (Data Transfer Error).  A queue with data digests stages every payload; its data and
    digests stay consistent."""
    adm = admin(one_process)
    q = io_queue(one_process, adm, ddgst=True)
    pool = one_process.service.pool
    taken = pool.taken
    payload, back = _write_and_read_back(q, 4000)
    assert back == payload
    assert pool.taken == taken + 2
    for _ in range(500):  # the Read's buffer comes back once the target's send has finished,
        if not pool.in_use:  # which may be after this host has read the data
            break
        time.sleep(0.01)
    assert pool.in_use == 0


def _write_and_read_back(q: RawHost, slba: int) -> tuple[bytes, bytes]:
    """Write 128 KiB of random data at ``slba`` (sent after an R2T: more than the in-capsule
    size), then read the range back; both succeed.  The data written and the data read."""
    payload = os.urandom(128 * 1024)
    nlb = len(payload) // BLOCK
    write = rw(q.next_cid(), IoOpcode.WRITE, 1, slba, nlb, len(payload))
    assert status_of(q.command(write, payload, incapsule=False)).ok
    cqe, back = q.command_data(rw(q.next_cid(), IoOpcode.READ, 1, slba, nlb, len(payload)))
    assert status_of(cqe).ok
    return payload, back


def _null_namespace(cfg: TargetConfig) -> None:
    cfg.subsystems[0].namespaces[0].media = NamespaceMedia(kind="null", size=64 << 20)


def test_null_reads_are_sent_from_zeroes_and_writes_are_staged() -> None:
    """A null namespace's memory is read-only zeroes: a Read takes no staging buffer and reads
    zeroes even where a Write just went; the Write itself is received into a staging buffer
    (never into the zeroes) and vanishes."""
    with running_target(0, edit=_null_namespace) as running:
        adm = admin(running)
        q = io_queue(running, adm)
        pool = running.service.pool
        taken = pool.taken
        payload, back = _write_and_read_back(q, 64)
        assert back == bytes(len(payload))
        assert pool.taken == taken + 1  # the Write's buffer; the Read took none
