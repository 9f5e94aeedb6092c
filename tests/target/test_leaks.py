"""Connections that end badly leave nothing behind (issue 7), under uvloop as the CLI runs it."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
import uvloop

from nvmf.control.service import TargetService
from nvmf.transport.tcp import TcpQueue
from nvmf.wire import tcp as w
from tests.target.conftest import RunningTarget, make_config


@pytest.fixture
def uvloop_target() -> Iterator[RunningTarget]:
    """A one-process target on a uvloop event loop in a background thread."""
    loop = uvloop.new_event_loop()
    service = TargetService(make_config(workers=0))
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(service.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(30)
    addr = service.transports["tcp"].bound_address(service.ports[0])
    try:
        yield RunningTarget(service, loop, addr)
    finally:
        asyncio.run_coroutine_threadsafe(service.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


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
    deadline = time.monotonic() + 5
    while (_descriptors(), _queues()) != (fds, queues):
        left = (_descriptors() - fds, _queues() - queues)
        assert time.monotonic() < deadline, f"(descriptors, queues) left behind: {left}"
        time.sleep(0.1)
