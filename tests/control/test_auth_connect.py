"""A host with DH-HMAC-CHAP keys gets AUTHREQ.ATR in its Connect completion over NVMe/TCP and
NVMe/RDMA alike (RDMA used to be refused before it was built); without keys nothing changes."""

from __future__ import annotations

import asyncio
import logging

import pytest

from nvmf.control import fabrics
from nvmf.control.command import Context
from nvmf.control.model import Host, Port, Subsystem, TargetConfig
from nvmf.control.service import TargetService
from nvmf.control.session import ControlSession
from nvmf.control.subsystem import SubsystemRuntime
from nvmf.host import commands as c
from nvmf.offload.plan import Plan
from nvmf.protocol.dhchap import generate_secret
from nvmf.protocol.request import Request
from nvmf.wire import auth as w
from nvmf.wire.status import Status

SUBNQN = "nqn.2024-01.io.nvmf:locked"
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000bb"
KEY = generate_secret(0, 32)


class _Fabric:
    def close(self, reason: str) -> None:
        pass


def _connect(trtype: str, keys: bool) -> Status:
    host = Host(HOSTNQN, extra_attrs={"dhchap": {"key": KEY}} if keys else {})
    sub = Subsystem(nqn=SUBNQN, allow_any_host=False, allowed_hosts=[HOSTNQN])
    port = Port(portid=1, trtype=trtype, subsystems=[SUBNQN])
    service = TargetService(TargetConfig(hosts=[host], ports=[port], subsystems=[sub]))
    service.subsystems[SUBNQN] = SubsystemRuntime.open(sub, 1)
    session = ControlSession(fabric=_Fabric(), port=port)  # type: ignore[arg-type]
    req = Request(bytes(c.connect(0, 31)))
    req.data = memoryview(bytearray(c.connect_data(bytes(16), 0xFFFF, SUBNQN, HOSTNQN)))
    plan = fabrics.parse(Context(service, session, req))
    assert isinstance(plan, Plan) and plan.execute is not None

    async def run() -> Status:
        status = await plan.execute(req)  # type: ignore[misc]
        for sub_runtime in service.subsystems.values():
            for ctrl in list(sub_runtime.controllers.values()):
                service.delete_controller(ctrl, "test over")
        return status

    return asyncio.run(run())


@pytest.mark.parametrize("trtype", ["tcp", "rdma"])
def test_with_keys_asks_for_authentication(trtype: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    status = _connect(trtype, keys=True)
    assert status.ok and status.result & w.CONNECT_AUTHREQ_ATR
    assert "DH-HMAC-CHAP required" in caplog.text
    assert "not built yet" not in caplog.text
    assert KEY.split(":")[2] not in caplog.text


@pytest.mark.parametrize("trtype", ["tcp", "rdma"])
def test_without_keys_nothing_changes(trtype: str) -> None:
    status = _connect(trtype, keys=False)
    assert status.ok and not status.result & w.CONNECT_AUTHREQ_ATR
