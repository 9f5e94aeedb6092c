"""Flow control on a live target (issue 7): a host that stops reading must cost the target a
bounded amount of memory and time, and never stall the other connections."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from nvmf.wire import tcp as w
from nvmf.wire.opcodes import IoOpcode
from tests.target.conftest import RunningTarget, running_target
from tests.target.rawhost import RawHost, status_of
from tests.target.test_tcp_target import admin, io_queue, rw


@pytest.fixture
def one_process() -> Iterator[RunningTarget]:
    """Every queue on one event loop: what one stalled connection would stall."""
    with running_target(0) as running:
        yield running


def _deaf(q: RawHost) -> None:
    """Make ``q``'s receive window as small as the kernel allows (it is not going to read)."""
    q.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)


def _read_latency(q: RawHost, seconds: float) -> float:
    """The worst latency of 4 KiB reads on ``q`` issued back to back for ``seconds``."""
    worst = 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.monotonic()
        cqe, _ = q.command_data(rw(q.next_cid(), IoOpcode.READ, 1, 0, 8, 4096))
        assert status_of(cqe).ok
        worst = max(worst, time.monotonic() - t0)
    return worst


def test_term_req_to_a_host_that_does_not_read_blocks_nothing(one_process: RunningTarget) -> None:
    """Two hosts that do not read break the protocol: their TermReqs cannot be sent, and the
    target must not wait for them (it used to block up to 1 s per host)."""
    target = one_process
    adm = admin(target)
    bystander = io_queue(target, adm)
    victims = [io_queue(target, adm, qid=qid) for qid in (2, 3)]
    for victim in victims:
        _deaf(victim)
        for _ in range(6):  # 6 MiB of read data: more than the socket buffers hold
            sqe = rw(victim.next_cid(), IoOpcode.READ, 1, 0, 2048, 1 << 20)
            victim.send(victim.conn.capsule_cmd(sqe.encode()))
    time.sleep(0.5)  # the reads complete; their data fills the socket buffers
    for victim in victims:
        victim.send(w.CH.pack(0x0F, 0, 8, 0, 8))  # an unknown PDU type: fatal
    worst = _read_latency(bystander, 2.5)
    assert worst < 0.9, f"a bystander waited {worst:.3f} s"
    # The target let go of the victims' connections soon after (their TermReqs not sent).
    queues = target.service.transports["tcp"]._queues  # type: ignore[attr-defined]
    deadline = time.monotonic() + 5
    while any(tq.qid in (2, 3) for qs in queues.values() for tq in qs):
        assert time.monotonic() < deadline, "a victim's queue is still open"
        time.sleep(0.05)
