"""A scriptable fake NVMe/TCP controller for the host tests, built on the sans-IO codec.

Each connection is a :class:`TcpConnection` in the controller role driven by asyncio streams
(over a ``socketpair`` or a loopback listener).  It implements just enough of a controller for
the host's bring-up (Connect, Property Get/Set with CC/CSTS behaviour, Identify, Set Features
Number of Queues, Keep Alive, the Discovery log page) and NVM I/O on a RAM bytearray, and records
what the host sent (commands, SGL descriptors, in-capsule lengths, H2CData PDUs) so tests can
assert on protocol behaviour.  Knobs on :class:`FakeConfig` make it misbehave on purpose.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from nvmf.protocol import tcp as p
from nvmf.wire import tcp as w
from nvmf.wire.fabrics import CC, CSTS, Cap, ConnectCommand, ConnectData, Prop, PropertyCommand
from nvmf.wire.identify import IdentifyController, IdentifyNamespace, LbaFormat, NamespaceList
from nvmf.wire.logpage import DiscoveryLogEntry, encode_discovery_log
from nvmf.wire.opcodes import AdminOpcode, FabricsType, FeatureId, IoOpcode
from nvmf.wire.sqe import SGL_INCAPSULE, Sqe, encode_cqe
from nvmf.wire.status import SC, SUCCESS, Status, error

BLOCK = 512
DSM_RANGE = struct.Struct("<IIQ")


@dataclass
class FakeConfig:
    """Behaviour of the fake controller."""

    nsze: int = 4096  # blocks of 512 bytes: 2 MiB
    incapsule: int = 8192  # IOCCSZ * 16 - 64
    maxh2cdata: int = 1 << 20
    mdts: int = 8
    mqes: int = 127
    allow_hdgst: bool = True
    allow_ddgst: bool = True
    #: Answer digests the host did not ask for (a misbehaving controller).
    force_hdgst: bool = False
    cpda: int = 0
    #: Complete reads with C2HData SUCCESS|LAST and no CapsuleResp.
    success_flag: bool = False
    #: Ask for write data in R2Ts of at most this many bytes (0: one R2T for all).
    r2t_chunk: int = 0
    #: Send read data in C2HData PDUs of at most this many bytes (0: one PDU).
    c2h_chunk: int = 0
    #: Send those PDUs wrong: "gap" (without the first), "reverse" (last first), "repeat"
    #: (the first twice), "short" (only the first half, the last of them LAST) or "none".
    c2h_mangle: str = ""
    #: Complete these opcodes (I/O queues) with this status instead of executing them.
    fail_io: dict[int, Status] = field(default_factory=dict)
    #: Send a C2HTermReq instead of completing a command with this I/O opcode.
    term_on_io: int | None = None
    #: Send the next read's data with a wrong data digest.
    corrupt_next_read_digest: bool = False
    #: Send read data for a cccid the host never used.
    bogus_cccid_on_read: bool = False
    #: Ask with an R2T for write data that came in the capsule (a protocol violation).
    r2t_on_incapsule: bool = False
    #: Never answer these I/O opcodes.
    drop_io: set[int] = field(default_factory=set)
    granted_queues: int = 64
    model: str = "nvmf fake controller"
    subnqn: str = "nqn.2024-01.io.nvmf:fake"
    #: Discovery: bump GENCTR after the first header read this many times.
    genctr_bumps: int = 0


_Pdus = list[tuple[int, memoryview]]
#: :attr:`FakeConfig.c2h_mangle`: what becomes of a read's C2HData PDUs (offset, data).
_MANGLE: dict[str, Callable[[_Pdus], _Pdus]] = {
    "": lambda pdus: pdus,
    "gap": lambda pdus: pdus[1:],
    "reverse": lambda pdus: pdus[::-1],
    "repeat": lambda pdus: pdus[:1] + pdus,
    "short": lambda pdus: pdus[: len(pdus) // 2],
    "none": lambda pdus: [],
}


@dataclass
class Seen:
    """One command the fake received."""

    qid: int | None
    sqe: Sqe
    incapsule: int | None  # bytes of in-capsule data, None when the capsule had none


class FakeController:
    """State shared by every connection: registers, namespace data, what was seen."""

    def __init__(self, config: FakeConfig | None = None) -> None:
        self.config = config or FakeConfig()
        self.data = bytearray(self.config.nsze * BLOCK)
        self.cc = 0
        self.csts = 0
        self.cntlid = 0x21
        self.kato_ms = -1
        self.seen: list[Seen] = []
        self.h2c: list[tuple[int, int, int, bool]] = []  # (cccid, datao, datal, last)
        self.r2ts: list[tuple[int, int, int]] = []  # (cccid, r2to, r2tl)
        self.connects: list[tuple[ConnectCommand, ConnectData]] = []
        self.term_from_host: list[p.TermReqReceived] = []
        self.keep_alives = 0
        self.genctr = 5
        self.log_reads = 0
        self.queues: list[FakeQueue] = []
        self._server: asyncio.Server | None = None

    # -- wiring ---------------------------------------------------------------------------------
    async def listen(self) -> int:
        """Listen on 127.0.0.1; returns the port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await FakeQueue(self, reader, writer).run()

    async def pair(self) -> socket.socket:
        """A socketpair: the fake serves one end, the host gets the other (non-blocking)."""
        host, ctrl = socket.socketpair()
        host.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=ctrl)
        queue = FakeQueue(self, reader, writer)
        asyncio.get_running_loop().create_task(queue.run())
        return host

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for q in self.queues:
            q.writer.close()

    def commands(self, opcode: int) -> list[Seen]:
        return [s for s in self.seen if s.sqe.opcode == opcode]

    # -- identify data --------------------------------------------------------------------------
    def id_ctrl(self) -> bytes:
        cfg = self.config
        return IdentifyController(
            vid=0x1B36,
            sn="FAKE0001",
            mn=cfg.model,
            fr="1.0",
            mdts=cfg.mdts,
            cntlid=self.cntlid,
            ver=0x10400,
            kas=1,
            sqes=0x66,
            cqes=0x44,
            maxcmd=cfg.mqes + 1,
            nn=1,
            sgls=1 | (1 << 2) | (1 << 20),
            subnqn=cfg.subnqn,
            ioccsz=(cfg.incapsule + 64) // 16,
            iorcsz=1,
        ).encode()

    def id_ns(self) -> bytes:
        n = self.config.nsze
        return IdentifyNamespace(nsze=n, ncap=n, nuse=n, lbaf=[LbaFormat(lbads=9)]).encode()

    def discovery_log(self) -> bytes:
        entry = DiscoveryLogEntry(
            trtype=3, adrfam=1, subtype=2, portid=1, cntlid=0xFFFF, asqsz=32,
            trsvcid="4420", subnqn=self.config.subnqn, traddr="127.0.0.1",
        )  # fmt: skip
        return encode_discovery_log(self.genctr, [entry])


class FakeQueue:
    """One connection of the fake controller (a DataPlacement for its TcpConnection)."""

    def __init__(
        self, ctrl: FakeController, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.ctrl = ctrl
        cfg = ctrl.config
        self.reader = reader
        self.writer = writer
        self.conn = p.TcpConnection(
            p.Role.CONTROLLER, self, max_incapsule=max(cfg.incapsule, 8192),
            maxh2cdata=cfg.maxh2cdata,
        )  # fmt: skip
        self.conn.cpda = cfg.cpda
        self.qid: int | None = None
        #: ttag -> the command, its buffer, and the tags of its R2Ts still waiting for data
        #: (the codec keeps the windows; the command runs once every one is filled).
        self._pending: dict[int, tuple[Sqe, bytearray, set[int]]] = {}
        ctrl.queues.append(self)

    # -- DataPlacement --------------------------------------------------------------------------
    def capsule_data(self, sqe: memoryview, length: int) -> memoryview:
        return memoryview(bytearray(length))

    def c2h_data(self, cccid: int, datao: int, datal: int) -> memoryview:
        raise AssertionError("a controller receives no C2HData")

    # -- loop -------------------------------------------------------------------------------------
    def send(self, bufs: list[bytes | memoryview] | bytes) -> None:
        if isinstance(bufs, bytes):
            self.writer.write(bufs)
        else:
            self.writer.write(b"".join(bytes(b) for b in bufs))

    async def run(self) -> None:
        try:
            while True:
                data = await self.reader.read(1 << 16)
                if not data:
                    return
                for ev in self.conn.receive(data):
                    self.handle(ev)
                await self.writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            self.writer.close()

    def handle(self, ev: p.Event) -> None:
        ctrl = self.ctrl
        cfg = ctrl.config
        if isinstance(ev, p.ICReqReceived):
            if cfg.force_hdgst and not ev.hdgst:  # enable a digest the host did not ask for
                self.send(w.icresp(hdgst=True, ddgst=False, maxh2cdata=cfg.maxh2cdata))
                return
            self.send(self.conn.accept_icreq(ev, hdgst=cfg.allow_hdgst, ddgst=cfg.allow_ddgst))
        elif isinstance(ev, p.CommandReceived):
            sqe = Sqe.decode(ev.sqe)
            ctrl.seen.append(Seen(self.qid, sqe, len(ev.data) if ev.data is not None else None))
            if ev.data is not None:
                if cfg.r2t_on_incapsule and self.qid and self.is_h2c(sqe):
                    self.request_data(sqe, len(ev.data))
                    return
                self.execute(sqe, bytearray(ev.data))
                return
            sgl = sqe.sgl
            if sgl.length and self.is_h2c(sqe):
                self.request_data(sqe, sgl.length)
            else:
                self.execute(sqe, None)
        elif isinstance(ev, p.H2CDataReceived):
            ctrl.h2c.append((ev.cccid, ev.datao, ev.datal, ev.last))
            if ev.filled:
                assert ev.last, "the PDU that completes an R2T must carry LAST_PDU"
                sqe, buf, waiting = self._pending[ev.ttag]
                waiting.discard(ev.ttag)
                if not waiting:
                    for ttag in [t for t, v in self._pending.items() if v[2] is waiting]:
                        del self._pending[ttag]
                        self.conn.close_transfer(ttag)
                    self.execute(sqe, buf)
        elif isinstance(ev, p.TermReqReceived):
            ctrl.term_from_host.append(ev)
        elif isinstance(ev, p.DataDigestError):
            self.complete(Sqe(opcode=0, cid=ev.cccid), Status(SC.TRANSIENT_TR_ERR))

    @staticmethod
    def is_h2c(sqe: Sqe) -> bool:
        if sqe.opcode == AdminOpcode.FABRICS:
            return sqe.nsid & 0xFF == FabricsType.CONNECT  # FCTYPE is byte 4 (the NSID field)
        return sqe.opcode & 3 == 1

    def request_data(self, sqe: Sqe, length: int) -> None:
        """One R2T for the command's data, or one per ``r2t_chunk`` bytes, each its own tag."""
        buf = bytearray(length)
        waiting: set[int] = set()
        chunk = self.ctrl.config.r2t_chunk or length
        for off in range(0, length, chunk):
            size = min(chunk, length - off)
            self.ctrl.r2ts.append((sqe.cid, off, size))
            ttag, r2t = self.conn.open_transfer(
                sqe.cid, memoryview(buf)[off : off + size], r2to=off
            )
            waiting.add(ttag)
            self._pending[ttag] = (sqe, buf, waiting)
            self.send(r2t)

    # -- commands ---------------------------------------------------------------------------------
    def complete(self, sqe: Sqe, status: Status) -> None:
        self.send(
            self.conn.capsule_resp(encode_cqe(status, cid=sqe.cid, sqid=self.qid or 0, sqhd=0))
        )

    def send_data(self, sqe: Sqe, data: bytes | bytearray) -> None:
        cfg = self.ctrl.config
        view = memoryview(data)
        chunk = cfg.c2h_chunk or len(view)
        cid = sqe.cid
        if cfg.bogus_cccid_on_read:
            cid = 0xFFF0
        pdus = [(off, view[off : off + chunk]) for off in range(0, len(view), chunk)]
        pdus = _MANGLE[cfg.c2h_mangle](pdus)
        for i, (off, part) in enumerate(pdus):
            last = i == len(pdus) - 1
            success = last and cfg.success_flag
            bufs = self.conn.c2h_data(cid, off, part, last=last, success=success)
            if cfg.corrupt_next_read_digest and self.conn.ddgst and last:
                cfg.corrupt_next_read_digest = False
                bufs[-1] = b"\xde\xad\xbe\xef"
            self.send(bufs)
        if not cfg.success_flag or not pdus:
            self.complete(sqe, SUCCESS)

    def execute(self, sqe: Sqe, data: bytearray | None) -> None:
        if sqe.opcode == AdminOpcode.FABRICS:
            self.fabrics(sqe, data)
        elif self.qid == 0:
            self.admin(sqe)
        else:
            self.io(sqe, data)

    def fabrics(self, sqe: Sqe, data: bytearray | None) -> None:
        ctrl = self.ctrl
        raw = sqe.encode()
        fctype = raw[4]
        if fctype == FabricsType.CONNECT:
            cmd = ConnectCommand.decode(raw)
            assert data is not None
            cdata = ConnectData.decode(bytes(data))
            ctrl.connects.append((cmd, cdata))
            self.qid = cmd.qid
            if cmd.qid == 0:
                ctrl.kato_ms = cmd.kato
            self.complete(sqe, Status(result=ctrl.cntlid))
            return
        prop = PropertyCommand.decode(raw)
        if fctype == FabricsType.PROPERTY_GET:
            if prop.offset == Prop.CAP:
                value = Cap(mqes=ctrl.config.mqes, to=2).encode()
            elif prop.offset == Prop.CC:
                value = ctrl.cc
            elif prop.offset == Prop.CSTS:
                value = ctrl.csts
            else:
                value = 0x10400
            self.complete(sqe, Status(result=value & 0xFFFFFFFF, result_hi=value >> 32))
        else:
            ctrl.cc = prop.value
            if prop.value & CC.EN:
                ctrl.csts |= CSTS.RDY
            if prop.value & CC.SHN_MASK:
                ctrl.csts = (ctrl.csts & ~CSTS.SHST_MASK) | CSTS.SHST_CMPLT
            self.complete(sqe, SUCCESS)

    def admin(self, sqe: Sqe) -> None:
        ctrl = self.ctrl
        op = sqe.opcode
        if op == AdminOpcode.IDENTIFY:
            cns = sqe.cdw10 & 0xFF
            if cns == 1:
                page = ctrl.id_ctrl()
            elif cns == 0:
                page = ctrl.id_ns() if sqe.nsid == 1 else bytes(4096)
            else:
                page = NamespaceList.active([1], sqe.nsid).encode()
            self.send_data(sqe, page[: sqe.sgl.length])
        elif op == AdminOpcode.SET_FEATURES and sqe.cdw10 & 0xFF == FeatureId.NUM_QUEUES:
            n = min(sqe.cdw11 & 0xFFFF, ctrl.config.granted_queues - 1)
            self.complete(sqe, Status(result=n | (n << 16)))
        elif op == AdminOpcode.KEEP_ALIVE:
            ctrl.keep_alives += 1
            self.complete(sqe, SUCCESS)
        elif op == AdminOpcode.GET_LOG_PAGE:
            ctrl.log_reads += 1
            offset = sqe.cdw12 | (sqe.cdw13 << 32)
            length = ((sqe.cdw10 >> 16) | ((sqe.cdw11 & 0xFFFF) << 16)) * 4 + 4
            page = ctrl.discovery_log()
            chunk = page[offset : offset + length].ljust(length, b"\0")
            if ctrl.log_reads == 1 and ctrl.config.genctr_bumps:
                ctrl.config.genctr_bumps -= 1
                ctrl.log_reads = 0
                ctrl.genctr += 1
            self.send_data(sqe, chunk)
        else:
            self.complete(sqe, error(SC.INVALID_OPCODE))

    def io(self, sqe: Sqe, data: bytearray | None) -> None:
        cfg = self.ctrl.config
        op = sqe.opcode
        if op in cfg.drop_io:
            return
        if cfg.term_on_io == op:
            err = p.TcpFatalError(w.Fes.INVALID_PDU_HDR, 4, bytes(8), "scripted")
            self.send(self.conn.term_req(err))
            self.writer.close()
            return
        if op in cfg.fail_io:
            self.complete(sqe, cfg.fail_io[op])
            return
        start = sqe.slba * BLOCK
        length = (sqe.nlb + 1) * BLOCK
        mem = self.ctrl.data
        if op == IoOpcode.READ:
            self.send_data(sqe, mem[start : start + length])
        elif op == IoOpcode.WRITE:
            assert data is not None and len(data) == length
            mem[start : start + length] = data
            self.complete(sqe, SUCCESS)
        elif op == IoOpcode.COMPARE:
            same = data == mem[start : start + length]
            self.complete(sqe, SUCCESS if same else error(SC.COMPARE_FAILED))
        elif op == IoOpcode.WRITE_ZEROES:
            mem[start : start + length] = bytes(length)
            self.complete(sqe, SUCCESS)
        elif op == IoOpcode.DSM:
            assert data is not None
            for i in range((sqe.cdw10 & 0xFF) + 1):
                _, nlb, slba = DSM_RANGE.unpack_from(data, i * 16)
                mem[slba * BLOCK : (slba + nlb) * BLOCK] = bytes(nlb * BLOCK)
            self.complete(sqe, SUCCESS)
        elif op == IoOpcode.FLUSH:
            self.complete(sqe, SUCCESS)
        else:
            self.complete(sqe, error(SC.INVALID_OPCODE))

    @staticmethod
    def incapsule_sgl(sqe: Sqe) -> bool:
        return sqe.sgl.type_byte == SGL_INCAPSULE
