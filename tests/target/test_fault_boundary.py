"""A bug met where the event loop enters one queue's code ends that queue and no other
(:func:`nvmf.transport.base.end_queue_on_bug`).

The medium delivers completions of every queue of a process from one loop (an io_uring's reap,
a thread pool's callbacks): an exception raised while one of them completes must neither leave
its own host waiting for its I/O timeout nor keep the next queue's completions from leaving.
The receive side's boundary is in the transport contract suite
(tests/transport/test_transport_contract.py), on every transport.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from nvmf.protocol.request import Request
from nvmf.wire.opcodes import IoOpcode
from tests.target.conftest import FILE_NSID, controller, running_target, with_file_namespace
from tests.target.rawhost import status_of
from tests.target.test_tcp_target import admin, io_queue, rw


def test_a_bug_completing_a_media_io_ends_only_its_queue(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A Read on a file namespace whose completion raises (injected into that queue's
    transport) closes that queue at once and logs the traceback; another controller's Reads
    of the same namespace go on completing."""
    caplog.set_level(logging.ERROR, logger="nvmf")
    with running_target(0, edit=with_file_namespace(tmp_path / "ns3.img", 4 << 20)) as target:
        adm_a, adm_b = admin(target), admin(target)
        q_a, q_b = io_queue(target, adm_a), io_queue(target, adm_b)
        try:
            fabric = controller(target, adm_a.cntlid).queues[1].fabric

            def complete(req: Request, cqe: bytes) -> None:
                raise RuntimeError("injected fault in a completion")

            fabric.complete = complete
            q_a.sock.settimeout(30)  # a queue left hanging fails here, not at the host's timeout
            with pytest.raises(ConnectionError):
                q_a.command_data(rw(q_a.next_cid(), IoOpcode.READ, FILE_NSID, 0, 8, 4096))
            assert q_a.is_closed(5.0)
            for slba in range(0, 64, 8):
                sqe = rw(q_b.next_cid(), IoOpcode.READ, FILE_NSID, slba, 8, 4096)
                cqe, data = q_b.command_data(sqe)
                assert status_of(cqe).ok, status_of(cqe)
                assert data == bytes(4096)
            bugs = [r for r in caplog.records if "internal error" in r.getMessage()]
            assert bugs, [r.getMessage() for r in caplog.records]
            assert bugs[0].exc_info is not None
            assert "injected fault" in str(bugs[0].exc_info[1])
        finally:
            for host in (q_a, q_b, adm_a, adm_b):
                host.close()
