"""The NVMe/RDMA target's per-I/O paths post work requests made with the queue, never new
ones: pyverbs frees a work request's C memory only when told, so one made per I/O leaked (96
bytes and about 15 µs of CPU per command, see :mod:`nvmf.transport.verbs_wr`).

A queue without a device: the queue pair is a recording stand-in for pyverbs' ``QP`` (whose
``post_send`` copies the work request before it returns), everything else is the real queue
code and real pyverbs work requests.  Posting them over Soft-RoCE runs in the guest
(``tests/guest/test_rdma_target_guest.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import pyverbs.enums as ve
from pyverbs.wr import SGE, SendWR

from nvmf.memory.staging import StagingBuffer
from nvmf.protocol.request import Request
from nvmf.transport import rdma, verbs_wr
from nvmf.transport.verbs_wr import SlotWrs
from nvmf.wire.sqe import Sqe
from nvmf.wire.status import SUCCESS, Status

SLOTS = 4


class RecordingQP:
    """What a queue pair was asked to post."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def post_send(self, wr: Any) -> None:
        self.sent.append(wr)

    def post_recv(self, wr: Any) -> None:
        raise AssertionError("no receive is posted again by these commands")


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every SendWR and SGE made through the transport's modules from now on."""
    out: list[str] = []

    def counting(cls: type) -> Callable[..., Any]:
        def make(*args: Any, **kwargs: Any) -> Any:
            out.append(cls.__name__)
            return cls(*args, **kwargs)

        return make

    for module in (rdma, verbs_wr):
        monkeypatch.setattr(module, "SendWR", counting(SendWR), raising=False)
        monkeypatch.setattr(module, "SGE", counting(SGE), raising=False)
    return out


@pytest.fixture
def queue() -> Iterator[rdma.RdmaQueue]:
    q = object.__new__(rdma.RdmaQueue)
    q.closed = False
    q.qp = RecordingQP()
    q.loop = asyncio.new_event_loop()
    q._resp_sges = [SGE(0x1000 + 16 * i, 16, 5) for i in range(SLOTS)]
    q._tag = 9 << 32  # work request ids: the queue before SlotWrs built its WRs from this per I/O
    q._wrs = SlotWrs(q._resp_sges, q._tag, 3, 2, 0)
    q._resp_views = [memoryview(bytearray(16)) for _ in range(SLOTS)]
    q._invalidate = [False] * SLOTS
    q._rkey = [0x4242] * SLOTS
    q._held_recv = [-1] * SLOTS
    q._fetching = {}
    q._staging_region = None
    q._staging_base = 0x100000
    q._staging_lkey = 7
    yield q
    q._wrs.close()
    for sge in q._resp_sges:
        sge.close()
    q.loop.close()


def _request(slot: int, n: int) -> Request:
    req = Request(Sqe(opcode=2, cid=slot))
    req.ttag = slot
    req.staging = StagingBuffer(None, memoryview(bytearray(8192)), n)
    req.data = req.staging.view
    req.dptr_address = 0xABC000
    return req


def test_read_completions_post_the_slot_s_own_work_requests(
    queue: rdma.RdmaQueue, made: list[str]
) -> None:
    for _ in range(50):
        req = _request(1, 4096)
        req.c2h_length = 4096
        req.status = SUCCESS
        queue.complete(req, bytes(16))
    assert made == []
    sent = queue.qp.sent  # type: ignore[attr-defined]
    assert len(sent) == 50 and all(wr is sent[0] for wr in sent)
    assert sent[0].opcode == ve.IBV_WR_RDMA_WRITE
    assert queue._wrs.data_sges[1].length == 4096


def test_write_data_fetches_and_error_completions_make_nothing(
    queue: rdma.RdmaQueue, made: list[str]
) -> None:
    done: list[Status] = []
    for _ in range(50):
        req = _request(2, 8192)
        queue.fetch_data(req, lambda _req, status: done.append(status))
        queue._fetching.clear()  # as its completion would
        req.status = Status(0x80, dnr=True)  # an error: the CQE alone
        queue.complete(req, bytes(16))
    assert made == []
    sent = queue.qp.sent  # type: ignore[attr-defined]
    reads = [wr for wr in sent if wr.opcode == ve.IBV_WR_RDMA_READ]
    sends = [wr for wr in sent if wr.opcode == ve.IBV_WR_SEND]
    assert len(reads) == len(sends) == 50
    assert all(wr is reads[0] for wr in reads) and all(wr is sends[0] for wr in sends)
    assert done == []  # nothing failed
