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

``python -m tests.guest.status_probe --rdma ADDR PORT SUBNQN`` runs them over NVMe/RDMA (an
RDMA device must serve ADDR: the guest's Soft-RoCE), with the host queues of
:mod:`tests.transport.rdma_host`.  The cases are the same but for those that name one fabric's
data transfer (:func:`cases`): data the NVMe/TCP cases move by R2T or C2HData moves through a
keyed SGL instead, as the Linux host sends it, and the admin queue's Connect data goes keyed
(the Linux target takes no in-capsule data there).  A Connect's connect request carries the
Connect's QID and SQSIZE, as the Linux host's does, but where a case says otherwise; a target
that rejects the request answers ``"rejected STATUS"`` (the NVMe/RDMA reject status).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from nvmf.protocol import tcp as p
from nvmf.wire.fabrics import ConnectCommand, ConnectData, Prop, PropertyCommand
from nvmf.wire.identify import IdentifyNamespace
from nvmf.wire.opcodes import AdminOpcode, FabricsType, FeatureId, IoOpcode
from nvmf.wire.rdma import CmRequest
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
from tests.target.rawhost import CC_ENABLE, HOSTNQN, RawHost

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
    #: Send the SGL as written: over NVMe/RDMA a Transport SGL is not read as "keyed".
    raw_sgl: bool = False


@dataclass(frozen=True)
class ConnectCase:
    """A Connect as the Linux host sends it but for the fields given: for the admin queue
    (``qid`` 0) on a fresh connection, or for an I/O queue of a controller made (and enabled,
    unless not ``enable``) just before.  ``subnqn`` None is the probed subsystem, ``cntlid``
    None is FFFFh on the admin queue and the controller's on an I/O queue; ``data`` replaces
    the Connect data.  ``before``: I/O queues of the same QID connected first; ``again``: the
    Connect follows a successful one on the same queue; ``discovery``: the controller is the
    discovery subsystem's.  NVMe/RDMA only: ``incapsule`` sends the data in the capsule
    whatever the queue; ``cm_qid`` and ``cm_sqsize`` replace the QID and SQSIZE the connect
    request carries (by default the Connect's)."""

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
    incapsule: bool = False
    cm_qid: int | None = None
    cm_sqsize: int | None = None


#: The two fabrics the probe speaks.
FABRICS = ("tcp", "rdma")


def _connect_cases(fabric: str) -> dict[str, ConnectCase]:
    io = ConnectCase(qid=1, sqsize=31)
    own: dict[str, ConnectCase] = {
        "tcp": {"connect: data by R2T": ConnectCase(by_r2t=True)},
        "rdma": {
            "connect: admin data in the capsule": ConnectCase(incapsule=True),
            "connect: I/O queue, QID other than the connect request's": dataclasses.replace(
                io, cm_qid=2
            ),
            # the connection asked for as an I/O queue, the Connect for an admin queue
            "connect: admin queue on an I/O queue's connection": ConnectCase(cm_qid=1),
            "connect: I/O queue on an admin queue's connection": dataclasses.replace(io, cm_qid=0),
            "connect: I/O queue, SQSIZE above the connect request's HSQSIZE": (
                dataclasses.replace(io, sqsize=63, cm_sqsize=31)
            ),
            "connect: I/O queue, SQSIZE below the connect request's HSQSIZE": (
                dataclasses.replace(io, sqsize=15, cm_sqsize=31)
            ),
        },
    }[fabric]
    return {
        "connect: unknown subsystem": ConnectCase(subnqn="nqn.2024-01.io.nvmf:nope"),
        "connect: RECFMT 1": ConnectCase(recfmt=1),
        "connect: admin SQSIZE 0": ConnectCase(sqsize=0),
        "connect: admin SQSIZE 127": ConnectCase(sqsize=127),
        "connect: admin CNTLID 1": ConnectCase(cntlid=1),
        "connect: data shorter than 1024 bytes": ConnectCase(data=bytes(512)),
        **own,
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
        # NVMe/TCP's for data by R2T or C2HData, FreeBSD's host's too; no SGL of NVMe/RDMA
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


def _tcp_cases(g: Geometry) -> dict[str, Case]:
    """Cases of NVMe/TCP's own SGLs and data transfer."""
    one = g.block
    return {
        "read: keyed SGL on TCP": Case(
            "io", _with(_read(1, 0, 1), sgl=SglDescriptor(0, one, SGL_RDMA_KEYED, 1))
        ),
        # Larger than any in-capsule size: the Linux target takes a Write up to its inline
        # data size to carry its data in the capsule, whatever its SGL says, and waits for it.
        "write: by R2T": _by_r2t(_write(1, 0, 128, 128 * one), SGL_TCP_TRANSPORT),
        # FreeBSD's host: a Data Block, transport specific, for data moved by R2T or C2HData
        "write: by R2T, data block SGL": _by_r2t(
            _write(1, 0, 128, 128 * one), SGL_DATA_BLOCK_TRANSPORT
        ),
    }


def _rdma_cases(g: Geometry) -> dict[str, Case]:
    """Cases of NVMe/RDMA's own SGLs and data transfer (the probe's host fills a keyed SGL
    where a case has NVMe/TCP's Transport SGL, unless the case keeps it raw)."""
    one = g.block
    keyed = SglDescriptor.keyed(0x1000, one, 0xDEAD00)
    return {
        # Larger than any in-capsule size: the data goes keyed, the target reads it
        "write: keyed SGL": _by_r2t(_write(1, 0, 128, 128 * one), SGL_TCP_TRANSPORT),
        "read: transport SGL on RDMA": Case(
            "io", _with(_read(1, 0, 1), sgl=SglDescriptor.tcp_transport(one)), raw_sgl=True
        ),
        "read: keyed SGL, reserved sub type": Case(
            "io",
            _with(_read(1, 0, 1), sgl=dataclasses.replace(keyed, type_byte=0x43)),
            raw_sgl=True,
        ),
        # A key the host never registered: the target's RDMA WRITE fails
        "read: keyed SGL, unknown key": Case("io", _with(_read(1, 0, 1), sgl=keyed), raw_sgl=True),
        # More than the in-capsule size either target takes (8 KiB here, 4 KiB in Linux)
        "write: in-capsule data beyond the in-capsule size": _write(1, 0, 16384 // one, 16384),
    }


def _read_admin(opcode: int, *, nsid: int = 0, length: int = 4096, **fields: int) -> Sqe:
    sqe = Sqe(opcode=opcode, nsid=nsid, **fields)
    sqe.sgl = SglDescriptor.tcp_transport(length)
    return sqe


def _property(fctype: int, offset: int) -> Sqe:
    return Sqe.decode(PropertyCommand(0, fctype, 0, offset).encode())


def cases(g: Geometry, fabric: str = "tcp") -> dict[str, Case | ConnectCase]:
    """Every case for ``fabric`` (one of :data:`FABRICS`), by name."""
    own = _tcp_cases(g) if fabric == "tcp" else _rdma_cases(g)
    return {
        **_admin_cases(g),
        **_io_cases(g),
        **own,
        **_connect_cases(fabric),
        **_discovery_cases(),
    }


class ProbeQueue(Protocol):
    """One host queue to the probed target, made before its Connect."""

    #: The controller ID the admin queue's Connect returned (0 before).
    cntlid: int

    def connect(self, subnqn: str, *, qid: int = 0, cntlid: int = 0xFFFF) -> Status:
        """Send a well-formed Connect (SQSIZE 31); its status."""
        ...

    def enable(self) -> None:
        """Set CC.EN (and the queue entry sizes) with Property Set; it must succeed."""
        ...

    def ask(self, case: Case, *, with_dw0: bool = False) -> str:
        """Send ``case``'s command and return its answer (with DW0 when an error and
        ``with_dw0``): the status, ``"closed"`` or ``"timeout"``."""
        ...

    def read(self, sqe: Sqe, length: int) -> tuple[Cqe, bytes]:
        """Send ``sqe`` with room for ``length`` bytes from the controller; completion, data."""
        ...

    def close(self) -> None:
        """Hang up."""
        ...


#: How the probe opens a queue, before its Connect: for QID ``qid`` and SQSIZE ``sqsize``
#: (what an NVMe/RDMA connect request says; NVMe/TCP has nothing of them before Connect).
Opener = Callable[[int, int], ProbeQueue]


class TcpProbeQueue:
    """:class:`ProbeQueue` over NVMe/TCP: a :class:`RawHost` past ICReq/ICResp."""

    def __init__(self, addr: tuple[str, int]) -> None:
        self.raw = RawHost(addr)
        try:
            self.raw.initialize()
        except BaseException:
            self.raw.close()
            raise

    @property
    def cntlid(self) -> int:
        return self.raw.cntlid

    def connect(self, subnqn: str, *, qid: int = 0, cntlid: int = 0xFFFF) -> Status:
        return self.raw.connect(subnqn, qid=qid, cntlid=cntlid).decoded_status()

    def enable(self) -> None:
        self.raw.enable()

    def ask(self, case: Case, *, with_dw0: bool = False) -> str:
        q = self.raw
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
                        return _answer(Cqe.decode(ev.cqe), with_dw0)
                    elif isinstance(ev, p.C2HDataReceived) and ev.success and ev.last:
                        return _answer(Cqe(), with_dw0)
                    elif isinstance(ev, p.TermReqReceived):
                        return "closed"
        except TimeoutError:
            return "timeout"
        except (ConnectionError, OSError):
            return "closed"

    def read(self, sqe: Sqe, length: int) -> tuple[Cqe, bytes]:
        sqe.sgl = SglDescriptor.tcp_transport(length)
        return self.raw.command_data(_with(sqe, cid=self.raw.next_cid()))

    def close(self) -> None:
        self.raw.close()


class RdmaProbeQueue:
    """:class:`ProbeQueue` over NVMe/RDMA: a queue of :mod:`tests.transport.rdma_host`
    (imported here: it needs rdma-core's pyverbs, which the guest has)."""

    def __init__(self, traddr: str, trsvcid: str, request: CmRequest) -> None:
        from tests.transport.rdma_host import RdmaHostQueue

        self.q = RdmaHostQueue(traddr, trsvcid, request, timeout=COMMAND_TIMEOUT)
        self.cntlid = 0
        self.cid = 0

    def _cid(self) -> int:
        self.cid = (self.cid + 1) & 0xFFFF
        return self.cid

    def connect(self, subnqn: str, *, qid: int = 0, cntlid: int = 0xFFFF) -> Status:
        data = ConnectData(b"\x01" * 16, cntlid, subnqn, HOSTNQN).encode()
        sqe = Sqe.decode(ConnectCommand(self._cid(), qid, 31).encode())
        cqe, _ = self.q.command(sqe, data, incapsule=True)
        if qid == 0 and cqe.decoded_status().ok:
            self.cntlid = cqe.dw0 & 0xFFFF
        return cqe.decoded_status()

    def enable(self) -> None:
        cmd = PropertyCommand(self._cid(), FabricsType.PROPERTY_SET, 0, Prop.CC, CC_ENABLE)
        cqe, _ = self.q.command(Sqe.decode(cmd.encode()))
        assert cqe.decoded_status().ok

    def ask(self, case: Case, *, with_dw0: bool = False) -> str:
        """As the Linux host sends it: data in the capsule on I/O queues (and where the case's
        own SGL says so), else through a keyed SGL that this host fills in for NVMe/TCP's
        Transport SGL."""
        sqe = _with(case.sqe, cid=self._cid())
        data = case.data or None
        tcp_sgl = sqe.sgl.type_byte == SGL_TCP_TRANSPORT and not case.raw_sgl
        try:
            if data and not case.r2t and (self.q.qid or not tcp_sgl):
                if tcp_sgl:
                    sqe.sgl = SglDescriptor.incapsule(len(data))
                cqe, _ = self.q.command(sqe, data, incapsule=True, keep_sgl=True)
            elif data:
                cqe, _ = self.q.command(sqe, data, keep_sgl=not tcp_sgl)
            else:
                cqe, _ = self.q.command(sqe, data_in=sqe.sgl.length, keep_sgl=not tcp_sgl)
        except TimeoutError:
            return "timeout"
        except ConnectionError:
            return "closed"
        return _answer(cqe, with_dw0)

    def read(self, sqe: Sqe, length: int) -> tuple[Cqe, bytes]:
        return self.q.command(_with(sqe, cid=self._cid()), data_in=length)

    def close(self) -> None:
        self.q.close()


def tcp_opener(addr: tuple[str, int]) -> Opener:
    """Queues to the NVMe/TCP target at ``addr``."""
    return lambda qid, sqsize: TcpProbeQueue(addr)


def rdma_opener(traddr: str, trsvcid: str) -> Opener:
    """Queues to the NVMe/RDMA target at ``traddr:trsvcid``: each connect request says the
    queue's QID and SQSIZE as the Linux host's does (HRQSIZE one more than HSQSIZE)."""

    def open_queue(qid: int, sqsize: int) -> ProbeQueue:
        request = CmRequest(qid, min(sqsize + 1, 0xFFFF), sqsize)
        return RdmaProbeQueue(traddr, trsvcid, request)

    return open_queue


def _enabled_admin(open_queue: Opener, subnqn: str) -> ProbeQueue:
    """The admin queue of a new controller of ``subnqn``, connected and enabled."""
    adm = open_queue(0, 31)
    try:
        assert adm.connect(subnqn).ok
        adm.enable()
    except BaseException:
        adm.close()
        raise
    return adm


class _Queues:
    """An admin queue (of an enabled controller) and one I/O queue, made when first asked for
    after :meth:`close`."""

    def __init__(self, open_queue: Opener, subnqn: str) -> None:
        self.open_queue, self.subnqn = open_queue, subnqn
        self.admin: ProbeQueue | None = None
        self.io: ProbeQueue | None = None

    def get(self, which: str) -> ProbeQueue:
        if which == "fresh":  # a queue before its Connect
            self.close()
            self.admin = self.open_queue(0, 31)
            return self.admin
        if which == "discovery":  # a discovery controller's admin queue, enabled
            self.close()
            self.admin = _enabled_admin(self.open_queue, DISCOVERY_NQN)
            return self.admin
        if self.admin is None or self.io is None:
            self.close()
            self.admin = _enabled_admin(self.open_queue, self.subnqn)
            self.io = self.open_queue(1, 31)
            assert self.io.connect(self.subnqn, qid=1, cntlid=self.admin.cntlid).ok
        return self.admin if which == "admin" else self.io

    def close(self) -> None:
        for q in (self.io, self.admin):
            if q is not None:
                q.close()
        self.admin = self.io = None


def connect(open_queue: Opener, subnqn: str, case: ConnectCase) -> str:
    """Make the queues ``case`` needs, send its Connect and return the answer."""
    opened: list[ProbeQueue] = []

    def fresh(qid: int, sqsize: int = 31) -> ProbeQueue:
        opened.append(open_queue(qid, sqsize))
        return opened[-1]

    if case.discovery:
        subnqn = DISCOVERY_NQN
    try:
        cntlid = 0xFFFF if case.cntlid is None else case.cntlid
        if case.qid:
            adm = fresh(0)
            assert adm.connect(subnqn).ok
            if case.enable:
                adm.enable()
            for _ in range(case.before):
                assert fresh(case.qid).connect(subnqn, qid=case.qid, cntlid=adm.cntlid).ok
            cntlid = adm.cntlid if case.cntlid is None else case.cntlid
        cm_qid = case.qid if case.cm_qid is None else case.cm_qid
        q = fresh(cm_qid, case.sqsize if case.cm_sqsize is None else case.cm_sqsize)
        if case.again:
            assert q.connect(subnqn, qid=case.qid, cntlid=cntlid).ok
        data = case.data
        if data is None:
            nqn = subnqn if case.subnqn is None else case.subnqn
            data = ConnectData(case.hostid, cntlid, nqn, case.hostnqn).encode()
        cmd = ConnectCommand(0, case.qid, case.sqsize, recfmt=case.recfmt)
        sqe = Sqe.decode(cmd.encode())
        if case.by_r2t:
            sqe.sgl = SglDescriptor.tcp_transport(len(data))
        if case.incapsule:
            sqe.sgl = SglDescriptor.incapsule(len(data))
        return q.ask(Case("admin", sqe, data, r2t=case.by_r2t), with_dw0=True)
    except Exception as exc:  # the RDMA host's Rejected carries the reject's status
        status = getattr(exc, "status", None)
        if status is not None:
            return f"rejected {status.name}"
        if isinstance(exc, (ConnectionError, OSError)):
            return "closed"
        raise
    finally:
        for q in opened:
            q.close()


def _answer(cqe: Cqe, with_dw0: bool) -> str:
    status = cqe.decoded_status()
    answer = f"SC 0x{int(status.code):03x}" + (" DNR" if status.dnr else "")
    if with_dw0 and not status.ok:
        answer += f" dw0 0x{cqe.dw0:08x}"
    return answer


def geometry(q: ProbeQueue) -> Geometry:
    cqe, data = q.read(_read_admin(AdminOpcode.IDENTIFY, nsid=1, cdw10=0), 4096)
    assert cqe.decoded_status().ok
    ns = IdentifyNamespace.decode(data)
    return Geometry(ns.nsze, 1 << ns.lba_format.lbads)


def probe(open_queue: Opener, subnqn: str, fabric: str = "tcp") -> dict[str, str]:
    """Every case's answer from the target ``open_queue`` reaches over ``fabric``."""
    queues = _Queues(open_queue, subnqn)
    try:
        g = geometry(queues.get("admin"))
    finally:
        queues.close()
    answers = {}
    for name, case in cases(g, fabric).items():
        if isinstance(case, ConnectCase):
            answers[name] = connect(open_queue, subnqn, case)
            continue
        try:  # fresh queues: what one case leaves behind never decides the next
            answers[name] = queues.get(case.queue).ask(case)
        finally:
            queues.close()
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rdma", action="store_true", help="NVMe/RDMA instead of NVMe/TCP")
    parser.add_argument("addr")
    parser.add_argument("port")
    parser.add_argument("subnqn")
    args = parser.parse_args()
    if args.rdma:
        answers = probe(rdma_opener(args.addr, args.port), args.subnqn, "rdma")
    else:
        socket.setdefaulttimeout(30)
        answers = probe(tcp_opener((args.addr, int(args.port))), args.subnqn)
    print(json.dumps(answers, indent=1))


if __name__ == "__main__":
    main()
