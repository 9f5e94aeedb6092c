"""Connections that stall before ICReq, before Connect or inside a PDU are closed after the
idle timeout (issue 7); an established, idle queue is not."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import pytest

from nvmf.config.errors import ConfigError
from nvmf.config.load import parse_config
from nvmf.wire import tcp as w
from nvmf.wire.tcp import PduType
from tests.target.conftest import RunningTarget, running_target
from tests.target.rawhost import RawHost
from tests.target.test_tcp_target import admin, io_queue

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
