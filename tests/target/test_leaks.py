"""Connections that end badly leave nothing behind (issue 7), under uvloop as the CLI runs it."""

from __future__ import annotations

import gc
import os
import socket
import struct
import time
from collections.abc import Iterator

import pytest
import uvloop

from nvmf.transport.tcp import TcpQueue
from nvmf.wire import tcp as w
from tests.target.conftest import RunningTarget, running_target


@pytest.fixture
def uvloop_target() -> Iterator[RunningTarget]:
    """A one-process target on a uvloop event loop in a background thread."""
    with running_target(0, new_loop=uvloop.new_event_loop) as running:
        yield running


def _descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def _queues() -> int:
    gc.collect()
    return sum(isinstance(o, TcpQueue) for o in gc.get_objects())


def _reset_after_partial_pdu(addr: tuple[str, int]) -> None:
    """Half an ICReq, then a TCP reset (SO_LINGER 0)."""
    s = socket.create_connection(addr)
    s.sendall(w.icreq()[:50])
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    time.sleep(0.001)
    s.close()


def test_reset_after_a_partial_pdu_leaks_nothing_under_uvloop(
    uvloop_target: RunningTarget,
) -> None:
    addr = uvloop_target.addr
    _reset_after_partial_pdu(addr)
    time.sleep(0.2)
    fds, queues = _descriptors(), _queues()
    for _ in range(1000):
        _reset_after_partial_pdu(addr)
    # Generous: the target may still be working through 1000 resets on a loaded machine; it
    # is a leak only if they never go.
    deadline = time.monotonic() + 30
    # Fewer than before is no leak: an earlier test's target may close its last descriptors
    # (its workers' channels) only now.
    while _descriptors() > fds or _queues() > queues:
        left = (_descriptors() - fds, _queues() - queues)
        assert time.monotonic() < deadline, f"(descriptors, queues) left behind: {left}"
        time.sleep(0.1)
