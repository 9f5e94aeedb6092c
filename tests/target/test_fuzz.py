"""Mutated PDU streams against a live target (issue 7): whatever a host sends, the target
never hits an internal error, answers a connection it drops with a C2HTermReq (unless the host
sent an H2CTermReq itself), and keeps serving everyone else."""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Iterator

import pytest

from nvmf.protocol import tcp as p
from nvmf.wire import tcp as w
from nvmf.wire.fabrics import ConnectCommand, ConnectData, Prop, PropertyCommand
from nvmf.wire.opcodes import AdminOpcode, FabricsType, IoOpcode
from nvmf.wire.sqe import SglDescriptor, Sqe
from nvmf.wire.tcp import PduType
from tests.target.conftest import SUBNQN, RunningTarget, running_target
from tests.target.rawhost import RawHost, status_of
from tests.target.test_malformed import bystander_still_served
from tests.target.test_tcp_target import admin, io_queue, rw

#: Not the bystander's host: a mutated Connect must not reach the bystander's controller.
FUZZ_HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:f0220000-0000-4000-8000-000000000001"


@pytest.fixture
def one_process() -> Iterator[RunningTarget]:
    """Every queue in this process, so that the target's log reaches caplog."""
    with running_target(0) as running:
        yield running


def _flat(bufs: list[bytes | memoryview]) -> bytes:
    """A codec's buffers as one PDU's bytes."""
    return b"".join(bytes(b) for b in bufs)


def _valid_pdus(hdgst: bool, ddgst: bool) -> list[bytes]:
    """A valid admin-queue conversation, PDU by PDU (the H2CData answers the first R2T)."""
    conn = p.TcpConnection(p.Role.HOST, None)  # type: ignore[arg-type]
    icreq = conn.start_icreq(hdgst=hdgst, ddgst=ddgst)
    conn.hdgst, conn.ddgst = hdgst, ddgst  # the target allows what the host asks

    data = ConnectData(b"\x02" * 16, 0xFFFF, SUBNQN, FUZZ_HOSTNQN).encode()
    connect = Sqe.decode(ConnectCommand(cid=1, qid=0, sqsize=31, kato=0).encode())
    connect.sgl = SglDescriptor.incapsule(len(data))
    prop = Sqe.decode(PropertyCommand(2, FabricsType.PROPERTY_GET, 1, Prop.CAP).encode())
    ident = Sqe(opcode=AdminOpcode.IDENTIFY, cid=3, cdw10=1)
    ident.sgl = SglDescriptor.tcp_transport(4096)
    write = rw(4, IoOpcode.WRITE, 1, 0, 1, 512)
    inline = rw(5, IoOpcode.WRITE, 1, 0, 1, 512)
    inline.sgl = SglDescriptor.incapsule(512)
    return [
        icreq,
        _flat(conn.capsule_cmd(connect.encode(), memoryview(data))),
        _flat(conn.capsule_cmd(prop.encode())),
        _flat(conn.capsule_cmd(ident.encode())),
        _flat(conn.capsule_cmd(write.encode())),
        _flat(conn.h2c_data(4, 0, 0, memoryview(bytes(512)), last=True)),
        _flat(conn.capsule_cmd(inline.encode(), memoryview(bytes(512)))),
        _flat(conn.capsule_cmd(inline.encode(), memoryview(bytes(512)))),
    ]


def _mutate(rnd: random.Random, pdus: list[bytes]) -> list[bytes]:
    pdus = list(pdus)
    for _ in range(rnd.randint(1, 3)):
        kind = rnd.randrange(5)
        i = rnd.randrange(len(pdus))
        pdu = bytearray(pdus[i])
        if not pdu:  # a PDU an earlier cut left empty: nothing to mutate
            continue
        if kind == 0:  # a bit flip
            bit = rnd.randrange(len(pdu) * 8)
            pdu[bit // 8] ^= 1 << (bit % 8)
        elif kind == 1:  # a common-header field set to something else
            off, size = rnd.choice([(0, 1), (1, 1), (2, 1), (3, 1), (4, 4)])
            pdu[off : off + size] = rnd.getrandbits(8 * size).to_bytes(size, "little")
        elif kind == 2:  # a PDU-specific field (cid, ttag, offsets, lengths, SQE bytes)
            off = rnd.randrange(8, min(len(pdu), 72)) if len(pdu) > 8 else 0
            pdu[off] = rnd.getrandbits(8)
        elif kind == 3:  # a PDU repeated
            pdus.insert(i, bytes(pdu))
        else:  # the stream cut short
            pdus = pdus[: i + 1]
            pdu = pdu[: rnd.randrange(len(pdu))]
        if i < len(pdus):
            pdus[i] = bytes(pdu)
    return pdus


def _converse(addr: tuple[str, int], pdus: list[bytes]) -> tuple[bytes, bool]:
    """Send the first PDU (the ICReq, as the host must wait for the ICResp), then the rest,
    then read what the target says for a while: (bytes received, closed by the target)."""
    s = socket.create_connection(addr, timeout=5)
    got = b""
    closed = False
    try:
        s.sendall(pdus[0])
        s.settimeout(0.3)
        try:
            got = s.recv(128)
        except TimeoutError:
            pass
        s.sendall(b"".join(pdus[1:]))
        while True:
            chunk = s.recv(65536)
            if not chunk:
                closed = True
                break
            got += chunk
    except TimeoutError:
        pass
    except (ConnectionResetError, BrokenPipeError):
        closed = True
    finally:
        s.close()
    return got, closed


def _whole_pdus(buf: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """The whole PDUs at the start of ``buf`` as their common headers frame them, (type,
    bytes) each, and where they end (``len(buf)`` when nothing is left over)."""
    pdus, pos = [], 0
    while pos + 8 <= len(buf):
        ptype, _, _, _, plen = w.CH.unpack_from(buf, pos)
        if plen < 8 or pos + plen > len(buf):
            break
        pdus.append((ptype, buf[pos : pos + plen]))
        pos += plen
    return pdus, pos


def _has_term_req(got: bytes) -> bool:
    """Walk the PDUs the target sent: is the last complete one a C2HTermReq?"""
    pdus, _ = _whole_pdus(got)
    return bool(pdus) and pdus[-1][0] == PduType.C2H_TERM


@pytest.mark.parametrize("seed", range(6))
def test_mutated_pdu_streams(
    one_process: RunningTarget, caplog: pytest.LogCaptureFixture, seed: int
) -> None:
    target = one_process
    caplog.set_level(logging.INFO)
    adm = admin(target)  # kept open: its controller is the bystander's
    q = io_queue(target, adm)
    rnd = random.Random(seed)
    valid = {(h, d): _valid_pdus(h, d) for h in (False, True) for d in (False, True)}
    for trial in range(60):
        mutated = _mutate(rnd, valid[rnd.random() < 0.5, rnd.random() < 0.5])
        stream = b"".join(mutated)
        got, closed = _converse(target.addr, mutated)
        if closed:
            host_term = PduType.H2C_TERM in stream  # an H2CTermReq may end it silently
            assert _has_term_req(got) or host_term, (trial, stream.hex(), got.hex())
        if trial % 20 == 19:
            bystander_still_served(target, q)
    bystander_still_served(target, q)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]


# -- I/O queues ---------------------------------------------------------------------------------

#: The Flush that ends every mutated I/O-queue stream: its completion says the queue still runs.
SENTINEL_CID = 0x99


def _io_queue_pdus(hdgst: bool, ddgst: bool, cntlid: int) -> tuple[list[bytes], list[bytes], bytes]:
    """An I/O queue's ICReq and Connect (for controller ``cntlid``); a valid conversation on
    it: every command a worker runs itself, one it forwards to the control plane, and R2T
    Writes of one and of two H2CData PDUs (the R2Ts' tags are the ones the target gives); and
    the sentinel Flush, kept apart so that no mutation reaches it."""
    conn = p.TcpConnection(p.Role.HOST, None)  # type: ignore[arg-type]
    icreq = conn.start_icreq(hdgst=hdgst, ddgst=ddgst)
    conn.hdgst, conn.ddgst = hdgst, ddgst

    def cmd(sqe: Sqe, data: bytes = b"") -> bytes:
        if data:
            sqe.sgl = SglDescriptor.incapsule(len(data))
        elif sqe.sgl is None or sqe.sgl.length == 0:
            sqe.sgl = SglDescriptor.tcp_transport(0)
        return _flat(conn.capsule_cmd(sqe.encode(), memoryview(data) if data else None))

    data = ConnectData(b"\x02" * 16, cntlid, SUBNQN, FUZZ_HOSTNQN).encode()
    connect = Sqe.decode(ConnectCommand(cid=1, qid=1, sqsize=31, kato=0).encode())
    dsm_range = (0).to_bytes(4, "little") + (8).to_bytes(4, "little") + (40).to_bytes(8, "little")
    big = bytes(range(256)) * 64
    conversation = [
        cmd(rw(4, IoOpcode.WRITE, 1, 0, 8, 4096)),
        _flat(conn.h2c_data(4, 0, 0, memoryview(big[:4096]), last=True)),
        cmd(rw(5, IoOpcode.WRITE, 1, 16, 1, 512), big[:512]),
        cmd(rw(6, IoOpcode.READ, 1, 0, 8, 4096)),
        cmd(Sqe(opcode=IoOpcode.FLUSH, cid=7, nsid=1)),
        cmd(rw(8, IoOpcode.COMPARE, 1, 16, 1, 512), big[:512]),
        cmd(rw(9, IoOpcode.WRITE_ZEROES, 1, 32, 4, 0)),
        cmd(Sqe(opcode=IoOpcode.DSM, cid=10, nsid=1, cdw10=0, cdw11=4), dsm_range),
        cmd(rw(11, IoOpcode.VERIFY, 1, 0, 8, 0)),
        cmd(rw(12, IoOpcode.READ, 2, 0, 1, 4096)),
        cmd(rw(13, IoOpcode.WRITE, 1, 64, 32, 16384)),
        _flat(conn.h2c_data(13, 1, 0, memoryview(big[:8192]), last=False)),
        _flat(conn.h2c_data(13, 1, 8192, memoryview(big[8192:]), last=True)),
    ]
    sentinel = cmd(Sqe(opcode=IoOpcode.FLUSH, cid=SENTINEL_CID, nsid=1))
    return [icreq, cmd(connect, data)], conversation, sentinel


def _answered(got: bytes, cid: int) -> bool:
    """Has a CapsuleResp for ``cid`` arrived (digests or not: CQE.CID is at byte 12)?"""
    return any(
        ptype == PduType.RSP and int.from_bytes(pdu[8 + 12 : 8 + 14], "little") == cid
        for ptype, pdu in _whole_pdus(got)[0]
    )


def _converse_io(addr: tuple[str, int], head: list[bytes], pdus: list[bytes]) -> tuple[bytes, bool]:
    """Open the I/O queue (ICReq, then Connect, each answered), send ``pdus``, and read until
    the sentinel Flush is answered, the target closes, or it stays silent for a while: (what
    came after the Connect's answer, closed by the target)."""
    with socket.create_connection(addr, timeout=5) as s:
        for pdu in head:
            s.sendall(pdu)
            got = b""
            while not _whole_pdus(got)[1]:
                chunk = s.recv(4096)
                assert chunk, "the target closed a valid ICReq/Connect"
                got += chunk
            assert _whole_pdus(got)[1] == len(got) and got[0] != PduType.C2H_TERM, got.hex()
        s.sendall(b"".join(pdus))
        s.settimeout(0.4)
        got = b""
        try:
            while not _answered(got, SENTINEL_CID):
                chunk = s.recv(65536)
                if not chunk:
                    return got, True
                got += chunk
        except TimeoutError:
            pass
        except ConnectionResetError:
            return got, True
    return got, False


@pytest.mark.parametrize("workers", [0, 2], ids=["one-process", "2-workers"])
def test_mutated_io_queue_streams(
    workers: int, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The same on an I/O queue, where a worker runs the data path: whatever the host sends
    after Connect, a connection the target keeps still answers a later command (when the
    stream is whole PDUs), and nothing fails inside the target or its workers."""
    caplog.set_level(logging.INFO)
    with running_target(workers) as target:
        adm = admin(target)
        q = io_queue(target, adm)  # the bystander
        rnd = random.Random(workers)
        kept = 0
        for trial in range(40):
            fuzz_admin = RawHost(target.addr)
            fuzz_admin.initialize()
            cqe = fuzz_admin.connect(SUBNQN, hostnqn=FUZZ_HOSTNQN, hostid=b"\x02" * 16)
            assert status_of(cqe).ok
            fuzz_admin.enable()
            head, conversation, sentinel = _io_queue_pdus(
                rnd.random() < 0.5, rnd.random() < 0.5, fuzz_admin.cntlid
            )
            mutated = _mutate(rnd, conversation) if trial else conversation
            stream = b"".join(mutated)
            got, closed = _converse_io(target.addr, head, [*mutated, sentinel])
            fuzz_admin.close()
            if closed:
                assert _has_term_req(got) or PduType.H2C_TERM in stream, (trial, stream.hex())
            elif _whole_pdus(stream)[1] == len(stream):
                kept += 1
                assert _answered(got, SENTINEL_CID), (trial, stream.hex(), got.hex())
            if trial % 10 == 9:
                bystander_still_served(target, q)
        bystander_still_served(target, q)
        assert kept >= 5  # the check above ran on enough streams to mean something
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]
    workers_said = capfd.readouterr().err  # the workers log to the target's standard error
    assert "Traceback" not in workers_said and " ERROR " not in workers_said, workers_said
