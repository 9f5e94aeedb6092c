"""The target over loopback NVMe/TCP: Connect, properties, admin and I/O commands, data paths."""

from __future__ import annotations

import dataclasses
import os
import struct
import time

import pytest

from nvmf.control.model import TargetConfig
from nvmf.protocol.tcp import ResponseReceived
from nvmf.wire.fabrics import CSTS, Cap, Prop, PropertyCommand
from nvmf.wire.identify import (
    Cns,
    IdentifyController,
    IdentifyNamespace,
    NamespaceList,
    Nidt,
    NsIdDescriptor,
    decode_ns_id_descriptors,
)
from nvmf.wire.logpage import LogPageId, decode_discovery_log, decode_error_log
from nvmf.wire.opcodes import AdminOpcode, FabricsType, FeatureId, IoOpcode
from nvmf.wire.sqe import PSDT_PRP, SGL_DATA_BLOCK_TRANSPORT, Cqe, SglDescriptor, Sqe
from nvmf.wire.status import SC, Status, error
from tests.target.conftest import ALLOWED_HOST, LOCKED_NQN, SUBNQN, RunningTarget, running_target
from tests.target.rawhost import CC_ENABLE, HOSTNQN, RawHost, is_status, status_of

DISC = "nqn.2014-08.org.nvmexpress.discovery"


def admin(target: RunningTarget, *, hdgst: bool = False, ddgst: bool = False) -> RawHost:
    host = RawHost(target.addr, hdgst=hdgst, ddgst=ddgst)
    host.initialize()
    cqe = host.connect(SUBNQN)
    assert status_of(cqe).ok, status_of(cqe)
    host.enable()
    return host


def io_queue(target: RunningTarget, adm: RawHost, qid: int = 1, **kw: bool) -> RawHost:
    q = RawHost(target.addr, **kw)
    q.initialize()
    cqe = q.connect(SUBNQN, qid=qid, cntlid=adm.cntlid, sqsize=127)
    assert status_of(cqe).ok, status_of(cqe)
    return q


def rw(cid: int, op: int, nsid: int, slba: int, nlb: int, length: int, cdw12: int = 0) -> Sqe:
    sqe = Sqe(opcode=op, cid=cid, nsid=nsid, cdw10=slba & 0xFFFFFFFF, cdw11=slba >> 32)
    sqe.cdw12 = (nlb - 1) | cdw12
    sqe.sgl = SglDescriptor.tcp_transport(length)
    return sqe


def identify(host: RawHost, cns: int, nsid: int = 0) -> tuple[int, bytes]:
    sqe = Sqe(opcode=AdminOpcode.IDENTIFY, cid=host.next_cid(), nsid=nsid, cdw10=cns)
    sqe.sgl = SglDescriptor.tcp_transport(4096)
    cqe, data = host.command_data(sqe)
    return cqe.status, data


def test_connect_enable_and_identify(target: RunningTarget) -> None:
    host = admin(target)
    cap = Cap.decode(host.prop_get(Prop.CAP, size8=True).result)
    assert cap.mqes == 127 and cap.css_nvm
    assert host.prop_get(Prop.CSTS).dw0 & CSTS.RDY
    assert host.prop_get(Prop.VS).dw0 == 0x10300
    status, data = identify(host, 1)
    assert status == 0
    ctrl = IdentifyController.decode(data)
    assert ctrl.subnqn == SUBNQN
    assert ctrl.cntlid == host.cntlid
    assert ctrl.ioccsz == (64 + 8192) // 16 and ctrl.iorcsz == 1
    assert ctrl.sgls & 1 and ctrl.sgls & (1 << 20)
    assert ctrl.cntrltype == 1 and ctrl.oncs & 0b1101 == 0b1101
    status, data = identify(host, 2)
    assert NamespaceList.decode(data).nsids == [1, 2]
    status, data = identify(host, 0, nsid=2)
    ns = IdentifyNamespace.decode(data)
    assert ns.nsze == (8 << 20) // 4096 and ns.lba_format.lbads == 12
    # Every controller of the subsystem (CMIC bit 1) reaches it: shared (NMIC bit 0), so a
    # host's second path joins the first instead of being refused as a duplicate.
    assert ctrl.cmic & 0b10 and ns.nmic & 1
    # An inactive NSID gives a zero-filled structure; NSID 0 is invalid.
    status, data = identify(host, 0, nsid=7)
    assert status == 0 and data == bytes(4096)
    status, _ = identify(host, 0, nsid=0)
    assert status >> 1 & 0x7FF == SC.INVALID_NS


#: What ``nvmetcli save`` writes for a namespace the kernel gave no NGUID.
NO_NGUID = "00000000-0000-0000-0000-000000000000"
NS2_UUID = "c1a0b7e6-3b1c-4f0e-9d5d-0123456789ab"


def _ns2_saved_by_nvmetcli(cfg: TargetConfig) -> None:
    ns = cfg.subsystems[0].namespaces[1]
    ns.nguid, ns.uuid = NO_NGUID, NS2_UUID


def test_namespace_identification_descriptors() -> None:
    """CNS 03h lists each identifier the namespace has (NGUID, UUID) and its CSI; an NGUID of
    zeros, as ``nvmetcli save`` writes for a namespace without one, is none: no descriptor,
    as Linux's nvmet answers (a zero NGUID descriptor is what nvme-cli showed)."""
    with running_target(0, edit=_ns2_saved_by_nvmetcli) as target:
        host = admin(target)
        status, data = identify(host, Cns.NS_DESC_LIST, nsid=2)
        assert status == 0
        uuid2 = bytes.fromhex(NS2_UUID.replace("-", ""))
        assert decode_ns_id_descriptors(data) == [
            NsIdDescriptor(Nidt.UUID, uuid2),
            NsIdDescriptor(Nidt.CSI, b"\0"),
        ]
        status, data = identify(host, 0, nsid=2)
        assert IdentifyNamespace.decode(data).nguid == bytes(16)
        # Namespace 1 has no identifiers configured: both derived, both listed.
        status, data = identify(host, Cns.NS_DESC_LIST, nsid=1)
        descs = decode_ns_id_descriptors(data)
        assert [d.nidt for d in descs] == [Nidt.NGUID, Nidt.UUID, Nidt.CSI]
        assert all(any(d.nid) for d in descs[:2])


def test_number_of_queues_grant_and_io_connect_limits(target: RunningTarget) -> None:
    host = admin(target)
    sqe = Sqe(opcode=AdminOpcode.SET_FEATURES, cid=host.next_cid())
    sqe.cdw10 = FeatureId.NUM_QUEUES
    sqe.cdw11 = (63 << 16) | 63  # ask for 64
    sqe.sgl = SglDescriptor.tcp_transport(0)
    cqe = host.command(sqe)
    assert status_of(cqe).ok
    assert cqe.dw0 == (3 << 16) | 3  # the target's maximum: 4
    q = RawHost(target.addr)
    q.initialize()
    cqe = q.connect(SUBNQN, qid=5, cntlid=host.cntlid, sqsize=31)
    assert is_status(cqe, SC.CONNECT_INVALID_PARAM)
    assert cqe.dw0 == 42  # IPO: qid in the SQE, IATTR 0
    q2 = io_queue(target, host, qid=4)
    q2.close()


@pytest.mark.parametrize("digests", [False, True])
def test_write_read_integrity_incapsule_and_r2t(target: RunningTarget, digests: bool) -> None:
    host = admin(target, hdgst=digests, ddgst=digests)
    q = io_queue(target, host, hdgst=digests, ddgst=digests)
    for nlb, incapsule in [(1, True), (8, True), (16, True), (17, False), (256, False)]:
        data = os.urandom(nlb * 512)
        cqe = q.command(
            rw(q.next_cid(), IoOpcode.WRITE, 1, 100, nlb, len(data)), data, incapsule=incapsule
        )
        assert status_of(cqe).ok
        cqe, back = q.command_data(rw(q.next_cid(), IoOpcode.READ, 1, 100, nlb, len(data)))
        assert status_of(cqe).ok and back == data
    # 1 MiB: the MDTS limit, through R2T and one C2HData.
    data = os.urandom(1 << 20)
    assert status_of(
        q.command(rw(q.next_cid(), IoOpcode.WRITE, 1, 0, 2048, 1 << 20), data, incapsule=False)
    ).ok
    cqe, back = q.command_data(rw(q.next_cid(), IoOpcode.READ, 1, 0, 2048, 1 << 20))
    assert back == data


def test_pipelined_incapsule_writes_keep_their_own_buffers(target: RunningTarget) -> None:
    """Many capsules in one segment: each command must keep its own staging buffer."""
    host = admin(target)
    q = io_queue(target, host)
    blocks = {i: os.urandom(4096) for i in range(64)}
    wire = b""
    for i, data in blocks.items():
        sqe = rw(1000 + i, IoOpcode.WRITE, 1, i * 8, 8, 4096)
        sqe.sgl = SglDescriptor.incapsule(4096)
        wire += b"".join(bytes(b) for b in q.conn.capsule_cmd(sqe.encode(), memoryview(data)))
    q.send(wire)
    done = 0
    while done < len(blocks):
        for ev in q.events():
            assert isinstance(ev, ResponseReceived)
            assert status_of(Cqe.decode(ev.cqe)).ok
            done += 1
    for _ in range(3):  # repeat reads: buffers recycled, data unchanged
        for i, data in blocks.items():
            _, back = q.command_data(rw(q.next_cid(), IoOpcode.READ, 1, i * 8, 8, 4096))
            assert back == data, f"block {i}"


#: How FreeBSD's NVMe/TCP host (sys/dev/nvmf/nvmf_tcp.c) describes data moved by R2T or
#: C2HData: a Data Block with the transport specific subtype, not Linux's Transport SGL Data
#: Block; a command without data keeps the zeroed descriptor it was built with.
FREEBSD_TRANSFER_SGL = SglDescriptor(0, 0, SGL_DATA_BLOCK_TRANSPORT)


def test_the_sgls_freebsds_host_writes_are_served(target: RunningTarget) -> None:
    """A zeroed SGL on commands without data (Property Get and Set, Flush), and data blocks
    with the transport specific subtype for Reads and Writes: the Linux target takes them, and
    so must we, or a FreeBSD host cannot even enable the controller."""
    host = RawHost(target.addr)
    host.initialize()
    assert status_of(host.connect(SUBNQN)).ok
    set_cc = PropertyCommand(host.next_cid(), FabricsType.PROPERTY_SET, 0, Prop.CC, CC_ENABLE)
    get_csts = PropertyCommand(host.next_cid(), FabricsType.PROPERTY_GET, 0, Prop.CSTS)
    for cmd in (set_cc, get_csts):
        sqe = Sqe.decode(cmd.encode())
        sqe.dptr = bytes(16)
        cqe = host.command(sqe)
        assert status_of(cqe).ok, status_of(cqe)
    assert cqe.dw0 & CSTS.RDY
    q = io_queue(target, host)
    data = os.urandom(64 << 10)
    write = rw(q.next_cid(), IoOpcode.WRITE, 1, 128, len(data) // 512, 0)
    write.sgl = dataclasses.replace(FREEBSD_TRANSFER_SGL, length=len(data))
    assert status_of(q.command(write, data, incapsule=False)).ok
    read = rw(q.next_cid(), IoOpcode.READ, 1, 128, len(data) // 512, 0)
    read.sgl = dataclasses.replace(FREEBSD_TRANSFER_SGL, length=len(data))
    cqe, back = q.command_data(read)
    assert status_of(cqe).ok and back == data
    flush = Sqe(opcode=IoOpcode.FLUSH, cid=q.next_cid(), nsid=1)
    assert flush.dptr == bytes(16)
    assert status_of(q.command(flush)).ok
    q.close()
    host.close()


def test_io_errors_are_nvme_statuses(target: RunningTarget) -> None:
    host = admin(target)
    q = io_queue(target, host)
    nsze = (64 << 20) // 512
    cqe = q.command(rw(q.next_cid(), IoOpcode.READ, 1, nsze - 1, 2, 1024))
    assert is_status(cqe, SC.LBA_RANGE)
    cqe = q.command(rw(q.next_cid(), IoOpcode.READ, 9, 0, 1, 512))
    assert is_status(cqe, SC.INVALID_NS)
    cqe = q.command(rw(q.next_cid(), 0x7E, 1, 0, 1, 0))
    assert is_status(cqe, SC.INVALID_OPCODE)
    # SGL length that disagrees with NLB.
    cqe = q.command(rw(q.next_cid(), IoOpcode.READ, 1, 0, 2, 512))
    assert is_status(cqe, SC.SGL_INVALID_DATA)
    # PRPs are not a fabrics data pointer.
    sqe = rw(q.next_cid(), IoOpcode.READ, 1, 0, 1, 512)
    sqe.flags = PSDT_PRP
    assert is_status(q.command(sqe), SC.INVALID_FIELD)
    # More than MDTS (1 MiB).
    cqe = q.command(rw(q.next_cid(), IoOpcode.READ, 1, 0, 4096, 2 << 20))
    assert is_status(cqe, SC.INVALID_FIELD)
    # More (M): the error log has this command's entry, as Linux's nvmet says of its own.
    assert status_of(cqe).more and status_of(cqe).dnr
    # The errors are in the error log, newest first.
    sqe = Sqe(opcode=AdminOpcode.GET_LOG_PAGE, cid=host.next_cid())
    sqe.cdw10 = LogPageId.ERROR | ((64 * 4 // 4 - 1) << 16)
    sqe.sgl = SglDescriptor.tcp_transport(64 * 4)
    cqe, data = host.command_data(sqe)
    entries = decode_error_log(data)
    # Status Field: the CQE's status in bits 15:1, the phase tag (0 on a fabric) in bit 0.
    assert entries[0].sqid == 1 and entries[0].status_field & 1 == 0
    assert Status.decode(entries[0].status_field >> 1) == error(SC.INVALID_FIELD), entries[0]


def test_compare_flush_write_zeroes_and_deallocate(target: RunningTarget) -> None:
    host = admin(target)
    q = io_queue(target, host)
    data = os.urandom(4096)
    assert status_of(q.command(rw(q.next_cid(), IoOpcode.WRITE, 1, 40, 8, 4096), data)).ok
    assert status_of(q.command(rw(q.next_cid(), IoOpcode.COMPARE, 1, 40, 8, 4096), data)).ok
    other = bytes(4095) + b"\x01"
    cqe = q.command(rw(q.next_cid(), IoOpcode.COMPARE, 1, 40, 8, 4096), other)
    assert is_status(cqe, SC.COMPARE_FAILED)
    flush = Sqe(opcode=IoOpcode.FLUSH, cid=q.next_cid(), nsid=1)
    flush.sgl = SglDescriptor.tcp_transport(0)
    assert status_of(q.command(flush)).ok
    flush.nsid, flush.cid = 0xFFFFFFFF, q.next_cid()  # every namespace
    assert status_of(q.command(flush)).ok
    wz = rw(q.next_cid(), IoOpcode.WRITE_ZEROES, 1, 40, 4, 0)
    assert status_of(q.command(wz)).ok
    cqe, back = q.command_data(rw(q.next_cid(), IoOpcode.READ, 1, 40, 8, 4096))
    assert back == bytes(2048) + data[2048:]
    dsm = Sqe(opcode=IoOpcode.DSM, cid=q.next_cid(), nsid=1, cdw10=0, cdw11=1 << 2)
    ranges = struct.pack("<IIQ", 0, 4, 44)
    assert status_of(q.command(dsm, ranges)).ok
    cqe, back = q.command_data(rw(q.next_cid(), IoOpcode.READ, 1, 40, 8, 4096))
    assert back == bytes(4096)


def test_discovery_log_and_access_control(target: RunningTarget) -> None:
    disc = RawHost(target.addr)
    disc.initialize()
    assert status_of(disc.connect(DISC)).ok
    disc.enable()
    sqe = Sqe(opcode=AdminOpcode.GET_LOG_PAGE, cid=disc.next_cid())
    sqe.cdw10 = LogPageId.DISC | ((4096 // 4 - 1) << 16)
    sqe.sgl = SglDescriptor.tcp_transport(4096)
    cqe, data = disc.command_data(sqe)
    log = decode_discovery_log(data)
    nqns = [e.subnqn for e in log.entries]
    # Our host may not reach the locked subsystem, so it is not listed for it.
    assert nqns == [DISC, SUBNQN]
    assert log.entries[1].traddr == "127.0.0.1" and log.entries[1].cntlid == 0xFFFF
    # The port was configured with trsvcid 0: the entries give the port actually bound.
    assert {e.trsvcid for e in log.entries} == {str(target.addr[1])}
    # An I/O queue on the discovery subsystem is refused.
    q = RawHost(target.addr)
    q.initialize()
    assert is_status(q.connect(DISC, qid=1, cntlid=1), SC.CONNECT_INVALID_PARAM)
    # Access control: not allowed, then allowed.
    locked = RawHost(target.addr)
    locked.initialize()
    cqe = locked.connect(LOCKED_NQN)
    assert is_status(cqe, SC.CONNECT_INVALID_HOST)
    cqe = locked.connect(LOCKED_NQN, hostnqn=ALLOWED_HOST)
    assert status_of(cqe).ok
    unknown = RawHost(target.addr)
    unknown.initialize()
    cqe = unknown.connect("nqn.2024-01.io.nvmf:nope")
    assert is_status(cqe, SC.CONNECT_INVALID_PARAM)
    assert cqe.dw0 == (1 << 16) | 256  # IATTR data, IPO subsysnqn


def test_io_connect_must_match_controller_host(target: RunningTarget) -> None:
    host = admin(target)
    q = RawHost(target.addr)
    q.initialize()
    cntlid = host.cntlid
    cqe = q.connect(SUBNQN, qid=1, cntlid=cntlid, hostnqn=HOSTNQN + "x")
    assert is_status(cqe, SC.CONNECT_INVALID_PARAM) and cqe.dw0 == (1 << 16) | 16
    cqe = q.connect(SUBNQN, qid=1, cntlid=cntlid, hostid=b"\x02" * 16)
    assert is_status(cqe, SC.CONNECT_INVALID_PARAM) and cqe.dw0 == (1 << 16) | 0


def test_keep_alive_timeout_tears_down_the_controller(target: RunningTarget) -> None:
    host = RawHost(target.addr)
    host.initialize()
    assert status_of(host.connect(SUBNQN, kato=300)).ok
    host.enable()
    q = io_queue(target, host)
    time.sleep(1.0)
    assert host.is_closed() and q.is_closed()


def test_io_queue_connects_keep_the_controller_alive(target: RunningTarget) -> None:
    """The Linux host sends no Keep Alive until every I/O queue is connected; a Connect is
    traffic (as in the Linux target), so slow I/O queue connects do not expire KATO."""
    host = RawHost(target.addr)
    host.initialize()
    assert status_of(host.connect(SUBNQN, kato=600)).ok
    host.enable()
    queues = []
    for qid in (1, 2, 3):
        time.sleep(0.4)
        queues.append(io_queue(target, host, qid))
    time.sleep(0.4)  # 1.6 s since the admin Connect, never 0.6 s without a command
    cqe, _ = identify(host, 1)
    assert cqe == 0
    for q in [*queues, host]:
        q.close()


def test_io_traffic_alone_keeps_the_controller_alive(target: RunningTarget) -> None:
    """CTRATT says Traffic Based Keep Alive (as the Linux target does), so the Linux host sends
    no Keep Alive while its I/O completes: an I/O command must restart the timer wherever it
    runs, in a worker too.  Once the I/O stops, the timer runs out as before."""
    host = admin(target)
    status, data = identify(host, 1)
    assert status == 0 and IdentifyController.decode(data).ctratt & (1 << 6)
    host.close()
    host = RawHost(target.addr)
    host.initialize()
    assert status_of(host.connect(SUBNQN, kato=1000)).ok
    host.enable()
    q = io_queue(target, host)
    end = time.monotonic() + 3.5  # 3.5 KATOs with no command on the admin queue
    while time.monotonic() < end:
        cqe, _ = q.command_data(rw(q.next_cid(), IoOpcode.READ, 1, 0, 1, 512))
        assert status_of(cqe).ok, status_of(cqe)
        time.sleep(0.1)
    status, _ = identify(host, 1)
    assert status == 0
    assert host.is_closed(timeout=4.0) and q.is_closed()


def test_commands_before_connect_or_enable(target: RunningTarget) -> None:
    host = RawHost(target.addr)
    host.initialize()
    status, _ = identify(host, 1)
    assert status >> 1 & 0x7FF == SC.CMD_SEQ_ERROR and status & (1 << 15)
    assert status_of(host.connect(SUBNQN)).ok
    status, _ = identify(host, 1)  # CC.EN is still 0
    assert status >> 1 & 0x7FF == SC.CMD_SEQ_ERROR
    cqe = host.prop_get(0x30)  # no such property
    assert is_status(cqe, SC.INVALID_FIELD)
    # A second Connect on the same queue is Invalid Opcode, as the Linux and SPDK targets say.
    assert is_status(host.connect(SUBNQN), SC.INVALID_OPCODE)
