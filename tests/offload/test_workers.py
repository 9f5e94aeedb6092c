"""The offload data plane split: I/O queues handed to worker processes after their Connect.

Every target test in ``tests/target`` already runs with two workers (its ``target`` fixture is
parametrized); these tests check what only the split has: where queues go, what the control
plane keeps, counters, forwarded commands, a worker's death, and stopping.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nvmf.control.service import RemoteQueue
from nvmf.protocol import tcp as codec
from nvmf.wire.identify import NSID_ALL
from nvmf.wire.opcodes import AdminOpcode, IoOpcode
from nvmf.wire.sqe import Cqe, SglDescriptor, Sqe
from nvmf.wire.status import SC
from tests.serving import nvmf_serve
from tests.target.conftest import SUBNQN, RunningTarget, running_target
from tests.target.rawhost import RawHost, status_of
from tests.target.test_features_aer import smart_log
from tests.target.test_tcp_target import admin, io_queue, rw

BLOCK = 512


def _call(target: RunningTarget, coro: Any) -> Any:
    return asyncio.run_coroutine_threadsafe(coro, target.loop).result(10)


def _counters(target: RunningTarget) -> list[dict[str, Any]]:
    workers = target.service.workers
    assert workers is not None
    result: list[dict[str, Any]] = _call(target, workers.counters())
    return result


def _write_read(q: RawHost, slba: int, payload: bytes) -> bytes:
    nlb = len(payload) // BLOCK
    cqe = q.command(rw(q.next_cid(), IoOpcode.WRITE, 1, slba, nlb, len(payload)), payload)
    assert status_of(cqe).ok, status_of(cqe)
    cqe, back = q.command_data(rw(q.next_cid(), IoOpcode.READ, 1, slba, nlb, len(payload)))
    assert status_of(cqe).ok, status_of(cqe)
    return back


def _target_sockets(port: int) -> list[str]:
    """Descriptors of this process that are TCP sockets bound to the target's port."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            fd = int(name)
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            s = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        with s:
            try:
                local = s.getsockname()
            except OSError:
                continue
            if s.family in (socket.AF_INET, socket.AF_INET6) and local[1] == port:
                found.append(f"fd {fd} {local}")
    return found


@pytest.fixture
def two_workers() -> Iterator[RunningTarget]:
    with running_target(2) as target:
        yield target


def test_queues_spread_across_workers_and_leave_the_control_plane(
    two_workers: RunningTarget,
) -> None:
    target = two_workers
    adm = admin(target)
    queues = [io_queue(target, adm, qid) for qid in (1, 2)]
    for i, q in enumerate(queues):
        payload = bytes([i + 1]) * 8192
        assert _write_read(q, 100 * i, payload) == payload
    counters = _counters(target)
    assert [c["queues_attached"] for c in counters] == [1, 1]
    for c in counters:
        ns = c["namespaces"][f"{SUBNQN}/1"]
        assert ns["write_cmds"] == 1 and ns["read_cmds"] == 1, c
        assert ns["write_blocks"] == 16 and ns["read_blocks"] == 16, c
        # Each worker's staging pool reports itself: every buffer back, nobody waited.
        staging = c["staging"]
        assert staging["in_use"] == 0 and staging["waits"] == 0, staging
        assert staging["budget"] == target.service.settings.staging_bytes, staging
    # The control plane keeps its listener and the admin queue's socket, nothing of the I/O
    # queues: their places in the controller are stand-ins.
    sockets = _target_sockets(target.addr[1])
    assert len(sockets) == 2, sockets
    ctrl = next(iter(target.service.subsystems[SUBNQN].controllers.values()))
    assert all(isinstance(ctrl.queues[qid].fabric, RemoteQueue) for qid in (1, 2))
    for q in queues:
        q.close()
    adm.close()


def test_other_io_commands_get_their_status_from_the_control_plane(
    two_workers: RunningTarget,
) -> None:
    target = two_workers
    adm = admin(target)
    q = io_queue(target, adm)
    # Reservation Report is no fast-path command: the worker asks; the answer is the control
    # plane's (this target implements no reservations), and the worker sends it.
    sqe = Sqe(opcode=0x0E, cid=q.next_cid(), nsid=1)
    sqe.sgl = SglDescriptor.tcp_transport(0)
    status = status_of(q.command(sqe))
    assert status.code == SC.INVALID_OPCODE and status.dnr
    assert sum(c["forwarded"] for c in _counters(target)) == 1
    assert sum(c["errors"] for c in _counters(target)) == 1
    payload = b"\x5a" * 4096
    assert _write_read(q, 7, payload) == payload  # the queue goes on
    q.close()
    adm.close()


def test_the_workers_count_a_controllers_commands_for_its_keep_alive(
    two_workers: RunningTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``WorkerSet.traffic``: the commands the workers received on one controller's queues
    (traffic-based keep-alive); None, not a count, while a worker cannot answer (stopped), so
    that a stalled worker does not end its host's controller."""
    target = two_workers
    workers = target.service.workers
    assert workers is not None
    adm = admin(target)
    queues = [io_queue(target, adm, qid) for qid in (1, 2)]
    key = (SUBNQN, adm.cntlid)
    assert _call(target, workers.traffic(key)) == 0
    for i, q in enumerate(queues):
        _write_read(q, i, b"\7" * 512)  # two commands on each queue
    assert _call(target, workers.traffic(key)) == 4
    assert _call(target, workers.traffic((SUBNQN, adm.cntlid + 1))) == 0  # no such queues
    monkeypatch.setattr("nvmf.offload.workers.TRAFFIC_TIMEOUT_S", 0.5)
    stopped = workers.workers[0].pid
    os.kill(stopped, signal.SIGSTOP)
    try:
        assert _call(target, workers.traffic(key)) is None
    finally:
        os.kill(stopped, signal.SIGCONT)
    assert _call(target, workers.traffic(key)) == 4
    assert all(not w.traffic_waits for w in workers.workers)  # nothing left waiting
    for q in [*queues, adm]:
        q.close()


def test_deleting_the_controller_closes_its_queues_in_the_workers(
    two_workers: RunningTarget,
) -> None:
    target = two_workers
    adm = admin(target)
    queues = [io_queue(target, adm, qid) for qid in (1, 2)]
    assert _write_read(queues[0], 0, b"\1" * 512) == b"\1" * 512
    adm.close()  # the admin queue's end deletes the controller
    for q in queues:
        assert q.is_closed(timeout=10)


def test_a_killed_worker_takes_only_its_queues_and_is_replaced(
    two_workers: RunningTarget, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="nvmf")
    target = two_workers
    workers = target.service.workers
    assert workers is not None
    adm = admin(target)
    q1, q2 = io_queue(target, adm, 1), io_queue(target, adm, 2)
    before = b"\xa5" * 4096
    assert _write_read(q1, 50, before) == before
    assert _write_read(q2, 60, before) == before
    counted = smart_log(adm, NSID_ALL)
    victim = next(w for w in workers.workers if w.queues and w.queues_of()[0] == (SUBNQN, 1))
    old_pid = victim.pid
    os.kill(old_pid, signal.SIGKILL)
    assert q1.is_closed(timeout=10)
    # The other worker's queue and the admin queue carry on.
    assert _write_read(q2, 61, b"\x3c" * 4096) == b"\x3c" * 4096
    deadline = time.monotonic() + 30
    while victim.pid == old_pid or victim.channel is None or victim.channel.closed:
        assert time.monotonic() < deadline, "no replacement worker"
        time.sleep(0.1)
    assert victim.restarts == 1
    # The log says how it ended: the kernel's exit status, known once the process is reaped.
    died = [r.getMessage() for r in caplog.records if "died" in r.getMessage()]
    assert died == [
        f"offload worker {victim.index} (pid {old_pid}) died (killed by SIGKILL) with 1 queues; "
        "starting another"
    ]
    ctrl = next(iter(target.service.subsystems[SUBNQN].controllers.values()))
    deadline = time.monotonic() + 10
    while 1 in ctrl.queues:
        assert time.monotonic() < deadline, "qid 1 still in the controller"
        time.sleep(0.05)
    # A new queue 1 lands on a live worker, and what was acknowledged before the kill is there.
    q1 = io_queue(target, adm, 1)
    cqe, back = q1.command_data(rw(q1.next_cid(), IoOpcode.READ, 1, 50, 8, 4096))
    assert status_of(cqe).ok and back == before
    # SMART still counts what the dead worker served (its counters were in the slot's shared
    # table), with the 1 write and 2 reads since: its counts never go down.
    now = smart_log(adm, NSID_ALL)
    assert (now.host_writes, now.host_reads) == (counted.host_writes + 1, counted.host_reads + 2)
    for q in (q1, q2, adm):
        q.close()


def test_a_worker_that_dies_while_the_target_stops_is_not_replaced() -> None:
    """SIGTERM's stop holds new commands and drains the control plane's; a worker that dies
    in that window only loses its queues: starting another just to stop it would delay the
    exit by a worker's start (seconds under emulation)."""
    with running_target(2) as target:
        service, workers = target.service, target.service.workers
        assert workers is not None
        draining, gate = threading.Event(), asyncio.Event()

        async def held_drain() -> None:
            draining.set()
            await gate.wait()

        service.pipeline.drain = held_drain  # type: ignore[method-assign]
        stopped = asyncio.run_coroutine_threadsafe(service.stop(), target.loop)
        assert draining.wait(10)
        victim = workers.workers[0]
        old_pid = victim.pid
        os.kill(old_pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while victim.channel is not None and not victim.channel.closed:
            assert time.monotonic() < deadline, "the killed worker's channel did not close"
            time.sleep(0.05)
        time.sleep(1.0)  # a replacement is spawned as soon as the dead one is reaped
        assert (victim.pid, victim.restarts) == (old_pid, 0)
        target.loop.call_soon_threadsafe(gate.set)
        stopped.result(30)


# -- nvmf serve as a process ------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, list[int]]]:
    """``nvmf serve --workers 2`` with one file namespace (``tmp_path/ns1.img``)."""
    media = tmp_path / "ns1.img"
    config = {
        "ports": [{"portid": 1, "addr": {"trtype": "tcp", "adrfam": "ipv4",
                   "traddr": "127.0.0.1", "trsvcid": "4420"}, "subsystems": [SUBNQN]}],
        "subsystems": [{"nqn": SUBNQN, "attr": {"allow_any_host": "1"},
                        "namespaces": [{"nsid": 1, "enable": 1, "device": {"path": str(media)},
                                        "nvmf": {"kind": "file", "size": "16M"}}]}],
    }  # fmt: skip
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nvmf.cli.main",
            "serve",
            "--workers",
            "2",
            "--trsvcid",
            "0",
            "--config",
            str(path),
            "--control-socket",  # other tests' targets may hold the default one
            "none",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    listening = proc.stdout.readline()
    workers = proc.stdout.readline()
    m = re.search(r":(\d+) ", listening)
    pids = re.search(r"pids ([\d ]+)\)", workers)
    assert m and pids, listening + workers
    try:
        yield proc, int(m.group(1)), [int(p) for p in pids.group(1).split()]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ")[1].startswith("Z"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_sigterm_loses_no_acknowledged_write_and_every_process_exits(
    served: tuple[subprocess.Popen[str], int, list[int]], tmp_path: Path
) -> None:
    proc, port, pids = served
    assert len(pids) == 2 and all(not _gone(p, 0) for p in pids)
    target = RunningTarget(None, None, ("127.0.0.1", port))  # type: ignore[arg-type]
    adm = admin(target)
    # An Asynchronous Event Request held, as the Linux host always keeps one posted: it
    # completes only on an event, so a stop that waited for it would wait its whole grace
    # period, serving on, and then drop the completions of the commands then in flight.
    aer = Sqe(opcode=AdminOpcode.ASYNC_EVENT, cid=adm.next_cid())
    aer.sgl = SglDescriptor.tcp_transport(0)
    adm.send(adm.conn.capsule_cmd(aer.encode()))
    q = io_queue(target, adm)
    # Pipeline writes, stop the target while they are in flight, then collect completions
    # until the queue closes: every acknowledged write is in the file afterwards.  Every
    # write is sent before the signal (a send after it could meet a closed connection).
    slba_of = {}
    for i in range(64):
        payload = bytes([i + 1]) * 4096
        sqe = rw(q.next_cid(), IoOpcode.WRITE, 1, 8 * i, 8, 4096)
        sqe.sgl = SglDescriptor.incapsule(4096)
        q.send(q.conn.capsule_cmd(sqe.encode(), memoryview(payload)))
        slba_of[sqe.cid] = (8 * i, i + 1)
    acked: set[int] = set()
    signalled = False
    while True:  # completions, many per read, until the target closes the queue
        try:
            events = q.events()
        except (ConnectionError, OSError):
            break
        if not events:
            break
        for ev in events:
            assert isinstance(ev, codec.ResponseReceived), ev
            cqe = Cqe.decode(ev.cqe)
            assert status_of(cqe).ok
            acked.add(cqe.cid)
        if not signalled:  # the queue is serving: now stop the target
            proc.send_signal(signal.SIGTERM)
            signalled = True
    assert acked
    # The stop ended the AER, after it had closed the listener: no new host gets in.
    cqe, _ = adm.wait_response()
    assert cqe.cid == aer.cid and status_of(cqe).code == SC.ABORT_REQ, status_of(cqe)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert proc.wait(20) == 0
    assert all(_gone(p, 5) for p in pids)
    # A graceful stop is not reported as a failure: no worker warns of a lost control plane.
    assert proc.stdout is not None
    assert "WARNING" not in proc.stdout.read()
    image = (tmp_path / "ns1.img").read_bytes()
    for cid in acked:
        slba, value = slba_of[cid]
        offset = slba * BLOCK
        assert image[offset : offset + 4096] == bytes([value]) * 4096, f"cid {cid} lost"


def test_workers_die_with_the_control_plane(
    served: tuple[subprocess.Popen[str], int, list[int]],
) -> None:
    proc, _port, pids = served
    proc.kill()
    proc.wait()
    assert all(_gone(p, 5) for p in pids)


def test_queues_go_only_to_ready_workers(two_workers: RunningTarget) -> None:
    """A replacement worker that is still starting gets no queue: its Connect completion would
    wait for the start (a minute under emulation) and the host's connect would time out."""
    target = two_workers
    workers = target.service.workers
    assert workers is not None
    adm = admin(target)
    q1 = io_queue(target, adm, 1)  # worker 0 (both idle: the lower index)
    first, starting = workers.workers
    saved = first.ready, starting.ready
    # Worker 1 serves nothing and would be chosen; make it look like a worker still starting.
    starting.ready = _call(target, _pending_future())
    try:
        q2 = io_queue(target, adm, 2)
        assert _write_read(q2, 0, b"\x11" * 512) == b"\x11" * 512
        counters = _counters(target)
        assert [c["queues_attached"] for c in counters] == [2, 0]
        # With no worker ready, the control plane serves the queue itself.
        first.ready = _call(target, _pending_future())
        q3 = io_queue(target, adm, 3)
        assert _write_read(q3, 8, b"\x22" * 512) == b"\x22" * 512
        ctrl = next(iter(target.service.subsystems[SUBNQN].controllers.values()))
        assert not isinstance(ctrl.queues[3].fabric, RemoteQueue)
    finally:
        first.ready, starting.ready = saved
    for q in (q1, q2, q3, adm):
        q.close()


async def _pending_future() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()


def test_serve_refuses_a_ram_namespace_larger_than_memory(tmp_path: Path) -> None:
    config = {
        "ports": [{"portid": 1, "addr": {"trtype": "tcp", "adrfam": "ipv4",
                   "traddr": "127.0.0.1", "trsvcid": "4420"}, "subsystems": [SUBNQN]}],
        "subsystems": [{"nqn": SUBNQN, "attr": {"allow_any_host": "1"},
                        "namespaces": [{"nsid": 1, "enable": 1,
                                        "nvmf": {"kind": "ram", "size": "1P"}}]}],
    }  # fmt: skip
    path = tmp_path / "big.json"
    path.write_text(json.dumps(config))
    out = subprocess.run(
        [sys.executable, "-m", "nvmf.cli.main", "serve", "--trsvcid", "0", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "does not fit" in out.stderr and "namespace 1" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


class _NoEvents:
    """WorkerEvents for a WorkerSet that never gets a queue."""

    def worker_queue_closed(self, ctrl_key: Any, qid: int, reason: str) -> None:
        raise AssertionError("no queue was handed over")

    async def forwarded(self, ctrl_key: Any, qid: int, sqe: Sqe) -> Any:
        raise AssertionError("no queue was handed over")

    def worker_command_failed(self, *args: Any) -> None:
        raise AssertionError("no queue was handed over")


def test_a_worker_that_cannot_start_fails_the_start_instead_of_looping() -> None:
    """Seen: a worker told to load a transport it does not have died at start, was respawned,
    died again, thousands of times a minute, and the target never listened."""
    from nvmf.offload.workers import WorkerSet

    async def main() -> None:
        workers = WorkerSet(1, _NoEvents(), staging_bytes=1 << 20, transports=["no-such"])
        try:
            with pytest.raises(RuntimeError, match="exited before it was ready"):
                await asyncio.wait_for(workers.start(), 60)
            assert workers.workers[0].restarts == 0
        finally:
            await workers.stop()

    asyncio.run(main())


def test_serve_skips_a_port_of_a_transport_it_does_not_serve(tmp_path: Path) -> None:
    """nvmetcli files may name fc ports next to tcp ones: those are the kernel target's (loading
    warns); the target serves the rest, with workers that start."""
    path = tmp_path / "mixed.json"
    path.write_text(
        json.dumps(
            {
                "ports": [
                    {"portid": 1, "addr": {"trtype": "fc", "adrfam": "fc",
                                            "traddr": "nn-0x1000000044001123:pn-0x2000000055001123",
                                            "trsvcid": "none"},
                     "subsystems": [SUBNQN]},
                    {"portid": 2, "addr": {"trtype": "tcp", "adrfam": "ipv4",
                                            "traddr": "127.0.0.1", "trsvcid": "4420"},
                     "subsystems": [SUBNQN]},
                ],
                "subsystems": [
                    {"nqn": SUBNQN, "attr": {"allow_any_host": "1"},
                     "namespaces": [{"nsid": 1, "enable": 1, "device": {"path": ""},
                                     "nvmf": {"kind": "ram", "size": "1M"}}]}
                ],
            }
        )
    )  # fmt: skip
    with nvmf_serve(path, 1, "--workers", "1") as bound:
        target = RunningTarget(None, None, ("127.0.0.1", bound["127.0.0.1"]))  # type: ignore[arg-type]
        adm = admin(target)
        q = io_queue(target, adm)
        assert _write_read(q, 0, b"\x42" * 4096) == b"\x42" * 4096
        q.close()
        adm.close()
