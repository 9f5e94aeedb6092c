"""Connections that stall before ICReq, before Connect, inside a PDU or before the data of
their R2Ts, or whose host takes nothing they send, are closed after the idle timeout (issue 7);
an established, idle queue is not, nor one whose host reads slowly."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import pytest

from nvmf.config.errors import ConfigError
from nvmf.config.load import parse_config
from nvmf.protocol.tcp import R2TReceived, ResponseReceived
from nvmf.wire import tcp as w
from nvmf.wire.opcodes import IoOpcode
from nvmf.wire.sqe import Cqe
from nvmf.wire.tcp import PduType
from tests.target.conftest import RunningTarget, controller, running_target
from tests.target.rawhost import RawHost
from tests.target.test_tcp_target import admin, io_queue, rw

TIMEOUT = 0.4


@pytest.fixture(params=[0, 2], ids=["one-process", "2-workers"])
def short_timeout(request: pytest.FixtureRequest) -> Iterator[RunningTarget]:
    """A target whose configuration sets ``nvmf.idle_timeout_ms`` (the workers get it too)."""
    with running_target(request.param, idle_timeout_ms=int(TIMEOUT * 1000)) as running:
        yield running


def _closed_within(s: socket.socket, seconds: float) -> bool:
    s.settimeout(seconds)
    try:
        while s.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    """Whether ``text`` is logged within a second (the target logs from its own thread)."""
    deadline = time.monotonic() + 1
    while text not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.02)
    return text in caplog.text


def test_no_icreq(short_timeout: RunningTarget, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    s = socket.create_connection(short_timeout.addr)
    assert _closed_within(s, 5)
    assert _logged(caplog, f"closed: waited {TIMEOUT:g} s for an ICReq")


def test_no_connect(short_timeout: RunningTarget, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    host = RawHost(short_timeout.addr)
    host.initialize()
    assert _closed_within(host.sock, 5)
    assert _logged(caplog, f"closed: waited {TIMEOUT:g} s for a Connect")


@pytest.mark.parametrize("part", ["header", "data"])
def test_a_pdu_started_and_not_finished(short_timeout: RunningTarget, part: str) -> None:
    adm = admin(short_timeout)
    if part == "header":
        adm.send(w.CH.pack(PduType.CMD, 0, 72, 0, 72) + bytes(20))
    else:
        adm.send(w.CH.pack(PduType.CMD, 0, 72, 72, 72 + 4096) + bytes(64) + bytes(100))
    assert _closed_within(adm.sock, 5)


def test_an_io_queue_stalled_inside_a_pdu(short_timeout: RunningTarget) -> None:
    """With workers, the I/O queue is served in a worker, which applies the same timeout."""
    adm = admin(short_timeout)
    q = io_queue(short_timeout, adm)
    q.send(w.CH.pack(PduType.CMD, 0, 72, 0, 72) + bytes(20))
    assert _closed_within(q.sock, 5)
    assert not _closed_within(adm.sock, 0.2)


def test_an_idle_established_queue_stays(short_timeout: RunningTarget) -> None:
    adm = admin(short_timeout)
    assert not _closed_within(adm.sock, 4 * TIMEOUT + 1.5)


def test_the_setting_is_loaded_and_checked() -> None:
    assert parse_config({}).nvmf.idle_timeout_ms == 30_000
    assert parse_config({"nvmf": {"idle_timeout_ms": 1500}}).nvmf.idle_timeout_ms == 1500
    with pytest.raises(ConfigError, match="idle_timeout_ms"):
        parse_config({"nvmf": {"idle_timeout_ms": 0}})


def _queue_gone(target: RunningTarget, adm: RawHost, qid: int, seconds: float) -> bool:
    """Whether the target drops I/O queue ``qid`` of ``adm``'s controller within ``seconds``
    (the control plane hears of it from a worker too)."""
    ctrl = controller(target, adm.cntlid)
    deadline = time.monotonic() + seconds
    while qid in ctrl.queues and time.monotonic() < deadline:
        time.sleep(0.05)
    return qid not in ctrl.queues


def test_a_host_that_sends_no_data_for_its_r2ts(short_timeout: RunningTarget) -> None:
    """A Write whose R2T the host never answers holds its staging buffer: after the idle
    timeout with nothing received, the queue ends and the buffer comes back."""
    adm = admin(short_timeout)
    q = io_queue(short_timeout, adm)
    q.send(q.conn.capsule_cmd(rw(1, IoOpcode.WRITE, 1, 0, 8, 4096).encode()))
    (r2t,) = q.events()
    assert isinstance(r2t, R2TReceived)
    assert _closed_within(q.sock, 5)
    assert not _closed_within(adm.sock, 0.2)


def test_a_host_that_takes_nothing_it_is_sent(short_timeout: RunningTarget) -> None:
    """A host that does not read its completions: once the kernel has taken nothing of what
    waits to be sent for the idle timeout, the queue ends (the test must not read to see it:
    the queue's end shows on the target)."""
    adm = admin(short_timeout)
    q = io_queue(short_timeout, adm)
    q.deafen()
    length = 1 << 20
    q.send(q.capsules(rw(cid, IoOpcode.READ, 1, 0, length // 512, length) for cid in range(32)))
    assert _queue_gone(short_timeout, adm, 1, 6)
    assert not _closed_within(adm.sock, 0.2)


def test_a_host_that_reads_slowly_stays(short_timeout: RunningTarget) -> None:
    """What counts is progress: a host that takes its completions slowly, a little every
    fraction of the timeout, keeps its queue however long that takes, and gets every one."""
    adm = admin(short_timeout)
    q = io_queue(short_timeout, adm)
    length = 1 << 20
    count = 32  # more than the sockets' buffers hold: the target has data waiting throughout
    q.send(q.capsules(rw(cid, IoOpcode.READ, 1, 0, length // 512, length) for cid in range(count)))
    deadline = time.monotonic() + 4 * TIMEOUT + 2  # several sweeps, each seeing some progress
    done = 0
    while time.monotonic() < deadline:
        chunk = q.sock.recv(64 << 10)
        assert chunk, "the target closed a queue whose host reads"
        done += sum(isinstance(ev, ResponseReceived) for ev in q.conn.receive(chunk))
        time.sleep(TIMEOUT / 4)
    assert done < count  # still behind: the sweeps above ran with data waiting
    q.sock.settimeout(20)
    while done < count:
        events = q.events()
        assert events, "the target closed a queue whose host reads"
        for ev in events:
            if isinstance(ev, ResponseReceived):
                assert Cqe.decode(ev.cqe).decoded_status().ok
                done += 1
