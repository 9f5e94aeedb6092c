"""What an rdma port may listen on, and how many queues a device's completion queue takes,
checked without an RDMA device: pyverbs 44 binds a wildcard or loopback address without a
device and then crashes the process, so those are refused with a message that names the port
(the guest tests serve real Soft-RoCE ports)."""

from __future__ import annotations

import asyncio

import pytest

from nvmf.control.model import Port
from nvmf.transport.rdma import RdmaTransport, _Device


@pytest.mark.parametrize(
    ("adrfam", "traddr", "why"),
    [
        ("ipv4", "0.0.0.0", "wildcard or loopback"),
        ("ipv6", "::", "wildcard or loopback"),
        ("ipv4", "127.0.0.1", "wildcard or loopback"),
        ("ipv4", "10.0.0.300", "traddr '10.0.0.300'"),
        ("ib", "fe80::1", "adrfam ib"),
    ],
)
def test_an_address_rdma_cm_cannot_bind_is_refused_naming_the_port(
    adrfam: str, traddr: str, why: str
) -> None:
    port = Port(portid=7, trtype="rdma", adrfam=adrfam, traddr=traddr, trsvcid="4420")
    transport = RdmaTransport()
    with pytest.raises(OSError, match="port 7") as err:
        asyncio.run(transport.add_port(port, owner=None))  # type: ignore[arg-type]
    assert why in str(err.value)


def test_a_queue_that_would_overflow_the_completion_queue_is_refused() -> None:
    """One completion queue serves a device's queues in a process: a queue whose receives and
    signalled sends do not fit in what is left of it is refused (its connection is rejected),
    rather than overflow the CQ and break every queue; a closed queue gives its entries back."""
    device = _Device.__new__(_Device)  # the accounting alone: no RDMA device here
    device.name = "rxe0"
    device.cq_free = 8192
    for _ in range(12):  # 128-entry queues: 128 receives + 2 x 256 READs/SENDs each
        device.reserve(128 + 2 * 256)
    with pytest.raises(OSError, match=r"rxe0: the completion queue has room for 512 more"):
        device.reserve(640)
    assert device.cq_free == 512
