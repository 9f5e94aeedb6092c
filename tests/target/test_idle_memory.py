"""What an idle connection costs the target (issue 7): at most 32 KiB of memory each."""

from __future__ import annotations

import os
import resource
import socket
import time

import pytest

from nvmf.wire import tcp as w
from tests.target.conftest import running_target

CONNECTIONS = 1000
#: A plain threaded server needs about 16 KiB per connection; twice that is the budget.
BUDGET = 32 << 10


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_an_idle_connection_costs_at_most_32_kib() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * CONNECTIONS + 200
    if soft < need:
        if hard < need:
            pytest.skip(f"needs {need} descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    with running_target(0) as target:
        socks: list[socket.socket] = []
        try:
            warm = socket.create_connection(target.addr)
            warm.sendall(w.icreq())
            assert len(warm.recv(128)) == 128
            socks.append(warm)
            time.sleep(0.2)
            before = _rss()
            for _ in range(CONNECTIONS):
                s = socket.create_connection(target.addr)
                s.sendall(w.icreq())
                socks.append(s)
            for s in socks[1:]:
                s.settimeout(10)
                assert len(s.recv(128)) == 128  # ICResp: the connection is established
            time.sleep(0.2)
            per = (_rss() - before) / CONNECTIONS
        finally:
            for s in socks:
                s.close()
        assert per <= BUDGET, f"{per / 1024:.1f} KiB per idle connection"
