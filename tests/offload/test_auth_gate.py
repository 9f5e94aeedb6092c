"""DH-HMAC-CHAP on a queue born in an offload worker (NVMe/RDMA I/O queues), without a fabric.

The worker half: a queue whose Handover says it is still authenticating has every command
forwarded to the control plane (Read and Write too: nothing reaches the data path), its
Authentication Send/Receive with their data; the control plane's ``("authenticated", ...)``
opens it.  The control-plane half: ``forwarded_data`` runs the transaction with the queue's
state machine (driven here by this project's host transaction), answers every other command
with Authentication Required, and tells the worker exactly once, when the transaction
succeeded, before the answer to its last command.  The real peer (the Linux host over
Soft-RoCE) is in tests/guest/test_auth_guest.py.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest

from nvmf.control.auth import HostKeys, QueueAuth
from nvmf.control.model import TargetConfig
from nvmf.control.service import TargetService
from nvmf.control.session import ControlSession
from nvmf.host.auth import RECEIVE_LENGTH, DhchapKeys, Transaction
from nvmf.offload.context import IoContextSpec
from nvmf.offload.plan import Plan
from nvmf.offload.worker import Worker, WorkerSession
from nvmf.protocol.dhchap import DhchapSecret, DhGroup, HashId, generate_secret
from nvmf.protocol.request import Direction, Request
from nvmf.wire import auth as w
from nvmf.wire.opcodes import FabricsType
from nvmf.wire.sqe import Sqe
from nvmf.wire.status import SC, Status
from tests.offload.inproc import placed_queue, read_sqe, with_worker

SUBNQN = "nqn.2024-01.io.nvmf:gate"
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-00000000a072"
KEY = generate_secret(1, 32, HOSTNQN)
CTRL_KEY = generate_secret(0, 48)
CTRL_KEY_ = (SUBNQN, 7)
SPEC = IoContextSpec(cntlid=7, subnqn=SUBNQN, max_transfer=1 << 17, wce=False, namespaces=())


def _auth_sqe(fctype: int, length: int) -> Sqe:
    return Sqe.decode(w.AuthCommand(cid=3, fctype=fctype, length=length).encode())


# -- the worker --------------------------------------------------------------------------------


def _placed(wk: Worker, *, authenticating: bool) -> WorkerSession:
    """A queue of this controller placed in ``wk``, its Connect just answered."""
    return placed_queue(wk, CTRL_KEY_, SPEC, authenticating=authenticating)


def test_a_queue_authenticating_in_its_worker_forwards_every_command() -> None:
    def check(wk: Worker, sent: list[tuple[Any, ...]]) -> None:
        session = _placed(wk, authenticating=True)
        assert session.authenticating and wk.sessions[(CTRL_KEY_, 1)] is session
        assert session.fabric.cqes  # type: ignore[attr-defined]  # the Connect's completion went out
        # A Read does not reach the data path: its status comes from the control plane, no data.
        plan = wk.parse(session, Request(read_sqe()))
        assert isinstance(plan, Plan) and plan.forward and plan.length == 0
        assert sent[-1][0] == "forward" and sent[-1][2:4] == (CTRL_KEY_, 1)
        # Authentication Send/Receive move their data in the worker, the control plane decides.
        send = wk.parse(session, Request(_auth_sqe(FabricsType.AUTH_SEND, 36).encode()))
        assert isinstance(send, Plan) and send.direction is Direction.H2C and send.length == 36
        recv = wk.parse(session, Request(_auth_sqe(FabricsType.AUTH_RECEIVE, 4096).encode()))
        assert isinstance(recv, Plan) and recv.direction is Direction.C2H and recv.length == 4096

    with_worker(check)


def test_authenticated_opens_the_data_path() -> None:
    def check(wk: Worker, sent: list[tuple[Any, ...]]) -> None:
        session = _placed(wk, authenticating=True)
        wk._on_message(("authenticated", CTRL_KEY_, 2), [])  # another queue: no change
        assert session.authenticating
        wk._on_message(("authenticated", CTRL_KEY_, 1), [])
        assert not session.authenticating
        before = len(sent)
        # The fast path parses it here now (this namespace-less context: Invalid Namespace).
        status = wk.parse(session, Request(read_sqe()))
        assert isinstance(status, Status) and status.code == SC.INVALID_NS
        assert len(sent) == before

    with_worker(check)


def test_a_queue_without_authentication_is_served_at_once() -> None:
    def check(wk: Worker, sent: list[tuple[Any, ...]]) -> None:
        session = _placed(wk, authenticating=False)
        status = wk.parse(session, Request(read_sqe()))
        assert isinstance(status, Status) and status.code == SC.INVALID_NS
        assert not sent

    with_worker(check)


# -- the control plane -------------------------------------------------------------------------


class _Workers:
    def __init__(self) -> None:
        self.authenticated: list[tuple[tuple[str, int], int]] = []

    def authenticated_(self, ctrl_key: tuple[str, int], qid: int) -> None:
        self.authenticated.append((ctrl_key, qid))


def _service(ctrl_key: str) -> tuple[TargetService, ControlSession, _Workers, Any]:
    """A service with one controller whose I/O queue 1 lives in a worker (a placed queue that
    must authenticate), and a recorder for what it tells the workers."""
    service = TargetService(TargetConfig())
    workers = _Workers()
    service.workers = cast(Any, SimpleNamespace(authenticated=workers.authenticated_))
    keys = HostKeys(
        DhchapSecret.parse(KEY, "key"),
        DhchapSecret.parse(CTRL_KEY, "ctrl_key") if ctrl_key else None,
        HashId.SHA384,
        DhGroup.from_name("ffdhe2048"),
    )
    sub = SimpleNamespace(nqn=SUBNQN)
    ctrl = SimpleNamespace(cntlid=7, deleted=False, queues={}, deleted_reason="", subsystem=sub)
    ctrl.delete = lambda reason: setattr(ctrl, "deleted_reason", reason)
    session = ControlSession(fabric=cast(Any, None), port=cast(Any, None), qid=1, worker=0)
    session.ctrl = cast(Any, ctrl)
    session.auth = QueueAuth(keys, HOSTNQN, SUBNQN, 1)
    session.worker_gated = True
    ctrl.queues[1] = session
    sub.controllers = {7: ctrl}
    service.subsystems[SUBNQN] = cast(Any, sub)
    return service, session, workers, ctrl


async def _run(service: TargetService, workers: _Workers, host_secret: str, ctrl_secret: str):
    """Drive one transaction as the worker forwards it; what the worker was told after each
    step, and the last status."""
    hostkeys = DhchapKeys(
        DhchapSecret.parse(host_secret, "s"),
        DhchapSecret.parse(ctrl_secret, "c") if ctrl_secret else None,
    )
    tx = Transaction(hostkeys, HOSTNQN, SUBNQN, 1, 1)
    told: list[int] = []

    async def send(message: bytes) -> Status:
        status, _ = await service.forwarded_data(
            CTRL_KEY_, 1, _auth_sqe(FabricsType.AUTH_SEND, len(message)), message
        )
        told.append(len(workers.authenticated))
        return status

    async def receive() -> bytes:
        status, data = await service.forwarded_data(
            CTRL_KEY_, 1, _auth_sqe(FabricsType.AUTH_RECEIVE, RECEIVE_LENGTH), None
        )
        assert status.ok
        told.append(len(workers.authenticated))
        return data

    # Before (and during) the transaction, everything else gets Authentication Required.
    status = await service.forwarded(CTRL_KEY_, 1, Sqe.decode(read_sqe()))
    assert status.code == SC.AUTH_REQUIRED and status.dnr
    assert (await send(tx.negotiate())).ok
    try:
        reply = tx.reply(await receive())
        assert (await send(reply)).ok
        success2 = tx.success1(await receive())
        if success2 is not None:
            assert (await send(success2)).ok
    except Exception as exc:  # the host's side of a failure
        return told, exc
    return told, None


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_the_control_plane_opens_the_queue_once_authenticated(bidirectional: bool) -> None:
    async def main() -> None:
        service, session, workers, _ctrl = _service(CTRL_KEY if bidirectional else "")
        told, error = await _run(service, workers, KEY, CTRL_KEY if bidirectional else "")
        assert error is None
        # Told once, with the command that authenticated the host (before its answer leaves):
        # the Reply when only the host authenticates, the Success2 when both do.
        if bidirectional:  # Negotiate, Challenge, Reply, Success1, Success2
            assert told == [0, 0, 0, 0, 1]
        else:  # Negotiate, Challenge, Reply, Success1
            assert told == [0, 0, 1, 1]
        assert workers.authenticated == [(CTRL_KEY_, 1)]
        assert not session.worker_gated and session.auth is not None
        assert session.auth.authenticated

    asyncio.run(main())


def test_a_failed_transaction_never_opens_the_queue_and_ends_the_controller() -> None:
    async def main() -> None:
        service, session, workers, ctrl = _service("")
        _told, error = await _run(service, workers, generate_secret(0, 32), "")
        assert error is not None  # the host read AUTH_Failure1
        assert workers.authenticated == [] and session.worker_gated
        status = await service.forwarded(CTRL_KEY_, 1, Sqe.decode(read_sqe()))
        assert status.code == SC.AUTH_REQUIRED
        await asyncio.sleep(0.3)  # AUTH_FAILURE_GRACE_S
        assert ctrl.deleted_reason == "authentication failed"

    asyncio.run(main())
