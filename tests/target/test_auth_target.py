"""DH-HMAC-CHAP end to end over loopback NVMe/TCP: our target, a host written here from the
specification's message formulas (the Linux host is in tests/guest/test_auth_guest.py).

Each case runs with the target serving every queue itself and with two offload workers (an
authenticated I/O queue moves to a worker after its authentication; a re-authentication on it
is forwarded to the control plane with its data).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from nvmf.control.model import Host, Namespace, NamespaceMedia, Port, Subsystem, TargetConfig
from nvmf.host import commands as c
from nvmf.host.queue import HostQueue
from nvmf.protocol.dhchap import (
    DhchapSecret,
    DhExchange,
    DhGroup,
    HashId,
    augmented_challenge,
    controller_response,
    generate_secret,
    host_response,
)
from nvmf.wire import auth as w
from nvmf.wire.fabrics import CC, CSTS, Prop
from nvmf.wire.opcodes import FabricsType, IoOpcode
from nvmf.wire.status import SC
from tests.target.conftest import RunningTarget, running_target

SUBNQN = "nqn.2024-01.io.nvmf:auth"
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-00000000a071"
HOSTID = uuid.UUID("00000000-0000-4000-8000-00000000a071")
KEY = generate_secret(1, 32, HOSTNQN)
CTRL_KEY = generate_secret(0, 48)


@contextmanager
def auth_target(workers: int, hash_name: str, dhgroup: str) -> Iterator[RunningTarget]:
    host = Host(
        HOSTNQN,
        extra_attrs={
            "dhchap": {"key": KEY, "ctrl_key": CTRL_KEY, "hash": hash_name, "dhgroup": dhgroup}
        },
    )
    sub = Subsystem(
        nqn=SUBNQN,
        allow_any_host=False,
        allowed_hosts=[HOSTNQN],
        namespaces=[Namespace(nsid=1, media=NamespaceMedia(kind="ram", size=1 << 20))],
    )
    cfg = TargetConfig(
        hosts=[host],
        subsystems=[sub],
        ports=[Port(portid=1, trsvcid="0", subsystems=[SUBNQN])],
    )
    cfg.nvmf.max_io_queues = 2
    with running_target(workers, config=cfg) as running:
        yield running


def _auth_cmd(fctype: int, length: int, **fields: int) -> bytearray:
    return bytearray(w.AuthCommand(cid=0, fctype=fctype, length=length, **fields).encode())


async def _send(q: HostQueue, message: bytes, check: bool = True) -> None:
    await q.submit(_auth_cmd(FabricsType.AUTH_SEND, len(message)), data_out=message, check=check)


async def _receive(q: HostQueue, al: int = 4096) -> bytes:
    buf = bytearray(al)
    await q.submit(_auth_cmd(FabricsType.AUTH_RECEIVE, al), data_in=buf)
    return bytes(buf)


async def authenticate(
    q: HostQueue, *, bidirectional: bool, t_id: int = 1, key: str = KEY, ctrl_key: str = CTRL_KEY
) -> bytes:
    """Run one DH-HMAC-CHAP transaction as a host; returns the controller's last message."""
    await _send(q, w.Negotiate(t_id, (1, 2, 3), (0, 1, 2, 3, 4, 5)).encode())
    raw = await _receive(q)
    if raw[1] == w.AuthId.FAILURE1:
        return raw
    ch = w.Challenge.decode(raw)
    hash_id = HashId(ch.hashid)
    challenge, dhv, skey = ch.cval, b"", b""
    if ch.dhgid != DhGroup.NULL:
        mine = DhExchange(DhGroup(ch.dhgid))
        dhv, skey = mine.public_value, mine.shared_secret(ch.dhv)
        challenge = augmented_challenge(hash_id, skey, ch.cval)
    host_key = DhchapSecret.parse(key).transformed(HOSTNQN)
    rval = host_response(hash_id, host_key, challenge, ch.seqnum, t_id, HOSTNQN, SUBNQN)
    c2 = os.urandom(hash_id.length) if bidirectional else b""
    s2 = 0x1234 if bidirectional else 0
    await _send(q, w.Reply(t_id, rval, s2, c2, bidirectional, dhv).encode())
    raw = await _receive(q)
    if raw[1] != w.AuthId.SUCCESS1:
        return raw
    s1 = w.Success1.decode(raw)
    if bidirectional:
        c2a = augmented_challenge(hash_id, skey, c2) if skey else c2
        ckey = DhchapSecret.parse(ctrl_key).transformed(SUBNQN)
        expected = controller_response(hash_id, ckey, c2a, s2, t_id, HOSTNQN, SUBNQN)
        assert s1.rval == expected
        await _send(q, w.success2(t_id))
    return raw


async def _queue(addr: tuple[str, int], qid: int, cntlid: int) -> tuple[HostQueue, int, int]:
    q = await HostQueue.open(addr[0], addr[1], qid=qid, depth=15)
    data = c.connect_data(HOSTID.bytes, cntlid, SUBNQN, HOSTNQN)
    comp = await q.submit(c.connect(qid, 15), data_out=data)
    return q, comp.dw0 & 0xFFFF, comp.dw0


@pytest.mark.parametrize("workers", [0, 2], ids=["one-process", "2-workers"])
@pytest.mark.parametrize(
    ("hash_name", "dhgroup", "bidirectional"),
    [
        ("hmac(sha256)", "null", False),
        ("hmac(sha384)", "ffdhe2048", True),
        ("hmac(sha512)", "ffdhe3072", True),
    ],
)
def test_authenticated_admin_and_io_queues(
    workers: int, hash_name: str, dhgroup: str, bidirectional: bool
) -> None:
    async def main(target: RunningTarget) -> None:
        addr = target.addr
        admin, cntlid, dw0 = await _queue(addr, 0, 0xFFFF)
        assert dw0 & w.CONNECT_AUTHREQ_ATR  # AUTHREQ.ATR: this host must authenticate
        comp = await admin.submit(c.property_get(Prop.CAP, 8), check=False)
        assert comp.status.code == SC.AUTH_REQUIRED and comp.status.dnr
        raw = await authenticate(admin, bidirectional=bidirectional)
        assert raw[1] == w.AuthId.SUCCESS1
        await admin.submit(
            c.property_set(Prop.CC, CC.EN | 6 << CC.IOSQES_SHIFT | 4 << CC.IOCQES_SHIFT)
        )
        for _ in range(100):
            comp = await admin.submit(c.property_get(Prop.CSTS, 4))
            if comp.dw0 & CSTS.RDY:
                break
            await asyncio.sleep(0.01)
        io, _, dw0 = await _queue(addr, 1, cntlid)
        assert dw0 & w.CONNECT_AUTHREQ_ATR
        comp = await io.submit(c.rw(IoOpcode.READ, 1, 0, 1), data_in=bytearray(512), check=False)
        assert comp.status.code == SC.AUTH_REQUIRED and comp.status.dnr
        await authenticate(io, bidirectional=bidirectional, t_id=2)
        if workers:  # the queue moved to a worker once authenticated
            status = asyncio.run_coroutine_threadsafe(target.service.status(), target.loop)
            (sub,) = [s for s in status.result(10)["subsystems"] if s["nqn"] == SUBNQN]
            (queue,) = [q for q in sub["controllers"][0]["queues"] if q["qid"] == 1]
            assert isinstance(queue["worker"], int)
        block = os.urandom(512)
        await io.submit(c.rw(IoOpcode.WRITE, 1, 0, 1), data_out=block)
        back = bytearray(512)
        await io.submit(c.rw(IoOpcode.READ, 1, 0, 1), data_in=back)
        assert back == block
        # Re-authentication on both queues (in a worker for the I/O queue): I/O goes on.
        assert (await authenticate(admin, bidirectional=bidirectional, t_id=3))[1] == 3
        assert (await authenticate(io, bidirectional=bidirectional, t_id=4))[1] == 3
        await io.submit(c.rw(IoOpcode.READ, 1, 0, 1), data_in=back)
        assert back == block
        io.close()
        admin.close()

    with auth_target(workers, hash_name, dhgroup) as target:
        asyncio.run(main(target))


def test_wrong_key_gets_failure1_and_the_controller_ends() -> None:
    async def main(addr: tuple[str, int]) -> None:
        admin, _, _ = await _queue(addr, 0, 0xFFFF)
        raw = await authenticate(admin, bidirectional=False, key=generate_secret(1, 32, HOSTNQN))
        failure = w.Failure.decode(raw)
        assert failure.auth_id == w.AuthId.FAILURE1
        assert failure.rescode == w.FailureReason.FAILED
        assert failure.rescode_exp == w.FailureExplanation.FAILED
        await asyncio.wait_for(admin.closed.wait(), 5)  # the target ended the controller

    with auth_target(0, "hmac(sha256)", "null") as target:
        asyncio.run(main(target.addr))
        assert not target.service.subsystems[SUBNQN].controllers


def test_wrong_controller_key_is_caught_by_the_host() -> None:
    async def main(addr: tuple[str, int]) -> None:
        admin, _, _ = await _queue(addr, 0, 0xFFFF)
        with pytest.raises(AssertionError):
            await authenticate(admin, bidirectional=True, ctrl_key=generate_secret(0, 48))
        # The host says so with AUTH_Failure2: the controller ends.
        await _send(admin, w.Failure(1, 1, auth_id=w.AuthId.FAILURE2).encode())
        await asyncio.wait_for(admin.closed.wait(), 5)

    with auth_target(0, "hmac(sha384)", "ffdhe2048") as target:
        asyncio.run(main(target.addr))


@pytest.mark.parametrize(
    "fields",
    [
        {"secp": 0xEA},
        {"spsp0": 2},
        {"spsp1": 0},
    ],
)
def test_malformed_authentication_commands(fields: dict[str, int]) -> None:
    async def main(addr: tuple[str, int]) -> None:
        admin, _, _ = await _queue(addr, 0, 0xFFFF)
        message = w.Negotiate(1, (1,), (0,)).encode()
        comp = await admin.submit(
            _auth_cmd(FabricsType.AUTH_SEND, len(message), **fields),
            data_out=message,
            check=False,
        )
        assert comp.status.code == SC.INVALID_FIELD and comp.status.dnr
        comp = await admin.submit(_auth_cmd(FabricsType.AUTH_SEND, 0), check=False)
        assert comp.status.code == SC.INVALID_FIELD and comp.status.dnr
        # The queue goes on: a well-formed transaction still authenticates it.
        assert (await authenticate(admin, bidirectional=False))[1] == w.AuthId.SUCCESS1
        admin.close()

    with auth_target(0, "hmac(sha256)", "null") as target:
        asyncio.run(main(target.addr))
