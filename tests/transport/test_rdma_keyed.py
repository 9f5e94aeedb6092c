"""NVMe/RDMA's own rules for keyed SGLs, against the target with this project's test host
(``rdma_host.py``).  They need an RDMA device, so they exist only where one is named
(``NVMF_TEST_RDMA_ADDR``): the guest runs them on Soft-RoCE in
``tests/guest/test_rdma_target_guest.py``, with the transport contract suite's RDMA cases.

- A key the host never registered: the target's RDMA WRITE fails, which puts that queue pair
  in the error state; the queue ends, and the controller's other queues go on.
- A keyed SGL longer than MDTS: an error status with DNR before any data moves, and the queue
  serves the next command.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nvmf.wire.fabrics import Prop
from nvmf.wire.opcodes import IoOpcode
from nvmf.wire.sqe import SglDescriptor, Sqe
from nvmf.wire.status import SC
from tests.transport.fabrics import RDMA_ADDR, Host, RunningTarget, running_target
from tests.transport.fabrics import status as status_of

if RDMA_ADDR:

    @pytest.fixture(scope="module")
    def target() -> Iterator[RunningTarget]:
        with running_target("rdma", 0) as running:
            yield running

    def read(cid: int, slba: int, nlb: int) -> Sqe:
        return Sqe(opcode=IoOpcode.READ, cid=cid, nsid=1, cdw10=slba, cdw12=nlb - 1)

    def test_rdma_keyed_a_key_never_registered_ends_only_its_queue(target: RunningTarget) -> None:
        host = Host(target)
        adm, cntlid = host.admin()
        victim = host.io_queue(cntlid, qid=1)
        other = host.io_queue(cntlid, qid=2)
        try:
            sqe = read(host.next_cid(), 0, 1)
            sqe.sgl = SglDescriptor.keyed(0x1000, 512, 0xDEAD00)
            with pytest.raises(ConnectionError):
                victim.command(sqe, data_in=512, keep_sgl=True)
            data = bytes(range(256)) * 2
            write = Sqe(opcode=IoOpcode.WRITE, cid=host.next_cid(), nsid=1, cdw10=8)
            assert status_of(other.command(write, data)[0]).ok
            cqe, back = other.command(read(host.next_cid(), 8, 1), data_in=512)
            assert status_of(cqe).ok and back == data
            assert status_of(host.prop_get(adm, Prop.CSTS)).ok
        finally:
            other.close()
            victim.close()
            adm.close()

    def test_rdma_keyed_longer_than_mdts_fails_with_dnr_and_the_queue_goes_on(
        target: RunningTarget,
    ) -> None:
        host = Host(target)
        adm, cntlid = host.admin()
        q = host.io_queue(cntlid)
        try:
            too_long = 2 << 20  # MDTS is 1 MiB at most
            sqe = read(host.next_cid(), 0, too_long // 512)
            sqe.sgl = SglDescriptor.keyed(0x1000, too_long, 0xDEAD00)  # never touched
            cqe, back = q.command(sqe, data_in=0, keep_sgl=True)
            st = status_of(cqe)
            assert st.code == SC.INVALID_FIELD and st.dnr, st
            assert back == b""
            assert status_of(q.command(read(host.next_cid(), 0, 1), data_in=512)[0]).ok
        finally:
            q.close()
            adm.close()
