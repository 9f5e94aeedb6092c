"""What an rdma port may listen on, checked before RDMA CM is asked: pyverbs 44 binds a
wildcard or loopback address without a device and then crashes the process, so those are
refused with a message that names the port (the guest tests serve real Soft-RoCE ports)."""

from __future__ import annotations

import asyncio

import pytest

from nvmf.control.model import Port
from nvmf.transport.rdma import RdmaTransport


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
