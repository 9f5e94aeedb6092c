"""NVMe/RDMA: a Connect must repeat what its connection's connect request said (NVMe/RDMA 1.0b:
the request's QID is the queue's, its HSQSIZE "shall be set to" the Connect's SQSIZE).  A
Connect that says otherwise gets Connect Invalid Parameters naming QID or SQSIZE, with DNR and
no error log entry (there is no controller to hold one), and makes no controller; the queue
then takes a Connect that agrees with its request.

The case that found this: an admin Connect on a connection asked for as I/O queue 1.  With
workers, such a queue is made in a worker before its Connect; the admin Connect made a
controller whose admin queue no process served and nothing deleted (the Linux and SPDK targets
take the Connect's QID and SQSIZE as they are).

And a connection that never sends its Connect is ended after ``nvmf.idle_timeout_ms``, as an
NVMe/TCP connection that never sends one is; each Connect that arrives starts the period
again.

These need an RDMA device (``NVMF_TEST_RDMA_ADDR``): the guest runs them on Soft-RoCE with the
transport contract suite (``tests/guest/test_rdma_target_guest.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from nvmf.wire.fabrics import (
    CONNECT_OFF_QID,
    CONNECT_OFF_SQSIZE,
    ConnectCommand,
    ConnectData,
    Prop,
)
from nvmf.wire.opcodes import IoOpcode
from nvmf.wire.rdma import CmRequest
from nvmf.wire.sqe import SglDescriptor, Sqe
from nvmf.wire.status import SC
from tests.transport.fabrics import (
    HOSTID,
    HOSTNQN,
    RDMA_ADDR,
    SUBNQN,
    Host,
    RunningTarget,
    running_target,
    status,
)
from tests.transport.rdma_host import RdmaHostQueue

#: Not the contract suite's service: each target here has its own listener.
SERVICE = "4430"
#: How long the target waits for a queue's Connect (``nvmf.idle_timeout_ms``), short here.
IDLE_S = 5

if RDMA_ADDR:

    @pytest.fixture(scope="module", params=[0, 2], ids=["one-process", "2-workers"])
    def target(request: pytest.FixtureRequest) -> Iterator[RunningTarget]:
        with running_target(
            "rdma", request.param, rdma_service=SERVICE, idle_timeout_ms=IDLE_S * 1000
        ) as running:
            yield running

    def _queue(request: CmRequest) -> RdmaHostQueue:
        return RdmaHostQueue(RDMA_ADDR, SERVICE, request)

    def _controllers(target: RunningTarget) -> list[int]:
        return target.call(lambda: sorted(target.service.subsystems[SUBNQN].controllers))

    def _refused(host: Host, q: RdmaHostQueue, *, qid: int, cntlid: int, offset: int) -> None:
        cqe = host.connect(q, qid=qid, cntlid=cntlid)  # SQSIZE 31
        st = status(cqe)
        assert (st.code, st.dnr, st.more) == (SC.CONNECT_INVALID_PARAM, True, False), st
        assert cqe.dw0 == offset  # IPO, IATTR 0: a field of the SQE

    def test_rdma_connect_admin_on_an_io_queues_connection_is_refused(
        target: RunningTarget,
    ) -> None:
        host = Host(target)
        before = _controllers(target)
        q = _queue(CmRequest(qid=1, hrqsize=32, hsqsize=31))
        try:
            _refused(host, q, qid=0, cntlid=0xFFFF, offset=CONNECT_OFF_QID)
            assert _controllers(target) == before
        finally:
            q.close()

    def test_rdma_connect_io_on_an_admin_queues_connection_is_refused(
        target: RunningTarget,
    ) -> None:
        host = Host(target)
        adm, cntlid = host.admin()
        q = _queue(CmRequest(qid=0, hrqsize=32, hsqsize=31))
        try:
            _refused(host, q, qid=1, cntlid=cntlid, offset=CONNECT_OFF_QID)
            # the same connection takes the admin Connect it was asked for
            assert status(host.connect(q)).ok
        finally:
            q.close()
            adm.close()

    def test_rdma_connect_refused_then_agreeing_serves_io(target: RunningTarget) -> None:
        """A refused Connect leaves the queue waiting for its Connect (with workers, placed in
        a worker): one that agrees with the request connects it, and it serves a Write and a
        Read of the same block."""
        host = Host(target)
        adm, cntlid = host.admin()
        q = _queue(CmRequest(qid=1, hrqsize=32, hsqsize=31))
        try:
            _refused(host, q, qid=2, cntlid=cntlid, offset=CONNECT_OFF_QID)
            assert status(host.connect(q, qid=1, cntlid=cntlid)).ok
            block = bytes(range(256)) * 2
            write = Sqe(opcode=IoOpcode.WRITE, cid=host.next_cid(), nsid=1, cdw10=77)
            assert status(q.command(write, block, incapsule=True)[0]).ok
            read = Sqe(opcode=IoOpcode.READ, cid=host.next_cid(), nsid=1, cdw10=77)
            cqe, back = q.command(read, data_in=512)
            assert status(cqe).ok and back == block
        finally:
            q.close()
            adm.close()

    def test_rdma_connect_a_queue_never_connected_is_closed_after_the_idle_timeout(
        target: RunningTarget,
    ) -> None:
        """A connection that never sends its Connect would hold its QP, its registered
        receive buffers and its share of the completion queue for ever: the target ends it
        after ``idle_timeout_ms``.  The controller's connected queues are left alone."""
        host = Host(target)
        adm, cntlid = host.admin()
        q = host.io_queue(cntlid, qid=2)
        idle = _queue(CmRequest(qid=1, hrqsize=32, hsqsize=31))
        try:
            assert idle.wait_closed(IDLE_S + 30)
            read = Sqe(opcode=IoOpcode.READ, cid=host.next_cid(), nsid=1, cdw10=0)
            assert status(q.command(read, data_in=512)[0]).ok
            assert status(host.prop_get(adm, Prop.CSTS)).ok
        finally:
            idle.close()
            q.close()
            adm.close()

    def test_rdma_connect_each_connect_gives_the_queue_a_new_period(
        target: RunningTarget,
    ) -> None:
        """The period counts from the last Connect that arrived, so that a Connect still
        running (or refused, and then tried again) does not see its queue closed under it:
        refused 0.7 of a period in, then connected 1.4 periods in, it serves a Read."""
        host = Host(target)
        adm, cntlid = host.admin()
        q = _queue(CmRequest(qid=1, hrqsize=32, hsqsize=31))
        try:
            time.sleep(0.7 * IDLE_S)
            _refused(host, q, qid=2, cntlid=cntlid, offset=CONNECT_OFF_QID)
            time.sleep(0.7 * IDLE_S)
            assert status(host.connect(q, qid=1, cntlid=cntlid)).ok
            read = Sqe(opcode=IoOpcode.READ, cid=host.next_cid(), nsid=1, cdw10=0)
            assert status(q.command(read, data_in=512)[0]).ok
        finally:
            q.close()
            adm.close()

    def test_rdma_connect_a_host_gone_during_its_connect_leaves_no_queue(
        target: RunningTarget,
    ) -> None:
        """The host sends an I/O Connect and hangs up while the control plane runs it (held
        here for 2 s before it starts).  The controller must not keep a queue that nobody
        serves: with workers it did, and the QID stayed taken (a new Connect for it got
        Command Sequence Error) until the controller went."""
        host = Host(target)
        adm, cntlid = host.admin()
        service = target.service
        run_placed = service.placed_command

        async def held(*args: Any) -> Any:
            await asyncio.sleep(2.0)
            return await run_placed(*args)

        target.call(lambda: setattr(service, "placed_command", held))
        q = _queue(CmRequest(qid=1, hrqsize=32, hsqsize=31))
        try:
            data = ConnectData(HOSTID, cntlid, SUBNQN, HOSTNQN).encode()
            sqe = Sqe.decode(ConnectCommand(host.next_cid(), 1, 31).encode())
            sqe.sgl = SglDescriptor.incapsule(len(data))
            q.post(sqe, data)
            time.sleep(0.5)
            q.close()
            time.sleep(5.0)  # the Connect runs, then the control plane hears of the end
            ctrl = target.call(lambda: service.subsystems[SUBNQN].controllers[cntlid])
            assert target.call(lambda: sorted(ctrl.queues)) == [0]
            host.io_queue(cntlid, qid=1).close()  # the QID is free again
        finally:
            target.call(lambda: delattr(service, "placed_command"))
            adm.close()

    @pytest.mark.parametrize("hsqsize", [15, 63])
    def test_rdma_connect_sqsize_other_than_hsqsize_is_refused(
        target: RunningTarget, hsqsize: int
    ) -> None:
        host = Host(target)
        adm, cntlid = host.admin()
        q = _queue(CmRequest(qid=1, hrqsize=hsqsize + 1, hsqsize=hsqsize))
        try:
            _refused(host, q, qid=1, cntlid=cntlid, offset=CONNECT_OFF_SQSIZE)
        finally:
            q.close()
            adm.close()
