"""The status an NVMe/TCP target gives each of a set of commands that are wrong in one field
(and a few right ones beside them), for comparing our target with the Linux kernel's.

``python -m tests.guest.status_probe ADDR PORT SUBNQN > out.json`` runs every case against
the target at ADDR:PORT (namespace 1 of SUBNQN must exist; the host NQN is
:data:`tests.target.rawhost.HOSTNQN`) and prints ``{case: answer}``, where an answer is the
status as ``"SC 0x00b DNR"`` (code with its type, as :class:`~nvmf.wire.status.SC` spells it),
``"closed"`` when the target ended the connection instead, or ``"timeout"``.  Each case runs
on fresh queues, so what one case leaves behind never decides the next.

Connect cases (:class:`ConnectCase`) each make the queues they need and then send one Connect
that is wrong in one field; their answer adds DW0 when it is an error (the IATTR and IPO of a
Connect Invalid Parameters).

Cases are relative to what the target says of itself (the namespace's size and LBA size), so
the same cases fit a kernel target on a loop device and ours on a RAM namespace.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import struct
import sys
from dataclasses import dataclass

from nvmf.protocol import tcp as p
from nvmf.wire.fabrics import ConnectCommand, ConnectData, Prop, PropertyCommand
from nvmf.wire.identify import IdentifyNamespace
from nvmf.wire.opcodes import AdminOpcode, FabricsType, FeatureId, IoOpcode
from nvmf.wire.sqe import (
    FUSE_FIRST,
    PSDT_PRP,
    PSDT_SGL_MPTR_CONTIG,
    SGL_DATA_BLOCK_TRANSPORT,
    SGL_RDMA_KEYED,
    SGL_TCP_TRANSPORT,
    Cqe,
    SglDescriptor,
    Sqe,
)
from nvmf.wire.status import Status
from tests.target.rawhost import HOSTNQN, RawHost

#: The well-known discovery subsystem NQN (Base 2.0).
DISCOVERY_NQN = "nqn.2014-08.org.nvmexpress.discovery"

FABRICS_OPCODE = 0x7F
#: How long one command may take before its answer is "timeout".
COMMAND_TIMEOUT = 5.0


@dataclass(frozen=True)
class Geometry:
    """What the cases are built from: namespace 1's size and LBA size."""

    nsze: int
    block: int


@dataclass(frozen=True)
class Case:
    """One command: on the admin or the I/O queue, with data to send in the capsule (or by
    R2T, with ``r2t``) or none."""

    queue: str
    sqe: Sqe
    data: bytes = b""
    r2t: bool = False


@dataclass(frozen=True)
class ConnectCase:
    """A Connect as the Linux host sends it but for the fields given: for the admin queue
    (``qid`` 0) on a fresh connection, or for an I/O queue of a controller made (and enabled,
    unless not ``enable``) just before.  ``subnqn`` None is the probed subsystem, ``cntlid``
    None is FFFFh on the admin queue and the controller's on an I/O queue; ``data`` replaces
    the Connect data.  ``before``: I/O queues of the same QID connected first; ``again``: the
    Connect follows a successful one on the same queue; ``discovery``: the controller is the
    discovery subsystem's."""

    qid: int = 0
    sqsize: int = 31
    recfmt: int = 0
    subnqn: str | None = None
    hostnqn: str = HOSTNQN
    hostid: bytes = b"\x01" * 16
    cntlid: int | None = None
    data: bytes | None = None
    by_r2t: bool = False
    enable: bool = True
    before: int = 0
    again: bool = False
    discovery: bool = False


def _connect_cases() -> dict[str, ConnectCase]:
    io = ConnectCase(qid=1, sqsize=31)
    return {
        "connect: unknown subsystem": ConnectCase(subnqn="nqn.2024-01.io.nvmf:nope"),
        "connect: RECFMT 1": ConnectCase(recfmt=1),
        "connect: admin SQSIZE 0": ConnectCase(sqsize=0),
        "connect: admin SQSIZE 127": ConnectCase(sqsize=127),
        "connect: admin CNTLID 1": ConnectCase(cntlid=1),
        "connect: data shorter than 1024 bytes": ConnectCase(data=bytes(512)),
        "connect: data by R2T": ConnectCase(by_r2t=True),
        "connect: again on the admin queue": ConnectCase(again=True),
        "connect: I/O queue": io,
        "connect: I/O queue, unknown CNTLID": dataclasses.replace(io, cntlid=0x1234),
        "connect: I/O queue, another host NQN": dataclasses.replace(io, hostnqn=HOSTNQN + "x"),
        "connect: I/O queue, another host ID": dataclasses.replace(io, hostid=b"\x02" * 16),
        "connect: I/O queue, QID 65535": dataclasses.replace(io, qid=0xFFFF),
        "connect: I/O queue, SQSIZE 0": dataclasses.replace(io, sqsize=0),
        "connect: I/O queue, SQSIZE 65535": dataclasses.replace(io, sqsize=0xFFFF),
        "connect: I/O queue twice": dataclasses.replace(io, before=1),
        "connect: I/O queue before CC.EN": dataclasses.replace(io, enable=False),
        "connect: I/O queue again on its queue": dataclasses.replace(io, again=True),
        "connect: I/O queue of the discovery controller": dataclasses.replace(io, discovery=True),
    }


def _sqe(opcode: int, nsid: int = 0, **fields: int) -> Sqe:
    sqe = Sqe(opcode=opcode, nsid=nsid, **fields)
    sqe.sgl = SglDescriptor.tcp_transport(0)
    return sqe


def _read(nsid: int, slba: int, nlb: int, length: int | None = None, **fields: int) -> Sqe:
    sqe = Sqe(
        opcode=IoOpcode.READ,
        nsid=nsid,
        cdw10=slba & 0xFFFFFFFF,
        cdw11=slba >> 32,
        cdw12=nlb - 1,
        **fields,
    )
    sqe.sgl = SglDescriptor.tcp_transport(length if length is not None else 0)
    return sqe


def _write(nsid: int, slba: int, nlb: int, data_len: int) -> Case:
    sqe = Sqe(opcode=IoOpcode.WRITE, nsid=nsid, cdw10=slba & 0xFFFFFFFF, cdw11=slba >> 32)
    sqe.cdw12 = nlb - 1
    sqe.sgl = SglDescriptor.incapsule(data_len)
    return Case("io", sqe, bytes(data_len))


def _by_r2t(case: Case, sgl_type: int) -> Case:
    """``case``'s Write with its data moved by R2T, described by an SGL of ``sgl_type``."""
    sqe = _with(case.sqe, sgl=SglDescriptor(0, len(case.data), sgl_type))
    return Case("io", sqe, case.data, r2t=True)


def _with(sqe: Sqe, **fields: object) -> Sqe:
    for name, value in fields.items():
        setattr(sqe, name, value)
    return sqe


def _admin_cases(g: Geometry) -> dict[str, Case]:
    identify = AdminOpcode.IDENTIFY
    log = AdminOpcode.GET_LOG_PAGE
    numd_512 = (512 // 4 - 1) << 16
    return {
        "admin: reserved opcode": Case("admin", _sqe(0x7E)),
        "identify: reserved CNS": Case("admin", _read_admin(identify, cdw10=0xFE)),
        "identify namespace: NSID 0": Case("admin", _read_admin(identify, cdw10=0)),
        "identify namespace: NSID FFFFFFFFh": Case(
            "admin", _read_admin(identify, nsid=0xFFFFFFFF, cdw10=0)
        ),
        "identify: SGL shorter than the data": Case(
            "admin", _read_admin(identify, cdw10=1, length=1024)
        ),
        "identify: PRP data pointer": Case(
            "admin", _with(_read_admin(identify, cdw10=1), flags=PSDT_PRP)
        ),
        "get log page: reserved LID": Case(
            "admin", _read_admin(log, length=512, cdw10=0x7D | numd_512)
        ),
        "get features: reserved FID": Case("admin", _sqe(AdminOpcode.GET_FEATURES, cdw10=0x7D)),
        "set features: reserved FID": Case("admin", _sqe(AdminOpcode.SET_FEATURES, cdw10=0x7D)),
        "get features: host identifier": Case(
            "admin", _read_admin(AdminOpcode.GET_FEATURES, length=16, cdw10=0x81, cdw11=1)
        ),
        "set features: host identifier": Case("admin", _sqe(AdminOpcode.SET_FEATURES, cdw10=0x81)),
        "get features: number of queues": Case(
            "admin", _sqe(AdminOpcode.GET_FEATURES, cdw10=FeatureId.NUM_QUEUES)
        ),
        "keep alive": Case("admin", _sqe(AdminOpcode.KEEP_ALIVE)),
        "identify: before Connect": Case("fresh", _read_admin(identify, cdw10=1)),
        "abort": Case("admin", _sqe(AdminOpcode.ABORT, cdw10=0xFFFF << 16)),
        "property get: reserved offset": Case("admin", _property(FabricsType.PROPERTY_GET, 0x40)),
        "property get: zeroed SGL": Case(
            "admin", _with(_property(FabricsType.PROPERTY_GET, Prop.CSTS), dptr=bytes(16))
        ),
        "property set: CAP": Case("admin", _property(FabricsType.PROPERTY_SET, Prop.CAP)),
        "fabrics: reserved FCTYPE": Case("admin", _with(_sqe(FABRICS_OPCODE), nsid=0x7D)),
        "admin: fused": Case(
            "admin", _with(_sqe(AdminOpcode.KEEP_ALIVE), flags=PSDT_SGL_MPTR_CONTIG | FUSE_FIRST)
        ),
    }


def _discovery_cases() -> dict[str, Case]:
    """On the admin queue of a discovery controller (connected and enabled)."""
    identify = AdminOpcode.IDENTIFY
    log = AdminOpcode.GET_LOG_PAGE
    disc_log = 0x70 | ((1024 // 4 - 1) << 16)
    get, set_ = AdminOpcode.GET_FEATURES, AdminOpcode.SET_FEATURES
    return {
        "discovery: identify controller": Case("discovery", _read_admin(identify, cdw10=1)),
        "discovery: identify namespace": Case("discovery", _read_admin(identify, nsid=1, cdw10=0)),
        "discovery: identify active namespaces": Case("discovery", _read_admin(identify, cdw10=2)),
        "discovery: discovery log": Case(
            "discovery", _read_admin(log, length=1024, cdw10=disc_log)
        ),
        "discovery: discovery log, offset past the end": Case(
            "discovery", _read_admin(log, length=1024, cdw10=disc_log, cdw12=1 << 20)
        ),
        "discovery: discovery log, offset not in dwords": Case(
            "discovery", _read_admin(log, length=1024, cdw10=disc_log, cdw12=2)
        ),
        "discovery: SMART log": Case(
            "discovery", _read_admin(log, length=512, cdw10=0x02 | (127 << 16))
        ),
        "discovery: error log": Case(
            "discovery", _read_admin(log, length=64, cdw10=0x01 | (15 << 16))
        ),
        "discovery: get features KATO": Case("discovery", _sqe(get, cdw10=FeatureId.KATO)),
        "discovery: get features number of queues": Case(
            "discovery", _sqe(get, cdw10=FeatureId.NUM_QUEUES)
        ),
        "discovery: set features number of queues": Case(
            "discovery", _sqe(set_, cdw10=FeatureId.NUM_QUEUES, cdw11=0x10001)
        ),
        "discovery: set features KATO": Case(
            "discovery", _sqe(set_, cdw10=FeatureId.KATO, cdw11=60000)
        ),
        "discovery: get features host identifier": Case(
            "discovery", _read_admin(get, length=16, cdw10=FeatureId.HOST_ID, cdw11=1)
        ),
        "discovery: set features async event configuration": Case(
            "discovery", _sqe(set_, cdw10=FeatureId.ASYNC_EVENT, cdw11=1 << 31)
        ),
        "discovery: keep alive": Case("discovery", _sqe(AdminOpcode.KEEP_ALIVE)),
        "discovery: reserved opcode": Case("discovery", _sqe(0x7E)),
        "discovery: property get CAP": Case(
            "discovery", _property(FabricsType.PROPERTY_GET, Prop.CAP)
        ),
    }


def _io_cases(g: Geometry) -> dict[str, Case]:
    last = g.nsze - 1
    one = g.block
    dsm = struct.pack("<IIQ", 0, 8, 0)  # context attributes, NLB, SLBA
    dsm_beyond = struct.pack("<IIQ", 0, 8, last)
    zeroes = IoOpcode.WRITE_ZEROES
    return {
        "read": Case("io", _read(1, 0, 1, one)),
        "read: past the namespace's end": Case("io", _read(1, last, 2, 2 * one)),
        "read: SLBA 2^63": Case("io", _read(1, 1 << 63, 1, one)),
        "read: SGL shorter than NLB": Case("io", _read(1, 0, 8, 4 * one)),
        "read: SGL longer than NLB": Case("io", _read(1, 0, 1, 2 * one)),
        "read: data in the capsule": Case(
            "io", _with(_read(1, 0, 1), sgl=SglDescriptor.incapsule(one)), bytes(one)
        ),
        "read: inactive NSID": Case("io", _read(7, 0, 1, one)),
        "read: NSID FFFFFFFFh": Case("io", _read(0xFFFFFFFF, 0, 1, one)),
        "read: PRP data pointer": Case("io", _with(_read(1, 0, 1, one), flags=PSDT_PRP)),
        "read: keyed SGL on TCP": Case(
            "io", _with(_read(1, 0, 1), sgl=SglDescriptor(0, one, SGL_RDMA_KEYED, 1))
        ),
        "read: fused": Case(
            "io", _with(_read(1, 0, 1, one), flags=PSDT_SGL_MPTR_CONTIG | FUSE_FIRST)
        ),
        "read: FUA": Case("io", _with(_read(1, 0, 1, one), cdw12=1 << 30)),
        "write": _write(1, 0, 1, one),
        "write: past the namespace's end": _write(1, last, 2, 2 * one),
        "write: capsule data shorter than NLB": _write(1, 0, 2, one),
        "write: in-capsule SGL with an offset": Case(
            "io", _with(_write(1, 0, 1, one).sqe, sgl=SglDescriptor.incapsule(one, 16)), bytes(one)
        ),
        # Larger than any in-capsule size: the Linux target takes a Write up to its inline
        # data size to carry its data in the capsule, whatever its SGL says, and waits for it.
        "write: by R2T": _by_r2t(_write(1, 0, 128, 128 * one), SGL_TCP_TRANSPORT),
        # FreeBSD's host: a Data Block, transport specific, for data moved by R2T or C2HData
        "write: by R2T, data block SGL": _by_r2t(
            _write(1, 0, 128, 128 * one), SGL_DATA_BLOCK_TRANSPORT
        ),
        "read: data block SGL": Case(
            "io", _with(_read(1, 0, 1), sgl=SglDescriptor(0, one, SGL_DATA_BLOCK_TRANSPORT))
        ),
        # FreeBSD's host again: a command without data keeps a zeroed descriptor
        "flush: zeroed SGL": Case("io", _with(_sqe(IoOpcode.FLUSH, 1), dptr=bytes(16))),
        "flush": Case("io", _sqe(IoOpcode.FLUSH, 1)),
        "flush: NSID 0": Case("io", _sqe(IoOpcode.FLUSH, 0)),
        "flush: inactive NSID": Case("io", _sqe(IoOpcode.FLUSH, 7)),
        "flush: NSID FFFFFFFFh": Case("io", _sqe(IoOpcode.FLUSH, 0xFFFFFFFF)),
        "write zeroes": Case("io", _sqe(zeroes, 1, cdw12=7)),
        "write zeroes: past the namespace's end": Case(
            "io", _sqe(zeroes, 1, cdw10=last & 0xFFFFFFFF, cdw11=last >> 32, cdw12=1)
        ),
        "dataset management: deallocate": Case("io", _sqe(IoOpcode.DSM, 1, cdw11=0x4), dsm),
        "dataset management: range past the end": Case(
            "io", _sqe(IoOpcode.DSM, 1, cdw11=0x4), dsm_beyond
        ),
        "dataset management: NR beyond the data": Case(
            "io", _sqe(IoOpcode.DSM, 1, cdw10=1, cdw11=0x4), dsm
        ),
        "io: reserved opcode": Case("io", _sqe(0x7E, 1)),
        "io: admin opcode": Case("io", _sqe(AdminOpcode.KEEP_ALIVE, 1)),
        "io: fabrics property get": Case("io", _property(FabricsType.PROPERTY_GET, Prop.CSTS)),
    }


def _read_admin(opcode: int, *, nsid: int = 0, length: int = 4096, **fields: int) -> Sqe:
    sqe = Sqe(opcode=opcode, nsid=nsid, **fields)
    sqe.sgl = SglDescriptor.tcp_transport(length)
    return sqe


def _property(fctype: int, offset: int) -> Sqe:
    return Sqe.decode(PropertyCommand(0, fctype, 0, offset).encode())


def cases(g: Geometry) -> dict[str, Case | ConnectCase]:
    """Every case, by name."""
    return {**_admin_cases(g), **_io_cases(g), **_connect_cases(), **_discovery_cases()}


def _initialized(addr: tuple[str, int]) -> RawHost:
    """A new queue past ICReq/ICResp, before its Connect (closed again if that fails)."""
    q = RawHost(addr)
    try:
        q.initialize()
    except BaseException:
        q.close()
        raise
    return q


def _enabled_admin(addr: tuple[str, int], subnqn: str) -> RawHost:
    """The admin queue of a new controller of ``subnqn``, connected and enabled."""
    adm = _initialized(addr)
    assert adm.connect(subnqn).decoded_status().ok
    adm.enable()
    return adm


class _Queues:
    """An admin queue (of an enabled controller) and one I/O queue, made when first asked for
    after :meth:`close`."""

    def __init__(self, addr: tuple[str, int], subnqn: str) -> None:
        self.addr, self.subnqn = addr, subnqn
        self.admin: RawHost | None = None
        self.io: RawHost | None = None

    def get(self, which: str) -> RawHost:
        if which == "fresh":  # a queue past ICReq, before its Connect
            self.close()
            self.admin = _initialized(self.addr)
            return self.admin
        if which == "discovery":  # a discovery controller's admin queue, enabled
            self.close()
            self.admin = _enabled_admin(self.addr, DISCOVERY_NQN)
            return self.admin
        if self.admin is None or self.io is None:
            self.close()
            adm = _enabled_admin(self.addr, self.subnqn)
            io = _initialized(self.addr)
            assert io.connect(self.subnqn, qid=1, cntlid=adm.cntlid).decoded_status().ok
            self.admin, self.io = adm, io
        return self.admin if which == "admin" else self.io

    def close(self) -> None:
        for q in (self.io, self.admin):
            if q is not None:
                q.close()
        self.admin = self.io = None


def exchange(q: RawHost, case: Case, *, with_dw0: bool = False) -> str:
    """Send one case's command and return its answer (with DW0 when an error and
    ``with_dw0``)."""
    sqe = _with(case.sqe, cid=q.next_cid())
    q.sock.settimeout(COMMAND_TIMEOUT)
    try:
        if case.data and not case.r2t:
            if sqe.sgl.type_byte == SGL_TCP_TRANSPORT:
                sqe.sgl = SglDescriptor.incapsule(len(case.data))
            q.send(q.conn.capsule_cmd(sqe.encode(), memoryview(case.data)))
        else:
            q.send(q.conn.capsule_cmd(sqe.encode()))
        while True:
            events = q.events()
            if not events:
                return "closed"
            for ev in events:
                if isinstance(ev, p.R2TReceived):
                    piece = memoryview(case.data)[ev.r2to : ev.r2to + ev.r2tl]
                    q.send(q.conn.h2c_data(ev.cccid, ev.ttag, ev.r2to, piece, last=True))
                elif isinstance(ev, p.ResponseReceived):
                    cqe = Cqe.decode(ev.cqe)
                    status = cqe.decoded_status()
                    if with_dw0 and not status.ok:
                        return f"{_answer(status)} dw0 0x{cqe.dw0:08x}"
                    return _answer(status)
                elif isinstance(ev, p.C2HDataReceived) and ev.success and ev.last:
                    return _answer(Status())
                elif isinstance(ev, p.TermReqReceived):
                    return "closed"
    except TimeoutError:
        return "timeout"
    except (ConnectionError, OSError):
        return "closed"


def connect(addr: tuple[str, int], subnqn: str, case: ConnectCase) -> str:
    """Make the queues ``case`` needs, send its Connect and return the answer."""
    opened: list[RawHost] = []

    def fresh() -> RawHost:
        opened.append(_initialized(addr))
        return opened[-1]

    if case.discovery:
        subnqn = DISCOVERY_NQN
    try:
        cntlid = 0xFFFF if case.cntlid is None else case.cntlid
        if case.qid:
            adm = fresh()
            assert adm.connect(subnqn).decoded_status().ok
            if case.enable:
                adm.enable()
            for _ in range(case.before):
                ok = fresh().connect(subnqn, qid=case.qid, cntlid=adm.cntlid, sqsize=case.sqsize)
                assert ok.decoded_status().ok
            cntlid = adm.cntlid if case.cntlid is None else case.cntlid
        q = fresh()
        if case.again:
            assert q.connect(subnqn, qid=case.qid, cntlid=cntlid).decoded_status().ok
        data = case.data
        if data is None:
            nqn = subnqn if case.subnqn is None else case.subnqn
            data = ConnectData(case.hostid, cntlid, nqn, case.hostnqn).encode()
        cmd = ConnectCommand(0, case.qid, case.sqsize, recfmt=case.recfmt)
        sqe = Sqe.decode(cmd.encode())
        if case.by_r2t:
            sqe.sgl = SglDescriptor.tcp_transport(len(data))
        return exchange(q, Case("admin", sqe, data, r2t=case.by_r2t), with_dw0=True)
    except (ConnectionError, OSError):
        return "closed"
    finally:
        for q in opened:
            q.close()


def _answer(status: Status) -> str:
    return f"SC 0x{int(status.code):03x}" + (" DNR" if status.dnr else "")


def geometry(q: RawHost) -> Geometry:
    sqe = _read_admin(AdminOpcode.IDENTIFY, nsid=1, cdw10=0, cid=q.next_cid())
    cqe, data = q.command_data(sqe)
    assert cqe.decoded_status().ok
    ns = IdentifyNamespace.decode(data)
    return Geometry(ns.nsze, 1 << ns.lba_format.lbads)


def probe(addr: tuple[str, int], subnqn: str) -> dict[str, str]:
    """Every case's answer from the target at ``addr``."""
    queues = _Queues(addr, subnqn)
    try:
        g = geometry(queues.get("admin"))
    finally:
        queues.close()
    answers = {}
    for name, case in cases(g).items():
        if isinstance(case, ConnectCase):
            answers[name] = connect(addr, subnqn, case)
            continue
        try:  # fresh queues: what one case leaves in the stream never decides the next
            answers[name] = exchange(queues.get(case.queue), case)
        finally:
            queues.close()
    return answers


def main() -> None:
    host, port, subnqn = sys.argv[1:4]
    socket.setdefaulttimeout(30)
    print(json.dumps(probe((host, int(port)), subnqn), indent=1))


if __name__ == "__main__":
    main()
