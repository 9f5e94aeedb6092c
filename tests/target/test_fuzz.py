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
from tests.target.test_malformed import bystander_still_served
from tests.target.test_tcp_target import admin, io_queue, rw

#: Not the bystander's host: a mutated Connect must not reach the bystander's controller.
FUZZ_HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:f0220000-0000-4000-8000-000000000001"


@pytest.fixture
def one_process() -> Iterator[RunningTarget]:
    """Every queue in this process, so that the target's log reaches caplog."""
    with running_target(0) as running:
        yield running


def _valid_pdus(hdgst: bool, ddgst: bool) -> list[bytes]:
    """A valid admin-queue conversation, PDU by PDU (the H2CData answers the first R2T)."""
    conn = p.TcpConnection(p.Role.HOST, None)  # type: ignore[arg-type]
    icreq = conn.start_icreq(hdgst=hdgst, ddgst=ddgst)
    conn.hdgst, conn.ddgst = hdgst, ddgst  # the target allows what the host asks

    def flat(bufs: list[bytes | memoryview]) -> bytes:
        return b"".join(bytes(b) for b in bufs)

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
        flat(conn.capsule_cmd(connect.encode(), memoryview(data))),
        flat(conn.capsule_cmd(prop.encode())),
        flat(conn.capsule_cmd(ident.encode())),
        flat(conn.capsule_cmd(write.encode())),
        flat(conn.h2c_data(4, 0, 0, memoryview(bytes(512)), last=True)),
        flat(conn.capsule_cmd(inline.encode(), memoryview(bytes(512)))),
        flat(conn.capsule_cmd(inline.encode(), memoryview(bytes(512)))),
    ]


def _mutate(rnd: random.Random, pdus: list[bytes]) -> list[bytes]:
    pdus = list(pdus)
    for _ in range(rnd.randint(1, 3)):
        kind = rnd.randrange(5)
        i = rnd.randrange(len(pdus))
        pdu = bytearray(pdus[i])
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


def _has_term_req(got: bytes) -> bool:
    """Walk the PDUs the target sent: is the last complete one a C2HTermReq?"""
    pos, last = 0, None
    while pos + 8 <= len(got):
        ptype, _, _, _, plen = w.CH.unpack_from(got, pos)
        if plen < 8 or pos + plen > len(got):
            break
        last, pos = ptype, pos + plen
    return last == PduType.C2H_TERM


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
