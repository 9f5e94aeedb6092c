"""A minimal NVMe/TCP host for target tests, built on the sans-IO codec and a blocking socket.

It lets a test send exactly the bytes it wants (including malformed PDUs) and read back what
the target says.  The real host library lives in ``nvmf.host``; this one exists so that target
tests can misbehave on purpose.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from nvmf.protocol import tcp as p
from nvmf.wire.fabrics import CC, ConnectCommand, ConnectData, Prop, PropertyCommand
from nvmf.wire.opcodes import FabricsType
from nvmf.wire.sqe import Cqe, SglDescriptor, Sqe
from nvmf.wire.status import SC, Status

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:5a1d0000-0000-4000-8000-000000000001"
CC_ENABLE = CC.EN | (6 << CC.IOSQES_SHIFT) | (4 << CC.IOCQES_SHIFT)


@dataclass
class _Placement:
    bufs: dict[int, bytearray] = field(default_factory=dict)

    def capsule_data(self, sqe: memoryview, length: int) -> memoryview:
        raise AssertionError("host never receives capsules")

    def c2h_data(self, cccid: int, datao: int, datal: int) -> memoryview:
        buf = self.bufs.setdefault(cccid, bytearray(datao + datal))
        if len(buf) < datao + datal:
            buf.extend(bytes(datao + datal - len(buf)))
        return memoryview(buf)[datao : datao + datal]


class RawHost:
    """One NVMe/TCP connection driven step by step."""

    def __init__(self, addr: tuple[str, int], *, hdgst: bool = False, ddgst: bool = False):
        self.sock = socket.create_connection(addr, timeout=10)
        self.placement = _Placement()
        self.conn = p.TcpConnection(p.Role.HOST, self.placement)
        self.hdgst, self.ddgst = hdgst, ddgst
        self.cid = 0
        self.r2ts: list[p.R2TReceived] = []
        #: Controller ID an admin-queue Connect returned.
        self.cntlid = 0

    def close(self) -> None:
        self.sock.close()

    def send(self, bufs: list[bytes | memoryview] | bytes) -> None:
        if isinstance(bufs, bytes):
            self.sock.sendall(bufs)
        else:
            self.sock.sendall(b"".join(bytes(b) for b in bufs))

    def deafen(self) -> None:
        """Make this host's receive window as small as the kernel allows: a host that is not
        going to read what the target sends."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

    def capsules(self, sqes: Iterable[Sqe]) -> bytes:
        """The CapsuleCmd PDUs of ``sqes`` (no data), back to back: what a host that sends
        commands without waiting for anything writes."""
        return b"".join(bytes(b) for sqe in sqes for b in self.conn.capsule_cmd(sqe.encode()))

    def events(self) -> list[p.Event]:
        """Block for the next batch of events; [] when the target closed the connection."""
        while True:
            buf = self.conn.get_buffer()
            n = self.sock.recv_into(buf)
            if n == 0:
                return []
            evs = self.conn.buffer_updated(n)
            if evs:
                return evs

    def raw_recv(self, n: int = 4096) -> bytes:
        """Bytes as they come (for TermReq checks)."""
        return self.sock.recv(n)

    def is_closed(self, timeout: float = 5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(4096)
                if not data:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def initialize(self) -> None:
        self.send(self.conn.start_icreq(hdgst=self.hdgst, ddgst=self.ddgst))
        (ev,) = self.events()
        assert isinstance(ev, p.ICRespReceived)
        self.conn.accept_icresp(ev)

    def next_cid(self) -> int:
        self.cid = (self.cid + 1) & 0xFFFF
        return self.cid

    def wait_response(self) -> tuple[Cqe, bytes]:
        """Run until one completion arrives; return it and the C2H data for its cid."""
        pending: list[p.Event] = []
        while True:
            evs = pending or self.events()
            pending = []
            if not evs:
                raise ConnectionError("target closed the connection")
            for i, ev in enumerate(evs):
                if isinstance(ev, p.ResponseReceived):
                    cqe = Cqe.decode(ev.cqe)
                    data = bytes(self.placement.bufs.pop(cqe.cid, b""))
                    self._stash(evs[i + 1 :])
                    return cqe, data
                if isinstance(ev, p.C2HDataReceived) and ev.success and ev.last:
                    data = bytes(self.placement.bufs.pop(ev.cccid, b""))
                    self._stash(evs[i + 1 :])
                    return Cqe(cid=ev.cccid), data
                if isinstance(ev, p.R2TReceived):
                    self.r2ts.append(ev)

    def _stash(self, rest: list[p.Event]) -> None:
        if rest:
            raise AssertionError(f"more events than expected in one batch: {rest}")

    def command(self, sqe: Sqe, data: bytes | None = None, *, incapsule: bool = True) -> Cqe:
        cqe, _ = self.command_data(sqe, data, incapsule=incapsule)
        return cqe

    def command_data(
        self, sqe: Sqe, data: bytes | None = None, *, incapsule: bool = True, keep_sgl: bool = False
    ) -> tuple[Cqe, bytes]:
        """Send ``sqe`` with ``data`` in the capsule, or by R2T without ``incapsule``; its SGL
        is written for the data unless ``keep_sgl``."""
        if data and incapsule:
            if not keep_sgl:
                sqe.sgl = SglDescriptor.incapsule(len(data))
            self.send(self.conn.capsule_cmd(sqe.encode(), memoryview(data)))
            return self.wait_response()
        self.send(self.conn.capsule_cmd(sqe.encode()))
        if data:
            evs = self.events()
            (r2t,) = evs
            assert isinstance(r2t, p.R2TReceived), evs
            self.send(
                self.conn.h2c_data(r2t.cccid, r2t.ttag, r2t.r2to, memoryview(data), last=True)
            )
        return self.wait_response()

    def connect(
        self,
        subnqn: str,
        *,
        qid: int = 0,
        cntlid: int = 0xFFFF,
        hostnqn: str = HOSTNQN,
        hostid: bytes = b"\x01" * 16,
        sqsize: int = 31,
        kato: int = 0,
    ) -> Cqe:
        data = ConnectData(hostid, cntlid, subnqn, hostnqn).encode()
        cmd = ConnectCommand(cid=self.next_cid(), qid=qid, sqsize=sqsize, kato=kato)
        sqe = Sqe.decode(cmd.encode())
        cqe = self.command(sqe, data)
        if qid == 0 and cqe.decoded_status().ok:
            self.cntlid = cqe.dw0 & 0xFFFF
        return cqe

    def prop_get(self, offset: int, size8: bool = False) -> Cqe:
        cmd = PropertyCommand(self.next_cid(), FabricsType.PROPERTY_GET, int(size8), offset)
        return self.command(Sqe.decode(cmd.encode()))

    def prop_set(self, offset: int, value: int) -> Cqe:
        cmd = PropertyCommand(self.next_cid(), FabricsType.PROPERTY_SET, 0, offset, value)
        return self.command(Sqe.decode(cmd.encode()))

    def enable(self) -> None:
        assert self.prop_set(Prop.CC, CC_ENABLE).decoded_status().ok


def status_of(cqe: Cqe) -> Status:
    return cqe.decoded_status()


def is_status(cqe: Cqe, code: SC, *, dnr: bool = True) -> bool:
    st = status_of(cqe)
    return st.code == code and st.dnr == dnr


def new_hostid() -> bytes:
    return uuid.uuid4().bytes
