"""The transport contract (:mod:`nvmf.transport.base`), checked on every registered transport.

Each test runs for every trtype in :data:`~nvmf.transport.base.REGISTRY` (a new fabric joins by
registering, and by giving the suite a host adapter in ``tests/transport/fabrics.py``), against
a target serving every queue itself and one with two offload workers (where queues that can
move are handed over after Connect, and those that cannot stay in the control plane).  The
tests look at what a host and the target's owner see: completions, data, statuses, queues that
end, controllers that go away.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator

import pytest

from nvmf.control.session import ControlSession
from nvmf.transport.base import REGISTRY, FabricQueue, QueueExport
from nvmf.wire.fabrics import CSTS, Prop
from nvmf.wire.identify import IdentifyController
from nvmf.wire.opcodes import AdminOpcode, IoOpcode
from nvmf.wire.sqe import FUSE_FIRST, SglDescriptor, Sqe
from nvmf.wire.status import SC
from tests.target.conftest import fail_parse
from tests.transport.fabrics import (
    ADAPTERS,
    INLINE,
    SUBNQN,
    Host,
    RunningTarget,
    runnable_here,
    running_target,
)
from tests.transport.fabrics import status as status_of

#: Every registered transport this machine can serve (NVMe/RDMA's cases run in the guest).
TRTYPES = sorted(t for t in REGISTRY if runnable_here(t))


@pytest.fixture(
    scope="module",
    params=[(t, w) for t in TRTYPES for w in (0, 2)],
    ids=lambda p: f"{p[0]}-{'one-process' if p[1] == 0 else f'{p[1]}-workers'}",
)
def target(request: pytest.FixtureRequest) -> Iterator[RunningTarget]:
    trtype, workers = request.param
    with running_target(trtype, workers) as running:
        yield running


@pytest.fixture
def host(target: RunningTarget) -> Host:
    return Host(target)


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def session_of(target: RunningTarget, cntlid: int, qid: int) -> ControlSession:
    """The control plane's state of queue ``qid`` of controller ``cntlid``."""

    def find() -> ControlSession:
        ctrl = target.service.subsystems[SUBNQN].controllers[cntlid]
        return ctrl.queues[qid]

    return target.call(find)


def controller_exists(target: RunningTarget, cntlid: int) -> bool:
    return target.call(lambda: cntlid in target.service.subsystems[SUBNQN].controllers)


def queue_exists(target: RunningTarget, cntlid: int, qid: int) -> bool:
    def find() -> bool:
        ctrl = target.service.subsystems[SUBNQN].controllers.get(cntlid)
        return ctrl is not None and qid in ctrl.queues

    return target.call(find)


def rw(cid: int, op: int, nsid: int, slba: int, nlb: int) -> Sqe:
    sqe = Sqe(opcode=op, cid=cid, nsid=nsid, cdw10=slba & 0xFFFFFFFF, cdw11=slba >> 32)
    sqe.cdw12 = nlb - 1
    return sqe


def test_every_registered_transport_has_a_host_adapter() -> None:
    """The suite cannot silently skip a transport: each registered one has an adapter."""
    assert set(REGISTRY) <= set(ADAPTERS), set(REGISTRY) - set(ADAPTERS)


def test_connect_enable_identify(target: RunningTarget, host: Host) -> None:
    """Connect makes a controller the service knows, enable makes it ready, and Identify
    Controller comes back as C2H data of the right controller."""
    q, cntlid = host.admin()
    try:
        assert controller_exists(target, cntlid)
        assert status_of(host.prop_get(q, Prop.CSTS)).ok
        assert host.prop_get(q, Prop.CSTS).dw0 & CSTS.RDY
        sqe = Sqe(opcode=AdminOpcode.IDENTIFY, cid=host.next_cid(), cdw10=1)
        cqe, data = q.command(sqe, data_in=4096)
        assert status_of(cqe).ok, status_of(cqe)
        assert cqe.cid == sqe.cid
        assert len(data) == 4096
        ctrl = IdentifyController.decode(data)
        assert ctrl.subnqn == SUBNQN
        assert ctrl.cntlid == cntlid
        assert ctrl.ioccsz == (64 + INLINE) // 16
    finally:
        q.close()


@pytest.mark.parametrize(
    ("nsid", "nlb", "incapsule"),
    [
        (1, 1, True),
        (1, 8, True),
        (1, INLINE // 512, True),  # exactly the port's in-capsule limit
        (1, 1, False),
        (1, 17, False),
        (1, 256, False),
        (1, 2048, False),  # 1 MiB, the MDTS
        (2, 1, True),
        (2, 3, False),
    ],
)
def test_write_read_integrity(
    target: RunningTarget, host: Host, nsid: int, nlb: int, incapsule: bool
) -> None:
    """What a Write carries (in the capsule or fetched by the transport) reads back intact, and
    a read at a neighbouring LBA range does not see it."""
    adm, cntlid = host.admin()
    q = host.io_queue(cntlid)
    bs = 512 if nsid == 1 else 4096
    slba = 1000 if nsid == 1 else 100
    data = os.urandom(nlb * bs)
    try:
        cqe, back = q.command(
            rw(host.next_cid(), IoOpcode.WRITE, nsid, slba, nlb), data, incapsule=incapsule
        )
        assert status_of(cqe).ok, status_of(cqe)
        assert back == b""
        read = rw(host.next_cid(), IoOpcode.READ, nsid, slba, nlb)
        cqe, back = q.command(read, data_in=len(data))
        assert status_of(cqe).ok, status_of(cqe)
        assert back == data
        # One block just past the range: unwritten by this test (each test writes at slba).
        cqe, back = q.command(rw(host.next_cid(), IoOpcode.READ, nsid, slba + nlb, 1), data_in=bs)
        assert status_of(cqe).ok and back == bytes(bs)
    finally:
        # Leave the namespace as found for the other parametrizations.
        zero = bytes(nlb * bs)
        q.command(rw(host.next_cid(), IoOpcode.WRITE, nsid, slba, nlb), zero)
        q.close()
        adm.close()


def test_many_writes_then_reads_on_one_queue(target: RunningTarget, host: Host) -> None:
    """Sixteen different blocks written one after another read back as their own data: every
    command's data stays with its command."""
    adm, cntlid = host.admin()
    q = host.io_queue(cntlid)
    try:
        blocks = [os.urandom(4096) for _ in range(16)]
        for i, block in enumerate(blocks):
            sqe = rw(host.next_cid(), IoOpcode.WRITE, 1, 5000 + 8 * i, 8)
            assert status_of(q.command(sqe, block, incapsule=i % 2 == 0)[0]).ok
        for i, block in enumerate(blocks):
            sqe = rw(host.next_cid(), IoOpcode.READ, 1, 5000 + 8 * i, 8)
            cqe, back = q.command(sqe, data_in=4096)
            assert status_of(cqe).ok and back == block, i
    finally:
        q.close()
        adm.close()


def test_an_incapsule_block_at_an_offset_is_what_is_written(
    target: RunningTarget, host: Host
) -> None:
    """Identify Controller says SGL offsets are supported (SGLS bit 20), so a Write whose
    in-capsule Data Block starts 16 bytes into the capsule's data writes those 512 bytes, not
    the 16 before them; a block that an offset puts past the capsule's data is SGL Offset
    Invalid."""
    adm, cntlid = host.admin()
    q = host.io_queue(cntlid)
    block, slba = os.urandom(512), 3000
    try:
        sqe = rw(host.next_cid(), IoOpcode.WRITE, 1, slba, 1)
        sqe.sgl = SglDescriptor.incapsule(512, offset=16)
        cqe, _ = q.command(sqe, b"\xee" * 16 + block, incapsule=True, keep_sgl=True)
        assert status_of(cqe).ok, status_of(cqe)
        cqe, back = q.command(rw(host.next_cid(), IoOpcode.READ, 1, slba, 1), data_in=512)
        assert status_of(cqe).ok and back == block

        past = rw(host.next_cid(), IoOpcode.WRITE, 1, slba, 1)
        past.sgl = SglDescriptor.incapsule(512, offset=16)
        cqe, _ = q.command(past, bytes(512), incapsule=True, keep_sgl=True)
        st = status_of(cqe)
        assert (st.code, st.dnr) == (SC.SGL_INVALID_OFFSET, True), st
        cqe, back = q.command(rw(host.next_cid(), IoOpcode.READ, 1, slba, 1), data_in=512)
        assert status_of(cqe).ok and back == block  # the refused Write wrote nothing
    finally:
        q.command(rw(host.next_cid(), IoOpcode.WRITE, 1, slba, 1), bytes(512))
        q.close()
        adm.close()


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("lba-out-of-range", SC.LBA_RANGE),
        ("invalid-opcode", SC.INVALID_OPCODE),
        ("foreign-sgl", SC.SGL_INVALID_TYPE),
        ("in-capsule-read", SC.SGL_INVALID_DATA),
        ("fused", SC.INVALID_FIELD),
    ],
)
def test_bad_command_fails_with_dnr_and_the_queue_goes_on(
    target: RunningTarget, host: Host, case: str, code: SC
) -> None:
    """A host's bad command completes with an error status and DNR set, carries no data back,
    and the queue serves the next command."""
    adm, cntlid = host.admin()
    q = host.io_queue(cntlid)
    try:
        keep_sgl = False
        data_out: bytes | None = None
        data_in = 0
        if case == "lba-out-of-range":
            sqe = rw(host.next_cid(), IoOpcode.READ, 1, (16 << 20) // 512, 1)
            data_in = 512
        elif case == "invalid-opcode":
            sqe = Sqe(opcode=0x7E, cid=host.next_cid(), nsid=1)
        elif case == "foreign-sgl":  # another fabric's data descriptor
            sqe = rw(host.next_cid(), IoOpcode.READ, 1, 0, 1)
            if target.trtype == "rdma":
                sqe.sgl = SglDescriptor.tcp_transport(512)
            else:
                sqe.sgl = SglDescriptor.keyed(0x1000, 512, 0x1234)
            keep_sgl = True
        elif case == "fused":  # the first half of a fused operation: FUSES is 0
            sqe = rw(host.next_cid(), IoOpcode.READ, 1, 0, 1)
            sqe.flags |= FUSE_FIRST
            data_in = 512
        else:  # a Read whose SGL says its data is in the capsule: it has none to send
            sqe = rw(host.next_cid(), IoOpcode.READ, 1, 0, 1)
            sqe.sgl = SglDescriptor.incapsule(512)
            keep_sgl = True
        cqe, back = q.command(sqe, data_out, data_in, keep_sgl=keep_sgl)
        st = status_of(cqe)
        assert st.code == code, st
        assert st.dnr, st
        assert cqe.cid == sqe.cid
        assert back == b""
        ok_cqe, _ = q.command(rw(host.next_cid(), IoOpcode.READ, 1, 0, 1), data_in=512)
        assert status_of(ok_cqe).ok
    finally:
        q.close()
        adm.close()


#: An admin opcode whose parse the test below makes raise (vendor specific: nothing else sends
#: it).
FAULTY_OPCODE = 0xC1


def test_a_bug_handling_a_command_ends_only_its_queue(
    target: RunningTarget,
    host: Host,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An exception while the target handles what a host sent (a bug: injected here into the
    control plane's parse) ends that queue at once, so its host sees it go and reconnects
    instead of waiting for its I/O timeout; the traceback is logged, and another controller's
    queues go on."""
    caplog.set_level(logging.ERROR, logger="nvmf")
    adm, cntlid = host.admin()
    other, other_id = host.admin()
    other_io = host.io_queue(other_id)
    fail_parse(
        monkeypatch,
        target.service,
        lambda req: req.opcode == FAULTY_OPCODE,
        "injected fault in a parse",
    )
    try:
        with pytest.raises(ConnectionError):
            adm.command(Sqe(opcode=FAULTY_OPCODE, cid=host.next_cid()))
        assert adm.wait_closed(5.0)
        assert wait_for(lambda: not controller_exists(target, cntlid))
        cqe, _ = other_io.command(rw(host.next_cid(), IoOpcode.READ, 1, 0, 1), data_in=512)
        assert status_of(cqe).ok, status_of(cqe)
        assert status_of(host.prop_get(other, Prop.CSTS)).ok
        # One error: the bug's, with its traceback (ending the queue raised nothing more).
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, [r.getMessage() for r in errors]
        assert "internal error" in errors[0].getMessage()
        assert errors[0].exc_info is not None
        assert "injected fault" in str(errors[0].exc_info[1])
    finally:
        other_io.close()
        other.close()
        adm.close()


def test_host_closing_the_admin_queue_deletes_the_controller_once(
    target: RunningTarget, host: Host
) -> None:
    """The owner hears of a queue the host closed exactly once: the controller goes, and its I/O
    queues end on the host side too."""
    adm, cntlid = host.admin()
    q = host.io_queue(cntlid)
    state = session_of(target, cntlid, 0)
    assert target.service.times_closed(state) == 0
    adm.close()
    assert wait_for(lambda: not controller_exists(target, cntlid))
    assert q.wait_closed(5.0), "deleting the controller leaves its I/O queue open"
    assert wait_for(lambda: target.service.times_closed(state) == 1)
    # Closing it again from the target side (a late keep-alive expiry, say) is a no-op.
    target.call(lambda: state.fabric.close("again"))
    assert target.service.times_closed(state) == 1
    q.close()


def test_host_closing_an_io_queue_removes_only_that_queue(
    target: RunningTarget, host: Host
) -> None:
    adm, cntlid = host.admin()
    q1 = host.io_queue(cntlid, qid=1)
    q2 = host.io_queue(cntlid, qid=2)
    try:
        assert queue_exists(target, cntlid, 1) and queue_exists(target, cntlid, 2)
        q1.close()
        assert wait_for(lambda: not queue_exists(target, cntlid, 1))
        assert controller_exists(target, cntlid) and queue_exists(target, cntlid, 2)
        cqe, _ = q2.command(rw(host.next_cid(), IoOpcode.READ, 1, 0, 1), data_in=512)
        assert status_of(cqe).ok
    finally:
        q2.close()
        adm.close()


def test_target_close_ends_the_host_end(target: RunningTarget, host: Host) -> None:
    """``FabricQueue.close()`` on the target side: the host end sees its queue end, the owner
    hears of it once, and the host can no longer get a command through."""
    adm, cntlid = host.admin()
    state = session_of(target, cntlid, 0)
    target.call(lambda: state.fabric.close("closed by the test"))
    assert adm.wait_closed(5.0)
    assert target.service.times_closed(state) == 1
    assert wait_for(lambda: not controller_exists(target, cntlid))
    with pytest.raises(ConnectionError):
        adm.command(Sqe(opcode=AdminOpcode.KEEP_ALIVE, cid=host.next_cid()))
    adm.close()


def test_a_port_that_stops_accepting_refuses_new_queues_and_serves_its_own(
    target: RunningTarget,
) -> None:
    """``Transport.stop_accepting`` (a target stopping): a host connecting now is refused,
    while the queues already open go on serving until the port is removed.  On a target of
    its own: the module's goes on accepting for the other tests."""
    workers = 2 if target.service.workers is not None else 0
    with running_target(target.trtype, workers, rdma_service="4421") as stopping:
        host = Host(stopping)
        adm, cntlid = host.admin()
        q = host.io_queue(cntlid)
        try:
            transport = stopping.service.transports[stopping.trtype]
            stopping.call(lambda: transport.stop_accepting(stopping.port))
            with pytest.raises(ConnectionError):
                host.open().close()
            cqe, _ = q.command(rw(host.next_cid(), IoOpcode.READ, 1, 0, 1), data_in=512)
            assert status_of(cqe).ok, status_of(cqe)
            assert status_of(host.prop_get(adm, Prop.CSTS)).ok
        finally:
            q.close()
            adm.close()


def test_local_address_is_where_the_port_is(target: RunningTarget, host: Host) -> None:
    """``local_address()`` names the port the queue was reached on, as ``bound_address``."""
    adm, cntlid = host.admin()
    try:
        fabric: FabricQueue = session_of(target, cntlid, 0).fabric
        traddr, trsvcid = target.call(fabric.local_address)
        assert traddr and trsvcid
        transport = target.service.transports[target.trtype]
        bound = target.call(lambda: transport.bound_address(target.port))
        assert (traddr, trsvcid) == (bound[0], str(bound[1]))
    finally:
        adm.close()


def test_exportable_says_whether_export_state_works(target: RunningTarget, host: Host) -> None:
    """``caps.exportable`` is true exactly when a quiet queue can be exported: a live descriptor
    comes out, or the call fails and the queue goes on serving.  (The admin queue: it stays in
    the control plane whether or not there are workers.)"""
    adm, cntlid = host.admin()
    export: QueueExport | None = None
    try:
        fabric: FabricQueue = session_of(target, cntlid, 0).fabric
        transport = target.service.transports[target.trtype]
        try:
            export = target.run(fabric.export_state())
        except (OSError, RuntimeError, NotImplementedError) as exc:
            assert not transport.caps.exportable, f"exportable, but export_state failed: {exc}"
            cqe, _ = adm.command(Sqe(opcode=AdminOpcode.KEEP_ALIVE, cid=host.next_cid()))
            assert status_of(cqe).ok, "a failed export broke the queue"
        else:
            assert transport.caps.exportable, "export_state worked on a non-exportable queue"
            assert export.fd >= 0
            os.fstat(export.fd)  # a live descriptor, now the caller's
            assert isinstance(export.state, dict)
    finally:
        if export is not None:
            os.close(export.fd)
        adm.close()
