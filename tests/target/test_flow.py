"""Flow control on a live target (issue 7): a host that stops reading must cost the target a
bounded amount of memory and time, and never stall the other connections."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nvmf.protocol.request import Request
from nvmf.protocol.tcp import R2TReceived, ResponseReceived
from nvmf.transport.tcp import TcpQueue
from nvmf.wire import tcp as w
from nvmf.wire.opcodes import IoOpcode
from nvmf.wire.sqe import Cqe
from tests.target.conftest import (
    FILE_NSID,
    SUBNQN,
    RunningTarget,
    running_target,
    with_file_namespace,
)
from tests.target.rawhost import RawHost, status_of
from tests.target.test_tcp_target import admin, io_queue, rw


@pytest.fixture
def one_process() -> Iterator[RunningTarget]:
    """Every queue on one event loop: what one stalled connection would stall."""
    with running_target(0) as running:
        yield running


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
        victim.deafen()
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


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_host_that_does_not_read_completions_is_held_to_its_queue_depth(
    one_process: RunningTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commands written without ever reading: the target executes at most SQSIZE + 1 of them
    plus the completions the socket buffers hold, its memory stays put, and once the host
    reads, every command completes."""
    target = one_process
    completed = [0]
    original = TcpQueue.complete

    def counting(self: TcpQueue, req: Request, cqe: bytes) -> None:
        if self.qid == 1:
            completed[0] += 1
        original(self, req, cqe)

    monkeypatch.setattr(TcpQueue, "complete", counting)
    adm = admin(target)
    q = io_queue(target, adm)  # SQSIZE 127: 128 commands in flight at most
    completed[0] = 0  # its Connect
    length = 64 << 10
    count = 3000
    capsules = q.capsules(
        rw(cid, IoOpcode.READ, 1, 0, length // 512, length) for cid in range(count)
    )
    sender = threading.Thread(target=q.sock.sendall, args=(capsules,), daemon=True)
    rss0 = _rss()
    q.sock.settimeout(None)
    sender.start()
    time.sleep(1.5)
    with open("/proc/sys/net/ipv4/tcp_wmem") as f:
        wmem_max = int(f.read().split()[2])
    rcvbuf = q.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    in_kernel = (wmem_max + 2 * rcvbuf) // length + 1  # the kernel doubles SO_RCVBUF
    executed = completed[0]
    assert 0 < executed <= 128 + in_kernel, executed
    assert _rss() - rss0 < 64 << 20
    # The host reads now: everything completes.
    q.sock.settimeout(20)
    done = 0
    while done < count:
        events = q.events()
        assert events, "the target closed the connection"
        for ev in events:
            if isinstance(ev, ResponseReceived):
                assert status_of(Cqe.decode(ev.cqe)).ok
                done += 1
    sender.join(10)
    assert completed[0] == count


def test_a_queue_full_of_writes_waiting_for_their_r2ts_takes_their_data(
    target: RunningTarget,
) -> None:
    """The target takes SQSIZE + 1 commands on a queue (one more than a full queue holds by
    the NVMe rule; the Linux host and ours keep that entry free).  When every one is a Write
    waiting for its R2T's data, the target must still read that data (the commands hold every
    capsule credit, but H2CData needs none), or no command it took ever completes."""
    adm = admin(target)
    depth = 8
    q = RawHost(target.addr)
    q.initialize()
    assert status_of(q.connect(SUBNQN, qid=1, cntlid=adm.cntlid, sqsize=depth - 1)).ok
    q.sock.settimeout(10)  # a stalled queue fails here
    length = 8192
    data = {100 + i: bytes([i + 1]) * length for i in range(depth)}
    for cid in data:
        slba = (cid - 100) * (length // 512)
        q.send(q.conn.capsule_cmd(rw(cid, IoOpcode.WRITE, 1, slba, length // 512, length).encode()))
    r2ts: list[R2TReceived] = []
    while len(r2ts) < depth:
        events = q.events()
        assert events, "the target closed the connection"
        r2ts += [ev for ev in events if isinstance(ev, R2TReceived)]
    for r2t in r2ts:
        payload = memoryview(data[r2t.cccid])[r2t.r2to : r2t.r2to + r2t.r2tl]
        q.send(q.conn.h2c_data(r2t.cccid, r2t.ttag, r2t.r2to, payload, last=True))
    done: set[int] = set()
    while len(done) < depth:
        events = q.events()
        assert events, "the target closed the connection"
        for ev in events:
            if isinstance(ev, ResponseReceived):
                cqe = Cqe.decode(ev.cqe)
                assert status_of(cqe).ok, status_of(cqe)
                done.add(cqe.cid)
    assert done == set(data)
    for cid, written in data.items():
        slba = (cid - 100) * (length // 512)
        cqe, back = q.command_data(rw(q.next_cid(), IoOpcode.READ, 1, slba, length // 512, length))
        assert status_of(cqe).ok and back == written, cid
    q.close()
    adm.close()


@pytest.mark.parametrize("workers", [0, 2], ids=["one-process", "2-workers"])
@pytest.mark.parametrize("stuck", ["does-not-read", "sends-no-data"])
def test_a_stuck_host_holds_only_its_share_of_the_staging_pool(
    tmp_path: Path, workers: int, stuck: str
) -> None:
    """A host that stops reading its completions keeps the buffers of the Reads it does not
    take; one that never sends the data its R2Ts ask for keeps its Writes' buffers.  Either
    holds at most its queues' shares of their process's pool: another host's queue on the
    same file namespace, in any process, is still served."""
    edit = with_file_namespace(tmp_path / "ns3.img", 64 << 20)
    with running_target(workers, edit=edit) as target:
        bad_adm = admin(target)
        bad = [io_queue(target, bad_adm, qid) for qid in range(1, max(workers, 1) + 1)]
        op = IoOpcode.READ if stuck == "does-not-read" else IoOpcode.WRITE
        length = 1 << 20
        for q in bad:  # more than the whole pool: 64 MiB a queue, in 1 MiB commands
            q.deafen()
            q.send(
                q.capsules(rw(cid, op, FILE_NSID, 0, length // 512, length) for cid in range(64))
            )
        time.sleep(1)  # they take what they can
        adm = admin(target)
        q = io_queue(target, adm)
        q.sock.settimeout(10)  # a queue left waiting for a buffer fails here
        for slba in range(0, 2048, 512):
            cqe, data = q.command_data(
                rw(q.next_cid(), IoOpcode.READ, FILE_NSID, slba, 512, 256 << 10)
            )
            assert status_of(cqe).ok and len(data) == 256 << 10
            cqe = q.command(rw(q.next_cid(), IoOpcode.WRITE, FILE_NSID, slba, 8, 4096), data[:4096])
            assert status_of(cqe).ok
        for host in (q, adm, *bad, bad_adm):
            host.close()
