"""Malformed and out-of-order PDUs: a C2HTermReq with the right Fatal Error Status, the
offending connection closed, and every other connection still served."""

from __future__ import annotations

import os
import random

import pytest

from nvmf.protocol import tcp as p
from nvmf.wire import tcp as w
from nvmf.wire.opcodes import IoOpcode
from nvmf.wire.sqe import SglDescriptor, Sqe
from nvmf.wire.status import SC
from nvmf.wire.tcp import Fes, PduType
from tests.target.conftest import SUBNQN, RunningTarget
from tests.target.rawhost import RawHost, status_of
from tests.target.test_tcp_target import admin, io_queue, rw


def read_term(host: RawHost) -> tuple[int, int, int, bytes]:
    """(pdu type, fes, fei, offending header) of the TermReq the target sent, then EOF."""
    host.sock.settimeout(5)
    data = b""
    while True:
        chunk = host.sock.recv(4096)
        if not chunk:
            break
        data += chunk
    assert len(data) >= 24, f"no TermReq, got {data!r}"
    ptype, _, hlen, _, plen, fes, fei = w.TERM.unpack_from(data)
    assert hlen == 24 and plen == len(data)
    return ptype, fes, fei, data[24:]


def bystander_still_served(target: RunningTarget, q: RawHost) -> None:
    data = os.urandom(4096)
    assert status_of(q.command(rw(q.next_cid(), IoOpcode.WRITE, 1, 8, 8, 4096), data)).ok
    _, back = q.command_data(rw(q.next_cid(), IoOpcode.READ, 1, 8, 8, 4096))
    assert back == data


def established(target: RunningTarget, **kw: bool) -> RawHost:
    host = RawHost(target.addr, **kw)
    host.initialize()
    return host


CASES: dict[str, tuple[bool, bytes, Fes, int]] = {
    # name: (send ICReq first?, bytes, expected FES, expected FEI)
    "unknown pdu type": (True, w.CH.pack(0x0F, 0, 8, 0, 8), Fes.INVALID_PDU_HDR, w.OFF_TYPE),
    "capsule before icreq": (
        False,
        w.CH.pack(PduType.CMD, 0, 72, 0, 72) + bytes(64),
        Fes.PDU_SEQ_ERR,
        w.OFF_TYPE,
    ),
    "second icreq": (True, w.icreq(), Fes.PDU_SEQ_ERR, w.OFF_TYPE),
    "capsule hlen wrong": (
        True,
        w.CH.pack(PduType.CMD, 0, 64, 0, 72) + bytes(64),
        Fes.INVALID_PDU_HDR,
        w.OFF_HLEN,
    ),
    "icreq pfv 1": (
        False,
        w.ICREQ.pack(PduType.ICREQ, 0, 128, 0, 128, 1, 0, 0, 0),
        Fes.UNSUPPORTED_PARAM,
        w.OFF_ICREQ_PFV,
    ),
    "icreq plen wrong": (
        False,
        w.CH.pack(PduType.ICREQ, 0, 128, 0, 200) + bytes(192),
        Fes.INVALID_PDU_HDR,
        w.OFF_PLEN,
    ),
    "r2t from host": (
        True,
        w.R2T.pack(PduType.R2T, 0, 24, 0, 24, 1, 1, 0, 512),
        Fes.PDU_SEQ_ERR,
        w.OFF_TYPE,
    ),
    "h2c data unknown ttag": (
        True,
        w.DATA.pack(PduType.H2C_DATA, w.PduFlags.DATA_LAST, 24, 24, 24 + 512, 1, 77, 0, 512)
        + bytes(512),
        Fes.INVALID_PDU_HDR,
        w.OFF_DATA_TTAG,
    ),
    "h2c datal disagrees with plen": (
        True,
        w.DATA.pack(PduType.H2C_DATA, 0, 24, 24, 24 + 512, 1, 0, 0, 1024) + bytes(512),
        Fes.INVALID_PDU_HDR,
        w.OFF_DATA_DATAL,
    ),
    "incapsule data beyond ioccsz": (
        True,
        w.CH.pack(PduType.CMD, 0, 72, 72, 72 + 16384) + bytes(64) + bytes(16384),
        Fes.R2T_LIMIT_EXCEEDED,
        w.OFF_PLEN,
    ),
    "pdo inside the header": (
        True,
        w.CH.pack(PduType.CMD, 0, 72, 8, 72 + 512) + bytes(64) + bytes(512),
        Fes.INVALID_PDU_HDR,
        w.OFF_PDO,
    ),
    "hdgst flag without negotiation": (
        True,
        w.CH.pack(PduType.CMD, w.PduFlags.HDGSTF, 72, 0, 76) + bytes(68),
        Fes.INVALID_PDU_HDR,
        w.OFF_FLAGS,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_pdu_terminates_only_its_connection(target: RunningTarget, name: str) -> None:
    adm = admin(target)
    q = io_queue(target, adm)
    victim = RawHost(target.addr)
    icreq_first, payload, fes, fei = CASES[name]
    if icreq_first:
        victim.initialize()
    victim.send(payload)
    ptype, got_fes, got_fei, header = read_term(victim)
    assert ptype == PduType.C2H_TERM
    assert (got_fes, got_fei) == (fes, fei)
    assert header == payload[: len(header)] and len(header) >= 8
    bystander_still_served(target, q)


def test_header_digest_error_is_fatal(target: RunningTarget) -> None:
    adm = admin(target)
    q = io_queue(target, adm)
    victim = established(target, hdgst=True)
    pdu = bytearray(b"".join(bytes(b) for b in victim.conn.capsule_cmd(bytes(64))))
    pdu[-1] ^= 0xFF  # corrupt the HDGST
    victim.send(bytes(pdu))
    _, fes, _, _ = read_term(victim)
    assert fes == Fes.HDR_DIGEST_ERR
    bystander_still_served(target, q)


def test_data_digest_error_fails_only_the_command(target: RunningTarget) -> None:
    adm = admin(target)
    q = io_queue(target, adm, ddgst=True)
    sqe = rw(q.next_cid(), IoOpcode.WRITE, 1, 0, 1, 512)
    sqe.sgl = SglDescriptor.incapsule(512)
    pdu = bytearray(
        b"".join(bytes(b) for b in q.conn.capsule_cmd(sqe.encode(), memoryview(bytes(512))))
    )
    pdu[-1] ^= 0xFF  # corrupt the DDGST
    q.send(bytes(pdu))
    cqe, _ = q.wait_response()
    st = status_of(cqe)
    assert cqe.cid == sqe.cid and st.code == SC.TRANSIENT_TR_ERR and not st.dnr
    bystander_still_served(target, q)  # the same connection goes on


def test_h2c_data_outside_the_r2t_window(target: RunningTarget) -> None:
    adm = admin(target)
    q = io_queue(target, adm)
    victim = io_queue(target, adm, qid=2)
    sqe = rw(victim.next_cid(), IoOpcode.WRITE, 1, 0, 8, 4096)
    victim.send(victim.conn.capsule_cmd(sqe.encode()))
    (r2t,) = victim.events()
    assert isinstance(r2t, p.R2TReceived) and r2t.r2tl == 4096
    bad = victim.conn.h2c_data(r2t.cccid, r2t.ttag, 4096, memoryview(bytes(512)), last=True)
    victim.send(bad)
    _, fes, fei, _ = read_term(victim)
    assert (fes, fei) == (Fes.DATA_OUT_OF_RANGE, w.OFF_DATA_DATAO)
    bystander_still_served(target, q)


def test_truncated_connection_leaves_the_target_serving(target: RunningTarget) -> None:
    adm = admin(target)
    q = io_queue(target, adm)
    victim = established(target)
    victim.send(w.CH.pack(PduType.CMD, 0, 72, 0, 72) + bytes(10))  # half a capsule, then gone
    victim.close()
    bystander_still_served(target, q)
    other = RawHost(target.addr)
    other.initialize()
    assert status_of(other.connect(SUBNQN)).ok


def test_garbage_sqe_fields_get_statuses_not_crashes(target: RunningTarget) -> None:
    """Every admin opcode with random CDWs answers with some status; the queue survives."""
    adm = admin(target)
    rnd = random.Random(7)
    for opcode in range(256):
        if opcode in (0x0C, 0x7F):  # AER is held open by design; fabrics covered elsewhere
            continue
        sqe = Sqe(opcode=opcode, cid=adm.next_cid(), nsid=rnd.choice([0, 1, 2, 0xFFFFFFFF]))
        sqe.cdw10, sqe.cdw11, sqe.cdw12 = (rnd.getrandbits(32) for _ in range(3))
        sqe.sgl = SglDescriptor.tcp_transport(rnd.choice([0, 4096]))
        cqe, _ = adm.command_data(sqe)
        assert cqe.cid == sqe.cid
    bystander_still_served(target, io_queue(target, adm))
