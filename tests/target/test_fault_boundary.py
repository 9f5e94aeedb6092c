"""A bug met where the event loop enters one queue's code ends that queue and no other
(:func:`nvmf.transport.base.end_queue_on_bug`).

The medium delivers completions of every queue of a process from one loop (an io_uring's reap,
a thread pool's callbacks): an exception raised while one of them completes must neither leave
its own host waiting for its I/O timeout nor keep the next queue's completions from leaving.
The receive side's boundary is in the transport contract suite
(tests/transport/test_transport_contract.py), on every transport; NVMe/TCP's second one, for
the commands flow control held back, is here.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from nvmf.protocol.request import Request
from nvmf.protocol.tcp import ResponseReceived
from nvmf.wire.opcodes import IoOpcode
from nvmf.wire.sqe import Cqe
from tests.target.conftest import (
    FILE_NSID,
    SUBNQN,
    controller,
    fail_parse,
    running_target,
    with_file_namespace,
)
from tests.target.rawhost import RawHost, status_of
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


def test_a_bug_handling_a_command_held_back_ends_only_its_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A host that sends more than SQSIZE + 1 commands has the extra capsule held back until a
    completion returns credit; the target parses it then, outside the socket's reader
    (``TcpQueue._take_pending``).  A bug met there ends that queue too: the host sees it go
    at once, and another controller's queue goes on."""
    caplog.set_level(logging.ERROR, logger="nvmf")
    with running_target(0, edit=with_file_namespace(tmp_path / "ns3.img", 4 << 20)) as target:
        adm_a, adm_b = admin(target), admin(target)
        q_b = io_queue(target, adm_b)
        q_a = RawHost(target.addr)
        q_a.initialize()
        depth, held = 8, 0xBAD
        assert status_of(q_a.connect(SUBNQN, qid=1, cntlid=adm_a.cntlid, sqsize=depth - 1)).ok
        fail_parse(
            monkeypatch,
            target.service,
            lambda req: req.cid == held,
            "injected fault in a held-back command",
        )
        try:
            q_a.sock.settimeout(30)  # a queue left hanging fails here
            # Reads of a file namespace complete later (the medium's queue), so the ninth
            # capsule arrives while the eight take every credit.
            cids = [*range(1, depth + 1), held]
            q_a.send(q_a.capsules(rw(c, IoOpcode.READ, FILE_NSID, 0, 8, 4096) for c in cids))
            done: list[int] = []
            while events := q_a.events():
                done += [Cqe.decode(e.cqe).cid for e in events if isinstance(e, ResponseReceived)]
            assert sorted(done) == list(range(1, depth + 1))  # then the queue ended
            cqe, data = q_b.command_data(rw(q_b.next_cid(), IoOpcode.READ, FILE_NSID, 0, 8, 4096))
            assert status_of(cqe).ok and data == bytes(4096)
            bugs = [r for r in caplog.records if "internal error" in r.getMessage()]
            assert len(bugs) == 1, [r.getMessage() for r in caplog.records]
            assert "held back" in bugs[0].getMessage()
            assert bugs[0].exc_info is not None
            assert "injected fault" in str(bugs[0].exc_info[1])
        finally:
            for host in (q_a, q_b, adm_a, adm_b):
                host.close()
