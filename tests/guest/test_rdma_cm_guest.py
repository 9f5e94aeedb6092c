"""The Linux 6.1 NVMe/RDMA host's connect requests, read and rejected by this project's code over
Soft-RoCE in the guest (issue 9's first step: RDMA CM and its private data, before any queue).

``tests/guest/rdma_cm_probe.py`` listens with rdma-core's pyverbs in the project's own Python,
waiting for CM events on an asyncio loop through the channel's descriptor
(:mod:`nvmf.transport.verbs_events`), runs each request's private data through
:func:`nvmf.wire.rdma.check_request` and rejects it with ``Invalid HSQSIZE``; ``nvme discover
-t rdma`` must fail, and the host's log must name the status the reject carried, which is how
we know its bytes are what the Linux host reads.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nvmf.wire.rdma import CmRequest, decode_request
from tests.guest.harness import GuestResult, run_in_guest

pytestmark = [pytest.mark.guest, pytest.mark.timeout(1500)]

PROBE = Path(__file__).parent / "rdma_cm_probe.py"
#: The address of the guest's Soft-RoCE netdev (a dummy interface).
ADDR = "10.99.0.1"

SCRIPT = r"""
exec > $OUT/trace.txt 2>&1
# Soft-RoCE on a dummy netdev with an address of its own: pyverbs 44 (Debian 12) binds a CM ID
# to a loopback or wildcard address without a device and then dereferences its missing verbs
# context (a segfault in CMID.bind_addr, seen with rxe on lo).
ip link set lo up
ip link add nvmf0 type dummy && ip addr add ADDR/24 dev nvmf0 && ip link set nvmf0 up
modprobe rdma_rxe && rdma link add rxe0 type rxe netdev nvmf0
echo "rxe rc=$?" >> $OUT/results.txt
modprobe nvme-rdma
echo "nvme-rdma rc=$?" >> $OUT/results.txt
$PY PROBE ADDR 4420 INVALID_HSQSIZE $OUT > $OUT/probe.log 2>&1 &
probe=$!
for i in $(seq 600); do [ -e $OUT/listening ] && break; sleep 0.2; done
dmesg -C
nvme discover -t rdma -a ADDR -s 4420 > $OUT/discover.txt 2>&1
echo "discover rc=$?" >> $OUT/results.txt
sleep 1
dmesg > $OUT/dmesg.txt
kill $probe
echo done > $OUT/finished
""".replace("PROBE", str(PROBE)).replace("ADDR", ADDR)


@pytest.fixture(scope="module")
def guest() -> GuestResult:
    return run_in_guest("rdma-cm", SCRIPT, timeout=1200)


def test_the_probe_listened_on_soft_roce(guest: GuestResult) -> None:
    assert guest.read("finished"), guest.console[-3000:]
    assert "rxe rc=0" in guest.lines("results.txt"), guest.read("trace.txt")
    assert "nvme-rdma rc=0" in guest.lines("results.txt")
    assert guest.read("listening"), guest.read("probe.log")


def test_the_linux_hosts_admin_connect_request_is_what_the_spec_says(guest: GuestResult) -> None:
    requests = guest.lines("requests.txt")
    assert requests, guest.read("probe.log") + guest.read("dmesg.txt")
    data = bytes.fromhex(requests[0].split()[0])
    # An admin queue: QID 0, 32 response buffers, a 32-entry SQ (HSQSIZE 0's based).
    assert decode_request(data) == CmRequest(qid=0, hrqsize=32, hsqsize=31)
    assert "CmRequest(qid=0, hrqsize=32, hsqsize=31" in requests[0]


def test_the_host_reads_our_reject_status(guest: GuestResult) -> None:
    assert "discover rc=0" not in guest.lines("results.txt"), guest.read("discover.txt")
    dmesg = guest.read("dmesg.txt")
    # nvme_rdma_conn_rejected: "Connect rejected: status 28 (consumer defined) nvme status 4
    # (invalid host SQ size)."
    assert "nvme status 4 (invalid host SQ size)" in dmesg, dmesg
